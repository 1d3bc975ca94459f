package safetree

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openDir opens dir as Writer and Walk take it.
func openDir(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// canary makes a directory outside the destination with one file, and
// returns a check that neither changed.
func canary(t *testing.T) (dir string, untouched func()) {
	t.Helper()
	dir = t.TempDir()
	f := filepath.Join(dir, "passwd")
	if err := os.WriteFile(f, []byte("canary\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, func() {
		t.Helper()
		entries, _ := os.ReadDir(dir)
		if b, err := os.ReadFile(f); err != nil || string(b) != "canary\n" || len(entries) != 1 {
			t.Errorf("the canary outside was touched: %q %v, %d entries", b, err, len(entries))
		}
	}
}

type member struct {
	name, link string
	typ        byte
	body       string
}

func tarOf(t *testing.T, members ...member) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := &tar.Header{Name: m.name, Linkname: m.link, Typeflag: m.typ, Mode: 0o644, Size: int64(len(m.body)), ModTime: time.Unix(1e9, 0)}
		if m.typ != tar.TypeReg {
			h.Size = 0
		}
		if m.typ == tar.TypeChar {
			h.Devmajor, h.Devminor = 1, 3
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(m.body))
		}
	}
	tw.Close()
	return &buf
}

func unpack(t *testing.T, dst string, r *bytes.Buffer) error {
	t.Helper()
	w := NewWriter(openDir(t, dst), WriteOptions{UID: -1, GID: -1})
	return ReadTar(context.Background(), r, func(e *Entry) error { return w.Write(context.Background(), e) })
}

// TestTarLinkThenBelow is the classic: a member makes "a" a link out of
// the destination, and a later member writes "a/passwd". It must not
// land in the directory the link names.
func TestTarLinkThenBelow(t *testing.T) {
	out, untouched := canary(t)
	dst := t.TempDir()
	for _, link := range []string{out, "../../../../../../" + out, "/"} {
		err := unpack(t, dst, tarOf(t,
			member{name: "a", link: link, typ: tar.TypeSymlink},
			member{name: "a/passwd", typ: tar.TypeReg, body: "owned\n"},
		))
		if err == nil {
			t.Errorf("link to %s then a member below it: no error", link)
		}
		os.Remove(filepath.Join(dst, "a"))
	}
	untouched()
}

// TestTarHostileNames unpacks members that climb, hard links out, and a
// device node: each is refused; an absolute name is rebased.
func TestTarHostileNames(t *testing.T) {
	out, untouched := canary(t)
	parent := t.TempDir()
	dst := filepath.Join(parent, "dst")
	os.Mkdir(dst, 0o755)
	rel, _ := filepath.Rel(dst, filepath.Join(out, "passwd"))
	for _, c := range []struct {
		what string
		m    []member
	}{
		{"dot-dot name", []member{{name: "../x", typ: tar.TypeReg, body: "x"}}},
		{"dot-dot deep", []member{{name: "a/../../x", typ: tar.TypeReg, body: "x"}}},
		{"hard link climbing", []member{{name: "h", link: rel, typ: tar.TypeLink}}},
		{"hard link through a link", []member{{name: "l", link: out, typ: tar.TypeSymlink}, {name: "h", link: "l/passwd", typ: tar.TypeLink}}},
		{"device", []member{{name: "mem", typ: tar.TypeChar}}},
	} {
		if err := unpack(t, dst, tarOf(t, c.m...)); err == nil {
			t.Errorf("%s: no error", c.what)
		}
	}
	if _, err := os.Lstat(filepath.Join(parent, "x")); err == nil {
		t.Error("../x was written outside the destination")
	}
	if _, err := os.Lstat(filepath.Join(dst, "h")); err == nil {
		t.Error("a hard link out was made")
	}
	if err := unpack(t, dst, tarOf(t, member{name: "/abs/f", typ: tar.TypeDir}, member{name: "/abs/f/g", typ: tar.TypeReg, body: "in"})); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "abs/f/g")); err != nil || string(b) != "in" {
		t.Errorf("absolute name not rebased: %q %v", b, err)
	}
	untouched()
}

// TestWriteReplacesLink writes a file where a link to a file outside
// stands: the link is replaced, the file it names untouched.
func TestWriteReplacesLink(t *testing.T) {
	out, untouched := canary(t)
	dst := t.TempDir()
	os.Symlink(filepath.Join(out, "passwd"), filepath.Join(dst, "out"))
	if err := unpack(t, dst, tarOf(t, member{name: "out", typ: tar.TypeReg, body: "new"})); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(filepath.Join(dst, "out")); err != nil || !st.Mode().IsRegular() {
		t.Errorf("out: %v %v", st, err)
	}
	untouched()
	// A directory member onto a link is refused, not merged through it.
	os.Remove(filepath.Join(dst, "out"))
	os.Symlink(out, filepath.Join(dst, "out"))
	if err := unpack(t, dst, tarOf(t, member{name: "out", typ: tar.TypeDir}, member{name: "out/passwd", typ: tar.TypeReg, body: "x"})); err == nil {
		t.Error("directory onto a link: no error")
	}
	untouched()
}

// TestWalkSpecialFiles walks a tree with a FIFO: it is reported, never
// opened (which would block), and a Writer refuses it or skips it.
func TestWalkSpecialFiles(t *testing.T) {
	src := t.TempDir()
	if err := unix.Mkfifo(filepath.Join(src, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	var skipped []string
	go func() {
		w := NewWriter(openDir(t, dst), WriteOptions{UID: -1, GID: -1, Special: func(e *Entry) { skipped = append(skipped, e.Name+" "+e.Kind()) }})
		done <- Walk(ctx, openDir(t, filepath.Dir(src)), filepath.Base(src), "tree", func(e *Entry) error { return w.Write(ctx, e) })
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("the walk hung on a FIFO")
	}
	if len(skipped) != 1 || skipped[0] != "tree/pipe a named pipe" {
		t.Errorf("skipped %q", skipped)
	}
	if _, err := os.Lstat(filepath.Join(dst, "tree/pipe")); err == nil {
		t.Error("the FIFO was made")
	}
	w := NewWriter(openDir(t, dst), WriteOptions{UID: -1, GID: -1})
	err := Walk(ctx, openDir(t, src), "pipe", "pipe", func(e *Entry) error { return w.Write(ctx, e) })
	if !errors.Is(err, ErrUnsafeEntry) {
		t.Errorf("a FIFO without Special: %v", err)
	}
}

// TestSparseCopy copies a file of 1 GiB with a few bytes of data: the
// copy keeps the holes.
func TestSparseCopy(t *testing.T) {
	src := t.TempDir()
	f, err := os.Create(filepath.Join(src, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("data"), 512<<20)
	f.Truncate(1 << 30)
	f.Close()
	dst := t.TempDir()
	w := NewWriter(openDir(t, dst), WriteOptions{UID: -1, GID: -1})
	ctx := context.Background()
	if err := Walk(ctx, openDir(t, src), "sparse", "copy", func(e *Entry) error { return w.Write(ctx, e) }); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dst, "copy"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 1<<30 || st.Blocks*512 > 1<<20 {
		t.Errorf("copy: %d bytes, %d allocated", st.Size, st.Blocks*512)
	}
	b := make([]byte, 4)
	g, _ := os.Open(filepath.Join(dst, "copy"))
	defer g.Close()
	if _, err := g.ReadAt(b, 512<<20); err != nil || string(b) != "data" {
		t.Errorf("data: %q %v", b, err)
	}
}

// TestTarRoundTrip archives a tree and unpacks it again.
func TestTarRoundTrip(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "d/e"), 0o750)
	os.WriteFile(filepath.Join(src, "d/e/f"), []byte("hello"), 0o640)
	os.Symlink("../elsewhere", filepath.Join(src, "d/link"))
	os.WriteFile(filepath.Join(src, "d/setuid"), []byte("#!"), 0o4755)
	ctx := context.Background()
	var buf bytes.Buffer
	tw := NewTarWriter(&buf)
	if err := Walk(ctx, openDir(t, src), "d", "d", func(e *Entry) error { return tw.Write(ctx, e) }); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	dst := t.TempDir()
	if err := unpack(t, dst, &buf); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "d/e/f")); err != nil || string(b) != "hello" {
		t.Errorf("d/e/f: %q %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "d/link")); err != nil || l != "../elsewhere" {
		t.Errorf("d/link: %q %v", l, err)
	}
	for name, want := range map[string]os.FileMode{"d/e": os.ModeDir | 0o750, "d/e/f": 0o640, "d/setuid": 0o755} {
		if st, err := os.Lstat(filepath.Join(dst, name)); err != nil || st.Mode() != want {
			t.Errorf("%s: mode %v, want %v (%v)", name, st.Mode(), want, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dst, "d"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".berth-copy-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

// TestHardLinksCopiedOnce walks a file with many names: the copy, and
// its tar, hold its data once and links for the rest, so that links
// cannot multiply what a copy writes.
func TestHardLinksCopiedOnce(t *testing.T) {
	src := t.TempDir()
	data := bytes.Repeat([]byte("x"), 1<<20)
	os.WriteFile(filepath.Join(src, "a"), data, 0o644)
	for i := range 50 {
		if err := os.Link(filepath.Join(src, "a"), filepath.Join(src, fmt.Sprint("l", i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	dst := t.TempDir()
	w := NewWriter(openDir(t, dst), WriteOptions{UID: -1, GID: -1})
	var buf bytes.Buffer
	tw := NewTarWriter(&buf)
	err := Walk(ctx, openDir(t, filepath.Dir(src)), filepath.Base(src), "t", func(e *Entry) error {
		if err := tw.Write(ctx, e); err != nil {
			return err
		}
		return w.Write(ctx, e)
	})
	if err != nil {
		t.Fatal(err)
	}
	tw.Close()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dst, "t/l7"), &st); err != nil || st.Nlink != 51 || st.Size != 1<<20 {
		t.Errorf("t/l7: %d links, %d bytes (%v)", st.Nlink, st.Size, err)
	}
	if buf.Len() > 2<<20 {
		t.Errorf("the tar of one 1 MiB file with 51 names is %d bytes", buf.Len())
	}
	again := t.TempDir()
	if err := unpack(t, again, &buf); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(filepath.Join(again, "t/l7"), &st); err != nil || st.Nlink != 51 || st.Size != 1<<20 {
		t.Errorf("unpacked t/l7: %d links, %d bytes (%v)", st.Nlink, st.Size, err)
	}
}

// TestWalkBoundsLinkNames walks a tree of many files with several links
// each: the names the walk keeps to pass their other names as hard links
// are bounded, and past the bound the walk fails rather than grow.
func TestWalkBoundsLinkNames(t *testing.T) {
	defer func(n int) { maxLinkNames = n }(maxLinkNames)
	maxLinkNames = 1000
	src := t.TempDir()
	long := strings.Repeat("n", 200)
	for i := range 10 {
		p := filepath.Join(src, fmt.Sprintf("%s%d", long, i))
		os.WriteFile(p, nil, 0o644)
		if err := os.Link(p, p+"-link"); err != nil {
			t.Fatal(err)
		}
	}
	err := Walk(context.Background(), openDir(t, src), ".", "", func(*Entry) error { return nil })
	if !errors.Is(err, ErrUnsafeEntry) {
		t.Errorf("walked 4 KB of linked names past a bound of 1000 bytes: %v", err)
	}
}

// TestWalkSkipsKernelFilesystems walks /proc: its directory is an entry,
// its contents, the kernel's state, are not walked.
func TestWalkSkipsKernelFilesystems(t *testing.T) {
	var names []string
	err := Walk(context.Background(), openDir(t, "/"), "proc", "proc", func(e *Entry) error {
		names = append(names, e.Name)
		return nil
	})
	if err != nil || len(names) != 1 {
		t.Errorf("walked %d entries of /proc (%v)", len(names), err)
	}
}

// TestWalkRefusesKernelFiles walks a regular file of procfs, as a
// workload's link to its /proc or a mount of it would have a copy do:
// berth, the host's root, never opens it (reading /proc/kmsg takes the
// host's kernel log, /proc/kcore is the host's memory).
func TestWalkRefusesKernelFiles(t *testing.T) {
	for _, dir := range []string{"/proc/self", "/sys/kernel"} {
		opened := false
		err := Walk(context.Background(), openDir(t, dir), map[string]string{"/proc/self": "status", "/sys/kernel": "uevent_seqnum"}[dir], "f", func(e *Entry) error {
			opened = opened || e.Content != nil
			return nil
		})
		if opened || !errors.Is(err, ErrUnsafeEntry) {
			t.Errorf("walked %s's file: opened %v, %v; want it refused, unopened", dir, opened, err)
		}
	}
}

// TestSparseTar archives a file of 1 GiB with a few bytes of data: the
// stream holds the data, not the holes, and unpacks to a sparse file.
func TestSparseTar(t *testing.T) {
	src := t.TempDir()
	f, _ := os.Create(filepath.Join(src, "sparse"))
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("data"), 512<<20)
	f.Truncate(1 << 30)
	f.Close()
	ctx := context.Background()
	var buf bytes.Buffer
	tw := NewTarWriter(&buf)
	if err := Walk(ctx, openDir(t, src), "sparse", "d/sparse", func(e *Entry) error { return tw.Write(ctx, e) }); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	if buf.Len() > 64<<10 {
		t.Fatalf("the tar of a sparse file is %d bytes", buf.Len())
	}
	dst := t.TempDir()
	if err := unpack(t, dst, &buf); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dst, "d/sparse"), &st); err != nil || st.Size != 1<<30 || st.Blocks*512 > 1<<20 {
		t.Fatalf("unpacked: %d bytes, %d allocated (%v)", st.Size, st.Blocks*512, err)
	}
	g, _ := os.Open(filepath.Join(dst, "d/sparse"))
	defer g.Close()
	b := make([]byte, 4)
	g.ReadAt(b, 512<<20)
	h := make([]byte, 4)
	g.ReadAt(h, 0)
	if string(b) != "data" || string(h) != "head" {
		t.Errorf("data %q, head %q", b, h)
	}
}
