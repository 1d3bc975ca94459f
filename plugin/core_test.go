package plugin

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// testPluginBin is a copy of the test binary, which serves as the test
// plugin (see testplugin_test.go).
var testPluginBin string

// The main goroutine keeps the main thread: Go never ends that thread
// (it wedges it instead), so a plugin forked from it would survive
// whatever TestPluginSurvivesThreadExits does, and prove nothing.
func init() { runtime.LockOSThread() }

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
	testBuildDir = dir
	if err := copyExecutable(testPluginBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testBuildDir holds the programs testBuild built, and goes with the
// tests' end (TestMain).
var testBuildDir string

// testBuilds are the packages testBuild built, by package.
var testBuilds sync.Map // string -> func() (string, error)

// testBuild installs a build of the package pkg (./internal/...) at
// path, and returns path. The package is built once per test binary and
// copied for each caller: even from the build cache a build links for
// about two seconds, and the test plugins find their state beside their
// executable, so each test wants a copy of its own.
func testBuild(t testing.TB, pkg, path string) string {
	t.Helper()
	build, _ := testBuilds.LoadOrStore(pkg, sync.OnceValues(func() (string, error) {
		gobin, err := exec.LookPath("go")
		if err != nil {
			gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		bin := filepath.Join(testBuildDir, "build-"+filepath.Base(pkg))
		if out, err := exec.Command(gobin, "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
		return bin, nil
	}))
	bin, err := build.(func() (string, error))()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(bin, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// copyExecutable copies the running test binary to path.
func copyExecutable(path string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	return copyFile(self, path)
}

// copyFile copies the executable file from to a new file path.
func copyFile(from, path string) error {
	src, err := os.Open(from)
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
	opts := &Options{RunDir: os.Getenv(envTestHost), Env: []string{envTestPlugin + "=storage"}}
	c, err := startClient(context.Background(), os.Args[0], KindStorage, opts)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	cc, err := c.conn(context.Background())
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	// Busy the runtime with threads that come and go, as setns-style code
	// does: the plugin must live on regardless, and die with this host.
	for range 8 {
		go func() {
			runtime.LockOSThread() // exits locked: Go ends the thread
		}()
	}
	resp, err := pb.NewStorageServiceClient(cc).Prepare(context.Background(), &pb.PrepareRequest{Key: "pid"})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(resp.GetDriver())
	time.Sleep(time.Hour)
}

func TestWrongProtocolVersion(t *testing.T) {
	requireRoot(t)
	for _, v := range []int{ProtocolVersion + 1, ProtocolVersion - 1} {
		opts, _ := testOptions(t, "storage", fmt.Sprintf("%s=%d", envTestVersion, v))
		before := children(t)
		_, err := startClient(context.Background(), testPluginBin, KindStorage, opts)
		if !errors.Is(err, ErrIncompatible) {
			t.Fatalf("plugin speaking %d: %v, want ErrIncompatible", v, err)
		}
		want := fmt.Sprintf("plugin testplugin speaks protocol %d, berth speaks %d", v, ProtocolVersion)
		if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("error %q: want one line containing %q", err, want)
		}
		checkNothingLeft(t, opts, before)
	}
	// go-plugin's own core protocol, the handshake's first field.
	opts, _ := testOptions(t, "storage")
	script := writeScript(t, "core2", `echo "2|1|unix|$PLUGIN_UNIX_SOCKET_DIR/s|grpc"; sleep 60`)
	_, err := startClient(context.Background(), script, KindStorage, opts)
	if !errors.Is(err, ErrIncompatible) || strings.Contains(err.Error(), "\n") {
		t.Errorf("core protocol 2: %q, want one line wrapping ErrIncompatible", err)
	}
	script = writeScript(t, "garbage", `echo "1|one|unix|$PLUGIN_UNIX_SOCKET_DIR/s|grpc"; sleep 60`)
	_, err = startClient(context.Background(), script, KindStorage, opts)
	if !errors.Is(err, ErrNotPlugin) || strings.Contains(err.Error(), "\n") {
		t.Errorf("protocol version \"one\": %q, want one line wrapping ErrNotPlugin", err)
	}
}

// checkNothingLeft checks that the run dir is empty and that no child the
// test started (not in before) is left.
func checkNothingLeft(t *testing.T, opts *Options, before map[int]bool) {
	t.Helper()
	if left := dirEntries(t, opts.RunDir); len(left) != 0 {
		t.Errorf("run dir holds %v", left)
	}
	for pid := range children(t) {
		if !before[pid] {
			waitGone(t, pid)
		}
	}
}

// writeScript writes an executable shell script into a new directory.
func writeScript(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestNotAPlugin(t *testing.T) {
	requireRoot(t)
	cases := []struct {
		name, path, want string
	}{
		{"true", "/bin/true", "exited before its handshake (exit status 0)"},
		{"script", writeScript(t, "hello", "echo hello there"), `wrote "hello there", not a handshake`},
		{"failing script", writeScript(t, "fails", "echo 'cannot start: no config' >&2; exit 3"), `exited before its handshake (exit status 3); it said "cannot start: no config"`},
		{"net/rpc", writeScript(t, "netrpc", `echo "1|1|unix|$PLUGIN_UNIX_SOCKET_DIR/sock|netrpc"; sleep 60`), "serves net/rpc"},
		{"tcp", writeScript(t, "tcp", "echo '1|1|tcp|127.0.0.1:1234|grpc'; sleep 60"), `listens on "tcp" "127.0.0.1:1234", not on a unix socket in`},
		{"socket elsewhere", writeScript(t, "elsewhere", "echo '1|1|unix|/tmp/elsewhere.sock|grpc'; sleep 60"), `its socket "/tmp/elsewhere.sock" is not in`},
		{"socket escaping", writeScript(t, "escaping", `echo "1|1|unix|$PLUGIN_UNIX_SOCKET_DIR/../x.sock|grpc"; sleep 60`), `is not in`},
		{"silent", writeScript(t, "silent", "exec sleep 60"), "no handshake in time"},
		// go-plugin's error quotes the field whole: 20 KB of short words.
		{"long handshake", writeScript(t, "long", `printf 'a %.0s' $(seq 10000); echo '|1|unix|/x|grpc'; sleep 60`), "handshake: error parsing core protocol version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts, _ := testOptions(t, "storage")
			opts.StartTimeout = 2 * time.Second
			before := children(t)
			_, err := startClient(context.Background(), tc.path, KindStorage, opts)
			if !errors.Is(err, ErrNotPlugin) {
				t.Fatalf("%v, want ErrNotPlugin", err)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %.500q: want one line containing %q", err, tc.want)
			}
			if n := len(err.Error()); n > 1024 {
				t.Errorf("a %d-byte error: the plugin chose its length", n)
			}
			checkNothingLeft(t, opts, before)
		})
	}
	t.Run("wrong cookie", func(t *testing.T) {
		// The test plugin run by hand: berth's cookie is not set.
		opts, _ := testOptions(t, "storage")
		script := writeScript(t, "wrongcookie", "BERTH_PLUGIN=something-else exec "+testPluginBin)
		_, err := startClient(context.Background(), script, KindStorage, opts)
		if !errors.Is(err, ErrNotPlugin) || !strings.Contains(err.Error(), "exit status 1") || !strings.Contains(err.Error(), "run by hand it does nothing") {
			t.Fatalf("%v, want ErrNotPlugin with exit status 1 and the plugin's message", err)
		}
	})
}

func TestBadBinary(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "notexec")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	groupWritable := filepath.Join(dir, "gw")
	os.WriteFile(groupWritable, []byte("#!/bin/sh\n"), 0o775)
	os.Chmod(groupWritable, 0o775)
	for _, path := range []string{"", "relative/plugin", "/usr/../bin/true", dir, notExec, groupWritable, "/dev/null"} {
		_, err := startClient(context.Background(), path, KindStorage, &Options{RunDir: t.TempDir()})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("startClient(%q): %v, want ErrInvalid", path, err)
		}
	}
	if _, err := startClient(context.Background(), filepath.Join(dir, "missing"), KindStorage, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing binary: %v, want ErrNotExist", err)
	}
}

func TestWrongKind(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "network")
	before := children(t)
	_, err := startClient(context.Background(), testPluginBin, KindStorage, opts)
	if !errors.Is(err, ErrWrongKind) || !strings.Contains(err.Error(), `is a "network" plugin, not a storage one`) {
		t.Fatalf("%v, want ErrWrongKind", err)
	}
	checkNothingLeft(t, opts, before)
}

func TestChecksum(t *testing.T) {
	requireRoot(t)
	b, err := os.ReadFile(testPluginBin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)

	opts, _ := testOptions(t, "storage")
	opts.Checksum = sum[:]
	c := startTest(t, opts)
	pid := pidOf(t, c)
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || exe != testPluginBin {
		t.Errorf("plugin runs %q (%v), want %q", exe, err, testPluginBin)
	}
	c.close()

	bad := sum
	bad[0] ^= 0xff
	opts.Checksum = bad[:]
	before := children(t)
	if _, err := startClient(context.Background(), testPluginBin, KindStorage, opts); !errors.Is(err, ErrChecksum) {
		t.Errorf("wrong checksum: %v, want ErrChecksum", err)
	}
	checkNothingLeft(t, opts, before)
	script := writeScript(t, "script", "exit 0")
	scriptSum := sha256.Sum256([]byte("#!/bin/sh\nexit 0\n"))
	opts.Checksum = scriptSum[:]
	if _, err := startClient(context.Background(), script, KindStorage, opts); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "is a script") {
		t.Errorf("checksummed script: %v, want ErrInvalid saying it is a script", err)
	}
	opts.Checksum = sum[:16]
	if _, err := startClient(context.Background(), testPluginBin, KindStorage, opts); !errors.Is(err, ErrInvalid) {
		t.Errorf("short checksum: %v, want ErrInvalid", err)
	}
}

// waitFile waits for path to hold something and returns it. (The test
// plugin's os.WriteFile makes the file before it writes to it, so an
// empty file is not yet the plugin's word.)
func waitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestContextCrossesTheWire(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "storage")
	c := startTest(t, opts)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := prepare(ctx, c, "block-deadline")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v, want DeadlineExceeded", err)
	}
	// The plugin's context ended too (it sees Canceled or DeadlineExceeded:
	// the client resets the stream when its deadline fires).
	if got := waitFile(t, filepath.Join(markerDir(opts), "deadline")); got != context.Canceled.Error() && got != context.DeadlineExceeded.Error() {
		t.Errorf("plugin's ctx ended with %q", got)
	}

	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		time.Sleep(100 * time.Millisecond)
		cancel()
	}()
	_, err = prepare(ctx, c, "block-cancel")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancel: %v, want Canceled", err)
	}
	if got := waitFile(t, filepath.Join(markerDir(opts), "cancel")); got != context.Canceled.Error() {
		t.Errorf("plugin's ctx ended with %q, want %q", got, context.Canceled)
	}
	// The plugin is still usable.
	if _, err := prepare(context.Background(), c, "after"); err != nil {
		t.Errorf("call after a cancelled one: %v", err)
	}
}

func TestStartBoundedByContext(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "hang")
	before := children(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := startClient(ctx, testPluginBin, KindStorage, opts)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want DeadlineExceeded", err)
	}
	checkNothingLeft(t, opts, before)

	// Cancelled with no deadline, and go-plugin's own timeout far away:
	// the cancel alone must end the start (a hang detector, not a speed
	// check: 30s is a lifetime here).
	opts.StartTimeout = time.Hour
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		time.Sleep(200 * time.Millisecond)
		cancel()
	}()
	errc := make(chan error, 1)
	go func() {
		_, err := startClient(ctx, testPluginBin, KindStorage, opts)
		errc <- err
	}()
	select {
	case err = <-errc:
	case <-time.After(30 * time.Second):
		t.Fatal("a cancelled start did not return")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want Canceled", err)
	}
	checkNothingLeft(t, opts, before)
}

func TestKillMidCallThenRestart(t *testing.T) {
	requireRoot(t)
	opts, rec := testOptions(t, "storage")
	c := startTest(t, opts)
	pid := pidOf(t, c)
	oldDirs := dirEntries(t, opts.RunDir)

	const inFlight = 8
	errs := make(chan error, inFlight)
	for i := range inFlight {
		go func() {
			_, err := prepare(context.Background(), c, fmt.Sprintf("block-%d", i))
			errs <- err
		}()
	}
	for len(rec.find("blocking")) < inFlight {
		time.Sleep(5 * time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for range inFlight {
		err := <-errs
		if !errors.Is(err, ErrPluginExited) {
			t.Errorf("call in flight: %v, want ErrPluginExited", err)
		} else if !strings.Contains(err.Error(), "plugin testplugin exited (signal: killed): ") {
			t.Errorf("call in flight: %q does not say how the plugin ended", err)
		}
	}
	waitGone(t, pid)

	// The next call starts the plugin again and works.
	newPid := pidOf(t, c)
	if newPid == pid {
		t.Fatalf("pid %d after the restart is the old one", newPid)
	}
	// The old socket directory is gone (kill -9 leaves the socket), the
	// new one is the only one.
	dirs := dirEntries(t, opts.RunDir)
	if len(dirs) != 1 || dirs[0] == oldDirs[0] {
		t.Errorf("run dir holds %v after the restart; before it %v", dirs, oldDirs)
	}

	// A plugin that dies of itself during a call: the same.
	if _, err := prepare(context.Background(), c, "crash"); !errors.Is(err, ErrPluginExited) {
		t.Errorf("crash: %v, want ErrPluginExited", err)
	}
	waitGone(t, newPid)
	if pid := pidOf(t, c); pid == newPid {
		t.Errorf("not restarted after the crash")
	}
	c.close()
	if left := dirEntries(t, opts.RunDir); len(left) != 0 {
		t.Errorf("run dir holds %v after close", left)
	}
}

func TestRestartOnceForManyCallers(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "storage")
	c := startTest(t, opts)
	killPlugin(t, c)
	// The death is seen by the next call (not by a failed one): conn
	// finds the process exited and restarts it, once for all callers.
	const callers = 32
	pids := make(chan string, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := prepare(context.Background(), c, "pid")
			if err != nil {
				t.Errorf("call after the death: %v", err)
				return
			}
			pids <- resp.GetDriver()
		}()
	}
	wg.Wait()
	close(pids)
	seen := map[string]bool{}
	for p := range pids {
		seen[p] = true
	}
	if len(seen) != 1 {
		t.Errorf("calls were served by %d processes, want 1 restart: %v", len(seen), seen)
	}
	if n := len(dirEntries(t, opts.RunDir)); n != 1 {
		t.Errorf("run dir holds %d socket dirs, want 1", n)
	}
}

func TestManyConcurrentCalls(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "storage")
	c := startTest(t, opts)
	const goroutines, calls = 64, 50
	var wg sync.WaitGroup
	var failed sync.Map
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				key := "ok"
				if i%5 == 0 {
					key = "notfound"
				}
				_, err := prepare(context.Background(), c, key)
				if (key == "ok") != (err == nil) || (err != nil && !errors.Is(err, ErrNotFound)) {
					failed.Store(fmt.Sprint(g, i), err)
				}
			}
		}()
	}
	wg.Wait()
	failed.Range(func(k, v any) bool {
		t.Errorf("call %v: %v", k, v)
		return false
	})
}

func TestSentinelsCrossTheWire(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "storage")
	c := startTest(t, opts)
	hostNotFound := errors.New("host's not found")
	c.alias(ErrNotFound, hostNotFound)
	cases := []struct {
		key  string
		want error
		text string
	}{
		{"notfound", ErrNotFound, `plugin testplugin: rootfs "notfound": not found`},
		{"exists", ErrExists, `plugin testplugin: rootfs "exists": already exists`},
		{"unsupported", ErrUnsupported, `plugin testplugin: no diff here: unsupported operation`},
		{"invalid", ErrInvalid, `plugin testplugin: key "invalid": invalid request`},
		{"plain", nil, `plugin testplugin: disk on fire`},
	}
	for _, tc := range cases {
		_, err := prepare(context.Background(), c, tc.key)
		if err == nil {
			t.Errorf("%s: no error", tc.key)
			continue
		}
		if err.Error() != tc.text {
			t.Errorf("%s: text %q, want %q", tc.key, err, tc.text)
		}
		for _, s := range []error{ErrNotFound, ErrExists, ErrUnsupported, ErrInvalid, ErrPluginExited, hostNotFound} {
			want := s == tc.want || (s == hostNotFound && tc.want == ErrNotFound)
			if errors.Is(err, s) != want {
				t.Errorf("%s: errors.Is(err, %v) = %v", tc.key, s, !want)
			}
		}
	}
}

func TestStatusMapping(t *testing.T) {
	// The two halves without a process: every sentinel survives toStatus
	// and mapErr, wrapped or not, and a status without a reason goes by
	// its code.
	c := &client{name: "p"}
	for _, s := range []error{ErrNotFound, ErrExists, ErrUnsupported, ErrInvalid, context.Canceled, context.DeadlineExceeded} {
		err := c.mapErr(nil, toStatus(fmt.Errorf("thing: %w", s)))
		if !errors.Is(err, s) {
			t.Errorf("%v: came back as %v", s, err)
		}
		if want := "plugin p: thing: " + s.Error(); err.Error() != want {
			t.Errorf("%v: text %q, want %q", s, err, want)
		}
	}
	if err := c.mapErr(nil, status.Error(codes.NotFound, "bare")); !errors.Is(err, ErrNotFound) {
		t.Errorf("code NotFound without ErrorInfo: %v", err)
	}
	// A call cut off because another replaced the dead plugin's
	// connection is the plugin's death, not a cancellation; one the
	// caller cancelled stays context.Canceled.
	c.log = discardLogger
	if err := c.mapErr(nil, status.Error(codes.Canceled, "grpc: the client connection is closing")); !errors.Is(err, ErrPluginExited) || errors.Is(err, context.Canceled) {
		t.Errorf("a call cut off by a replaced connection: %v", err)
	}
	if err := c.mapErr(nil, status.Error(codes.Canceled, "context canceled")); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled call: %v", err)
	}
	// A message with terminal escapes and a megabyte of text is tamed.
	err := c.mapErr(nil, status.Error(codes.Unknown, "\x1b[2J"+strings.Repeat("a ", 1<<19)))
	if strings.ContainsRune(err.Error(), 0x1b) || len(err.Error()) > 2*maxRemoteMessage {
		t.Errorf("hostile message kept: %d bytes, %q...", len(err.Error()), err.Error()[:40])
	}
	if toStatus(nil) != nil || c.callErr(nil) != nil {
		t.Error("nil error mapped to non-nil")
	}
}

func TestPluginLogsReachSlog(t *testing.T) {
	requireRoot(t)
	opts, rec := testOptions(t, "storage")
	c := startTest(t, opts)
	if _, err := prepare(context.Background(), c, "log"); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		msg   string
		level slog.Level
		attrs map[string]string
	}{
		{"a debug line", slog.LevelDebug, map[string]string{"n": "1"}},
		{"an info line", slog.LevelInfo, map[string]string{"answer": "42", "who": "testplugin"}},
		{"a warning", slog.LevelWarn, map[string]string{"plugin_plugin": "spoofed"}},
		{"an error line", slog.LevelError, map[string]string{"err": "boom"}},
	}
	for _, w := range want {
		var got []slog.Record
		for deadline := time.Now().Add(10 * time.Second); len(got) == 0 && time.Now().Before(deadline); {
			got = rec.find(w.msg)
			time.Sleep(5 * time.Millisecond)
		}
		if len(got) != 1 {
			t.Errorf("%q logged %d times", w.msg, len(got))
			continue
		}
		r := got[0]
		if r.Level != w.level {
			t.Errorf("%q at %v, want %v", w.msg, r.Level, w.level)
		}
		attrs := attrsOf(r)
		if attrs["plugin"] != "testplugin" {
			t.Errorf("%q: plugin attr %q, want testplugin (attrs %v)", w.msg, attrs["plugin"], attrs)
		}
		for k, v := range w.attrs {
			if attrs[k] != v {
				t.Errorf("%q: %s=%q, want %q", w.msg, k, attrs[k], v)
			}
		}
		if _, ok := attrs["timestamp"]; ok {
			t.Errorf("%q carries go-plugin's timestamp attr", w.msg)
		}
	}
}

func TestHostileStderr(t *testing.T) {
	requireRoot(t)
	opts, rec := testOptions(t, "storage")
	c := startTest(t, opts)
	// go-plugin's own parser panics on the second of these lines, in a
	// goroutine of the host's: the host would die.
	if _, err := prepare(context.Background(), c, "stderr-junk"); err != nil {
		t.Fatal(err)
	}
	if _, err := prepare(context.Background(), c, "still-alive"); err != nil {
		t.Fatal(err)
	}
	c.close() // flushes the count of dropped lines
	if got := rec.find("not json at all"); len(got) != 1 || got[0].Level != slog.LevelDebug {
		t.Errorf("a plain line: %v", got)
	}
	if got := rec.find(`{"@message": 1, "@level": "error"}`); len(got) != 1 {
		t.Errorf("a line with a non-string message is not logged as text: %v", got)
	}
	for _, r := range rec.all() {
		if strings.ContainsRune(r.Message, 0x1b) {
			t.Errorf("an escape sequence reached the log: %q", r.Message)
		}
		if len(r.Message) > maxLogLine+100 {
			t.Errorf("a %d-byte line was not cut", len(r.Message))
		}
	}
	floods := 0
	for _, r := range rec.all() {
		if strings.HasPrefix(r.Message, "[INFO] flood") {
			floods++
			if r.Level != slog.LevelInfo {
				t.Errorf("[INFO] line at %v", r.Level)
			}
		}
	}
	if floods == 0 || floods > 2500 {
		t.Errorf("%d of 5000 flood lines logged: want some, and far from all", floods)
	}
	dropped := 0
	for _, r := range rec.all() {
		a := attrsOf(r)
		n, _ := strconv.Atoi(a["count"] + a["dropped_before"])
		dropped += n
	}
	if dropped == 0 {
		t.Errorf("no record says lines were dropped")
	}
}

func TestNoDescriptorOrEnvironmentLeaks(t *testing.T) {
	requireRoot(t)
	// A careless library's descriptor: no O_CLOEXEC.
	leaky := filepath.Join(t.TempDir(), "leaky")
	fd, err := syscall.Open(leaky, syscall.O_CREAT|syscall.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	t.Setenv("BERTH_TEST_SECRET", "hunter2")

	// go-plugin hands a plugin berth's stdin unless told otherwise.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	stdin := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = stdin }()

	opts, _ := testOptions(t, "storage", "EXTRA=given")
	c := startTest(t, opts)
	pid := pidOf(t, c)
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if target == leaky {
			t.Errorf("the plugin inherited descriptor %s on %s", e.Name(), leaky)
		}
		if e.Name() == "0" && target != "/dev/null" {
			t.Errorf("the plugin's stdin is %s, want /dev/null", target)
		}
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	vars := strings.Split(string(env), "\x00")
	has := func(prefix string) bool {
		for _, v := range vars {
			if strings.HasPrefix(v, prefix) {
				return true
			}
		}
		return false
	}
	if has("BERTH_TEST_SECRET=") {
		t.Error("the plugin got berth's environment")
	}
	for _, v := range []string{"PATH=", "EXTRA=given", "BERTH_PLUGIN=", "PLUGIN_UNIX_SOCKET_DIR=" + opts.RunDir + "/", envLogLevel + "=trace"} {
		if !has(v) {
			t.Errorf("the plugin's environment lacks %s: %q", v, vars)
		}
	}
	if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); cwd != "/" {
		t.Errorf("the plugin's working directory is %q, want /", cwd)
	}
	// Its own process group: a terminal's ^C to berth's is not its.
	if pgid, _ := syscall.Getpgid(pid); pgid != pid {
		t.Errorf("plugin's process group is %d, want its own (%d)", pgid, pid)
	}
	for _, bad := range []string{"BERTH_PLUGIN=x", "PLUGIN_UNIX_SOCKET_DIR=/tmp", "NOEQUALS", "=x"} {
		if _, err := startClient(context.Background(), testPluginBin, KindStorage, &Options{Env: []string{bad}}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Env %q: %v, want ErrInvalid", bad, err)
		}
	}
}

func TestPluginDiesWithHost(t *testing.T) {
	requireRoot(t)
	runDir := filepath.Join(t.TempDir(), "run")
	cmd := exec.Command(testPluginBin)
	cmd.Env = append(os.Environ(), envTestHost+"="+runDir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("host: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("host said %q", line)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("plugin %d not running while its host is: %v", pid, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	// The plugin is not our child: it dies, and init reaps it.
	waitGone(t, pid)
}

func TestDescribe(t *testing.T) {
	requireRoot(t)
	for _, kind := range []string{KindStorage, KindNetwork} {
		opts, _ := testOptions(t, kind)
		before := children(t)
		info, err := Describe(context.Background(), testPluginBin, opts)
		if err != nil {
			t.Fatal(err)
		}
		if info.Kind != kind || info.Name != "testplugin" || info.Protocol != ProtocolVersion {
			t.Errorf("Describe = %+v", info)
		}
		checkNothingLeft(t, opts, before)
	}
}

func TestServeStorageSDK(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "sdk")
	c := startTest(t, opts)
	info := c.Info()
	if info.Name != "testplugin" || info.Version != "v9.9.9-sdk" || info.Kind != KindStorage {
		t.Errorf("Info = %+v, want the binary's name and the Version method's version", info)
	}
	if len(info.Roots) != 1 || info.Roots[0] != "/nonexistent" {
		t.Errorf("roots %v", info.Roots)
	}
}

func TestServeByHand(t *testing.T) {
	cmd := exec.Command(testPluginBin)
	cmd.Env = append(os.Environ(), envTestPlugin+"=sdk")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("run by hand: %v, want a non-zero exit", err)
	}
	if !strings.Contains(string(out), "is a berth storage plugin") {
		t.Errorf("run by hand it says %q", out)
	}
}

func TestServeStopsOnSIGTERM(t *testing.T) {
	requireRoot(t)
	opts, rec := testOptions(t, "storage")
	c := startTest(t, opts)
	pid := pidOf(t, c)
	// A call in flight is allowed to finish: it ends when its context does.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := prepare(ctx, c, "block-term")
		errc <- err
	}()
	for len(rec.find("blocking")) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	// Once it drains, new calls are refused...
	for {
		_, err := prepare(context.Background(), c, "x")
		if err != nil && strings.Contains(err.Error(), "plugin is stopping") {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	// ...and the one in flight still ends as its context says, not cut
	// off by the plugin's exit.
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("call in flight during the stop: %v, want Canceled", err)
	}
	p := c.cur.Load()
	<-p.run.exited
	if s := p.run.exitStatus(); s != "exit status 0" {
		t.Errorf("plugin stopped by SIGTERM: %s, want exit status 0", s)
	}
	if pid2 := pidOf(t, c); pid2 == pid {
		t.Error("not restarted after SIGTERM")
	}
}

func TestPluginSurvivesThreadExits(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "storage")
	c := startTest(t, opts)
	pid := pidOf(t, c)
	// Goroutines that end locked to their thread end the thread too, as
	// setns-style code does on purpose. Pdeathsig fires when the thread
	// that forked the plugin ends: it must not be one of these.
	for range 50 {
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				time.Sleep(time.Millisecond)
			}()
		}
		wg.Wait()
	}
	time.Sleep(50 * time.Millisecond)
	if got := pidOf(t, c); got != pid {
		t.Errorf("plugin %d died when threads ended (now %d)", pid, got)
	}
}

func TestAutoMTLS(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "storage")
	opts.AutoMTLS = true
	c := startTest(t, opts)
	pid := pidOf(t, c)
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if !strings.Contains(string(env), "PLUGIN_CLIENT_CERT=") {
		t.Error("no client certificate given to the plugin")
	}
	if _, err := prepare(context.Background(), c, "notfound"); !errors.Is(err, ErrNotFound) {
		t.Errorf("call over mTLS: %v", err)
	}
}

func TestRestartMustKeepItsShape(t *testing.T) {
	requireRoot(t)
	roots := filepath.Join(t.TempDir(), "roots")
	os.WriteFile(roots, []byte("/srv/a"), 0o644)
	opts, _ := testOptions(t, "storage", envTestRoots+"="+roots)
	c := startTest(t, opts)
	if got := c.Info().Roots; len(got) != 1 || got[0] != "/srv/a" {
		t.Fatalf("roots %v", got)
	}
	// Same shape: the restart is accepted.
	killPlugin(t, c)
	pidOf(t, c)
	// A plugin that comes back claiming more is refused, and killed.
	os.WriteFile(roots, []byte("/srv/a /"), 0o644)
	killPlugin(t, c)
	before := children(t)
	_, err := prepare(context.Background(), c, "x")
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), `with roots ["/srv/a" "/"], not ["/srv/a"]`) {
		t.Fatalf("restart with other roots: %v, want ErrRefused naming both", err)
	}
	checkNothingLeft(t, opts, before)
}

// killPlugin kills the plugin's process with SIGKILL and waits until the
// client has seen it go.
func killPlugin(t *testing.T, c *client) {
	t.Helper()
	p := c.cur.Load()
	if err := syscall.Kill(p.run.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.run.exited
}

func TestRunDirChecks(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	open := func(dir string) error {
		opts, _ := testOptions(t, "storage")
		opts.RunDir = dir
		c, err := startClient(context.Background(), testPluginBin, KindStorage, opts)
		if err == nil {
			c.close()
		}
		return err
	}
	// Made if missing: its parents searchable, itself private.
	fresh := filepath.Join(base, "a", "run")
	if err := open(fresh); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]os.FileMode{fresh: 0o700, filepath.Dir(fresh): 0o711} {
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, mode %v, want %v", dir, err, fi.Mode().Perm(), want)
		}
	}
	// An unclean path names the same directory: the plugin's socket,
	// which berth checks is directly in the socket directory, is too.
	if err := open(base + "//a/./run"); err != nil {
		t.Errorf("RunDir not clean: %v", err)
	}
	// Someone else's socket directory is not berth's to use.
	open777 := filepath.Join(base, "open")
	os.Mkdir(open777, 0o777)
	os.Chmod(open777, 0o777)
	link := filepath.Join(base, "link")
	os.Symlink(fresh, link)
	notOurs := filepath.Join(base, "notours")
	os.Mkdir(notOurs, 0o700)
	os.Chown(notOurs, 65534, 65534)
	for _, dir := range []string{open777, link, notOurs, "relative/run"} {
		if err := open(dir); !errors.Is(err, ErrInvalid) {
			t.Errorf("RunDir %s: %v, want ErrInvalid", dir, err)
		}
	}
}

func TestInfoNeverAnswered(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "storage", envTestMuteInfo+"=1")
	opts.StartTimeout = 500 * time.Millisecond
	before := children(t)
	// No deadline on the caller's side: the start timeout bounds Info too.
	_, err := startClient(context.Background(), testPluginBin, KindStorage, opts)
	if !errors.Is(err, ErrNotPlugin) || !strings.Contains(err.Error(), "no answer to Info within 500ms") {
		t.Fatalf("%v, want ErrNotPlugin saying Info went unanswered", err)
	}
	checkNothingLeft(t, opts, before)
}

func TestHandshakeCannotCrashTheHost(t *testing.T) {
	requireRoot(t)
	// A certificate in the handshake's sixth field, AutoMTLS off: go-plugin
	// v1.8.0 stores it into a nil TLS config.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	script := writeScript(t, "certplugin", `echo "1|1|unix|$PLUGIN_UNIX_SOCKET_DIR/s|grpc|`+base64.RawStdEncoding.EncodeToString(der)+`"; sleep 60`)
	opts, _ := testOptions(t, "storage")
	before := children(t)
	_, err = startClient(context.Background(), script, KindStorage, opts)
	if !errors.Is(err, ErrNotPlugin) {
		t.Fatalf("%v, want ErrNotPlugin", err)
	}
	checkNothingLeft(t, opts, before)
}

func TestCloseDuringCall(t *testing.T) {
	requireRoot(t)
	opts, rec := testOptions(t, "storage")
	c := startTest(t, opts)
	errc := make(chan error, 1)
	go func() {
		_, err := prepare(context.Background(), c, "block-close")
		errc <- err
	}()
	for len(rec.find("blocking")) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	c.close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("call in flight when closed: %v, want ErrClosed", err)
	}
	if left := dirEntries(t, opts.RunDir); len(left) != 0 {
		t.Errorf("run dir holds %v after close", left)
	}
}

func TestNoGoroutineLeaks(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "storage")
	bad := writeScript(t, "bad", "echo nope")
	cycle := func() {
		c, err := startClient(context.Background(), testPluginBin, KindStorage, opts)
		if err != nil {
			t.Fatal(err)
		}
		prepare(context.Background(), c, "ok")
		killPlugin(t, c)
		prepare(context.Background(), c, "ok") // restarts
		c.close()
		startClient(context.Background(), bad, KindStorage, opts)
	}
	cycle() // warm up gRPC's and the runtime's own
	settle := func() int {
		n := runtime.NumGoroutine()
		for i := 0; i < 100; i++ {
			time.Sleep(20 * time.Millisecond)
			if m := runtime.NumGoroutine(); m == n {
				return n
			} else {
				n = m
			}
		}
		return n
	}
	before := settle()
	const cycles = 10
	for range cycles {
		cycle()
	}
	if after := settle(); after-before >= cycles {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before %d start/kill/restart/close cycles, %d after:\n%s", before, cycles, after, buf[:runtime.Stack(buf, true)])
	}
}

func TestCloseDuringStart(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "hang")
	opts.StartTimeout = time.Hour
	c, err := newClient(testPluginBin, KindStorage, opts)
	if err != nil {
		t.Fatal(err)
	}
	before := children(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.conn(context.Background())
		errc <- err
	}()
	for len(children(t)) == len(before) {
		time.Sleep(5 * time.Millisecond)
	}
	c.close()
	select {
	case err = <-errc:
	case <-time.After(30 * time.Second):
		t.Fatal("close did not end the start") // a hang detector
	}
	if !errors.Is(err, ErrClosed) {
		t.Errorf("start ended by close: %v, want ErrClosed", err)
	}
	checkNothingLeft(t, opts, before)
}

// A plugin that never answers go-plugin's Shutdown must not hold the
// host's close (nor, through it, a restart) forever: go-plugin's Kill
// waits for that answer with no deadline but the process's exit.
func TestCloseDespiteDeafPlugin(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "storage", envTestDeaf+"=1")
	before := children(t)
	c := startTest(t, opts)
	if _, err := prepare(context.Background(), c, "ok"); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		c.close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("close hangs on a plugin that does not answer Shutdown") // a hang detector
	}
	checkNothingLeft(t, opts, before)
}

// A helper the plugin started beyond its process group, holding its
// stderr, must not keep the killed plugin from being reaped: go-plugin
// reads the plugin's stdout and stderr to their end before it reaps it.
func TestStopDespiteHelperHoldingStderr(t *testing.T) {
	requireRoot(t)
	opts, _ := testOptions(t, "storage")
	c := startTest(t, opts)
	pid := pidOf(t, c)
	resp, err := prepare(context.Background(), c, "helper")
	if err != nil {
		t.Fatal(err)
	}
	helper, err := strconv.Atoi(resp.GetDriver())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(helper, syscall.SIGKILL) })
	done := make(chan struct{})
	go func() {
		c.close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("close hangs while the plugin's helper holds its stderr") // a hang detector
	}
	waitGone(t, pid)
}
