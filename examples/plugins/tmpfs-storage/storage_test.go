package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/plugin"
)

// These tests drive the plugin's methods directly, with real mounts, and
// perform its answers themselves as berth would: they check the plugin,
// not the protocol (the conformance kit and the sandbox tests do that
// through the built binary).

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
}

// newTestStorage makes a plugin with a root of its own and, at the end of
// the test, checks that nothing it made is left: no mount under the root
// and no entry in it.
func newTestStorage(t testing.TB, size string) *storage {
	t.Helper()
	requireRoot(t)
	root := filepath.Join(t.TempDir(), "root")
	cfg, err := parseConfig(root, size, "", false)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newStorage(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m := mountsUnder(t, root); len(m) > 0 {
			t.Errorf("mounts left under the root: %v", m)
			for _, p := range m {
				unix.Unmount(p, unix.MNT_DETACH)
			}
		}
		if entries, _ := os.ReadDir(root); len(entries) > 0 {
			t.Errorf("entries left in the root: %v", entries)
		}
	})
	return s
}

// mountsUnder lists the mount points at or below dir.
func mountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			found = append(found, fields[4])
		}
	}
	return found
}

// makeLayers makes two layer directories in overlay form: the bottom one
// has etc/hello and etc/gone, the top one whites etc/gone out and has
// bin/tool. It returns them bottom first, as berth sends them.
func makeLayers(t testing.TB) []plugin.Layer {
	t.Helper()
	base := t.TempDir()
	bottom, top := filepath.Join(base, "bottom"), filepath.Join(base, "top")
	for _, d := range []string{bottom + "/etc", top + "/etc", top + "/bin"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(bottom+"/etc/hello", "from the bottom layer\n")
	write(bottom+"/etc/gone", "hidden by the top layer\n")
	write(top+"/bin/tool", "#!/bin/sh\n")
	if err := unix.Mknod(top+"/etc/gone", unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	return []plugin.Layer{
		{DiffID: "sha256:bottom", UnpackedPath: bottom},
		{DiffID: "sha256:top", UnpackedPath: top},
	}
}

// mountAnswer performs the plugin's answer on a new directory as berth
// would, and returns the directory; the mount goes at the end of the test
// unless the test unmounts it first.
func mountAnswer(t testing.TB, res *plugin.PrepareResult) string {
	t.Helper()
	if len(res.Mounts) != 1 || res.Mounts[0].Type != "overlay" || res.Mounts[0].Target != "" {
		t.Fatalf("answer %+v: want one overlay on the rootfs", res)
	}
	target := t.TempDir()
	data := strings.Join(res.Mounts[0].Options, ",")
	if err := unix.Mount("overlay", target, "overlay", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		t.Fatalf("mount overlay %s: %v", data, err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	return target
}

func prepare(t testing.TB, s *storage, key string, req plugin.PrepareRequest) *plugin.PrepareResult {
	t.Helper()
	req.Key = key
	res, err := s.Prepare(context.Background(), &req)
	if err != nil {
		t.Fatalf("prepare %s: %v", key, err)
	}
	return res
}

func release(t testing.TB, s *storage, key string) {
	t.Helper()
	if err := s.Release(context.Background(), key); err != nil {
		t.Fatalf("release %s: %v", key, err)
	}
}

// fill writes to a new file at path until a write fails, and returns that
// failure and how much was written.
func fill(path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for n < 64<<20 {
		m, err := f.Write(buf)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, errors.New("wrote 64 MiB without an error")
}

// The rootfs shows the layers (with the top's whiteout hiding the bottom's
// file), writes go to the tmpfs and stop with ENOSPC at its size, and
// Release takes the tmpfs and its directory away.
func TestPrepareShowsLayersAndStopsAtSize(t *testing.T) {
	s := newTestStorage(t, "4m")
	res := prepare(t, s, "full", plugin.PrepareRequest{Layers: makeLayers(t)})
	if res.Driver != "tmpfs" || res.Mounts[0].IDMap {
		t.Errorf("answer %+v: want driver tmpfs, no idmap without a user namespace", res)
	}
	rootfs := mountAnswer(t, res)

	if b, err := os.ReadFile(rootfs + "/etc/hello"); err != nil || string(b) != "from the bottom layer\n" {
		t.Errorf("etc/hello: %q, %v", b, err)
	}
	if _, err := os.Lstat(rootfs + "/etc/gone"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("etc/gone, whited out by the top layer: %v", err)
	}
	n, err := fill(rootfs + "/big")
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the rootfs: %v after %d bytes, want ENOSPC", err, n)
	}
	if n > 4<<20 {
		t.Errorf("wrote %d bytes to a 4 MiB rootfs", n)
	}
	// What was written is on the tmpfs, in the upper directory.
	upper := filepath.Join(s.cfg.root, "full", upperDir)
	var fs unix.Statfs_t
	if err := unix.Statfs(upper, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type != unix.TMPFS_MAGIC {
		t.Errorf("upper directory is on a filesystem of type %#x, not tmpfs", fs.Type)
	}
	if st, err := os.Stat(upper + "/big"); err != nil || st.Size() != n {
		t.Errorf("upper/big: %v, %v; want %d bytes", st, err, n)
	}
	if !s.noSwapless.Load() && !strings.Contains(mountOptions(t, filepath.Join(s.cfg.root, "full")), "noswap") {
		t.Errorf("tmpfs mounted without noswap: %s", mountOptions(t, filepath.Join(s.cfg.root, "full")))
	}

	if err := unix.Unmount(rootfs, 0); err != nil {
		t.Fatal(err)
	}
	release(t, s, "full")
	if _, err := os.Lstat(filepath.Join(s.cfg.root, "full")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rootfs directory after release: %v", err)
	}
}

// mountOptions returns the mount and superblock options of the mount on
// dir.
func mountOptions(t testing.TB, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 10 && f[4] == dir {
			return f[5] + " " + f[len(f)-1]
		}
	}
	t.Fatalf("nothing mounted on %s", dir)
	return ""
}

// A disk quota in the request sizes the tmpfs (it beats the default), and
// an inode limit caps the files made in it.
func TestQuotaAndInodes(t *testing.T) {
	s := newTestStorage(t, "64m")
	res := prepare(t, s, "q", plugin.PrepareRequest{Layers: makeLayers(t), DiskQuota: 2 << 20, DiskInodes: 100})
	dir := filepath.Join(s.cfg.root, "q")
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if got := int64(fs.Blocks) * fs.Bsize; got != 2<<20 {
		t.Errorf("tmpfs size %d, want the quota's %d", got, 2<<20)
	}
	if fs.Files != 100 {
		t.Errorf("tmpfs inodes %d, want 100", fs.Files)
	}
	rootfs := mountAnswer(t, res)
	var err error
	made := 0
	for ; made < 1000; made++ {
		if err = os.WriteFile(fmt.Sprintf("%s/f%d", rootfs, made), nil, 0o644); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) || made >= 100 {
		t.Errorf("made %d files, then %v; want ENOSPC before 100", made, err)
	}
	unix.Unmount(rootfs, 0)
	release(t, s, "q")
}

// The host's settings in the options size a rootfs when the request has
// no quota; a bad one is refused as invalid.
func TestSizeOption(t *testing.T) {
	s := newTestStorage(t, "64m")
	prepare(t, s, "opt", plugin.PrepareRequest{Options: map[string]string{"size": "3m", "inodes": "500"}})
	var fs unix.Statfs_t
	if err := unix.Statfs(filepath.Join(s.cfg.root, "opt"), &fs); err != nil {
		t.Fatal(err)
	}
	if got := int64(fs.Blocks) * fs.Bsize; got != 3<<20 || fs.Files != 500 {
		t.Errorf("tmpfs size %d and inodes %d, want %d and 500", got, fs.Files, 3<<20)
	}
	release(t, s, "opt")

	for _, opts := range []map[string]string{{"size": "lots"}, {"size": "1k"}, {"size": "-5m"}, {"inodes": "2"}, {"size": "99999999999g"}} {
		_, err := s.Prepare(context.Background(), &plugin.PrepareRequest{Key: "bad", Options: opts})
		if !errors.Is(err, plugin.ErrInvalid) {
			t.Errorf("options %v: %v, want ErrInvalid", opts, err)
		}
	}
	for _, q := range []int64{-1, 1000} {
		_, err := s.Prepare(context.Background(), &plugin.PrepareRequest{Key: "bad", DiskQuota: q})
		if !errors.Is(err, plugin.ErrInvalid) {
			t.Errorf("quota %d: %v, want ErrInvalid", q, err)
		}
	}
}

// Keys that could name anything but one entry of the root are refused,
// and the errors keep their meaning: a key in use is ErrExists, an
// unknown one ErrNotFound, also on a second Release.
func TestKeysAndErrors(t *testing.T) {
	s := newTestStorage(t, "4m")
	ctx := context.Background()
	for _, key := range []string{"", ".", "..", "../x", "a/b", ".hidden", "-flag", "x y", strings.Repeat("k", 129), "a\x00b"} {
		if _, err := s.Prepare(ctx, &plugin.PrepareRequest{Key: key}); !errors.Is(err, plugin.ErrInvalid) {
			t.Errorf("prepare %q: %v, want ErrInvalid", key, err)
		}
		if err := s.Release(ctx, key); !errors.Is(err, plugin.ErrInvalid) {
			t.Errorf("release %q: %v, want ErrInvalid", key, err)
		}
	}
	prepare(t, s, "k1", plugin.PrepareRequest{})
	if _, err := s.Prepare(ctx, &plugin.PrepareRequest{Key: "k1"}); !errors.Is(err, plugin.ErrExists) {
		t.Errorf("second prepare: %v, want ErrExists", err)
	}
	if err := s.Release(ctx, "nope"); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("release of an unknown key: %v, want ErrNotFound", err)
	}
	release(t, s, "k1")
	if err := s.Release(ctx, "k1"); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("second release: %v, want ErrNotFound", err)
	}
	bad := []plugin.Layer{{DiffID: "sha256:x", UnpackedPath: "relative/dir"}}
	if _, err := s.Prepare(ctx, &plugin.PrepareRequest{Key: "k2", Layers: bad}); !errors.Is(err, plugin.ErrInvalid) {
		t.Errorf("prepare with a relative layer path: %v, want ErrInvalid", err)
	}
	bad[0].UnpackedPath = "/no/such/layer"
	if _, err := s.Prepare(ctx, &plugin.PrepareRequest{Key: "k2", Layers: bad}); !errors.Is(err, plugin.ErrInvalid) {
		t.Errorf("prepare with a missing layer: %v, want ErrInvalid", err)
	}
}

// A Prepare whose context ends while it works undoes what it did.
func TestCancelMidPrepare(t *testing.T) {
	s := newTestStorage(t, "4m")
	ctx, cancel := context.WithCancel(context.Background())
	s.afterMount = cancel
	_, err := s.Prepare(ctx, &plugin.PrepareRequest{Key: "c", Layers: makeLayers(t)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("prepare: %v, want context.Canceled", err)
	}
	// newTestStorage's cleanup checks that no mount or directory is left;
	// check now too, so that the failure points here.
	if m := mountsUnder(t, s.cfg.root); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if keys, _ := s.List(context.Background()); len(keys) > 0 {
		t.Errorf("keys left: %v", keys)
	}
}

// A plugin started again (berth restarts it after a crash) finds every
// rootfs from its root alone, including one a crash left half made
// (mounted but without its record, or not even mounted), and releases
// them.
func TestRestartFindsRootfses(t *testing.T) {
	s := newTestStorage(t, "4m")
	prepare(t, s, "done", plugin.PrepareRequest{Layers: makeLayers(t)})
	// What a kill -9 leaves after Prepare's mkdir, and after its mount.
	for _, k := range []string{"halfmounted", "notmounted"} {
		if err := os.Mkdir(filepath.Join(s.cfg.root, k), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.mountTmpfs(filepath.Join(s.cfg.root, "halfmounted"), limits{size: 1 << 20, inodes: 100}); err != nil {
		t.Fatal(err)
	}

	again, err := newStorage(s.cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := again.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keys) != "[done halfmounted notmounted]" {
		t.Errorf("list after a restart: %v", keys)
	}
	for _, k := range keys {
		release(t, again, k)
	}
}

// Prepares run at once: for different keys all succeed, for one key
// exactly one does and the others get ErrExists.
func TestConcurrentPrepares(t *testing.T) {
	s := newTestStorage(t, "2m")
	layers := makeLayers(t)
	const n = 12
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.Prepare(context.Background(), &plugin.PrepareRequest{Key: fmt.Sprintf("k%d", i), Layers: layers})
		})
		wg.Go(func() {
			_, errs[n+i] = s.Prepare(context.Background(), &plugin.PrepareRequest{Key: "same", Layers: layers})
		})
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case i < n && err != nil:
			t.Errorf("prepare k%d: %v", i, err)
		case i >= n && err == nil:
			won++
		case i >= n && !errors.Is(err, plugin.ErrExists):
			t.Errorf("prepare of a key in use: %v, want ErrExists", err)
		}
	}
	if won != 1 {
		t.Errorf("%d prepares of one key succeeded, want 1", won)
	}
	keys, _ := s.List(context.Background())
	if len(keys) != n+1 {
		t.Errorf("list: %v, want %d keys", keys, n+1)
	}
	for _, k := range keys {
		wg.Go(func() { release(t, s, k) })
	}
	wg.Wait()
}

// For a user namespace the answer asks berth to idmap the overlay, and the
// rootfs's root is owned by the host id the image root's owner maps to.
func TestUserNamespaceOwner(t *testing.T) {
	s := newTestStorage(t, "4m")
	maps := []layerfs.IDMap{{ContainerID: 0, HostID: 200000, Size: 65536}}
	res := prepare(t, s, "u", plugin.PrepareRequest{Layers: makeLayers(t), UIDMap: maps, GIDMap: maps})
	if !res.Mounts[0].IDMap {
		t.Errorf("answer %+v: want idmap for a user namespace", res.Mounts[0])
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(s.cfg.root, "u", upperDir), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 200000 || st.Gid != 200000 || st.Mode&0o7777 != 0o755 {
		t.Errorf("rootfs root owned by %d:%d mode %#o, want 200000:200000 0755", st.Uid, st.Gid, st.Mode&0o7777)
	}
	release(t, s, "u")
}

// A root that others could change, or a link, is refused.
func TestUnsafeRoot(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o777)
	link := filepath.Join(base, "link")
	if err := os.Symlink(t.TempDir(), link); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{open, link} {
		cfg, err := parseConfig(root, "4m", "", false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := newStorage(cfg, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("newStorage accepted root %s", root)
		}
	}
	for _, root := range []string{"relative", "/", "/a/../b", "/a:b"} {
		if _, err := parseConfig(root, "4m", "", false); err == nil {
			t.Errorf("parseConfig accepted root %q", root)
		}
	}
}

// A layer whose root overlayfs marked opaque hides the layers below it,
// which overlayfs itself would not do for a lower layer's root.
func TestOpaqueLayerRoot(t *testing.T) {
	s := newTestStorage(t, "4m")
	layers := makeLayers(t)
	if err := unix.Setxattr(layers[1].UnpackedPath, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	rootfs := mountAnswer(t, prepare(t, s, "o", plugin.PrepareRequest{Layers: layers}))
	if _, err := os.Lstat(rootfs + "/etc/hello"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("etc/hello of the layer below an opaque root: %v", err)
	}
	if _, err := os.Lstat(rootfs + "/bin/tool"); err != nil {
		t.Errorf("bin/tool of the opaque layer: %v", err)
	}
	unix.Unmount(rootfs, 0)
	release(t, s, "o")
}

// Only a listed device or file counts as swap being on.
func TestListsSwap(t *testing.T) {
	const heading = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
	if listsSwap(heading) {
		t.Error("the heading alone counts as swap")
	}
	if !listsSwap(heading + "/swapfile                               file\t\t1048572\t\t0\t\t-2\n") {
		t.Error("a swap file does not count")
	}
}

// A Release while the rootfs is still in use (berth could not unmount the
// overlay, a host process holds a file in the tmpfs) detaches the busy
// tmpfs rather than failing: the root is clean at once, and the memory
// goes when the last user does.
func TestReleaseWhileInUse(t *testing.T) {
	s := newTestStorage(t, "4m")
	rootfs := mountAnswer(t, prepare(t, s, "busy", plugin.PrepareRequest{Layers: makeLayers(t)}))
	if err := os.WriteFile(rootfs+"/still", []byte("here"), 0o644); err != nil {
		t.Fatal(err)
	}
	held, err := os.Open(filepath.Join(s.cfg.root, "busy", upperDir))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	release(t, s, "busy")
	if m := mountsUnder(t, s.cfg.root); len(m) > 0 {
		t.Errorf("mounts left under the root: %v", m)
	}
	if b, err := os.ReadFile(rootfs + "/still"); err != nil || string(b) != "here" {
		t.Errorf("the overlay still mounted lost its file: %q, %v", b, err)
	}
	if err := unix.Unmount(rootfs, 0); err != nil {
		t.Fatal(err)
	}
}

// A plugin started only to describe itself makes nothing: the root is
// made, private, by the first Prepare.
func TestRootMadeByFirstPrepare(t *testing.T) {
	s := newTestStorage(t, "4m")
	if _, err := os.Lstat(s.cfg.root); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("root after start: %v, want none", err)
	}
	if keys, err := s.List(context.Background()); err != nil || len(keys) != 0 {
		t.Errorf("list without a root: %v, %v", keys, err)
	}
	prepare(t, s, "first", plugin.PrepareRequest{})
	if st, err := os.Lstat(s.cfg.root); err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Errorf("root after a prepare: %v, %v; want a 0700 directory", st, err)
	}
	release(t, s, "first")
}
