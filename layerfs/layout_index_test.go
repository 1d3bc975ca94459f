package layerfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// writeIndexBlob stores an index listing manifests as a blob of the
// layout in dir, which writeLayout made, and returns its descriptor.
func writeIndexBlob(t testing.TB, dir string, manifests []v1.Descriptor) v1.Descriptor {
	t.Helper()
	b, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: manifests})
	if err != nil {
		t.Fatal(err)
	}
	h := digestBytes(b)
	if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", h.Hex), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: types.OCIImageIndex, Digest: h, Size: int64(len(b))}
}

// writeIndexJSON replaces the layout's index.json by one listing manifests.
func writeIndexJSON(t testing.TB, dir string, manifests []v1.Descriptor) {
	t.Helper()
	b, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: manifests})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func repeated(d v1.Descriptor, n int) []v1.Descriptor {
	ds := make([]v1.Descriptor, n)
	for i := range ds {
		ds[i] = d
	}
	return ds
}

// imageDescriptor is the descriptor of the manifest md that writeLayout
// wrote in dir.
func imageDescriptor(t testing.TB, dir string, md v1.Hash) v1.Descriptor {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, "blobs", "sha256", md.Hex))
	if err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: md, Size: fi.Size()}
}

// A layout whose index names the same nested index many times over, at
// every level, is a tree of 40^4 paths but only four distinct indexes:
// Import reads each once. Walking every path, as it once did, ran for
// ever and ignored the context's deadline, which this test's generous
// one would then end with an error.
func TestImportLayoutWideIndexReadOnce(t *testing.T) {
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	md := writeLayout(t, layout, "wide:1", false, buildTar(t, fileEntry("hello", "hi\n", 0o644)))
	img := imageDescriptor(t, layout, md)
	d := writeIndexBlob(t, layout, repeated(img, 40))
	for range 3 {
		d = writeIndexBlob(t, layout, repeated(d, 40))
	}
	writeIndexJSON(t, layout, repeated(d, 40))

	s := newStore(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	im, err := s.Import(ctx, layout, &ImportOptions{Name: "wide:1"})
	if err != nil {
		t.Fatalf("import of a layout with a wide index of one image: %v", err)
	}
	if im.Digest != md {
		t.Fatalf("imported %s, want %s", im.Digest, md)
	}
}

// Index trees too wide, too deep or with too many images are refused by
// name, and the error lists only a few of the images.
func TestImportLayoutIndexBounds(t *testing.T) {
	cases := []struct {
		name  string
		index func(t *testing.T, layout string, img v1.Descriptor) []v1.Descriptor
		want  string
	}{
		{"too many descriptors", func(t *testing.T, layout string, img v1.Descriptor) []v1.Descriptor {
			var ds []v1.Descriptor
			// Distinct indexes, each naming the image: no two alike.
			for i := range maxIndexDescriptors/2 + 1 {
				ds = append(ds, writeIndexBlob(t, layout, []v1.Descriptor{img, {MediaType: types.OCIManifestSchema1, Digest: img.Digest, Size: img.Size, Annotations: map[string]string{"n": fmt.Sprint(i)}}}))
			}
			return ds
		}, "more than 4096 descriptors"},
		{"too many images", func(t *testing.T, layout string, img v1.Descriptor) []v1.Descriptor {
			var ds []v1.Descriptor
			for i := range maxLayoutImages + 1 {
				d := img
				d.Annotations = map[string]string{"io.containerd.image.name": fmt.Sprintf("example.com/img%d:1", i)}
				ds = append(ds, d)
			}
			return ds
		}, "more than 1024 image manifests"},
		{"too deep", func(t *testing.T, layout string, img v1.Descriptor) []v1.Descriptor {
			d := writeIndexBlob(t, layout, []v1.Descriptor{img})
			for range maxIndexDepth {
				d = writeIndexBlob(t, layout, []v1.Descriptor{d})
			}
			return []v1.Descriptor{d}
		}, "nested more than 4 deep"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			layout := filepath.Join(t.TempDir(), "layout")
			md := writeLayout(t, layout, "x:1", false, buildTar(t, fileEntry("hello", "hi\n", 0o644)))
			writeIndexJSON(t, layout, c.index(t, layout, imageDescriptor(t, layout, md)))
			s := newStore(t, nil)
			_, err := s.Import(context.Background(), layout, nil)
			if !errors.Is(err, ErrIndexTooLarge) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("import: %v, want ErrIndexTooLarge saying %q", err, c.want)
			}
		})
	}
	t.Run("deep enough", func(t *testing.T) {
		layout := filepath.Join(t.TempDir(), "layout")
		md := writeLayout(t, layout, "x:1", false, buildTar(t, fileEntry("hello", "hi\n", 0o644)))
		d := writeIndexBlob(t, layout, []v1.Descriptor{imageDescriptor(t, layout, md)})
		for range maxIndexDepth - 1 {
			d = writeIndexBlob(t, layout, []v1.Descriptor{d})
		}
		writeIndexJSON(t, layout, []v1.Descriptor{d})
		if _, err := newStore(t, nil).Import(context.Background(), layout, nil); err != nil {
			t.Fatalf("import of indexes nested %d deep: %v", maxIndexDepth, err)
		}
	})
	t.Run("many images named in the error", func(t *testing.T) {
		layout := filepath.Join(t.TempDir(), "layout")
		md := writeLayout(t, layout, "x:1", false, buildTar(t, fileEntry("hello", "hi\n", 0o644)))
		img := imageDescriptor(t, layout, md)
		var ds []v1.Descriptor
		for i := range maxLayoutImages {
			d := img
			d.Annotations = map[string]string{"io.containerd.image.name": fmt.Sprintf("example.com/%s%d:1", strings.Repeat("n", 200), i)}
			ds = append(ds, d)
		}
		writeIndexJSON(t, layout, ds)
		_, err := newStore(t, nil).Import(context.Background(), layout, nil)
		if err == nil || !strings.Contains(err.Error(), "holds 1024 images") || len(err.Error()) > 2000 {
			t.Fatalf("import of a layout of %d images: %d-byte error %.300q, want a short one counting them", maxLayoutImages, len(fmt.Sprint(err)), fmt.Sprint(err))
		}
	})
}

// The walk of an index stops when its context is done.
func TestWalkLayoutIndexHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := v1.Descriptor{MediaType: types.OCIImageIndex, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}}
	ib, _ := json.Marshal(v1.IndexManifest{Manifests: []v1.Descriptor{d}})
	reads := 0
	_, err := walkLayoutIndex(ctx, ib, func(v1.Descriptor) ([]byte, error) {
		reads++
		return ib, nil
	})
	if !errors.Is(err, context.Canceled) || reads != 0 {
		t.Fatalf("walk with a cancelled context: %v after %d reads, want context.Canceled and none", err, reads)
	}
}
