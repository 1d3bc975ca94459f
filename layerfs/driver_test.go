package layerfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount and to create whiteouts")
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testDrivers returns each driver by a test name, to run the same checks
// on all of them.
func testDrivers(t *testing.T) map[string]driver {
	return map[string]driver{
		"overlay":        &overlayDriver{log: testLogger(t)},
		"overlay-legacy": &overlayDriver{log: testLogger(t), legacy: true},
		"copy":           &copyDriver{log: testLogger(t)},
	}
}

// privateDir makes a rootfs directory and makes sure that nothing stays
// mounted under it, however the test ends.
func privateDir(t *testing.T, d driver) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rootfs-dir")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Unmount(context.Background(), dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		detachAll(t, dir)
	})
	return dir
}

// detachAll lazily unmounts whatever is still mounted under dir, so that a
// failing test does not leave mounts behind.
func detachAll(t *testing.T, dir string) {
	mounts, err := mountsUnder(dir)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for _, m := range mounts {
		t.Errorf("cleanup: %s is still mounted; detaching it", m)
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Errorf("cleanup: unmount %s: %v", m, err)
		}
	}
}

func assertNotMounted(t *testing.T, dir string) {
	t.Helper()
	mounts, err := mountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) > 0 {
		t.Errorf("still mounted under %s: %q", dir, mounts)
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("rootfs dir after Unmount: %v", err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) > 0 {
		t.Errorf("Unmount left %q in %s", names, dir)
	}
}

// A layerBuilder writes a layer directory in overlay format.
type layerBuilder struct {
	t    *testing.T
	root string
}

func newLayer(t *testing.T, root string) *layerBuilder {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return &layerBuilder{t, root}
}

func (l *layerBuilder) path(name string) string { return filepath.Join(l.root, name) }

func (l *layerBuilder) dir(name string, mode os.FileMode) *layerBuilder {
	l.t.Helper()
	if err := os.Mkdir(l.path(name), mode); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Chmod(l.path(name), mode); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l *layerBuilder) file(name, body string) *layerBuilder {
	l.t.Helper()
	if err := os.WriteFile(l.path(name), []byte(body), 0o644); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l *layerBuilder) whiteout(name string) *layerBuilder {
	l.t.Helper()
	if err := mkWhiteout(l.path(name)); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l *layerBuilder) opaque(name string) *layerBuilder {
	l.t.Helper()
	if err := setOpaque(l.path(name)); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l *layerBuilder) do(err error) *layerBuilder {
	l.t.Helper()
	if err != nil {
		l.t.Fatal(err)
	}
	return l
}

// testLayers builds three layers and returns them topmost first.
func testLayers(t *testing.T) []string {
	t.Helper()
	base := t.TempDir()

	bottom := newLayer(t, filepath.Join(base, "bottom")).
		dir("etc", 0o755).file("etc/passwd", "root:x:0:0:bottom").
		file("gone.txt", "bye").
		dir("opq", 0o755).file("opq/a", "a").dir("opq/sub", 0o755).file("opq/sub/b", "b").
		dir("keep", 0o755).file("keep/k1", "k1").
		dir("bin", 0o755).file("bin/su", "suid").
		file("h1", "hard").
		dir("dirfile", 0o755).file("dirfile/child", "c")
	su := bottom.path("bin/su")
	bottom.do(os.Chown(su, 1000, 1000)).
		do(unix.Chmod(su, 0o4755)).
		do(unix.Lsetxattr(su, "user.test", []byte("hello"), 0)).
		do(os.Chtimes(su, testTime, testTime)).
		do(os.Link(bottom.path("h1"), bottom.path("h2"))).
		do(os.Symlink("etc/passwd", bottom.path("link"))).
		do(unix.Mkfifo(bottom.path("fifo"), 0o600))

	middle := newLayer(t, filepath.Join(base, "middle")).
		dir("etc", 0o755).file("etc/passwd", "root:x:0:0:middle").
		dir("keep", 0o755).file("keep/k2", "k2").
		dir("opq", 0o755).file("opq/c", "c")

	top := newLayer(t, filepath.Join(base, "top")).
		whiteout("gone.txt").
		dir("opq", 0o755).opaque("opq").file("opq/new", "new").
		file("new.txt", "top").
		file("dirfile", "now a file")
	top.do(os.Chmod(top.root, 0o750))

	return []string{top.root, middle.root, bottom.root}
}

// snapshot describes every entry of a tree, to tell whether it changed.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := make(map[string]string)
	err := filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d rdev=%d mtime=%d.%d", st.Mode, st.Uid, st.Gid, st.Rdev, st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			desc += " body=" + string(b)
		case unix.S_IFLNK:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			desc += " target=" + target
		}
		var names [1024]byte
		n, err := unix.Llistxattr(path, names[:])
		if err != nil {
			return err
		}
		for name := range strings.SplitSeq(string(names[:n]), "\x00") {
			if name != "" {
				val, err := getXattr(path, name)
				if err != nil {
					return err
				}
				desc += fmt.Sprintf(" %s=%q", name, val)
			}
		}
		m[path] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Error(err)
	}
	return string(b)
}

func TestDriverMergedView(t *testing.T) {
	requireRoot(t)
	for name, d := range testDrivers(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			lowers := testLayers(t)
			before := make([]map[string]string, len(lowers))
			for i, l := range lowers {
				before[i] = snapshot(t, l)
			}
			dir := privateDir(t, d)

			rootfs, err := d.Mount(ctx, lowers, dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(rootfs, dir+"/") {
				t.Errorf("rootfs %s is not under %s", rootfs, dir)
			}
			at := func(name string) string { return filepath.Join(rootfs, name) }

			for name, want := range map[string]string{
				"etc/passwd": "root:x:0:0:middle",
				"opq/new":    "new",
				"keep/k1":    "k1",
				"keep/k2":    "k2",
				"new.txt":    "top",
				"dirfile":    "now a file",
				"h1":         "hard",
				"link":       "root:x:0:0:middle",
			} {
				if got := readFile(t, at(name)); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			for _, name := range []string{"gone.txt", "opq/a", "opq/sub", "opq/c", "dirfile/child"} {
				if _, err := os.Lstat(at(name)); !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTDIR) {
					t.Errorf("%s: got err %v, want it hidden", name, err)
				}
			}

			var st, st2 unix.Stat_t
			if err := unix.Stat(rootfs, &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode&0o7777 != 0o750 {
				t.Errorf("rootfs mode %o, want the top layer's 750", st.Mode&0o7777)
			}
			if err := unix.Lstat(at("bin/su"), &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode&0o7777 != 0o4755 || st.Uid != 1000 || st.Gid != 1000 || st.Mtim.Sec != testTime.Unix() {
				t.Errorf("bin/su: mode %o uid %d gid %d mtime %d, want 4755 1000 1000 %d", st.Mode&0o7777, st.Uid, st.Gid, st.Mtim.Sec, testTime.Unix())
			}
			if v, err := getXattr(at("bin/su"), "user.test"); err != nil || string(v) != "hello" {
				t.Errorf("bin/su xattr user.test = %q, %v; want hello", v, err)
			}
			if err := unix.Lstat(at("h1"), &st); err != nil {
				t.Fatal(err)
			}
			if err := unix.Lstat(at("h2"), &st2); err != nil {
				t.Fatal(err)
			}
			if st.Ino != st2.Ino || st.Nlink != 2 {
				t.Errorf("h1 and h2: inodes %d, %d with %d links; want one inode with 2", st.Ino, st2.Ino, st.Nlink)
			}
			if target, err := os.Readlink(at("link")); err != nil || target != "etc/passwd" {
				t.Errorf("link -> %q, %v; want etc/passwd", target, err)
			}
			if fi, err := os.Lstat(at("fifo")); err != nil || fi.Mode().Type() != fs.ModeNamedPipe {
				t.Errorf("fifo: %v, %v; want a named pipe", fi, err)
			}
			if names, err := listXattrs(at("opq")); err != nil || len(names) > 0 {
				t.Errorf("opq xattrs %q, %v; want none", names, err)
			}
			err = filepath.WalkDir(rootfs, func(path string, e fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				var st unix.Stat_t
				if err := unix.Lstat(path, &st); err != nil {
					return err
				}
				if isWhiteout(&st) {
					t.Errorf("whiteout %s is visible", path)
				}
				if _, err := unix.Lgetxattr(path, overlayOpaqueXattr, nil); err == nil {
					t.Errorf("%s shows %s", path, overlayOpaqueXattr)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}

			// Writes land in the private tree and leave the layers alone.
			if err := os.WriteFile(at("written"), []byte("w"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(at("etc/passwd"), []byte("changed"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(at("keep/k1")); err != nil {
				t.Fatal(err)
			}
			private := map[string]string{"overlay": "upper", "copy": "rootfs"}[d.Name()]
			if got := readFile(t, filepath.Join(dir, private, "written")); got != "w" {
				t.Errorf("written in the private tree = %q, want w", got)
			}
			for i, l := range lowers {
				if after := snapshot(t, l); !mapsEqual(before[i], after) {
					t.Errorf("layer %s changed:\nbefore %v\nafter  %v", l, before[i], after)
				}
			}

			if err := d.Unmount(ctx, dir); err != nil {
				t.Fatal(err)
			}
			assertNotMounted(t, dir)
			assertEmptyDir(t, dir)
			if err := d.Unmount(ctx, dir); err != nil {
				t.Errorf("second Unmount: %v", err)
			}
			assertEmptyDir(t, dir)
			for i, l := range lowers {
				if after := snapshot(t, l); !mapsEqual(before[i], after) {
					t.Errorf("layer %s changed by Unmount", l)
				}
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || v != w {
			return false
		}
	}
	return true
}

func TestDriverChanges(t *testing.T) {
	requireRoot(t)
	for name, d := range testDrivers(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			lowers := testLayers(t)
			dir := privateDir(t, d)
			rootfs, err := d.Mount(ctx, lowers, dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(rootfs, "written"), []byte("w"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(rootfs, "keep/k1")); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := d.Changes(ctx, lowers, dir, nil, &buf); err != nil {
				t.Fatal(err)
			}
			var names []string
			tr := tar.NewReader(&buf)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/"))
			}
			for _, want := range []string{"written", "keep/.wh.k1"} {
				if !slices.Contains(names, want) {
					t.Errorf("changes %q lack %s", names, want)
				}
			}
			if slices.Contains(names, "keep/k2") || slices.Contains(names, "etc/passwd") {
				t.Errorf("changes %q hold unchanged files", names)
			}
		})
	}
}

func TestDriverUnmountAfterFailedMount(t *testing.T) {
	requireRoot(t)
	for name, d := range testDrivers(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			lowers := testLayers(t)
			// The bottom layer exists, so the copy driver fails half-way.
			lowers[1] = filepath.Join(t.TempDir(), "missing")
			dir := privateDir(t, d)
			if _, err := d.Mount(ctx, lowers, dir, nil); err == nil {
				t.Fatal("Mount with a missing layer succeeded")
			} else {
				t.Logf("Mount: %v", err)
			}
			assertNotMounted(t, dir)
			for range 2 {
				if err := d.Unmount(ctx, dir); err != nil {
					t.Fatal(err)
				}
				assertNotMounted(t, dir)
				assertEmptyDir(t, dir)
			}
		})
	}
}

func TestDriverCopyCanceled(t *testing.T) {
	requireRoot(t)
	d := &copyDriver{log: testLogger(t)}
	dir := privateDir(t, d)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := d.Mount(ctx, testLayers(t), dir, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Mount with a canceled context: %v, want %v", err, context.Canceled)
	}
	if err := d.Unmount(ctx, dir); err != nil {
		t.Fatal(err)
	}
	assertEmptyDir(t, dir)
}

// manyLayers makes n layers, each with its own file and a file "order"
// that all share, and returns them topmost first. The layer directories have
// names as long as the store's, so that their paths together exceed what
// mount(2) accepts.
func manyLayers(t *testing.T, n int) []string {
	t.Helper()
	base := t.TempDir()
	lowers := make([]string, n)
	for i := range lowers {
		l := filepath.Join(base, fmt.Sprintf("sha256-%064d", i))
		newLayer(t, l).file(fmt.Sprintf("f%03d", i), fmt.Sprint(i)).file("order", fmt.Sprint(i))
		lowers[i] = l
	}
	return lowers
}

func TestDriverOverlayManyLayers(t *testing.T) {
	requireRoot(t)
	lowers := manyLayers(t, 200)
	if n := len(strings.Join(lowers, ":")); n <= os.Getpagesize() {
		t.Fatalf("layer paths take %d bytes, too few to test the mount(2) limit", n)
	}
	for _, legacy := range []bool{false, true} {
		name := map[bool]string{false: "lowerdir+", true: "legacy"}[legacy]
		t.Run(name, func(t *testing.T) {
			d := &overlayDriver{log: testLogger(t), legacy: legacy}
			dir := privateDir(t, d)
			wd, err := os.Getwd()
			if err != nil {
				t.Fatal(err)
			}

			start := time.Now()
			merged, err := d.Mount(t.Context(), lowers, dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("mounted %d layers in %v", len(lowers), time.Since(start))

			_, err = os.Lstat(filepath.Join(dir, "l", "199"))
			if legacy && err != nil {
				t.Errorf("legacy mount made no short links: %v", err)
			}
			if !legacy && (err == nil || d.noAppend.Load()) {
				t.Errorf("mount used the legacy path, though Linux %s has lowerdir+", kernelRelease())
			}
			if now, err := os.Getwd(); err != nil || now != wd {
				t.Errorf("working directory is %q (%v), was %q", now, err, wd)
			}

			entries, err := os.ReadDir(merged)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != len(lowers)+1 {
				t.Errorf("merged view has %d entries, want %d", len(entries), len(lowers)+1)
			}
			for i := range lowers {
				name := fmt.Sprintf("f%03d", i)
				if got := readFile(t, filepath.Join(merged, name)); got != fmt.Sprint(i) {
					t.Errorf("%s = %q, want %d", name, got, i)
				}
			}
			if got := readFile(t, filepath.Join(merged, "order")); got != "0" {
				t.Errorf("order = %q, want 0 from the topmost layer", got)
			}

			start = time.Now()
			if err := d.Unmount(t.Context(), dir); err != nil {
				t.Fatal(err)
			}
			t.Logf("unmounted in %v", time.Since(start))
			assertNotMounted(t, dir)
			assertEmptyDir(t, dir)
		})
	}
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func TestDriverOverlayTooManyLayers(t *testing.T) {
	requireRoot(t)
	lowers := manyLayers(t, 600)
	for _, legacy := range []bool{false, true} {
		d := &overlayDriver{log: testLogger(t), legacy: legacy}
		dir := privateDir(t, d)
		_, err := d.Mount(t.Context(), lowers, dir, nil)
		if err == nil || !strings.Contains(err.Error(), "600 layers") || !strings.Contains(err.Error(), "500") {
			t.Errorf("Mount of 600 layers (legacy %v): %v, want an error naming 600 layers and the limit of 500", legacy, err)
		}
		assertNotMounted(t, dir)
		if err := d.Unmount(t.Context(), dir); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDriverNew(t *testing.T) {
	requireRoot(t)
	log := testLogger(t)
	for _, name := range []string{"overlay", "copy"} {
		d, err := newDriver(name, t.TempDir(), "", log)
		if err != nil || d.Name() != name {
			t.Errorf("newDriver(%q) = %v, %v", name, d, err)
		}
	}
	if d, err := newDriver("bogus", t.TempDir(), "", log); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf(`newDriver("bogus") = %v, %v; want an error naming it`, d, err)
	}

	if d, err := newDriver("", filepath.Join(t.TempDir(), "missing"), "", log); err == nil {
		t.Errorf(`newDriver("") with a missing scratch directory = %s, want an error`, d.Name())
	}

	tmp := t.TempDir()
	start := time.Now()
	d, err := newDriver("", tmp, "", log)
	t.Logf("probe took %v", time.Since(start))
	if err != nil {
		t.Fatal(err)
	}
	if d.Name() != "overlay" {
		t.Errorf(`newDriver("") on %s = %s, want overlay`, kernelRelease(), d.Name())
	}
	assertNotMounted(t, tmp)
	assertEmptyDir(t, tmp)
}

// A store remembers that overlayfs passed the probe, for this boot and
// filesystem, and the next process to open it skips the probe.
func TestDriverProbeRemembered(t *testing.T) {
	requireRoot(t)
	tmp := t.TempDir()
	cache := filepath.Join(t.TempDir(), "overlay-probe")
	probe := func() string {
		t.Helper()
		var logs bytes.Buffer
		d, err := newDriver("", tmp, cache, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		if err != nil || d.Name() != "overlay" {
			t.Fatalf(`newDriver("") = %v, %v; want overlay`, d, err)
		}
		assertEmptyDir(t, tmp)
		return logs.String()
	}
	if logs := probe(); !strings.Contains(logs, "probe succeeded") {
		t.Fatalf("first use did not probe: %s", logs)
	}
	key, err := probeKey(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(cache); err != nil || string(b) != key {
		t.Fatalf("remembered %q (%v), want %q", b, err, key)
	}
	if logs := probe(); strings.Contains(logs, "probe succeeded") || !strings.Contains(logs, "probe remembered") {
		t.Errorf("second use probed again: %s", logs)
	}
	// Another boot's (or filesystem's) success counts for nothing.
	if err := os.WriteFile(cache, []byte("overlay boot=00000000-0000-0000-0000-000000000000 dev=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if logs := probe(); !strings.Contains(logs, "probe succeeded") {
		t.Errorf("a stale record was trusted: %s", logs)
	}
	if b, _ := os.ReadFile(cache); string(b) != key {
		t.Errorf("after probing again, remembered %q, want %q", b, key)
	}
}

// TestDriverNewOnOverlay puts the store on overlayfs, which overlayfs cannot
// use as an upper layer.
func TestDriverNewOnOverlay(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	merged := filepath.Join(base, "merged")
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"))
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay for the store: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("cleanup: unmount %s: %v", merged, err)
			detachAll(t, base)
		}
	})
	tmp := filepath.Join(merged, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	start := time.Now()
	cache := filepath.Join(base, "overlay-probe")
	d, err := newDriver("", tmp, cache, slog.New(slog.NewTextHandler(&logs, nil)))
	t.Logf("probe took %v; logged: %s", time.Since(start), logs.String())
	if err != nil {
		t.Fatal(err)
	}
	if d.Name() != "copy" {
		t.Errorf(`newDriver("") on overlayfs = %s, want copy`, d.Name())
	}
	if !strings.Contains(logs.String(), "copy driver") {
		t.Errorf("newDriver did not log why it chose the copy driver")
	}
	if _, err := os.Stat(cache); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed probe was remembered: %v", err)
	}
	assertEmptyDir(t, tmp)

	// Forcing overlay there fails at Mount, with the kernel's reason.
	d, err = newDriver("overlay", tmp, "", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { detachAll(t, dir) })
	if _, err := d.Mount(t.Context(), testLayers(t), dir, nil); err == nil {
		t.Error("overlay Mount with its upper on overlayfs succeeded")
	} else {
		t.Logf("Mount: %v", err)
	}
	if err := d.Unmount(t.Context(), dir); err != nil {
		t.Fatal(err)
	}
	assertNotMounted(t, dir)
	assertEmptyDir(t, dir)
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestDriverNoFDLeak(t *testing.T) {
	requireRoot(t)
	lowers := testLayers(t)
	missing := slices.Clone(lowers)
	missing[1] = filepath.Join(t.TempDir(), "missing")
	for _, d := range []*overlayDriver{{log: testLogger(t)}, {log: testLogger(t), legacy: true}} {
		before := openFDs(t)
		defer func() {
			if t.Failed() {
				entries, _ := os.ReadDir("/proc/self/fd")
				for _, e := range entries {
					target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
					t.Logf("fd %s -> %s", e.Name(), target)
				}
			}
		}()
		for _, tc := range []struct {
			lowers  []string
			wantErr bool
		}{{lowers, false}, {missing, true}} {
			dir := privateDir(t, d)
			if _, err := d.Mount(t.Context(), tc.lowers, dir, nil); (err != nil) != tc.wantErr {
				t.Errorf("Mount(%q): %v", tc.lowers, err)
			}
			if err := d.Unmount(t.Context(), dir); err != nil {
				t.Fatal(err)
			}
		}
		if after := openFDs(t); after != before {
			t.Errorf("legacy %v: %d open files before mounting, %d after", d.legacy, before, after)
		}
	}
}

func TestDriverNoLayers(t *testing.T) {
	requireRoot(t)
	for name, d := range testDrivers(t) {
		t.Run(name, func(t *testing.T) {
			dir := privateDir(t, d)
			rootfs, err := d.Mount(t.Context(), nil, dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if entries, err := os.ReadDir(rootfs); err != nil || len(entries) != 0 {
				t.Errorf("rootfs of no layers holds %v, %v", entries, err)
			}
			if err := os.WriteFile(filepath.Join(rootfs, "f"), nil, 0o644); err != nil {
				t.Error(err)
			}
			if err := d.Unmount(t.Context(), dir); err != nil {
				t.Fatal(err)
			}
			assertEmptyDir(t, dir)
		})
	}
}

// TestDriverOverlayUnmountBusy unmounts a rootfs that a file is open in.
func TestDriverOverlayUnmountBusy(t *testing.T) {
	requireRoot(t)
	var logs bytes.Buffer
	d := &overlayDriver{log: slog.New(slog.NewTextHandler(&logs, nil))}
	lowers := testLayers(t)
	dir := privateDir(t, d)
	merged, err := d.Mount(t.Context(), lowers, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(merged, "new.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := d.Unmount(t.Context(), dir); err != nil {
		t.Fatal(err)
	}
	assertNotMounted(t, dir)
	assertEmptyDir(t, dir)
	if !strings.Contains(logs.String(), "busy") {
		t.Errorf("detaching a busy rootfs was not logged; logs: %s", logs.String())
	}
	// The detached mount still serves the open file.
	if b, err := io.ReadAll(f); err != nil || string(b) != "top" {
		t.Errorf("read from the detached rootfs: %q, %v", b, err)
	}
}

// TestDriverCopyUnmountLeftoverMount checks that removing a copied rootfs
// does not delete what a mount inside it shows.
func TestDriverCopyUnmountLeftoverMount(t *testing.T) {
	requireRoot(t)
	d := &copyDriver{log: testLogger(t)}
	dir := privateDir(t, d)
	rootfs, err := d.Mount(t.Context(), testLayers(t), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	volume := t.TempDir()
	precious := filepath.Join(volume, "precious")
	if err := os.WriteFile(precious, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(rootfs, "etc")
	if err := unix.Mount(volume, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := d.Unmount(t.Context(), dir); err != nil {
		t.Fatal(err)
	}
	assertNotMounted(t, dir)
	assertEmptyDir(t, dir)
	if got := readFile(t, precious); got != "keep me" {
		t.Errorf("file in a mount inside the rootfs = %q after Unmount", got)
	}
}

func TestDriverCopyData(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16+3)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, c := range []*copier{{}, {noClone: true}, {noClone: true, noCopyRange: true}} {
		dst := filepath.Join(dir, fmt.Sprint("dst", i))
		if err := c.copyFile(src, dst, int64(len(data))); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, data) {
			t.Errorf("copier %+v: copied %d bytes, %v; want the %d bytes of %s", c, len(got), err, len(data), src)
		}
	}
}

// TestDriverCopyHoles checks that the copy driver leaves a sparse file's
// holes holes, whichever way it copies: an image may hold a file of
// terabytes that is nearly all hole, which written out whole would fill
// the disk.
func TestDriverCopyHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	const size = 1 << 30
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, size / 2, size - 5} {
		if _, err := f.WriteAt([]byte("data!"), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	for i, c := range []*copier{{noClone: true}, {noClone: true, noCopyRange: true}} {
		dst := filepath.Join(dir, fmt.Sprint("dst", i))
		if err := c.copyFile(src, dst, size); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(dst, &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != size || st.Blocks*512 > 1<<20 {
			t.Errorf("copier %+v: copy of %d bytes, %d allocated, want %d bytes, nearly all hole", c, st.Size, st.Blocks*512, size)
		}
		g, err := os.Open(dst)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []int64{0, size / 2, size - 5} {
			b := make([]byte, 5)
			if _, err := g.ReadAt(b, off); err != nil || string(b) != "data!" {
				t.Errorf("copier %+v: at %d: %q, %v", c, off, b, err)
			}
		}
		g.Close()
	}
}
