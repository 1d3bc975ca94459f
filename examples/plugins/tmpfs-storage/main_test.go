package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testenv"
)

// The tests that go through berth share one build of the plugin and one
// environment (a store holding the shared alpine image, a cgroup parent),
// made the first time a test asks and removed when the tests end.
var shared struct {
	once  sync.Once
	err   error
	dir   string // removed at the end
	bin   string // the plugin, built with its root under dir
	root  string // that root
	env   *testenv.Env
	close func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.close != nil {
		shared.close()
	}
	os.Exit(code)
}

// setup builds the plugin and the environment, or skips the test without
// root.
func setup(t testing.TB) {
	t.Helper()
	requireRoot(t)
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "tmpfs-storage-test-")
		if shared.err != nil {
			return
		}
		shared.close = func() { unmountUnder(shared.dir); os.RemoveAll(shared.dir) }
		// Root of a sandbox's user namespace is an ordinary id on the
		// host and must be able to reach the rootfses berth mounts in
		// the tests' directories under here.
		if shared.err = os.Chmod(shared.dir, 0o711); shared.err != nil {
			return
		}
		shared.root = filepath.Join(shared.dir, "root")
		shared.bin = filepath.Join(shared.dir, "tmpfs-storage")
		// The plugin is built for a root of the test's own, so that
		// its audit of the root sees only what these tests made.
		cmd := exec.Command("go", "build", "-o", shared.bin, "-ldflags", "-X main.defaultRoot="+shared.root, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			shared.err = fmt.Errorf("build the plugin: %v\n%s", err, out)
			return
		}
		env, err := testenv.Setup(testenv.Options{
			Name:   "berth-tmpfs-storage",
			Images: map[string]string{"alpine:test": testenv.Alpine},
			Bridge: "berth-tmpfst", Subnet: netip.MustParsePrefix("10.219.77.0/24"),
		})
		closeDir := shared.close
		shared.close = func() { env.Close(); closeDir() }
		shared.env, shared.err = env, err
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
}

// unmountUnder detaches whatever a failed test left mounted under dir,
// deepest first, so that removing dir neither fails nor leaks a mount.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		unix.Unmount(points[i], unix.MNT_DETACH)
	}
}

// testDir makes a directory for one test under the shared one, which root
// of a user namespace can pass through, unlike t.TempDir's parent.
func testDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp(shared.dir, "test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// testLogger sends log lines to the test's log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
