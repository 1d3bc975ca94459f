package sandbox

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroup"
)

// Stop ends the sandbox's workload gracefully: SIGTERM to its PID 1's
// workload, then, if it has not ended within grace, SIGKILL to every
// process in the sandbox. A grace of 0 kills at once. It returns once the
// workload has ended (and, for the process that started the sandbox, once
// the sandbox is torn down, so that Wait returns at once), or with ctx's
// error: the sandbox still gets its SIGKILL when grace runs out, as long
// as this process lives. Stopping a sandbox that has already ended is not
// an error.
//
// It works on a handle from Open too, which watches the sandbox's PID 1
// itself: Stop returns once PID 1 has exited; the teardown is then the
// business of the process that started the sandbox, or of its
// supervisor.
//
// The Result of a stopped workload says how it ended (SIGTERM's status
// when it did not handle the signal, 128+9 when it had to be killed);
// Stop, unlike Timeout and a cancelled context, sets no flag of its own.
func (s *Sandbox) Stop(ctx context.Context, grace time.Duration) error {
	if grace < 0 {
		return fmt.Errorf("sandbox %s: stop: grace %v is negative (0 means SIGKILL at once)", s.id, grace)
	}
	s.mu.Lock()
	if s.proc == nil || s.result == nil {
		s.mu.Unlock()
		return ErrNotStarted
	}
	owned := s.cmd != nil
	proc, cg, done := s.proc, s.cg, s.done
	s.mu.Unlock()
	if owned {
		select {
		case <-done:
			return nil
		default:
		}
		// A Detachable sandbox not handed to Supervise is watched
		// here from now on, as by Wait, so that done comes.
		if err := s.detached.watch(); err != nil {
			owned = false
		}
	}
	exited, err := s.terminate(proc, cg, grace)
	if err != nil {
		return fmt.Errorf("sandbox %s: stop: %w", s.id, err)
	}
	if !owned {
		done = nil // a handle's never closes: its starter tears down
	}
	for exited != nil || done != nil {
		select {
		case <-exited:
			exited = nil
		case <-done:
			done = nil
		case <-ctx.Done():
			return fmt.Errorf("sandbox %s: stop: %w", s.id, context.Cause(ctx))
		}
	}
	return nil
}

// endWorkload ends the workload p runs for Timeout or a cancelled
// context: at once, or with Options.Grace to end on its own first.
func (s *Sandbox) endWorkload(p *launched) {
	if s.opts.Grace <= 0 {
		s.kill()
		return
	}
	if _, err := s.terminate(p.cmd.Process, s.cg, s.opts.Grace); err != nil {
		s.log.Warn("stop gracefully", "id", s.id, "err", err)
		s.kill()
	}
}

// terminate begins the end of the workload whose PID 1 is proc: SIGTERM,
// which PID 1 passes on to the workload, and SIGKILL to PID 1 (whose death
// makes the kernel kill everything else in its PID namespace) once grace
// has passed; with no grace, SIGKILL at once. A paused sandbox is thawed
// first, so that it can take the signal at all. The returned channel is
// closed once PID 1 has exited. It returns at once: the kill comes from a
// goroutine of its own, which ends with PID 1.
//
// PID 1 is reached through a pidfd, so that neither signal can reach
// another process that reused its PID: proc (which has one too) still
// naming a live process once the pidfd is open proves that the pidfd is
// PID 1's.
func (s *Sandbox) terminate(proc *os.Process, cg *cgroup.Cgroup, grace time.Duration) (<-chan struct{}, error) {
	exited := make(chan struct{})
	fd, err := unix.PidfdOpen(proc.Pid, 0)
	if errors.Is(err, unix.ESRCH) {
		close(exited)
		return exited, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd of the sandbox's init: %w", err)
	}
	if err := proc.Signal(syscall.Signal(0)); err != nil {
		unix.Close(fd)
		close(exited)
		return exited, nil
	}
	if cg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := cg.Thaw(ctx); err != nil {
			s.log.Warn("thaw to stop", "id", s.id, "err", err)
		}
		cancel()
	}
	first := unix.SIGTERM
	if grace == 0 {
		first = unix.SIGKILL
	}
	if err := unix.PidfdSendSignal(fd, first, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		unix.Close(fd)
		return nil, fmt.Errorf("signal the sandbox's init: %w", err)
	}
	go func() {
		defer close(exited)
		defer unix.Close(fd)
		if first == unix.SIGKILL || awaitExit(fd, grace) {
			awaitExit(fd, -1)
			return
		}
		s.log.Info("workload still running after its grace: killing it", "id", s.id, "grace", grace)
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			s.log.Warn("kill after grace", "id", s.id, "err", err)
		}
		awaitExit(fd, -1)
	}()
	return exited, nil
}

// awaitExit waits up to d (forever if d < 0) for the process of pidfd to
// exit, and reports whether it did: a pidfd becomes readable then, before
// the process is reaped.
func awaitExit(pidfd int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		ms := -1
		if d >= 0 {
			left := time.Until(deadline)
			if left <= 0 {
				left = 0
			}
			ms = int(min((left+time.Millisecond-1)/time.Millisecond, math.MaxInt32))
		}
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return false
		case n > 0:
			return true
		case d >= 0 && !time.Now().Before(deadline):
			return false
		}
	}
}

// An ExitError is returned by Output and CombinedOutput when the workload
// ran but did not succeed: its Result says how it ended.
type ExitError struct {
	*Result
	// Stderr holds what the workload wrote to its standard error, if
	// Output collected it (at most 64 KiB, the end kept), as
	// os/exec.ExitError.Stderr does.
	Stderr []byte
}

func (e *ExitError) Error() string {
	var why string
	switch {
	case e.TimedOut:
		why = "timed out, and "
	case e.Canceled:
		why = "was cancelled, and "
	}
	if e.Signal != 0 {
		return fmt.Sprintf("sandbox workload %sended by signal %d (%v)", why, int(e.Signal), e.Signal)
	}
	return fmt.Sprintf("sandbox workload %sexited with status %d", why, e.ExitCode)
}
