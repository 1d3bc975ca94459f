package layerfs

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// mountFS mounts a filesystem of type fstype on a new directory and
// returns it. The mount goes away in a cleanup that runs after those that
// later calls register, such as the releases of rootfses made on it.
func mountFS(t *testing.T, fstype string) string {
	t.Helper()
	base := t.TempDir()
	mnt := filepath.Join(base, "mnt")
	var opts string
	if fstype == "overlay" {
		for _, d := range []string{"lower", "upper", "work"} {
			if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		opts = "lowerdir=" + filepath.Join(base, "lower") + ",upperdir=" + filepath.Join(base, "upper") +
			",workdir=" + filepath.Join(base, "work") + ",index=off,redirect_dir=off,metacopy=off"
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fstype, mnt, fstype, 0, opts); err != nil {
		t.Fatalf("mount %s on %s: %v", fstype, mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("cleanup: unmount %s: %v", mnt, err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
		if m := mountedUnder(t, base); len(m) > 0 {
			t.Errorf("cleanup: still mounted: %q", m)
		}
	})
	return mnt
}

// layerForms counts, over every unpacked layer of s, the whiteouts and
// opaque directories in overlay form and in OCI form.
type layerForms struct {
	deviceWhiteouts, ociWhiteouts int
	xattrOpaque, ociOpaque        int
}

func countLayerForms(t *testing.T, s *Store) layerForms {
	t.Helper()
	var c layerForms
	err := filepath.WalkDir(s.path("layers"), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		switch {
		case isWhiteout(&st):
			c.deviceWhiteouts++
		case e.Type().IsRegular() && strings.HasPrefix(e.Name(), whiteoutPrefix):
			if st.Mode&0o7777 != 0 || st.Size != 0 || st.Uid != 0 || st.Gid != 0 {
				t.Errorf("marker %s: mode %o, size %d, owner %d:%d; want an empty file of mode 0 owned by 0:0", p, st.Mode&0o7777, st.Size, st.Uid, st.Gid)
			}
			if e.Name() == whiteoutOpaque {
				c.ociOpaque++
			} else {
				c.ociWhiteouts++
			}
		case e.IsDir():
			if opaque, err := isOpaque(p); err != nil {
				return err
			} else if opaque {
				c.xattrOpaque++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func names(tree map[string]treeEntry) []string {
	return slices.Sorted(maps.Keys(tree))
}

// checkStoreLifecycle imports the image of multiLayerImage into s, whose
// root is in dir, prepares it, commits changes, prepares the commit, and
// exports it to a second store in dir, checking the trees on the way.
func checkStoreLifecycle(t *testing.T, s *Store, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	layout := t.TempDir()
	writeLayout(t, layout, "multi:1", true, multiLayerImage(t)...)
	img, err := s.Import(ctx, layout, nil)
	must(err)
	r := prepare(t, s, "m", img)
	got := listTree(t, r.Path)
	want := []string{"dir", "dir/b", "etc", "etc/keep", "etc/new", "opaque", "opaque/fresh", "replaced"}
	if !cmp.Equal(names(got), want) {
		t.Errorf("merged view = %v, want %v", names(got), want)
	}
	if got["dir"].Mode != 0o711 || got["replaced"].Target != "etc/keep" || got["etc/new"].Mode != 0o600 {
		t.Errorf("metadata: dir %v replaced %v etc/new %v", got["dir"], got["replaced"], got["etc/new"])
	}

	at := func(name string) string { return filepath.Join(r.Path, name) }
	must(os.Remove(at("etc/keep")))
	must(os.WriteFile(at("etc/new"), []byte("changed"), 0o600))
	must(os.WriteFile(at("etc/added"), []byte("added"), 0o644))
	must(os.RemoveAll(at("opaque")))
	must(os.Mkdir(at("opaque"), 0o755))
	must(os.WriteFile(at("opaque/again"), []byte("again"), 0o644))
	must(os.Remove(at("dir/b")))
	changed := listTree(t, r.Path)

	var diff bytes.Buffer
	must(s.Diff(ctx, "m", &diff))
	wantDiff := []string{
		"dir/", "dir/.wh.b",
		"etc/", "etc/.wh.keep", "etc/added", "etc/new",
		"opaque/", "opaque/.wh.fresh", "opaque/again",
	}
	if got := tarListing(t, diff.Bytes()); !slices.Equal(got, wantDiff) {
		t.Errorf("diff entries %q, want %q", got, wantDiff)
	}

	committed, err := s.Commit(ctx, "m", &CommitOptions{Name: "multi:2"})
	must(err)
	r2 := prepare(t, s, "m2", committed)
	if d := diffTrees(changed, listTree(t, r2.Path)); len(d) > 0 {
		t.Errorf("committed image differs from the rootfs it came from:\n%s", strings.Join(d, "\n"))
	}

	var out bytes.Buffer
	must(s.Export(ctx, "multi:2", &out, FormatOCILayout))
	p := filepath.Join(t.TempDir(), "multi.tar")
	must(os.WriteFile(p, out.Bytes(), 0o644))
	s2, err := Open(filepath.Join(dir, "store2"), nil)
	must(err)
	again, err := s2.Import(ctx, p, nil)
	must(err)
	if again.Digest != committed.Digest {
		t.Errorf("export and import gave %s, want %s", again.Digest, committed.Digest)
	}
	r3 := prepare(t, s2, "m3", again)
	if d := diffTrees(changed, listTree(t, r3.Path)); len(d) > 0 {
		t.Errorf("reimported image differs from the rootfs it came from:\n%s", strings.Join(d, "\n"))
	}

	must(s.Release(ctx, "m"))
	must(s.Release(ctx, "m2"))
	must(s2.Release(ctx, "m3"))
	for _, s := range []*Store{s, s2} {
		if keys, err := s.Rootfses(ctx); err != nil || len(keys) > 0 {
			t.Errorf("rootfses left in %s: %q, %v", s.Root(), keys, err)
		}
	}
}

// TestStoreOnOverlayfs runs a store inside an overlay mount, as berth does
// in a container. overlayfs refuses whiteout devices, its own form of
// whiteout, so the layers must keep whiteouts in OCI form, and the copy
// driver and the differ must read them.
func TestStoreOnOverlayfs(t *testing.T) {
	mnt := mountFS(t, "overlay")
	s, err := Open(filepath.Join(mnt, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := s.Driver(); err != nil || d != "copy" {
		t.Fatalf("driver %q, %v; want copy", d, err)
	}
	checkStoreLifecycle(t, s, mnt)
	forms := countLayerForms(t, s)
	// overlayfs stores opaque attributes set through it escaped since
	// Linux 6.7, and refuses them before, so either form will do.
	if forms.deviceWhiteouts > 0 || forms.ociWhiteouts == 0 || forms.xattrOpaque+forms.ociOpaque == 0 {
		t.Errorf("layers on overlayfs hold %+v, want whiteouts in OCI form only", forms)
	}

	alpine, err := s.Import(ctx, sharedImage(t, alpineTar), &ImportOptions{Name: "alpine:nested"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(sharedImage(t, alpineTar))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	want := tarTree(t, zr)
	r := prepare(t, s, "alpine", alpine)
	if d := diffTrees(want, listTree(t, r.Path)); len(d) > 0 {
		t.Errorf("merged view differs from the tarball in %d entries:\n%s", len(d), strings.Join(d[:min(len(d), 20)], "\n"))
	}
	if err := s.Release(ctx, "alpine"); err != nil {
		t.Error(err)
	}
	if m := mountedUnder(t, s.Root()); len(m) > 0 {
		t.Errorf("mounted in the store: %q", m)
	}
}

// TestStoreOnRamfs runs a store on ramfs, which holds whiteout devices but
// no extended attributes at all, so that opaque directories must be kept in
// OCI form beside overlay whiteouts.
func TestStoreOnRamfs(t *testing.T) {
	mnt := mountFS(t, "ramfs")
	s, err := Open(filepath.Join(mnt, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := s.Driver(); err != nil || d != "copy" {
		t.Fatalf("driver %q, %v; want copy", d, err)
	}
	checkStoreLifecycle(t, s, mnt)
	forms := countLayerForms(t, s)
	if forms.deviceWhiteouts == 0 || forms.ociWhiteouts > 0 || forms.xattrOpaque > 0 || forms.ociOpaque == 0 {
		t.Errorf("layers on ramfs hold %+v, want whiteout devices and opaque markers", forms)
	}
}

// markerLayers are the layers, bottom first, of the tests of OCI-form
// markers. Every whiteout and opaque marker in them matters to the merged
// view, which is markerView.
func markerLayers(t *testing.T) [][]entry {
	return [][]entry{{
		dirEntry("a/", 0o755), fileEntry("a/x", "x", 0o644), fileEntry("a/y", "y", 0o644),
		dirEntry("a/sub/", 0o755), fileEntry("a/sub/z", "z", 0o644),
		fileEntry("b", "b", 0o644),
		dirEntry("c/", 0o755), fileEntry("c/k", "k", 0o644),
		dirEntry("d/", 0o755), fileEntry("d/old", "old", 0o644),
		dirEntry("e/", 0o755), fileEntry("e/m", "m", 0o644),
		fileEntry("f", "f", 0o644),
		dirEntry("g/", 0o755), dirEntry("g/h/", 0o755), fileEntry("g/h/deep", "deep", 0o644),
		dirEntry("q/", 0o755), fileEntry("q/old", "old", 0o644),
		dirEntry("s/", 0o755), fileEntry("s/old", "old", 0o644),
		dirEntry("u/", 0o755), fileEntry("u/old", "old", 0o644),
		// A directory, not a whiteout, made for the entry below it.
		fileEntry(".wh.odd/f", "odd", 0o644),
	}, {
		dirEntry("a/", 0o755), fileEntry("a/.wh.x", "", 0),
		fileEntry(".wh.b", "", 0),
		dirEntry("c/", 0o755), fileEntry("c/.wh..wh..opq", "", 0), fileEntry("c/new", "new", 0o644),
		fileEntry(".wh.d", "", 0), dirEntry("d/", 0o755), fileEntry("d/fresh", "fresh", 0o644),
		fileEntry(".wh.e", "", 0),
		dirEntry("g/", 0o755), fileEntry("g/.wh.h", "", 0),
		// A directory after a whiteout, listed or implied, and before one.
		fileEntry(".wh.q", "", 0), dirEntry("q/", 0o755), fileEntry("q/r", "r", 0o644),
		fileEntry(".wh.s", "", 0), fileEntry("s/t", "t", 0o644),
		dirEntry("u/", 0o755), fileEntry("u/n", "n", 0o644), fileEntry(".wh.u", "", 0),
	}, {
		dirEntry("e/", 0o755), fileEntry("e/again", "again", 0o644),
		dirEntry("g/", 0o755), dirEntry("g/h/", 0o755), fileEntry("g/h/new2", "new2", 0o644),
		dirEntry("a/", 0o755), dirEntry("a/sub/", 0o755), fileEntry("a/sub/z2", "z2", 0o644),
	}}
}

var markerView = []string{
	".wh.odd", ".wh.odd/f",
	"a", "a/sub", "a/sub/z", "a/sub/z2", "a/y",
	"c", "c/new",
	"d", "d/fresh",
	"e", "e/again",
	"f",
	"g", "g/h", "g/h/new2",
	"q", "q/r",
	"s", "s/t",
	"u", "u/n",
}

// writeOCIForm writes the entries of a layer tar to dir as they are, so
// that its whiteouts and opaque markers are in OCI form, with the times of
// everything set to testTime.
func writeOCIForm(t *testing.T, dir string, entries []entry) {
	t.Helper()
	for _, e := range entries {
		p := filepath.Join(dir, e.hdr.Name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(e.hdr.Mode)
		var err error
		if strings.HasSuffix(e.hdr.Name, "/") {
			err = os.Mkdir(p, mode)
			if errors.Is(err, fs.ErrExist) {
				err = nil
			}
		} else {
			err = os.WriteFile(p, []byte(e.body), mode)
		}
		if err == nil {
			err = os.Chmod(p, mode)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	setTimes(t, dir)
}

// setTimes sets the times of everything below dir to testTime, so that
// layers written in different ways compare equal.
func setTimes(t *testing.T, dir string) {
	t.Helper()
	ts := []unix.Timespec{timespec(testTime), timespec(testTime)}
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// unpackLayers unpacks layers (bottom first) in overlay form, or as
// configured by set, and returns their directories topmost first.
func unpackLayers(t *testing.T, layers [][]entry, set func(*unpacker)) []string {
	t.Helper()
	dirs := make([]string, len(layers))
	for i, l := range layers {
		dir := t.TempDir()
		u, err := newUnpacker(dir)
		if err != nil {
			t.Fatal(err)
		}
		if set != nil {
			set(u)
		}
		err = u.unpack(context.Background(), bytes.NewReader(buildTar(t, l...)))
		u.close()
		if err != nil {
			t.Fatal(err)
		}
		setTimes(t, dir)
		dirs[len(dirs)-1-i] = dir
	}
	return dirs
}

// copyMount materializes lowers with the copy driver.
func copyMount(t *testing.T, lowers []string) string {
	t.Helper()
	d := &copyDriver{log: testLogger(t)}
	dir := privateDir(t, d)
	rootfs, err := d.Mount(t.Context(), lowers, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rootfs
}

// TestCopyOCIMarkers checks that the copy driver and writeTreeDiff read
// layers written with OCI-form whiteouts and opaque markers the way they
// read the same layers in overlay form.
func TestCopyOCIMarkers(t *testing.T) {
	layers := markerLayers(t)
	overlayForm := unpackLayers(t, layers, nil)
	ociForm := make([]string, len(layers))
	for i, l := range layers {
		ociForm[len(layers)-1-i] = t.TempDir()
		writeOCIForm(t, ociForm[len(layers)-1-i], l)
	}
	// Markers that no layer tar can hold: they hide nothing, and in
	// particular not the directory they are in or its parent.
	for _, name := range []string{".wh.", ".wh..", ".wh...", "a/.wh..", "a/.wh..."} {
		if err := os.WriteFile(filepath.Join(ociForm[0], name), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	setTimes(t, ociForm[0])

	rootfs := copyMount(t, ociForm)
	if got := names(listTree(t, rootfs)); !slices.Equal(got, markerView) {
		t.Errorf("merged view of OCI-form layers:\n%q\nwant\n%q", got, markerView)
	}
	compareTrees(t, scanMerged(t, overlayForm), scanTree(t, rootfs))
	compareTrees(t, scanTree(t, copyMount(t, overlayForm)), scanTree(t, rootfs))

	diff := func(lowers []string) []byte {
		t.Helper()
		var buf bytes.Buffer
		if err := writeTreeDiff(t.Context(), &buf, lowers, rootfs, nil); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	for form, lowers := range map[string][]string{"overlay": overlayForm, "OCI": ociForm} {
		if got := tarListing(t, diff(lowers)); len(got) > 0 {
			t.Errorf("diff of an unchanged copy against %s-form layers: %q", form, got)
		}
	}

	at := func(name string) string { return filepath.Join(rootfs, name) }
	for _, err := range []error{
		os.Remove(at("a/y")),
		os.Remove(at("e/again")),
		os.WriteFile(at("g/h/new3"), []byte("new3"), 0o644),
		os.RemoveAll(at("d")),
		os.Mkdir(at("d"), 0o755),
		os.WriteFile(at("d/other"), []byte("other"), 0o644),
		os.WriteFile(at("f"), []byte("changed"), 0o644),
		os.WriteFile(at("top"), []byte("top"), 0o644),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	// g/h/deep is hidden by the OCI whiteout g/.wh.h in the middle layer,
	// although the top one has g/h, and d/old by the whiteout beside d.
	want := []string{
		"a/", "a/.wh.y",
		"d/", "d/.wh.fresh", "d/other",
		"e/", "e/.wh.again",
		"f",
		"g/h/", "g/h/new3",
		"top",
	}
	ociDiff := diff(ociForm)
	if got := tarListing(t, ociDiff); !slices.Equal(got, want) {
		t.Errorf("diff against OCI-form layers:\n%q\nwant\n%q", got, want)
	}
	if !bytes.Equal(ociDiff, diff(overlayForm)) {
		t.Errorf("diffs against OCI-form and overlay-form layers differ")
	}

	// The diff, unpacked in OCI form on top, gives the changed tree back.
	top := t.TempDir()
	u, err := newUnpacker(top)
	if err != nil {
		t.Fatal(err)
	}
	u.ociWhiteouts, u.ociOpaque = true, true
	err = u.unpack(t.Context(), bytes.NewReader(ociDiff))
	u.close()
	if err != nil {
		t.Fatal(err)
	}
	if d := diffTrees(listTree(t, rootfs), listTree(t, copyMount(t, append([]string{top}, ociForm...)))); len(d) > 0 {
		t.Errorf("layers with the diff on top differ from the changed tree:\n%s", strings.Join(d, "\n"))
	}
}

// TestUnpackOCIForm unpacks layers as on filesystems that refuse overlay
// whiteouts, opaque attributes or both, and checks that the layers hold
// the markers, and that the copy driver and writeTreeDiff read them.
func TestUnpackOCIForm(t *testing.T) {
	layers := markerLayers(t)
	want := listTree(t, copyMount(t, unpackLayers(t, layers, nil)))
	for _, tc := range []struct {
		name                    string
		whiteouts, opaque       bool
		ociWhiteouts, ociOpaque []string // in the middle layer
	}{
		{"whiteouts", true, false, []string{".wh.b", ".wh.d", ".wh.e", ".wh.q", ".wh.s", ".wh.u", "a/.wh.x", "g/.wh.h"}, nil},
		{"opaque", false, true, nil, []string{"c/.wh..wh..opq", "d/.wh..wh..opq", "q/.wh..wh..opq", "s/.wh..wh..opq", "u/.wh..wh..opq"}},
		{"both", true, true, []string{".wh.b", ".wh.d", ".wh.e", ".wh.q", ".wh.s", ".wh.u", "a/.wh.x", "g/.wh.h"}, []string{"c/.wh..wh..opq"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lowers := unpackLayers(t, layers, func(u *unpacker) {
				u.ociWhiteouts, u.ociOpaque = tc.whiteouts, tc.opaque
			})
			var whiteouts, opaque []string
			err := filepath.WalkDir(lowers[1], func(p string, e fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				rel, _ := filepath.Rel(lowers[1], p)
				var st unix.Stat_t
				if err := unix.Lstat(p, &st); err != nil {
					return err
				}
				switch {
				case isWhiteout(&st):
					if tc.whiteouts {
						t.Errorf("%s: whiteout device", rel)
					}
				case e.Name() == whiteoutOpaque:
					opaque = append(opaque, rel)
				case strings.HasPrefix(e.Name(), whiteoutPrefix):
					whiteouts = append(whiteouts, rel)
				case e.IsDir():
					if o, err := isOpaque(p); err != nil {
						return err
					} else if o && tc.opaque {
						t.Errorf("%s: opaque attribute", rel)
					}
				}
				if strings.HasPrefix(e.Name(), whiteoutPrefix) && (!e.Type().IsRegular() || st.Mode&0o7777 != 0 || st.Size != 0 || st.Uid != 0 || st.Gid != 0) {
					t.Errorf("%s: mode %o, size %d, owner %d:%d; want an empty regular file of mode 0 owned by 0:0", rel, st.Mode, st.Size, st.Uid, st.Gid)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(whiteouts, tc.ociWhiteouts) || !slices.Equal(opaque, tc.ociOpaque) {
				t.Errorf("markers: whiteouts %q, opaque %q; want %q, %q", whiteouts, opaque, tc.ociWhiteouts, tc.ociOpaque)
			}

			rootfs := copyMount(t, lowers)
			if d := diffTrees(want, listTree(t, rootfs)); len(d) > 0 {
				t.Errorf("merged view differs from that of the overlay form:\n%s", strings.Join(d, "\n"))
			}
			var buf bytes.Buffer
			if err := writeTreeDiff(t.Context(), &buf, lowers, rootfs, nil); err != nil {
				t.Fatal(err)
			}
			if got := tarListing(t, buf.Bytes()); len(got) > 0 {
				t.Errorf("diff of an unchanged copy: %q", got)
			}
		})
	}

	t.Run("link to whiteout", func(t *testing.T) {
		for _, oci := range []bool{false, true} {
			u, err := newUnpacker(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			u.ociWhiteouts = oci
			err = u.unpack(t.Context(), bytes.NewReader(buildTar(t, fileEntry(".wh.x", "", 0), hardlinkEntry("y", ".wh.x"))))
			u.close()
			if !errors.Is(err, unix.ENOENT) {
				t.Errorf("hard link to a whiteout, OCI form %v: %v, want ENOENT", oci, err)
			}
		}
	})

	t.Run("name taken", func(t *testing.T) {
		u, err := newUnpacker(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer u.close()
		u.ociWhiteouts = true
		err = u.unpack(t.Context(), bytes.NewReader(buildTar(t, fileEntry(".wh.x/y", "y", 0o644), fileEntry(".wh.x", "", 0))))
		if !errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), ".wh.x") {
			t.Errorf("whiteout whose OCI form is taken by a directory: %v", err)
		}
	})
}
