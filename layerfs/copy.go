package layerfs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// copyDriver materializes the merged view of the layers as a plain
// directory tree at dir/rootfs. It is the fallback for filesystems that
// overlayfs cannot use as an upper layer, such as overlayfs itself. It costs
// a copy of the image per rootfs, made cheap where the filesystem can share
// extents (reflinks). For a user namespace, it gives every file the host
// owner that the image's owner maps to as it copies, and so is also the
// fallback where layers cannot be idmapped.
type copyDriver struct {
	log *slog.Logger
}

func (d *copyDriver) Name() string { return "copy" }

func (d *copyDriver) Mount(ctx context.Context, lowers []string, dir string, ids *idMapping) (string, error) {
	dir, err := absDir(dir)
	if err != nil {
		return "", err
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return "", err
	}
	if ids != nil {
		// For an image without layers; a layer's root sets its own owner.
		if err := unix.Lchown(rootfs, int(ids.hostUID(0)), int(ids.hostGID(0))); err != nil {
			return "", &os.PathError{Op: "chown", Path: rootfs, Err: err}
		}
	}
	c := &copier{ctx: ctx, ids: ids}
	// Applying the layers bottom up makes each one override, delete (by
	// whiteouts) and hide (by opaque directories) what those below put there,
	// as overlayfs would.
	for _, layer := range slices.Backward(lowers) {
		if err := c.applyLayer(layer, rootfs); err != nil {
			return "", fmt.Errorf("copy layer %s to %s: %w", layer, rootfs, err)
		}
	}
	return rootfs, nil
}

// Unmount removes the materialized tree. Anything still mounted inside it,
// such as a bind mount a crashed sandbox left behind, is unmounted first:
// removing the tree would otherwise delete what the mount shows.
func (d *copyDriver) Unmount(ctx context.Context, dir string) error {
	dir, err := absDir(dir)
	if err != nil {
		return err
	}
	rootfs := filepath.Join(dir, "rootfs")
	mounts, err := mountsUnder(rootfs)
	if err != nil {
		return fmt.Errorf("unmount %s: %w", rootfs, err)
	}
	for _, m := range mounts {
		d.log.Warn("unmounting a leftover mount inside a rootfs", "path", m)
		if err := unmountAll(m, d.log); err != nil {
			return err
		}
	}
	return os.RemoveAll(rootfs)
}

func (d *copyDriver) Changes(ctx context.Context, lowers []string, dir string, ids *idMapping, w io.Writer) error {
	return writeTreeDiff(ctx, w, lowers, filepath.Join(dir, "rootfs"), ids)
}

// copier applies layers in overlay format to a directory tree. Whiteouts
// and opaque marks kept in OCI form (see ociMarker) count as the overlay
// ones they stand for.
type copier struct {
	ctx context.Context
	// ids, if set, maps the owners of the copies to the host.
	ids *idMapping

	// links maps the files of the current layer that have more than one
	// name to where the first name was copied, to link the others to it.
	links map[fileID]string

	// noClone and noCopyRange record that the filesystem does not do
	// reflinks or copy_file_range, so later files skip trying.
	noClone     bool
	noCopyRange bool
}

type fileID struct {
	dev, ino uint64
}

func (c *copier) applyLayer(layer, dst string) error {
	var st unix.Stat_t
	if err := unix.Stat(layer, &st); err != nil {
		return &os.PathError{Op: "stat", Path: layer, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("layer %s is not a directory", layer)
	}
	c.links = make(map[fileID]string)
	// overlayfs ignores an opaque mark on a layer's root.
	return c.applyDir(layer, dst, &st, false)
}

// apply copies src, one entry of a layer, to dst, replacing whatever lower
// layers put at dst.
func (c *copier) apply(src, dst string) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	var st, cur unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: src, Err: err}
	}
	exists := true
	if err := unix.Lstat(dst, &cur); err == unix.ENOENT {
		exists = false
	} else if err != nil {
		return &os.PathError{Op: "lstat", Path: dst, Err: err}
	}

	if isWhiteout(&st) {
		if exists {
			return os.RemoveAll(dst)
		}
		return nil
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if exists && cur.Mode&unix.S_IFMT == unix.S_IFDIR {
			return c.applyDir(src, dst, &st, true)
		}
		if exists {
			if err := os.Remove(dst); err != nil {
				return err
			}
		}
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
		return c.applyDir(src, dst, &st, false)
	}

	if exists {
		// A directory below is replaced as a whole, as overlayfs shows it.
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
	}
	if st.Nlink > 1 {
		id := fileID{dev: st.Dev, ino: st.Ino}
		if first, ok := c.links[id]; ok {
			return os.Link(first, dst)
		}
		c.links[id] = dst
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if err := c.copyFile(src, dst, st.Size); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return &os.PathError{Op: "mknod", Path: dst, Err: err}
		}
	default:
		return fmt.Errorf("%s: unknown file type %#o", src, st.Mode&unix.S_IFMT)
	}
	return copyMetadata(src, dst, &st, false, c.ids)
}

// applyDir merges the layer directory src into the existing directory dst.
// merge says whether dst may hold what lower layers put there, and so
// whether src's opaque mark applies. At a layer's root it is false although
// dst holds the layers below: overlayfs ignores the mark there.
func (c *copier) applyDir(src, dst string, st *unix.Stat_t, merge bool) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	// Whiteouts and opaque marks in OCI form hide only what lower layers
	// put in dst, so they go first: an entry of this layer may share a
	// marker's name.
	var whiteouts []string
	opaque := false
	n := 0
	for _, e := range entries {
		if e.Type().IsRegular() {
			if target, opq, ok := ociMarker(e.Name()); ok {
				if opq {
					opaque = true
				} else if target != "" {
					whiteouts = append(whiteouts, target)
				}
				continue
			}
		}
		entries[n] = e
		n++
	}
	entries = entries[:n]
	if merge && !opaque {
		if opaque, err = isOpaque(src); err != nil {
			return err
		}
	}
	if merge && opaque {
		if err := removeContents(dst); err != nil {
			return err
		}
	} else {
		// Even where merge is false: at a layer's root, dst holds the
		// layers below.
		for _, name := range whiteouts {
			if err := os.RemoveAll(filepath.Join(dst, name)); err != nil {
				return err
			}
		}
	}
	for _, e := range entries {
		if err := c.apply(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	// Last, because adding entries changes the directory's mtime.
	return copyMetadata(src, dst, st, merge, c.ids)
}

func removeContents(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies a regular file's contents, sharing its extents if the
// filesystem can.
func (c *copier) copyFile(src, dst string, size int64) (err error) {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if size == 0 {
		return nil
	}
	if err := c.copyData(in, out, size); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}

func (c *copier) copyData(in, out *os.File, size int64) error {
	infd, outfd := int(in.Fd()), int(out.Fd())
	if !c.noClone {
		err := unix.IoctlFileClone(outfd, infd)
		if err == nil {
			return nil
		}
		// These mean the filesystem cannot clone at all; others (EXDEV
		// for a layer on another filesystem, EINVAL on btrfs for files
		// with different checksum settings) are about this file only.
		if err == unix.EOPNOTSUPP || err == unix.ENOTTY {
			c.noClone = true
		}
	}
	return copyHoles(in, out, size, &c.noCopyRange)
}

// sparseMin is the size from which copyHoles looks for holes: a smaller
// file is copied whole, sparing two lseeks per file of an image.
const sparseMin = 1 << 20

// copyHoles copies size bytes of in to out, an empty file, leaving in's
// holes holes: an image may hold a sparse file of terabytes (see
// extractFile), which would fill the disk written out whole. It uses
// copy_file_range unless *noCopyRange, which it sets when the kernel
// or filesystem cannot.
func copyHoles(in, out *os.File, size int64, noCopyRange *bool) error {
	if size < sparseMin {
		return copyExtent(in, out, 0, size, noCopyRange)
	}
	if err := out.Truncate(size); err != nil {
		return err
	}
	infd := int(in.Fd())
	for off := int64(0); off < size; {
		start, err := unix.Seek(infd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			return nil // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		end, err := unix.Seek(infd, start, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		end = min(end, size)
		if err := copyExtent(in, out, start, end, noCopyRange); err != nil {
			return err
		}
		off = end
	}
	return nil
}

// copyExtent copies the bytes from start to end of in to the same offsets
// of out.
func copyExtent(in, out *os.File, start, end int64, noCopyRange *bool) error {
	for !*noCopyRange && start < end {
		roff, woff := start, start
		n, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(min(end-start, 1<<30)), 0)
		if err != nil {
			switch err {
			case unix.ENOSYS, unix.EOPNOTSUPP:
				*noCopyRange = true
			case unix.EXDEV, unix.EINVAL:
			default:
				return err
			}
			break
		}
		if n == 0 {
			break
		}
		start += int64(n)
	}
	if start >= end {
		return nil
	}
	_, err := io.Copy(io.NewOffsetWriter(out, start), io.NewSectionReader(in, start, end-start))
	return err
}

// copyMetadata gives dst the owner, mode, extended attributes and times of
// src, with the owner and the ids in extended attributes mapped to the host
// by ids if set. The order matters: chown clears setuid bits and file
// capabilities, and each step but the last changes ctime and maybe mtime.
// replace removes extended attributes dst has but src has not.
func copyMetadata(src, dst string, st *unix.Stat_t, replace bool, ids *idMapping) error {
	uid, gid := st.Uid, st.Gid
	if ids != nil {
		uid, gid = ids.hostUID(uid), ids.hostGID(gid)
	}
	if err := unix.Lchown(dst, int(uid), int(gid)); err != nil {
		return &os.PathError{Op: "chown", Path: dst, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return &os.PathError{Op: "chmod", Path: dst, Err: err}
		}
	}
	if err := copyXattrs(src, dst, replace, ids); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: dst, Err: err}
	}
	return nil
}

// copyXattrs copies the extended attributes of src to dst, except
// overlayfs's own, which describe the layer, not the file.
func copyXattrs(src, dst string, replace bool, ids *idMapping) error {
	names, err := listXattrs(src)
	if err != nil {
		return err
	}
	if replace {
		old, err := listXattrs(dst)
		if err != nil {
			return err
		}
		for _, name := range old {
			if slices.Contains(names, name) {
				continue
			}
			if err := unix.Lremovexattr(dst, name); err != nil {
				return &os.PathError{Op: "removexattr " + name, Path: dst, Err: err}
			}
		}
	}
	for _, name := range names {
		val, err := getXattr(src, name)
		if err != nil {
			return err
		}
		if ids != nil {
			val = ids.hostXattr(name, val)
		}
		if err := unix.Lsetxattr(dst, name, val, 0); err != nil {
			return &os.PathError{Op: "setxattr " + name, Path: dst, Err: err}
		}
	}
	return nil
}

// listXattrs returns the names of path's extended attributes, leaving out
// overlayfs's own.
func listXattrs(path string) ([]string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Llistxattr(path, buf)
		if err == unix.ERANGE {
			size, err := unix.Llistxattr(path, nil)
			if err != nil {
				return nil, &os.PathError{Op: "listxattr", Path: path, Err: err}
			}
			buf = make([]byte, max(size, 2*len(buf)))
			continue
		}
		if err == unix.EOPNOTSUPP {
			return nil, nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "listxattr", Path: path, Err: err}
		}
		var names []string
		for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
			if name != "" && !strings.HasPrefix(name, overlayXattrPrefix) {
				names = append(names, name)
			}
		}
		return names, nil
	}
}

func getXattr(path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, name, buf)
		if err == unix.ERANGE {
			size, err := unix.Lgetxattr(path, name, nil)
			if err != nil {
				return nil, &os.PathError{Op: "getxattr " + name, Path: path, Err: err}
			}
			buf = make([]byte, max(size, 2*len(buf)))
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "getxattr " + name, Path: path, Err: err}
		}
		return buf[:n], nil
	}
}
