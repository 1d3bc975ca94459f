package layerfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/mountinfo"
)

// A driver makes a writable root filesystem out of read-only unpacked layer
// directories.
type driver interface {
	// Name is "overlay" or "copy".
	Name() string

	// Mount builds a writable root filesystem from lowers (absolute paths
	// of unpacked layer directories in overlay format, topmost first) and
	// returns its path. All state lives under dir, an existing empty
	// directory private to this rootfs. With ids, every file shows as
	// owned by the host id its owner maps to; the overlay driver fails
	// with ErrIDMapUnsupported where it cannot do that.
	Mount(ctx context.Context, lowers []string, dir string, ids *idMapping) (rootfs string, err error)

	// Unmount undoes Mount. It succeeds on a dir whose Mount failed half-way
	// or was interrupted by a crash, and is idempotent. It does not remove
	// dir itself.
	Unmount(ctx context.Context, dir string) error

	// Changes writes what was changed in dir's rootfs, relative to lowers,
	// as an OCI layer tar. With ids, the rootfs was mounted with them, and
	// the tar holds owners mapped back to the image's.
	Changes(ctx context.Context, lowers []string, dir string, ids *idMapping, w io.Writer) error
}

// newDriver returns the named driver. For the empty name it tries a real
// overlay mount under tmp, which must be on the same filesystem as the
// store, and returns the overlay driver if that works, else the copy driver.
// A success is remembered in the file cache (if not ""), for this boot and
// this filesystem: see probeKey.
func newDriver(name, tmp, cache string, log *slog.Logger) (driver, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch name {
	case "overlay":
		return &overlayDriver{log: log, volatile: true}, nil
	case "copy":
		return &copyDriver{log: log}, nil
	case "":
		start := time.Now()
		key, kerr := probeKey(tmp)
		if kerr != nil {
			log.Debug("overlayfs probe not remembered", "err", kerr)
			cache = ""
		}
		if cache != "" {
			if b, err := os.ReadFile(cache); err == nil && string(b) == key {
				log.Debug("overlayfs probe remembered", "file", cache)
				return &overlayDriver{log: log, volatile: true}, nil
			}
		}
		// Failing to make the scratch directory says nothing about
		// overlayfs; falling back to the copy driver for it would make every
		// rootfs cost a full copy for no reason.
		root, err := os.MkdirTemp(tmp, "overlay-probe-")
		if err != nil {
			return nil, fmt.Errorf("probe overlayfs: %w", err)
		}
		if err := probeOverlay(root, log); err != nil {
			log.Warn("overlayfs is not usable for the store; using the copy driver, which copies each image in full", "dir", tmp, "err", err, "probe", time.Since(start))
			return &copyDriver{log: log}, nil
		}
		log.Debug("overlayfs probe succeeded", "dir", tmp, "probe", time.Since(start))
		if cache != "" {
			if err := writeFileAtomic(cache, []byte(key), false); err != nil {
				log.Warn("remember the overlayfs probe", "err", err)
			}
		}
		return &overlayDriver{log: log, volatile: true}, nil
	}
	return nil, fmt.Errorf("unknown storage driver %q (want %q or %q)", name, "overlay", "copy")
}

// probeKey says what a probe's success holds for: this boot (the kernel,
// its modules and their settings) and the filesystem dir is on. Probing
// mounts and unmounts an overlay, 3 to 10 ms here: most of what a
// short-lived process such as `berth run` spent before it started anything.
// Only a success is remembered; a failure is probed again, since what made
// it may be mended without a reboot.
func probeKey(dir string) (string, error) {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return "", &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	return fmt.Sprintf("overlay boot=%s dev=%d\n", strings.TrimSpace(string(boot)), st.Dev), nil
}

// probeOverlay mounts a small overlay in root, an empty directory it
// removes, the way the overlay driver would and checks that it shows what
// the store relies on: whiteouts and opaque directories in lower layers, and
// writes landing in the upper directory. Merely mounting is not enough: a
// filesystem that ignores trusted.overlay.* xattrs mounts fine and shows
// the wrong tree.
func probeOverlay(root string, log *slog.Logger) (err error) {
	mounted := false
	defer func() {
		if mounted {
			return // removing root would reach into the mount
		}
		if rerr := os.RemoveAll(root); rerr != nil && err == nil {
			err = rerr
		}
	}()

	top := filepath.Join(root, "top")
	bottom := filepath.Join(root, "bottom")
	mnt := filepath.Join(root, "mnt")
	for _, d := range []string{top, bottom, mnt, filepath.Join(top, "d"), filepath.Join(bottom, "d")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	for _, f := range []string{"bottom/d/hidden", "bottom/gone", "bottom/kept"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			return err
		}
	}
	if err := mkWhiteout(filepath.Join(top, "gone")); err != nil {
		return fmt.Errorf("cannot make a whiteout: %w", err)
	}
	if err := setOpaque(filepath.Join(top, "d")); err != nil {
		return fmt.Errorf("cannot mark a directory opaque: %w", err)
	}

	// volatile skips the sync of the whole upper filesystem that
	// unmounting an overlay otherwise does, which on a busy host would
	// dominate the cost of the probe.
	d := &overlayDriver{log: log, volatile: true}
	ctx := context.Background()
	merged, err := d.Mount(ctx, []string{top, bottom}, mnt, nil)
	if err != nil {
		d.volatile = false // volatile needs Linux 5.10; the store does not.
		if err := d.Unmount(ctx, mnt); err != nil {
			mounted = true
			return err
		}
		merged, err = d.Mount(ctx, []string{top, bottom}, mnt, nil)
	}
	if err == nil {
		err = checkProbe(merged, filepath.Join(mnt, "upper"))
	}
	if uerr := d.Unmount(ctx, mnt); uerr != nil {
		mounted = true
		return uerr
	}
	return err
}

func checkProbe(merged, upper string) error {
	if _, err := os.Lstat(filepath.Join(merged, "kept")); err != nil {
		return fmt.Errorf("overlay does not show lower files: %w", err)
	}
	if _, err := os.Lstat(filepath.Join(merged, "gone")); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("overlay does not honor whiteouts in lower layers: stat %s: %v", filepath.Join(merged, "gone"), err)
	}
	if _, err := os.Lstat(filepath.Join(merged, "d", "hidden")); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("overlay does not honor opaque directories in lower layers: stat %s: %v", filepath.Join(merged, "d", "hidden"), err)
	}
	if err := os.WriteFile(filepath.Join(merged, "d", "new"), nil, 0o644); err != nil {
		return fmt.Errorf("overlay is not writable: %w", err)
	}
	if _, err := os.Lstat(filepath.Join(upper, "d", "new")); err != nil {
		return fmt.Errorf("overlay writes do not reach the upper directory: %w", err)
	}
	return nil
}

// mkWhiteout makes an overlay whiteout: a character device 0:0.
func mkWhiteout(path string) error {
	if err := unix.Mknod(path, unix.S_IFCHR, 0); err != nil {
		return &os.PathError{Op: "mknod", Path: path, Err: err}
	}
	return nil
}

// setOpaque marks a directory opaque: it hides what lower layers have in it.
func setOpaque(path string) error {
	if err := unix.Lsetxattr(path, overlayOpaqueXattr, []byte("y"), 0); err != nil {
		return &os.PathError{Op: "setxattr " + overlayOpaqueXattr, Path: path, Err: err}
	}
	return nil
}

// isWhiteout reports whether st is an overlay whiteout.
func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// ociMarker reports whether a regular file named name in a layer directory
// is a whiteout or opaque marker in OCI form, which unpackTar leaves where
// the filesystem refuses the overlay forms, and what it hides in lower
// layers: the entry target of the same directory or, if opaque, all of
// them. A marker with an invalid target hides nothing, but is one all the
// same: it is never part of the merged view.
func ociMarker(name string) (target string, opaque, ok bool) {
	if name == whiteoutOpaque {
		return "", true, true
	}
	target, ok = strings.CutPrefix(name, whiteoutPrefix)
	if !validMarkerTarget(target) {
		target = ""
	}
	return target, false, ok
}

// validMarkerTarget reports whether a whiteout may hide target, one entry
// of its own directory. Joined to a path, "." or ".." would be the
// directory itself or its parent.
func validMarkerTarget(target string) bool {
	return target != "" && target != "." && target != ".." && !strings.ContainsRune(target, '/')
}

// isOpaque reports whether the directory at path is marked opaque.
func isOpaque(path string) (bool, error) {
	var buf [8]byte
	n, err := unix.Lgetxattr(path, overlayOpaqueXattr, buf[:])
	switch {
	case err == nil:
		return string(buf[:n]) == "y", nil
	case err == unix.ENODATA || err == unix.EOPNOTSUPP || err == unix.ERANGE:
		// ERANGE: a longer value than "y" is not the opaque marker.
		return false, nil
	}
	return false, &os.PathError{Op: "getxattr " + overlayOpaqueXattr, Path: path, Err: err}
}

// absDir returns dir as an absolute, clean path; mount points and the
// entries of /proc/self/mountinfo are only comparable that way.
func absDir(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("empty rootfs directory")
	}
	return filepath.Abs(dir)
}

// unmountAll unmounts everything mounted at path, including mounts stacked
// on top of each other there. A mount that stays busy is detached lazily:
// it lives on for whoever still uses it, but leaves path, so that the
// caller can remove what was under it without reaching into the mount.
func unmountAll(path string, log *slog.Logger) error {
	for range 64 {
		err := unix.Unmount(path, unix.UMOUNT_NOFOLLOW)
		switch err {
		case nil:
			continue
		case unix.EINVAL, unix.ENOENT:
			return nil // not (or no longer) a mount point
		case unix.EBUSY:
			log.Warn("rootfs is busy; detaching it lazily", "path", path)
			if err := unix.Unmount(path, unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH); err != nil && err != unix.EINVAL {
				return &os.PathError{Op: "unmount", Path: path, Err: err}
			}
			continue
		}
		return &os.PathError{Op: "unmount", Path: path, Err: err}
	}
	return fmt.Errorf("unmount %s: still mounted after 64 unmounts", path)
}

// mountsUnder returns the mount points at or below path, deepest first.
func mountsUnder(path string) ([]string, error) {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	mounts, err := mountinfo.Under(path)
	if err != nil {
		return nil, err
	}
	// A mount's path is longer than that of any mount it sits under, so
	// longest first unmounts children before their parents.
	slices.SortStableFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	return mounts, nil
}
