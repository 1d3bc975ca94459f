package layerfs

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// A test that needs a second process re-executes the test binary with
	// this variable set; see runHelperProcess.
	if os.Getenv("BERTH_TEST_IMPORT") != "" {
		os.Exit(helperImport())
	}
	if os.Getenv("BERTH_TEST_EXPORT") != "" {
		os.Exit(helperExport())
	}
	if os.Getenv("BERTH_TEST_CRASH_PREPARE") != "" {
		os.Exit(helperCrashPrepare())
	}
	if os.Getenv("BERTH_TEST_CRASH_QUOTA") != "" {
		os.Exit(helperCrashQuota())
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "layerfs tests must run as root: they mount overlays and write overlay xattrs and whiteout devices")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func helperImport() int {
	s, err := Open(os.Getenv("BERTH_TEST_ROOT"), nil)
	if err == nil {
		_, err = s.Import(context.Background(), os.Getenv("BERTH_TEST_IMPORT"), &ImportOptions{Name: os.Getenv("BERTH_TEST_NAME")})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// sharedImage returns the path of one of the images in ../shared/images
// beside the repository.
func sharedImage(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "shared", "images", name))
	if err != nil {
		t.Fatal(err)
	}
	if !exists(p) {
		t.Fatalf("test image %s is missing: the tests need ../shared/images beside the repository", p)
	}
	return p
}

func newStore(t testing.TB, opts *Options) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func prepare(t testing.TB, s *Store, key string, img *Image) *Rootfs {
	t.Helper()
	r, err := s.Prepare(context.Background(), key, img, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Release(context.Background(), key); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("release %s: %v", key, err)
		}
	})
	return r
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func digestBytes(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// writeLayout writes an OCI image layout in dir holding one image made of
// the given uncompressed layer tars (gzipped when compress is set).
func writeLayout(t testing.TB, dir, name string, compress bool, layers ...[]byte) v1.Hash {
	t.Helper()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) v1.Hash {
		h := digestBytes(b)
		if err := os.WriteFile(filepath.Join(blobs, h.Hex), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return h
	}
	cfg := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"},
		Config: v1.Config{Env: []string{"PATH=/bin", "FOO=bar"}, Cmd: []string{"/bin/sh"}, WorkingDir: "/work", User: "1000:1000", Labels: map[string]string{"a": "b"}}}
	var m v1.Manifest
	m.SchemaVersion, m.MediaType = 2, types.OCIManifestSchema1
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digestBytes(l))
		blob, mt := l, types.OCIUncompressedLayer
		if compress {
			blob, mt = gzipBytes(t, l), types.OCILayer
		}
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Digest: put(blob), Size: int64(len(blob))})
	}
	cb, _ := json.Marshal(cfg)
	m.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: put(cb), Size: int64(len(cb))}
	mb, _ := json.Marshal(m)
	md := put(mb)
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{
		MediaType: types.OCIManifestSchema1, Digest: md, Size: int64(len(mb)),
		Annotations: map[string]string{"org.opencontainers.image.ref.name": name},
	}}}
	ib, _ := json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), ib, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return md
}

// treeEntry is what a test compares of one file in a tree.
type treeEntry struct {
	Type     string
	Mode     uint32
	UID, GID uint32
	Target   string // symlink target
	Content  string // sha256 of a regular file
	Mtime    int64  // seconds; directories are left out, since creating children in them moves it
}

func (e treeEntry) String() string {
	return fmt.Sprintf("%s %o %d:%d %q %.12s %d", e.Type, e.Mode, e.UID, e.GID, e.Target, e.Content, e.Mtime)
}

// listTree describes every entry under dir, keyed by slash path.
func listTree(t testing.TB, dir string) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		var st2 unix.Stat_t
		if err := unix.Lstat(p, &st2); err != nil {
			return err
		}
		e := treeEntry{Mode: uint32(st2.Mode & 0o7777), UID: st2.Uid, GID: st2.Gid, Mtime: st2.Mtim.Sec}
		switch st2.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Type, e.Mtime = "dir", 0
		case unix.S_IFLNK:
			e.Type, e.Mode = "symlink", 0
			e.Target, _ = os.Readlink(p)
		case unix.S_IFREG:
			e.Type = "file"
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.Content = digestBytes(b).Hex
		default:
			e.Type = fmt.Sprintf("special-%o", st2.Mode&unix.S_IFMT)
		}
		out[filepath.ToSlash(rel)] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tarTree describes what applying the tar r to an empty tree gives, the
// way listTree describes a tree on disk.
func tarTree(t testing.TB, r io.Reader) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.Trim(strings.TrimPrefix(hdr.Name, "./"), "/")
		if name == "" || name == "." {
			continue
		}
		e := treeEntry{Mode: uint32(hdr.Mode & 0o7777), UID: uint32(hdr.Uid), GID: uint32(hdr.Gid), Mtime: hdr.ModTime.Unix()}
		switch hdr.Typeflag {
		case tar.TypeDir:
			e.Type, e.Mtime = "dir", 0
		case tar.TypeSymlink:
			e.Type, e.Mode, e.Target = "symlink", 0, hdr.Linkname
		case tar.TypeReg:
			e.Type = "file"
			b, _ := io.ReadAll(tr)
			e.Content = digestBytes(b).Hex
		case tar.TypeLink:
			e = out[strings.Trim(strings.TrimPrefix(hdr.Linkname, "./"), "/")]
		default:
			e.Type = fmt.Sprintf("special-%c", hdr.Typeflag)
		}
		out[name] = e
	}
}

func diffTrees(want, got map[string]treeEntry) []string {
	var d []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			d = append(d, "missing "+k)
		case g != w:
			d = append(d, fmt.Sprintf("%s: got %v, want %v", k, g, w))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, "unexpected "+k)
		}
	}
	return d
}

func mountedUnder(t testing.TB, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir) {
			out = append(out, f[4])
		}
	}
	return out
}
