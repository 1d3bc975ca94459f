package layerfs

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ImportImage brings img, an image of go-containerregistry's (a
// registry's, read as its blobs stream), into the store, keeping its
// manifest and config bytes as they are so that its digest is the same
// here. Layers the store already holds are not read again; every blob
// read is checked against its digest as it streams, and an image that
// fails half-way leaves nothing behind but layers complete and checked.
// opts.Progress counts the compressed bytes read.
//
// An image that fails (a digest mismatch, a broken or cancelled
// download, a limit reached) leaves no staged file and no image record;
// layers it completed and checked before the failure stay, as after a
// refused Import, so that a retry need not fetch them, and GC removes
// them if no image comes to use them.
//
// Only OCI and Docker schema 2 image manifests are read; see
// importImage for what else an image must be.
func (s *Store) ImportImage(ctx context.Context, img v1.Image, opts *ImportOptions) (*Image, error) {
	return s.importImage(ctx, img, opts)
}
