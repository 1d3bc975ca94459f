package layerfs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// leaveProject takes the directory dir, in a rootfs, out of its project
// quota as a workload that owns it would: it clears the inheritance flag
// and sets project 0 through the overlay, so that what is made in it
// afterwards counts for project 0, which has no limits.
func leaveProject(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var attr fsxattr
	if err := ioctlPtr(fd, fsIOCFSGetXattr, unsafe.Pointer(&attr)); err != nil {
		return fmt.Errorf("FS_IOC_FSGETXATTR: %w", err)
	}
	attr.ProjID = 0
	attr.XFlags &^= fsXflagProjInherit
	if err := ioctlPtr(fd, fsIOCFSSetXattr, unsafe.Pointer(&attr)); err != nil {
		return fmt.Errorf("FS_IOC_FSSETXATTR: %w", err)
	}
	return nil
}

// TestDiskQuotaProjectEscape checks that a workload cannot leave its disk
// quota by changing the project of its files, as an owner in the initial
// user namespace may (a Default sandbox's root is one): chattr -p 0 and
// chattr -P through the overlay reach the upper directory, and writes
// there would then count for no quota at all.
func TestDiskQuotaProjectEscape(t *testing.T) {
	fs := projectQuotaFS(t)
	s, img := quotaStore(t, filepath.Join(fs, "store"), "overlay")
	r, err := s.Prepare(ctx, "q", img, &PrepareOptions{DiskQuota: testQuota})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release(ctx, "q")
	dir := filepath.Join(r.Path, "escape")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if b := readRecord(t, s, "q").Quota.Backend; b != quotaLoop {
		t.Errorf("backend %s for a rootfs in the host's user namespace, want %s", b, quotaLoop)
	}
	t.Logf("leaving the project: %v", leaveProject(dir))
	n, err := writeUntilFull(filepath.Join(dir, "big"), 3*testQuota)
	if !isFull(err) || n > testQuota {
		t.Errorf("wrote %d bytes under a quota of %d after changing the project: %v", n, testQuota, err)
	}
}

// TestDiskQuotaProjectUserNS checks that a workload in a user namespace,
// which the kernel does not let change project IDs, gets a project quota
// where the store's filesystem has them, and cannot leave it.
func TestDiskQuotaProjectUserNS(t *testing.T) {
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip(err)
	}
	chattr, err := exec.LookPath("chattr")
	if err != nil {
		t.Skip(err)
	}
	fs := projectQuotaFS(t)
	ns := newUserNS(t)
	s, img := quotaStore(t, filepath.Join(fs, "store"), "overlay")
	opts := userNSOptions(ns)
	opts.DiskQuota = testQuota
	r, err := s.Prepare(ctx, "q", img, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release(ctx, "q")
	if b := readRecord(t, s, "q").Quota.Backend; b != quotaProject {
		t.Fatalf("backend %s, want %s", b, quotaProject)
	}
	dir := filepath.Join(r.Path, "escape")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, testHostID, testHostID); err != nil {
		t.Fatal(err)
	}
	// The namespace's root, owner of dir, tries what a sandbox's could.
	for _, flags := range []string{"-P", "-p0"} {
		args := []string{"--user=" + ns.Name(), "--", chattr}
		if flags == "-P" {
			args = append(args, "-P", dir)
		} else {
			args = append(args, "-p", "0", dir)
		}
		out, err := exec.Command(nsenter, args...).CombinedOutput()
		if err == nil {
			t.Errorf("chattr %s in the user namespace succeeded: %s", flags, out)
		}
	}
	n, err := writeUntilFull(filepath.Join(dir, "big"), 3*testQuota)
	if !isFull(err) || n > testQuota {
		t.Errorf("wrote %d bytes under a quota of %d: %v", n, testQuota, err)
	}
}

// TestDiskQuotaLoopFlags checks that a rootfs's own filesystem is mounted
// nosuid,nodev on the host: what a workload leaves in its upper directory
// (a setuid-root copy of a shell, a disk's device node) is no use to a
// host user who reaches it there.
func TestDiskQuotaLoopFlags(t *testing.T) {
	s, img := quotaStore(t, "", "overlay")
	if _, err := s.Prepare(ctx, "q", img, &PrepareOptions{DiskQuota: testQuota}); err != nil {
		t.Fatal(err)
	}
	defer s.Release(ctx, "q")
	if b := readRecord(t, s, "q").Quota.Backend; b != quotaLoop {
		t.Skipf("backend %s", b)
	}
	state := filepath.Join(s.rootfsDir("q"), "state")
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == state {
			opts := strings.Split(f[5], ",")
			if !slices.Contains(opts, "nosuid") || !slices.Contains(opts, "nodev") {
				t.Errorf("%s mounted %s, want nosuid and nodev", state, f[5])
			}
			return
		}
	}
	t.Fatalf("%s is not a mount point", state)
}

// TestDiskQuotaAdminProject checks that an administrator's project quota
// on the store holds for a rootfs prepared without a disk quota of its
// own: the overlay writes with the credentials of its mounter, which must
// not carry CAP_SYS_RESOURCE past the quota, although the rootfs asked
// for none.
func TestDiskQuotaAdminProject(t *testing.T) {
	const admin = 4242
	fs := projectQuotaFS(t)
	root := filepath.Join(fs, "store")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	// The limits are set again below, once the image is in.
	if err := setProjectQuota(fs, root, &diskQuota{Project: admin, Bytes: 32 << 20, Inodes: 1 << 16}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { clearProjectQuota(fs, admin) })
	s, img := quotaStore(t, root, "overlay")
	if _, any := s.fsQuotas(); !any {
		t.Fatal("the store does not see the quotas its filesystem enforces")
	}
	used := projectUsage(t, fs, admin).CurSpace
	if err := setProjectQuota(fs, root, &diskQuota{Project: admin, Bytes: int64(used) + testQuota, Inodes: 1 << 16}); err != nil {
		t.Fatal(err)
	}
	r, err := s.Prepare(ctx, "q", img, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release(ctx, "q")
	n, err := writeUntilFull(filepath.Join(r.Path, "big"), 3*testQuota)
	if !isFull(err) || n > testQuota {
		t.Errorf("wrote %d bytes through a rootfs under an administrator's quota of %d more: %v", n, testQuota, err)
	}
}
