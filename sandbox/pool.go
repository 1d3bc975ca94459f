package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/sandbox/internal/nsinit"
	"github.com/berth-dev/berth/security"
)

// ErrPoolClosed is returned by Start for a sandbox whose pool is closed.
var ErrPoolClosed = errors.New("sandbox pool closed")

// MaxPoolSize is the most sandboxes a Pool keeps ready.
const MaxPoolSize = 1024

// A Pool keeps sandboxes of one image and one configuration built ahead of
// time: rootfs prepared, cgroups made, namespaces entered, mounts done, and
// PID 1 waiting for a workload. A sandbox from the pool (Pool.New) has only
// its workload's part left to do when it starts, and leaves its teardown to
// the pool, so its Wait returns as soon as the workload has ended.
//
// A Pool is safe for concurrent use. Sandboxes wanted faster than the pool
// refills are built when they start, as New's would be, or waited for (see
// SetWhenEmpty); Stats counts them, and the pool logs a warning, at most
// every PoolWarnInterval, while it cannot keep up.
type Pool struct {
	ref  string
	img  *layerfs.Image
	tmpl Options
	log  *slog.Logger

	ready  chan *Sandbox // built sandboxes, waiting
	refill chan struct{} // wakes the filler
	ctx    context.Context
	cancel context.CancelFunc
	filled chan struct{} // closed when the filler has stopped

	cache     specCache
	early     sync.Once
	earlyProg []byte // the seccomp program loaded while waiting, if any

	mu       sync.Mutex
	closed   bool
	buildErr error          // why the filler last stopped short, if it did
	teardown sync.WaitGroup // used sandboxes being torn down
	busy     atomic.Int64   // teardowns under way
	failed   chan struct{}  // closed, and replaced, when the filler stops short

	stats     poolCounters
	whenEmpty atomic.Int32 // a WhenEmpty
	lastWarn  atomic.Int64 // when the pool last warned it cannot keep up, in Unix nanoseconds
}

// NewPool returns a pool that keeps size sandboxes of the image ref names
// ready, each configured by opts. opts sets what all its sandboxes share
// (image, mounts, limits, security, network) and may give defaults for
// what each sandbox's own options may change (see Pool.New). NewPool
// builds one sandbox before it returns, so that a configuration that
// cannot work is reported here, and the rest in the background.
func NewPool(ctx context.Context, ref string, opts *Options, size int) (*Pool, error) {
	if size < 1 || size > MaxPoolSize {
		return nil, fmt.Errorf("sandbox pool: size %d: want 1 to %d", size, MaxPoolSize)
	}
	if opts != nil && opts.KeepRootfs {
		return nil, fmt.Errorf("sandbox pool: %w", errPoolKeepRootfs)
	}
	p := &Pool{ref: ref, ready: make(chan *Sandbox, size), refill: make(chan struct{}, 1), filled: make(chan struct{}), failed: make(chan struct{})}
	if opts != nil {
		p.tmpl = *opts
	}
	p.log = p.tmpl.logger()
	if p.tmpl.Storage == nil {
		st, err := defaultStore()
		if err != nil {
			return nil, fmt.Errorf("sandbox pool: %w", err)
		}
		p.tmpl.Storage = st
	}
	img, err := p.tmpl.Storage.Image(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("sandbox pool: %w", err)
	}
	p.img = img
	first, err := p.build(ctx)
	if err != nil {
		return nil, fmt.Errorf("sandbox pool: %w", err)
	}
	p.ready <- first
	// The pool outlives NewPool's context: its own ends with Close.
	p.ctx, p.cancel = context.WithCancel(context.Background())
	go p.fill()
	p.kick()
	return p, nil
}

// New returns a sandbox of the pool, not yet started. opts may set what
// concerns the workload: Args, Entrypoint, Dir, User, Stdin, Stdout,
// Stderr, HandOverStdio, TTY, ExtraFiles, Rlimits, Timeout, Grace,
// WaitFor, ReadyTimeout and Logger, each of which replaces the pool's
// (LogBytes and log checks are refused: a pool's sandbox keeps no
// output); Env, whose variables are
// added to the pool's, replacing those of the same name; and Mounts,
// added to the pool's where the security model allows (see
// SECURITY.md): binds, volumes and tmpfs, each on a directory or file of
// the image's own filesystem (not in /proc, /sys, /dev or one of the
// pool's mounts), and not in a sandbox with a user namespace. Anything
// else belongs to the sandboxes the pool has built, and Start reports it
// as an error wrapping ErrInvalidOptions that names the fields. The
// sandbox's ID is known once Start has returned.
func (p *Pool) New(opts *Options) *Sandbox {
	s := &Sandbox{ref: p.ref, img: p.img, opts: p.tmpl, pool: p, done: make(chan struct{})}
	if opts != nil {
		if fixed := sandboxFields(opts); len(fixed) > 0 {
			s.poolErr = fmt.Errorf("%w: options fixed by the pool for all its sandboxes: %s", ErrInvalidOptions, strings.Join(fixed, ", "))
		}
		if unsupported := poolUnsupported(opts); len(unsupported) > 0 {
			s.poolErr = fmt.Errorf("%w: options a pool's sandbox does not take: %s: %w", ErrInvalidOptions, strings.Join(unsupported, ", "), errors.ErrUnsupported)
		}
		if opts.KeepRootfs {
			s.poolErr = errPoolKeepRootfs
		}
		if opts.Mounts != nil && s.poolErr == nil {
			s.poolErr = p.checkRequestMounts(opts.Mounts)
			s.lateMounts = slices.Clone(opts.Mounts)
		}
		o := &s.opts
		if opts.Args != nil {
			o.Args = opts.Args
		}
		if opts.Entrypoint != nil {
			o.Entrypoint = opts.Entrypoint
		}
		if opts.Env != nil {
			o.Env = mergeEnv(p.tmpl.Env, opts.Env)
		}
		if opts.Dir != "" {
			o.Dir = opts.Dir
		}
		if opts.User != "" {
			o.User = opts.User
		}
		if opts.Stdin != nil {
			o.Stdin = opts.Stdin
		}
		if opts.Stdout != nil {
			o.Stdout = opts.Stdout
		}
		if opts.Stderr != nil {
			o.Stderr = opts.Stderr
		}
		if opts.TTY {
			o.TTY = true
		}
		if opts.HandOverStdio {
			o.HandOverStdio = true
		}
		if opts.ExtraFiles != nil {
			o.ExtraFiles = opts.ExtraFiles
		}
		if opts.Rlimits != nil {
			o.Rlimits = opts.Rlimits
		}
		if opts.Timeout != 0 {
			o.Timeout = opts.Timeout
		}
		if opts.Grace != 0 {
			o.Grace = opts.Grace
		}
		// Start checks them: a pool's sandbox keeps no output, so
		// LogBytes and log checks are refused there, not dropped.
		if opts.WaitFor != nil {
			o.WaitFor = opts.WaitFor
		}
		if opts.ReadyTimeout != 0 {
			o.ReadyTimeout = opts.ReadyTimeout
		}
		if opts.LogBytes != 0 {
			o.LogBytes = opts.LogBytes
		}
		if opts.Logger != nil {
			o.Logger = opts.Logger
		}
	}
	s.log = s.opts.logger()
	return s
}

// sandboxFields names the options o sets that a pool's sandboxes share.
func sandboxFields(o *Options) []string {
	var set []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"Hostname", o.Hostname != ""},
		{"ReadonlyRootfs", o.ReadonlyRootfs},
		{"DiskQuota", o.DiskQuota != 0},
		{"Resources", o.Resources != nil},
		{"Security", o.Security != nil},
		{"Sysctls", o.Sysctls != nil},
		{"Devices", o.Devices != nil},
		{"Network", o.Network != nil},
		{"Ports", o.Ports != nil},
		{"DNS", o.DNS != nil},
		{"NetworkAliases", o.NetworkAliases != nil},
		{"ExtraHosts", o.ExtraHosts != nil},
		{"NetworkPool", o.NetworkPool != nil},
		{"JoinNetwork", o.JoinNetwork != ""},
		{"Networks", o.Networks != nil},
		{"Storage", o.Storage != nil},
		{"Cgroups", o.Cgroups != nil},
		{"StateDir", o.StateDir != ""},
	} {
		if f.set {
			set = append(set, f.name)
		}
	}
	return set
}

// Close frees the sandboxes waiting in the pool and waits until those that
// have ended are torn down. Sandboxes still running stay their callers' to
// wait for or close; they free what they hold themselves.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	<-p.filled
	var first error
	for {
		select {
		case e := <-p.ready:
			if err := e.dropStandby(); err != nil && first == nil {
				first = err
			}
			continue
		default:
		}
		break
	}
	p.teardown.Wait()
	return first
}

// Ready waits until the pool holds all the sandboxes it keeps and no used
// one is being torn down: a warm pool, and a quiet machine, before a
// burst of starts or a measurement. It returns the error that stopped the
// pool from building a sandbox, if one did, or ctx's.
func (p *Pool) Ready(ctx context.Context) error {
	p.kick()
	for {
		p.mu.Lock()
		closed, err := p.closed, p.buildErr
		p.mu.Unlock()
		switch {
		case closed:
			return ErrPoolClosed
		case len(p.ready) == cap(p.ready) && p.busy.Load() == 0:
			return nil
		case err != nil:
			return fmt.Errorf("sandbox pool: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// kick asks the filler to top the pool up.
func (p *Pool) kick() {
	select {
	case p.refill <- struct{}{}:
	default:
	}
}

// fill keeps the pool full, one sandbox at a time, until Close.
func (p *Pool) fill() {
	defer close(p.filled)
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.refill:
		}
		for len(p.ready) < cap(p.ready) && p.ctx.Err() == nil {
			e, err := p.build(p.ctx)
			p.mu.Lock()
			p.buildErr = err
			if err != nil {
				// Wakes the starts waiting for a sandbox (WaitWhenEmpty),
				// which then build one to report what is wrong.
				close(p.failed)
				p.failed = make(chan struct{})
			}
			p.mu.Unlock()
			if err != nil {
				// Not retried until a sandbox is taken, whose own
				// build then reports what is wrong.
				if p.ctx.Err() == nil {
					p.log.Warn("sandbox pool: build a sandbox", "image", p.ref, "err", err)
				}
				break
			}
			select {
			case p.ready <- e:
			default:
				e.dropStandby()
			}
		}
	}
}

// take returns a built sandbox: a waiting one, or, if none waits, one
// built now or the next the pool builds, as SetWhenEmpty says.
func (p *Pool) take(ctx context.Context) (*Sandbox, error) {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil, ErrPoolClosed
	}
	select {
	case e := <-p.ready:
		p.stats.hits.Add(1)
		return e, nil
	default:
	}
	p.missed()
	if p.WhenEmpty() == WaitWhenEmpty {
		return p.waitReady(ctx)
	}
	return p.build(ctx)
}

// build makes a sandbox up to its workload: everything Start does before
// the workload's part of the spec, with PID 1 reporting it ready.
func (p *Pool) build(ctx context.Context) (_ *Sandbox, err error) {
	defer func() {
		if err != nil {
			p.stats.buildFailures.Add(1)
		} else {
			p.stats.builds.Add(1)
		}
	}()
	e := New(p.ref, &p.tmpl)
	e.img, e.forPool = p.img, true
	defer func() {
		if err != nil {
			e.cleanup()
			err = fmt.Errorf("sandbox %s: %w", e.id, err)
		}
	}()
	if err := e.validate(); err != nil {
		return nil, err
	}
	sec := e.security(&e.opts)
	rootfs, err := e.build(ctx, sec)
	if err != nil {
		return nil, err
	}
	e.rootfs = rootfs
	if e.plan, err = e.lsmPlan(sec); err != nil {
		return nil, err
	}
	spec := &nsinit.Spec{}
	if err := e.sandboxSpec(spec, rootfs, e.stateDir(), sec, e.plan); err != nil {
		return nil, err
	}
	bounding, err := security.CapabilityMask(sec.Capabilities)
	if err != nil {
		return nil, err
	}
	spec.Bounding = &bounding
	// A filter under which no workload could start is the pool's error.
	if sec.Seccomp != nil {
		if _, err := p.cache.program(p.tmpl.stateRoot(), sec, bounding); err != nil {
			return nil, err
		}
	}
	if prog := p.earlySeccomp(sec, bounding); prog != nil {
		spec.Seccomp, spec.SeccompFlags, spec.NoNewPrivs = prog, sec.Seccomp.FilterFlags(), sec.NoNewPrivileges
	}
	e.state.Hostname = spec.Hostname
	lp, _, err := e.launchInit(nsinit.ModeStandby, sec)
	if err != nil {
		return nil, err
	}
	if err := e.attachNetwork(ctx, lp.cmd.Process.Pid, e.stateDir(), spec.Hostname); err != nil {
		lp.abandon()
		return nil, err
	}
	spec.CgroupFDs = lp.cgroupFDs
	if err := nsinit.SendMessage(int(lp.specW.Fd()), spec.Encode(), nil); err != nil {
		lp.abandon()
		return nil, err
	}
	if err := lp.await(ctx, func(st nsinit.Status) bool { return st.Ready }); err != nil {
		return nil, e.startFailure(err)
	}
	e.standby = lp
	// What Recover and other processes need is known now; the take adds
	// only the workload's part.
	e.state.Rootfs = rootfs
	if st, err := procStartTime(lp.cmd.Process.Pid); err == nil {
		e.state.Init = procID{PID: lp.cmd.Process.Pid, StartTime: st}
	}
	if err := writeState(e.stateDir(), &e.state); err != nil {
		lp.abandon()
		return nil, err
	}
	return e, nil
}

// earlySeccomp returns the seccomp program the pool's sandboxes load while
// they wait, or nil if they load it just before the exec: there is none,
// or it refuses a call that the rest of the set-up makes (a custom
// profile may). Worked out once per pool.
func (p *Pool) earlySeccomp(sec *security.Config, caps uint64) []byte {
	p.early.Do(func() {
		if sec.Seccomp == nil {
			return
		}
		calls := nsinit.StandbySyscalls(sec.Landlock)
		if calls == nil {
			return
		}
		prog, err := p.cache.program(p.tmpl.stateRoot(), sec, caps)
		if err != nil {
			return // reported when a sandbox starts
		}
		ok, err := security.Allows(prog, calls)
		if !ok || err != nil {
			p.log.Debug("sandbox pool: seccomp filter loaded at the exec", "why", "it refuses a call of the set-up", "err", err)
			return
		}
		p.earlyProg = prog
	})
	return p.earlyProg
}

// dropStandby frees a built sandbox that no workload used.
func (s *Sandbox) dropStandby() error {
	s.standby.abandon()
	return s.cleanup()
}

// discard tears a used sandbox down: in the background, unless the pool
// is closed and no longer waits for it.
func (p *Pool) discard(id string, undo []func() error) {
	run := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			if err := undo[i](); err != nil {
				p.log.Error("sandbox cleanup", "id", id, "err", err)
			}
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		run()
		return
	}
	p.teardown.Add(1)
	p.busy.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.teardown.Done()
		defer p.busy.Add(-1)
		run()
	}()
}

// startFromPool starts a pool's sandbox: it takes a built one and sends
// its PID 1 the workload. Called by Start, with s.mu held: startCtx bounds
// the start, ctx the sandbox's life.
func (s *Sandbox) startFromPool(ctx, startCtx context.Context) error {
	if s.poolErr != nil {
		return s.poolErr
	}
	// The pool builds the next sandbox once this one has started, not
	// beside it: on a small machine the two would slow each other.
	defer s.pool.kick()
	// A sandbox can die while it waits (killed from outside, the OOM
	// killer): one whose PID 1 cannot be sent its workload is dropped, and
	// another taken.
	for attempt := 1; ; attempt++ {
		err := s.startTaken(ctx, startCtx)
		if !errors.Is(err, errStandbyGone) {
			return err
		}
		s.log.Warn("sandbox pool: a waiting sandbox was gone", "id", s.id, "err", err)
		if err := s.cleanup(); err != nil {
			s.log.Warn("sandbox pool: clean up a sandbox that was gone", "id", s.id, "err", err)
		}
		if attempt == 3 {
			return fmt.Errorf("%w: %w", ErrSetup, err)
		}
	}
}

// errPoolKeepRootfs refuses Options.KeepRootfs for a pool's sandboxes: a
// pool tears its used sandboxes down in the background, and a rootfs kept
// past that would have no owner to release it.
// It wraps errors.ErrUnsupported, as Reset's refusal of a pooled sandbox
// does.
var errPoolKeepRootfs = fmt.Errorf("KeepRootfs for a pool's sandboxes: %w (start the sandbox with New to commit or copy from it after it exits)", errors.ErrUnsupported)

// errStandbyGone means a waiting sandbox could not be sent its workload.
var errStandbyGone = errors.New("the waiting sandbox's init is gone")

// startTaken takes a built sandbox, which becomes s, and starts the
// workload in it.
func (s *Sandbox) startTaken(ctx, startCtx context.Context) error {
	e, err := s.pool.take(startCtx)
	if err != nil {
		return err
	}
	// The built sandbox becomes s: its ID, its record, what undoes it.
	s.id, s.img, s.storage, s.state, s.cg, s.attachment = e.id, e.img, e.storage, e.state, e.cg, e.attachment
	s.plan, s.undo, s.hold = e.plan, e.undo, e.hold
	p := e.standby
	rootfs := e.rootfs

	sec := s.security(&s.opts)
	spec, err := s.workloadSpec(rootfs, sec, s.plan)
	if err != nil {
		p.abandon()
		return err
	}
	if s.pool.earlyProg != nil {
		// Loaded already, while the sandbox waited.
		spec.Seccomp, spec.SeccompFlags = nil, 0
	}
	s.state.Args, s.state.Env, s.state.User, s.state.Dir = s.opts.Args, s.opts.Env, s.opts.User, s.opts.Dir
	s.state.Command = spec.Args
	var late *lateMounts
	if len(s.lateMounts) > 0 {
		if late, err = s.openLateMounts(rootfs); err != nil {
			p.abandon()
			return err
		}
		defer late.close()
		spec.LateMounts = true
	}
	enc, err := marshalSpec(spec)
	if err != nil {
		p.abandon()
		return err
	}

	if p.gone() {
		p.abandon()
		return errStandbyGone
	}
	files, err := s.workloadFiles()
	if err != nil {
		p.abandon()
		return err
	}
	fds := make([]int, len(files.send))
	for i, f := range files.send {
		fds[i] = int(f.Fd())
	}
	// A message larger than the socket's buffer blocks until the init has
	// read it: ending startCtx kills the init, which ends the send.
	stop := context.AfterFunc(startCtx, func() { p.cmd.Process.Kill() })
	err = nsinit.SendMessage(int(p.specW.Fd()), enc, fds)
	if err == nil && late != nil {
		err = late.send(p.specW)
	}
	stop()
	files.sent(err == nil)
	p.specW.Close()
	p.specW = nil
	if err != nil {
		p.abandon()
		if startCtx.Err() != nil {
			return stoppedBeforeStart(startCtx)
		}
		return fmt.Errorf("%w: %w", errStandbyGone, err)
	}
	p.started = time.Now()
	if err := p.await(startCtx, func(st nsinit.Status) bool { return st.Started }); err != nil {
		return s.startFailure(err)
	}
	if files.console != nil {
		defer files.console.Close()
	}
	return s.finishStart(ctx, p, files.console, rootfs)
}

// gone reports whether a waiting init has ended or spoken out of turn: its
// status pipe, silent while it waits, is readable. The check does not
// block; an init killed an instant before is caught by the send, or by
// Start's error.
func (p *launched) gone() bool {
	rc, err := p.statusR.SyscallConn()
	if err != nil {
		return true
	}
	ready := false
	rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		ready = err == nil && n > 0
	})
	return ready
}

// poolFiles are the descriptors a pooled sandbox's workload is sent.
type poolFiles struct {
	send    []*os.File // in the order the init takes them
	console *os.File   // our end of the terminal's socket, with TTY
	closeUs []*os.File // the host's copies of what was sent, once sent
	undo    []*os.File // the host's ends of pipes, if sending failed
	after   []func()   // copiers, to start once sent
	feed    *inputFeed // fills the workload's stdin pipe, once sent
}

// sent closes the host's copies of the descriptors, and starts copying
// if the workload got them.
func (f *poolFiles) sent(ok bool) {
	for _, c := range f.closeUs {
		c.Close()
	}
	if !ok {
		f.feed.stop()
		for _, c := range f.undo {
			c.Close()
		}
		if f.console != nil {
			f.console.Close()
		}
		return
	}
	f.feed.start()
	for _, run := range f.after {
		run()
	}
}

// workloadFiles gives the workload its stdio, extra files and terminal as
// launchInit does for New's sandboxes: nil as /dev/null, any other reader
// or writer through a pipe that a goroutine copies, and an *os.File as it
// is only if the caller hands it over (Options.HandOverStdio).
func (s *Sandbox) workloadFiles() (*poolFiles, error) {
	f := &poolFiles{}
	var devNull *os.File
	null := func() (*os.File, error) {
		if devNull == nil {
			var err error
			if devNull, err = os.OpenFile(os.DevNull, os.O_RDWR, 0); err != nil {
				return nil, err
			}
			f.closeUs = append(f.closeUs, devNull)
		}
		return devNull, nil
	}
	handOver := s.opts.HandOverStdio
	input := func(r io.Reader) (*os.File, error) {
		if r == nil {
			return null()
		}
		if file, ok := r.(*os.File); ok && handOver {
			return file, nil
		}
		// Stopped by supervise once the workload has ended, so that a
		// stdin that never ends cannot hold Wait up.
		pr, feed, err := newInputFeed(r)
		if err != nil {
			return nil, err
		}
		f.closeUs, f.feed = append(f.closeUs, pr), feed
		s.streams.feed = feed
		return pr, nil
	}
	output := func(w io.Writer) (*os.File, error) {
		if w == nil {
			return null()
		}
		file, isFile := w.(*os.File)
		if isFile && handOver {
			return file, nil
		}
		var dup *os.File
		if isFile {
			// The caller may close its own once Start has returned.
			var err error
			if dup, err = dupFile(file); err != nil {
				return nil, err
			}
			w = dup
			f.undo = append(f.undo, dup)
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		f.closeUs, f.undo = append(f.closeUs, pw), append(f.undo, pr)
		f.after = append(f.after, func() {
			s.copying.Add(1)
			go func() {
				defer s.copying.Done()
				io.Copy(w, pr)
				pr.Close()
				if dup != nil {
					dup.Close()
				}
			}()
		})
		return pw, nil
	}
	add := func(file *os.File, err error) error {
		if err != nil {
			return err
		}
		f.send = append(f.send, file)
		return nil
	}
	var err error
	if s.opts.TTY {
		// The workload's stdio is the terminal the init makes; the
		// init's own stays /dev/null.
		for range 3 {
			if err = add(null()); err != nil {
				break
			}
		}
	} else {
		err = add(input(s.opts.Stdin))
		var out *os.File
		if err == nil {
			out, err = output(s.opts.Stdout)
			err = add(out, err)
		}
		if err == nil {
			if sameWriter(s.opts.Stdout, s.opts.Stderr) || sameFiles(s.opts.Stdout, s.opts.Stderr) {
				err = add(out, nil)
			} else {
				err = add(output(s.opts.Stderr))
			}
		}
	}
	for _, x := range s.opts.ExtraFiles {
		if err != nil {
			break
		}
		if x == nil {
			err = add(null())
		} else {
			err = add(x, nil)
		}
	}
	if err == nil && s.opts.TTY {
		pair, serr := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if serr != nil {
			err = fmt.Errorf("console socket: %w", serr)
		} else {
			f.console = os.NewFile(uintptr(pair[0]), "console")
			theirs := os.NewFile(uintptr(pair[1]), "console")
			f.closeUs = append(f.closeUs, theirs)
			f.send = append(f.send, theirs)
		}
	}
	if err != nil {
		f.sent(false)
		return nil, fmt.Errorf("the workload's files: %w", err)
	}
	if len(f.send) > nsinit.MaxStandbyFiles {
		f.sent(false)
		return nil, fmt.Errorf("the workload's files: %d descriptors, at most %d", len(f.send), nsinit.MaxStandbyFiles)
	}
	return f, nil
}

// sameFiles reports whether a and b are files that are one open file
// description, which one pipe serves in order.
func sameFiles(a, b io.Writer) bool {
	af, ok1 := a.(*os.File)
	bf, ok2 := b.(*os.File)
	return ok1 && ok2 && sameOpenFile(af, bf)
}

// sameWriter reports whether a and b are one writer, as os/exec checks
// before giving stdout and stderr one pipe.
func sameWriter(a, b io.Writer) (same bool) {
	if a == nil || b == nil {
		return false
	}
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}
