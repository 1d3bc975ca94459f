package registry

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/registrytest"
	"github.com/berth-dev/berth/layerfs"
)

// TestPullBusybox copies the shared busybox layout into a real registry
// with skopeo, pulls it into an empty store, and checks that the stored
// image is the registry's (same manifest digest), named as pulled, with
// its layer unpacked; a second pull fetches no layer blob.
func TestPullBusybox(t *testing.T) {
	reg := startRegistry(t)
	want := pushBusybox(t, reg, "busybox:1")
	px := startProxy(t, reg.Host)
	store := newStore(t)
	ctx := context.Background()

	var events []Progress
	opts := &PullOptions{Options: Options{Progress: func(p Progress) { events = append(events, p) }}}
	img, err := Pull(ctx, store, px.Host+"/busybox:1", opts)
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest.String() != want {
		t.Errorf("stored digest %s, registry's %s", img.Digest, want)
	}
	if wantName := px.Host + "/busybox:1"; len(img.Names) != 1 || img.Names[0] != wantName {
		t.Errorf("names %q, want [%s]", img.Names, wantName)
	}
	if len(img.Layers) != 1 || img.Layers[0].Digest.String() != busyboxLayer {
		t.Fatalf("layers %+v", img.Layers)
	}
	if n := px.blobGetCount(busyboxLayer); n != 1 {
		t.Errorf("layer fetched %d times, want once", n)
	}
	if last := events[len(events)-1]; !last.Finished || last.Blob.String() != busyboxLayer || last.Done != last.Total {
		t.Errorf("last progress event %+v, want the layer finished", last)
	}
	assertRuns(t, store, img)
	assertNoStaging(t, store)

	// Again: everything is there already.
	events = nil
	again, err := Pull(ctx, store, px.Host+"/busybox:1", opts)
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != img.Digest {
		t.Errorf("second pull gave %s, first %s", again.Digest, img.Digest)
	}
	if n := px.blobGetCount(busyboxLayer); n != 1 {
		t.Errorf("layer fetched %d times over two pulls, want once", n)
	}
	if len(events) != 1 || !events[0].Skipped {
		t.Errorf("second pull's progress %+v, want the layer skipped", events)
	}
}

// assertRuns checks that a root filesystem of img has busybox's files.
func assertRuns(t *testing.T, store *layerfs.Store, img *layerfs.Image) {
	t.Helper()
	ctx := context.Background()
	root, err := store.Prepare(ctx, "pulled", img, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Release(ctx, "pulled")
	if fi, err := os.Lstat(filepath.Join(root.Path, "bin", "busybox")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("rootfs lacks /bin/busybox: %v", err)
	}
}

// TestPullDockerSchema2 pulls an image the registry holds as a Docker
// schema 2 manifest, by tag and then by digest.
func TestPullDockerSchema2(t *testing.T) {
	reg := startRegistry(t)
	want := pushBusybox(t, reg, "team/busybox:v2s2", "--format", "v2s2")
	store := newStore(t)
	ctx := context.Background()
	img, err := Pull(ctx, store, reg.Host+"/team/busybox:v2s2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest.String() != want {
		t.Errorf("stored digest %s, registry's %s", img.Digest, want)
	}
	if img.MediaType != "application/vnd.docker.distribution.manifest.v2+json" {
		t.Errorf("media type %s, want Docker schema 2", img.MediaType)
	}
	assertRuns(t, store, img)

	byDigest, err := Pull(ctx, newStore(t), reg.Host+"/team/busybox@"+want, nil)
	if err != nil {
		t.Fatal(err)
	}
	if byDigest.Digest.String() != want || len(byDigest.Names) != 0 {
		t.Errorf("pull by digest gave %s named %q, want %s unnamed", byDigest.Digest, byDigest.Names, want)
	}
}

// TestPullMissing asks for a tag and a repository the registry does not
// have.
func TestPullMissing(t *testing.T) {
	reg := startRegistry(t)
	pushBusybox(t, reg, "busybox:1")
	store := newStore(t)
	for _, ref := range []string{reg.Host + "/busybox:nope", reg.Host + "/nothing/here:1"} {
		_, err := Pull(context.Background(), store, ref, nil)
		if !errors.Is(err, layerfs.ErrNotFound) {
			t.Errorf("pull %s: %v, want ErrNotFound", ref, err)
		}
	}
	assertStoreEmpty(t, store)
}

// TestPullCorruptBlob corrupts the layer in the registry's storage: the
// pull fails naming the blob, leaves nothing, and succeeds once the blob
// is repaired.
func TestPullCorruptBlob(t *testing.T) {
	reg := startRegistry(t)
	pushBusybox(t, reg, "busybox:1")
	hex := strings.TrimPrefix(busyboxLayer, "sha256:")
	data := filepath.Join(reg.Dir, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")
	good, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 0xff // same size: only the digest can tell
	if err := os.WriteFile(data, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	store := newStore(t)
	ctx := context.Background()
	_, err = Pull(ctx, store, reg.Host+"/busybox:1", nil)
	if !errors.Is(err, layerfs.ErrDigestMismatch) || !strings.Contains(err.Error(), busyboxLayer) {
		t.Fatalf("pull of a corrupt layer: %v, want a digest mismatch naming %s", err, busyboxLayer)
	}
	assertStoreEmpty(t, store)

	if err := os.WriteFile(data, good, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Pull(ctx, store, reg.Host+"/busybox:1", nil); err != nil {
		t.Fatalf("pull after repair: %v", err)
	}
}

// TestPullConnectionCut has the registry's connection cut part-way
// through the layer.
func TestPullConnectionCut(t *testing.T) {
	reg := startRegistry(t)
	pushBusybox(t, reg, "busybox:1")
	px := startProxy(t, reg.Host)
	px.cut(busyboxLayer, 100_000)
	store := newStore(t)
	ctx := context.Background()
	_, err := Pull(ctx, store, px.Host+"/busybox:1", nil)
	if err == nil {
		t.Fatal("pull through a cut connection succeeded")
	}
	t.Logf("cut: %v", err)
	if !strings.Contains(err.Error(), busyboxLayer) {
		t.Errorf("error does not name the layer: %v", err)
	}
	assertStoreEmpty(t, store)

	px.cut("", 0)
	if _, err := Pull(ctx, store, px.Host+"/busybox:1", nil); err != nil {
		t.Fatalf("pull after the registry recovered: %v", err)
	}
}

// TestPullCancel cancels a pull once the layer has begun to arrive.
func TestPullCancel(t *testing.T) {
	reg := startRegistry(t)
	pushBusybox(t, reg, "busybox:1")
	store := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := &PullOptions{Options: Options{Progress: func(p Progress) {
		if p.Done > 0 {
			cancel()
		}
	}}}
	_, err := Pull(ctx, store, reg.Host+"/busybox:1", opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pull: %v, want context.Canceled", err)
	}
	assertStoreEmpty(t, store)
	if _, err := Pull(context.Background(), store, reg.Host+"/busybox:1", nil); err != nil {
		t.Fatalf("pull after a cancelled one: %v", err)
	}
}

// TestPullPlatform pushes an index of two images, for the host's
// architecture and another, and pulls each; a platform the index lacks
// is an error that lists those it has.
func TestPullPlatform(t *testing.T) {
	reg := startRegistry(t)
	other := "s390x"
	if runtime.GOARCH == other {
		other = "ppc64le"
	}
	platforms := []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}, {OS: "linux", Architecture: other}}
	idx := v1.ImageIndex(empty.Index)
	digests := map[string]v1.Hash{}
	for _, p := range platforms {
		img, err := random.Image(4096, 2)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests[p.Architecture] = d
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	ref, err := name.ParseReference(reg.Host + "/multi:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store := newStore(t)
	host, err := Pull(ctx, store, reg.Host+"/multi:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if host.Digest != digests[runtime.GOARCH] {
		t.Errorf("default platform pulled %s, want the %s image %s", host.Digest, runtime.GOARCH, digests[runtime.GOARCH])
	}
	chosen, err := Pull(ctx, store, reg.Host+"/multi:1", &PullOptions{Platform: &v1.Platform{Architecture: other}})
	if err != nil {
		t.Fatal(err)
	}
	if chosen.Digest != digests[other] {
		t.Errorf("platform %s pulled %s, want %s", other, chosen.Digest, digests[other])
	}

	before, _ := store.Images(ctx)
	_, err = Pull(ctx, store, reg.Host+"/multi:1", &PullOptions{Platform: &v1.Platform{OS: "linux", Architecture: "riscv64"}})
	if !errors.Is(err, ErrNoPlatform) {
		t.Fatalf("pull for a missing platform: %v, want ErrNoPlatform", err)
	}
	for _, p := range platforms {
		if !strings.Contains(err.Error(), p.OS+"/"+p.Architecture) {
			t.Errorf("error does not list %s/%s: %v", p.OS, p.Architecture, err)
		}
	}
	after, _ := store.Images(ctx)
	if len(after) != len(before) {
		t.Errorf("failed pull changed the store's images from %d to %d", len(before), len(after))
	}
}

// TestPullWithCredentials pulls from a registry that wants credentials:
// refused without them, and pulled with those Login files.
func TestPullWithCredentials(t *testing.T) {
	const user, password = "puller", "pull-Pa55"
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	if os.Geteuid() != 0 {
		t.Skip("unpacking layers needs root")
	}
	reg := registrytest.Start(t, &registrytest.Options{Htpasswd: htpasswdEntry(t, user, password)})
	skopeo(t, "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", user+":"+password,
		"oci:"+sharedImage(t, busyboxLayout)+":"+busyboxTag, "docker://"+reg.Host+"/private/busybox:1")
	store := newStore(t)
	ctx := context.Background()
	ref := reg.Host + "/private/busybox:1"
	if _, err := Pull(ctx, store, ref, nil); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("pull without credentials: %v, want ErrUnauthorized", err)
	}
	assertStoreEmpty(t, store)
	if err := Login(ctx, reg.Host, user, password, nil); err != nil {
		t.Fatal(err)
	}
	img, err := Pull(ctx, store, ref, nil)
	if err != nil {
		t.Fatalf("pull after login: %v", err)
	}
	if img.Layers[0].Digest.String() != busyboxLayer {
		t.Errorf("pulled layers %+v", img.Layers)
	}
}
