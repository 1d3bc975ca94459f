package layerfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nodeInfo is what a layer records about a file system entry.
type nodeInfo struct {
	Mode     uint32 // type and permission bits
	Uid, Gid uint32
	Mtime    time.Time
	Data     string // regular file contents
	Link     string // symlink target
	Rdev     uint64
	Xattrs   map[string]string // without overlayfs' own
	HardLink string            // the least name sharing the inode, if any other does

	id fileID
}

func (n nodeInfo) equal(m nodeInfo) bool {
	return n.Mode == m.Mode && n.Uid == m.Uid && n.Gid == m.Gid && n.Mtime.Equal(m.Mtime) &&
		n.Data == m.Data && n.Link == m.Link && n.Rdev == m.Rdev && n.HardLink == m.HardLink &&
		maps.Equal(n.Xattrs, m.Xattrs)
}

func (n nodeInfo) String() string {
	s := fmt.Sprintf("%o %d:%d %s", n.Mode, n.Uid, n.Gid, n.Mtime.Format(time.RFC3339Nano))
	if n.Data != "" {
		s += fmt.Sprintf(" data=%.20q", n.Data)
	}
	if n.Link != "" {
		s += " -> " + n.Link
	}
	if n.Rdev != 0 {
		s += fmt.Sprintf(" dev=%d:%d", unix.Major(n.Rdev), unix.Minor(n.Rdev))
	}
	if n.HardLink != "" {
		s += " link=" + n.HardLink
	}
	if len(n.Xattrs) > 0 {
		s += fmt.Sprint(" xattrs=", n.Xattrs)
	}
	return s
}

// readNode describes the entry at p, without following a symlink.
func readNode(t testing.TB, p string) nodeInfo {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	n := nodeInfo{
		Mode:  st.Mode,
		Uid:   st.Uid,
		Gid:   st.Gid,
		Mtime: time.Unix(st.Mtim.Unix()),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		n.Data = string(data)
	case unix.S_IFLNK:
		link, err := os.Readlink(p)
		if err != nil {
			t.Fatal(err)
		}
		n.Link = link
	case unix.S_IFCHR, unix.S_IFBLK:
		n.Rdev = st.Rdev
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
		n.id = fileID{st.Dev, st.Ino}
	}
	buf := make([]byte, 64<<10)
	sz, err := unix.Llistxattr(p, buf)
	if err != nil && err != unix.ENOTSUP {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	for _, attr := range strings.Split(string(buf[:max(sz, 0)]), "\x00") {
		if attr == "" || strings.HasPrefix(attr, overlayXattrPrefix) {
			continue
		}
		val := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, attr, val)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, attr, err)
		}
		if n.Xattrs == nil {
			n.Xattrs = make(map[string]string)
		}
		n.Xattrs[attr] = string(val[:m])
	}
	return n
}

// linkNodes fills in HardLink for entries of nodes that share an inode.
func linkNodes(nodes map[string]nodeInfo) {
	groups := make(map[fileID][]string)
	for name, n := range nodes {
		if n.id != (fileID{}) {
			groups[n.id] = append(groups[n.id], name)
		}
	}
	for _, names := range groups {
		if len(names) < 2 {
			continue
		}
		least := slices.Min(names)
		for _, name := range names {
			n := nodes[name]
			n.HardLink = least
			nodes[name] = n
		}
	}
}

// scanTree describes everything below root, by slash-separated name.
func scanTree(t testing.TB, root string) map[string]nodeInfo {
	t.Helper()
	nodes := make(map[string]nodeInfo)
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		nodes[filepath.ToSlash(rel)] = readNode(t, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	linkNodes(nodes)
	return nodes
}

// scanMerged describes the merged view of overlay-format layer directories
// (topmost first) as overlayfs would show it.
func scanMerged(t testing.TB, layers []string) map[string]nodeInfo {
	t.Helper()
	nodes := make(map[string]nodeInfo)
	var walk func(rel string, dirs []string)
	walk = func(rel string, dirs []string) {
		seen := make(map[string]bool)
		for i, dir := range dirs {
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if seen[e.Name()] {
					continue
				}
				seen[e.Name()] = true
				p := filepath.Join(dir, e.Name())
				var st unix.Stat_t
				if err := unix.Lstat(p, &st); err != nil {
					t.Fatal(err)
				}
				if isWhiteout(&st) {
					continue
				}
				name := path.Join(rel, e.Name())
				nodes[name] = readNode(t, p)
				if !e.IsDir() {
					continue
				}
				sub := []string{p}
				for _, lower := range dirs[i+1:] {
					if opaque, _ := isOpaque(sub[len(sub)-1]); opaque {
						break
					}
					lp := filepath.Join(lower, e.Name())
					var lst unix.Stat_t
					if err := unix.Lstat(lp, &lst); errors.Is(err, unix.ENOENT) {
						continue
					} else if err != nil {
						t.Fatal(err)
					}
					if lst.Mode&unix.S_IFMT != unix.S_IFDIR {
						break
					}
					sub = append(sub, lp)
				}
				walk(name, sub)
			}
		}
	}
	walk("", layers)
	linkNodes(nodes)
	return nodes
}

// compareTrees reports the differences between two tree descriptions.
func compareTrees(t testing.TB, want, got map[string]nodeInfo) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("%s: missing, want %v", name, want[name])
		case !g.equal(want[name]):
			t.Errorf("%s:\n\tgot  %v\n\twant %v", name, g, want[name])
		}
	}
	for _, name := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: unexpected %v", name, got[name])
		}
	}
}

// tarListing returns the names of the entries of a tar, with " -> target"
// after hard links, checking along the way the form that the writers
// promise.
func tarListing(t testing.TB, tarball []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(tarball))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(hdr.Name, "/") || strings.HasPrefix(hdr.Name, "./") {
			t.Errorf("%s: not a clean relative name", hdr.Name)
		}
		if (hdr.Typeflag == tar.TypeDir) != strings.HasSuffix(hdr.Name, "/") {
			t.Errorf("%s: a directory's name, and only it, must end in /", hdr.Name)
		}
		if hdr.Uname != "" || hdr.Gname != "" || !hdr.AccessTime.IsZero() || !hdr.ChangeTime.IsZero() {
			t.Errorf("%s: header has varying fields: %+v", hdr.Name, hdr)
		}
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, paxXattrPrefix+overlayXattrPrefix) {
				t.Errorf("%s: carries %s", hdr.Name, k)
			}
		}
		name := hdr.Name
		if strings.HasPrefix(path.Base(name), whiteoutPrefix) && (hdr.Typeflag != tar.TypeReg || hdr.Size != 0 || hdr.Mode != 0) {
			t.Errorf("%s: whiteout is not an empty regular entry of mode 0", name)
		}
		if hdr.Typeflag == tar.TypeLink {
			name += " -> " + hdr.Linkname
		}
		names = append(names, name)
	}
}

// makeTree builds, directly on disk, a tree with one of each kind of entry
// that a layer holds.
func makeTree(t *testing.T, root string) {
	t.Helper()
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	at := func(name string) string { return filepath.Join(root, name) }
	mtime := time.Date(2022, 2, 3, 4, 5, 6, 789, time.UTC)
	touch := func(name string, i int) {
		t.Helper()
		ts := timespec(mtime.Add(time.Duration(i) * time.Second))
		check(unix.UtimesNanoAt(unix.AT_FDCWD, at(name), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
	}

	dirs := []struct {
		name string
		mode uint32
	}{{"bin", 0o755}, {"etc", 0o755}, {"tmp", 0o1777}, {"dev", 0o755}, {"empty", 0o700}, {"srv", 0o2775}, {"srv/deep", 0o755}}
	for _, d := range dirs {
		check(os.Mkdir(at(d.name), 0o700))
		check(os.Chmod(at(d.name), os.FileMode(d.mode&0o777)|unixModeBits(d.mode)))
	}
	check(os.Chown(at("srv"), 1000, 2000))
	check(unix.Lsetxattr(at("srv"), "user.test", []byte("dir"), 0))
	// A stray opaque marker must not reach a tar.
	check(unix.Lsetxattr(at("etc"), overlayOpaqueXattr, []byte("y"), 0))

	check(os.WriteFile(at("bin/su"), []byte("su"), 0o755))
	check(os.Chown(at("bin/su"), 1000, 2000))
	check(os.Chmod(at("bin/su"), 0o755|os.ModeSetuid))
	check(unix.Lsetxattr(at("bin/su"), "user.test", []byte("value"), 0))
	check(unix.Lsetxattr(at("bin/su"), "trusted.test", []byte{0, 1, 2}, 0))
	check(os.Link(at("bin/su"), at("bin/su-link")))
	check(os.Link(at("bin/su"), at("srv/deep/su-too")))
	check(os.WriteFile(at("etc/empty"), nil, 0o600))
	big := bytes.Repeat([]byte("0123456789abcdef"), 40000) // past the copy buffer
	check(os.WriteFile(at("etc/big"), big, 0o644))
	long := strings.Repeat("long-name-", 15)
	check(os.WriteFile(at("srv/deep/"+long), []byte("long"), 0o644))
	check(os.Symlink("../bin/su", at("etc/alt")))
	check(os.Lchown(at("etc/alt"), 1000, 2000))
	check(os.Symlink("/nowhere/absolute", at("etc/dangling")))
	check(unix.Mknod(at("dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	check(unix.Mknod(at("dev/loop9"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 9))))
	check(unix.Mknod(at("dev/fifo"), unix.S_IFIFO|0o640, 0))
	check(unix.Mknod(at("dev/socket"), unix.S_IFSOCK|0o755, 0))

	i := 0
	check(filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			touch(rel, i)
			i++
		}
		return err
	}))
	for j := len(dirs) - 1; j >= 0; j-- {
		touch(dirs[j].name, 100+j)
	}
}

// unixModeBits converts the setuid, setgid and sticky bits of a Unix mode.
func unixModeBits(mode uint32) os.FileMode {
	var m os.FileMode
	if mode&unix.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if mode&unix.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if mode&unix.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}

func TestTreeTarRoundTrip(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	makeTree(t, src)

	var buf bytes.Buffer
	if err := writeTreeTar(context.Background(), &buf, src); err != nil {
		t.Fatal(err)
	}
	names := tarListing(t, buf.Bytes())
	want := []string{
		"bin/", "bin/su", "bin/su-link -> bin/su",
		"dev/", "dev/fifo", "dev/loop9", "dev/null",
		"empty/",
		"etc/", "etc/alt", "etc/big", "etc/dangling", "etc/empty",
		"srv/", "srv/deep/", "srv/deep/" + strings.Repeat("long-name-", 15), "srv/deep/su-too -> bin/su",
		"tmp/",
	}
	if !slices.Equal(names, want) {
		t.Errorf("tar entries:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}

	var again bytes.Buffer
	if err := writeTreeTar(context.Background(), &again, src); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("writeTreeTar is not deterministic")
	}

	if err := unpackTar(context.Background(), &buf, dst); err != nil {
		t.Fatal(err)
	}
	wantTree := scanTree(t, src)
	delete(wantTree, "dev/socket") // tar cannot hold sockets
	compareTrees(t, wantTree, scanTree(t, dst))
}

func TestTreeTarCanceled(t *testing.T) {
	src := t.TempDir()
	makeTree(t, src)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := writeTreeTar(ctx, io.Discard, src); !errors.Is(err, context.Canceled) {
		t.Fatalf("writeTreeTar = %v, want %v", err, context.Canceled)
	}
}

// diffScenarioLower returns the lower layer of the diff tests.
func diffScenarioLower(t *testing.T) []byte {
	return buildTar(t,
		dirEntry("bin/", 0o755),
		fileEntry("bin/tool", "tool", 0o755),
		dirEntry("etc/", 0o755),
		symlinkEntry("etc/alt", "x"),
		fileEntry("etc/conf", "conf", 0o644),
		fileEntry("etc/keep", "keep", 0o644),
		fileEntry("etc/old", "old", 0o644),
		dirEntry("opt/", 0o755),
		dirEntry("opt/app/", 0o755),
		fileEntry("opt/app/lib.so", "lib", 0o755),
		dirEntry("opt/app/sub/", 0o755),
		fileEntry("opt/app/sub/data", "data", 0o644),
		fileEntry("opt/other", "other", 0o644),
		dirEntry("var/", 0o755),
		dirEntry("var/cache/", 0o755),
		fileEntry("var/cache/a", "a", 0o644),
		fileEntry("var/cache/b", "b", 0o644),
		dirEntry("var/cache/deep/", 0o755),
		fileEntry("var/cache/deep/c", "c", 0o644),
		dirEntry("var/log/", 0o755),
		fileEntry("var/log/syslog", "log", 0o644),
	)
}

// changeScenario makes the changes of the diff tests in the tree at root.
func changeScenario(t *testing.T, root string) {
	t.Helper()
	at := func(name string) string { return filepath.Join(root, name) }
	for _, err := range []error{
		os.WriteFile(at("new.txt"), []byte("new"), 0o644),
		os.WriteFile(at("etc/conf"), []byte("changed conf"), 0o644),
		unix.Lsetxattr(at("etc/conf"), "user.test", []byte("v"), 0),
		os.Remove(at("etc/old")),
		os.Remove(at("etc/alt")),
		os.Symlink("y", at("etc/alt")),
		os.RemoveAll(at("var/cache")),
		os.RemoveAll(at("opt/app")),
		os.Mkdir(at("opt/app"), 0o755),
		os.WriteFile(at("opt/app/file"), []byte("file"), 0o644),
		os.Chmod(at("bin/tool"), 0o700),
		os.Link(at("bin/tool"), at("bin/tool2")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// overlayDiffListing is what writeOverlayDiff makes of changeScenario.
var overlayDiffListing = []string{
	"bin/", "bin/tool", "bin/tool2 -> bin/tool",
	"etc/", "etc/.wh.old", "etc/alt", "etc/conf",
	"new.txt",
	"opt/", "opt/app/", "opt/app/.wh..wh..opq", "opt/app/file",
	"var/", "var/.wh.cache",
}

func unpackBytes(t *testing.T, tarball []byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := unpackTar(context.Background(), bytes.NewReader(tarball), dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOverlayDiff(t *testing.T) {
	lower := unpackBytes(t, diffScenarioLower(t))
	base := t.TempDir()
	upper, work, merged := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work + ",redirect_dir=off,metacopy=off,index=off"
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if err := unix.Unmount(merged, 0); err != nil {
				t.Errorf("unmount %s: %v", merged, err)
				unix.Unmount(merged, unix.MNT_DETACH)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)

	changeScenario(t, merged)
	want := scanTree(t, merged)
	unmount()

	var buf bytes.Buffer
	if err := writeOverlayDiff(context.Background(), &buf, upper, nil); err != nil {
		t.Fatal(err)
	}
	if got := tarListing(t, buf.Bytes()); !slices.Equal(got, overlayDiffListing) {
		t.Errorf("diff entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(overlayDiffListing, "\n"))
	}

	// Stacked on the lower layer, the unpacked diff shows what the mount
	// showed.
	diff := unpackBytes(t, buf.Bytes())
	compareTrees(t, want, scanMerged(t, []string{diff, lower}))
}

// TestTreeDiff makes the changes of TestOverlayDiff in a plain copy of the
// lower layer. writeTreeDiff must find the same names as writeOverlayDiff,
// except that it writes a directory that was removed and made again as
// whiteouts of each entry it lost rather than as opaque. Applied on the
// lower layer, the diff must give the changed copy back.
func TestTreeDiff(t *testing.T) {
	lowerTar := diffScenarioLower(t)
	lower := unpackBytes(t, lowerTar)
	rootfs := unpackBytes(t, lowerTar)
	changeScenario(t, rootfs)

	var buf bytes.Buffer
	if err := writeTreeDiff(context.Background(), &buf, []string{lower}, rootfs, nil); err != nil {
		t.Fatal(err)
	}
	got := tarListing(t, buf.Bytes())

	var want []string
	for _, name := range overlayDiffListing {
		switch name {
		case "opt/app/.wh..wh..opq":
		case "opt/app/":
			want = append(want, name, "opt/app/.wh.lib.so", "opt/app/.wh.sub")
		default:
			want = append(want, name)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("diff entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	diff := unpackBytes(t, buf.Bytes())
	compareTrees(t, scanTree(t, rootfs), scanMerged(t, []string{diff, lower}))

	// With no changes, there is nothing to write.
	var empty bytes.Buffer
	if err := writeTreeDiff(context.Background(), &empty, []string{lower}, unpackBytes(t, lowerTar), nil); err != nil {
		t.Fatal(err)
	}
	if got := tarListing(t, empty.Bytes()); len(got) != 0 {
		t.Errorf("diff of an unchanged copy: %q", got)
	}
}

// TestTreeDiffLayers checks the merged view of several lowers: whiteouts
// and opaque directories in upper layers hide what is below them.
func TestTreeDiffLayers(t *testing.T) {
	bottom := unpackBytes(t, buildTar(t,
		dirEntry("a/", 0o755),
		fileEntry("a/hidden-by-opaque", "x", 0o644),
		fileEntry("gone", "x", 0o644),
		fileEntry("kept", "bottom", 0o644),
		dirEntry("d/", 0o755),
		fileEntry("d/under-file", "x", 0o644),
	))
	top := unpackBytes(t, buildTar(t,
		dirEntry("a/", 0o755),
		fileEntry("a/.wh..wh..opq", "", 0),
		fileEntry("a/top", "top", 0o644),
		fileEntry(".wh.gone", "", 0),
		fileEntry("d", "now a file", 0o644),
	))
	layers := []string{top, bottom}

	// The copying driver's rootfs: the merged view, copied.
	rootfs := unpackBytes(t, buildTar(t,
		dirEntry("a/", 0o755),
		fileEntry("a/top", "top", 0o644),
		fileEntry("d", "now a file", 0o644),
		fileEntry("kept", "bottom", 0o644),
	))
	compareTrees(t, scanMerged(t, layers), scanTree(t, rootfs))

	var buf bytes.Buffer
	if err := writeTreeDiff(context.Background(), &buf, layers, rootfs, nil); err != nil {
		t.Fatal(err)
	}
	if got := tarListing(t, buf.Bytes()); len(got) != 0 {
		t.Errorf("diff of an unchanged merged copy: %q", got)
	}

	if err := os.Remove(filepath.Join(rootfs, "a/top")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "kept"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := writeTreeDiff(context.Background(), &buf, layers, rootfs, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{"a/", "a/.wh.top", "kept"}
	if got := tarListing(t, buf.Bytes()); !slices.Equal(got, want) {
		t.Errorf("diff entries %q, want %q", got, want)
	}
}
