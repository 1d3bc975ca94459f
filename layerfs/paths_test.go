package layerfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The exported paths are the store's own: the unpacked layer holds the
// layer's files and the blob hashes to its digest. VisibleLayers leaves
// out what an opaque root hides, and a missing layer is ErrNotFound.
func TestLayerPaths(t *testing.T) {
	bottom := buildTar(t, fileEntry("old", "old", 0o644))
	middle := buildTar(t, fileEntry(".wh..wh..opq", "", 0), fileEntry("mid", "mid", 0o644))
	top := buildTar(t, fileEntry("top", "top", 0o644))
	s := newStore(t, nil)
	layout := t.TempDir()
	writeLayout(t, layout, "paths:1", true, bottom, middle, top)
	img, err := s.Import(ctx, layout, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 3 {
		t.Fatalf("image has %d layers, want 3", len(img.Layers))
	}
	for i, name := range []string{"old", "mid", "top"} {
		l := img.Layers[i]
		if _, err := os.Lstat(filepath.Join(s.LayerDir(l.DiffID), name)); err != nil {
			t.Errorf("layer %d: %v", i, err)
		}
		h, err := hashFile(s.BlobPath(l.Digest))
		if err != nil || h != l.Digest {
			t.Errorf("layer %d: blob at %s hashes to %v (%v), want %v", i, s.BlobPath(l.Digest), h, err, l.Digest)
		}
	}

	shown, err := s.VisibleLayers(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(shown) != 2 || shown[0].DiffID != img.Layers[1].DiffID || shown[1].DiffID != img.Layers[2].DiffID {
		t.Errorf("VisibleLayers = %v, want the top two layers bottom first", shown)
	}

	missing := *img
	missing.Layers = append([]Layer{{DiffID: v1.Hash{Algorithm: "sha256", Hex: "00"}}}, img.Layers...)
	if _, err := s.VisibleLayers(&missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("VisibleLayers with a missing layer: %v, want ErrNotFound", err)
	}
}
