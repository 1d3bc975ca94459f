package layerfs

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The store's own paths are private; these accessors give out the few that
// an out-of-process rootfs backend (a storage plugin) is handed read-only,
// so that it can stack or copy layers the store has already unpacked
// instead of unpacking the blobs again.

// LayerDir returns the directory in which the layer with the given diff ID
// is unpacked, in overlay form (whiteouts as character devices, opaque
// directories by xattr). Nothing may write to it.
func (s *Store) LayerDir(diffID v1.Hash) string { return s.layerDir(diffID) }

// BlobPath returns the file holding the blob with the given digest, as it
// was imported (a layer's compressed tar, say). Nothing may write to it.
func (s *Store) BlobPath(digest v1.Hash) string { return s.blobPath(digest) }

// VisibleLayers returns the layers of img that a rootfs of it shows,
// bottom first: all of them, or those from the topmost layer whose root is
// opaque upwards, since such a layer hides everything below it and
// overlayfs does not honour the mark on a lower layer's root. A layer
// missing from the store is an error wrapping ErrNotFound.
func (s *Store) VisibleLayers(img *Image) ([]Layer, error) {
	top := make([]string, len(img.Layers)) // top first, as visibleLayers wants
	for i, l := range img.Layers {
		dir := s.layerDir(l.DiffID)
		if !exists(dir) {
			return nil, fmt.Errorf("layer %s of image %s: %w", l.DiffID, img.Digest, ErrNotFound)
		}
		top[len(top)-1-i] = dir
	}
	shown, err := visibleLayers(top)
	if err != nil {
		return nil, err
	}
	return img.Layers[len(img.Layers)-len(shown):], nil
}
