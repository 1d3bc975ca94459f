package layerfs

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// zstdBytes compresses b as a layer would be.
func zstdBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// filler returns n bytes of c: zeros become holes, anything else is written.
func filler(n int, c byte) string { return strings.Repeat(string([]byte{c}), n) }

// manyFiles is a layer of n files of size bytes of c each.
func manyFiles(t testing.TB, n, size int, c byte) []byte {
	entries := []entry{dirEntry("d/", 0o755)}
	body := filler(size, c)
	for i := range n {
		entries = append(entries, fileEntry(fmt.Sprintf("d/f%d", i), body, 0o644))
	}
	return buildTar(t, entries...)
}

// tarDir returns a tar of the tree at dir, as an archive tool would write
// an OCI layout it was given.
func tarDir(t testing.TB, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name, _ = filepath.Rel(dir, p)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// storeLeftovers lists what a failed import left in the store: anything in
// its staging area, layers, blobs, images or names.
func storeLeftovers(t testing.TB, s *Store) []string {
	t.Helper()
	var left []string
	for _, d := range []string{"tmp", "layers", "blobs/sha256", "images", "refs"} {
		entries, err := os.ReadDir(s.path(d))
		if err != nil {
			t.Fatalf("list %s: %v", d, err)
		}
		for _, e := range entries {
			left = append(left, d+"/"+e.Name())
		}
	}
	return left
}

func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Decompression bombs: small compressed sources that claim far more than
// the store allows are refused, with an error that names the limit, and
// leave nothing behind.
func TestImportRefusesBombs(t *testing.T) {
	const limit = 16 << 20
	opts := &Options{MaxImportSize: limit, MaxImportEntries: 1000}

	// One file larger than the limit, in zeros: refused at its header.
	oneBig := buildTar(t, fileEntry("big", filler(64<<20, 0), 0o644))
	// Files each under the limit, which add up to more.
	manySmall := manyFiles(t, 40, 1<<20, 'x')
	// A layer that ends well, then carries 64 MiB of zeros past its end.
	trailing := append(buildTar(t, fileEntry("a", "a", 0o644)), make([]byte, 64<<20)...)
	// More empty files than the store takes.
	manyEmpty := manyFiles(t, 5000, 0, 0)
	// A sparse file of a few bytes in the archive that claims a TiB.
	sparse := sparseTar("huge", 1<<40, "data")

	// Headers that carry more than files do: 40 entries with 1 MiB of
	// attributes each.
	var bigHeaders []entry
	for i := range 40 {
		bigHeaders = append(bigHeaders, withHeader(fileEntry(fmt.Sprintf("f%d", i), "", 0o644), func(h *tar.Header) {
			h.PAXRecords = map[string]string{"comment": filler(1<<20-100, 'x')}
		}))
	}
	// A compressed archive of an OCI layout: the import's limit bounds
	// the layers of archives as well. (TestRefusedImportLeavesOnlyGarbage
	// has an image refused at its second layer.)
	layout := t.TempDir()
	writeLayout(t, layout, "bomb:1", true, manySmall)
	// A compressed archive of a small image that also carries a member of
	// 64 MiB of zeros which nothing names: decompressing the archive is
	// work the limit bounds, whatever its members are for.
	padded := t.TempDir()
	writeLayout(t, padded, "padded:1", true, buildTar(t, fileEntry("a", "a", 0o644)))
	if err := os.WriteFile(filepath.Join(padded, "blobs", "sha256", strings.Repeat("0", 64)), make([]byte, 64<<20), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		source  []byte
		file    string
		wantMsg string
	}{
		{"one big file, zstd", zstdBytes(t, oneBig), "layer.tar.zst", "16 MiB"},
		{"one big file, gzip", gzipBytes(t, oneBig), "layer.tar.gz", "16 MiB"},
		{"files adding up, zstd", zstdBytes(t, manySmall), "layer.tar.zst", "16 MiB"},
		{"files adding up, gzip", gzipBytes(t, manySmall), "layer.tar.gz", "16 MiB"},
		{"data past the end of the tar", zstdBytes(t, trailing), "layer.tar.zst", "16 MiB"},
		{"many empty files", zstdBytes(t, manyEmpty), "layer.tar.zst", "1000 files"},
		{"sparse file", zstdBytes(t, sparse), "layer.tar.zst", "16 MiB"},
		{"large headers", zstdBytes(t, buildTar(t, bigHeaders...)), "layer.tar.zst", "16 MiB"},
		{"compressed OCI layout archive", gzipBytes(t, tarDir(t, layout)), "image.tar.gz", "16 MiB"},
		{"compressed archive of zeros", gzipBytes(t, tarDir(t, padded)), "image.tar.gz", "16 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, opts)
			src := writeTemp(t, tt.file, tt.source)
			_, err := s.Import(ctx, src, nil)
			if !errors.Is(err, ErrImportTooLarge) {
				t.Fatalf("import of %d compressed bytes = %v, want %v", len(tt.source), err, ErrImportTooLarge)
			}
			for _, want := range []string{tt.wantMsg, "--max-"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if left := storeLeftovers(t, s); len(left) > 0 {
				t.Errorf("the refused import left %v", left)
			}
		})
	}
}

// The limits are the store's to choose: negative lifts them, and the same
// source that one store refuses another takes.
func TestImportLimitsConfigurable(t *testing.T) {
	src := writeTemp(t, "layer.tar.zst", zstdBytes(t, manyFiles(t, 40, 1<<20, 'x')))
	if _, err := newStore(t, &Options{MaxImportSize: 8 << 20}).Import(ctx, src, nil); !errors.Is(err, ErrImportTooLarge) {
		t.Fatalf("with an 8 MiB limit: %v, want %v", err, ErrImportTooLarge)
	}
	for _, opts := range []*Options{nil, {MaxImportSize: 64 << 20, MaxImportEntries: 41}, {MaxImportSize: -1, MaxImportEntries: -1}} {
		if _, err := newStore(t, opts).Import(ctx, src, nil); err != nil {
			t.Errorf("with options %+v: %v", opts, err)
		}
	}
	if _, err := newStore(t, &Options{MaxImportEntries: 40}).Import(ctx, src, nil); !errors.Is(err, ErrImportTooLarge) {
		t.Errorf("41 entries with a limit of 40: %v, want %v", err, ErrImportTooLarge)
	}
}

// smallFilesystem mounts a tmpfs of the given size and inodes for a store,
// unmounted when the test ends.
func smallFilesystem(t *testing.T, size string, inodes int) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%s,nr_inodes=%d", size, inodes)); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// An import stops short of filling the store's filesystem, bytes or
// inodes, with an error that names the store, and leaves nothing behind.
func TestImportKeepsFreeSpace(t *testing.T) {
	tests := []struct {
		name   string
		size   string
		inodes int
		layer  []byte
	}{
		// 96 MiB of data onto 48 MiB.
		{"bytes", "48m", 100000, manyFiles(t, 96, 1<<20, 'x')},
		// 5000 empty files onto 2000 inodes.
		{"inodes", "256m", 2000, manyFiles(t, 5000, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := filepath.Join(smallFilesystem(t, tt.size, tt.inodes), "store")
			s, err := Open(root, &Options{MaxImportSize: -1, MaxImportEntries: -1})
			if err != nil {
				t.Fatal(err)
			}
			src := writeTemp(t, "layer.tar.zst", zstdBytes(t, tt.layer))
			_, err = s.Import(ctx, src, nil)
			if !errors.Is(err, ErrNoSpace) {
				t.Fatalf("import = %v, want %v", err, ErrNoSpace)
			}
			if !strings.Contains(err.Error(), root) {
				t.Errorf("error %q does not name the store %s", err, root)
			}
			if left := storeLeftovers(t, s); len(left) > 0 {
				t.Errorf("the refused import left %v", left)
			}
			var st unix.Statfs_t
			if err := unix.Statfs(root, &st); err != nil {
				t.Fatal(err)
			}
			if st.Bavail == 0 || st.Ffree == 0 {
				t.Errorf("the store's filesystem filled up: %d blocks, %d inodes free", st.Bavail, st.Ffree)
			}
		})
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1 << 10: "1 KiB", 16 << 20: "16 MiB", 64 << 30: "64 GiB",
		1536: "1.5 KiB", 1<<63 - 1: "8.0 EiB",
	} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// A commit copies what a sandbox already wrote, within its own quota: the
// import limits do not apply to it, but the store's reserve of free space
// does, and a commit refused for it leaves nothing behind.
func TestCommitLimits(t *testing.T) {
	tiny := t.TempDir()
	writeLayout(t, tiny, "tiny:1", true, buildTar(t, fileEntry("a", "a", 0o644)))
	// commitBig commits 24 MiB written to a rootfs of a tiny image, and
	// returns what the store held before the commit.
	commitBig := func(t *testing.T, s *Store) ([]string, error) {
		t.Helper()
		img, err := s.Import(ctx, tiny, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := prepare(t, s, "big", img)
		if err := os.WriteFile(filepath.Join(r.Path, "big"), []byte(filler(24<<20, 'x')), 0o644); err != nil {
			t.Fatal(err)
		}
		before := storeLeftovers(t, s)
		_, err = s.Commit(ctx, "big", nil)
		return before, err
	}

	if _, err := commitBig(t, newStore(t, &Options{MaxImportSize: 1 << 20, MaxImportEntries: 2})); err != nil {
		t.Errorf("commit of 24 MiB into a store with a 1 MiB import limit: %v", err)
	}

	root := filepath.Join(smallFilesystem(t, "40m", 100000), "store")
	s, err := Open(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	before, err := commitBig(t, s)
	if !errors.Is(err, ErrNoSpace) {
		t.Errorf("commit of 24 MiB more into 40 MiB: %v, want %v", err, ErrNoSpace)
	}
	if after := storeLeftovers(t, s); !slices.Equal(after, before) {
		t.Errorf("store holds %v after the refused commit, %v before", after, before)
	}
}

// An image refused at its second layer has already published its first,
// which other imports may share meanwhile: nothing names it, and GC, which
// holds every other operation off, reclaims it.
func TestRefusedImportLeavesOnlyGarbage(t *testing.T) {
	s := newStore(t, &Options{MaxImportSize: 8 << 20})
	layout := t.TempDir()
	writeLayout(t, layout, "two:1", true, buildTar(t, fileEntry("a", "a", 0o644)), manyFiles(t, 16, 1<<20, 'x'))
	if _, err := s.Import(ctx, layout, nil); !errors.Is(err, ErrImportTooLarge) {
		t.Fatalf("import = %v, want %v", err, ErrImportTooLarge)
	}
	if images, err := s.Images(ctx); err != nil || len(images) != 0 {
		t.Errorf("images after the refused import: %v, %v", images, err)
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if left := storeLeftovers(t, s); len(left) > 0 {
		t.Errorf("after GC, the refused import left %v", left)
	}
}
