package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
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
	onOtherThread(func() {
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

// onOtherThread runs fn in a goroutine locked to a thread other than the
// main one, which the runtime ends when fn returns; as netplug's Pool does.
func onOtherThread(fn func()) {
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			fn()
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread()
			fn()
		}()
		<-done
		runtime.UnlockOSThread()
	}()
}
