package layerfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

const (
	alpineTar  = "alpine-minirootfs-3.20.3-x86_64.tar.gz"
	busyboxOCI = "busybox-1.38-musl-oci"
)

var ctx = context.Background()

func TestImportAlpineRootfsTarball(t *testing.T) {
	s := newStore(t, nil)
	src := sharedImage(t, alpineTar)
	img, err := s.Import(ctx, src, &ImportOptions{Name: "alpine:test"})
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Names; !cmp.Equal(got, []string{"alpine:test"}) {
		t.Errorf("names = %v", got)
	}
	if len(img.Layers) != 1 || img.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Fatalf("layers = %+v", img.Layers)
	}
	// The tarball itself is the layer blob, byte for byte.
	raw, _ := os.ReadFile(src)
	if img.Layers[0].Digest != digestBytes(raw) {
		t.Errorf("layer digest %s, file digest %s", img.Layers[0].Digest, digestBytes(raw))
	}
	if got := img.Config.Config.Cmd; !cmp.Equal(got, []string{"/bin/sh"}) {
		t.Errorf("cmd = %v", got)
	}

	f, _ := os.Open(src)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	want := tarTree(t, zr)
	r := prepare(t, s, "alpine", img)
	if d := diffTrees(want, listTree(t, r.Path)); len(d) > 0 {
		t.Errorf("merged view differs from the tarball in %d entries:\n%s", len(d), strings.Join(d[:min(len(d), 20)], "\n"))
	}

	// The same tarball again is the same image.
	again, err := s.Import(ctx, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != img.Digest {
		t.Errorf("reimport gave %s, first import %s", again.Digest, img.Digest)
	}
}

func TestImportBusyboxOCILayout(t *testing.T) {
	s := newStore(t, nil)
	img, err := s.Import(ctx, sharedImage(t, busyboxOCI), nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest.Hex != "a34ce92094b7b100a98fbd21411a92825f6827b1bc5f6918c253516c90556998" {
		t.Errorf("digest = %s", img.Digest)
	}
	if !cmp.Equal(img.Names, []string{"busybox:1.38.0-musl"}) {
		t.Errorf("names = %v", img.Names)
	}
	if !cmp.Equal(img.Config.Config.Cmd, []string{"sh"}) {
		t.Errorf("cmd = %v", img.Config.Config.Cmd)
	}
	for _, ref := range []string{"busybox:1.38.0-musl", "sha256:a34ce92094b7b100a98fbd21411a92825f6827b1bc5f6918c253516c90556998", "a34ce92094b7", "busybox@sha256:a34ce92094b7b100a98fbd21411a92825f6827b1bc5f6918c253516c90556998"} {
		got, err := s.Image(ctx, ref)
		if err != nil || got.Digest != img.Digest {
			t.Errorf("Image(%q) = %v, %v", ref, got, err)
		}
	}
	if _, err := s.Image(ctx, "busybox:nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing tag: %v", err)
	}
	if _, err := s.Image(ctx, "Bad Name"); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("bad name: %v", err)
	}

	layer, _ := os.Open(filepath.Join(sharedImage(t, busyboxOCI), "blobs", "sha256", img.Layers[0].Digest.Hex))
	defer layer.Close()
	zr, err := gzip.NewReader(layer)
	if err != nil {
		t.Fatal(err)
	}
	want := tarTree(t, zr)
	r := prepare(t, s, "bb", img)
	if d := diffTrees(want, listTree(t, r.Path)); len(d) > 0 {
		t.Errorf("merged view differs from the layer in %d entries:\n%s", len(d), strings.Join(d[:min(len(d), 20)], "\n"))
	}
	if _, err := os.Stat(filepath.Join(r.Path, "bin", "sh")); err != nil {
		t.Error(err)
	}
}

// The layers of a multi-layer image with deletions and opaque directories,
// and what the merged view must show.
func multiLayerImage(t testing.TB) [][]byte {
	return [][]byte{
		buildTar(t,
			dirEntry("etc/", 0o755), fileEntry("etc/keep", "keep", 0o644), fileEntry("etc/gone", "gone", 0o644),
			dirEntry("opaque/", 0o755), fileEntry("opaque/old", "old", 0o644), dirEntry("opaque/sub/", 0o755), fileEntry("opaque/sub/x", "x", 0o644),
			dirEntry("dir/", 0o755), fileEntry("dir/a", "a", 0o644), fileEntry("replaced", "file", 0o644)),
		buildTar(t,
			dirEntry("etc/", 0o755), fileEntry("etc/.wh.gone", "", 0o644), fileEntry("etc/new", "new", 0o600),
			dirEntry("opaque/", 0o755), fileEntry("opaque/.wh..wh..opq", "", 0o644), fileEntry("opaque/fresh", "fresh", 0o644),
			fileEntry(".wh.dir", "", 0o644), symlinkEntry("replaced", "etc/keep")),
		buildTar(t, dirEntry("dir/", 0o711), fileEntry("dir/b", "b", 0o644)),
	}
}

func TestMultiLayerWhiteoutsAndOpaqueDirs(t *testing.T) {
	for _, driver := range []string{"overlay", "copy"} {
		t.Run(driver, func(t *testing.T) {
			s := newStore(t, &Options{Driver: driver})
			dir := t.TempDir()
			writeLayout(t, dir, "multi:1", true, multiLayerImage(t)...)
			img, err := s.Import(ctx, dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := prepare(t, s, "m", img)
			got := listTree(t, r.Path)
			var names []string
			for k := range got {
				names = append(names, k)
			}
			want := []string{"dir", "dir/b", "etc", "etc/keep", "etc/new", "opaque", "opaque/fresh", "replaced"}
			if !cmp.Equal(sortStrings(names), want) {
				t.Errorf("merged view = %v, want %v", sortStrings(names), want)
			}
			if got["dir"].Mode != 0o711 || got["replaced"].Target != "etc/keep" || got["etc/new"].Mode != 0o600 {
				t.Errorf("metadata: dir %v replaced %v etc/new %v", got["dir"], got["replaced"], got["etc/new"])
			}
		})
	}
}

func sortStrings(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestImportRefusesUnsafeEntries(t *testing.T) {
	cases := map[string][]entry{
		"../escape":   {fileEntry("../escape", "x", 0o644)},
		"/etc/passwd": {fileEntry("/etc/passwd", "x", 0o644)},
		"evil/passwd": {symlinkEntry("evil", "/etc"), fileEntry("evil/passwd", "x", 0o644)},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			s := newStore(t, nil)
			src := filepath.Join(t.TempDir(), "rootfs.tar")
			os.WriteFile(src, buildTar(t, entries...), 0o644)
			_, err := s.Import(ctx, src, &ImportOptions{Name: "evil"})
			if !errors.Is(err, ErrUnsafeEntry) || !strings.Contains(err.Error(), name) {
				t.Fatalf("import: %v, want an unsafe-entry error naming %q", err, name)
			}
			for _, d := range []string{"layers", "images", "refs", "tmp"} {
				if left := entriesLeft(t, s.path(d)); len(left) > 0 {
					t.Errorf("%s holds %d entries after a refused import", d, len(left))
				}
			}
		})
	}
}

func TestImportChecksDigests(t *testing.T) {
	s := newStore(t, nil)
	dir := t.TempDir()
	writeLayout(t, dir, "x:1", true, buildTar(t, fileEntry("a", "a", 0o644)))
	// Corrupt the layer blob: append a byte.
	blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	for _, b := range blobs {
		data, _ := os.ReadFile(b)
		if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
			os.WriteFile(b, append(data, 0), 0o644)
		}
	}
	if _, err := s.Import(ctx, dir, nil); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("import of a corrupt layer: %v, want ErrDigestMismatch", err)
	}
	if left := entriesLeft(t, s.path("layers")); len(left) > 0 {
		t.Errorf("a layer was published from a corrupt blob")
	}
}

func TestImportZstdTarballAndDirectory(t *testing.T) {
	s := newStore(t, nil)
	tree := buildTar(t, dirEntry("bin/", 0o755), fileEntry("bin/tool", "#!/bin/sh\n", 0o755), symlinkEntry("bin/alias", "tool"))
	var zbuf bytes.Buffer
	zw, _ := zstd.NewWriter(&zbuf)
	zw.Write(tree)
	zw.Close()
	src := filepath.Join(t.TempDir(), "root.tar.zst")
	os.WriteFile(src, zbuf.Bytes(), 0o644)
	img, err := s.Import(ctx, src, &ImportOptions{Name: "zst"})
	if err != nil {
		t.Fatal(err)
	}
	if img.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+zstd" || img.Layers[0].DiffID != digestBytes(tree) {
		t.Errorf("layer = %+v", img.Layers[0])
	}

	// A directory imports as one layer, and the same tree gives the same
	// image each time.
	r := prepare(t, s, "z", img)
	a, err := s.Import(ctx, r.Path, &ImportOptions{Name: "fromdir:a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Import(ctx, r.Path, &ImportOptions{Name: "fromdir:b"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != b.Digest {
		t.Errorf("two imports of one directory: %s and %s", a.Digest, b.Digest)
	}
	r2 := prepare(t, s, "d", a)
	if d := diffTrees(listTree(t, r.Path), listTree(t, r2.Path)); len(d) > 0 {
		t.Errorf("directory import differs: %v", d)
	}
}

func TestDetectFormatRejectsNonImages(t *testing.T) {
	p := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(p, []byte("this is not a tar archive, not even close, and it goes on for a while to fill a block"), 0o644)
	if _, err := DetectFormat(p); !errors.Is(err, ErrUnknownFormat) {
		t.Errorf("DetectFormat(junk) = %v", err)
	}
	s := newStore(t, nil)
	if _, err := s.Import(ctx, p, nil); !errors.Is(err, ErrUnknownFormat) {
		t.Errorf("Import(junk) = %v", err)
	}
	if _, err := s.Import(ctx, filepath.Join(t.TempDir(), "nope"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Import(missing) = %v", err)
	}
}

func TestConcurrentImports(t *testing.T) {
	root := t.TempDir()
	src := sharedImage(t, busyboxOCI)
	// Four goroutines with stores of their own and four processes import
	// the same image at once.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			s, err := Open(root, nil)
			if err == nil {
				_, err = s.Import(ctx, src, nil)
			}
			errs <- err
		}()
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "BERTH_TEST_IMPORT="+src, "BERTH_TEST_ROOT="+root)
			out, err := cmd.CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%v: %s", err, out)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	s, _ := Open(root, nil)
	images, err := s.Images(ctx)
	if err != nil || len(images) != 1 {
		t.Fatalf("images = %v, %v", images, err)
	}
	if layers, _ := os.ReadDir(s.path("layers")); len(layers) != 1 {
		t.Errorf("%d unpacked layers, want 1", len(layers))
	}
	r := prepare(t, s, "c", images[0])
	if _, err := os.Stat(filepath.Join(r.Path, "bin", "busybox")); err != nil {
		t.Error(err)
	}
}

// bigLayout writes an image with enough data that importing it takes a
// while, so that a kill lands in the middle.
func bigLayout(t testing.TB) string {
	dir := t.TempDir()
	var layers [][]byte
	for i := 0; i < 6; i++ {
		var entries []entry
		for j := 0; j < 40; j++ {
			b := make([]byte, 128<<10)
			for k := range b {
				b[k] = byte(i*31 + j*7 + k*13)
			}
			entries = append(entries, fileEntry(fmt.Sprintf("l%d/f%03d", i, j), string(b), 0o644))
		}
		layers = append(layers, buildTar(t, entries...))
	}
	writeLayout(t, dir, "big:1", true, layers...)
	return dir
}

func TestImportKilledThenRetried(t *testing.T) {
	root := t.TempDir()
	src := bigLayout(t)
	layersPublished := func() int {
		layers, _ := os.ReadDir(filepath.Join(root, "layers"))
		return len(layers)
	}
	// Kill once right after a layer is published, once mid-way through
	// the next, then at fixed delays, which land elsewhere on a slower or
	// faster machine.
	kills := []struct {
		afterLayers int
		delay       time.Duration
	}{{1, 0}, {3, 5 * time.Millisecond}, {0, 2 * time.Millisecond}, {0, 10 * time.Millisecond}, {0, 30 * time.Millisecond}}
	for _, k := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "BERTH_TEST_IMPORT="+src, "BERTH_TEST_ROOT="+root)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); layersPublished() < k.afterLayers && time.Now().Before(deadline); {
			time.Sleep(200 * time.Microsecond)
		}
		time.Sleep(k.delay)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		staged, _ := os.ReadDir(filepath.Join(root, "tmp"))
		t.Logf("killed (after %d layers + %v): %d of 6 layers published, %d staging areas left", k.afterLayers, k.delay, layersPublished(), len(staged))
		checkStoreConsistent(t, root)
	}
	s, _ := Open(root, nil)
	img, err := s.Import(ctx, src, nil)
	if err != nil {
		t.Fatalf("import after kills: %v", err)
	}
	checkStoreConsistent(t, root)
	r := prepare(t, s, "k", img)
	if n := len(listTree(t, r.Path)); n != 6*41 {
		t.Errorf("merged view has %d entries, want %d", n, 6*41)
	}
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if left := entriesLeft(t, s.path("tmp")); len(left) > 0 {
		t.Errorf("after gc (%+v), tmp still holds %d entries", res, len(left))
	}
}

// checkStoreConsistent checks what readers can see: every blob hashes to
// its name, every layer is complete, every image's parts are present.
func checkStoreConsistent(t testing.TB, root string) {
	t.Helper()
	s, err := Open(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	blobs := entriesLeft(t, s.path("blobs", "sha256"))
	for _, b := range blobs {
		if strings.HasPrefix(b.Name(), ".tmp-") {
			// A write killed before its rename: garbage GC removes, not
			// a blob anything names.
			continue
		}
		data, err := os.ReadFile(s.path("blobs", "sha256", b.Name()))
		if err != nil || digestBytes(data).Hex != b.Name() {
			t.Errorf("blob %s is not what its name says", b.Name())
		}
	}
	layers := entriesLeft(t, s.path("layers"))
	for _, l := range layers {
		d := s.path("layers", l.Name(), "diff")
		var buf bytes.Buffer
		if err := writeTreeTar(ctx, &buf, d); err != nil {
			t.Fatalf("layer %s: %v", l.Name(), err)
		}
		// A layer of bigLayout has 40 files of 128 KiB.
		if n := len(listTree(t, d)); n != 41 {
			t.Errorf("layer %s visible with %d entries, want 41", l.Name(), n)
		}
	}
	images, err := s.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range images {
		for _, l := range img.Layers {
			if !exists(s.layerDir(l.DiffID)) || !s.hasBlob(l.Digest) {
				t.Errorf("image %s is visible but its layer %s is not", img.Digest, l.DiffID)
			}
		}
	}
}

func TestExportRoundTrip(t *testing.T) {
	s := newStore(t, nil)
	orig, err := s.Import(ctx, sharedImage(t, busyboxOCI), nil)
	if err != nil {
		t.Fatal(err)
	}
	alpine, err := s.Import(ctx, sharedImage(t, alpineTar), &ImportOptions{Name: "alpine:rt"})
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, want, got *Image) {
		t.Helper()
		if got.Digest != want.Digest || got.ConfigDigest != want.ConfigDigest || !cmp.Equal(got.Layers, want.Layers) {
			t.Errorf("round trip changed the image:\n got %s %s %+v\nwant %s %s %+v", got.Digest, got.ConfigDigest, got.Layers, want.Digest, want.ConfigDigest, want.Layers)
		}
		if !cmp.Equal(got.Names, want.Names) {
			t.Errorf("names %v, want %v", got.Names, want.Names)
		}
	}
	for _, img := range []*Image{orig, alpine} {
		for _, format := range []Format{FormatOCILayout, FormatDockerArchive} {
			t.Run(fmt.Sprintf("%s-%s", img.Names[0], format), func(t *testing.T) {
				p := filepath.Join(t.TempDir(), "image.tar")
				f, _ := os.Create(p)
				if err := s.Export(ctx, img.Names[0], f, format); err != nil {
					t.Fatal(err)
				}
				f.Close()
				if got, _ := DetectFormat(p); got != FormatOCILayout && format == FormatOCILayout {
					t.Errorf("exported OCI tar detected as %s", got)
				}
				s2 := newStore(t, nil)
				got, err := s2.Import(ctx, p, nil)
				if err != nil {
					t.Fatal(err)
				}
				check(t, img, got)
				// Exporting twice gives the same bytes.
				var a, b bytes.Buffer
				s.Export(ctx, img.Names[0], &a, format)
				s2.Export(ctx, img.Names[0], &b, format)
				if !bytes.Equal(a.Bytes(), b.Bytes()) {
					t.Errorf("export is not reproducible")
				}
			})
		}
	}
	t.Run("layout-directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := s.ExportLayout(ctx, "alpine:rt", dir); err != nil {
			t.Fatal(err)
		}
		s2 := newStore(t, nil)
		got, err := s2.Import(ctx, dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		check(t, alpine, got)
	})
	t.Run("legacy-docker-archive", func(t *testing.T) {
		// An archive from an older `docker save`: manifest.json, no OCI
		// index. Its config and layers keep their digests.
		var buf bytes.Buffer
		if err := s.Export(ctx, orig.Names[0], &buf, FormatDockerArchive); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "legacy.tar.gz")
		out, _ := os.Create(p)
		zw := gzip.NewWriter(out)
		tw := tar.NewWriter(zw)
		tr := tar.NewReader(&buf)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if hdr.Name == "index.json" || hdr.Name == "oci-layout" {
				continue
			}
			tw.WriteHeader(hdr)
			io.Copy(tw, tr)
		}
		tw.Close()
		zw.Close()
		out.Close()
		if f, _ := DetectFormat(p); f != FormatDockerArchive {
			t.Fatalf("detected %s", f)
		}
		s2 := newStore(t, nil)
		got, err := s2.Import(ctx, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.ConfigDigest != orig.ConfigDigest || got.Layers[0].Digest != orig.Layers[0].Digest || !cmp.Equal(got.Names, orig.Names) {
			t.Errorf("legacy archive import: config %s layers %+v names %v", got.ConfigDigest, got.Layers, got.Names)
		}
	})
}

func tallImageLayers(t testing.TB, n int) [][]byte {
	layers := make([][]byte, n)
	for i := range layers {
		layers[i] = buildTar(t, dirEntry("layers/", 0o755), fileEntry(fmt.Sprintf("layers/%03d", i), fmt.Sprint(i), 0o644))
	}
	return layers
}

func Test200LayerImageMounts(t *testing.T) {
	s := newStore(t, nil)
	dir := t.TempDir()
	writeLayout(t, dir, "tall:200", false, tallImageLayers(t, 200)...)
	img, err := s.Import(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := prepare(t, s, "tall", img)
	if r.Driver != "overlay" {
		t.Errorf("driver %s, want overlay", r.Driver)
	}
	entries, err := os.ReadDir(filepath.Join(r.Path, "layers"))
	if err != nil || len(entries) != 200 {
		t.Fatalf("%d files visible, want 200 (%v)", len(entries), err)
	}
	if err := s.Release(ctx, "tall"); err != nil {
		t.Fatal(err)
	}
	if m := mountedUnder(t, s.Root()); len(m) > 0 {
		t.Errorf("mounts left after release: %v", m)
	}
	if exists(s.rootfsDir("tall")) {
		t.Error("rootfs directory left after release")
	}
}

func TestPrepareErrors(t *testing.T) {
	s := newStore(t, nil)
	img, err := s.Import(ctx, sharedImage(t, busyboxOCI), nil)
	if err != nil {
		t.Fatal(err)
	}
	prepare(t, s, "one", img)
	if _, err := s.Prepare(ctx, "one", img, nil); !errors.Is(err, ErrExists) {
		t.Errorf("second prepare under one key: %v", err)
	}
	if _, err := s.Prepare(ctx, "../x", img, nil); err == nil {
		t.Error("a key with a slash was accepted")
	}
	if err := s.Release(ctx, "never"); !errors.Is(err, ErrNotFound) {
		t.Errorf("release of an unknown key: %v", err)
	}
}

func TestDiffAndCommit(t *testing.T) {
	for _, driver := range []string{"overlay", "copy"} {
		t.Run(driver, func(t *testing.T) {
			s := newStore(t, &Options{Driver: driver})
			base, err := s.Import(ctx, sharedImage(t, alpineTar), &ImportOptions{Name: "alpine:base"})
			if err != nil {
				t.Fatal(err)
			}
			r := prepare(t, s, "work", base)
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(os.WriteFile(filepath.Join(r.Path, "hello.txt"), []byte("hi"), 0o640))
			must(os.Remove(filepath.Join(r.Path, "etc", "motd")))
			must(os.RemoveAll(filepath.Join(r.Path, "etc", "apk")))
			must(os.MkdirAll(filepath.Join(r.Path, "etc", "apk"), 0o755))
			must(os.WriteFile(filepath.Join(r.Path, "etc", "apk", "only"), []byte("1"), 0o644))
			must(os.Chmod(filepath.Join(r.Path, "etc", "hostname"), 0o600))
			want := listTree(t, r.Path)

			var diff bytes.Buffer
			must(s.Diff(ctx, "work", &diff))
			names := map[string]bool{}
			tr := tar.NewReader(&diff)
			for {
				hdr, err := tr.Next()
				if err == io.EOF {
					break
				}
				must(err)
				names[strings.TrimSuffix(hdr.Name, "/")] = true
			}
			for _, n := range []string{"hello.txt", "etc/.wh.motd", "etc/apk/only", "etc/hostname"} {
				if !names[n] {
					t.Errorf("diff lacks %s (has %v)", n, names)
				}
			}
			if names["bin/busybox"] {
				t.Error("diff holds an unchanged file")
			}

			img, err := s.Commit(ctx, "work", &CommitOptions{Name: "alpine:changed", Comment: "test"})
			must(err)
			if len(img.Layers) != 2 || img.Layers[0] != base.Layers[0] || len(img.Config.RootFS.DiffIDs) != 2 {
				t.Fatalf("committed image layers %+v", img.Layers)
			}
			r2 := prepare(t, s, "again", img)
			if d := diffTrees(want, listTree(t, r2.Path)); len(d) > 0 {
				t.Errorf("committed image differs from the rootfs it came from:\n%s", strings.Join(d[:min(len(d), 20)], "\n"))
			}
			// A committed image exports and imports like any other.
			var out bytes.Buffer
			must(s.Export(ctx, "alpine:changed", &out, FormatOCILayout))
			p := filepath.Join(t.TempDir(), "c.tar")
			os.WriteFile(p, out.Bytes(), 0o644)
			got, err := newStore(t, nil).Import(ctx, p, nil)
			must(err)
			if got.Digest != img.Digest {
				t.Errorf("committed image round trip: %s, want %s", got.Digest, img.Digest)
			}
		})
	}
}

func TestRemoveAndGC(t *testing.T) {
	s := newStore(t, nil)
	dir := t.TempDir()
	shared := buildTar(t, fileEntry("shared", "s", 0o644))
	writeLayout(t, filepath.Join(dir, "a"), "a:1", true, shared, buildTar(t, fileEntry("a", "a", 0o644)))
	writeLayout(t, filepath.Join(dir, "b"), "b:1", true, shared, buildTar(t, fileEntry("b", "b", 0o644)))
	a, err := s.Import(ctx, filepath.Join(dir, "a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Import(ctx, filepath.Join(dir, "b"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if layers, _ := os.ReadDir(s.path("layers")); len(layers) != 3 {
		t.Errorf("%d layers stored for two images sharing one, want 3", len(layers))
	}
	if err := s.Tag(ctx, "a:1", "a:alias"); err != nil {
		t.Fatal(err)
	}
	// Removing one of two names keeps the image.
	if err := s.Remove(ctx, "a:1"); err != nil {
		t.Fatal(err)
	}
	if img, err := s.Image(ctx, a.Digest.String()); err != nil || !cmp.Equal(img.Names, []string{"a:alias"}) {
		t.Fatalf("after untag: %v, %v", img, err)
	}
	if res, err := s.GC(ctx); err != nil || res.Blobs+res.Layers != 0 {
		t.Fatalf("gc with every image named: %+v, %v", res, err)
	}
	// A rootfs keeps the layers of an image removed under it.
	prepare(t, s, "held", b)
	if err := s.Remove(ctx, "a:alias"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, b.Digest.String()); err != nil {
		t.Fatal(err)
	}
	if imgs, err := s.Images(ctx); err != nil || len(imgs) != 0 {
		t.Fatalf("images left: %d (%v)", len(imgs), err)
	}
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// a's manifest, config and own layer blob go, and its own layer.
	if res.Blobs != 3 || res.Layers != 1 {
		t.Errorf("gc removed %+v, want 3 blobs and 1 layer", res)
	}
	if err := s.Release(ctx, "held"); err != nil {
		t.Fatal(err)
	}
	if res, err = s.GC(ctx); err != nil || res.Blobs != 4 || res.Layers != 2 {
		t.Errorf("gc after release: %+v, %v", res, err)
	}
	for _, d := range []string{"blobs/sha256", "layers", "images", "refs", "rootfs", "tmp", "locks"} {
		if left := entriesLeft(t, s.path(d)); len(left) > 0 {
			t.Errorf("%s not empty after removing everything: %d entries", d, len(left))
		}
	}
	if _, err := s.Image(ctx, "b:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed image still found: %v", err)
	}
}

func TestParseReference(t *testing.T) {
	good := map[string]string{
		"alpine":                                "alpine:latest",
		"alpine:3.20":                           "alpine:3.20",
		"registry.local:5000/team/app":          "registry.local:5000/team/app:latest",
		"registry.local:5000/team/app:v1.0":     "registry.local:5000/team/app:v1.0",
		"a/b@sha256:" + strings.Repeat("a", 64): "a/b@sha256:" + strings.Repeat("a", 64),
		"a:t@sha256:" + strings.Repeat("0", 64): "a:t@sha256:" + strings.Repeat("0", 64),
		"my_image__x-y.z":                       "my_image__x-y.z:latest",
		"localhost/busybox:1.38.0-musl":         "localhost/busybox:1.38.0-musl",
	}
	for in, want := range good {
		r, err := ParseReference(in)
		if err != nil || r.String() != want {
			t.Errorf("ParseReference(%q) = %v, %v; want %s", in, r, err, want)
		}
	}
	for _, in := range []string{"", "Alpine", "a:", ":tag", "a@sha256:123", "a b", "a/../b", "-a", "a:" + strings.Repeat("t", 129), "a//b"} {
		if _, err := ParseReference(in); !errors.Is(err, ErrInvalidReference) {
			t.Errorf("ParseReference(%q) = %v, want ErrInvalidReference", in, err)
		}
	}
}
