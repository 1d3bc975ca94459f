package registry

import (
	"context"
	"fmt"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
)

// pull is Pull. The manifest ref names is fetched first (by digest, it
// must hash to that digest); an index is resolved to the image for the
// platform asked for, or the host's. The image is then brought in by
// layerfs.Store.ImportImage, which checks and bounds everything the
// registry sends and fetches no layer the store already has. The image is
// tagged with storeName(ref): busybox:latest for "busybox", the full name
// for other registries, nothing for a reference by digest alone.
func pull(ctx context.Context, store *layerfs.Store, s string, opts *PullOptions) (*layerfs.Image, error) {
	if opts == nil {
		opts = &PullOptions{}
	}
	ref, err := parseReference(s, opts.Insecure)
	if err != nil {
		return nil, err
	}
	img, err := fetchImage(ctx, ref, opts)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	rep := newReporter(opts.Progress)
	iopts := &layerfs.ImportOptions{
		Name: storeName(ref),
		BlobProgress: func(p layerfs.BlobProgress) {
			rep.report(Progress{Blob: p.Digest, Done: p.Done, Total: p.Total, Skipped: p.Skipped, Finished: p.Finished})
		},
	}
	stored, err := store.ImportImage(ctx, img, iopts)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, notFound(err))
	}
	return stored, nil
}

// fetchImage fetches the manifest ref names and returns the image it is,
// or the one of the index it is for the platform opts ask for.
func fetchImage(ctx context.Context, ref name.Reference, opts *PullOptions) (v1.Image, error) {
	ropts := opts.remoteOptions(ctx, ref)
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return nil, notFound(err)
	}
	if d, ok := ref.(name.Digest); ok && desc.Digest.String() != d.DigestStr() {
		// The remote package checks this too; a pin is worth two looks.
		return nil, fmt.Errorf("registry served manifest %s for %s: %w", desc.Digest, d.DigestStr(), layerfs.ErrDigestMismatch)
	}
	switch mt := desc.MediaType; {
	case mt == types.DockerManifestSchema1 || mt == types.DockerManifestSchema1Signed:
		return nil, fmt.Errorf("the registry serves it as a Docker schema 1 manifest, which berth does not read (re-push it with a current client): %w", ErrUnsupportedManifest)
	case mt.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		want := wantedPlatform(opts.Platform)
		child, err := choosePlatform(im.Manifests, want)
		if err != nil {
			return nil, fmt.Errorf("index %s: %w", desc.Digest, err)
		}
		img, err := idx.Image(child.Digest)
		if err != nil {
			return nil, notFound(err)
		}
		return img, nil
	case mt.IsImage():
		return desc.Image()
	default:
		return nil, fmt.Errorf("manifest %s has media type %q, not an image or index: %w", desc.Digest, clip.Cut(string(mt), 100), ErrUnsupportedManifest)
	}
}

// wantedPlatform is p with its gaps filled from the host's: linux and
// the architecture berth was built for.
func wantedPlatform(p *v1.Platform) v1.Platform {
	want := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if p != nil {
		want = *p
		if want.OS == "" {
			want.OS = "linux"
		}
		if want.Architecture == "" {
			want.Architecture = runtime.GOARCH
		}
	}
	return want
}

// choosePlatform picks the image of an index's manifests for want: one of
// its OS and architecture whose variant is want's, or (want giving none)
// the first without a variant, else the first of any. arm64's variant v8
// is its only one, and may be left out on either side.
func choosePlatform(manifests []v1.Descriptor, want v1.Platform) (v1.Descriptor, error) {
	variant := func(p *v1.Platform) string {
		if p.Architecture == "arm64" && p.Variant == "v8" {
			return ""
		}
		return p.Variant
	}
	wantVariant := variant(&want)
	var first *v1.Descriptor
	for i, d := range manifests {
		p := d.Platform
		if p == nil || !d.MediaType.IsImage() || p.OS != want.OS || p.Architecture != want.Architecture {
			continue
		}
		if variant(p) == wantVariant {
			return d, nil
		}
		if wantVariant == "" && first == nil {
			first = &manifests[i]
		}
	}
	if first != nil {
		return *first, nil
	}
	return v1.Descriptor{}, fmt.Errorf("%w %s: the index has %s", ErrNoPlatform, platformString(&want), listPlatforms(manifests))
}

// listPlatforms names the platforms of manifests, a few of them: an index
// may list thousands.
func listPlatforms(manifests []v1.Descriptor) string {
	const shown = 16
	var names []string
	for _, d := range manifests {
		if d.Platform == nil || !d.MediaType.IsImage() {
			continue
		}
		if len(names) == shown {
			names = append(names, "…")
			break
		}
		names = append(names, platformString(d.Platform))
	}
	if len(names) == 0 {
		return "no image with a platform"
	}
	return clip.Cut(strings.Join(names, ", "), 1000)
}

func platformString(p *v1.Platform) string {
	s := clip.Cut(p.OS, 40) + "/" + clip.Cut(p.Architecture, 40)
	if p.Variant != "" {
		s += "/" + clip.Cut(p.Variant, 40)
	}
	return s
}
