package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// testPluginBin is a copy of the test binary, which serves as the test
// plugin (see testplugin_test.go).
var testPluginBin string

func TestMain(m *testing.M) {
	if mode := os.Getenv(envTestPlugin); mode != "" {
		testPluginMain(mode)
	}
	if os.Getenv(envTestHost) != "" {
		testHostMain()
	}
	dir, err := os.MkdirTemp("", "berth-plugin-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testPluginBin = filepath.Join(dir, "testplugin")
	if err := copyExecutable(testPluginBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// copyExecutable copies the running test binary to path.
func copyExecutable(path string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	src, err := os.Open(self)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// logRecorder is a slog.Handler that keeps the records it is given.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
	attrs   []slog.Attr
	parent  *logRecorder
	notify  chan slog.Record
}

func (r *logRecorder) root() *logRecorder {
	if r.parent != nil {
		return r.parent
	}
	return r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(r.attrs...)
	root := r.root()
	root.mu.Lock()
	root.records = append(root.records, rec)
	ch := root.notify
	root.mu.Unlock()
	if ch != nil {
		select {
		case ch <- rec:
		default:
		}
	}
	return nil
}

func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{parent: r.root(), attrs: append(append([]slog.Attr(nil), r.attrs...), as...)}
}

func (r *logRecorder) WithGroup(string) slog.Handler { return r }

func (r *logRecorder) all() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]slog.Record(nil), r.records...)
}

// find returns the records whose message is msg.
func (r *logRecorder) find(msg string) []slog.Record {
	var out []slog.Record
	for _, rec := range r.all() {
		if rec.Message == msg {
			out = append(out, rec)
		}
	}
	return out
}

func attrsOf(rec slog.Record) map[string]string {
	m := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	return m
}

// testOptions are options for the test plugin of mode, with a private run
// directory and a recording logger.
func testOptions(t *testing.T, mode string, env ...string) (*Options, *logRecorder) {
	t.Helper()
	rec := &logRecorder{}
	markers := t.TempDir()
	return &Options{
		Logger: slog.New(rec),
		RunDir: filepath.Join(t.TempDir(), "run"),
		Env:    append([]string{envTestPlugin + "=" + mode, envTestMarkers + "=" + markers}, env...),
	}, rec
}

func markerDir(opts *Options) string {
	for _, kv := range opts.Env {
		if v, ok := strings.CutPrefix(kv, envTestMarkers+"="); ok {
			return v
		}
	}
	return ""
}

// startTest starts the test plugin as a storage plugin and closes it when
// the test ends.
func startTest(t *testing.T, opts *Options) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := startClient(ctx, testPluginBin, KindStorage, opts)
	if err != nil {
		t.Fatalf("startClient: %v", err)
	}
	t.Cleanup(func() { c.close() })
	return c
}

// prepare calls the test plugin's Prepare with key.
func prepare(ctx context.Context, c *client, key string) (*pb.PrepareResponse, error) {
	cc, err := c.conn(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := pb.NewStorageServiceClient(cc).Prepare(ctx, &pb.PrepareRequest{Key: key})
	return resp, c.callErr(err)
}

// pidOf asks the plugin for its pid.
func pidOf(t *testing.T, c *client) int {
	t.Helper()
	resp, err := prepare(context.Background(), c, "pid")
	if err != nil {
		t.Fatalf("pid: %v", err)
	}
	pid, err := strconv.Atoi(resp.GetDriver())
	if err != nil {
		t.Fatalf("pid %q: %v", resp.GetDriver(), err)
	}
	return pid
}

// waitGone waits until process pid no longer exists (it must have been
// reaped: a zombie still counts as there).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still exists", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dirEntries lists dir; a missing dir is empty.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// children lists the pids of this process's children.
func children(t *testing.T) map[int]bool {
	t.Helper()
	out := map[int]bool{}
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(s)
			out[pid] = true
		}
	}
	return out
}

func TestStartHandshakeAndClose(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "storage")
	c := startTest(t, opts)
	info := c.Info()
	if info.Kind != KindStorage || info.Name != "testplugin" || info.Version != "v0.0.1" || info.Protocol != ProtocolVersion || info.Path != testPluginBin {
		t.Errorf("Info = %+v", info)
	}
	if got := strings.Join(info.Capabilities, ","); got != "diff,quota" {
		t.Errorf("capabilities %q, want sorted diff,quota", got)
	}
	pid := pidOf(t, c)
	if n := len(dirEntries(t, opts.RunDir)); n != 1 {
		t.Errorf("run dir holds %d entries while the plugin runs, want 1 socket dir", n)
	}
	fi, err := os.Stat(filepath.Join(opts.RunDir, dirEntries(t, opts.RunDir)[0]))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket dir: %v, mode %v; want 0700", err, fi.Mode())
	}
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	if left := dirEntries(t, opts.RunDir); len(left) != 0 {
		t.Errorf("run dir holds %v after close", left)
	}
	if _, err := prepare(context.Background(), c, "x"); !errors.Is(err, ErrClosed) {
		t.Errorf("call after close: %v, want ErrClosed", err)
	}
}

// envTestHost makes the test binary a host that starts the test plugin,
// prints its pid and waits to be killed (TestPluginDiesWithHost).
const envTestHost = "BERTH_TESTHOST"

func testHostMain() {
	os.Exit(0)
}
