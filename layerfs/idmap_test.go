package layerfs

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// The user namespace of these tests maps container ids 0-65535 to host ids
// 100000-165535, as a Strict sandbox's does.
const (
	testHostID = 100000
	testIDs    = 65536
)

var testIDMap = []IDMap{{ContainerID: 0, HostID: testHostID, Size: testIDs}}

// newUserNS starts a process in a new user namespace with testIDMap for
// both uids and gids, and returns the namespace, open until the test ends.
func newUserNS(t testing.TB) *os.File {
	t.Helper()
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: testHostID, Size: testIDs}}
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: m, GidMappings: m}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	t.Cleanup(func() {
		if ns != nil {
			ns.Close()
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func userNSOptions(ns *os.File) *PrepareOptions {
	return &PrepareOptions{UserNS: ns, UIDMap: testIDMap, GIDMap: testIDMap}
}

func owned(e entry, uid, gid int) entry {
	e.hdr.Uid, e.hdr.Gid = uid, gid
	return e
}

// capV2 is a version 2 file capability granting CAP_NET_RAW, effective.
func capV2() []byte {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b, 0x02000001)
	binary.LittleEndian.PutUint32(b[4:], 1<<unix.CAP_NET_RAW)
	return b
}

// capV3 is capV2 for the user namespace whose root is host id root.
func capV3(root uint32) []byte {
	b := append(capV2(), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b, 0x03000001)
	binary.LittleEndian.PutUint32(b[20:], root)
	return b
}

// aclFor is a POSIX access ACL that also lets user and group id read and
// write.
func aclFor(id uint32) []byte {
	const none = 0xffffffff
	entries := []struct {
		tag, perm uint16
		id        uint32
	}{{0x01, 6, none}, {0x02, 6, id}, {0x04, 4, none}, {0x08, 6, id}, {0x10, 6, none}, {0x20, 4, none}}
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// idmapImage is multiLayerImage, owned by 0:0, with a layer on top that
// holds files of user 1000, of an id the namespace does not map, and with
// ids in extended attributes.
func idmapImage(t testing.TB) [][]byte {
	return append(multiLayerImage(t), buildTar(t,
		dirEntry("home/", 0o755),
		owned(dirEntry("home/user/", 0o750), 1000, 1000),
		owned(fileEntry("home/user/notes", "notes", 0o640), 1000, 1000),
		owned(fileEntry("stranger", "s", 0o644), 70000, 70000),
		withXattr(fileEntry("ping", "elf", 0o755), xattrCapability, string(capV2())),
		withXattr(fileEntry("shared", "acl", 0o664), xattrACLAccess, string(aclFor(1000))),
	))
}

// idmapStore returns a store using driver, which may also be
// "overlay-legacy", with idmapImage imported as idmap:1.
func idmapStore(t testing.TB, driver string, log *slog.Logger) (*Store, *Image) {
	t.Helper()
	opts := &Options{Driver: driver, Logger: log}
	if driver == "overlay-legacy" {
		opts.Driver = "overlay"
	}
	s := newStore(t, opts)
	if t, ok := t.(*testing.T); ok {
		t.Cleanup(func() { detachAll(t, s.Root()) })
	}
	if driver == "overlay-legacy" {
		s.driverOnce.Do(func() { s.driver = &overlayDriver{log: s.log, legacy: true, volatile: true} })
	}
	dir := t.TempDir()
	writeLayout(t, dir, "idmap:1", true, idmapImage(t)...)
	img, err := s.Import(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, img
}

// shiftedTree is what tree, a rootfs for the host's ids, looks like mapped
// by testIDMap with driver.
func shiftedTree(tree map[string]treeEntry, driver string) map[string]treeEntry {
	shift := func(id uint32) uint32 {
		switch {
		case id < testIDs:
			return testHostID + id
		case driver == "copy":
			return testHostID + overflowID
		}
		// Through an idmapped mount, the kernel's overflow id.
		return overflowID
	}
	out := make(map[string]treeEntry, len(tree))
	for k, e := range tree {
		e.UID, e.GID = shift(e.UID), shift(e.GID)
		out[k] = e
	}
	return out
}

// runAs runs a shell script as host uid and gid id, with dir open as fd 3:
// the script reaches it as /proc/self/fd/3 whatever the permissions of the
// directories above it, as a sandbox reaches its root.
func runAs(t *testing.T, id uint32, dir, script string) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("/bin/sh", "-c", "set -e; R=/proc/self/fd/3; "+script)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: id, Gid: id}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as uid %d: %s: %v\n%s", id, script, err, out)
	}
}

// runInUserNS runs a shell script as root of a new user namespace with
// testIDMap and returns its output.
func runInUserNS(t *testing.T, script string) string {
	t.Helper()
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: testHostID, Size: testIDs}}
	cmd := exec.Command("/bin/sh", "-c", "set -e; "+script)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER, UidMappings: m, GidMappings: m,
		Credential: &syscall.Credential{Uid: 0, Gid: 0},
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in a user namespace: %s: %v\n%s", script, err, out)
	}
	return string(out)
}

// canReach reports whether host uid and gid id can list the directory
// dir.
func canReach(id uint32, dir string) bool {
	cmd := exec.Command("/bin/ls", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: id, Gid: id}}
	return cmd.Run() == nil
}

func statOwner(t *testing.T, path string) (uid, gid uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid
}

// diffHeaders returns the headers of the entries of the rootfs key's Diff,
// by name.
func diffHeaders(t *testing.T, s *Store, key string) map[string]*tar.Header {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Diff(ctx, key, &buf); err != nil {
		t.Fatal(err)
	}
	out := map[string]*tar.Header{}
	tr := tar.NewReader(&buf)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = hdr
	}
}

func assertReleased(t *testing.T, s *Store, key string) {
	t.Helper()
	if m := mountedUnder(t, s.Root()); len(m) > 0 {
		t.Errorf("still mounted after releasing %s: %q", key, m)
	}
	if _, err := os.Lstat(s.rootfsDir(key)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rootfs directory after release: %v", err)
	}
}

// TestPrepareUserNS prepares a rootfs for a user namespace with each
// driver, changes it as the namespace's root would, and checks what the
// host sees, what Diff and Commit make of it and that Release undoes it.
func TestPrepareUserNS(t *testing.T) {
	ns := newUserNS(t)
	for _, driver := range []string{"overlay", "overlay-legacy", "copy"} {
		t.Run(driver, func(t *testing.T) {
			s, img := idmapStore(t, driver, testLogger(t))
			plain := prepare(t, s, "plain", img)
			r, err := s.Prepare(ctx, "ns", img, userNSOptions(ns))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Release(ctx, "ns")
			if want := strings.TrimSuffix(driver, "-legacy"); r.Driver != want {
				t.Errorf("Driver = %q, want %q", r.Driver, want)
			}

			// Every owner shifted, everything else as without the namespace.
			want := shiftedTree(listTree(t, plain.Path), driver)
			got := listTree(t, r.Path)
			if d := diffTrees(want, got); len(d) > 0 {
				t.Errorf("rootfs differs from the shifted image in %d entries:\n%s", len(d), strings.Join(d, "\n"))
			}
			if e := got["home/user/notes"]; e.UID != testHostID+1000 || e.GID != testHostID+1000 {
				t.Errorf("file of user 1000 owned by %d:%d, want %d:%d", e.UID, e.GID, testHostID+1000, testHostID+1000)
			}
			var st, plainSt unix.Stat_t
			unix.Stat(r.Path, &st)
			unix.Stat(plain.Path, &plainSt)
			if st.Uid != testHostID || st.Gid != testHostID || st.Mode != plainSt.Mode {
				t.Errorf("root owned %d:%d mode %o, want %d:%d mode %o", st.Uid, st.Gid, st.Mode, testHostID, testHostID, plainSt.Mode)
			}
			if h := diffHeaders(t, s, "ns"); len(h) > 0 {
				t.Errorf("Diff of an unchanged rootfs holds %d entries", len(h))
			}
			// The namespace's root reaches the rootfs by its path, to mount
			// it; other host ids do not, where the store lets them search
			// only its top directories.
			for _, d := range []string{filepath.Dir(s.Root()), s.Root(), s.path("rootfs")} {
				if err := os.Chmod(d, 0o711); err != nil {
					t.Fatal(err)
				}
			}
			if !canReach(testHostID, r.Path) {
				t.Errorf("host uid and gid %d cannot reach %s", testHostID, r.Path)
			}
			if canReach(1234, r.Path) {
				t.Errorf("host uid and gid 1234 can reach %s", r.Path)
			}
			// Inside a namespace with the same maps, root owns the image's
			// files and "/", and can write there.
			out := runInUserNS(t, fmt.Sprintf(`cd %s; stat -c %%u:%%g . etc/keep home/user/notes stranger; touch fromns`, r.Path))
			if want := "0:0\n0:0\n1000:1000\n65534:65534\n"; out != want {
				t.Errorf("owners inside the namespace:\n%s\nwant:\n%s", out, want)
			}

			// The namespace's root creates, changes (copies up) and deletes.
			runAs(t, testHostID, r.Path, `echo made > $R/made; mkdir $R/madedir; echo f > $R/madedir/f; echo more >> $R/etc/keep; rm $R/dir/b`)
			// And host root makes a file for the namespace's user 1000.
			byUser := filepath.Join(r.Path, "byuser")
			if err := os.WriteFile(byUser, []byte("u"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Lchown(byUser, testHostID+1000, testHostID+1000); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"fromns", "made", "madedir", "madedir/f", "etc/keep"} {
				if uid, gid := statOwner(t, filepath.Join(r.Path, name)); uid != testHostID || gid != testHostID {
					t.Errorf("%s owned by %d:%d, want %d:%d", name, uid, gid, testHostID, testHostID)
				}
			}
			if r.Driver == "overlay" {
				// The copy-up kept the owner the idmapped layer showed.
				upper := filepath.Join(s.rootfsDir("ns"), "state", "upper")
				if uid, gid := statOwner(t, filepath.Join(upper, "etc", "keep")); uid != testHostID || gid != testHostID {
					t.Errorf("copied-up etc/keep owned by %d:%d in the upper directory", uid, gid)
				}
			}

			// Diff maps the owners back.
			h := diffHeaders(t, s, "ns")
			for name, id := range map[string]int{"fromns": 0, "made": 0, "madedir/": 0, "madedir/f": 0, "etc/keep": 0, "byuser": 1000} {
				switch hdr := h[name]; {
				case hdr == nil:
					t.Errorf("Diff lacks %s", name)
				case hdr.Uid != id || hdr.Gid != id:
					t.Errorf("Diff has %s owned by %d:%d, want %d:%d", name, hdr.Uid, hdr.Gid, id, id)
				}
			}
			if h["dir/.wh.b"] == nil {
				t.Error("Diff lacks the whiteout dir/.wh.b")
			}
			for name, hdr := range h {
				if hdr.Uid >= testIDs || hdr.Gid >= testIDs {
					t.Errorf("Diff has %s owned by host ids %d:%d", name, hdr.Uid, hdr.Gid)
				}
			}

			// A commit holds the image's ids, as a rootfs without the
			// namespace shows.
			img2, err := s.Commit(ctx, "ns", &CommitOptions{Name: "idmap:2"})
			if err != nil {
				t.Fatal(err)
			}
			cr := prepare(t, s, "committed", img2)
			c := listTree(t, cr.Path)
			for name, id := range map[string]uint32{"made": 0, "madedir/f": 0, "etc/keep": 0, "byuser": 1000, "home/user/notes": 1000, "ping": 0} {
				if e, ok := c[name]; !ok || e.UID != id || e.GID != id {
					t.Errorf("committed %s = %v, want owned by %d:%d", name, e, id, id)
				}
			}
			if _, ok := c["dir/b"]; ok {
				t.Error("committed image still has dir/b")
			}
			if keep, _ := os.ReadFile(filepath.Join(cr.Path, "etc", "keep")); string(keep) != "keepmore\n" {
				t.Errorf("committed etc/keep = %q", keep)
			}

			if err := s.Release(ctx, "ns"); err != nil {
				t.Fatal(err)
			}
			if err := s.Release(ctx, "committed"); err != nil {
				t.Fatal(err)
			}
			if err := s.Release(ctx, "plain"); err != nil {
				t.Fatal(err)
			}
			assertReleased(t, s, "ns")
		})
	}
}

// TestPrepareUserNSXattrs checks that a file capability and an ACL come
// through a rootfs for a user namespace as its root would see them, and
// that Diff writes the image's ids back when they change.
func TestPrepareUserNSXattrs(t *testing.T) {
	ns := newUserNS(t)
	for _, driver := range []string{"overlay", "copy"} {
		t.Run(driver, func(t *testing.T) {
			s, img := idmapStore(t, driver, testLogger(t))
			r, err := s.Prepare(ctx, "ns", img, userNSOptions(ns))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Release(ctx, "ns")
			acl, err := getXattr(filepath.Join(r.Path, "shared"), xattrACLAccess)
			if want := aclFor(testHostID + 1000); err != nil || !bytes.Equal(acl, want) {
				t.Errorf("ACL = %x, %v; want %x", acl, err, want)
			}
			// Set anew, as root of the namespace would, they must come out
			// of Diff with the image's ids.
			for name, val := range map[string][]byte{"ping": capV3(testHostID), "shared": aclFor(testHostID + 1001)} {
				attr := xattrCapability
				if name == "shared" {
					attr = xattrACLAccess
				}
				if err := unix.Lsetxattr(filepath.Join(r.Path, name), attr, val, 0); err != nil {
					t.Fatal(err)
				}
			}
			h := diffHeaders(t, s, "ns")
			for name, want := range map[string]string{"ping": string(capV2()), "shared": string(aclFor(1001))} {
				hdr := h[name]
				if hdr == nil {
					t.Errorf("Diff lacks %s", name)
					continue
				}
				attr := xattrCapability
				if name == "shared" {
					attr = xattrACLAccess
				}
				if got := hdr.PAXRecords[paxXattrPrefix+attr]; got != want {
					t.Errorf("Diff has %s %s = %x, want %x", name, attr, got, want)
				}
			}
		})
	}
}

// TestPrepareUserNSFallback makes idmapped mounts fail part-way, as on a
// kernel or filesystem without them, and checks that Prepare copies the
// image with shifted owners instead, once warning about it.
func TestPrepareUserNSFallback(t *testing.T) {
	ns := newUserNS(t)
	calls := 0
	testHookIDMap = func(string) error {
		if calls++; calls > 2 {
			return unix.EINVAL
		}
		return nil
	}
	t.Cleanup(func() { testHookIDMap = nil })

	var logs bytes.Buffer
	s, img := idmapStore(t, "overlay", slog.New(slog.NewTextHandler(&logs, nil)))
	want := shiftedTree(listTree(t, prepare(t, s, "plain", img).Path), "copy")
	if err := s.Release(ctx, "plain"); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"a", "b"} {
		r, err := s.Prepare(ctx, key, img, userNSOptions(ns))
		if err != nil {
			t.Fatal(err)
		}
		if r.Driver != "copy" {
			t.Errorf("Driver = %q, want copy", r.Driver)
		}
		if rec, err := s.readRootfs(key); err != nil || rec.Driver != "copy" {
			t.Errorf("record = %+v, %v; want the copy driver", rec, err)
		}
		if d := diffTrees(want, listTree(t, r.Path)); len(d) > 0 {
			t.Errorf("rootfs differs from the shifted image in %d entries:\n%s", len(d), strings.Join(d, "\n"))
		}
		if m := mountedUnder(t, s.rootfsDir(key)); len(m) > 0 {
			t.Errorf("idmapped layers left mounted: %q", m)
		}
		runAs(t, testHostID, r.Path, `echo made > $R/made`)
		if hdr := diffHeaders(t, s, key)["made"]; hdr == nil || hdr.Uid != 0 || hdr.Gid != 0 {
			t.Errorf("Diff has made as %+v, want it owned by 0:0", hdr)
		}
		if err := s.Release(ctx, key); err != nil {
			t.Fatal(err)
		}
		assertReleased(t, s, key)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), "idmapped") {
		t.Errorf("want one warning about idmapped mounts, got %d:\n%s", n, logs.String())
	}
}

// TestPrepareUserNSError checks that a failure to idmap a layer other than
// for want of support undoes the layers already mounted.
func TestPrepareUserNSError(t *testing.T) {
	ns := newUserNS(t)
	calls := 0
	testHookIDMap = func(string) error {
		if calls++; calls > 2 {
			return unix.EIO
		}
		return nil
	}
	t.Cleanup(func() { testHookIDMap = nil })
	s, img := idmapStore(t, "overlay", testLogger(t))
	if _, err := s.Prepare(ctx, "ns", img, userNSOptions(ns)); !errors.Is(err, unix.EIO) {
		t.Fatalf("Prepare = %v, want EIO", err)
	}
	assertReleased(t, s, "ns")
}

// TestReleaseUserNSAfterCrash kills a process in the middle of Prepare, or
// after it, and releases the rootfs from this one, which knows of it only
// from the store.
func TestReleaseUserNSAfterCrash(t *testing.T) {
	ns := newUserNS(t)
	for _, tc := range []struct {
		driver  string
		crashAt int // layer whose idmapping kills the process; 0 for none, after Prepare
		mounts  int // left mounted by the crash
	}{
		{"overlay", 0, 1 + len(idmapImage(t))},
		{"overlay", 3, 2},
		{"copy", 0, 0},
	} {
		t.Run(fmt.Sprintf("%s-%d", tc.driver, tc.crashAt), func(t *testing.T) {
			s, _ := idmapStore(t, tc.driver, testLogger(t))
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "BERTH_TEST_CRASH_PREPARE="+s.Root(), "BERTH_TEST_DRIVER="+tc.driver,
				"BERTH_TEST_USERNS="+ns.Name(), "BERTH_TEST_CRASH_AT="+strconv.Itoa(tc.crashAt))
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("helper: %v, want it killed\n%s", err, out)
			}
			if m := mountedUnder(t, s.Root()); len(m) != tc.mounts {
				t.Errorf("after the crash, mounted: %q; want %d mounts", m, tc.mounts)
			}
			fresh, err := Open(s.Root(), &Options{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if err := fresh.Release(ctx, "crashed"); err != nil {
				t.Fatal(err)
			}
			assertReleased(t, fresh, "crashed")
		})
	}
}

// helperCrashPrepare prepares the rootfs "crashed" for the user namespace
// $BERTH_TEST_USERNS and kills its own process when it idmaps the
// $BERTH_TEST_CRASH_AT'th layer, or else when Prepare returns.
func helperCrashPrepare() int {
	s, err := Open(os.Getenv("BERTH_TEST_CRASH_PREPARE"), &Options{Driver: os.Getenv("BERTH_TEST_DRIVER")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	img, err := s.Image(ctx, "idmap:1")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ns, err := os.Open(os.Getenv("BERTH_TEST_USERNS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	crashAt, _ := strconv.Atoi(os.Getenv("BERTH_TEST_CRASH_AT"))
	calls := 0
	testHookIDMap = func(string) error {
		if calls++; calls == crashAt {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		return nil
	}
	if _, err := s.Prepare(ctx, "crashed", img, userNSOptions(ns)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	return 1
}

// TestPrepareOptionsChecked checks that Prepare refuses options it cannot
// honor, before it makes anything.
func TestPrepareOptionsChecked(t *testing.T) {
	ns := newUserNS(t)
	s, img := idmapStore(t, "overlay", testLogger(t))
	mntNS, err := os.Open("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	defer mntNS.Close()
	file, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for name, opts := range map[string]*PrepareOptions{
		"mount namespace":   {UserNS: mntNS, UIDMap: testIDMap, GIDMap: testIDMap},
		"file":              {UserNS: file, UIDMap: testIDMap, GIDMap: testIDMap},
		"maps without ns":   {UIDMap: testIDMap, GIDMap: testIDMap},
		"no uid map":        {UserNS: ns, GIDMap: testIDMap},
		"empty range":       {UserNS: ns, UIDMap: []IDMap{{0, testHostID, 0}}, GIDMap: testIDMap},
		"past the last id":  {UserNS: ns, UIDMap: []IDMap{{0, 0xffff0000, 0x20000}}, GIDMap: testIDMap},
		"overlapping":       {UserNS: ns, UIDMap: []IDMap{{0, testHostID, 10}, {5, 200000, 10}}, GIDMap: testIDMap},
		"overlapping hosts": {UserNS: ns, UIDMap: testIDMap, GIDMap: []IDMap{{0, testHostID, 10}, {10, testHostID + 9, 10}}},
	} {
		if _, err := s.Prepare(ctx, "bad", img, opts); err == nil {
			t.Errorf("%s: Prepare succeeded", name)
			s.Release(ctx, "bad")
		}
	}
	if keys, err := s.Rootfses(ctx); err != nil || len(keys) > 0 {
		t.Errorf("refused Prepares left %q (%v)", keys, err)
	}
}

// TestDriverUserNSNoLayers checks that the root of an image without
// layers belongs to the namespace's root too.
func TestDriverUserNSNoLayers(t *testing.T) {
	ids, err := userNSOptions(newUserNS(t)).idMapping()
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range testDrivers(t) {
		t.Run(name, func(t *testing.T) {
			dir := privateDir(t, d)
			rootfs, err := d.Mount(t.Context(), nil, dir, ids)
			if err != nil {
				t.Fatal(err)
			}
			if uid, gid := statOwner(t, rootfs); uid != testHostID || gid != testHostID {
				t.Errorf("root owned by %d:%d", uid, gid)
			}
		})
	}
}

func TestIDMapping(t *testing.T) {
	m := &idMapping{
		uids: []IDMap{{0, 100000, 1000}, {1000, 300000, 10}, {overflowID, 200000, 1}},
		gids: []IDMap{{0, 100000, 10}},
	}
	for _, c := range []struct{ id, host uint32 }{
		{0, 100000}, {999, 100999}, {1000, 300000}, {1009, 300009}, {1010, 200000}, {overflowID, 200000}, {1 << 31, 200000},
	} {
		if got := m.hostUID(c.id); got != c.host {
			t.Errorf("hostUID(%d) = %d, want %d", c.id, got, c.host)
		}
	}
	for _, c := range []struct{ host, id uint32 }{
		{100000, 0}, {100999, 999}, {300009, 1009}, {200000, overflowID}, {0, overflowID}, {101000, overflowID},
	} {
		if got := m.containerUID(c.host); got != c.id {
			t.Errorf("containerUID(%d) = %d, want %d", c.host, got, c.id)
		}
	}
	// Neither the id nor the overflow id mapped: the host's overflow id.
	if got := m.hostGID(20); got != overflowID {
		t.Errorf("hostGID(20) = %d, want %d", got, overflowID)
	}

	m.gids = m.uids
	same := func(name string, got, want []byte) {
		t.Helper()
		if !bytes.Equal(got, want) {
			t.Errorf("%s: got %x, want %x", name, got, want)
		}
	}
	same("v2 capability to host", m.hostXattr(xattrCapability, capV2()), capV2())
	same("v3 capability to host", m.hostXattr(xattrCapability, capV3(5)), capV3(100005))
	same("v3 capability of root back", m.containerXattr(xattrCapability, capV3(100000)), capV2())
	same("v3 capability back", m.containerXattr(xattrCapability, capV3(100005)), capV3(5))
	same("ACL to host", m.hostXattr(xattrACLAccess, aclFor(1001)), aclFor(300001))
	same("default ACL back", m.containerXattr(xattrACLDefault, aclFor(300001)), aclFor(1001))
	same("other", m.hostXattr("user.x", []byte{0, 0, 0, 3}), []byte{0, 0, 0, 3})
	same("short capability", m.hostXattr(xattrCapability, []byte{1, 2}), []byte{1, 2})
}

// BenchmarkPrepareReleaseUserNS measures Prepare and Release of the Alpine
// image, alone and under nine more small layers, for the host's ids and for
// a user namespace.
func BenchmarkPrepareReleaseUserNS(b *testing.B) {
	ns := newUserNS(b)
	f, err := os.Open(sharedImage(b, alpineTar))
	if err != nil {
		b.Fatal(err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		b.Fatal(err)
	}
	alpine, err := io.ReadAll(zr)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	layers := [][]byte{alpine}
	for i := 1; i < 10; i++ {
		layers = append(layers, buildTar(b, dirEntry("etc/", 0o755), fileEntry(fmt.Sprintf("etc/layer%d", i), "x", 0o644)))
	}
	for _, driver := range []string{"overlay", "copy"} {
		s := newStore(b, &Options{Driver: driver})
		for _, n := range []int{1, 10} {
			dir := b.TempDir()
			writeLayout(b, dir, "bench:1", false, layers[:n]...)
			img, err := s.Import(ctx, dir, nil)
			if err != nil {
				b.Fatal(err)
			}
			for _, mode := range []string{"host", "userns"} {
				var opts *PrepareOptions
				if mode == "userns" {
					opts = userNSOptions(ns)
				}
				b.Run(fmt.Sprintf("%s/%d-layers/%s", driver, n, mode), func(b *testing.B) {
					samples := make([]time.Duration, 0, b.N)
					for i := 0; b.Loop(); i++ {
						start := time.Now()
						key := fmt.Sprintf("bench-%d", i)
						if _, err := s.Prepare(ctx, key, img, opts); err != nil {
							b.Fatal(err)
						}
						if err := s.Release(ctx, key); err != nil {
							b.Fatal(err)
						}
						samples = append(samples, time.Since(start))
					}
					reportPercentiles(b, samples)
				})
			}
		}
	}
}

// TestReleaseUserNSBusy releases an idmapped overlay that a file is open
// in, which keeps the overlay and so its idmapped layers busy.
func TestReleaseUserNSBusy(t *testing.T) {
	s, img := idmapStore(t, "overlay", testLogger(t))
	r, err := s.Prepare(ctx, "ns", img, userNSOptions(newUserNS(t)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(r.Path, "etc", "keep"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := s.Release(ctx, "ns"); err != nil {
		t.Fatal(err)
	}
	assertReleased(t, s, "ns")
	if b, err := io.ReadAll(f); err != nil || string(b) != "keep" {
		t.Errorf("open file after release: %q, %v", b, err)
	}
}
