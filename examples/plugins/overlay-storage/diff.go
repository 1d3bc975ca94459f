package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/plugin"
)

// Diff writes key's upper directory, the rootfs's changes, as an OCI
// layer tar, with the built-in driver's own writer: overlayfs's whiteouts
// become .wh. files and its opaque directories a .wh..wh..opq entry, owners
// are mapped back for a user namespace, and the sandbox's files, which it
// may be changing meanwhile, are never followed or opened as anything but
// regular files. It makes the plugin a plugin.Differ (capability "diff"),
// so berth can commit a sandbox's rootfs as an image.
func (s *storage) Diff(ctx context.Context, key string, w io.Writer) error {
	unlock, err := s.lock(key)
	if err != nil {
		return err
	}
	defer unlock()
	upper := filepath.Join(s.dir(key), "upper")
	if _, err := os.Lstat(upper); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rootfs %q: %w", key, plugin.ErrNotFound)
	}
	maps, err := readIDMaps(s.dir(key))
	if err != nil {
		return fmt.Errorf("diff %q: %w", key, err)
	}
	if maps == nil {
		maps = &idmaps{}
	}
	if err := layerfs.WriteOverlayDiff(ctx, w, upper, maps.UIDs, maps.GIDs); err != nil {
		return fmt.Errorf("diff %q: %w", key, err)
	}
	return nil
}
