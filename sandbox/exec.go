package sandbox

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/sandbox/internal/nsinit"
)

// ExecOptions describe a process to run in a running sandbox. Unset
// fields take the sandbox's values: its image's user and working
// directory, and its environment.
type ExecOptions struct {
	Args []string
	Env  []string // added to the sandbox's environment
	Dir  string
	User string
	// Stdin, Stdout, Stderr and HandOverStdio are as in Options: the
	// process gets pipes unless files are handed over.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	HandOverStdio  bool
}

// Exec runs another process in the running sandbox, in all its namespaces
// and its cgroup, with the same security settings, and waits for it.
// Cancelling ctx kills it.
func (s *Sandbox) Exec(ctx context.Context, o *ExecOptions) (*Result, error) {
	if o == nil {
		o = &ExecOptions{}
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("sandbox exec: %w", err)
	}
	s.mu.Lock()
	if s.proc == nil || s.result == nil {
		s.mu.Unlock()
		return nil, ErrNotStarted
	}
	select {
	case <-s.done:
		s.mu.Unlock()
		return nil, ErrNotRunning
	default:
	}
	initProc := s.proc
	initPid := s.proc.Pid
	// The spec of the sandbox's own workload is the base: what Exec's
	// options leave out stays as the sandbox has it.
	base := Options{Args: o.Args, Env: append(append([]string(nil), s.opts.Env...), o.Env...), Dir: o.Dir, User: o.User, Security: s.opts.Security}
	if base.Dir == "" {
		base.Dir = s.opts.Dir
	}
	if base.User == "" {
		base.User = s.opts.User
	}
	rootfs := s.rootfs
	s.mu.Unlock()

	sec := s.security(&base)
	plan, err := lsmPlan(sec)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s exec: %w", s.id, setupError(err))
	}
	spec, err := s.processSpec(&base, o.Args, rootfs, sec, plan, nil)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s exec: %w", s.id, setupError(err))
	}
	pidfd, err := unix.PidfdOpen(initPid, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s exec: %w", s.id, setupError(err))
	}
	pidfile := os.NewFile(uintptr(pidfd), "pidfd")
	defer pidfile.Close()
	// The pid was read under the lock, the pidfd taken after it: if the
	// init has been reaped meanwhile (an exit, a Reset), the pid may name
	// another process by now. initProc holds a pidfd of the init itself,
	// so a signal 0 through it proves the new pidfd is the init's.
	if err := initProc.Signal(syscall.Signal(0)); err != nil {
		return nil, fmt.Errorf("sandbox %s exec: %w", s.id, ErrNotRunning)
	}
	spec.PidFD = 5 // after the spec and status pipes
	spec.Namespaces = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET | unix.CLONE_NEWPID | unix.CLONE_NEWCGROUP
	if sec.UserNamespace != nil {
		// Without it the process would be the host's root in the
		// sandbox's other namespaces.
		spec.Namespaces |= unix.CLONE_NEWUSER
	}

	std, streams, err := pipedStdio(o.Stdin, o.Stdout, o.Stderr, o.HandOverStdio)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s exec: %w", s.id, setupError(err))
	}
	// Released after outs have finished copying into the duplicates.
	defer streams.release()
	outs, err := pipeOutputs(&std, o.HandOverStdio)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s exec: %w", s.id, setupError(err))
	}
	// Once the process has ended (p.cmd.Wait), only what its output
	// pipes hold is copied, whatever it left behind.
	defer outs.finish()
	p, err := launch(nsinit.ModeExec, s.cg, std, []*os.File{pidfile}, &syscall.SysProcAttr{})
	outs.closeWriteEnds()
	if streams.feed != nil {
		// The process has its own copy of the pipe's read end.
		std.in.(*os.File).Close()
	}
	if err == nil {
		streams.feed.start()
		err = p.run(ctx, spec)
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox %s exec: %w", s.id, setupError(err))
	}
	pidfile.Close()
	res := &Result{Started: p.started}

	ended := make(chan nsinit.Status, 1)
	go func() {
		var final nsinit.Status
		for {
			st, err := p.status.Next()
			if err != nil {
				break
			}
			if st.Exited {
				final = st
			}
		}
		ended <- final
	}()
	var final nsinit.Status
	select {
	case final = <-ended:
	case <-ctx.Done():
		res.Canceled = true
		p.cmd.Process.Signal(nsinit.SigKillWorkload)
		select {
		case final = <-ended:
		case <-time.After(time.Second):
			// The helper does not answer: kill it, and its process
			// with it (its parent-death signal).
			p.cmd.Process.Kill()
			final = <-ended
		}
	}
	p.statusR.Close()
	p.cmd.Wait()
	res.Exited = time.Now()
	if final.Exited {
		res.ExitCode, res.Signal = final.ExitCode, final.Signal
	} else {
		res.ExitCode, res.Signal = 128+int(syscall.SIGKILL), syscall.SIGKILL
	}
	return res, nil
}
