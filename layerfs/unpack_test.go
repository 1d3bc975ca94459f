package layerfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// withHeader returns e with its header changed by f.
func withHeader(e entry, f func(h *tar.Header)) entry {
	f(&e.hdr)
	return e
}

func withXattr(e entry, name, value string) entry {
	return withHeader(e, func(h *tar.Header) {
		if h.PAXRecords == nil {
			h.PAXRecords = make(map[string]string)
		}
		h.PAXRecords[paxXattrPrefix+name] = value
	})
}

// unpackSandbox makes base/layer, the directory to unpack into, beside
// base/outside, which holds a file "secret" and a directory "sub" that an
// escaping entry could hit.
func unpackSandbox(t *testing.T) (layer, outside string) {
	t.Helper()
	base := t.TempDir()
	layer, outside = filepath.Join(base, "layer"), filepath.Join(base, "outside")
	for _, d := range []string{layer, outside, filepath.Join(outside, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	return layer, outside
}

func TestUnpackRefusesUnsafeEntries(t *testing.T) {
	// Paths outside the test's directories that an escape would create.
	const etcProbe, rootProbe = "/etc/berth-unpack-test", "/berth-unpack-escape"

	tests := []struct {
		name    string
		entries func(outside string) []entry
		probes  []string
	}{
		{
			name:    "absolute",
			entries: func(o string) []entry { return []entry{fileEntry(o+"/abs", "x", 0o644)} },
		},
		{
			name:    "dotdot",
			entries: func(o string) []entry { return []entry{fileEntry("../outside/dotdot", "x", 0o644)} },
		},
		{
			name: "inner dotdot",
			entries: func(o string) []entry {
				return []entry{dirEntry("a/", 0o755), fileEntry("a/../../outside/x", "x", 0o644)}
			},
		},
		{
			name:    "dotdot that stays inside",
			entries: func(o string) []entry { return []entry{dirEntry("a/", 0o755), fileEntry("a/../b", "x", 0o644)} },
		},
		{
			name: "write through absolute symlink to /etc",
			entries: func(o string) []entry {
				return []entry{symlinkEntry("evil", "/etc"), fileEntry("evil/berth-unpack-test", "x", 0o644)}
			},
			probes: []string{etcProbe},
		},
		{
			name: "write through absolute symlink",
			entries: func(o string) []entry {
				return []entry{symlinkEntry("evil", o), fileEntry("evil/pwned", "x", 0o644)}
			},
		},
		{
			name: "write through relative symlink to /",
			entries: func(o string) []entry {
				return []entry{symlinkEntry("x", "../../../.."), fileEntry("x/berth-unpack-escape", "x", 0o644)}
			},
			probes: []string{rootProbe},
		},
		{
			name: "write through relative symlink",
			entries: func(o string) []entry {
				return []entry{symlinkEntry("x", "../outside"), fileEntry("x/pwned", "x", 0o644)}
			},
		},
		{
			name: "directory through nested symlink",
			entries: func(o string) []entry {
				return []entry{
					dirEntry("d/", 0o755),
					symlinkEntry("d/up", ".."),
					symlinkEntry("d/l", "up/../outside"),
					dirEntry("d/l/made/", 0o755),
				}
			},
		},
		{
			name: "implicit directory through symlink",
			entries: func(o string) []entry {
				return []entry{symlinkEntry("s", o), fileEntry("s/new/deep", "x", 0o644)}
			},
		},
		{
			name:    "hard link to outside",
			entries: func(o string) []entry { return []entry{hardlinkEntry("leak", "../outside/secret")} },
		},
		{
			name:    "hard link to /etc/passwd",
			entries: func(o string) []entry { return []entry{hardlinkEntry("leak", "/etc/passwd")} },
		},
		{
			name: "hard link through symlink",
			entries: func(o string) []entry {
				return []entry{symlinkEntry("s", o), hardlinkEntry("leak", "s/secret")}
			},
		},
		{
			name: "overlay xattr on file",
			entries: func(o string) []entry {
				return []entry{withXattr(fileEntry("f", "x", 0o644), "trusted.overlay.redirect", "/etc")}
			},
		},
		{
			name: "overlay xattr on directory",
			entries: func(o string) []entry {
				return []entry{withXattr(dirEntry("d/", 0o755), "trusted.overlay.opaque", "y")}
			},
		},
		{
			name: "overlay xattr on root",
			entries: func(o string) []entry {
				return []entry{withXattr(dirEntry("./", 0o755), "trusted.overlay.metacopy", "")}
			},
		},
		{
			name: "whiteout through symlink",
			entries: func(o string) []entry {
				return []entry{symlinkEntry("s", o), fileEntry("s/.wh.secret", "", 0)}
			},
		},
		{
			name: "opaque marker through symlink",
			entries: func(o string) []entry {
				return []entry{symlinkEntry("s", "../outside"), fileEntry("s/.wh..wh..opq", "", 0)}
			},
		},
		{
			name:    "empty whiteout",
			entries: func(o string) []entry { return []entry{fileEntry("a/.wh.", "", 0)} },
		},
		{
			name:    "whiteout of parent",
			entries: func(o string) []entry { return []entry{fileEntry("a/.wh...", "", 0)} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			layer, outside := unpackSandbox(t)
			before := scanTree(t, filepath.Dir(layer))
			entries := tt.entries(outside)
			bad := entries[len(entries)-1].hdr.Name

			err := unpackTar(context.Background(), bytes.NewReader(buildTar(t, entries...)), layer)
			if !errors.Is(err, ErrUnsafeEntry) {
				t.Errorf("unpackTar = %v, want %v", err, ErrUnsafeEntry)
			} else if !strings.Contains(err.Error(), strconv.Quote(bad)) {
				t.Errorf("error %q does not name the entry %q", err, bad)
			}

			// Nothing but the layer itself may have changed.
			after := scanTree(t, filepath.Dir(layer))
			for name, n := range after {
				if name == "layer" || strings.HasPrefix(name, "layer/") {
					continue
				}
				if b, ok := before[name]; !ok || !b.equal(n) {
					t.Errorf("outside the layer, %s changed: %+v, was %+v", name, n, b)
				}
			}
			for name := range before {
				if _, ok := after[name]; !ok {
					t.Errorf("outside the layer, %s was removed", name)
				}
			}
			if opaque, err := isOpaque(outside); err != nil || opaque {
				t.Errorf("outside the layer, %s was made opaque (%v)", outside, err)
			}
			for _, p := range tt.probes {
				if _, err := os.Lstat(p); err == nil {
					os.Remove(p)
					t.Errorf("%s was created", p)
				}
			}
		})
	}
}

func TestUnpackLayer(t *testing.T) {
	layer, outside := unpackSandbox(t)
	if err := os.WriteFile(filepath.Join(outside, "target"), []byte("orig"), 0o644); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2023, 1, 2, 3, 4, 5, 123456789, time.UTC)
	atime := time.Date(2023, 6, 7, 8, 9, 10, 987654321, time.UTC)
	precise := func(e entry) entry {
		return withHeader(e, func(h *tar.Header) {
			h.ModTime, h.AccessTime, h.Format = mtime, atime, tar.FormatPAX
		})
	}
	owned := func(e entry) entry {
		return withHeader(e, func(h *tar.Header) { h.Uid, h.Gid = 1000, 2000 })
	}

	entries := []entry{
		dirEntry("./", 0o751),
		precise(dirEntry("bin/", 0o755)),
		precise(owned(withXattr(withXattr(fileEntry("bin/su", "su binary", 0o4755), "user.test", "hello"), "trusted.test", "t"))),
		fileEntry("bin/sg", "", 0o2755),
		owned(withXattr(dirEntry("tmp/", 0o1777), "user.test", "dir")),
		fileEntry("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644), // etc is implicit
		hardlinkEntry("etc/passwd-", "etc/passwd"),
		owned(symlinkEntry("etc/alt", "../bin/su")),
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "run/fifo", Mode: 0o620, ModTime: testTime}},
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: testTime}},
		{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/loop9", Mode: 0o660, Devmajor: 7, Devminor: 9, ModTime: testTime}},
		fileEntry("usr/.wh.gone", "", 0),
		// A whiteout hides only lower layers' entries, whatever the order.
		fileEntry("usr/old", "old", 0o644),
		fileEntry("usr/.wh.old", "", 0),
		fileEntry("usr/.wh.new", "", 0),
		fileEntry("usr/new", "new", 0o644),
		dirEntry("d1/", 0o755),
		fileEntry("d1/f", "f", 0o644),
		fileEntry(".wh.d1", "", 0),
		fileEntry(".wh.d2", "", 0),
		dirEntry("d2/", 0o710),
		fileEntry("d2/f", "f", 0o644),
		fileEntry(".wh.d3", "", 0),
		fileEntry("d3/f", "f", 0o644),
		dirEntry("var/", 0o755),
		fileEntry("var/.wh..wh..opq", "", 0),
		fileEntry("new/.wh..wh..opq", "", 0), // opaque directory that the tar never lists
		dirEntry(".wh..wh.plnk/", 0o700),
		fileEntry(".wh..wh.plnk/123.456", "aufs", 0o644),
		symlinkEntry("victim", filepath.Join(outside, "target")),
		fileEntry("victim", "data", 0o600),
		dirEntry("x/", 0o755),
		fileEntry("x/child", "c", 0o644),
		fileEntry("x", "now a file", 0o644),
		dirEntry("keep/", 0o700),
		fileEntry("keep/a", "a", 0o644),
		precise(dirEntry("keep/", 0o750)),
		fileEntry("./lib//libc.so", "libc", 0o755),
		dirEntry("usr/lib/", 0o755),
		symlinkEntry("lib64", "usr/lib"),
		fileEntry("lib64/ld.so", "ld", 0o755), // through a symlink that stays inside
		symlinkEntry("usr/lib/up", "../../etc"),
		fileEntry("usr/lib/up/hosts", "hosts", 0o644),
		{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "global", PAXRecords: map[string]string{"comment": "hi"}}},
	}
	if err := unpackTar(context.Background(), bytes.NewReader(buildTar(t, entries...)), layer); err != nil {
		t.Fatal(err)
	}

	lstat := func(name string) *unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(layer, name), &st); err != nil {
			t.Fatal(err)
		}
		return &st
	}
	checkMode := func(name string, want uint32) {
		t.Helper()
		if got := lstat(name).Mode; got != want {
			t.Errorf("%s: mode %o, want %o", name, got, want)
		}
	}
	checkOwner := func(name string, uid, gid uint32) {
		t.Helper()
		if st := lstat(name); st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", name, st.Uid, st.Gid, uid, gid)
		}
	}
	checkTimes := func(name string, atime, mtime time.Time) {
		t.Helper()
		st := lstat(name)
		if got := time.Unix(st.Mtim.Unix()); !got.Equal(mtime) {
			t.Errorf("%s: mtime %v, want %v", name, got, mtime)
		}
		if got := time.Unix(st.Atim.Unix()); !got.Equal(atime) {
			t.Errorf("%s: atime %v, want %v", name, got, atime)
		}
	}
	checkData := func(name, want string) {
		t.Helper()
		if got, err := os.ReadFile(filepath.Join(layer, name)); err != nil || string(got) != want {
			t.Errorf("%s: contents %q, %v; want %q", name, got, err, want)
		}
	}
	checkXattr := func(name, attr, want string) {
		t.Helper()
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(filepath.Join(layer, name), attr, buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("%s: xattr %s = %q, %v; want %q", name, attr, buf[:max(n, 0)], err, want)
		}
	}
	checkAbsent := func(name string) {
		t.Helper()
		if _, err := os.Lstat(filepath.Join(layer, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: exists (%v), want absent", name, err)
		}
	}
	checkWhiteout := func(name string) {
		t.Helper()
		if st := lstat(name); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("%s: mode %o rdev %d, want a 0:0 character device", name, st.Mode, st.Rdev)
		}
	}

	checkMode(".", unix.S_IFDIR|0o751)
	checkMode("bin", unix.S_IFDIR|0o755)
	checkTimes("bin", atime, mtime) // after bin/su and bin/sg were made in it
	checkMode("bin/su", unix.S_IFREG|0o4755)
	checkOwner("bin/su", 1000, 2000)
	checkTimes("bin/su", atime, mtime)
	checkData("bin/su", "su binary")
	checkXattr("bin/su", "user.test", "hello")
	checkXattr("bin/su", "trusted.test", "t")
	checkMode("bin/sg", unix.S_IFREG|0o2755)
	checkTimes("bin/sg", testTime, testTime)
	checkMode("tmp", unix.S_IFDIR|0o1777)
	checkOwner("tmp", 1000, 2000)
	checkXattr("tmp", "user.test", "dir")
	checkMode("etc", unix.S_IFDIR|0o755)
	checkOwner("etc", 0, 0)
	if a, b := lstat("etc/passwd"), lstat("etc/passwd-"); a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("etc/passwd- is not a hard link of etc/passwd: inodes %d, %d, nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	checkTimes("etc/alt", testTime, testTime) // before readlink updates the atime
	checkOwner("etc/alt", 1000, 2000)
	if target, err := os.Readlink(filepath.Join(layer, "etc/alt")); err != nil || target != "../bin/su" {
		t.Errorf("etc/alt -> %q, %v; want ../bin/su", target, err)
	}
	checkMode("run/fifo", unix.S_IFIFO|0o620)
	checkMode("dev/null", unix.S_IFCHR|0o666)
	if st := lstat("dev/null"); unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("dev/null: device %d:%d, want 1:3", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	checkMode("dev/loop9", unix.S_IFBLK|0o660)
	if st := lstat("dev/loop9"); unix.Major(st.Rdev) != 7 || unix.Minor(st.Rdev) != 9 {
		t.Errorf("dev/loop9: device %d:%d, want 7:9", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	checkWhiteout("usr/gone")
	checkData("usr/old", "old")
	checkData("usr/new", "new")
	for _, d := range []string{"d1", "d2", "d3"} {
		checkXattr(d, overlayOpaqueXattr, "y")
		checkData(d+"/f", "f")
	}
	checkMode("d2", unix.S_IFDIR|0o710)
	checkMode("d3", unix.S_IFDIR|0o755)
	checkAbsent("usr/.wh.gone")
	checkXattr("var", overlayOpaqueXattr, "y")
	checkAbsent("var/.wh..wh..opq")
	checkXattr("new", overlayOpaqueXattr, "y")
	checkMode("new", unix.S_IFDIR|0o755)
	checkAbsent(".wh..wh.plnk")
	checkMode("victim", unix.S_IFREG|0o600)
	checkData("victim", "data")
	if got, _ := os.ReadFile(filepath.Join(outside, "target")); string(got) != "orig" {
		t.Errorf("the file replacing a symlink was written through it: target holds %q", got)
	}
	checkData("x", "now a file")
	checkMode("keep", unix.S_IFDIR|0o750)
	checkTimes("keep", atime, mtime)
	checkData("keep/a", "a")
	checkData("lib/libc.so", "libc")
	checkData("usr/lib/ld.so", "ld")
	checkData("etc/hosts", "hosts")
	checkAbsent("global")
}

func TestUnpackCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tarball := buildTar(t, fileEntry("a", "a", 0o644))
	err := unpackTar(ctx, bytes.NewReader(tarball), t.TempDir())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("unpackTar = %v, want %v", err, context.Canceled)
	}
}

func TestUnpackTruncated(t *testing.T) {
	tarball := buildTar(t, fileEntry("a", strings.Repeat("x", 4096), 0o644))
	err := unpackTar(context.Background(), bytes.NewReader(tarball[:1024]), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "read layer tar") {
		t.Fatalf("unpackTar of a truncated tar = %v, want a read error", err)
	}
}

func BenchmarkUnpack(b *testing.B) {
	var entries []entry
	for i := range 50 {
		d := "d" + strconv.Itoa(i) + "/"
		entries = append(entries, dirEntry(d, 0o755))
		for j := range 40 {
			entries = append(entries, fileEntry(d+"f"+strconv.Itoa(j), "contents", 0o644))
		}
	}
	tarball := buildTar(b, entries...)
	b.SetBytes(int64(len(tarball)))
	for b.Loop() {
		dir := b.TempDir()
		if err := unpackTar(context.Background(), bytes.NewReader(tarball), dir); err != nil {
			b.Fatal(err)
		}
	}
}
