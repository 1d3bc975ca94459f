package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox/internal/nsinit"
	"github.com/berth-dev/berth/security"
)

// Reset throws away what the sandbox's workload wrote to its rootfs and
// starts its command again from the image as it was, keeping the sandbox's
// ID, cgroup and network attachment (its addresses and published ports):
// a clean sandbox for the next test without paying for a full start.
//
// Every process of the sandbox is killed and its writable layer released
// and prepared again from the image; the new workload gets the same
// arguments, environment, user, security settings, hostname and mounts.
// Volumes and bind mounts are the caller's data and keep what was written
// to them; tmpfs mounts start empty. The network namespace is held open
// across the restart, so addresses, routes, DNS settings and published
// ports stay as they were; /etc/hosts, which the network maintains, is
// kept as it is, changes included, while /etc/hostname and
// /etc/resolv.conf are written again. A sandbox without a network gets a
// new namespace with only loopback, as at Start.
//
// The new workload's output goes on to Options.Stdout and Stderr. Its
// input is empty (/dev/null): what the first workload read of
// Options.Stdin cannot be given again. HandOverStdio's files and
// ExtraFiles are passed again, so they must still be open. Options.Timeout
// counts again from the Reset; cancelling Start's context still kills the
// sandbox. The cgroup, and so its limits, stays: the Result's CPUTime and
// OOMKilled count only the new workload, while PeakMemory is the cgroup's
// peak since Start.
//
// Wait, Run and Close, called before or during a Reset, return once the
// new workload has ended: the replaced one's end is not the sandbox's.
// Reset refuses a sandbox not started (ErrNotStarted), one whose workload
// has ended or that is closed (ErrNotRunning: its network is detached,
// and its rootfs released or, under KeepRootfs, kept only to be read), an
// Open handle (ErrNotOwner), and, wrapping
// errors.ErrUnsupported, a sandbox with a terminal, one from a Pool, and
// one in a user namespace attached to a network. If the restart itself
// fails (ctx ends, the storage cannot prepare the rootfs, the program
// cannot be run), the sandbox is torn down as a failed Start would be,
// and Wait returns Reset's error.
func (s *Sandbox) Reset(ctx context.Context) error {
	s.resetMu.Lock()
	defer s.resetMu.Unlock()
	handedOver, netns, err := s.stopForReset()
	if err != nil {
		return fmt.Errorf("sandbox %s: reset: %w", s.id, err)
	}
	// Not bounded by ctx: the old workload has been killed, and its
	// supervisor's hand-over comes once it has been reaped.
	select {
	case <-handedOver:
	case <-s.done:
		// It ended on its own just before the kill, and was torn down.
		if netns != nil {
			netns.Close()
		}
		return fmt.Errorf("sandbox %s: reset: %w: the workload ended first", s.id, ErrNotRunning)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.restart(ctx, netns); err != nil {
		s.endAfterFailedReset(err)
		if err == errClosedMeanwhile {
			return fmt.Errorf("sandbox %s: reset: %w", s.id, err)
		}
		return fmt.Errorf("sandbox %s: reset: %w", s.id, setupError(err))
	}
	return nil
}

// stopForReset checks that the sandbox can be reset, takes hold of its
// network namespace if it is to be kept, and kills its workload. The
// channel returned is closed when the supervisor has seen the workload
// end and handed the sandbox over (handOverToReset).
func (s *Sandbox) stopForReset() (<-chan struct{}, *os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !s.started:
		return nil, nil, ErrNotStarted
	case s.cmd == nil && s.proc != nil:
		return nil, nil, ErrNotOwner
	case s.closed:
		return nil, nil, fmt.Errorf("%w: closed", ErrNotRunning)
	case s.result == nil:
		return nil, nil, fmt.Errorf("%w: its start failed", ErrNotRunning)
	}
	select {
	case <-s.done:
		return nil, nil, fmt.Errorf("%w: the workload has ended, and its network and rootfs with it", ErrNotRunning)
	default:
	}
	switch {
	case s.pool != nil:
		return nil, nil, fmt.Errorf("a pooled sandbox: %w (take a new one from the pool)", errors.ErrUnsupported)
	case s.opts.TTY:
		return nil, nil, fmt.Errorf("a sandbox with a terminal: %w (its session cannot be started again)", errors.ErrUnsupported)
	case s.opts.Detachable:
		return nil, nil, fmt.Errorf("a detachable sandbox: %w (its output pipes are its supervisor's)", errors.ErrUnsupported)
	case s.keepsNetwork() && s.security(&s.opts).UserNamespace != nil && s.opts.Network != nil:
		// The namespace belongs to the old user namespace, in which a
		// new init, in a user namespace of its own, has no rights.
		return nil, nil, fmt.Errorf("a sandbox in a user namespace with a network: %w (its network namespace cannot be joined from a new user namespace)", errors.ErrUnsupported)
	}
	var netns *os.File
	if s.keepsNetwork() {
		f, err := os.Open("/proc/" + strconv.Itoa(s.proc.Pid) + "/ns/net")
		// PID 1 is this process's child, reaped only by its supervisor:
		// if it can still be signalled, its PID was not reused, and the
		// namespace opened was its own.
		if err == nil {
			if serr := s.proc.Signal(syscall.Signal(0)); serr != nil {
				f.Close()
				err = serr
			}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: hold its network namespace: %w", ErrNotRunning, err)
		}
		netns = f
	}
	s.resetting = make(chan struct{})
	s.kill()
	return s.resetting, netns, nil
}

// keepsNetwork reports whether a Reset keeps the sandbox's network
// namespace: unless it has none but loopback, or the host's.
func (s *Sandbox) keepsNetwork() bool {
	if s.hostNetwork() {
		return false
	}
	return s.opts.Network != nil || s.opts.JoinNetwork != "" || s.opts.NetworkPool != nil
}

// handOverToReset is called by the supervisor once the workload's PID 1
// has been reaped: if a Reset replaces the workload, it stops the input
// feed (the output's writers stay, for the next workload) and hands over
// to Reset instead of tearing the sandbox down. Its output has been
// copied: os/exec's Wait has seen to it.
func (s *Sandbox) handOverToReset() bool {
	s.mu.Lock()
	ch := s.resetting
	if ch == nil {
		s.mu.Unlock()
		return false
	}
	s.resetting = nil
	feed := s.streams.feed
	s.streams.feed = nil
	s.mu.Unlock()
	feed.stop()
	close(ch)
	return true
}

// errClosedMeanwhile is a Reset's when Close came first: the sandbox ends
// as Close would have ended it, and Wait reports no error for it.
var errClosedMeanwhile = fmt.Errorf("%w: closed meanwhile", ErrNotRunning)

// restart builds the workload's world again and starts it. Called with
// s.mu held, once the old workload's PID 1 is gone; netns, if not nil, is
// the network namespace to join, closed once the init has it.
func (s *Sandbox) restart(ctx context.Context, netns *os.File) error {
	s.netns = netns
	s.resets++
	if s.closed {
		return errClosedMeanwhile
	}
	if err := ctx.Err(); err != nil {
		return stoppedBeforeStart(ctx)
	}
	s.killed = struct{ timeout, cancel bool }{}
	s.deadline = time.Time{}
	if s.opts.Timeout > 0 {
		s.deadline = time.Now().Add(s.opts.Timeout)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadlineCause(ctx, s.deadline,
			fmt.Errorf("not started within its timeout of %s: %w", s.opts.Timeout, context.DeadlineExceeded))
		defer cancel()
	}
	// The kernel killed the rest of the PID namespace with its PID 1;
	// what an Exec left in the cgroup goes too, so that the new workload
	// shares it with nothing. Not through cgroup.kill, after which the
	// kernel would kill the new init as it is born into the cgroup.
	if err := s.cg.KillEach(ctx); err != nil {
		return fmt.Errorf("empty the cgroup: %w", err)
	}
	if u, err := s.cg.Usage(); err == nil {
		s.usageBase = u
	}
	sec := s.security(&s.opts)
	rootfs, err := s.renewRootfs(ctx, sec)
	if err != nil {
		return err
	}
	spec, err := s.buildSpec(rootfs, s.stateDir(), sec)
	if err != nil {
		return err
	}
	if err := s.rewriteEtcFiles(spec.Hostname); err != nil {
		return err
	}
	p, _, err := s.launchInit(nsinit.ModeInit, sec)
	if err != nil {
		return err
	}
	if err := p.run(ctx, spec); err != nil {
		return s.startFailure(err)
	}
	return s.finishStart(s.runCtx, p, nil, rootfs)
}

// renewRootfs releases the sandbox's rootfs and prepares it again, under
// the same key, from the image, with the same disk quota. Prepare is the
// only way that holds for every Storage: a plugin's rootfs may be a mount
// the host cannot empty, and a quota is set up with the rootfs. A Commit
// or CopyFrom reading the old rootfs finishes first; one that comes
// later reads the new.
func (s *Sandbox) renewRootfs(ctx context.Context, sec *security.Config) (string, error) {
	prep, err := prepareOptions(sec)
	if err != nil {
		return "", err
	}
	if prep != nil && prep.UserNS != nil {
		defer prep.UserNS.Close()
	}
	if s.opts.DiskQuota != 0 {
		if prep == nil {
			prep = &layerfs.PrepareOptions{}
		}
		prep.DiskQuota = s.opts.DiskQuota
	}
	var path string
	err = s.hold.replacing(func() error {
		if err := s.storage.Release(ctx, s.state.RootfsKey); err != nil {
			return fmt.Errorf("release the old rootfs: %w", err)
		}
		s.rootfsReleased = true
		fs, err := s.storage.Prepare(ctx, s.state.RootfsKey, s.img, prep)
		if err != nil {
			return fmt.Errorf("prepare the rootfs again: %w", err)
		}
		s.rootfsReleased = false
		path = fs.Path
		return nil
	})
	return path, err
}

// rewriteEtcFiles writes the sandbox's etc files again as Start left
// them, where the network does not maintain them: without a network all
// three, with one /etc/hostname and /etc/resolv.conf (a workload may have
// changed them); /etc/hosts is the network's, which rewrites it as peers
// come and go.
func (s *Sandbox) rewriteEtcFiles(hostname string) error {
	dir := s.stateDir()
	if s.opts.Network == nil {
		return s.writeEtcFiles(dir, hostname)
	}
	files := map[string][]byte{"hostname": []byte(hostname + "\n")}
	if a := s.attachment; a != nil {
		files["resolv.conf"] = a.DNS.ResolvConf()
		if netplug.IsHost(s.opts.Network) {
			files["hosts"] = netplug.HostsFile(&netplug.Attachment{Network: a.Network, IPs: a.IPs, Hosts: s.opts.ExtraHosts}, hostname)
		}
	}
	for name, b := range files {
		if err := os.WriteFile(etcFile(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// nextStdio returns the streams of a workload Reset starts: the same
// output writers as the first (the caller's, or the duplicates of its
// files, which stay open until the sandbox ends), and no input.
func (s *Sandbox) nextStdio() (stdio, hostStreams) {
	return stdio{out: s.outputs.out, err: s.outputs.err}, hostStreams{dups: s.streams.dups}
}

// endAfterFailedReset tears the sandbox down after a Reset that could not
// start the workload again, as the supervisor would after its end, and
// leaves err for Wait. Called with s.mu held.
func (s *Sandbox) endAfterFailedReset(err error) {
	s.closeNetns()
	s.closeMountSources()
	s.streams.release()
	r := s.result
	r.Exited = time.Now()
	r.ExitCode, r.Signal = 128+int(syscall.SIGKILL), syscall.SIGKILL
	if err != errClosedMeanwhile {
		s.waitErr = fmt.Errorf("sandbox %s: reset: %w", s.id, err)
	}
	if cerr := s.cleanup(); cerr != nil {
		s.log.Warn("tear down after a failed reset", "id", s.id, "err", cerr)
	}
	close(s.done)
}
