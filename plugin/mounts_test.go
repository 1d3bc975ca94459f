package plugin

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A directory on the way to one of berth's mounts, swapped for a symlink
// between the listing of the mounts and their unmounting (by a workload
// writing under a plugin's root bound into the rootfs), must not have
// berth detach the mount the symlink leads to.
func TestUnmountUnderFollowsNoSymlink(t *testing.T) {
	requireRoot(t)
	tmp, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "key")
	ours := filepath.Join(dir, "rootfs", "a", "tmp")
	victim := filepath.Join(tmp, "victim")
	for _, d := range []string{ours, filepath.Join(victim, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", d, "tmpfs", 0, "size=64k"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, d := range []string{filepath.Join(dir, "rootfs", "a2", "tmp"), ours, filepath.Join(victim, "tmp")} {
			unix.Unmount(d, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		}
	})

	swapped := false
	listMounts = func(d string) ([]string, error) {
		points, err := mountsUnder(d)
		if err == nil && !swapped {
			swapped = true
			a := filepath.Join(dir, "rootfs", "a")
			if err := os.Rename(a, a+"2"); err != nil {
				t.Error(err)
			}
			if err := os.Symlink(victim, a); err != nil {
				t.Error(err)
			}
		}
		return points, err
	}
	t.Cleanup(func() { listMounts = mountsUnder })

	if _, err := unmountUnder(dir); err == nil {
		t.Error("unmountUnder went through a symlink without an error")
	} else {
		t.Log(err)
	}
	if points, err := mountsUnder(victim); err != nil || len(points) != 1 {
		t.Fatalf("the mount the symlink leads to: %v, %v; want it still there", points, err)
	}
	// With the symlink gone, the mount is found where it is and detached.
	if err := os.Remove(filepath.Join(dir, "rootfs", "a")); err != nil {
		t.Fatal(err)
	}
	if n, err := unmountUnder(dir); err != nil || n != 1 {
		t.Fatalf("unmountUnder = %d, %v; want 1, nil", n, err)
	}
	if points, _ := mountsUnder(dir); len(points) != 0 {
		t.Fatalf("left mounted: %v", points)
	}
}
