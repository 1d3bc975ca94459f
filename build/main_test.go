package build

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/layerfs"
)

// testEnv is shared by the package's tests: a store holding the shared
// Alpine image as alpine:test, and where sandboxes' state goes.
var testEnv *testenv.Env

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "build tests must run as root: they mount rootfses and run sandboxes")
		os.Exit(1)
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	e, err := testenv.Setup(testenv.Options{
		Name:   "berth-buildtest",
		Images: map[string]string{"alpine:test": testenv.Alpine},
		Bridge: "berth-bldtest", Subnet: netip.MustParsePrefix("10.219.0.0/24"),
	})
	defer e.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "set up build tests:", err)
		return 1
	}
	testEnv = e
	return m.Run()
}

// writeContext makes a build context of files (path → content; a
// Dockerfile among them if the test gives one).
func writeContext(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// build builds the context dir in the test store.
func build(t *testing.T, dir string, extra func(*Options)) (*Result, error) {
	t.Helper()
	o := &Options{Context: dir, Cgroups: testEnv.Cgroups, StateDir: testEnv.StateDir}
	if extra != nil {
		extra(o)
	}
	return Build(context.Background(), testEnv.Store, o)
}

// inImage calls fn with a rootfs of img prepared for the test, released
// after.
func inImage(t *testing.T, img *layerfs.Image, fn func(root string)) {
	t.Helper()
	ctx := context.Background()
	key := "buildtest-" + randomID()
	rfs, err := testEnv.Store.Prepare(ctx, key, img, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer testEnv.Store.Release(ctx, key)
	fn(rfs.Path)
}
