package layerfs

import (
	"context"
	"errors"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Bounds on the walk of an OCI layout's index tree. An index may name
// other indexes, and a crafted layout can make that tree as wide as it
// likes: without them, 40 copies of a nested index at each of five levels
// would mean a hundred million reads. Real layouts hold a few images per
// platform and rarely nest more than once.
const (
	maxIndexDepth       = 4    // nested indexes below index.json
	maxIndexDescriptors = 4096 // descriptors looked at, over all indexes
	maxLayoutImages     = 1024 // image manifests gathered as candidates
)

// ErrIndexTooLarge reports an OCI layout whose index tree is wider or
// deeper than Import walks.
var ErrIndexTooLarge = errors.New("OCI layout index tree too large")

// walkLayoutIndex gathers the image manifests named by an OCI layout's
// index.json (ib) and the indexes it nests, which read returns verified.
// Each nested index is read once however often it is named, which also
// stops loops; the walk is bounded in depth, descriptors and images, and
// stops when ctx is done.
func walkLayoutIndex(ctx context.Context, ib []byte, read func(v1.Descriptor) ([]byte, error)) ([]layoutImage, error) {
	var images []layoutImage
	seenIndex := make(map[v1.Hash]bool)
	type imageKey struct {
		digest v1.Hash
		name   string
	}
	seenImage := make(map[imageKey]bool)
	walked := 0
	var walk func(name string, b []byte, depth int) error
	walk = func(name string, b []byte, depth int) error {
		var idx v1.IndexManifest
		if err := decodeJSON(name, b, &idx); err != nil {
			return fmt.Errorf("OCI layout: %w", err)
		}
		for _, d := range idx.Manifests {
			if err := ctx.Err(); err != nil {
				return err
			}
			walked++
			if walked > maxIndexDescriptors {
				return fmt.Errorf("%w: more than %d descriptors", ErrIndexTooLarge, maxIndexDescriptors)
			}
			switch {
			case d.MediaType.IsIndex():
				if seenIndex[d.Digest] {
					continue
				}
				seenIndex[d.Digest] = true
				if depth >= maxIndexDepth {
					// index.json is depth 0: it and maxIndexDepth levels below it.
					return fmt.Errorf("%w: indexes nested more than %d deep", ErrIndexTooLarge, maxIndexDepth)
				}
				nb, err := read(d)
				if err != nil {
					return err
				}
				if err := walk("index "+d.Digest.String(), nb, depth+1); err != nil {
					return err
				}
			case d.MediaType.IsImage():
				if d.Platform != nil && d.Platform.Architecture == "unknown" {
					continue // attestation manifests
				}
				im := layoutImage{desc: d, name: annotatedName(d.Annotations)}
				k := imageKey{d.Digest, im.name}
				if seenImage[k] {
					continue // the same image named twice is one candidate
				}
				seenImage[k] = true
				if len(images) == maxLayoutImages {
					return fmt.Errorf("%w: more than %d image manifests", ErrIndexTooLarge, maxLayoutImages)
				}
				images = append(images, im)
			}
		}
		return nil
	}
	if err := walk("index.json", ib, 0); err != nil {
		return nil, err
	}
	return images, nil
}
