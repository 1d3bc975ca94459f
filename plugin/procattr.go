package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin/runner"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/clip"
)

// defaultRunDir is where the plugins' socket directories are made when
// Options.RunDir is empty.
const defaultRunDir = "/run/berth/plugins"

// defaultPath is the plugin's PATH when berth's own is empty.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Environment variables berth sets for a plugin besides go-plugin's own.
const (
	// envLogLevel tells the plugin the lowest level the host's logger
	// keeps ("trace", "debug", "info", "warn", "error" or "off"), so that
	// Logger does not write lines that would be thrown away.
	envLogLevel = "BERTH_PLUGIN_LOG_LEVEL"
)

// checkBinary checks that path names a plugin berth may start: absolute
// and clean (so that what is logged is what runs), a regular file that
// someone may execute, and not writable by group or others (anyone who
// can rewrite it runs code as berth's user, root).
func checkBinary(path string) error {
	if path == "" {
		return fmt.Errorf("plugin path is empty: %w", ErrInvalid)
	}
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return fmt.Errorf("plugin path %s is not absolute and clean: %w", clip.Quote(path), ErrInvalid)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("plugin %s: %w", clip.Quote(path), err)
	}
	switch m := fi.Mode(); {
	case !m.IsRegular():
		return fmt.Errorf("plugin %s is not a regular file (%s): %w", clip.Quote(path), m.Type(), ErrInvalid)
	case m.Perm()&0o111 == 0:
		return fmt.Errorf("plugin %s is not executable (mode %04o): %w", clip.Quote(path), m.Perm(), ErrInvalid)
	case m.Perm()&0o022 != 0:
		return fmt.Errorf("plugin %s is writable by group or others (mode %04o): %w", clip.Quote(path), m.Perm(), ErrInvalid)
	}
	return nil
}

// checkRunDir makes dir if need be and checks that it is a directory only
// berth's user can write: the plugins' sockets are made in it, and a
// socket someone else can replace would be a plugin someone else runs.
func checkRunDir(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("plugin run dir %s is not absolute: %w", clip.Quote(dir), ErrInvalid)
	}
	// Parents made here are searchable by all, as sandbox makes
	// /run/berth (a sandbox's root in a user namespace must get through
	// it); the run dir itself is berth's alone.
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return fmt.Errorf("plugin run dir: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("plugin run dir: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("plugin run dir: %w", err)
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("plugin run dir %s is not a directory: %w", clip.Quote(dir), ErrInvalid)
	case st != nil && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("plugin run dir %s belongs to uid %d, not %d: %w", clip.Quote(dir), st.Uid, os.Geteuid(), ErrInvalid)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("plugin run dir %s is writable by group or others (mode %04o): %w", clip.Quote(dir), fi.Mode().Perm(), ErrInvalid)
	}
	return nil
}

// checkEnv checks Options.Env: KEY=VALUE entries that do not set what
// berth and go-plugin set themselves.
func checkEnv(env []string) error {
	for _, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsRune(k, 0) {
			return fmt.Errorf("plugin environment entry %s is not KEY=VALUE: %w", clip.Quote(kv), ErrInvalid)
		}
		if k == handshake.MagicCookieKey || k == envLogLevel || strings.HasPrefix(k, "PLUGIN_") {
			return fmt.Errorf("plugin environment entry %s sets a variable berth sets: %w", clip.Quote(k), ErrInvalid)
		}
	}
	return nil
}

// pluginEnv is the environment a plugin starts with (go-plugin adds its
// handshake variables after it). It is not berth's environment: that may
// hold credentials (registry tokens, cloud keys) a plugin has no business
// with, and variables (GODEBUG, LD_PRELOAD...) meant for berth alone. A
// plugin gets PATH, so that it can run the tools it needs, the lowest log
// level the host keeps, and Options.Env.
func pluginEnv(opts *Options, logLevel string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	env := []string{"PATH=" + path, envLogLevel + "=" + logLevel}
	return append(env, opts.Env...)
}

// execRunner starts a plugin's process for go-plugin (through
// ClientConfig.RunnerFunc, which is also what makes go-plugin put the
// socket in a directory of berth's choosing) and records how it ended.
//
// Unlike go-plugin's own runner it gives the plugin /dev/null, not
// berth's stdin; puts it in a process group of its own, so that a
// terminal's ^C reaches berth (which then releases what the plugin made)
// and not the plugin; and asks the kernel to kill it when the thread that
// started it ends (Pdeathsig), so that a plugin does not outlive a berth
// killed with SIGKILL. That thread is locked by startOnThread for the
// plugin's whole life: Go ends threads whose goroutine exits while
// locked, which other code (setns, say) does on purpose.
type execRunner struct {
	hclog hclog.Logger
	cmd   *exec.Cmd
	// startCtx is the caller's context for the start: when it ends before
	// the handshake is done, the process is killed, so that go-plugin's
	// Start returns at once rather than at its own timeout.
	startCtx  context.Context
	stopKill  func() bool
	socketDir string // where the plugin must put its socket
	stdout    io.ReadCloser
	stderr    io.ReadCloser

	pid      int
	exited   chan struct{} // closed when the process is gone (or never started)
	exitOnce sync.Once
	exitErr  error // how it ended; set before exited is closed
}

var _ runner.Runner = (*execRunner)(nil)

func newExecRunner(ctx context.Context, l hclog.Logger, cmd *exec.Cmd, socketDir string) (*execRunner, error) {
	cmd.Stdin = nil // go-plugin sets berth's own; a plugin reads nothing
	cmd.Dir = "/"   // not berth's, which the plugin has no business pinning
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	r := &execRunner{hclog: l, cmd: cmd, startCtx: ctx, socketDir: socketDir, exited: make(chan struct{}), stopKill: func() bool { return true }}
	var err error
	if r.stdout, err = cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	if r.stderr, err = cmd.StderrPipe(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *execRunner) Start(context.Context) error {
	if err := r.startCtx.Err(); err != nil {
		r.setExited(err)
		return err
	}
	// exec passes a child only descriptors 0-2 and ExtraFiles, and Go
	// opens everything close-on-exec; but a library (cgo, or a raw
	// unix.Open) may not, and a descriptor the plugin inherits pins what
	// it names (a pipe, a namespace, a mount) for the plugin's life.
	// Marking every descriptor from 3 on close-on-exec is harmless to Go's
	// own exec, which clears the flag on the descriptors it passes.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		r.hclog.Debug("close_range(CLOEXEC) failed; relying on Go's close-on-exec", "error", err)
	}
	if err := r.cmd.Start(); err != nil {
		r.setExited(err)
		return err
	}
	r.pid = r.cmd.Process.Pid
	r.stopKill = context.AfterFunc(r.startCtx, func() { r.Kill(context.Background()) })
	return nil
}

// started ends the start: the caller's context no longer kills the
// process. It reports false if it did already.
func (r *execRunner) started() bool { return r.stopKill() }

func (r *execRunner) Wait(context.Context) error {
	err := r.cmd.Wait()
	r.setExited(err)
	return err
}

func (r *execRunner) setExited(err error) {
	r.exitOnce.Do(func() {
		r.exitErr = err
		close(r.exited)
	})
}

// exitStatus describes how the process ended, for error messages; "" if
// it has not.
func (r *execRunner) exitStatus() string {
	select {
	case <-r.exited:
	default:
		return ""
	}
	var ee *exec.ExitError
	switch {
	case r.exitErr == nil:
		return "exit status 0"
	case errors.As(r.exitErr, &ee):
		return ee.ProcessState.String()
	default:
		return r.exitErr.Error()
	}
}

// Kill kills the plugin's whole process group: a helper the plugin
// started (or a shell's child) would otherwise keep its stdout and stderr
// open, and go-plugin waits for those to close before it reaps the
// plugin. The group is only signalled while the plugin is not reaped,
// when its pid, and so the group's id, cannot have been reused.
func (r *execRunner) Kill(context.Context) error {
	if r.cmd.Process == nil {
		return nil
	}
	select {
	case <-r.exited:
		return nil
	default:
	}
	if err := syscall.Kill(-r.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// closePipes closes berth's ends of the plugin's stdout and stderr, so
// that go-plugin, which reads them to their end before it reaps the
// plugin, stops waiting for a helper of the plugin's to close its ends.
func (r *execRunner) closePipes() {
	r.stdout.Close()
	r.stderr.Close()
}

func (r *execRunner) Stdout() io.ReadCloser { return r.stdout }
func (r *execRunner) Stderr() io.ReadCloser { return r.stderr }
func (r *execRunner) Name() string          { return r.cmd.Args[0] }
func (r *execRunner) ID() string {
	if r.pid == 0 {
		return ""
	}
	return strconv.Itoa(r.pid)
}
func (r *execRunner) Diagnose(context.Context) string { return "" }

// PluginToHost checks the address the plugin's handshake names: a unix
// socket directly in the private directory berth made for this start.
// Anything else is refused: a TCP port or a socket elsewhere can be
// reached by others than berth, and whoever reaches the plugin commands a
// root process.
func (r *execRunner) PluginToHost(network, addr string) (string, string, error) {
	if network != "unix" {
		return "", "", fmt.Errorf("it listens on %s %s, not on a unix socket in %s", clip.Quote(network), clip.Quote(addr), r.socketDir)
	}
	if r.socketDir == "" || filepath.Dir(addr) != r.socketDir || filepath.Clean(addr) != addr {
		return "", "", fmt.Errorf("its socket %s is not in %s", clip.Quote(addr), r.socketDir)
	}
	return network, addr, nil
}
func (r *execRunner) HostToPlugin(n, a string) (string, string, error) {
	return n, a, nil
}
