package layerfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/atomicfile"
)

// GCResult says what GC removed.
type GCResult struct {
	Blobs   int   // blob files
	Layers  int   // unpacked layer directories
	Bytes   int64 // of blobs and layer files
	Staging int   // staging areas left by interrupted operations
}

// GC deletes the blobs and unpacked layers that no image and no prepared
// rootfs uses, and whatever interrupted operations left behind. It waits
// until no other operation on the store is running, in this process or any
// other, and holds them off while it works.
func (s *Store) GC(ctx context.Context) (GCResult, error) {
	var res GCResult
	l, err := lockFile(ctx, s.path("store.lock"), unix.LOCK_EX)
	if err != nil {
		return res, err
	}
	defer l.unlock()

	blobs := map[v1.Hash]bool{}
	layers := map[v1.Hash]bool{}
	markImage := func(h v1.Hash) {
		img, err := s.readImage(h)
		if err != nil {
			s.log.Warn("gc: unreadable image kept out of the live set", "digest", h, "err", err)
			return
		}
		blobs[img.Digest], blobs[img.ConfigDigest] = true, true
		for _, l := range img.Layers {
			blobs[l.Digest], layers[l.DiffID] = true, true
		}
	}
	images, err := os.ReadDir(s.path("images"))
	if err != nil {
		return res, err
	}
	for _, e := range images {
		if atomicfile.IsTemp(e.Name()) {
			os.Remove(s.path("images", e.Name()))
			continue
		}
		markImage(v1.Hash{Algorithm: "sha256", Hex: e.Name()})
	}
	keys, err := s.Rootfses(ctx)
	if err != nil {
		return res, err
	}
	// A rootfs whose record is damaged may still be mounted on layers
	// that nothing else names; which ones, only the overlay knows. Until
	// Release frees it, no layer goes.
	keepLayers := false
	for _, key := range keys {
		rec, err := s.readRootfs(key)
		if err == nil && rec.Driver == "" {
			// No record: as Release says, it may have been lost with
			// the rootfs mounted.
			err = damaged(key, errors.New("no rootfs.json, or one that names no driver"))
		}
		if err != nil {
			if mounts, merr := mountsUnder(s.rootfsDir(key)); merr != nil || len(mounts) > 0 {
				s.log.Warn("gc: a mounted rootfs's record is unreadable; keeping every layer", "key", key, "err", err)
				keepLayers = true
			}
			continue
		}
		for _, id := range rec.Layers {
			layers[id] = true
		}
		if rec.Image.Hex != "" && s.hasBlob(rec.Image) {
			markImage(rec.Image)
		}
	}
	// So do layers that rootfses outside the store use (Hold).
	if !s.heldLayers(layers) {
		keepLayers = true
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}

	// Names that point at removed images go first.
	refs, err := s.refs()
	if err != nil {
		return res, err
	}
	for name, h := range refs {
		if !exists(s.imagePath(h)) {
			os.Remove(s.refPath(name))
		}
	}
	// So do names a kill left half-written: no writer runs while GC
	// holds the store.
	if entries, err := os.ReadDir(s.path("refs")); err == nil {
		for _, e := range entries {
			if atomicfile.IsTemp(e.Name()) {
				os.Remove(s.path("refs", e.Name()))
			}
		}
	}

	entries, err := os.ReadDir(s.path("blobs", "sha256"))
	if err != nil {
		return res, err
	}
	for _, e := range entries {
		h := v1.Hash{Algorithm: "sha256", Hex: e.Name()}
		if blobs[h] {
			continue
		}
		p := s.path("blobs", "sha256", e.Name())
		if fi, err := e.Info(); err == nil {
			res.Bytes += fi.Size()
		}
		if err := os.Remove(p); err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
		res.Blobs++
	}

	entries, err = os.ReadDir(s.path("layers"))
	if err != nil {
		return res, err
	}
	for _, e := range entries {
		if keepLayers || layers[v1.Hash{Algorithm: "sha256", Hex: e.Name()}] {
			continue
		}
		// Move the layer out of sight first, so no half-deleted layer is
		// ever visible under its name.
		st, err := s.newStaging()
		if err != nil {
			return res, err
		}
		err = os.Rename(s.path("layers", e.Name()), st.path("layer"))
		if err == nil {
			res.Bytes += diskUsage(st.path("layer"))
			res.Layers++
		}
		st.remove()
		if err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
	}
	// Nothing holds a layer lock while GC holds the store exclusively.
	if entries, err := os.ReadDir(s.path("locks")); err == nil {
		for _, e := range entries {
			os.Remove(s.path("locks", e.Name()))
		}
	}
	// The templates of disk quotas' filesystems are remade on demand.
	if err := os.RemoveAll(s.path("quota")); err != nil {
		s.log.Warn("gc: remove disk quota templates", "err", err)
	}
	res.Staging = s.cleanStaging(true)
	s.log.Info("gc", "blobs", res.Blobs, "layers", res.Layers, "bytes", res.Bytes, "staging", res.Staging)
	return res, nil
}

// diskUsage adds up the sizes of the files under dir, for GC's report.
func diskUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
