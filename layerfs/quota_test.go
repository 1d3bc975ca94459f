package layerfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// testQuota is the disk quota of these tests: small, since a few MiB
// prove as much as gigabytes.
const testQuota = 4 << 20

// quotaStore opens a store at root (a new temporary directory if "") with
// the busybox image, and makes sure that nothing stays mounted in it or
// attached to a loop device from it, however the test ends.
func quotaStore(t *testing.T, root, driver string) (*Store, *Image) {
	t.Helper()
	if root == "" {
		root = t.TempDir()
	}
	s, err := Open(root, &Options{Driver: driver, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		detachAll(t, s.Root())
		if l := loopsBackedBy(t, s.Root()); len(l) > 0 {
			t.Errorf("cleanup: loop devices still attached to files of the store: %q", l)
		}
	})
	img, err := s.Import(ctx, sharedImage(t, busyboxOCI), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, img
}

// projectQuotaFS mounts a new 64 MiB ext4 filesystem with project quotas
// enforced, from a sparse image on a loop device, and returns its mount
// point. Everything goes away in a cleanup that runs after those of
// stores opened on it.
func projectQuotaFS(t *testing.T) string {
	t.Helper()
	mkfs, err := mkfsPath()
	if err != nil {
		t.Skip(err)
	}
	base := t.TempDir()
	image, mnt := filepath.Join(base, "fs.img"), filepath.Join(base, "mnt")
	f, err := os.Create(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-O", "quota,project", image).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v\n%s", err, out)
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	dev, err := attachLoop(f)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if err := unix.Mount(dev.Name(), mnt, "ext4", 0, "prjquota"); err != nil {
		// Kernels built without CONFIG_QFMT_V2 (or CONFIG_QUOTA) cannot
		// mount ext4 with quotas at all: dmesg says so.
		t.Skipf("this kernel cannot mount ext4 with project quotas (does it lack CONFIG_QFMT_V2?): mount %s -o prjquota: %v", dev.Name(), err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("cleanup: unmount %s: %v", mnt, err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	if !projectQuotasEnforced(mnt) {
		t.Fatal("the test filesystem does not enforce project quotas")
	}
	return mnt
}

// loopsBackedBy returns the loop devices whose backing files are under
// dir, waiting a little for autoclear to finish with those being detached.
func loopsBackedBy(t testing.TB, dir string) []string {
	t.Helper()
	var found []string
	for range 50 {
		found = found[:0]
		files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/") {
				found = append(found, strings.Split(f, "/")[3])
			}
		}
		if len(found) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return found
}

func readRecord(t *testing.T, s *Store, key string) rootfsRecord {
	t.Helper()
	rec, err := s.readRootfs(key)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// writeUntilFull writes zeros to a new file at path, up to max bytes, and
// returns how many it wrote and the error that stopped it.
func writeUntilFull(path string, max int64) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	var n int64
	for n < max {
		w, err := f.Write(buf)
		n += int64(w)
		if err != nil {
			f.Close()
			return n, err
		}
	}
	return n, f.Close()
}

// createUntilFull makes up to max empty files in dir and returns how
// many it made and the error that stopped it.
func createUntilFull(dir string, max int) (int, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return 0, err
	}
	for i := range max {
		f, err := os.Create(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			return i, err
		}
		f.Close()
	}
	return max, nil
}

func projectUsage(t *testing.T, root string, id uint32) ifDQBlk {
	t.Helper()
	var q ifDQBlk
	if err := quotactlAt(root, qcmd(qGetQuota, prjQuota), id, unsafe.Pointer(&q)); err != nil {
		t.Fatal(err)
	}
	return q
}

func isFull(err error) bool { return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) }

// checkQuotaHolds writes past the quota through the rootfs r, as host root
// with every capability (more than any sandbox has), and checks that the
// writes stop at the quota, for bytes and for inodes, and that the
// store's filesystem holds no more than the quota for them.
func checkQuotaHolds(t *testing.T, s *Store, r *Rootfs, backend string) {
	t.Helper()
	rec := readRecord(t, s, r.Key)
	if rec.Quota == nil || rec.Quota.Backend != backend {
		t.Fatalf("quota record %+v, want backend %q", rec.Quota, backend)
	}
	wantInodes := int64(testQuota / bytesPerInode)
	if rec.Quota.Bytes != testQuota || rec.Quota.Inodes != wantInodes {
		t.Errorf("quota record %+v, want %d bytes and %d inodes", rec.Quota, testQuota, wantInodes)
	}

	n, err := writeUntilFull(filepath.Join(r.Path, "big"), 3*testQuota)
	if !isFull(err) {
		t.Fatalf("wrote %d bytes past a quota of %d: %v; want ENOSPC or EDQUOT", n, testQuota, err)
	}
	if n < testQuota*3/4 || n > testQuota {
		t.Errorf("wrote %d bytes under a quota of %d", n, testQuota)
	}
	t.Logf("wrote %d bytes under a quota of %d: %v", n, testQuota, err)
	// What was written can be removed, and the space is there again.
	if err := os.Remove(filepath.Join(r.Path, "big")); err != nil {
		t.Fatal(err)
	}
	files, err := createUntilFull(filepath.Join(r.Path, "many"), 4*int(wantInodes))
	if !isFull(err) {
		t.Fatalf("made %d empty files under a quota of %d inodes: %v; want ENOSPC or EDQUOT", files, wantInodes, err)
	}
	if int64(files) > wantInodes || int64(files) < wantInodes*3/4 {
		t.Errorf("made %d files under a quota of %d inodes", files, wantInodes)
	}
	t.Logf("made %d files under a quota of %d inodes: %v", files, wantInodes, err)

	// The host's side: what the store's filesystem holds for the rootfs.
	switch backend {
	case quotaLoop:
		var st unix.Stat_t
		if err := unix.Stat(loopImage(s.rootfsDir(r.Key)), &st); err != nil {
			t.Fatal(err)
		}
		if used := st.Blocks * 512; used > testQuota+2<<20 {
			t.Errorf("the image file takes %d bytes of the host's disk for a quota of %d", used, testQuota)
		}
	case quotaProject:
		q := projectUsage(t, s.Root(), rec.Quota.Project)
		if q.BHardLimit*qifDQBlkSize != testQuota || q.IHardLimit != uint64(wantInodes) {
			t.Errorf("project %d limits: %d KiB, %d inodes", rec.Quota.Project, q.BHardLimit, q.IHardLimit)
		}
		if q.CurSpace > testQuota || q.CurInodes > uint64(wantInodes) {
			t.Errorf("project %d uses %d bytes, %d inodes", rec.Quota.Project, q.CurSpace, q.CurInodes)
		}
	}
}

// TestDiskQuotaLoop checks the quota on a store whose filesystem does not
// enforce project quotas, as this host's does not: a filesystem of the
// rootfs's own, for each driver, with and without a user namespace.
func TestDiskQuotaLoop(t *testing.T) {
	if projectQuotasEnforced(os.TempDir()) {
		t.Skip("the temporary directory's filesystem enforces project quotas")
	}
	ns := newUserNS(t)
	for _, tc := range []struct {
		driver string
		userns bool
	}{{"overlay", false}, {"overlay", true}, {"copy", false}, {"copy", true}} {
		t.Run(fmt.Sprintf("%s-userns=%v", tc.driver, tc.userns), func(t *testing.T) {
			s, img := quotaStore(t, "", tc.driver)
			opts := &PrepareOptions{DiskQuota: testQuota}
			if tc.userns {
				opts = userNSOptions(ns)
				opts.DiskQuota = testQuota
			}
			if tc.driver == "copy" {
				// The copy of the image counts against the quota.
				opts.DiskQuota += 4 << 20
			}
			r, err := s.Prepare(ctx, "q", img, opts)
			if err != nil {
				t.Fatal(err)
			}
			if tc.userns {
				if uid, _ := statOwner(t, r.Path); uid != testHostID {
					t.Errorf("rootfs owned by %d, want %d", uid, testHostID)
				}
			}
			if tc.driver == "copy" {
				// Fill up the extra first, so that the rest is testQuota.
				n, err := writeUntilFull(filepath.Join(r.Path, "pad"), opts.DiskQuota)
				if !isFull(err) {
					t.Fatalf("padding: %d bytes, %v", n, err)
				}
				os.Truncate(filepath.Join(r.Path, "pad"), n-testQuota)
			} else {
				checkQuotaHolds(t, s, r, quotaLoop)
			}
			if err := s.Diff(ctx, "q", io.Discard); err != nil {
				t.Errorf("diff of a rootfs with a quota: %v", err)
			}
			if _, err := s.Commit(ctx, "q", &CommitOptions{Name: "committed:1"}); err != nil {
				t.Errorf("commit of a rootfs with a quota: %v", err)
			}
			if err := s.Release(ctx, "q"); err != nil {
				t.Fatal(err)
			}
			assertReleased(t, s, "q")
		})
	}
}

// TestDiskQuotaProject checks the quota on a store whose filesystem
// enforces project quotas: a project of the rootfs's own, whose limits
// Release clears.
func TestDiskQuotaProject(t *testing.T) {
	fs := projectQuotaFS(t)
	ns := newUserNS(t)
	// Only a rootfs for a user namespace gets a project quota: see
	// TestDiskQuotaProjectEscape for one in the host's.
	for _, userns := range []bool{true} {
		t.Run(fmt.Sprintf("userns=%v", userns), func(t *testing.T) {
			s, img := quotaStore(t, filepath.Join(fs, fmt.Sprintf("store-%v", userns)), "overlay")
			opts := &PrepareOptions{DiskQuota: testQuota}
			if userns {
				opts = userNSOptions(ns)
				opts.DiskQuota = testQuota
			}
			r, err := s.Prepare(ctx, "q", img, opts)
			if err != nil {
				t.Fatal(err)
			}
			if r.Driver != "overlay" {
				t.Fatalf("driver %s", r.Driver)
			}
			id := readRecord(t, s, "q").Quota.Project
			checkQuotaHolds(t, s, r, quotaProject)
			// Two rootfses never share a project.
			r2, err := s.Prepare(ctx, "q2", img, opts)
			if err != nil {
				t.Fatal(err)
			}
			if id2 := readRecord(t, s, "q2").Quota.Project; id2 == id {
				t.Errorf("two rootfses have project %d", id)
			}
			if n, err := writeUntilFull(filepath.Join(r2.Path, "f"), testQuota/2); err != nil {
				t.Errorf("the second rootfs's quota is spent by the first's: %d bytes, %v", n, err)
			}
			if err := s.Diff(ctx, "q", io.Discard); err != nil {
				t.Errorf("diff of a rootfs with a quota: %v", err)
			}
			for _, key := range []string{"q", "q2"} {
				if err := s.Release(ctx, key); err != nil {
					t.Fatal(err)
				}
				assertReleased(t, s, key)
			}
			if q := projectUsage(t, s.Root(), id); q.BHardLimit != 0 || q.IHardLimit != 0 || q.CurSpace != 0 || q.CurInodes != 0 {
				t.Errorf("after Release, project %d: %+v", id, q)
			}
		})
	}
}

// TestQuotaStructs checks the sizes of the structures quotactl(2) and the
// ioctls fill: the kernel writes as many bytes as its own have.
func TestQuotaStructs(t *testing.T) {
	for name, c := range map[string]struct{ got, want uintptr }{
		"if_dqblk":       {unsafe.Sizeof(ifDQBlk{}), 72},
		"fs_quota_statv": {unsafe.Sizeof(fsQuotaStatV{}), 160},
		"fsxattr":        {unsafe.Sizeof(fsxattr{}), 28},
	} {
		if c.got != c.want {
			t.Errorf("struct %s: %d bytes, want %d", name, c.got, c.want)
		}
	}
}

// TestDiskQuotaChecked checks that Prepare refuses quotas it cannot honor,
// before it makes anything.
func TestDiskQuotaChecked(t *testing.T) {
	s, img := quotaStore(t, "", "overlay")
	for name, opts := range map[string]*PrepareOptions{
		"negative":            {DiskQuota: -1},
		"below the minimum":   {DiskQuota: MinDiskQuota - 1},
		"too large":           {DiskQuota: 1 << 62},
		"inodes without size": {DiskInodes: 100},
		"negative inodes":     {DiskQuota: testQuota, DiskInodes: -1},
	} {
		_, err := s.Prepare(ctx, "bad", img, opts)
		if err == nil {
			t.Errorf("%s: Prepare succeeded", name)
			s.Release(ctx, "bad")
			continue
		}
		t.Logf("%s: %v", name, err)
	}
	if keys, err := s.Rootfses(ctx); err != nil || len(keys) > 0 {
		t.Errorf("refused Prepares left %q (%v)", keys, err)
	}
}

// TestDiskQuotaFailedPrepare checks that a Prepare that fails once its
// quota is set up undoes it: a copy of the image that does not fit.
func TestDiskQuotaFailedPrepare(t *testing.T) {
	for _, backend := range []string{quotaLoop, quotaProject} {
		t.Run(backend, func(t *testing.T) {
			root := ""
			if backend == quotaProject {
				root = filepath.Join(projectQuotaFS(t), "store")
			}
			s, img := quotaStore(t, root, "copy")
			_, err := s.Prepare(ctx, "small", img, &PrepareOptions{DiskQuota: MinDiskQuota})
			if !isFull(err) || !strings.Contains(err.Error(), "too small for a copy") {
				t.Fatalf("Prepare with a quota smaller than the image: %v", err)
			}
			assertReleased(t, s, "small")
		})
	}
}

// TestDiskQuotaAfterCrash kills a process that prepared a rootfs with a
// quota and wrote to it, and releases the rootfs from this one, which
// knows of it only from the store.
func TestDiskQuotaAfterCrash(t *testing.T) {
	for _, backend := range []string{quotaLoop, quotaProject} {
		t.Run(backend, func(t *testing.T) {
			root := ""
			if backend == quotaProject {
				root = filepath.Join(projectQuotaFS(t), "store")
			}
			s, _ := quotaStore(t, root, "overlay")
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "BERTH_TEST_CRASH_QUOTA="+s.Root())
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("helper: %v, want it killed\n%s", err, out)
			}
			rec := readRecord(t, s, "crashed")
			if rec.Quota == nil || rec.Quota.Backend != backend {
				t.Fatalf("quota record %+v, want backend %s", rec.Quota, backend)
			}
			if m := mountedUnder(t, s.Root()); len(m) == 0 {
				t.Error("nothing mounted after the crash")
			}
			fresh, err := Open(s.Root(), &Options{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if err := fresh.Release(ctx, "crashed"); err != nil {
				t.Fatal(err)
			}
			assertReleased(t, fresh, "crashed")
			if l := loopsBackedBy(t, s.Root()); len(l) > 0 {
				t.Errorf("loop devices still attached: %q", l)
			}
			if backend == quotaProject {
				if q := projectUsage(t, s.Root(), rec.Quota.Project); q.BHardLimit != 0 || q.CurSpace != 0 {
					t.Errorf("after Release, project %d: %+v", rec.Quota.Project, q)
				}
			}
		})
	}
}

// helperCrashQuota prepares the rootfs "crashed" with a quota in the store
// at $BERTH_TEST_CRASH_QUOTA, writes to it and kills its own process.
func helperCrashQuota() int {
	s, err := Open(os.Getenv("BERTH_TEST_CRASH_QUOTA"), nil)
	if err == nil {
		var imgs []*Image
		imgs, err = s.Images(ctx)
		if err == nil && len(imgs) != 1 {
			err = fmt.Errorf("%d images in the store", len(imgs))
		}
		var r *Rootfs
		if err == nil {
			r, err = s.Prepare(ctx, "crashed", imgs[0], &PrepareOptions{DiskQuota: testQuota})
		}
		if err == nil {
			_, err = writeUntilFull(filepath.Join(r.Path, "f"), testQuota/2)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	return 1
}

// TestDiskQuotaTemplates checks that the store keeps one template per
// quota size, and that GC removes them.
func TestDiskQuotaTemplates(t *testing.T) {
	if projectQuotasEnforced(os.TempDir()) {
		t.Skip("the temporary directory's filesystem enforces project quotas")
	}
	s, img := quotaStore(t, "", "overlay")
	for i, size := range []int64{testQuota, testQuota, 2 * testQuota} {
		key := fmt.Sprint("t", i)
		if _, err := s.Prepare(ctx, key, img, &PrepareOptions{DiskQuota: size}); err != nil {
			t.Fatal(err)
		}
		if err := s.Release(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if tmpls, _ := filepath.Glob(s.path("quota", "*")); len(tmpls) != 2 {
		t.Errorf("templates after quotas of 2 sizes: %q", tmpls)
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.path("quota")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("templates after GC: %v", err)
	}
}

// projectQuotasEnforced reports whether the filesystem dir is on enforces
// project quotas. Any failure to tell (an old kernel, a filesystem without
// quotas) means it does not.
func projectQuotasEnforced(dir string) bool {
	project, _ := quotasEnforced(dir)
	return project
}
