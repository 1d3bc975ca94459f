package layerfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/clip"
)

// A V1Image is a stored image seen as a go-containerregistry image, for
// pushing to a registry: its manifest, config and layer blobs are the
// store's bytes, so a registry holds it under the digest the store does.
//
// It holds the image's blob files open from the moment Store.V1Image
// returns, so GC and Remove may run meanwhile without taking the blobs
// from under a push; it must be closed when the push is done.
type V1Image struct {
	v1.Image

	manifest []byte
	config   []byte
	media    types.MediaType
	layers   map[v1.Hash]*blobFile
	closed   sync.Once
}

// V1Image returns the stored image ref names as a go-containerregistry
// image whose blobs are the store's bytes. The caller must Close it. Each
// layer is checked against its digest as it is read, so a damaged store
// fails the read with ErrDigestMismatch rather than sending a blob that
// does not match the manifest.
func (s *Store) V1Image(ctx context.Context, ref string) (*V1Image, error) {
	l, err := s.use(ctx)
	if err != nil {
		return nil, err
	}
	// GC waits for the shared lock: until it is released, every blob
	// of the image is there, and once a blob is open it stays readable
	// whatever GC does after.
	defer l.unlock()
	h, err := s.resolve(ref)
	if err != nil {
		return nil, err
	}
	img := &V1Image{layers: map[v1.Hash]*blobFile{}}
	ok := false
	defer func() {
		if !ok {
			img.Close()
		}
	}()
	if img.manifest, err = s.readSmallBlob(h, manifestDocument); err != nil {
		return nil, fmt.Errorf("image %s manifest: %w", clip.String(ref), err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(img.manifest))
	if err != nil {
		return nil, fmt.Errorf("image %s manifest: %w", clip.String(ref), err)
	}
	img.media = m.MediaType
	if img.media == "" {
		img.media = types.OCIManifestSchema1
	}
	if img.config, err = s.readSmallBlob(m.Config.Digest, configDocument); err != nil {
		return nil, fmt.Errorf("image %s config: %w", clip.String(ref), err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(img.config))
	if err != nil {
		return nil, fmt.Errorf("image %s config: %w", clip.String(ref), err)
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("image %s: manifest has %d layers, config %d diff IDs", clip.String(ref), len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	for i, d := range m.Layers {
		if _, dup := img.layers[d.Digest]; dup {
			continue
		}
		f, err := s.openBlob(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("image %s layer %d: %w", clip.String(ref), i, err)
		}
		f.desc, f.diffID = d, cf.RootFS.DiffIDs[i]
		img.layers[d.Digest] = f
		if f.size != d.Size {
			return nil, fmt.Errorf("image %s layer %s: the store holds %d bytes, the manifest says %d: %w", clip.String(ref), d.Digest, f.size, d.Size, ErrDigestMismatch)
		}
	}
	if img.Image, err = partial.CompressedToImage(v1ImageCore{img}); err != nil {
		return nil, err
	}
	ok = true
	return img, nil
}

// Close releases the image's open blobs. It may be called more than once.
func (img *V1Image) Close() error {
	img.closed.Do(func() {
		for _, f := range img.layers {
			f.f.Close()
		}
	})
	return nil
}

// v1ImageCore is what partial.CompressedToImage builds the rest of the
// v1.Image from.
type v1ImageCore struct{ img *V1Image }

func (c v1ImageCore) RawManifest() ([]byte, error)        { return c.img.manifest, nil }
func (c v1ImageCore) RawConfigFile() ([]byte, error)      { return c.img.config, nil }
func (c v1ImageCore) MediaType() (types.MediaType, error) { return c.img.media, nil }

func (c v1ImageCore) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	f, ok := c.img.layers[h]
	if !ok {
		return nil, fmt.Errorf("layer %s: not in the image: %w", h, ErrNotFound)
	}
	return f, nil
}

// A blobFile is a layer blob held open, readable from the start as often
// as a push retries.
type blobFile struct {
	f      *os.File
	size   int64
	desc   v1.Descriptor
	diffID v1.Hash
}

func (f *blobFile) Digest() (v1.Hash, error)            { return f.desc.Digest, nil }
func (f *blobFile) DiffID() (v1.Hash, error)            { return f.diffID, nil }
func (f *blobFile) Size() (int64, error)                { return f.size, nil }
func (f *blobFile) MediaType() (types.MediaType, error) { return f.desc.MediaType, nil }

// Compressed returns the blob's bytes as stored, checked against its
// digest as they are read: the last read fails if they do not match.
func (f *blobFile) Compressed() (io.ReadCloser, error) {
	if f.desc.Digest.Algorithm != "sha256" {
		return nil, fmt.Errorf("layer %s: unsupported digest algorithm", f.desc.Digest)
	}
	return &verifyingReader{r: io.NewSectionReader(f.f, 0, f.size), h: sha256.New(), want: f.desc.Digest}, nil
}

// A verifyingReader hashes what it reads and fails at the end if the
// hash is not the one wanted.
type verifyingReader struct {
	r    io.Reader
	h    hash.Hash
	want v1.Hash
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF {
		if got := hashOf(v.h); got != v.want {
			return n, fmt.Errorf("blob %s holds content with digest %s: %w", v.want, got, ErrDigestMismatch)
		}
	}
	return n, err
}

func (v *verifyingReader) Close() error { return nil }

// openBlob opens a blob of the store for reading. The store is root's, but
// a damaged one must fail clearly rather than hang or leave it: only a
// regular file is opened (O_NONBLOCK keeps a FIFO from blocking the open,
// O_NOFOLLOW refuses a symlink).
func (s *Store) openBlob(h v1.Hash) (*blobFile, error) {
	p := s.blobPath(h)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("blob %s: %w", h, ErrNotFound)
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("blob %s: %s is a symlink, not a blob", h, p)
	case err != nil:
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("blob %s: %s is not a regular file (mode %#o); the store is damaged", h, p, st.Mode&unix.S_IFMT)
	}
	// A regular file ignores O_NONBLOCK; clear it anyway so that reads
	// behave as on any file.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fcntl", Path: p, Err: err}
	}
	return &blobFile{f: os.NewFile(uintptr(fd), p), size: st.Size}, nil
}

// readSmallBlob reads a manifest or config blob whole, as openBlob opens
// it, refusing one larger than kind allows, and checks its digest.
func (s *Store) readSmallBlob(h v1.Hash, kind documentKind) ([]byte, error) {
	f, err := s.openBlob(h)
	if err != nil {
		return nil, err
	}
	defer f.f.Close()
	if f.size > kind.max {
		return nil, fmt.Errorf("blob %s: %d bytes, more than %s may be (%d)", h, f.size, kind.what, kind.max)
	}
	b, err := io.ReadAll(io.LimitReader(f.f, kind.max+1))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", h, err)
	}
	if got := sha256Hash(b); got != h {
		return nil, fmt.Errorf("blob %s holds content with digest %s: %w", h, got, ErrDigestMismatch)
	}
	return b, nil
}
