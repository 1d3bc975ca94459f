package sandbox

import (
	"os/exec"
	"runtime"
	"sync"
)

// A child's parent-death signal (Pdeathsig), which ends a sandbox whose
// host has died, is tied by Linux to the thread that forked it, not to the
// process. Forked from an ordinary goroutine's thread, a sandbox's PID 1
// would be killed whenever that thread ended, and the Go runtime ends a
// thread when a goroutine locked to it returns without unlocking: code
// that enters namespaces does this on purpose (netplug's pool among it),
// and may run on the very thread an earlier start used. So every process
// berth starts with a parent-death signal is forked by one goroutine that
// locks itself to its thread for good.
//
// This is process-wide because the thread is: one per process, started the
// first time it is needed, never changed after.
var forker = sync.OnceValue(func() chan<- forkRequest {
	reqs := make(chan forkRequest)
	go func() {
		runtime.LockOSThread()
		// Never unlocked and never returns: the thread lives as long as
		// the process.
		for r := range reqs {
			r.done <- r.cmd.Start()
		}
	}()
	return reqs
})

type forkRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// startOnForkThread is cmd.Start, run on the thread that never ends.
func startOnForkThread(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	forker() <- forkRequest{cmd: cmd, done: done}
	return <-done
}
