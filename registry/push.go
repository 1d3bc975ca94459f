package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
)

// ErrNoDestination means Push was given no destination and the image's
// name does not say which registry it belongs to.
var ErrNoDestination = errors.New("no registry to push to")

// Push sends the stored image src names to the registry reference dest
// and returns the manifest digest the registry holds it under, which is
// the store's: the manifest, config and layers are sent byte for byte.
//
// When dest is empty, src is pushed to the name it has. That name must
// say which registry it goes to (registry.example/team/app:1,
// docker.io/library/busybox:1): a short name such as busybox:1 is
// refused with ErrNoDestination rather than published to Docker Hub.
//
// Blobs the registry already has are not sent; opts.Progress reports
// them Skipped once the push is done (the remote package asks after each
// blob, or finds the whole manifest there, without saying so), and every
// blob sent as its bytes are read, Finished when the last one is.
//
// A stored image that is missing is an error wrapping
// layerfs.ErrNotFound; credentials the registry refuses, ErrUnauthorized;
// a blob whose bytes in the store no longer match its digest,
// layerfs.ErrDigestMismatch (the push stops before the registry takes it).
func Push(ctx context.Context, store *layerfs.Store, src, dest string, opts *PushOptions) (v1.Hash, error) {
	if opts == nil {
		opts = &PushOptions{}
	}
	if dest == "" {
		var err error
		if dest, err = pushDestination(ctx, store, src); err != nil {
			return v1.Hash{}, err
		}
	}
	ref, err := parseReference(dest, opts.Insecure)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", clip.String(dest), err)
	}
	img, err := store.V1Image(ctx, src)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", clip.String(src), err)
	}
	defer img.Close()
	want, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", clip.String(src), err)
	}

	if d, ok := ref.(name.Digest); ok && d.DigestStr() != want.String() {
		return v1.Hash{}, fmt.Errorf("push %s to %s: the image's digest is %s: %w", clip.String(src), ref, want, layerfs.ErrDigestMismatch)
	}

	tr := newPushTracker(newReporter(opts.Progress))
	counted, err := tr.wrap(img)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", clip.String(src), err)
	}
	ropts := opts.remoteOptions(ctx, ref)
	if err := remote.Write(ref, counted, ropts...); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s to %s: %w", clip.String(src), ref, classify(err))
	}
	tr.finishSkipped()

	// The registry names the manifest by the digest of the bytes it was
	// sent, which are the store's; ask rather than assume, so that a
	// registry that rewrote it is noticed.
	desc, err := remote.Head(ref, ropts...)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s to %s: checking what the registry holds: %w", clip.String(src), ref, classify(err))
	}
	if desc.Digest != want {
		return v1.Hash{}, fmt.Errorf("push %s to %s: the registry holds manifest %s, not the store's %s: %w", clip.String(src), ref, desc.Digest, want, layerfs.ErrDigestMismatch)
	}
	return want, nil
}

// pushDestination is where src goes when Push is given no destination:
// its own name, if that names a registry. src may be a digest, in which
// case the image's one registry-qualified name is used.
func pushDestination(ctx context.Context, store *layerfs.Store, src string) (string, error) {
	img, err := store.Image(ctx, src)
	if err != nil {
		return "", fmt.Errorf("push %s: %w", clip.String(src), err)
	}
	if r, err := layerfs.ParseReference(src); err == nil && r.Digest == "" && slices.Contains(img.Names, r.String()) {
		if hasRegistry(r.Name) {
			return r.String(), nil
		}
		hub := "docker.io/" + r.String()
		if !strings.Contains(r.Name, "/") {
			hub = "docker.io/library/" + r.String()
		}
		return "", fmt.Errorf("push %s: %w: the name has no registry; give a destination such as %s or REGISTRY/%s", clip.String(src), ErrNoDestination, hub, r)
	}
	var qualified []string
	for _, n := range img.Names {
		if r, err := layerfs.ParseReference(n); err == nil && hasRegistry(r.Name) {
			qualified = append(qualified, n)
		}
	}
	if len(qualified) != 1 {
		return "", fmt.Errorf("push %s: %w: the image has %d names that name a registry (%s); give a destination", clip.String(src), ErrNoDestination, len(qualified), strings.Join(qualified, ", "))
	}
	return qualified[0], nil
}

// hasRegistry tells whether a repository name begins with a registry, as
// Docker decides it: a first component with a dot or a port, or
// localhost.
func hasRegistry(repo string) bool {
	first, _, ok := strings.Cut(repo, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
}

// A pushTracker turns the reads of a push into Progress reports, one
// blob at a time: bytes as a layer is read, Finished when all of it has
// been, and, once the push is done, Skipped for every blob that was never
// read because the registry had it already.
type pushTracker struct {
	rep *reporter

	mu       sync.Mutex
	blobs    []v1.Hash
	total    map[v1.Hash]int64
	finished map[v1.Hash]bool
}

func newPushTracker(rep *reporter) *pushTracker {
	return &pushTracker{rep: rep, total: map[v1.Hash]int64{}, finished: map[v1.Hash]bool{}}
}

// wrap returns img with its layers and config counted as they are read.
func (t *pushTracker) wrap(img v1.Image) (v1.Image, error) {
	cl, err := partial.ConfigLayer(img)
	if err != nil {
		return nil, err
	}
	config, err := t.layer(cl)
	if err != nil {
		return nil, err
	}
	ls, err := img.Layers()
	if err != nil {
		return nil, err
	}
	layers := make([]v1.Layer, len(ls))
	for i, l := range ls {
		if layers[i], err = t.layer(l); err != nil {
			return nil, err
		}
	}
	return &trackedImage{Image: img, config: config, layers: layers}, nil
}

func (t *pushTracker) layer(l v1.Layer) (v1.Layer, error) {
	h, err := l.Digest()
	if err != nil {
		return nil, err
	}
	size, err := l.Size()
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	if _, seen := t.total[h]; !seen {
		t.blobs = append(t.blobs, h)
		t.total[h] = size
	}
	t.mu.Unlock()
	return &trackedLayer{Layer: l, t: t, digest: h, size: size}, nil
}

// read reports that done bytes of blob h have been read, all of them
// when eof.
func (t *pushTracker) read(h v1.Hash, done int64, eof bool) {
	t.mu.Lock()
	if eof {
		t.finished[h] = true
	}
	t.mu.Unlock()
	t.rep.report(Progress{Blob: h, Done: done, Total: t.total[h], Finished: eof})
}

// finishSkipped reports as Skipped every blob the push did not read.
func (t *pushTracker) finishSkipped() {
	t.mu.Lock()
	var skipped []v1.Hash
	for _, h := range t.blobs {
		if !t.finished[h] {
			skipped = append(skipped, h)
		}
	}
	t.mu.Unlock()
	for _, h := range skipped {
		t.rep.report(Progress{Blob: h, Done: t.total[h], Total: t.total[h], Skipped: true, Finished: true})
	}
}

// trackedImage is an image whose layers and config are trackedLayers.
type trackedImage struct {
	v1.Image
	config v1.Layer
	layers []v1.Layer
}

func (i *trackedImage) Layers() ([]v1.Layer, error) { return i.layers, nil }

// ConfigLayer is what the remote package uploads as the config blob
// (see partial.ConfigLayer).
func (i *trackedImage) ConfigLayer() (v1.Layer, error) { return i.config, nil }

type trackedLayer struct {
	v1.Layer
	t      *pushTracker
	digest v1.Hash
	size   int64
}

func (l *trackedLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	return &countingReader{ReadCloser: rc, l: l}, nil
}

// countingReader reports the bytes of one attempt at sending a blob; a
// retry opens another and starts again from zero.
type countingReader struct {
	io.ReadCloser
	l    *trackedLayer
	done int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.done += int64(n)
	if n > 0 || err == io.EOF {
		r.l.t.read(r.l.digest, r.done, err == io.EOF && r.done == r.l.size)
	}
	return n, err
}

// classify wraps a registry's error with the sentinel that says what
// went wrong, where one does.
func classify(err error) error {
	if u := unauthorized(err); u != err {
		return u
	}
	return notFound(err)
}
