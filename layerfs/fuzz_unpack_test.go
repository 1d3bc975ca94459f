package layerfs

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fuzzCanaryDir returns a directory at a fixed absolute path, so that
// seeds can aim absolute symlinks and hard links at it; FuzzUnpackTar
// checks after every input that it is unchanged. The fuzzing workers of
// one run, and runs at once, share it: it is made once, whole, by a rename,
// and never written again.
func fuzzCanaryDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "berth-fuzz-canary")
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		tmp, err := os.MkdirTemp(os.TempDir(), "berth-fuzz-canary-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		if err := os.Mkdir(filepath.Join(tmp, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, "secret"), []byte("canary"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(tmp, 0o755); err != nil {
			t.Fatal(err)
		}
		// Another process may have made it meanwhile; theirs is as good.
		os.Rename(tmp, dir)
	}
	var st unix.Stat_t
	b, err := os.ReadFile(filepath.Join(dir, "secret"))
	if err != nil || string(b) != "canary" || unix.Lstat(filepath.Join(dir, "secret"), &st) != nil || st.Mode != unix.S_IFREG|0o600 || st.Nlink != 1 {
		t.Fatalf("%s is not as FuzzUnpackTar made it (an escape in an earlier run?): remove it and run again", dir)
	}
	return dir
}

// FuzzUnpackTar feeds hostile layer tars to the unpacker and checks, after
// each, what a layer must never do: panic, write or link outside its
// directory (neither beside it nor at absolute paths), leave descriptors
// open, or leave a whiteout in OCI form where overlay whiteouts work.
func FuzzUnpackTar(f *testing.F) {
	for _, seed := range unpackSeeds(f) {
		f.Add(seed)
	}
	canary := fuzzCanaryDir(f)
	canaryBefore := snapshotTree(f, canary)

	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		layer, outside := filepath.Join(base, "layer"), filepath.Join(base, "outside")
		for _, d := range []string{layer, outside, filepath.Join(outside, "sub")} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
		baseBefore := snapshotTree(t, base, "layer")
		fdsBefore := openFds(t)

		// A sparse entry can claim exabytes; the deadline bounds the work,
		// and the unpacker must honour it.
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		defer cancel()
		u, err := newUnpacker(layer)
		if err != nil {
			t.Fatal(err)
		}
		err = u.unpack(ctx, strings.NewReader(string(fixTarChecksums(data))))
		u.close()
		if errors.Is(err, context.DeadlineExceeded) {
			t.Logf("unpack stopped at its deadline")
		}

		if n := openFds(t); n != fdsBefore {
			t.Errorf("descriptors open: %d before unpacking, %d after (err %v)", fdsBefore, n, err)
		}
		if diff := diffSnapshots(baseBefore, snapshotTree(t, base, "layer")); diff != "" {
			t.Errorf("unpack (err %v) changed what is beside the layer:\n%s", err, diff)
		}
		if diff := diffSnapshots(canaryBefore, snapshotTree(t, canary)); diff != "" {
			t.Fatalf("unpack (err %v) changed %s:\n%s", err, canary, diff)
		}
		for _, p := range []string{"/berth-fuzz-escape", "/etc/berth-fuzz-escape", filepath.Join(os.TempDir(), "berth-fuzz-escape")} {
			if _, err := os.Lstat(p); err == nil {
				os.Remove(p)
				t.Fatalf("unpack (err %v) created %s", err, p)
			}
		}
		checkLayerTree(t, layer, !u.ociWhiteouts, outside, canary)
	})
}

// fixTarChecksums returns data with the checksum of each tar header
// recomputed, so that the fuzzer's changes to a header reach the unpacker
// instead of failing the tar reader's check. Headers are found as the
// reader finds them: each after the previous one's data.
func fixTarChecksums(data []byte) []byte {
	out := append([]byte(nil), data...)
	for off := 0; off+512 <= len(out); {
		blk := out[off : off+512]
		off += 512
		if allZero(blk) {
			continue
		}
		copy(blk[148:156], "        ")
		sum := 0
		for _, c := range blk {
			sum += int(c)
		}
		copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
		switch blk[156] {
		case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
			continue // no data, whatever the size says
		}
		size := tarHeaderSize(blk[124:136])
		if size < 0 || size > int64(len(out)) {
			break
		}
		off += int((size + 511) / 512 * 512)
	}
	return out
}

// tarHeaderSize reads a tar header's size field, in octal or base-256;
// -1 if it is neither.
func tarHeaderSize(f []byte) int64 {
	if f[0]&0x80 != 0 {
		var n int64
		for i, c := range f {
			if i == 0 {
				c &= 0x7f
			}
			if n > 1<<54 {
				return -1
			}
			n = n<<8 | int64(c)
		}
		return n
	}
	s := strings.Trim(string(f), " \x00")
	n, err := strconv.ParseInt(s, 8, 64)
	if err != nil {
		return -1
	}
	return n
}

// checkLayerTree checks what an unpacked layer may hold: no inode shared
// with the directories outside it (a hard link that escaped), and, when
// overlay whiteouts were made, no file named as a whiteout. It opens
// nothing but directories.
func checkLayerTree(t *testing.T, layer string, overlayWhiteouts bool, outside ...string) {
	t.Helper()
	type inode struct{ dev, ino uint64 }
	foreign := map[inode]string{}
	for _, dir := range outside {
		filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
			var st unix.Stat_t
			if err == nil && unix.Lstat(p, &st) == nil {
				foreign[inode{st.Dev, st.Ino}] = p
			}
			return nil
		})
	}
	err := filepath.WalkDir(layer, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if q, ok := foreign[inode{st.Dev, st.Ino}]; ok {
			t.Errorf("%s is the same file as %s, outside the layer", p, q)
		}
		if overlayWhiteouts && st.Mode&unix.S_IFMT != unix.S_IFDIR && strings.HasPrefix(d.Name(), whiteoutPrefix) {
			t.Errorf("%s: a whiteout left in OCI form (mode %o) where overlay whiteouts work", p, st.Mode)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fileState is what snapshotTree records of one entry.
type fileState struct {
	mode, uid, gid uint32
	nlink, rdev    uint64
	size           int64
	mtime          unix.Timespec
	target         string // of a symlink
	content        string // sha256 of a regular file
}

// snapshotTree records every entry under dir but those named in skip (top
// level only), following no symlink and opening nothing but directories
// and regular files.
func snapshotTree(t testing.TB, dir string, skip ...string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		for _, s := range skip {
			if rel == s {
				return filepath.SkipDir
			}
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		fs := fileState{mode: st.Mode, uid: st.Uid, gid: st.Gid, nlink: st.Nlink, rdev: st.Rdev, size: st.Size}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			// Entries made or removed inside show in the listing.
		case unix.S_IFLNK:
			fs.target, _ = os.Readlink(p)
			fs.mtime = st.Mtim
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			fs.content = hex.EncodeToString(sum[:])
			fs.mtime = st.Mtim
		default:
			fs.mtime = st.Mtim
		}
		out[rel] = fs
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(before, after map[string]fileState) string {
	var b strings.Builder
	for p, s := range before {
		if a, ok := after[p]; !ok {
			fmt.Fprintf(&b, "  removed %s\n", p)
		} else if a != s {
			fmt.Fprintf(&b, "  changed %s: %+v -> %+v\n", p, s, a)
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			fmt.Fprintf(&b, "  added %s: %+v\n", p, a)
		}
	}
	return b.String()
}

// openFds counts this process's open descriptors.
func openFds(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// unpackSeeds are layers that try the ways out of a layer directory, and
// a few ordinary ones for the fuzzer to mutate.
func unpackSeeds(t testing.TB) [][]byte {
	canary := filepath.Join(os.TempDir(), "berth-fuzz-canary")
	escape := filepath.Join(os.TempDir(), "berth-fuzz-escape")
	dev := func(name string, typ byte, major, minor int64) entry {
		return entry{hdr: tar.Header{Typeflag: typ, Name: name, Mode: 0o600, Devmajor: major, Devminor: minor, ModTime: testTime}}
	}
	layers := [][]entry{
		{dirEntry("./", 0o755), dirEntry("etc/", 0o755), fileEntry("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644),
			symlinkEntry("bin", "usr/bin"), dirEntry("usr/bin/", 0o755), fileEntry("usr/bin/sh", "#!", 0o4755),
			hardlinkEntry("usr/bin/ash", "usr/bin/sh"), dev("dev/null", tar.TypeChar, 1, 3), dev("run/fifo", tar.TypeFifo, 0, 0)},
		// Whiteouts and opaque directories, in every order.
		{dirEntry("a/", 0o755), fileEntry("a/.wh.b", "", 0), fileEntry("a/.wh..wh..opq", "", 0), fileEntry("a/b", "x", 0o644),
			fileEntry(".wh.a", "", 0), dirEntry(".wh.x/", 0o755), fileEntry(".wh..wh.plnk/1", "", 0)},
		{fileEntry(".wh.etc", "", 0), dirEntry("etc/", 0o755), fileEntry("etc/.wh..wh..opq", "", 0), hardlinkEntry("l", "etc/.wh.x")},
		{fileEntry(".wh..wh..opq", "", 0), fileEntry("a", "a", 0o644), dirEntry("./", 0o755)},
		// Entries that replace what earlier ones made part of a path.
		{dirEntry("a/", 0o755), fileEntry("a/x", "x", 0o644), fileEntry("a", "f", 0o644), dirEntry("a/", 0o755), fileEntry("a/b", "b", 0o644)},
		{dirEntry("d/", 0o755), dirEntry("a/", 0o755), fileEntry("a/x", "x", 0o644), symlinkEntry("a", "d"), fileEntry("a/b", "b", 0o644), hardlinkEntry("h", "a/b")},
		{symlinkEntry("a", "."), fileEntry("a/x", "x", 0o644), symlinkEntry("a", canary), fileEntry("a/y", "pwned", 0o644)},
		// Escapes by name.
		{fileEntry("../outside/secret", "pwned", 0o644)},
		{fileEntry("/"+escape[1:], "pwned", 0o644)},
		{dirEntry("a/", 0o755), fileEntry("a/../../outside/x", "x", 0o644)},
		// Escapes through symlinks the layer makes.
		{symlinkEntry("up", ".."), fileEntry("up/outside/secret", "pwned", 0o644)},
		{symlinkEntry("tmp", os.TempDir()), fileEntry("tmp/berth-fuzz-escape", "pwned", 0o644)},
		{symlinkEntry("c", canary), fileEntry("c/secret", "pwned", 0o644), dirEntry("c/sub/", 0o777)},
		{symlinkEntry("etc", "/etc"), fileEntry("etc/berth-fuzz-escape", "pwned", 0o644)},
		{symlinkEntry("root", "/"), symlinkEntry("root/berth-fuzz-escape", "x")},
		{symlinkEntry("x", "/proc/self/root"), fileEntry("x/berth-fuzz-escape", "pwned", 0o644)},
		{symlinkEntry("a", "b"), symlinkEntry("b", "a"), fileEntry("a/x", "loop", 0o644)},
		// A symlink replaced by a file must not be written through.
		{symlinkEntry("s", canary+"/secret"), fileEntry("s", "replaced", 0o644)},
		{symlinkEntry("d", canary), dirEntry("d/", 0o755), fileEntry("d/x", "y", 0o644)},
		// Hard links out of the layer, to the canary and through symlinks.
		{hardlinkEntry("h", canary+"/secret")},
		{hardlinkEntry("h", "../outside/secret")},
		{symlinkEntry("c", canary), hardlinkEntry("h", "c/secret")},
		{symlinkEntry("c", "../outside"), hardlinkEntry("h", "c/secret")},
		{hardlinkEntry("self", "self")},
		{hardlinkEntry("dot", ".")},
		// Whiteouts aimed out of the layer.
		{symlinkEntry("c", canary), fileEntry("c/.wh.secret", "", 0), fileEntry("c/.wh..wh..opq", "", 0)},
		{fileEntry("../.wh.outside", "", 0)},
		{fileEntry(".wh...", "", 0), fileEntry("x/.wh..", "", 0), fileEntry(".wh.", "", 0)},
		// Overlay attributes, odd metadata.
		{withXattr(dirEntry("r/", 0o755), "trusted.overlay.redirect", "/etc")},
		{withXattr(fileEntry("f", "x", 0o644), "user.a", "b"), withXattr(fileEntry("g", "x", 0o644), "security.capability", "\x01\x00\x00\x02")},
		{withHeader(fileEntry("neg", "x", 0o644), func(h *tar.Header) { h.Uid, h.Gid, h.Mode = -1, -7, -1 })},
		{withHeader(fileEntry("big", "x", 0o644), func(h *tar.Header) { h.Uid, h.Gid = 1<<31, 1<<40; h.ModTime = time.Unix(1<<40, 0) })},
		{fileEntry("caf\u00e9/\u202e\u0000", "x", 0o644), fileEntry(strings.Repeat("n", 300), "x", 0o644)},
		{dev("blk", tar.TypeBlock, 7, 0), dev("kvm", tar.TypeChar, 10, 232), dev("huge", tar.TypeChar, 1<<40, -1)},
	}
	var out [][]byte
	for _, l := range layers {
		out = append(out, buildFuzzTar(t, l))
	}
	// Truncated in a header and in a body.
	whole := out[0]
	out = append(out, whole[:700], whole[:1100])
	// Sparse files that claim far more than the archive holds.
	return append(out, sparseTar("big", 1<<30, "data"), sparseTar("huge", 1<<62, "x"), sparseTar("../outside/secret", 10, "pwned"))
}

// buildFuzzTar is buildTar for seeds: an entry the tar writer refuses is
// left out instead of failing.
func buildFuzzTar(t testing.TB, entries []entry) []byte {
	var buf strings.Builder
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Format == tar.FormatUnknown && len(h.PAXRecords) > 0 {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			continue
		}
		io.WriteString(tw, e.body)
	}
	tw.Close()
	return []byte(buf.String())
}

// FuzzUnpackLimits unpacks layer tars under a small import budget and
// checks that what is on disk afterwards, whether the unpack failed or
// not, stays within it: the names made, and the sizes of the files.
func FuzzUnpackLimits(f *testing.F) {
	const maxBytes, maxEntries = 64 << 10, 64
	for _, seed := range unpackSeeds(f) {
		f.Add(seed)
	}
	var many, deep []entry
	for i := range 200 {
		many = append(many, fileEntry(fmt.Sprintf("f%d", i), "", 0o644))
	}
	deep = append(deep, fileEntry(strings.Repeat("d/", 300)+"f", "x", 0o644))
	f.Add(buildFuzzTar(f, many))
	f.Add(buildFuzzTar(f, deep))
	f.Add(buildFuzzTar(f, []entry{fileEntry("a", strings.Repeat("x", 40<<10), 0o644), fileEntry("b", strings.Repeat("x", 40<<10), 0o644)}))

	f.Fuzz(func(t *testing.T, data []byte) {
		layer := t.TempDir()
		b := &importBudget{limits: importLimits{maxBytes: maxBytes, maxEntries: maxEntries, minFree: -1}}
		ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), importBudgetKey{}, b), 250*time.Millisecond)
		defer cancel()
		err := unpackTar(ctx, strings.NewReader(string(fixTarChecksums(data))), layer)

		var names, size int64
		seen := map[uint64]bool{} // hard links share a size
		werr := filepath.WalkDir(layer, func(p string, d os.DirEntry, err error) error {
			if err != nil || p == layer {
				return err
			}
			names++
			if d.Type().IsRegular() {
				var st unix.Stat_t
				if err := unix.Lstat(p, &st); err != nil {
					return err
				}
				if !seen[st.Ino] {
					seen[st.Ino] = true
					size += st.Size
				}
			}
			return nil
		})
		if werr != nil {
			t.Fatal(werr)
		}
		// A whiteout over a directory may add an opaque marker to it.
		if names > 2*maxEntries || size > maxBytes {
			t.Errorf("unpack (err %v) left %d names and %d bytes of files, over a budget of %d entries and %d bytes", err, names, size, maxEntries, maxBytes)
		}
	})
}
