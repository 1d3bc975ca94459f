package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
)

// Commit saves what changed in key's rootfs as a new image in berth's
// store: the image key was prepared from, with the plugin's Diff added as
// a layer (see layerfs.Store.CommitDiff). A plugin without capability
// "diff" fails it with ErrUnsupported.
//
// Which image that is comes from berth's own record of the rootfs, never
// from the plugin; and the plugin's tar is unpacked as an imported layer
// is, under the store's import limits, with entries that would leave the
// layer refused. A refused or failed diff leaves no image.
func (s *Storage) Commit(ctx context.Context, key string, opts *layerfs.CommitOptions) (*layerfs.Image, error) {
	if !keyRE.MatchString(key) {
		return nil, fmt.Errorf("commit: rootfs key %s: %w", clip.Quote(key), errBothNotFound)
	}
	_, info, err := s.live(ctx)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", key, err)
	}
	if !info.Has(CapDiff) {
		return nil, fmt.Errorf("commit %s: plugin %s cannot diff (no capability %q): %w", key, s.c.name, CapDiff, ErrUnsupported)
	}
	parent, err := s.recordedImage(key)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", key, err)
	}
	diff := func(ctx context.Context, w io.Writer) error { return s.Diff(ctx, key, w) }
	img, err := s.store.CommitDiff(ctx, parent, diff, opts)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", key, err)
	}
	return img, nil
}

// maxRecordSize bounds the read of a rootfs record, a line of JSON.
const maxRecordSize = 64 << 10

// recordedImage returns the image berth prepared key's rootfs from, as its
// record says: only its digest is filled in.
func (s *Storage) recordedImage(key string) (*layerfs.Image, error) {
	// berth wrote the record as a plain file in its own directory: a link
	// there is not berth's.
	f, err := os.OpenFile(filepath.Join(s.keyDir(key), recordFile), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no record of rootfs %s: %w", clip.Quote(key), errBothNotFound)
		}
		return nil, fmt.Errorf("record of rootfs %s: %w", key, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRecordSize+1))
	if err != nil {
		return nil, fmt.Errorf("record of rootfs %s: %w", key, err)
	}
	var rec rootfsRecord
	if len(b) > maxRecordSize {
		err = errors.New("too large")
	} else {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil {
		return nil, fmt.Errorf("record of rootfs %s: %w", key, err)
	}
	h, err := v1.NewHash(rec.Image)
	if err != nil {
		return nil, fmt.Errorf("record of rootfs %s: image %s: %w", key, clip.Quote(rec.Image), err)
	}
	return &layerfs.Image{Digest: h}, nil
}
