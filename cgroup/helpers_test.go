//go:build linux

package cgroup

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testParent keeps the tests' cgroups apart from a real berth's, and
// from other packages' tests, on the same host; TestMain removes it.
var testParent = fmt.Sprintf("berth-cgrouptest-%d", os.Getpid())

var nameSeq atomic.Int64

func uniqueName() string {
	return fmt.Sprintf("test-%d-%d", os.Getpid(), nameSeq.Add(1))
}

func TestMain(m *testing.M) {
	runExamplesOnlyAsRoot()
	code := m.Run()
	if os.Geteuid() == 0 {
		if err := removeTestParent(); err != nil {
			fmt.Fprintln(os.Stderr, "cleanup:", err)
			code = max(code, 1)
		}
	}
	os.Exit(code)
}

// runExamplesOnlyAsRoot leaves the examples out of a run without root,
// unless -run names what to run: they make real cgroups, which needs root,
// and an example cannot skip itself as a test does.
func runExamplesOnlyAsRoot() {
	flag.Parse()
	if os.Geteuid() == 0 || flag.Lookup("test.run").Value.String() != "" {
		return
	}
	fmt.Fprintln(os.Stderr, "not root: the examples, which make real cgroups, do not run")
	flag.Set("test.run", "^(Test|Fuzz)")
}

// removeTestParent removes whatever a failed test left, then the test
// parent itself, from every hierarchy.
func removeTestParent() error {
	m, err := NewManager(Options{Parent: testParent, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil // no cgroups here, so no test made any
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names, err := m.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		errs = append(errs, fmt.Errorf("leftover cgroup %s", name))
		if c, err := m.Open(name); err == nil {
			errs = append(errs, c.Remove(ctx))
		}
	}
	for _, dir := range m.parentDirs() {
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// recorder is a slog.Handler keeping "LEVEL message" of every record.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Level.String()+" "+rec.Message)
	return nil
}

func (r *recorder) has(prefix string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.msgs, func(m string) bool { return strings.HasPrefix(m, prefix) })
}

// tee is a slog.Handler passing records to several.
type tee []slog.Handler

func (t tee) Enabled(ctx context.Context, l slog.Level) bool {
	return slices.ContainsFunc(t, func(h slog.Handler) bool { return h.Enabled(ctx, l) })
}

func (t tee) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range t {
		if h.Enabled(ctx, r.Level) {
			errs = append(errs, h.Handle(ctx, r.Clone()))
		}
	}
	return errors.Join(errs...)
}

func (t tee) WithAttrs(as []slog.Attr) slog.Handler {
	var u tee
	for _, h := range t {
		u = append(u, h.WithAttrs(as))
	}
	return u
}

func (t tee) WithGroup(name string) slog.Handler {
	var u tee
	for _, h := range t {
		u = append(u, h.WithGroup(name))
	}
	return u
}

// hostManager returns a Manager for the host's own layout (Hybrid here).
func hostManager(t *testing.T, opts Options) *Manager {
	t.Helper()
	requireRoot(t)
	opts.Parent = testParent
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	m, err := NewManager(opts)
	if err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			t.Skipf("layout not available here: %v", err)
		}
		t.Fatal(err)
	}
	return m
}

// v2MountManager mounts a cgroup2 hierarchy on a fresh directory and
// returns a V2 Manager using it. On a hybrid host that is the unified
// hierarchy, without controllers.
func v2MountManager(t testing.TB, logger *slog.Logger) *Manager {
	t.Helper()
	dir := mountCgroup2(t)
	if logger == nil {
		logger = testLogger(t)
	}
	m, err := NewManager(Options{Parent: testParent, Mode: V2, UnifiedMount: dir, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// mountCgroup2 mounts a cgroup2 hierarchy on a fresh directory, unmounted
// when the test ends, and returns the directory.
func mountCgroup2(t testing.TB) string {
	t.Helper()
	requireRoot(t)
	// Not t.TempDir: its cleanup would remove recursively, and on a
	// cgroup2 mount left behind by a failed unmount that means rmdir-ing
	// every empty cgroup of the host.
	dir, err := os.MkdirTemp("", "berth-cgroup2-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("none", dir, "cgroup2", 0, ""); err != nil {
		os.Remove(dir)
		t.Skipf("cannot mount cgroup2: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			return
		}
		os.Remove(dir)
	})
	return dir
}

// create makes a uniquely named cgroup and removes it when the test ends,
// failing the test if anything of it is left in any hierarchy.
func create(t *testing.T, m *Manager, r *Resources) *Cgroup {
	t.Helper()
	c, err := m.Create(uniqueName(), r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeAndCheck(t, c) })
	return c
}

func removeAndCheck(t *testing.T, c *Cgroup) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Remove(ctx); err != nil {
		t.Errorf("Remove: %v", err)
	}
	for _, dir := range c.dirs() {
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there after Remove (stat: %v)", dir, err)
		}
	}
}

// A child is a /bin/sh running a script, held at a gate (a read from its
// stdin) until released, so that it can be put in a cgroup first.
type child struct {
	cmd  *exec.Cmd
	gate io.WriteCloser
	out  string
	done chan struct{}
	err  error
}

// startChild starts script, which c (if not nil) is meant to hold. When
// the test ends, c is killed before the child is waited for: a child in a
// frozen v1 cgroup cannot die of a plain SIGKILL until thawed.
func startChild(t *testing.T, c *Cgroup, script string, attr *syscall.SysProcAttr) *child {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("/bin/sh", "-c", "read _ || exit 1\n"+script)
	// Files, not pipes: grandchildren inherit these, and Wait would
	// otherwise wait for them too.
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = attr
	gate, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := &child{cmd: cmd, gate: gate, out: out, done: make(chan struct{})}
	go func() {
		ch.err = cmd.Wait()
		close(ch.done)
	}()
	t.Cleanup(func() {
		if c != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.Kill(ctx); err != nil && !errors.Is(err, ErrNotFound) {
				t.Errorf("Kill: %v", err)
			}
		}
		cmd.Process.Kill()
		select {
		case <-ch.done:
		case <-time.After(10 * time.Second):
			t.Errorf("child %d did not exit", cmd.Process.Pid)
		}
		if t.Failed() {
			b, _ := os.ReadFile(out)
			t.Logf("child output:\n%s", b)
		}
	})
	return ch
}

func (ch *child) pid() int { return ch.cmd.Process.Pid }

func (ch *child) release(t *testing.T) {
	t.Helper()
	if _, err := ch.gate.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the child to exit and returns its wait status.
func (ch *child) wait(t *testing.T, timeout time.Duration) syscall.WaitStatus {
	t.Helper()
	select {
	case <-ch.done:
	case <-time.After(timeout):
		t.Fatalf("child %d still running after %v", ch.pid(), timeout)
	}
	return ch.cmd.ProcessState.Sys().(syscall.WaitStatus)
}

func (ch *child) exited() bool {
	select {
	case <-ch.done:
		return true
	default:
		return false
	}
}

// eventually polls cond every 10ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// canLimit reports whether cgroups of m can get limits from all of ctrls.
func canLimit(t *testing.T, m *Manager, ctrls ...string) bool {
	t.Helper()
	if m.mode != V2 {
		for _, ctrl := range ctrls {
			if m.v1[ctrl] == "" {
				return false
			}
		}
		return true
	}
	if err := m.ensureParent(); err != nil {
		t.Fatal(err)
	}
	avail, err := readFields(filepath.Join(m.unified, m.parent, "cgroup.subtree_control"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ctrl := range ctrls {
		if !slices.Contains(avail, ctrl) {
			return false
		}
	}
	return true
}

const noV2Controllers = "cgroup v2 controllers are bound to v1 on this host"
