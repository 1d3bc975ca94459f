package sandbox

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/layerfs"
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
	// TTY gives the process a terminal of its own, made in the
	// sandbox's devpts, as its standard streams (and its controlling
	// terminal), as `docker exec -t` does: Stdin is its input and
	// Stdout gets all it writes, standard error included; Stderr is not
	// used. HandOverStdio must be unset.
	TTY bool
	// Resize, with TTY, carries the sizes the terminal is to take, the
	// caller's own terminal's as it changes (SIGWINCH). Exec reads it
	// until the process ends. A size already waiting in it when Exec is
	// called is the terminal's from the start: the process never sees
	// it without one.
	Resize <-chan TerminalSize
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
	if s.img == nil {
		// A handle from Open whose image has left the store since.
		s.mu.Unlock()
		return nil, fmt.Errorf("sandbox %s exec: its image %s has left the store, and with it the environment and user a process starts with: %w",
			s.id, s.state.ImageDigest, setupError(layerfs.ErrNotFound))
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

	extra := []*os.File{pidfile}
	var console *os.File
	in, out, errw := o.Stdin, o.Stdout, o.Stderr
	if o.TTY {
		// The helper makes the terminal and sends its master over the
		// console socket at fd 5; the pidfd follows.
		ours, theirs, err := consoleSocket()
		if err != nil {
			return nil, fmt.Errorf("sandbox %s exec: %w", s.id, setupError(err))
		}
		defer theirs.Close()
		console = ours
		defer console.Close()
		extra = []*os.File{theirs, pidfile}
		spec.PidFD, spec.TTY = 6, true
		select {
		case size, ok := <-o.Resize:
			if ok {
				spec.TTYRows, spec.TTYCols = size.Rows, size.Cols
			}
		default:
		}
		in, out, errw = nil, nil, nil
	}
	std, streams, err := pipedStdio(in, out, errw, o.HandOverStdio)
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
	p, err := launch(nsinit.ModeExec, s.cg, std, extra, &syscall.SysProcAttr{})
	outs.closeWriteEnds()
	if len(extra) > 1 {
		// The helper has its own copy.
		extra[0].Close()
	}
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
	if console != nil {
		term, err := attachExecTerminal(console, o)
		if err != nil {
			p.cmd.Process.Kill()
			p.statusR.Close()
			p.cmd.Wait()
			return nil, fmt.Errorf("sandbox %s exec: %w", s.id, setupError(err))
		}
		// Once the process has ended, only what the terminal holds.
		defer term.finish()
	}

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
