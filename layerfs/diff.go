package layerfs

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Layer tars written here are deterministic, so that the same tree always
// has the same diff ID: each directory is walked in byte-wise name order,
// parents before children, except that its whiteouts come first, as the OCI
// image specification recommends; names are relative, without "./",
// directories ending in "/"; headers are PAX with numeric owners only, the
// modification time to the nanosecond and no access or change time. The
// layer root itself has no entry.

// writeOverlayDiff writes the changes recorded in an overlay upper directory
// as an OCI layer tar to w.
//
// Overlay whiteouts (character devices 0:0) become .wh. entries, and an
// opaque directory is followed by a .wh..wh..opq entry. The upper directory
// must come from a mount without redirect_dir and metacopy, whose upper
// entries do not stand on their own. With ids, the overlay showed the
// layers to a user namespace, and owners are mapped back to the image's.
func writeOverlayDiff(ctx context.Context, w io.Writer, upper string, ids *idMapping) error {
	return writeWholeTree(ctx, w, upper, true, ids)
}

// WriteOverlayDiff writes the changes recorded in the overlay upper
// directory upper as an OCI layer tar to w, as the built-in overlay
// driver's Diff does, for a storage plugin that stacks the store's layers
// itself. With maps (the user namespace the overlay was shown to), owners
// are mapped back to the image's. The tree may be a running sandbox's: no
// symlink in it is followed and no FIFO or device in it is opened.
func WriteOverlayDiff(ctx context.Context, w io.Writer, upper string, uidMap, gidMap []IDMap) error {
	var ids *idMapping
	if len(uidMap) > 0 || len(gidMap) > 0 {
		ids = &idMapping{uids: uidMap, gids: gidMap}
	}
	return writeOverlayDiff(ctx, w, upper, ids)
}

// writeTreeTar writes the whole tree under dir as a layer tar (no
// whiteouts), used to import a local directory as an image.
func writeTreeTar(ctx context.Context, w io.Writer, dir string) error {
	return writeWholeTree(ctx, w, dir, false, nil)
}

func writeWholeTree(ctx context.Context, w io.Writer, dir string, overlay bool, ids *idMapping) error {
	fd, err := openDirPath(dir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tw := newTreeWriter(ctx, w, dir, ids)
	if err := tw.writeTree(fd, "", overlay); err != nil {
		return err
	}
	return tw.close()
}

// writeTreeDiff writes, as an OCI layer tar, the differences between rootfs
// and the merged view of the read-only layer directories lowers (topmost
// first, overlay format: char 0:0 whiteouts and trusted.overlay.opaque
// dirs, or their OCI forms where unpackTar kept those; see ociMarker), for
// the copying driver: added/changed entries in full, removed entries as
// .wh. whiteouts.
//
// An entry has changed if its type, mode, owner, size, modification time,
// symlink target, device number or extended attributes differ; contents are
// not compared. A directory that exists on both sides gets an entry only if
// its own metadata changed. A directory that was removed and made again is
// written with whiteouts for each lower entry it lost, never as opaque.
//
// With ids, rootfs was copied with its owners mapped to the host by them:
// lower entries are compared as mapped, and the tar holds owners mapped
// back to the image's.
func writeTreeDiff(ctx context.Context, w io.Writer, lowers []string, rootfs string, ids *idMapping) error {
	fd, err := openDirPath(rootfs)
	if err != nil {
		return err
	}
	defer unix.Close(fd)

	d := treeDiff{treeWriter: newTreeWriter(ctx, w, rootfs, ids), lowerRoots: lowers}
	dirs := make([]layerDir, 0, len(lowers))
	defer func() {
		for _, l := range dirs {
			unix.Close(l.fd)
		}
	}()
	for i, l := range lowers {
		lfd, err := openDirPath(l)
		if err != nil {
			return err
		}
		dirs = append(dirs, layerDir{fd: lfd, layer: i})
		opaque, err := isOpaqueFd(lfd)
		if err != nil {
			return &os.PathError{Op: "getxattr", Path: l, Err: err}
		}
		if opaque {
			break
		}
	}
	if err := d.diffDir(fd, "", dirs); err != nil {
		return err
	}
	return d.close()
}

// treeWriter writes file system entries to a layer tar.
type treeWriter struct {
	ctx  context.Context
	tw   *tar.Writer
	root string // the tree being written, for errors
	// ids, if set, maps the tree's owners back to the image's.
	ids *idMapping

	// links maps inodes with more than one link to the first name they
	// were written under; later names become hard links to it.
	links map[fileID]string

	buf    []byte // file contents and symlink targets
	dirent []byte // directory listings
	xattrs xattrReader
}

func newTreeWriter(ctx context.Context, w io.Writer, root string, ids *idMapping) *treeWriter {
	return &treeWriter{
		ctx:    ctx,
		tw:     tar.NewWriter(w),
		root:   root,
		ids:    ids,
		links:  make(map[fileID]string),
		buf:    make([]byte, 256<<10),
		dirent: make([]byte, 32<<10),
	}
}

// close finishes the archive. It is called only on success, so that a
// failed write never leaves a well-formed but incomplete tar behind.
func (w *treeWriter) close() error {
	if err := w.tw.Close(); err != nil {
		return fmt.Errorf("write layer tar: %w", err)
	}
	return nil
}

// writeTree writes the entries of the directory open as fd, whose layer
// name is prefix ("" for the root, else ending in "/"), and all below them.
// With overlay, whiteouts and opaque directories are translated to OCI.
func (w *treeWriter) writeTree(fd int, prefix string, overlay bool) error {
	names, err := w.readDir(fd, prefix)
	if err != nil {
		return err
	}
	sts := make([]unix.Stat_t, len(names))
	for i, name := range names {
		if err := unix.Fstatat(fd, name, &sts[i], unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return w.pathError("lstat", prefix+name, err)
		}
	}
	if overlay {
		for i, name := range names {
			if isWhiteout(&sts[i]) {
				if err := w.writeWhiteout(prefix + whiteoutPrefix + name); err != nil {
					return err
				}
			}
		}
	}
	for i, name := range names {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		st := &sts[i]
		switch {
		case overlay && isWhiteout(st):
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			err = w.writeDirTree(fd, name, prefix+name, overlay)
		default:
			err = w.writeNode(fd, name, prefix+name, st)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// writeDirTree writes the directory name in dirfd, whose layer name is rel,
// and everything below it.
func (w *treeWriter) writeDirTree(dirfd int, name, rel string, overlay bool) error {
	fd, st, xattrs, err := w.openDir(dirfd, name, rel)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if overlay {
		if _, ok := xattrs[overlayXattrPrefix+"redirect"]; ok {
			return fmt.Errorf("%s: renamed directory (overlay redirect_dir) cannot be written as a layer", w.path(rel))
		}
	}
	if err := w.writeHeader(w.header(rel+"/", st, "", xattrs)); err != nil {
		return err
	}
	if overlay && xattrs[overlayOpaqueXattr] == "y" {
		if err := w.writeWhiteout(rel + "/" + whiteoutOpaque); err != nil {
			return err
		}
	}
	return w.writeTree(fd, rel+"/", overlay)
}

// writeNode writes the entry name in dirfd, which is not a directory, whose
// layer name is rel and whose metadata st holds.
func (w *treeWriter) writeNode(dirfd int, name, rel string, st *unix.Stat_t) error {
	typ := st.Mode & unix.S_IFMT
	if typ == unix.S_IFSOCK {
		// Tar cannot hold sockets; whoever listens makes them anew.
		return nil
	}
	if st.Nlink > 1 {
		if first, ok := w.links[fileID{st.Dev, st.Ino}]; ok {
			hdr := w.header(rel, st, "", nil)
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			return w.writeHeader(hdr)
		}
	}

	if typ == unix.S_IFREG {
		return w.writeFile(dirfd, name, rel)
	}

	var link string
	if typ == unix.S_IFLNK {
		n, err := unix.Readlinkat(dirfd, name, w.buf)
		if err != nil {
			return w.pathError("readlink", rel, err)
		}
		link = string(w.buf[:n])
	}
	xattrs, err := w.xattrs.read(-1, dirfd, name)
	if err != nil {
		return w.pathError("listxattr", rel, err)
	}
	if st.Nlink > 1 {
		w.links[fileID{st.Dev, st.Ino}] = rel
	}
	return w.writeHeader(w.header(rel, st, link, xattrs))
}

// writeFile writes the regular file name in dirfd. The metadata comes from
// the open file, so that it matches the contents even if the tree changes
// meanwhile. A running sandbox can replace the file between the caller's
// look at it and the open: the type is checked through an O_PATH
// descriptor, and only the inode checked is opened, so that a FIFO or a
// device put there is never opened.
func (w *treeWriter) writeFile(dirfd int, name, rel string) error {
	path, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return w.pathError("open", rel, err)
	}
	defer unix.Close(path)
	var st unix.Stat_t
	if err := unix.Fstat(path, &st); err != nil {
		return w.pathError("stat", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s: changed type while being archived", w.path(rel))
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(path), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return w.pathError("open", rel, err)
	}
	defer unix.Close(fd)
	xattrs, err := w.xattrs.read(fd, -1, "")
	if err != nil {
		return w.pathError("listxattr", rel, err)
	}
	if _, ok := xattrs[overlayXattrPrefix+"metacopy"]; ok {
		return fmt.Errorf("%s: metadata-only copy (overlay metacopy) cannot be written as a layer", w.path(rel))
	}
	if st.Nlink > 1 {
		w.links[fileID{st.Dev, st.Ino}] = rel
	}
	if err := w.writeHeader(w.header(rel, &st, "", xattrs)); err != nil {
		return err
	}
	for size := st.Size; size > 0; {
		b := w.buf
		if int64(len(b)) > size {
			b = b[:size]
		}
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return w.pathError("read", rel, err)
		}
		if n == 0 {
			return w.pathError("read", rel, fmt.Errorf("file shrank while being archived: %w", io.ErrUnexpectedEOF))
		}
		if _, err := w.tw.Write(b[:n]); err != nil {
			return fmt.Errorf("write layer tar: %w", err)
		}
		size -= int64(n)
	}
	return nil
}

// writeWhiteout writes an OCI whiteout (or opaque marker) named name. It
// carries no metadata of its own so that the output stays stable.
func (w *treeWriter) writeWhiteout(name string) error {
	return w.writeHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatPAX,
	})
}

// header returns the tar header of an entry, as statHeader does, with its
// owners mapped back to the image's if w.ids is set.
func (w *treeWriter) header(name string, st *unix.Stat_t, link string, xattrs map[string]string) *tar.Header {
	hdr := statHeader(name, st, link, xattrs)
	if w.ids == nil {
		return hdr
	}
	hdr.Uid, hdr.Gid = int(w.ids.containerUID(st.Uid)), int(w.ids.containerGID(st.Gid))
	for k, v := range hdr.PAXRecords {
		if attr, ok := strings.CutPrefix(k, paxXattrPrefix); ok {
			hdr.PAXRecords[k] = string(w.ids.containerXattr(attr, []byte(v)))
		}
	}
	return hdr
}

func (w *treeWriter) writeHeader(hdr *tar.Header) error {
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write layer tar: %s: %w", hdr.Name, err)
	}
	return nil
}

// readDir returns the names in the directory open as fd, sorted.
func (w *treeWriter) readDir(fd int, rel string) ([]string, error) {
	names, err := readDirNames(fd, w.dirent)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", w.path(rel), err)
	}
	slices.Sort(names)
	return names, nil
}

func (w *treeWriter) path(rel string) string {
	return filepath.Join(w.root, rel)
}

// openDir opens the directory name in dirfd, whose layer name is rel, and
// reads its metadata; the caller closes the descriptor.
func (w *treeWriter) openDir(dirfd int, name, rel string) (int, *unix.Stat_t, map[string]string, error) {
	fd, err := openDirAt(dirfd, name)
	if err != nil {
		return -1, nil, nil, w.pathError("open", rel, err)
	}
	st := new(unix.Stat_t)
	if err := unix.Fstat(fd, st); err != nil {
		unix.Close(fd)
		return -1, nil, nil, w.pathError("stat", rel, err)
	}
	xattrs, err := w.xattrs.read(fd, -1, "")
	if err != nil {
		unix.Close(fd)
		return -1, nil, nil, w.pathError("listxattr", rel, err)
	}
	return fd, st, xattrs, nil
}

func (w *treeWriter) pathError(op, rel string, err error) error {
	return &os.PathError{Op: op, Path: w.path(rel), Err: err}
}

// treeDiff compares a tree with the merged view of overlay-format layers.
type treeDiff struct {
	*treeWriter
	lowerRoots []string // for errors
}

// layerDir is a directory of one lower layer that contributes to a
// directory of the merged view.
type layerDir struct {
	fd    int
	layer int // index in lowers
}

// lowerEntry is an entry of the merged lower view.
type lowerEntry struct {
	at int // index, in the layerDirs of its directory, of the one holding it
	// last is the index of the lowest of those layerDirs whose entry of
	// the same name may show through, if it is a directory: below it, a
	// whiteout in OCI form hides the name.
	last int
	st   unix.Stat_t
}

// diffDir writes the differences between the directory open as fd, whose
// layer name is prefix, and the merged lower directory made of lowers
// (topmost first).
func (d *treeDiff) diffDir(fd int, prefix string, lowers []layerDir) error {
	names, err := d.readDir(fd, prefix)
	if err != nil {
		return err
	}
	merged, lowers, err := d.mergeLower(lowers, prefix)
	if err != nil {
		return err
	}
	gone := make([]string, 0, len(merged))
	for name := range merged {
		if _, found := slices.BinarySearch(names, name); !found {
			gone = append(gone, name)
		}
	}
	slices.Sort(gone)
	for _, name := range gone {
		if err := d.writeWhiteout(prefix + whiteoutPrefix + name); err != nil {
			return err
		}
	}

	for _, name := range names {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		rel := prefix + name
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return d.pathError("lstat", rel, err)
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		le, inLower := merged[name]
		switch {
		case !inLower && isDir:
			err = d.writeDirTree(fd, name, rel, false)
		case !inLower:
			err = d.writeNode(fd, name, rel, &st)
		case isDir && le.st.Mode&unix.S_IFMT == unix.S_IFDIR:
			err = d.diffSubdir(fd, name, rel, lowers, &le)
		default:
			var changed bool
			changed, err = d.changed(fd, name, rel, &st, lowers, &le)
			if err != nil || !changed {
				break
			}
			if isDir {
				// Over a lower non-directory, the new directory is all new.
				err = d.writeDirTree(fd, name, rel, false)
			} else {
				err = d.writeNode(fd, name, rel, &st)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// diffSubdir handles the directory name in fd that is also a directory in
// the merged lower view, as le.
func (d *treeDiff) diffSubdir(fd int, name, rel string, lowers []layerDir, le *lowerEntry) error {
	sub, st, xattrs, err := d.openDir(fd, name, rel)
	if err != nil {
		return err
	}
	defer unix.Close(sub)
	l := lowers[le.at]
	lxattrs, err := d.xattrs.read(-1, l.fd, name)
	if err != nil {
		return d.lowerError("listxattr", l, rel, err)
	}
	if !sameStat(st, &le.st) || !sameXattrs(xattrs, d.hostXattrs(lxattrs)) {
		if err := d.writeHeader(d.header(rel+"/", st, "", xattrs)); err != nil {
			return err
		}
	}

	children, err := d.lowerSubdirs(lowers, le, name, rel)
	defer func() {
		for _, c := range children {
			unix.Close(c.fd)
		}
	}()
	if err != nil {
		return err
	}
	return d.diffDir(sub, rel+"/", children)
}

// changed reports whether the entry name in fd, with metadata st, differs
// from the lower entry le.
func (d *treeDiff) changed(fd int, name, rel string, st *unix.Stat_t, lowers []layerDir, le *lowerEntry) (bool, error) {
	if !sameStat(st, &le.st) {
		return true, nil
	}
	l := lowers[le.at]
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		n, err := unix.Readlinkat(fd, name, d.buf)
		if err != nil {
			return false, d.pathError("readlink", rel, err)
		}
		target := string(d.buf[:n])
		n, err = unix.Readlinkat(l.fd, name, d.buf)
		if err != nil {
			return false, d.lowerError("readlink", l, rel, err)
		}
		if target != string(d.buf[:n]) {
			return true, nil
		}
	}
	xattrs, err := d.xattrs.read(-1, fd, name)
	if err != nil {
		return false, d.pathError("listxattr", rel, err)
	}
	lxattrs, err := d.xattrs.read(-1, l.fd, name)
	if err != nil {
		return false, d.lowerError("listxattr", l, rel, err)
	}
	return !sameXattrs(xattrs, d.hostXattrs(lxattrs)), nil
}

// hostXattrs returns the extended attributes of a lower entry as the copy
// in the rootfs has them, with ids mapped to the host if d.ids is set.
func (d *treeDiff) hostXattrs(xattrs map[string]string) map[string]string {
	if d.ids == nil {
		return xattrs
	}
	for k, v := range xattrs {
		xattrs[k] = string(d.ids.hostXattr(k, []byte(v)))
	}
	return xattrs
}

// mergeLower lists the merged lower directory made of dirs (topmost
// first): the topmost layer holding a name wins, and a whiteout there hides
// the name. It also returns the part of dirs that makes up the directory:
// an opaque marker in OCI form ends it. (lowerSubdirs has already ended it
// at an opaque attribute.)
func (d *treeDiff) mergeLower(dirs []layerDir, prefix string) (map[string]lowerEntry, []layerDir, error) {
	if len(dirs) == 0 {
		return nil, dirs, nil
	}
	merged := make(map[string]lowerEntry)
	var whiteouts []string
	for i, l := range dirs {
		names, err := readDirNames(l.fd, d.dirent)
		if err != nil {
			return nil, nil, d.lowerError("readdir", l, prefix, err)
		}
		whiteouts = whiteouts[:0]
		opaque := false
		for _, name := range names {
			target, opq, marker := ociMarker(name)
			if _, ok := merged[name]; ok && !marker {
				continue
			}
			e := lowerEntry{at: i, last: len(dirs) - 1}
			if err := unix.Fstatat(l.fd, name, &e.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return nil, nil, d.lowerError("lstat", l, prefix+name, err)
			}
			if d.ids != nil {
				// Compared with the rootfs, which holds mapped owners.
				e.st.Uid, e.st.Gid = d.ids.hostUID(e.st.Uid), d.ids.hostGID(e.st.Gid)
			}
			if marker && e.st.Mode&unix.S_IFMT == unix.S_IFREG {
				if opq {
					opaque = true
				} else if target != "" {
					whiteouts = append(whiteouts, target)
				}
				continue
			}
			if _, ok := merged[name]; !ok {
				merged[name] = e
			}
		}
		// Only now, since such a whiteout hides the name in lower layers
		// only: this one may hold it as well.
		for _, target := range whiteouts {
			e, ok := merged[target]
			switch {
			case !ok:
				// Recorded as the overlay whiteout it stands for.
				merged[target] = lowerEntry{at: i, st: unix.Stat_t{Mode: unix.S_IFCHR}}
			case e.last > i:
				e.last = i
				merged[target] = e
			}
		}
		if opaque {
			dirs = dirs[:i+1]
			break
		}
	}
	for name, e := range merged {
		if isWhiteout(&e.st) {
			delete(merged, name)
		}
	}
	return merged, dirs, nil
}

// lowerSubdirs opens the layer directories that make up the merged lower
// directory name, the entry le of the merged view of dirs: dirs[le.at],
// then the same name in each layer below down to the first that is opaque,
// or holds a whiteout or non-directory there, and no further than
// dirs[le.last]. The caller closes them, also on error.
func (d *treeDiff) lowerSubdirs(dirs []layerDir, le *lowerEntry, name, rel string) ([]layerDir, error) {
	var out []layerDir
	for i := le.at; i <= le.last; i++ {
		l := dirs[i]
		if i > le.at {
			var st unix.Stat_t
			err := unix.Fstatat(l.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
			if err == unix.ENOENT {
				continue
			}
			if err != nil {
				return out, d.lowerError("lstat", l, rel, err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				break
			}
		}
		fd, err := openDirAt(l.fd, name)
		if err != nil {
			return out, d.lowerError("open", l, rel, err)
		}
		out = append(out, layerDir{fd: fd, layer: l.layer})
		opaque, err := isOpaqueFd(fd)
		if err != nil {
			return out, d.lowerError("getxattr", l, rel, err)
		}
		if opaque {
			break
		}
	}
	return out, nil
}

func (d *treeDiff) lowerError(op string, l layerDir, rel string, err error) error {
	return &os.PathError{Op: op, Path: filepath.Join(d.lowerRoots[l.layer], rel), Err: err}
}

// statHeader returns a layer tar header for an entry named name (relative
// to the layer root, ending in "/" for a directory) with metadata st,
// symlink target link and extended attributes xattrs, of which overlayfs'
// own are left out. It holds nothing that varies between identical trees:
// no user or group names, access or change times.
func statHeader(name string, st *unix.Stat_t, link string, xattrs map[string]string) *tar.Header {
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Unix()),
		Format:  tar.FormatPAX,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = st.Size
	case unix.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = link
	case unix.S_IFCHR:
		hdr.Typeflag = tar.TypeChar
	case unix.S_IFBLK:
		hdr.Typeflag = tar.TypeBlock
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	}
	if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock {
		hdr.Devmajor = int64(unix.Major(st.Rdev))
		hdr.Devminor = int64(unix.Minor(st.Rdev))
	}
	for k, v := range xattrs {
		if strings.HasPrefix(k, overlayXattrPrefix) {
			continue
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = make(map[string]string, len(xattrs))
		}
		hdr.PAXRecords[paxXattrPrefix+k] = v
	}
	return hdr
}

// sameStat reports whether a and b agree on everything a layer records
// except extended attributes and symlink targets. The size of a directory
// depends on its history, not its contents, and is left out.
func sameStat(a, b *unix.Stat_t) bool {
	if a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid || a.Mtim != b.Mtim {
		return false
	}
	switch a.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFLNK:
		return a.Size == b.Size
	case unix.S_IFCHR, unix.S_IFBLK:
		return a.Rdev == b.Rdev
	}
	return true
}

// sameXattrs compares extended attributes, except overlayfs' own.
func sameXattrs(a, b map[string]string) bool {
	for k, v := range a {
		if strings.HasPrefix(k, overlayXattrPrefix) {
			continue
		}
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	for k := range b {
		if strings.HasPrefix(k, overlayXattrPrefix) {
			continue
		}
		if _, ok := a[k]; !ok {
			return false
		}
	}
	return true
}

// isOpaqueFd reports whether the directory open as fd is an opaque overlay
// directory.
func isOpaqueFd(fd int) (bool, error) {
	var v [1]byte
	n, err := unix.Fgetxattr(fd, overlayOpaqueXattr, v[:])
	switch err {
	case nil:
		return n == 1 && v[0] == 'y', nil
	case unix.ENODATA, unix.ENOTSUP, unix.ERANGE:
		// ERANGE: a longer value, which is not "y".
		return false, nil
	}
	return false, err
}

func openDirPath(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return fd, nil
}

// openDirAt opens the directory name in dirfd, refusing a symlink.
func openDirAt(dirfd int, name string) (int, error) {
	return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// xattrReader reads extended attributes with reusable buffers.
type xattrReader struct {
	names, value []byte
}

// read returns the extended attributes of the file open as fd or, when fd
// is -1, of the entry name in the directory open as dirfd, not following a
// symlink there. It returns nil if there are none or the file system has
// none.
func (x *xattrReader) read(fd, dirfd int, name string) (map[string]string, error) {
	var p string
	if fd < 0 {
		p = procFdPath(dirfd, name)
	}
	list := func(dest []byte) (int, error) {
		if fd >= 0 {
			return unix.Flistxattr(fd, dest)
		}
		return unix.Llistxattr(p, dest)
	}
	get := func(attr string, dest []byte) (int, error) {
		if fd >= 0 {
			return unix.Fgetxattr(fd, attr, dest)
		}
		return unix.Lgetxattr(p, attr, dest)
	}

	if x.names == nil {
		x.names = make([]byte, 4<<10)
		x.value = make([]byte, 4<<10)
	}
	n, err := growRetry(&x.names, list)
	if err == unix.ENOTSUP {
		return nil, nil
	}
	if err != nil || n == 0 {
		return nil, err
	}
	attrs := make(map[string]string)
	for _, attr := range strings.Split(string(x.names[:n]), "\x00") {
		if attr == "" {
			continue
		}
		m, err := growRetry(&x.value, func(dest []byte) (int, error) { return get(attr, dest) })
		if err == unix.ENODATA {
			// Removed since it was listed.
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", attr, err)
		}
		attrs[attr] = string(x.value[:m])
	}
	return attrs, nil
}

// growRetry calls f with *buf, growing *buf while f reports ERANGE.
func growRetry(buf *[]byte, f func([]byte) (int, error)) (int, error) {
	for {
		n, err := f(*buf)
		if err != unix.ERANGE {
			return n, err
		}
		size, err := f(nil)
		if err != nil {
			return 0, err
		}
		*buf = make([]byte, max(size, 2*len(*buf)))
	}
}
