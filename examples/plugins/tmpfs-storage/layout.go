package main

// What is on a rootfs's tmpfs, and the overlay made of it and the
// image's layers.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/plugin"
)

// Layout of one rootfs: root/<key> is the mount point of its tmpfs, which
// holds the overlay's upper and work directories and the record that says
// the rootfs is complete. Nothing else keeps state, so a plugin started
// again (after berth restarted it, or after a kill -9) knows every rootfs
// from its root alone: the tmpfses outlive the process that mounted them.
const (
	upperDir   = "upper"
	workDir    = "work"
	emptyDir   = "empty" // the lower of an image without layers
	recordFile = "rootfs.json"
)

// maxLowers is the most lower layers overlayfs stacks (OVL_MAX_STACK).
const maxLowers = 500

// overlayOptions keep the upper directory a plain diff of the lowers, one
// that Diff can read as an OCI layer: redirects, metacopy-only copy-ups
// and the inode index would all leave state only overlayfs understands.
var overlayOptions = []string{"redirect_dir=off", "index=off", "metacopy=off"}

// record is what the plugin knows of a rootfs, kept on its tmpfs.
type record struct {
	Key     string          `json:"key"`
	Image   string          `json:"image"`
	Lowers  []string        `json:"lowers"` // top first
	UIDMap  []layerfs.IDMap `json:"uidMap,omitempty"`
	GIDMap  []layerfs.IDMap `json:"gidMap,omitempty"`
	Size    int64           `json:"size"`
	Inodes  int64           `json:"inodes"`
	Created time.Time       `json:"created"`
}

// overlay is the mount that assembles rec's rootfs in dir.
func (rec *record) overlay(dir string) plugin.Mount {
	opts := []string{
		"lowerdir=" + strings.Join(rec.Lowers, ":"),
		"upperdir=" + filepath.Join(dir, upperDir),
		"workdir=" + filepath.Join(dir, workDir),
	}
	return plugin.Mount{
		Type:    "overlay",
		Source:  "overlay",
		Options: append(opts, overlayOptions...),
		// overlayfs cannot be idmapped itself; berth idmaps its layers
		// and writes through it then keep host ids on the tmpfs.
		IDMap: len(rec.UIDMap) > 0,
	}
}

// lowerDirs checks the layers' directories and returns those overlayfs
// is to show, top first. A layer whose root is opaque hides every layer
// below it, which overlayfs would not do by itself (it ignores an opaque
// layer root).
func lowerDirs(layers []plugin.Layer) ([]string, error) {
	lowers := make([]string, 0, len(layers))
	for i := len(layers) - 1; i >= 0; i-- {
		dir := layers[i].UnpackedPath
		if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir {
			return nil, fmt.Errorf("layer %s: unpacked path %q is not absolute and clean", layers[i].DiffID, dir)
		}
		if strings.ContainsAny(dir, ",:\\") {
			return nil, fmt.Errorf("layer %s: unpacked path %q contains a comma, colon or backslash, which overlayfs's options cannot carry", layers[i].DiffID, dir)
		}
		var st unix.Stat_t
		if err := unix.Lstat(dir, &st); err != nil {
			return nil, fmt.Errorf("layer %s: %w", layers[i].DiffID, &os.PathError{Op: "lstat", Path: dir, Err: err})
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil, fmt.Errorf("layer %s: %s is not a directory", layers[i].DiffID, dir)
		}
		lowers = append(lowers, dir)
		if opaque, err := isOpaque(dir); err != nil {
			return nil, fmt.Errorf("layer %s: %w", layers[i].DiffID, err)
		} else if opaque {
			break
		}
	}
	if len(lowers) > maxLowers {
		return nil, fmt.Errorf("%d layers exceed overlayfs's limit of %d", len(lowers), maxLowers)
	}
	return lowers, nil
}

// isOpaque reports whether overlayfs marked directory path opaque.
func isOpaque(path string) (bool, error) {
	buf := make([]byte, 1)
	n, err := unix.Lgetxattr(path, "trusted.overlay.opaque", buf)
	switch err {
	case nil:
		return n == 1 && buf[0] == 'y', nil
	case unix.ENODATA, unix.ENOTSUP, unix.ERANGE:
		return false, nil
	}
	return false, &os.PathError{Op: "getxattr", Path: path, Err: err}
}

// makeLayout makes the overlay's directories on dir's tmpfs and returns
// the lowers to mount, top first. The upper directory, which is the
// rootfs's root, gets the owner and mode of the image's root, its owner
// mapped to the host when the rootfs is for a user namespace.
func makeLayout(dir string, lowers []string, rec *record) ([]string, error) {
	uid, gid, mode := uint32(0), uint32(0), uint32(0o755)
	if len(lowers) == 0 {
		empty := filepath.Join(dir, emptyDir)
		if err := os.Mkdir(empty, 0o755); err != nil {
			return nil, err
		}
		lowers = []string{empty}
	} else {
		var st unix.Stat_t
		if err := unix.Stat(lowers[0], &st); err != nil {
			return nil, &os.PathError{Op: "stat", Path: lowers[0], Err: err}
		}
		uid, gid, mode = st.Uid, st.Gid, st.Mode&0o7777
	}
	if len(rec.UIDMap) > 0 {
		uid, gid = layerfs.HostID(rec.UIDMap, uid), layerfs.HostID(rec.GIDMap, gid)
	}
	upper := filepath.Join(dir, upperDir)
	if err := os.Mkdir(upper, 0o700); err != nil {
		return nil, err
	}
	if err := unix.Lchown(upper, int(uid), int(gid)); err != nil {
		return nil, &os.PathError{Op: "chown", Path: upper, Err: err}
	}
	if err := unix.Chmod(upper, mode); err != nil {
		return nil, &os.PathError{Op: "chmod", Path: upper, Err: err}
	}
	if err := os.Mkdir(filepath.Join(dir, workDir), 0o700); err != nil {
		return nil, err
	}
	return lowers, nil
}

// writeRecord writes rec into dir whole or not at all: a record on the
// tmpfs means the rootfs was complete.
func writeRecord(dir string, rec *record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+recordFile)
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, recordFile))
}

// readRecord reads the record of key's complete rootfs.
func (s *storage) readRecord(key string) (*record, error) {
	b, err := os.ReadFile(filepath.Join(s.cfg.root, key, recordFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("rootfs %q: %w", key, plugin.ErrNotFound)
		}
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("rootfs %q: record: %w", key, err)
	}
	return &rec, nil
}
