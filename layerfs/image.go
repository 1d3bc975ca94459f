package layerfs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/clip"
)

// An Image is an image held by the store. Its identity is the digest of its
// manifest, which export reproduces exactly.
type Image struct {
	Digest       v1.Hash         // manifest digest
	Names        []string        // the references that point at it, sorted
	MediaType    types.MediaType // of the manifest
	Manifest     *v1.Manifest
	ConfigDigest v1.Hash // the image ID in Docker's terms
	Config       *v1.ConfigFile
	RawConfig    []byte  // the config blob as stored
	Layers       []Layer // bottom first
	Imported     time.Time
}

// A Layer is one layer of an image.
type Layer struct {
	Digest    v1.Hash         `json:"digest"` // of the blob as stored and exported
	DiffID    v1.Hash         `json:"diffID"` // of the uncompressed tar; names the unpacked directory
	MediaType types.MediaType `json:"mediaType"`
	Size      int64           `json:"size"` // of the blob
}

// Size returns the sum of the image's blob sizes.
func (img *Image) Size() int64 {
	n := img.Manifest.Config.Size
	for _, l := range img.Layers {
		n += l.Size
	}
	return n
}

// imageRecord is the store's note that an image is present; everything
// else about the image is read from its manifest and config blobs.
type imageRecord struct {
	Imported time.Time `json:"imported"`
}

func (s *Store) imagePath(h v1.Hash) string { return s.path("images", h.Hex) }

func refFile(name string) string { return url.PathEscape(name) }

func (s *Store) refPath(name string) string { return s.path("refs", refFile(name)) }

// addImage records an image whose blobs and layers are all in the store
// and points names at it.
func (s *Store) addImage(digest v1.Hash, names []string) error {
	p := s.imagePath(digest)
	if !exists(p) {
		b, _ := json.Marshal(imageRecord{Imported: time.Now().UTC()})
		if err := writeFileAtomic(p, b, true); err != nil {
			return fmt.Errorf("record image %s: %w", digest, err)
		}
	}
	for _, n := range names {
		if err := writeFileAtomic(s.refPath(n), []byte(digest.String()+"\n"), true); err != nil {
			return fmt.Errorf("tag %s: %w", n, err)
		}
	}
	return nil
}

// refs returns every name and the digest it points at.
func (s *Store) refs() (map[string]v1.Hash, error) {
	entries, err := os.ReadDir(s.path("refs"))
	if err != nil {
		return nil, err
	}
	out := make(map[string]v1.Hash, len(entries))
	for _, e := range entries {
		if atomicfile.IsTemp(e.Name()) {
			continue
		}
		name, err := url.PathUnescape(e.Name())
		if err != nil {
			continue
		}
		h, err := s.readRef(name)
		if err != nil {
			continue // removed meanwhile
		}
		out[name] = h
	}
	return out, nil
}

func (s *Store) readRef(name string) (v1.Hash, error) {
	if len(refFile(name)) > maxFileName {
		// Too long to have been recorded (see nameList).
		return v1.Hash{}, fmt.Errorf("image %s: %w", clip.Quote(name), ErrNotFound)
	}
	b, err := os.ReadFile(s.refPath(name))
	if err != nil {
		if isNotExist(err) {
			return v1.Hash{}, fmt.Errorf("image %s: %w", clip.Quote(name), ErrNotFound)
		}
		return v1.Hash{}, err
	}
	h, err := v1.NewHash(string(bytes.TrimSpace(b)))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("reference %s is corrupt: %w", name, err)
	}
	return h, nil
}

// resolve turns what a user typed into a manifest digest: a name[:tag], a
// name@digest, a full digest, or an unambiguous prefix of at least six hex
// digits of a manifest digest.
func (s *Store) resolve(ref string) (v1.Hash, error) {
	if len(ref) > MaxReferenceLength {
		return v1.Hash{}, fmt.Errorf("%w %s: longer than %d bytes", ErrInvalidReference, clip.Quote(ref), MaxReferenceLength)
	}
	if h, err := v1.NewHash(ref); err == nil {
		if !exists(s.imagePath(h)) {
			return v1.Hash{}, fmt.Errorf("image %s: %w", ref, ErrNotFound)
		}
		return h, nil
	}
	r, perr := ParseReference(ref)
	if perr == nil {
		if r.Digest != "" {
			h, _ := v1.NewHash(r.Digest)
			if !exists(s.imagePath(h)) {
				return v1.Hash{}, fmt.Errorf("image %s: %w", ref, ErrNotFound)
			}
			return h, nil
		}
		h, err := s.readRef(r.String())
		if err == nil || !errors.Is(err, ErrNotFound) {
			return h, err
		}
	}
	prefix := strings.TrimPrefix(ref, "sha256:")
	if len(prefix) >= 6 && isHex(prefix) {
		entries, err := os.ReadDir(s.path("images"))
		if err != nil {
			return v1.Hash{}, err
		}
		var match []string
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				match = append(match, e.Name())
			}
		}
		switch len(match) {
		case 1:
			return v1.Hash{Algorithm: "sha256", Hex: match[0]}, nil
		case 0:
		default:
			return v1.Hash{}, fmt.Errorf("image %s matches %d images: %w", ref, len(match), ErrAmbiguous)
		}
	}
	if perr != nil {
		return v1.Hash{}, perr
	}
	return v1.Hash{}, fmt.Errorf("image %s: %w", clip.Quote(ref), ErrNotFound)
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Image returns the image that ref names: name[:tag], name@digest, a
// manifest digest, or an unambiguous digest prefix.
func (s *Store) Image(ctx context.Context, ref string) (*Image, error) {
	h, err := s.resolve(ref)
	if err != nil {
		return nil, err
	}
	refs, err := s.refs()
	if err != nil {
		return nil, err
	}
	return s.loadImage(h, refs)
}

// Images lists every image in the store, newest import first.
func (s *Store) Images(ctx context.Context) ([]*Image, error) {
	entries, err := os.ReadDir(s.path("images"))
	if err != nil {
		return nil, err
	}
	refs, err := s.refs()
	if err != nil {
		return nil, err
	}
	var out []*Image
	for _, e := range entries {
		if atomicfile.IsTemp(e.Name()) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		img, err := s.loadImage(v1.Hash{Algorithm: "sha256", Hex: e.Name()}, refs)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				continue // removed meanwhile
			}
			return nil, err
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Imported.Equal(out[j].Imported) {
			return out[i].Imported.After(out[j].Imported)
		}
		return out[i].Digest.Hex < out[j].Digest.Hex
	})
	return out, nil
}

func (s *Store) loadImage(h v1.Hash, refs map[string]v1.Hash) (*Image, error) {
	rec, err := os.ReadFile(s.imagePath(h))
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("image %s: %w", h, ErrNotFound)
		}
		return nil, err
	}
	img, err := s.readImage(h)
	if err != nil {
		return nil, err
	}
	var r imageRecord
	if err := json.Unmarshal(rec, &r); err == nil {
		img.Imported = r.Imported
	}
	for name, target := range refs {
		if target == h {
			img.Names = append(img.Names, name)
		}
	}
	sort.Strings(img.Names)
	return img, nil
}

// readImage reads an image from its manifest and config blobs, whether or
// not the store still records it as an image.
func (s *Store) readImage(h v1.Hash) (*Image, error) {
	img := &Image{Digest: h}
	mb, err := s.readBlob(h)
	if err != nil {
		return nil, fmt.Errorf("image %s manifest: %w", h, err)
	}
	if img.Manifest, err = v1.ParseManifest(bytes.NewReader(mb)); err != nil {
		return nil, fmt.Errorf("image %s manifest: %w", h, err)
	}
	img.MediaType = img.Manifest.MediaType
	img.ConfigDigest = img.Manifest.Config.Digest
	cb, err := s.readBlob(img.ConfigDigest)
	if err != nil {
		return nil, fmt.Errorf("image %s config: %w", h, err)
	}
	img.RawConfig = cb
	if img.Config, err = v1.ParseConfigFile(bytes.NewReader(cb)); err != nil {
		return nil, fmt.Errorf("image %s config: %w", h, err)
	}
	if len(img.Config.RootFS.DiffIDs) != len(img.Manifest.Layers) {
		return nil, fmt.Errorf("image %s: manifest has %d layers, config %d diff IDs", h, len(img.Manifest.Layers), len(img.Config.RootFS.DiffIDs))
	}
	for i, d := range img.Manifest.Layers {
		img.Layers = append(img.Layers, Layer{Digest: d.Digest, DiffID: img.Config.RootFS.DiffIDs[i], MediaType: d.MediaType, Size: d.Size})
	}
	return img, nil
}

// Tag points name at the image that ref names.
func (s *Store) Tag(ctx context.Context, ref, name string) error {
	names, err := nameList(name, "a tag")
	if err != nil {
		return err
	}
	if names == nil {
		return fmt.Errorf("%w: empty tag", ErrInvalidReference)
	}
	l, err := s.use(ctx)
	if err != nil {
		return err
	}
	defer l.unlock()
	h, err := s.resolve(ref)
	if err != nil {
		return err
	}
	return s.addImage(h, names)
}

// Remove deletes a reference. When ref is a name, only that name goes, and
// the image with it if no other name points at it; when ref is a digest,
// the image and every name pointing at it go. Blobs and layers stay until
// GC, so a rootfs prepared from the image keeps working.
func (s *Store) Remove(ctx context.Context, ref string) error {
	l, err := s.use(ctx)
	if err != nil {
		return err
	}
	defer l.unlock()
	h, err := s.resolve(ref)
	if err != nil {
		return err
	}
	refs, err := s.refs()
	if err != nil {
		return err
	}
	byName := false
	if r, err := ParseReference(ref); err == nil && r.Digest == "" {
		if target, ok := refs[r.String()]; ok && target == h {
			byName = true
			if err := os.Remove(s.refPath(r.String())); err != nil && !isNotExist(err) {
				return fmt.Errorf("untag %s: %w", r, err)
			}
			delete(refs, r.String())
		}
	}
	for name, target := range refs {
		if target != h {
			continue
		}
		if byName {
			return nil // another name still holds the image
		}
		if err := os.Remove(s.refPath(name)); err != nil && !isNotExist(err) {
			return fmt.Errorf("untag %s: %w", name, err)
		}
	}
	if err := os.Remove(s.imagePath(h)); err != nil && !isNotExist(err) {
		return fmt.Errorf("remove image %s: %w", h, err)
	}
	s.log.Debug("removed image", "digest", h, "ref", ref)
	return nil
}
