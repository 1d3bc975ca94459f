package plugin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/internal/clip"
	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// handshake is shared by berth and every plugin: go-plugin refuses a
// program that does not answer with the same cookie (so a plugin run by
// hand says it must be started by berth), and compares protocol versions.
var handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "BERTH_PLUGIN",
	MagicCookieValue: "f3b1c8e2-berth-plugin-protocol",
}

// pluginName is the one name berth's plugins are dispensed by.
const pluginName = "berth"

// defaultStartTimeout bounds a plugin's start (exec to handshake) when
// the caller's context has no earlier deadline.
const defaultStartTimeout = 30 * time.Second

// exitWait is how long a call that lost its connection waits for the
// plugin's process to be reaped, so that its error can say how it ended.
const exitWait = 250 * time.Millisecond

// grpcPlugin is go-plugin's glue: on the plugin's side it registers the
// services, on the host's it hands over the connection itself, on which
// the storage and network adapters make their own clients.
type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	register func(*grpc.Server)
}

func (p *grpcPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	p.register(s)
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return c, nil
}

// A client keeps one plugin process running for a host-side adapter. It
// is safe for concurrent use: many goroutines call through one process.
//
// When the process dies, the call that sees it fails with ErrPluginExited
// (it is never retried: it may have done part of its work) and the next
// call starts the plugin again; however many goroutines find it dead at
// once, one of them restarts it and the others wait for that.
type client struct {
	path string
	name string // the binary's base name: how logs and errors name the plugin
	kind string
	opts Options
	log  *slog.Logger

	// aliases are host-side sentinels a remote error matches besides
	// berth's plugin sentinels; see alias.
	aliases map[error][]error

	// first is the Info of the first start. A restarted plugin must
	// announce the same kind, capabilities and roots: adapters checked
	// those once, at open.
	first atomic.Pointer[Info]

	cur  atomic.Pointer[proc] // the running process, nil before the first start or after close
	sem  chan struct{}        // held while starting or stopping a process
	done atomic.Bool          // closed

	// life ends when close is called, which ends a start in progress.
	life    context.Context
	endLife context.CancelFunc
}

// A proc is one start of the plugin.
type proc struct {
	gp     *goplugin.Client
	run    *execRunner
	cc     *grpc.ClientConn
	dir    string // the private socket directory
	stderr *stderrLog
	stdio  [2]*stderrLog // what the plugin writes to os.Stdout and os.Stderr once serving
	info   Info
	dead   atomic.Bool   // its connection failed: the next conn starts another
	gone   chan struct{} // closed by stop: the process is killed
}

// alive reports whether p may still serve calls.
func (p *proc) alive() bool {
	if p.dead.Load() {
		return false
	}
	select {
	case <-p.run.exited:
		return false
	default:
		return true
	}
}

// startClient starts the plugin at path, checks that it is of kind
// (KindStorage or KindNetwork; "" takes either), and reads its Info. The
// start is bounded by ctx.
func startClient(ctx context.Context, path, kind string, opts *Options) (*client, error) {
	c, err := newClient(path, kind, opts)
	if err != nil {
		return nil, err
	}
	if _, err := c.conn(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// newClient checks path and opts and makes a client that has not started
// the plugin yet.
func newClient(path, kind string, opts *Options) (*client, error) {
	c := &client{path: path, name: filepath.Base(path), kind: kind, sem: make(chan struct{}, 1)}
	if opts != nil {
		c.opts = *opts
		c.opts.Env = slices.Clone(opts.Env)
		c.opts.Checksum = slices.Clone(opts.Checksum)
	}
	if err := checkBinary(path); err != nil {
		return nil, err
	}
	if n := len(c.opts.Checksum); n != 0 && n != sha256.Size {
		return nil, fmt.Errorf("plugin %s: checksum is %d bytes, a SHA-256 is %d: %w", c.name, n, sha256.Size, ErrInvalid)
	}
	if err := checkEnv(c.opts.Env); err != nil {
		return nil, err
	}
	if c.opts.RunDir == "" {
		c.opts.RunDir = defaultRunDir
	}
	// Clean, as the socket path in a handshake must be (PluginToHost), and
	// go-plugin makes the socket directory's path by joining, not cleaning.
	c.opts.RunDir = filepath.Clean(c.opts.RunDir)
	c.log = c.opts.Logger
	if c.log == nil {
		c.log = discardLogger
	}
	c.log = c.log.With("plugin", c.name)
	c.life, c.endLife = context.WithCancel(context.Background())
	return c, nil
}

// alias makes remote errors that mean sentinel also match each of also
// with errors.Is: the storage adapter aliases ErrNotFound to
// layerfs.ErrNotFound, so that sandbox's reclaim, which tests for that,
// works with a plugin. Call it before the client is shared.
func (c *client) alias(sentinel error, also ...error) {
	if c.aliases == nil {
		c.aliases = make(map[error][]error)
	}
	c.aliases[sentinel] = append(c.aliases[sentinel], also...)
}

// Info describes the plugin as it said when it last started (as it
// said when it first started if it is not running now).
func (c *client) Info() Info {
	if p := c.cur.Load(); p != nil {
		return p.info
	}
	if first := c.first.Load(); first != nil {
		return *first
	}
	return Info{Path: c.path}
}

// conn returns a connection to a running plugin, starting it if it is not
// running (the first call, or the plugin died): a call that fails because
// the plugin died is not retried, but the next one finds it started
// again.
func (c *client) conn(ctx context.Context) (*grpc.ClientConn, error) {
	if p := c.cur.Load(); p != nil && p.alive() {
		return p.cc, nil
	}
	if c.done.Load() {
		return nil, fmt.Errorf("plugin %s: %w", c.name, ErrClosed)
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("plugin %s: waiting for its start: %w", c.name, ctx.Err())
	}
	defer func() { <-c.sem }()
	if c.done.Load() {
		return nil, fmt.Errorf("plugin %s: %w", c.name, ErrClosed)
	}
	old := c.cur.Load()
	if old != nil && old.alive() {
		return old.cc, nil // another goroutine started it while this one waited
	}
	if old != nil {
		was := old.run.exitStatus()
		if was == "" {
			was = "lost its connection"
		}
		c.log.Warn("restarting plugin", "was", was)
		c.stop(old)
		c.cur.Store(nil)
	}
	p, err := c.start(ctx)
	if err != nil {
		return nil, err
	}
	if first := c.first.Load(); first == nil {
		c.first.Store(&p.info)
	} else if err := sameShape(*first, p.info); err != nil {
		c.stop(p)
		return nil, fmt.Errorf("plugin %s restarted %s; close and open it again: %w", c.name, clip.Cut(clip.Text(err.Error()), 300), ErrRefused)
	}
	c.cur.Store(p)
	return p.cc, nil
}

// sameShape reports how a restarted plugin's Info differs from its first
// in what adapters rely on.
func sameShape(first, now Info) error {
	switch {
	case now.Kind != first.Kind:
		return fmt.Errorf("as a %s plugin, not a %s one", now.Kind, first.Kind)
	case now.Protocol != first.Protocol:
		return fmt.Errorf("speaking protocol %d, not %d", now.Protocol, first.Protocol)
	case !slices.Equal(now.Capabilities, first.Capabilities):
		return fmt.Errorf("with capabilities %q, not %q", now.Capabilities, first.Capabilities)
	case !slices.Equal(now.Roots, first.Roots):
		return fmt.Errorf("with roots %q, not %q", now.Roots, first.Roots)
	}
	return nil
}

// start starts a process of the plugin and checks its Info, within
// ctx and the start timeout. c.sem is held.
func (c *client) start(ctx context.Context) (*proc, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("plugin %s: %w", c.name, err)
	}
	if err := checkRunDir(c.opts.RunDir); err != nil {
		return nil, err
	}
	// The whole start, handshake and Info, is bounded by the start
	// timeout as well as by the caller's context: a plugin that never
	// answers must not hold a caller without a deadline forever (nor the
	// others waiting for the start). The process is killed when either
	// ends first.
	timeout := defaultStartTimeout
	if c.opts.StartTimeout > 0 {
		timeout = c.opts.StartTimeout
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer context.AfterFunc(c.life, cancel)()

	cmd := exec.Command(c.path)
	if len(c.opts.Checksum) > 0 {
		// Hash and execute the same open file, so that a binary renamed
		// into place between the check and the exec is not the one run
		// (go-plugin's SecureConfig hashes the path, and cannot be used
		// with the RunnerFunc berth needs). The descriptor is
		// close-on-exec: the kernel has opened the binary before it
		// closes it, so the plugin does not inherit it; a script cannot
		// run that way, which a checksummed plugin must not be.
		f, err := c.checkSum()
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd.Path = fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	}
	cmd.Env = pluginEnv(&c.opts, levelName(c.log))

	p := &proc{
		stderr: newStderrLog(c.log),
		// go-plugin's Serve points a Go plugin's os.Stdout and os.Stderr
		// at a stream to the host once it serves; what comes that way is
		// logged like stderr.
		stdio: [2]*stderrLog{newStderrLog(c.log.With("stream", "stdout")), newStderrLog(c.log.With("stream", "stderr"))},
		gone:  make(chan struct{}),
	}
	gp := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig: handshake,
		Plugins:         goplugin.PluginSet{pluginName: &grpcPlugin{}},
		// go-plugin hands a RunnerFunc an empty command with its own
		// environment (cookie, versions, socket dir, mTLS certificate)
		// set; berth's command takes that environment after its own.
		RunnerFunc: func(l hclog.Logger, gcmd *exec.Cmd, dir string) (runner.Runner, error) {
			cmd.Env = append(cmd.Env, gcmd.Env...)
			p.dir = dir
			r, err := newExecRunner(sctx, l, cmd, dir)
			p.run = r
			return r, err
		},
		AutoMTLS:         c.opts.AutoMTLS,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		StartTimeout:     timeout,
		SkipHostEnv:      true,
		// With a RunnerFunc, go-plugin makes a 0700 directory in TempDir
		// for the socket, tells the plugin with PLUGIN_UNIX_SOCKET_DIR,
		// and removes it on Kill; stop removes it too, after a kill -9.
		UnixSocketConfig: &goplugin.UnixSocketConfig{TempDir: c.opts.RunDir},
		Stderr:           p.stderr,
		SyncStdout:       p.stdio[0],
		SyncStderr:       p.stdio[1],
		Logger:           &hclogShim{log: c.log, stderr: c.name},
	})
	p.gp = gp

	started := make(chan error, 1)
	go c.startOnThread(p, started)
	if err := <-started; err != nil {
		c.stop(p)
		return nil, c.startErr(ctx, sctx, p, err)
	}
	if !p.run.started() {
		c.stop(p)
		return nil, c.startErr(ctx, sctx, p, errors.New("timeout while waiting for plugin to start"))
	}
	rpc, err := gp.Client()
	if err == nil {
		var raw any
		if raw, err = rpc.Dispense(pluginName); err == nil {
			p.cc = raw.(*grpc.ClientConn)
		}
	}
	if err != nil {
		c.stop(p)
		return nil, fmt.Errorf("plugin %s: connecting: %w", c.name, err)
	}
	r, err := pb.NewInfoServiceClient(p.cc).Info(sctx, &pb.InfoRequest{})
	if err != nil {
		c.stop(p)
		switch {
		case c.done.Load():
			return nil, fmt.Errorf("plugin %s: closed while starting: %w", c.name, ErrClosed)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("plugin %s: asking its info: %w", c.name, ctx.Err())
		case sctx.Err() != nil:
			return nil, fmt.Errorf("plugin %s: no answer to Info within %s: %w", c.name, timeout, ErrNotPlugin)
		}
		return nil, fmt.Errorf("plugin %s: asking its info: %s: %w", c.name, clip.Cut(clip.Text(status.Convert(err).Message()), 200), ErrNotPlugin)
	}
	if k := r.GetKind(); (c.kind != "" && k != c.kind) || (k != KindStorage && k != KindNetwork) {
		c.stop(p)
		return nil, fmt.Errorf("plugin %s is a %s plugin, not a %s one: %w", c.name, clip.Quote(r.GetKind()), c.kind, ErrWrongKind)
	}
	caps := slices.DeleteFunc(slices.Clone(r.GetCapabilities()), func(cap string) bool { return !capRE.MatchString(cap) })
	slices.Sort(caps)
	p.info = Info{
		Path:         c.path,
		Kind:         r.GetKind(),
		Name:         clip.String(clip.Text(r.GetName())),
		Version:      clip.String(clip.Text(r.GetVersion())),
		Protocol:     gp.NegotiatedVersion(),
		Capabilities: slices.Compact(caps),
		Roots:        slices.Clone(r.GetRoots()),
	}
	c.log.Debug("plugin started", "pid", p.run.pid, "name", p.info.Name, "version", p.info.Version)
	return p, nil
}

// checkSum opens the plugin's binary and checks its SHA-256 against
// Options.Checksum, returning the open file to execute.
func (c *client) checkSum() (*os.File, error) {
	f, err := os.Open(c.path)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w", c.name, err)
	}
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], 0); err == nil && string(magic[:]) == "#!" {
		f.Close()
		return nil, fmt.Errorf("plugin %s is a script: with a checksum berth executes the file it hashed, which an interpreter cannot open: %w", c.name, ErrInvalid)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, fmt.Errorf("plugin %s: hashing: %w", c.name, err)
	}
	if got := h.Sum(nil); subtle.ConstantTimeCompare(got, c.opts.Checksum) != 1 {
		f.Close()
		return nil, fmt.Errorf("plugin %s: the binary's SHA-256 is %x, not %x: %w", c.name, got, c.opts.Checksum, ErrChecksum)
	}
	return f, nil
}

// startOnThread starts p's process from a locked OS thread that lives as
// long as the process: Pdeathsig kills the plugin when the thread that
// forked it ends, which must mean "when berth dies", not "when Go retired
// a thread".
//
// It also contains go-plugin's panics: go-plugin v1.8.0's Start
// dereferences a nil TLS config when a plugin's handshake carries a
// certificate berth did not ask for (AutoMTLS off), and a plugin must not
// be able to crash berth. go-plugin has killed the process by then.
func (c *client) startOnThread(p *proc, started chan<- error) {
	runtime.LockOSThread()
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("handshake crashed go-plugin (%v)", r)
			}
		}()
		_, err = p.gp.Start()
		return err
	}()
	started <- err
	if p.run != nil {
		select {
		case <-p.run.exited:
		case <-p.gone:
		}
	}
	// The process is gone: the thread may go back to the pool.
	runtime.UnlockOSThread()
}

// stopWait bounds how long stop lets go-plugin read a killed plugin's
// stdout and stderr to their end, which it does before it reaps the
// plugin; a process the plugin started beyond its process group (in a
// session of its own) may hold them open for as long as it lives.
const stopWait = 5 * time.Second

// shutdownWait bounds how long stop lets a plugin answer go-plugin's
// Shutdown before it kills the plugin's process group.
const shutdownWait = 2 * time.Second

// stop kills p's process group if it runs and removes its socket
// directory.
func (c *client) stop(p *proc) {
	p.dead.Store(true)
	// go-plugin's Kill asks the plugin to shut down, and waits for the
	// answer with no deadline but the process's exit; then it kills the
	// plugin, and waits until it has read its stdout and stderr to their
	// end and reaped it. A plugin that never answers, or a helper it
	// started that holds its stderr, would hold stop, and so close and
	// every restart, forever. Past shutdownWait the plugin's process group
	// is killed, which ends the call; past stopWait berth closes its ends
	// of the plugin's stdout and stderr.
	if p.run != nil {
		kill := time.AfterFunc(shutdownWait, func() { p.run.Kill(context.Background()) })
		unpipe := time.AfterFunc(stopWait, func() {
			c.log.Warn("plugin killed, but something it started holds its stdout or stderr: no longer reading them", "pid", p.run.pid)
			p.run.closePipes()
		})
		p.gp.Kill()
		kill.Stop()
		unpipe.Stop()
		select {
		case <-p.run.exited:
		case <-time.After(exitWait):
			c.log.Warn("plugin killed but not reaped", "pid", p.run.pid)
		}
	} else {
		p.gp.Kill()
	}
	close(p.gone)
	p.stderr.flush()
	p.stdio[0].flush()
	p.stdio[1].flush()
	if p.dir != "" {
		if err := os.RemoveAll(p.dir); err != nil {
			c.log.Warn("removing plugin socket dir", "dir", p.dir, "error", err)
		}
	}
}

// capRE is what a capability looks like; others are dropped, as unknown
// ones are ignored: they end up in listings, where a plugin must not
// write what it likes.
var capRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,31}$`)

var versionRE = regexp.MustCompile(`Plugin version: (\d+)`)

// startErr turns the error of go-plugin's Start into berth's: one line,
// wrapping ErrNotPlugin, ErrIncompatible or ErrChecksum.
func (c *client) startErr(ctx, sctx context.Context, p *proc, err error) error {
	if c.done.Load() {
		return fmt.Errorf("plugin %s: closed while starting: %w", c.name, ErrClosed)
	}
	if ctx.Err() != nil {
		// The caller gave up (and the process was killed for it): that,
		// not what go-plugin saw of the kill, is the error.
		return fmt.Errorf("plugin %s: starting: %w", c.name, ctx.Err())
	}
	msg := err.Error()
	var status, said string
	if p.run != nil {
		select {
		case <-p.run.exited:
		case <-time.After(exitWait):
		}
		status = p.run.exitStatus()
		said = p.stderr.lastLineText()
	}
	detail := func(what string) string {
		if status != "" {
			what += " (" + status + ")"
		}
		if said != "" {
			what += "; it said " + strconv.Quote(said)
		}
		return what
	}
	switch {
	case strings.Contains(msg, "incompatible API version"):
		theirs := "another"
		if m := versionRE.FindStringSubmatch(msg); m != nil {
			theirs = m[1]
		}
		return fmt.Errorf("plugin %s speaks protocol %s, berth speaks %d: %w", c.name, theirs, ProtocolVersion, ErrIncompatible)
	case strings.Contains(msg, "incompatible core API version"):
		return fmt.Errorf("plugin %s speaks go-plugin core protocol other than %d: %w", c.name, goplugin.CoreProtocolVersion, ErrIncompatible)
	case strings.Contains(msg, "unsupported plugin protocol"):
		return fmt.Errorf("plugin %s serves net/rpc, berth speaks gRPC only: %w", c.name, ErrNotPlugin)
	case strings.Contains(msg, "timeout while waiting") || sctx.Err() != nil:
		return fmt.Errorf("plugin %s: %s: %w", c.name, detail("no handshake in time"), ErrNotPlugin)
	case strings.Contains(msg, "exited before we could connect"):
		return fmt.Errorf("plugin %s %s: %w", c.name, detail("exited before its handshake"), ErrNotPlugin)
	case strings.Contains(msg, "Unrecognized remote plugin message"):
		line, _, _ := strings.Cut(strings.TrimPrefix(msg, "Unrecognized remote plugin message: "), "\n")
		if line == "" && status != "" {
			return fmt.Errorf("plugin %s %s: %w", c.name, detail("exited before its handshake"), ErrNotPlugin)
		}
		if line == "" {
			return fmt.Errorf("plugin %s %s: %w", c.name, detail("wrote no handshake"), ErrNotPlugin)
		}
		return fmt.Errorf("plugin %s wrote %s, not a handshake: %w", c.name, clip.Quote(line), ErrNotPlugin)
	case strings.HasPrefix(msg, "it listens on") || strings.HasPrefix(msg, "its socket"):
		return fmt.Errorf("plugin %s refused: %s: %w", c.name, clip.Text(msg), ErrNotPlugin)
	case p.run != nil && p.run.pid == 0:
		return fmt.Errorf("plugin %s: starting: %w", c.name, err) // exec failed
	}
	first, _, _ := strings.Cut(msg, "\n")
	// go-plugin quotes the handshake's fields whole: a plugin chooses
	// their length.
	return fmt.Errorf("plugin %s: handshake: %s: %w", c.name, clip.Cut(clip.Text(first), 300), ErrNotPlugin)
}

// callErr turns the error of a call on the plugin into berth's: the
// sentinel the plugin meant (ErrNotFound, ErrExists, ErrUnsupported,
// ErrInvalid, and the aliases registered for them), context.Canceled or
// DeadlineExceeded, or ErrPluginExited if the plugin died (then the next
// conn starts it again). The text is the plugin's message after the
// plugin's name.
func (c *client) callErr(err error) error {
	if err == nil {
		return nil
	}
	return c.mapErr(c.cur.Load(), err)
}

// connClosing reports whether a call failed because its connection was
// closed under it: conn closes a dead plugin's connection to start
// another while calls on it may still be in flight, and those calls lost
// the plugin as surely as the one that met its death.
func connClosing(st *status.Status) bool {
	return st.Code() == codes.Canceled && st.Message() == "grpc: the client connection is closing"
}

func (c *client) mapErr(p *proc, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, ErrClosed) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("plugin %s: %w", c.name, err)
	}
	if st.Code() == codes.Unavailable || connClosing(st) {
		if c.done.Load() {
			return &remoteError{msg: fmt.Sprintf("plugin %s was closed during the call", c.name), sentinel: ErrClosed, st: st}
		}
		return c.lostErr(p, st)
	}
	re := &remoteError{msg: remoteMessage(c.name, st.Message()), sentinel: sentinelOf(st), st: st}
	if re.sentinel != nil {
		re.also = c.aliases[re.sentinel]
	}
	return re
}

// lostErr is the error of a call whose connection failed: the plugin
// died, or closed its connection, which berth treats alike. The process
// is marked dead so that the next call starts another.
func (c *client) lostErr(p *proc, st *status.Status) error {
	how := "lost its connection"
	if p != nil {
		select {
		case <-p.run.exited:
		case <-time.After(exitWait):
		}
		s := p.run.exitStatus()
		if s != "" {
			how = "exited (" + s + ")"
		}
		if (s != "" || p.cc.GetState() != connectivity.Ready) && !p.dead.Swap(true) {
			c.log.Warn("plugin lost; the next call starts it again", "how", how)
		}
	}
	return &remoteError{
		msg:      fmt.Sprintf("plugin %s %s: %s", c.name, how, clip.Cut(clip.Text(st.Message()), 200)),
		sentinel: ErrPluginExited,
		st:       st,
	}
}

// close stops the plugin and removes its socket directory. Calls after it
// fail with ErrClosed.
func (c *client) close() error {
	if c.done.Swap(true) {
		return nil
	}
	c.endLife()
	c.sem <- struct{}{}
	defer func() { <-c.sem }()
	if p := c.cur.Swap(nil); p != nil {
		c.stop(p)
	}
	return nil
}
