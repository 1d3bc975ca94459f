package registry

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
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
//
// An image or platform the registry does not have is layerfs.ErrNotFound
// or ErrNoPlatform; credentials it refuses (or wants and did not get),
// ErrUnauthorized; a blob that is not what its digest says,
// layerfs.ErrDigestMismatch.
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
		return nil, fmt.Errorf("pull %s: %w", ref, pullError(err))
	}
	return stored, nil
}

// fetchImage fetches the manifest ref names and returns the image it is,
// or the one of the index it is for the platform opts ask for.
func fetchImage(ctx context.Context, ref name.Reference, opts *PullOptions) (v1.Image, error) {
	ropts := opts.remoteOptions(ctx, ref)
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return nil, pullError(err)
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
			return nil, pullError(err)
		}
		return img, nil
	case mt.IsImage():
		return desc.Image()
	default:
		return nil, fmt.Errorf("manifest %s has media type %q, not an image or index: %w", desc.Digest, clip.Cut(string(mt), 100), ErrUnsupportedManifest)
	}
}

// wantedPlatform is p with its gaps filled from the host's: linux, the
// architecture berth was built for and, on 32-bit arm, the variant it
// was built for (GOARM).
func wantedPlatform(p *v1.Platform) v1.Platform {
	want := v1.Platform{}
	if p != nil {
		want = *p
	}
	if want.OS == "" {
		want.OS = "linux"
	}
	if want.Architecture == "" {
		want.Architecture = runtime.GOARCH
		if want.Variant == "" {
			want.Variant = hostVariant()
		}
	}
	return want
}

// hostVariant is the arm variant berth was built for ("v7" for GOARM=7),
// or "" elsewhere.
func hostVariant() string {
	if runtime.GOARCH != "arm" {
		return ""
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOARM" && s.Value != "" {
				return "v" + strings.SplitN(s.Value, ",", 2)[0]
			}
		}
	}
	return "v7" // Go's default GOARM
}

// choosePlatform picks the image of an index's manifests for want, the
// best of those of its OS and architecture that can run there (see
// platformScore), the first of equals.
func choosePlatform(manifests []v1.Descriptor, want v1.Platform) (v1.Descriptor, error) {
	best, bestScore := -1, 0
	for i, d := range manifests {
		if d.Platform == nil || !d.MediaType.IsImage() {
			continue
		}
		if score := platformScore(*d.Platform, want); score > bestScore {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		return v1.Descriptor{}, fmt.Errorf("%w %s: the index has %s", ErrNoPlatform, platformString(&want), listPlatforms(manifests))
	}
	return manifests[best], nil
}

// platformScore tells how well an image for p fits want: 0 not at all,
// more the better. OS and architecture must be want's. Variants: arm64's
// only one, v8, may be left out on either side; a 32-bit arm vN runs
// images for vN and below (and those that name no variant), the closest
// best; elsewhere a variant want names must be the image's, and with
// none named an image without a variant is preferred to one with.
func platformScore(p, want v1.Platform) int {
	if p.OS != want.OS || p.Architecture != want.Architecture {
		return 0
	}
	switch want.Architecture {
	case "arm64":
		norm := func(v string) string {
			if v == "v8" {
				return ""
			}
			return v
		}
		if norm(p.Variant) == norm(want.Variant) {
			return 2
		}
		return 0
	case "arm":
		w, wok := armVersion(want.Variant)
		v, vok := armVersion(p.Variant)
		switch {
		case p.Variant == "":
			return 1
		case !vok || !wok && want.Variant != "":
			return 0
		case !wok: // none named: any
			return 1 + v
		case v <= w:
			return 1 + v
		}
		return 0
	}
	switch {
	case p.Variant == want.Variant:
		return 2
	case want.Variant == "":
		return 1
	}
	return 0
}

// armVersion parses an arm variant, "v5" to "v8".
func armVersion(v string) (int, bool) {
	if len(v) != 2 || v[0] != 'v' || v[1] < '5' || v[1] > '8' {
		return 0, false
	}
	return int(v[1] - '0'), true
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

// pullError wraps a registry's error with the sentinel that says what
// went wrong, where one does. (It does not compare errors with ==: the
// remote package's may be slices, which panic when compared.)
func pullError(err error) error {
	if u := unauthorized(err); errors.Is(u, ErrUnauthorized) {
		return u
	}
	return notFound(err)
}
