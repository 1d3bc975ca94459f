package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/osthread"
)

// Netns makes a network namespace for the test, kept by a bind mount on a
// file of the test's (as `ip netns add` does), and unmounts it when the
// test ends. The namespace is entered on a thread of its own that then
// ends, never on the main thread, which the runtime cannot end and whose
// namespace /proc/self/ns/net shows (netplug takes it for the host's).
func Netns(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	osthread.Go(func() {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
	})
	if err := <-errc; err != nil {
		t.Fatalf("make a network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", path, err)
		}
	})
	return path
}
