package layerfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/clip"
)

// BlobProgress is one report on one layer blob of ImportImage.
type BlobProgress struct {
	Digest   v1.Hash
	Done     int64 // bytes read so far
	Total    int64 // the blob's size
	Skipped  bool  // the store has it: nothing is read
	Finished bool  // stored and checked
}

// ErrUnsupportedImage means an image is not one the store can hold: a
// Docker schema 1 manifest, an index where an image was expected, or
// layers the store cannot fetch or read (foreign or nondistributable
// layers, digests that are not sha256).
var ErrUnsupportedImage = errors.New("unsupported image")

// importLayerTypes are the layer media types an image from elsewhere may
// have. Foreign and nondistributable layers are not among them: their
// blobs live at URLs the manifest names, which berth does not follow.
var importLayerTypes = map[types.MediaType]bool{
	types.DockerLayer:             true,
	types.DockerUncompressedLayer: true,
	types.OCILayer:                true,
	types.OCILayerZStd:            true,
	types.OCIUncompressedLayer:    true,
}

// importImage is ImportImage. The manifest, config and every layer
// descriptor are checked before any layer is read: the manifest an OCI
// or Docker schema 2 image manifest of at most 4 MiB, the config at most
// 8 MiB and hashing to its digest, one sha256 diff ID per layer, every
// layer of a known layer type, with no URLs, a sha256 digest and a size
// within the store's import limit. Each layer is then read once, checked
// against its size, digest and diff ID as it streams and unpacked, under
// one budget of the store's limits for the whole image. The manifest and
// config are written, and the image recorded, only once all layers are.
func (s *Store) importImage(ctx context.Context, img v1.Image, opts *ImportOptions) (*Image, error) {
	if opts == nil {
		opts = &ImportOptions{}
	}
	names, err := nameList(opts.Name, "an image name")
	if err != nil {
		return nil, err
	}
	mb, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("import image: manifest: %w", err)
	}
	id := sha256Hash(mb)
	m, err := checkImageManifest(id, mb)
	if err != nil {
		return nil, fmt.Errorf("import image: %w", err)
	}
	if mt := m.Config.MediaType; mt != types.OCIConfigJSON && mt != types.DockerConfigJSON {
		// An artifact (a signature, a Helm chart) stored as a manifest.
		return nil, fmt.Errorf("import image %s: config media type %q is not an image config's; the manifest is not a container image: %w", id, clip.Cut(string(mt), 100), ErrUnsupportedImage)
	}
	if m.Config.Digest.Algorithm != "sha256" {
		return nil, fmt.Errorf("import image %s: config digest algorithm %q is not sha256: %w", id, clip.Cut(m.Config.Digest.Algorithm, 20), ErrUnsupportedImage)
	}
	if m.Config.Size < 0 || m.Config.Size > configDocument.max {
		// Checked before the config is fetched, which reads it whole.
		return nil, fmt.Errorf("import image %s: %w: config of %d bytes, and %s may be at most %d", id, ErrMemberTooLarge, m.Config.Size, configDocument.what, configDocument.max)
	}
	cb, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("import image %s: config: %w", id, err)
	}
	if got := sha256Hash(cb); got != m.Config.Digest || int64(len(cb)) != m.Config.Size {
		return nil, fmt.Errorf("import image %s: config hashes to %s (%d bytes), manifest says %s (%d bytes): %w", id, got, len(cb), m.Config.Digest, m.Config.Size, ErrDigestMismatch)
	}
	var cfg v1.ConfigFile
	if err := decodeJSON("config "+m.Config.Digest.String(), cb, &cfg); err != nil {
		return nil, fmt.Errorf("import image %s: %w", id, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("import image %s: manifest has %d layers but its config lists %d diff IDs", id, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	var total int64
	for i, d := range m.Layers {
		if err := s.checkImportLayer(d, cfg.RootFS.DiffIDs[i]); err != nil {
			return nil, fmt.Errorf("import image %s: layer %d: %w", id, i, err)
		}
		total += d.Size
	}

	ctx = s.withImportBudget(ctx)
	l, err := s.use(ctx)
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	s.cleanStaging(false)

	progress := &progressCounter{report: opts.Progress, total: total}
	for i, d := range m.Layers {
		if err := s.importImageLayer(ctx, img, d, cfg.RootFS.DiffIDs[i], progress, opts.BlobProgress); err != nil {
			return nil, fmt.Errorf("import image %s: %w", id, err)
		}
	}
	if _, err := s.putBlob(cb); err != nil {
		return nil, fmt.Errorf("import image %s: %w", id, err)
	}
	if _, err := s.putBlob(mb); err != nil {
		return nil, fmt.Errorf("import image %s: %w", id, err)
	}
	if err := s.addImage(id, names); err != nil {
		return nil, fmt.Errorf("import image %s: %w", id, err)
	}
	s.log.Info("imported image", "digest", id, "names", names, "layers", len(m.Layers))
	refs, err := s.refs()
	if err != nil {
		return nil, err
	}
	return s.loadImage(id, refs)
}

// checkImageManifest parses mb, the manifest of image id, and checks that
// it is an image manifest the store reads: OCI or Docker schema 2, within
// the bound on manifests.
func checkImageManifest(id v1.Hash, mb []byte) (*v1.Manifest, error) {
	if int64(len(mb)) > manifestDocument.max {
		return nil, fmt.Errorf("manifest %s: %w: %d bytes, and %s may be at most %d", id, ErrMemberTooLarge, len(mb), manifestDocument.what, manifestDocument.max)
	}
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     types.MediaType `json:"mediaType"`
	}
	if err := decodeJSON("manifest "+id.String(), mb, &probe); err != nil {
		return nil, err
	}
	switch {
	case probe.SchemaVersion == 1:
		return nil, fmt.Errorf("manifest %s is Docker schema 1, which berth does not read (re-push the image with a current client): %w", id, ErrUnsupportedImage)
	case probe.SchemaVersion != 2:
		return nil, fmt.Errorf("manifest %s: schema version %d, not 2: %w", id, probe.SchemaVersion, ErrUnsupportedImage)
	case probe.MediaType.IsIndex():
		return nil, fmt.Errorf("manifest %s is an index, not an image: %w", id, ErrUnsupportedImage)
	case probe.MediaType != "" && probe.MediaType != types.OCIManifestSchema1 && probe.MediaType != types.DockerManifestSchema2:
		return nil, fmt.Errorf("manifest %s has media type %q, not an image manifest: %w", id, clip.Cut(string(probe.MediaType), 100), ErrUnsupportedImage)
	}
	m, err := v1.ParseManifest(bytes.NewReader(mb))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: a field's value is malformed", id)
	}
	return m, nil
}

// checkImportLayer checks a layer's descriptor and diff ID before
// anything of it is read.
func (s *Store) checkImportLayer(d v1.Descriptor, diffID v1.Hash) error {
	switch {
	case len(d.URLs) > 0 || !importLayerTypes[d.MediaType] && d.MediaType.IsLayer():
		return fmt.Errorf("%s is a foreign or nondistributable layer (media type %q), whose blob berth does not fetch from elsewhere: %w", d.Digest, clip.Cut(string(d.MediaType), 100), ErrUnsupportedImage)
	case !importLayerTypes[d.MediaType]:
		return fmt.Errorf("media type %q is not a layer's: %w", clip.Cut(string(d.MediaType), 100), ErrUnsupportedImage)
	case d.Digest.Algorithm != "sha256":
		return fmt.Errorf("digest algorithm %q is not sha256: %w", clip.Cut(d.Digest.Algorithm, 20), ErrUnsupportedImage)
	case diffID.Algorithm != "sha256":
		return fmt.Errorf("diff ID algorithm %q is not sha256: %w", clip.Cut(diffID.Algorithm, 20), ErrUnsupportedImage)
	case d.Size <= 0:
		return fmt.Errorf("%s: descriptor gives a size of %d", d.Digest, d.Size)
	case s.limits.maxBytes >= 0 && d.Size > s.limits.maxBytes:
		return fmt.Errorf("%s: %w: a blob of %s (raise Options.MaxImportSize)", d.Digest, ErrImportTooLarge, formatBytes(d.Size))
	}
	return nil
}

// importImageLayer brings the layer d of img into the store, unless the
// store has both its blob and its unpacked directory.
func (s *Store) importImageLayer(ctx context.Context, img v1.Image, d v1.Descriptor, diffID v1.Hash, progress *progressCounter, report func(BlobProgress)) error {
	if report == nil {
		report = func(BlobProgress) {}
	}
	opened := false
	open := func() (io.ReadCloser, error) {
		opened = true
		layer, err := img.LayerByDigest(d.Digest)
		if err != nil {
			return nil, err
		}
		rc, err := layer.Compressed()
		if err != nil {
			return nil, err
		}
		report(BlobProgress{Digest: d.Digest, Total: d.Size})
		return &sizedBlob{ctx: ctx, rc: rc, left: d.Size, digest: d.Digest, hash: sha256.New(), report: func(done int64) {
			report(BlobProgress{Digest: d.Digest, Done: done, Total: d.Size})
		}}, nil
	}
	src := layerSource{name: d.Digest.String(), digest: d.Digest, diffID: diffID, open: open}
	if _, err := s.ingestLayer(ctx, src, progress); err != nil {
		return err
	}
	if !opened {
		progress.total -= d.Size
		report(BlobProgress{Digest: d.Digest, Total: d.Size, Skipped: true})
		return nil
	}
	report(BlobProgress{Digest: d.Digest, Done: d.Size, Total: d.Size, Finished: true})
	return nil
}

// sizedBlob is a blob read from elsewhere that must be exactly as long as
// its descriptor says: one that goes on is cut off with an error rather
// than read to its end, and one that stops short is an error too. Its
// digest is checked as its last byte is read. It stops when ctx is done.
type sizedBlob struct {
	ctx    context.Context
	rc     io.ReadCloser
	left   int64
	done   int64
	digest v1.Hash
	hash   hash.Hash
	report func(done int64)
	err    error // the first error other than io.EOF
}

func (b *sizedBlob) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		// Told again to whoever reads on, as a reader that drains the
		// rest after a failed unpack does.
		b.err = err
	}
	return n, err
}

func (b *sizedBlob) read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if b.left == 0 {
		var one [1]byte
		n, err := io.ReadFull(b.rc, one[:])
		switch {
		case n > 0:
			return 0, fmt.Errorf("blob %s is longer than its descriptor's %d bytes: %w", b.digest, b.done, ErrDigestMismatch)
		case errors.Is(err, io.EOF):
			return 0, io.EOF
		}
		return 0, fmt.Errorf("blob %s: %w", b.digest, err)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.hash.Write(p[:n])
	b.left -= int64(n)
	b.done += int64(n)
	if n > 0 {
		b.report(b.done)
	}
	if b.left == 0 {
		// Checked here, whatever the source says of it, so that a
		// corrupt blob is told as one.
		if got := hashOf(b.hash); got != b.digest {
			return n, fmt.Errorf("blob %s: content has digest %s: %w", b.digest, got, ErrDigestMismatch)
		}
	}
	if errors.Is(err, io.EOF) && b.left > 0 {
		return n, fmt.Errorf("blob %s ends after %d bytes, its descriptor says %d: %w", b.digest, b.done, b.done+b.left, io.ErrUnexpectedEOF)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return n, fmt.Errorf("blob %s: %w", b.digest, err)
	}
	return n, err
}

func (b *sizedBlob) Close() error { return b.rc.Close() }
