package cgroup

import (
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bornIn returns the attributes that start a process in c's unified
// cgroup (CLONE_INTO_CGROUP), as the sandbox package starts its own.
func bornIn(t *testing.T, c *Cgroup) *syscall.SysProcAttr {
	t.Helper()
	dir, ok := c.V2Dir()
	if !ok {
		t.Skip("no unified cgroup to be born into")
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
}

// KillEach empties a cgroup and leaves it fit for new processes: one
// born into it afterwards runs to its end.
func TestKillEachLeavesCgroupUsable(t *testing.T) {
	t.Parallel()
	m := hostManager(t, Options{})
	c := create(t, m, nil)
	old := startChild(t, c, "exec sleep 30", bornIn(t, c))
	old.release(t)
	eventually(t, 5*time.Second, "the child in its cgroup", func() bool {
		pids, err := c.Pids()
		return err == nil && len(pids) == 1
	})
	if err := c.KillEach(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if ws := old.wait(t, 5*time.Second); ws.Signal() != syscall.SIGKILL {
		t.Errorf("first child: %v, want killed by SIGKILL", ws)
	}
	if pids, err := c.Pids(); err != nil || len(pids) != 0 {
		t.Errorf("after KillEach: %v %v", pids, err)
	}
	next := startChild(t, c, "exit 7", bornIn(t, c))
	next.release(t)
	if ws := next.wait(t, 5*time.Second); !ws.Exited() || ws.ExitStatus() != 7 {
		t.Errorf("child born after KillEach: %v, want exit status 7", ws)
	}
}
