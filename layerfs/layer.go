package layerfs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

func (s *Store) blobPath(h v1.Hash) string { return s.path("blobs", h.Algorithm, h.Hex) }

// layerDir is the unpacked layer, in overlay format, for a diff ID.
func (s *Store) layerDir(diffID v1.Hash) string { return s.path("layers", diffID.Hex, "diff") }

func (s *Store) hasBlob(h v1.Hash) bool { return exists(s.blobPath(h)) }

// readBlob returns a small blob (a manifest or config) after checking that
// it still hashes to its name.
func (s *Store) readBlob(h v1.Hash) ([]byte, error) {
	b, err := os.ReadFile(s.blobPath(h))
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("blob %s: %w", h, ErrNotFound)
		}
		return nil, err
	}
	if got := sha256Hash(b); got != h {
		return nil, fmt.Errorf("blob %s holds content with digest %s: %w", h, got, ErrDigestMismatch)
	}
	return b, nil
}

func sha256Hash(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

// putBlob stores b (a manifest or config), whose digest the caller may
// already have checked.
func (s *Store) putBlob(b []byte) (v1.Hash, error) {
	h := sha256Hash(b)
	if s.hasBlob(h) {
		return h, nil
	}
	if err := writeFileAtomic(s.blobPath(h), b, true); err != nil {
		return h, fmt.Errorf("store blob %s: %w", h, err)
	}
	return h, nil
}

// compression is what a layer blob's first bytes say it is.
type compression int

const (
	uncompressed compression = iota
	gzipped
	zstandard
)

func sniffCompression(magic []byte) compression {
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return gzipped
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return zstandard
	}
	return uncompressed
}

func (c compression) mediaType() types.MediaType {
	switch c {
	case gzipped:
		return types.OCILayer
	case zstandard:
		return types.OCILayerZStd
	}
	return types.OCIUncompressedLayer
}

// decompress returns the uncompressed stream of a possibly compressed
// layer, telling the compression from its first bytes rather than from a
// media type that an archive may have got wrong.
func decompress(br *bufio.Reader) (io.ReadCloser, compression, error) {
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, err
	}
	c := sniffCompression(magic)
	switch c {
	case gzipped:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, c, fmt.Errorf("gzip: %w", err)
		}
		// Layers are often several gzip members concatenated (pigz,
		// appended layers); the tar stream spans them all.
		zr.Multistream(true)
		return zr, c, nil
	case zstandard:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, c, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), c, nil
	}
	return io.NopCloser(br), c, nil
}

// A layerSource is one layer blob to bring into the store.
type layerSource struct {
	open   func() (io.ReadCloser, error)
	digest v1.Hash // of the blob as stored; zero if unknown
	diffID v1.Hash // of the uncompressed tar; zero if unknown
	name   string  // for error messages
}

// storedLayer is what ingestLayer learned about a layer.
type storedLayer struct {
	digest      v1.Hash
	diffID      v1.Hash
	size        int64
	compression compression
}

// ingestLayer makes sure the store holds both the layer blob and its
// unpacked directory, reading the source at most once: the blob is copied,
// hashed, decompressed, hashed again and unpacked in a single pass, and
// both digests are checked before anything is published.
//
// The limits of the import that ctx carries bound it (see
// Store.withImportBudget). A layer ingested outside an import, a commit of
// what a sandbox wrote, is already on disk within the sandbox's own quota:
// only the store's reserve of free space applies to it.
func (s *Store) ingestLayer(ctx context.Context, src layerSource, progress *progressCounter) (storedLayer, error) {
	ctx = s.withSpaceBudget(ctx)
	known := !isZero(src.digest) && !isZero(src.diffID)
	if !isZero(src.diffID) {
		// Concurrent imports of the same layer wait for the first instead
		// of all unpacking it.
		l, err := lockFile(ctx, s.path("locks", src.diffID.Hex), unix.LOCK_EX)
		if err != nil {
			return storedLayer{}, err
		}
		defer l.unlock()
	}
	haveLayer := !isZero(src.diffID) && exists(s.layerDir(src.diffID))
	haveBlob := !isZero(src.digest) && s.hasBlob(src.digest)
	if known && haveLayer && haveBlob {
		return s.describeStoredLayer(src.digest, src.diffID)
	}

	open := src.open
	if haveBlob {
		open = func() (io.ReadCloser, error) { return os.Open(s.blobPath(src.digest)) }
	}
	rc, err := open()
	if err != nil {
		return storedLayer{}, fmt.Errorf("layer %s: %w", src.name, err)
	}
	defer rc.Close()

	st, err := s.newStaging()
	if err != nil {
		return storedLayer{}, err
	}
	defer st.remove()

	digester := sha256.New()
	var raw io.Reader = io.TeeReader(rc, digester)
	if progress != nil && !haveBlob {
		raw = io.TeeReader(raw, progress)
	}
	var blobFile *os.File
	if !haveBlob {
		blobFile, err = os.Create(st.path("blob"))
		if err != nil {
			return storedLayer{}, err
		}
		defer blobFile.Close()
		raw = io.TeeReader(raw, blobFile)
	}
	br := bufio.NewReaderSize(raw, 1<<20)
	tarStream, comp, err := decompress(br)
	if err != nil {
		return storedLayer{}, fmt.Errorf("layer %s: %w", src.name, err)
	}
	defer tarStream.Close()
	differ := sha256.New()
	tee := io.TeeReader(tarStream, differ)
	// What is read without unpacking counts towards the import's limit
	// as well: it costs the decompressing all the same.
	drain := importBudgetFrom(ctx).reader(tee)

	diffDir := st.path("layer/diff")
	if haveLayer {
		_, err = io.Copy(io.Discard, drain)
	} else {
		if err = os.MkdirAll(diffDir, 0o755); err == nil {
			err = unpackTar(ctx, tee, diffDir)
		}
		if err == nil {
			// The tar reader stops at the end-of-archive marker; the rest
			// of the stream still counts towards the digests.
			_, err = io.Copy(io.Discard, drain)
		}
	}
	if err == nil {
		_, err = io.Copy(io.Discard, br)
	}
	if err != nil {
		// A blob that fails to decompress is most often a corrupt one;
		// say so when its digest shows it. One that could not be read
		// to its end (cancelled, cut off) shows nothing of the kind.
		if !isZero(src.digest) && ctx.Err() == nil {
			_, derr := io.Copy(io.Discard, br)
			if errors.Is(derr, ErrDigestMismatch) {
				return storedLayer{}, fmt.Errorf("layer %s: %w", src.name, derr)
			}
			if got := hashOf(digester); derr == nil && got != src.digest {
				return storedLayer{}, fmt.Errorf("layer %s: content has digest %s, want %s (%v): %w", src.name, got, src.digest, err, ErrDigestMismatch)
			}
		}
		return storedLayer{}, fmt.Errorf("layer %s: %w", src.name, err)
	}

	got := storedLayer{digest: hashOf(digester), diffID: hashOf(differ), compression: comp}
	if !isZero(src.digest) && got.digest != src.digest {
		return storedLayer{}, fmt.Errorf("layer %s: content has digest %s, want %s: %w", src.name, got.digest, src.digest, ErrDigestMismatch)
	}
	if !isZero(src.diffID) && got.diffID != src.diffID {
		return storedLayer{}, fmt.Errorf("layer %s: uncompressed content has digest %s, config says %s: %w", src.name, got.diffID, src.diffID, ErrDigestMismatch)
	}

	// Publish: flush the staged files to disk first so that a crash can
	// never leave a published name pointing at unwritten data.
	if err := unix.Syncfs(int(st.lock.f.Fd())); err != nil {
		return storedLayer{}, fmt.Errorf("sync staged layer: %w", err)
	}
	if blobFile != nil {
		if err := os.Rename(blobFile.Name(), s.blobPath(got.digest)); err != nil {
			return storedLayer{}, fmt.Errorf("store blob %s: %w", got.digest, err)
		}
	}
	if !haveLayer && !exists(s.layerDir(got.diffID)) {
		err := os.Rename(st.path("layer"), filepath.Dir(s.layerDir(got.diffID)))
		// Another importer that did not know the diff ID in advance may
		// have published the same layer meanwhile; theirs is as good.
		if err != nil && !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.ENOTEMPTY) {
			return storedLayer{}, fmt.Errorf("store layer %s: %w", got.diffID, err)
		}
	}
	return s.describeStoredLayer(got.digest, got.diffID)
}

func (l storedLayer) descriptor() v1.Descriptor {
	return v1.Descriptor{MediaType: l.compression.mediaType(), Digest: l.digest, Size: l.size}
}

func (s *Store) describeStoredLayer(digest, diffID v1.Hash) (storedLayer, error) {
	f, err := os.Open(s.blobPath(digest))
	if err != nil {
		return storedLayer{}, fmt.Errorf("layer blob %s: %w", digest, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return storedLayer{}, err
	}
	magic := make([]byte, 4)
	n, _ := io.ReadFull(f, magic)
	return storedLayer{digest: digest, diffID: diffID, size: fi.Size(), compression: sniffCompression(magic[:n])}, nil
}

// progressCounter adds up bytes read from import sources.
type progressCounter struct {
	done, total int64
	report      func(done, total int64)
}

func (p *progressCounter) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.report != nil {
		p.report(p.done, p.total)
	}
	return len(b), nil
}

func isZero(h v1.Hash) bool { return h == v1.Hash{} }

// visibleLayers returns the layer directories, top first, that a rootfs of
// them shows: all of them down to the first whose root is opaque, a layer
// that began with .wh..wh..opq to say that it replaces everything below it.
// overlayfs ignores an opaque mark on a lower layer's root, as the copy
// driver does after it, so the layers it hides are left out of the stack
// instead. Layer directories never change once stored, so the same layers
// always give the same answer.
func visibleLayers(lowers []string) ([]string, error) {
	for i, dir := range lowers {
		opaque, err := isOpaqueRoot(dir)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", dir, err)
		}
		if opaque {
			return lowers[:i+1], nil
		}
	}
	return lowers, nil
}

// isOpaqueRoot reports whether the root of the layer directory dir is
// marked opaque, by the overlay attribute or, where the store's filesystem
// refused that, by the marker in OCI form (see unpacker.ociOpaque).
func isOpaqueRoot(dir string) (bool, error) {
	if opaque, err := isOpaque(dir); err != nil || opaque {
		return opaque, err
	}
	var st unix.Stat_t
	switch err := unix.Lstat(filepath.Join(dir, whiteoutOpaque), &st); {
	case err == nil:
		return st.Mode&unix.S_IFMT == unix.S_IFREG, nil
	case err == unix.ENOENT:
		return false, nil
	default:
		return false, &os.PathError{Op: "lstat", Path: filepath.Join(dir, whiteoutOpaque), Err: err}
	}
}
