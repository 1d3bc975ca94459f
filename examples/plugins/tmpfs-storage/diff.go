package main

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/plugin"
)

var _ plugin.Differ = (*storage)(nil)

// OCI whiteouts: an empty file ".wh.<name>" deletes name from the layers
// below, and ".wh..wh..opq" in a directory hides everything below it.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// Diff writes the changes made to key's rootfs, its overlay's upper
// directory, as an uncompressed OCI layer tar. Overlay whiteouts
// (character devices 0:0) become .wh. files and opaque directories get a
// .wh..wh..opq entry; owners are mapped back to the image's ids when the
// rootfs is for a user namespace.
//
// The workload may still be running and may swap files for links while
// Diff reads: the walk opens one name at a time below a directory it
// holds open, never following a link, so it never leaves the upper
// directory, and a file is read through the descriptor it was checked on.
func (s *storage) Diff(ctx context.Context, key string, w io.Writer) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("diff: %w", err)
	}
	if !s.claim(key, "diff") {
		return fmt.Errorf("diff: rootfs %q is being prepared or released", key)
	}
	defer s.unclaim(key)
	rec, err := s.readRecord(key)
	if err != nil {
		return fmt.Errorf("diff: %w", err)
	}
	upper := path.Join(s.cfg.root, key, upperDir)
	fd, err := unix.Open(upper, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("diff %s: %w", key, &os.PathError{Op: "open", Path: upper, Err: err})
	}
	defer unix.Close(fd)
	d := &differ{ctx: ctx, tw: tar.NewWriter(w), rec: rec, links: make(map[fileID]string), budget: rec.Size}
	if err := d.dir(fd, ""); err != nil {
		return fmt.Errorf("diff %s: %w", key, err)
	}
	if err := d.tw.Close(); err != nil {
		return fmt.Errorf("diff %s: %w", key, err)
	}
	return nil
}

type fileID struct{ dev, ino uint64 }

// differ writes one upper directory as a layer tar.
type differ struct {
	ctx   context.Context
	tw    *tar.Writer
	rec   *record
	links map[fileID]string // first name of each file with other links
	// budget is what the files' contents may still add up to: the
	// tmpfs's size, which holds them all unless some have holes. A
	// workload can make a file of a terabyte of holes on a tmpfs of a few
	// MiB; the tar would hold the terabyte.
	budget int64
}

// dir writes the entries of the directory open as fd, whose name in the
// layer is rel ("" for the root): its whiteouts first, as the OCI image
// specification recommends, then the rest, each in byte-wise name order
// so that the same tree always makes the same tar.
func (d *differ) dir(fd int, rel string) error {
	names, err := readNames(fd)
	if err != nil {
		return fmt.Errorf("read %s: %w", displayName(rel), err)
	}
	for _, whiteouts := range []bool{true, false} {
		for _, name := range names {
			if err := d.ctx.Err(); err != nil {
				return err
			}
			if err := d.entry(fd, name, path.Join(rel, name), whiteouts); err != nil {
				return err
			}
		}
	}
	return nil
}

func displayName(rel string) string {
	if rel == "" {
		return "/"
	}
	return rel
}

func readNames(fd int) ([]string, error) {
	// A duplicate, so that reading it does not move fd's own offset.
	dup, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), ".")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

// maxPath is the longest name an entry may have in the tar, PATH_MAX as
// berth's import allows. A workload can nest directories as deep as its
// inodes go; bounding the name bounds the depth of the walk (and the
// directories it holds open) and the size of each header.
const maxPath = 4096

// entry writes the entry name of the directory open as dirfd if it is a
// whiteout and whiteouts is set, or if it is not and whiteouts is not.
func (d *differ) entry(dirfd int, name, rel string, whiteouts bool) error {
	if len(rel)+len(whiteoutPrefix) > maxPath {
		return fmt.Errorf("%.100s...: a path longer than %d bytes, which no layer may hold", rel, maxPath-len(whiteoutPrefix))
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil // removed while we read: not a change any more
		}
		return &os.PathError{Op: "lstat", Path: rel, Err: err}
	}
	isWhiteout := st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
	if isWhiteout != whiteouts {
		return nil
	}
	if isWhiteout {
		return d.write(&tar.Header{Typeflag: tar.TypeReg, Name: path.Join(path.Dir(rel), whiteoutPrefix+name), Mode: 0o644, Format: tar.FormatPAX}, nil)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		hdr := d.header(rel, &st, tar.TypeChar)
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		return d.write(hdr, nil)
	case unix.S_IFBLK:
		hdr := d.header(rel, &st, tar.TypeBlock)
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		return d.write(hdr, nil)
	case unix.S_IFIFO:
		return d.write(d.header(rel, &st, tar.TypeFifo), nil)
	case unix.S_IFSOCK:
		return nil // a socket cannot be in a layer
	case unix.S_IFLNK:
		target, err := readlinkat(dirfd, name)
		if err != nil {
			return &os.PathError{Op: "readlink", Path: rel, Err: err}
		}
		hdr := d.header(rel, &st, tar.TypeSymlink)
		hdr.Linkname = target
		return d.write(hdr, nil)
	case unix.S_IFDIR:
		return d.subdir(dirfd, name, rel)
	case unix.S_IFREG:
		return d.file(dirfd, name, rel)
	}
	return fmt.Errorf("%s: unknown file type %#o", rel, st.Mode&unix.S_IFMT)
}

// subdir writes a directory, the opaque mark overlayfs gave it if any,
// and what is in it.
func (d *differ) subdir(dirfd int, name, rel string) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return &os.PathError{Op: "open", Path: rel, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: rel, Err: err}
	}
	if err := d.write(d.header(rel+"/", &st, tar.TypeDir), nil); err != nil {
		return err
	}
	opaque, err := isOpaqueFd(fd)
	if err != nil {
		return &os.PathError{Op: "getxattr", Path: rel, Err: err}
	}
	if opaque {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: path.Join(rel, whiteoutOpaque), Mode: 0o644, Format: tar.FormatPAX}
		if err := d.write(hdr, nil); err != nil {
			return err
		}
	}
	return d.dir(fd, rel)
}

// file writes a regular file: a hard link to a name written before, or
// its contents as they are when it is opened. Opening with O_NONBLOCK
// keeps a fifo put in the file's place from blocking the walk; the type is
// checked again on the descriptor.
func (d *differ) file(dirfd int, name, rel string) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return &os.PathError{Op: "open", Path: rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: rel, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s changed type while it was read", rel)
	}
	if st.Nlink > 1 {
		id := fileID{st.Dev, st.Ino}
		if first, ok := d.links[id]; ok {
			hdr := d.header(rel, &st, tar.TypeLink)
			hdr.Linkname = first
			return d.write(hdr, nil)
		}
		d.links[id] = rel
	}
	if st.Size > d.budget {
		return fmt.Errorf("%s: %d bytes, with the files before it more than the rootfs's size of %d: it has holes (a sparse file), which a layer tar would have to write out in full", rel, st.Size, d.rec.Size)
	}
	d.budget -= st.Size
	hdr := d.header(rel, &st, tar.TypeReg)
	hdr.Size = st.Size
	return d.write(hdr, f)
}

// header is the common part of an entry's header, its owner mapped back
// to the image's ids.
func (d *differ) header(name string, st *unix.Stat_t, typ byte) *tar.Header {
	uid, gid := st.Uid, st.Gid
	if len(d.rec.UIDMap) > 0 {
		uid, gid = layerfs.ContainerID(d.rec.UIDMap, uid), layerfs.ContainerID(d.rec.GIDMap, gid)
	}
	return &tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     int64(st.Mode & 0o7777),
		Uid:      int(uid),
		Gid:      int(gid),
		ModTime:  time.Unix(st.Mtim.Unix()).UTC(),
		Format:   tar.FormatPAX,
	}
}

// write writes hdr and, for a regular file, exactly hdr.Size bytes of r:
// a file that shrank while it was read is an error, one that grew is cut.
func (d *differ) write(hdr *tar.Header, r io.Reader) error {
	if err := d.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if r == nil || hdr.Size == 0 {
		return nil
	}
	if _, err := io.CopyN(d.tw, r, hdr.Size); err != nil {
		if err == io.EOF {
			return fmt.Errorf("%s shrank while it was read", hdr.Name)
		}
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	return nil
}

// isOpaqueFd reports whether overlayfs marked the directory open as fd
// opaque.
func isOpaqueFd(fd int) (bool, error) {
	buf := make([]byte, 1)
	n, err := unix.Fgetxattr(fd, "trusted.overlay.opaque", buf)
	switch err {
	case nil:
		return n == 1 && buf[0] == 'y', nil
	case unix.ENODATA, unix.ENOTSUP, unix.ERANGE:
		return false, nil
	}
	return false, err
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}
