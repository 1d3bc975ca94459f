package bench_test

// Benchmarks of shipping: pull and push throughput against the reference
// registry on 127.0.0.1 (internal/registrytest). With the build
// benchmarks beside them and Reset's in the sandbox package, `make
// bench-ship` runs them all:
//
//	go test -run '^$' -bench '^Benchmark(Pull|Push|Build|BuildCached)$' -benchtime 10x -timeout 20m ./bench/
//	go test -run '^$' -bench 'Reset' -timeout 10m ./sandbox/
//
// Throughput is the image's compressed layer bytes over the whole pull
// or push (manifest and config requests, digest checks, unpacking into
// the store included), which go test prints as MB/s (10^6 bytes).
// They need root, Debian's docker-registry and ../shared/images.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/registrytest"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/registry"
)

// shipLayerSizes are the uncompressed sizes of the generated image's
// layers: one large layer of random bytes (which does not compress, so
// that what crosses the wire is what is measured) and a few small ones,
// as a real image has.
var shipLayerSizes = []int64{64 << 20, 1 << 20, 64 << 10, 4 << 10}

// shipImage is the generated image, imported into a store as
// ship:bench, and the compressed bytes of its layers.
type shipImage struct {
	store *layerfs.Store
	bytes int64
}

// newShipImage generates the image into an OCI layout under tmp and
// imports it into a new store there.
func newShipImage(b *testing.B, tmp string) *shipImage {
	b.Helper()
	img := empty.Image
	var total int64
	for i, size := range shipLayerSizes {
		l, err := random.Layer(size, types.OCILayer)
		if err != nil {
			b.Fatal(err)
		}
		n, err := l.Size()
		if err != nil {
			b.Fatal(err)
		}
		total += n
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{CreatedBy: fmt.Sprintf("layer %d", i)}}); err != nil {
			b.Fatal(err)
		}
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		b.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = []string{"/bin/sh"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(tmp, "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		b.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		b.Fatal(err)
	}
	store, err := layerfs.Open(filepath.Join(tmp, "store"), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := store.Import(context.Background(), dir, &layerfs.ImportOptions{Name: "ship:bench"}); err != nil {
		b.Fatalf("import the generated image: %v", err)
	}
	return &shipImage{store: store, bytes: total}
}

// BenchmarkPull pulls the generated image from a registry on 127.0.0.1
// into an empty store each time.
func BenchmarkPull(b *testing.B) {
	ctx := context.Background()
	tmp := benchRoot(b)
	reg := registrytest.Start(b, nil)
	img := newShipImage(b, tmp)
	ref := reg.Host + "/bench/pull:latest"
	if _, err := registry.Push(ctx, img.store, "ship:bench", ref, nil); err != nil {
		b.Fatalf("push the image to pull: %v", err)
	}
	b.SetBytes(img.bytes)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		dir := filepath.Join(tmp, fmt.Sprintf("pull-%d", i))
		store, err := layerfs.Open(dir, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := registry.Pull(ctx, store, ref, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkPush pushes the generated image to a new repository each
// time, so that the registry holds none of its blobs under that name
// and every byte is sent.
func BenchmarkPush(b *testing.B) {
	ctx := context.Background()
	tmp := benchRoot(b)
	reg := registrytest.Start(b, nil)
	img := newShipImage(b, tmp)
	b.SetBytes(img.bytes)
	b.ResetTimer()
	for i := range b.N {
		ref := fmt.Sprintf("%s/bench/push-%d:latest", reg.Host, i)
		if _, err := registry.Push(ctx, img.store, "ship:bench", ref, nil); err != nil {
			b.Fatal(err)
		}
	}
}
