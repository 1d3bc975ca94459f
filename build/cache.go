package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/layerfs"
)

// cache maps a step's key to the image it made, one small file per key
// under <store>/build-cache. An entry only names an image: a hit is used
// only if the store still holds that image, so an image removed (and
// its blobs collected by GC) costs a cache miss and nothing else. The
// images themselves are ordinary untagged images, which GC keeps like
// any other; `berth image rm` of one drops it from the cache.
type cache struct {
	store *layerfs.Store
	dir   string
}

func newCache(store *layerfs.Store) *cache {
	return &cache{store: store, dir: filepath.Join(store.Root(), "build-cache")}
}

// cacheKey is the key of a step: the parent image, the instruction as
// written, the build arguments in effect (which its expansion and a
// RUN's environment see) and, for COPY and ADD, the digest of the
// entries copied.
func cacheKey(parent v1.Hash, instruction string, args map[string]string, sources string) string {
	h := sha256.New()
	fmt.Fprintf(h, "berth-build-cache v1\x00%s\x00%s\x00", parent, instruction)
	for _, k := range slices.Sorted(maps.Keys(args)) {
		fmt.Fprintf(h, "%s=%s\x00", k, args[k])
	}
	fmt.Fprintf(h, "\x00%s", sources)
	return hex.EncodeToString(h.Sum(nil))
}

// get returns the image cached under key, or nil.
func (c *cache) get(ctx context.Context, key string) *layerfs.Image {
	data, err := os.ReadFile(filepath.Join(c.dir, key))
	if err != nil {
		return nil
	}
	digest := strings.TrimSpace(string(data))
	if _, err := v1.NewHash(digest); err != nil {
		return nil
	}
	img, err := c.store.Image(ctx, digest)
	if err != nil {
		return nil
	}
	return img
}

// put records img under key. Concurrent builds may race to write the
// same key; each write is atomic and either result is a valid image.
func (c *cache) put(key string, img *layerfs.Image) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	return atomicfile.Replace(filepath.Join(c.dir, key), []byte(img.Digest.String()+"\n"), 0o600)
}
