// Package osthread runs code on an OS thread of its own that the Go
// runtime throws away afterwards: for changes that belong to one thread
// (namespaces, credentials, capabilities) and must never reach another
// goroutine.
package osthread

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// Go runs fn in a new goroutine locked to an OS thread that is not the
// process's main thread, and returns at once. The thread is never
// unlocked, so the runtime ends it when fn returns, with whatever fn
// changed about it. The main thread is avoided because the runtime cannot
// end it (it would keep fn's changes, and a namespace fn entered would
// stay alive), and because its namespaces are the ones /proc/self shows.
func Go(fn func()) {
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			fn()
			return
		}
		// Occupy the main thread until fn is done, so that fn's
		// goroutine gets another one; this one is left as it was.
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread()
			fn()
		}()
		<-done
		runtime.UnlockOSThread()
	}()
}
