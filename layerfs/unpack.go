package layerfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Names and attributes that encode deletions, in OCI layers and in overlayfs.
const (
	whiteoutPrefix     = ".wh."
	whiteoutMetaPrefix = ".wh..wh."
	whiteoutOpaque     = ".wh..wh..opq"

	paxXattrPrefix     = "SCHILY.xattr."
	overlayXattrPrefix = "trusted.overlay."
	overlayOpaqueXattr = "trusted.overlay.opaque"
)

// resolveBeneath confines a path lookup to the directory it starts from:
// symlinks that earlier entries of a layer created are followed only while
// they stay inside it, and /proc magic links not at all.
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS

// unpackTar extracts the uncompressed layer tar r into dir (an existing,
// empty directory private to the caller), in overlayfs format: OCI
// whiteouts become overlay whiteouts.
//
// A later entry replaces an earlier one of the same name, except that a
// directory over a directory only updates its metadata. A whiteout applies
// only to lower layers, as the OCI image specification requires: an entry
// of the same layer at its name stays, and a directory there becomes
// opaque instead.
//
// Where the filesystem will not hold overlay whiteouts or opaque attributes,
// as overlayfs itself will not, they stay in OCI form instead; see
// unpacker.ociWhiteouts.
//
// Entries are created relative to directory file descriptors that were
// resolved beneath dir, and never through a symlink at their own name, so a
// hostile layer cannot write outside dir; such entries, and overlayfs
// attributes that a layer must not carry, fail with ErrUnsafeEntry.
//
// The import budget that ctx may carry (see Store.withImportBudget) bounds
// the stream read, the entries made and the space left free; past it
// unpackTar fails with ErrImportTooLarge or ErrNoSpace.
func unpackTar(ctx context.Context, r io.Reader, dir string) error {
	u, err := newUnpacker(dir)
	if err != nil {
		return err
	}
	defer u.close()
	u.budget = importBudgetFrom(ctx)
	return u.unpack(ctx, r)
}

func newUnpacker(dir string) (*unpacker, error) {
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return &unpacker{
		root:     root,
		parentFd: -1,
		buf:      make([]byte, 256<<10),
		dirIndex: make(map[string]int),
	}, nil
}

// unpack extracts the layer tar r.
func (u *unpacker) unpack(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(u.budget.reader(r))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read layer tar: %w", err)
		}
		if err := u.extract(ctx, hdr, tr); err != nil {
			return err
		}
	}
	return u.setDirTimes()
}

// unpacker holds the state of one unpackTar call.
type unpacker struct {
	root int // the layer directory

	// parentName and parentFd cache the directory that was last opened as
	// a parent, since consecutive entries usually share it. An entry that
	// replaces another drops the cache (see clear): the fd might name a
	// directory that the replaced entry was, or led to.
	parentName string
	parentFd   int

	// budget, if not nil, bounds what the unpack reads and writes.
	budget *importBudget

	buf []byte // file contents, and directory listings when removing

	// dirs records the times of directory entries, applied once the
	// layer is complete because creating children changes them.
	dirs     []dirTimes
	dirIndex map[string]int // name to index in dirs

	// ociWhiteouts and ociOpaque record that the filesystem refused an
	// overlay whiteout or opaque attribute (overlayfs refuses both, as they
	// are its own), so that the rest of the layer keeps them in OCI form
	// without trying again: a whiteout as an empty regular file .wh.NAME,
	// an opaque directory as one holding an empty regular file
	// .wh..wh..opq. Read back, such a whiteout, like an OCI one, hides NAME
	// only in lower layers, so an entry of this layer may stand beside it.
	// No other regular file named .wh.* can be in a layer, since every
	// entry of that name is a whiteout.
	ociWhiteouts bool
	ociOpaque    bool
}

type dirTimes struct {
	name string // "" once the directory has been replaced by another entry
	ts   [2]unix.Timespec
}

func (u *unpacker) close() {
	if u.parentFd >= 0 {
		unix.Close(u.parentFd)
	}
	unix.Close(u.root)
}

// extract creates the entry described by hdr, reading file contents from r.
func (u *unpacker) extract(ctx context.Context, hdr *tar.Header, r io.Reader) error {
	var size int64
	if hdr.Typeflag == tar.TypeReg {
		size = hdr.Size
	}
	if err := u.budget.addEntry(u.root, size); err != nil {
		return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
	}
	name, ok := cleanLayerPath(hdr.Name)
	if !ok {
		return unsafeEntry(hdr.Name, "escapes the layer")
	}
	if name == "." {
		return u.extractRoot(hdr)
	}
	dir, base := splitLayerPath(name)
	if base == whiteoutOpaque {
		return u.setOpaque(hdr, dir)
	}
	if isWhiteoutMeta(name) {
		// aufs bookkeeping (.wh..wh.plnk and the like) means nothing to
		// overlayfs.
		return nil
	}
	if target, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
		return u.whiteout(hdr, dir, target)
	}
	if err := checkXattrs(hdr); err != nil {
		return err
	}

	var linkDir, linkBase string
	if hdr.Typeflag == tar.TypeLink {
		target, ok := cleanLayerPath(hdr.Linkname)
		if !ok || target == "." {
			return unsafeEntry(hdr.Name, fmt.Sprintf("hard link to %q escapes the layer", hdr.Linkname))
		}
		linkDir, linkBase = splitLayerPath(target)
		// As in overlay form, where it has no file of that name, a
		// whiteout kept in OCI form is nothing to link to.
		if strings.HasPrefix(linkBase, whiteoutPrefix) {
			return entryError(hdr.Name, "linkat", unix.ENOENT)
		}
	}

	pfd, err := u.parent(hdr.Name, dir, true)
	if err != nil {
		return err
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := u.mkdir(pfd, dir, base); err != nil {
			return entryError(hdr.Name, "", err)
		}
		if err := setMetadataAt(pfd, base, hdr); err != nil {
			return entryError(hdr.Name, "", err)
		}
		u.deferDirTimes(name, hdr)
		return nil

	case tar.TypeReg:
		return u.extractFile(ctx, hdr, r, pfd, dir, base)

	case tar.TypeLink:
		lfd := pfd
		switch linkDir {
		case dir:
		case ".":
			lfd = u.root
		default:
			fd, err := openBeneath(u.root, linkDir)
			if err != nil {
				return resolveError(hdr.Name, "hard link target", err)
			}
			defer unix.Close(fd)
			lfd = fd
		}
		err := u.replacing("linkat", pfd, dir, base, func() error {
			return unix.Linkat(lfd, linkBase, pfd, base, 0)
		})
		if err != nil {
			return entryError(hdr.Name, "", err)
		}
		// The metadata belongs to the inode, which the target's entry
		// already set.
		return nil

	case tar.TypeSymlink:
		err := u.replacing("symlinkat", pfd, dir, base, func() error {
			return unix.Symlinkat(hdr.Linkname, pfd, base)
		})
		if err != nil {
			return entryError(hdr.Name, "", err)
		}

	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := uint32(unix.S_IFIFO)
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode = unix.S_IFCHR
		case tar.TypeBlock:
			mode = unix.S_IFBLK
		}
		dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		err := u.replacing("mknodat", pfd, dir, base, func() error {
			return unix.Mknodat(pfd, base, mode, dev)
		})
		if err != nil {
			return entryError(hdr.Name, "", err)
		}

	case tar.TypeXGlobalHeader:
		return nil

	default:
		return fmt.Errorf("layer entry %q: unsupported type %q", hdr.Name, hdr.Typeflag)
	}

	if err := setMetadataAt(pfd, base, hdr); err != nil {
		return entryError(hdr.Name, "", err)
	}
	ts := entryTimes(hdr)
	if err := unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return entryError(hdr.Name, "utimensat", err)
	}
	return nil
}

// extractFile creates the regular file of hdr as base in pfd and streams its
// contents from r.
//
// Runs of zeros become holes. A sparse entry of a few hundred bytes in the
// archive may claim a file of any size, which the tar reader fills with
// zeros: written out, they would fill the disk. The file is sized first, so
// that one larger than the filesystem allows fails at once, and ctx is
// checked as the zeros are read, so that a caller's deadline stops one that
// would take long.
func (u *unpacker) extractFile(ctx context.Context, hdr *tar.Header, r io.Reader, pfd int, dir, base string) error {
	fd := -1
	err := u.replacing("openat", pfd, dir, base, func() (err error) {
		const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
		fd, err = unix.Openat(pfd, base, flags, 0o600)
		return err
	})
	if err != nil {
		return entryError(hdr.Name, "", err)
	}
	defer unix.Close(fd)

	if err := unix.Ftruncate(fd, hdr.Size); err != nil {
		return entryError(hdr.Name, "ftruncate", err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
		n, rerr := r.Read(u.buf)
		if n > 0 {
			if allZero(u.buf[:n]) {
				if _, err := unix.Seek(fd, int64(n), io.SeekCurrent); err != nil {
					return entryError(hdr.Name, "lseek", err)
				}
			} else if err := writeFull(fd, u.buf[:n]); err != nil {
				return entryError(hdr.Name, "write", err)
			} else if err := u.budget.wrote(u.root, int64(n)); err != nil {
				return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read layer tar: %q: %w", hdr.Name, rerr)
		}
	}

	// Ownership first: chown clears the setuid and setgid bits.
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return entryError(hdr.Name, "fchown", err)
	}
	if err := unix.Fchmod(fd, entryPerm(hdr)); err != nil {
		return entryError(hdr.Name, "fchmod", err)
	}
	for k, v := range hdr.PAXRecords {
		if attr, ok := strings.CutPrefix(k, paxXattrPrefix); ok {
			if err := unix.Fsetxattr(fd, attr, []byte(v), 0); err != nil {
				return entryError(hdr.Name, "setxattr "+attr, err)
			}
		}
	}
	ts := entryTimes(hdr)
	if err := unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return entryError(hdr.Name, "utimensat", err)
	}
	return nil
}

// extractRoot applies the metadata of an entry for the layer root itself.
func (u *unpacker) extractRoot(hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeDir {
		return fmt.Errorf("layer entry %q: layer root is not a directory", hdr.Name)
	}
	if err := checkXattrs(hdr); err != nil {
		return err
	}
	if err := unix.Fchown(u.root, hdr.Uid, hdr.Gid); err != nil {
		return entryError(hdr.Name, "fchown", err)
	}
	if err := unix.Fchmod(u.root, entryPerm(hdr)); err != nil {
		return entryError(hdr.Name, "fchmod", err)
	}
	for k, v := range hdr.PAXRecords {
		if attr, ok := strings.CutPrefix(k, paxXattrPrefix); ok {
			if err := unix.Fsetxattr(u.root, attr, []byte(v), 0); err != nil {
				return entryError(hdr.Name, "setxattr "+attr, err)
			}
		}
	}
	u.deferDirTimes(".", hdr)
	return nil
}

// whiteout records the deletion of target in dir as an overlay whiteout.
//
// A whiteout hides only what lower layers have at its name, so an entry
// that this layer puts there, before or after the whiteout, stays; if it is
// a directory, it becomes opaque instead.
func (u *unpacker) whiteout(hdr *tar.Header, dir, target string) error {
	if !validMarkerTarget(target) {
		return unsafeEntry(hdr.Name, "invalid whiteout")
	}
	pfd, err := u.parent(hdr.Name, dir, true)
	if err != nil {
		return err
	}
	if !u.ociWhiteouts {
		err := unix.Mknodat(pfd, target, unix.S_IFCHR, 0)
		switch {
		case err == nil:
			return nil
		case err == unix.EEXIST:
			var st unix.Stat_t
			if err := unix.Fstatat(pfd, target, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return entryError(hdr.Name, "fstatat", err)
			}
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				if err := u.setOpaqueAt(pfd, target); err != nil {
					return entryError(hdr.Name, "", err)
				}
			}
			return nil
		case !refused(err):
			return entryError(hdr.Name, "mknodat", err)
		}
		u.ociWhiteouts = true
	}
	// Whatever this layer has at target may stay: the marker hides only
	// what lower layers have there.
	if err := mkMarkerAt(pfd, whiteoutPrefix+target); err != nil {
		return entryError(hdr.Name, "", err)
	}
	return nil
}

// setOpaque marks dir as hiding the directories below it in other layers.
func (u *unpacker) setOpaque(hdr *tar.Header, dir string) error {
	fd, err := u.parent(hdr.Name, dir, true)
	if err != nil {
		return err
	}
	if err := u.setOpaqueAt(fd, "."); err != nil {
		return entryError(hdr.Name, "", err)
	}
	return nil
}

// setOpaqueAt marks the directory base in pfd opaque, by the overlay
// attribute or, where the filesystem refuses that, an OCI opaque marker.
func (u *unpacker) setOpaqueAt(pfd int, base string) error {
	if !u.ociOpaque {
		err := unix.Lsetxattr(procFdPath(pfd, base), overlayOpaqueXattr, []byte("y"), 0)
		if err == nil {
			return nil
		}
		if !refused(err) {
			return os.NewSyscallError("setxattr "+overlayOpaqueXattr, err)
		}
		u.ociOpaque = true
	}
	fd, err := openDirAt(pfd, base)
	if err != nil {
		return os.NewSyscallError("openat", err)
	}
	defer unix.Close(fd)
	return mkMarkerAt(fd, whiteoutOpaque)
}

// refused reports whether err, from making an overlay whiteout or setting
// an overlay attribute, means that the filesystem will not hold it.
func refused(err error) bool {
	return err == unix.EPERM || err == unix.EOPNOTSUPP || err == unix.EINVAL
}

// mkMarkerAt makes the OCI whiteout or opaque marker name in dirfd: an
// empty regular file of mode 0 owned by root, as OCI layers carry them. One
// that is there already, from an earlier entry of the layer, is kept.
func mkMarkerAt(dirfd int, name string) error {
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(dirfd, name, flags, 0)
	if err == unix.EEXIST {
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return os.NewSyscallError("fstatat", err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			return nil
		}
		// A directory made for a deeper entry such as .wh.x/y: the marker
		// has nowhere to go.
		return fmt.Errorf("make OCI marker %s: the layer has another entry of that name: %w", name, unix.EEXIST)
	}
	if err != nil {
		return os.NewSyscallError("openat "+name, err)
	}
	defer unix.Close(fd)
	// The directory's setgid bit may have given it another group.
	if err := unix.Fchown(fd, 0, 0); err != nil {
		return os.NewSyscallError("fchown "+name, err)
	}
	return nil
}

// parent returns a descriptor, owned by u, for the directory dir of the
// layer. With create it makes missing directories on the way, as tar does
// for entries whose parents the archive does not list.
func (u *unpacker) parent(entry, dir string, create bool) (int, error) {
	if dir == "." {
		return u.root, nil
	}
	if u.parentFd >= 0 && dir == u.parentName {
		return u.parentFd, nil
	}
	fd, err := u.openDir(dir, create)
	if err != nil {
		return -1, resolveError(entry, "parent directory", err)
	}
	if u.parentFd >= 0 {
		unix.Close(u.parentFd)
	}
	u.parentName, u.parentFd = dir, fd
	return fd, nil
}

// openDir opens the directory dir of the layer beneath the layer root,
// optionally creating it and its missing ancestors.
func (u *unpacker) openDir(dir string, create bool) (int, error) {
	fd, err := openBeneath(u.root, dir)
	if !create || (err != unix.ENOENT && err != unix.ENOTDIR) {
		return fd, err
	}
	pdir, base := splitLayerPath(dir)
	pfd := u.root
	if pdir != "." {
		if pfd, err = u.openDir(pdir, true); err != nil {
			return -1, err
		}
		defer unix.Close(pfd)
	}
	opaque := false
	err = unix.Mkdirat(pfd, base, 0o755)
	if err == unix.EEXIST {
		// A whiteout that this layer made is replaced, the directory
		// hiding what it hid. Anything else that is not a directory, such
		// as a file or dangling symlink, fails to open below.
		var st unix.Stat_t
		if unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && isWhiteout(&st) {
			if err = unix.Unlinkat(pfd, base, 0); err == nil {
				opaque = true
				err = unix.Mkdirat(pfd, base, 0o755)
			}
		}
	}
	switch err {
	case nil:
		// A directory the archive does not list counts all the same: a
		// deep name makes hundreds.
		if err := u.budget.addEntry(u.root, 0); err != nil {
			return -1, err
		}
		// The defaults hold whatever the umask and the parent's setgid bit.
		if err := unix.Fchownat(pfd, base, 0, 0, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return -1, err
		}
		if err := unix.Fchmodat(pfd, base, 0o755, 0); err != nil {
			return -1, err
		}
		if opaque {
			if err := u.setOpaqueAt(pfd, base); err != nil {
				return -1, err
			}
		}
	case unix.EEXIST:
	default:
		return -1, err
	}
	// From the root, since a symlink at base may lead anywhere in the layer.
	return openBeneath(u.root, dir)
}

// mkdir makes the directory base in pfd (the directory dir of the layer).
// A directory already there is kept, with its contents, as tar does;
// anything else is replaced.
func (u *unpacker) mkdir(pfd int, dir, base string) error {
	err := unix.Mkdirat(pfd, base, 0o700)
	if err != unix.EEXIST {
		return os.NewSyscallError("mkdirat", err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return os.NewSyscallError("fstatat", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil
	}
	if err := u.clear(pfd, dir, base); err != nil {
		return err
	}
	if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
		return os.NewSyscallError("mkdirat", err)
	}
	if isWhiteout(&st) {
		// The whiteout still hides the lower layers' directory: only
		// entries of this layer may show in the new one.
		return u.setOpaqueAt(pfd, base)
	}
	return nil
}

// replacing calls mk to make an entry at base in pfd (the directory dir of
// the layer). If something is there already, it removes that and calls mk
// again: a later entry replaces an earlier one of the same name. op names
// what mk does, for errors.
func (u *unpacker) replacing(op string, pfd int, dir, base string, mk func() error) error {
	err := mk()
	if err == unix.EEXIST {
		if err := u.clear(pfd, dir, base); err != nil {
			return err
		}
		err = mk()
	}
	if err != nil {
		return os.NewSyscallError(op, err)
	}
	return nil
}

// clear removes whatever an earlier entry put at base in pfd (the directory
// dir of the layer). It never follows a symlink at base.
func (u *unpacker) clear(pfd int, dir, base string) error {
	u.forgetParent(dir)
	err := unix.Unlinkat(pfd, base, 0)
	if err == unix.EISDIR {
		u.forgetDirs(joinLayerPath(dir, base))
		err = removeAllAt(pfd, base, u.buf)
	}
	if err != nil && err != unix.ENOENT {
		return fmt.Errorf("remove earlier entry: %w", err)
	}
	return nil
}

// forgetParent drops the cached parent descriptor, unless it is dir, since
// an entry of dir is about to be replaced: the directory there, one below
// it, or one that a symlink anywhere on the cached path led through it to,
// may be the cached one, and would then no longer be what the layer has at
// that path. dir itself stays what it is. Replacements are rare, so this
// costs one more lookup now and then.
func (u *unpacker) forgetParent(dir string) {
	if u.parentFd >= 0 && u.parentName != dir {
		unix.Close(u.parentFd)
		u.parentName, u.parentFd = "", -1
	}
}

// isAtOrBelow reports whether the clean layer path p is dir or inside it.
func isAtOrBelow(p, dir string) bool {
	return p == dir || (len(p) > len(dir) && p[len(dir)] == '/' && strings.HasPrefix(p, dir))
}

// deferDirTimes records the times of the directory entry hdr for
// setDirTimes. A later entry for the same directory overrides them.
func (u *unpacker) deferDirTimes(name string, hdr *tar.Header) {
	ts := entryTimes(hdr)
	if i, ok := u.dirIndex[name]; ok {
		u.dirs[i].ts = ts
		return
	}
	u.dirIndex[name] = len(u.dirs)
	u.dirs = append(u.dirs, dirTimes{name: name, ts: ts})
}

// forgetDirs drops the recorded times of name and of everything below it,
// which are being removed.
func (u *unpacker) forgetDirs(name string) {
	for i := range u.dirs {
		d := &u.dirs[i]
		if isAtOrBelow(d.name, name) {
			delete(u.dirIndex, d.name)
			d.name = ""
		}
	}
}

// setDirTimes applies the recorded directory times, deepest last-listed
// first. A directory that a later entry replaced (by a symlink, say) is
// left alone.
func (u *unpacker) setDirTimes() error {
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := &u.dirs[i]
		switch d.name {
		case "":
			continue
		case ".":
			if err := unix.UtimesNanoAt(u.root, ".", d.ts[:], 0); err != nil {
				return entryError(".", "utimensat", err)
			}
			continue
		}
		dir, base := splitLayerPath(d.name)
		pfd, err := u.parent(d.name, dir, false)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, ErrUnsafeEntry) {
				continue
			}
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		if err := unix.UtimesNanoAt(pfd, base, d.ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return entryError(d.name, "utimensat", err)
		}
	}
	return nil
}

// setMetadataAt applies the ownership, mode and extended attributes of hdr
// to the entry base in pfd, which the caller has just created (so it is not
// a symlink unless hdr is one).
func setMetadataAt(pfd int, base string, hdr *tar.Header) error {
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return os.NewSyscallError("fchownat", err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := unix.Fchmodat(pfd, base, entryPerm(hdr), 0); err != nil {
			return os.NewSyscallError("fchmodat", err)
		}
	}
	var p string
	for k, v := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, paxXattrPrefix)
		if !ok {
			continue
		}
		if p == "" {
			p = procFdPath(pfd, base)
		}
		err := unix.Lsetxattr(p, attr, []byte(v), 0)
		if err == unix.EPERM && strings.HasPrefix(attr, "user.") && hdr.Typeflag != tar.TypeDir {
			// The kernel allows user.* attributes on regular files and
			// directories only; other archivers drop them too.
			continue
		}
		if err != nil {
			return os.NewSyscallError("setxattr "+attr, err)
		}
	}
	return nil
}

// checkXattrs refuses overlayfs attributes in hdr: a layer that set them
// could redirect lookups into other layers or hide their contents.
func checkXattrs(hdr *tar.Header) error {
	for k := range hdr.PAXRecords {
		if attr, ok := strings.CutPrefix(k, paxXattrPrefix); ok && strings.HasPrefix(attr, overlayXattrPrefix) {
			return unsafeEntry(hdr.Name, "sets overlayfs attribute "+attr)
		}
	}
	return nil
}

// cleanLayerPath returns name relative to the layer root in canonical form
// ("." for the root itself). It reports false for an absolute name and for
// one with a ".." component, even a harmless one.
func cleanLayerPath(name string) (string, bool) {
	if strings.HasPrefix(name, "/") {
		return "", false
	}
	for rest := name; rest != ""; {
		var elem string
		elem, rest, _ = strings.Cut(rest, "/")
		if elem == ".." {
			return "", false
		}
	}
	return path.Clean(name), true
}

// splitLayerPath splits a clean layer path into its directory ("." at the
// top) and final element.
func splitLayerPath(name string) (dir, base string) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return ".", name
	}
	return name[:i], name[i+1:]
}

func joinLayerPath(dir, base string) string {
	if dir == "." {
		return base
	}
	return dir + "/" + base
}

// isWhiteoutMeta reports whether the clean layer path name is, or is inside,
// aufs metadata such as .wh..wh.plnk.
func isWhiteoutMeta(name string) bool {
	return strings.HasPrefix(name, whiteoutMetaPrefix) || strings.Contains(name, "/"+whiteoutMetaPrefix)
}

// openBeneath opens the directory name relative to dirfd without leaving
// dirfd.
func openBeneath(dirfd int, name string) (int, error) {
	return openat2(dirfd, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: resolveBeneath,
	})
}

// openat2 calls openat2(2), again (a bounded number of times) when a
// signal interrupted it or, with RESOLVE_BENEATH, a concurrent rename
// raced the lookup (EAGAIN).
func openat2(dirfd int, name string, how *unix.OpenHow) (int, error) {
	for tries := 0; ; tries++ {
		fd, err := unix.Openat2(dirfd, name, how)
		if (err != unix.EAGAIN && err != unix.EINTR) || tries == 100 {
			return fd, err
		}
	}
}

// removeAllAt removes name in dirfd and, if it is a directory, everything
// below it, without following symlinks. buf is scratch space.
func removeAllAt(dirfd int, name string, buf []byte) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err != unix.EISDIR {
		if err == unix.ENOENT {
			return nil
		}
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, err := readDirNames(fd, buf)
	if err == nil {
		for _, n := range names {
			if err = removeAllAt(fd, n, buf); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// readDirNames returns the names in the directory open as fd, except "."
// and "..", in directory order. buf is scratch space.
func readDirNames(fd int, buf []byte) ([]string, error) {
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, os.NewSyscallError("getdents", err)
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// procFdPath names the entry base in the directory open as dirfd, for the
// system calls that have no variant relative to a directory descriptor.
// The magic link is followed; base is resolved by the call itself.
func procFdPath(dirfd int, base string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + base
}

// writeFull writes all of b to fd.
func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}

// zeroPage is compared with file contents to find runs of zeros; it is
// never written.
var zeroPage [4096]byte

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// entryPerm returns the permission bits of hdr, including setuid, setgid
// and sticky.
func entryPerm(hdr *tar.Header) uint32 {
	return uint32(hdr.Mode) & 0o7777
}

// entryTimes returns the access and modification times of hdr, as
// utimensat takes them. Archives without an access time get the
// modification time.
func entryTimes(hdr *tar.Header) [2]unix.Timespec {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	return [2]unix.Timespec{timespec(atime), timespec(hdr.ModTime)}
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

func unsafeEntry(name, why string) error {
	return fmt.Errorf("%w %q: %s", ErrUnsafeEntry, name, why)
}

// resolveError describes a failure to look up a directory for entry; a
// lookup that would leave the layer makes entry unsafe.
func resolveError(entry, what string, err error) error {
	if err == unix.EXDEV || err == unix.ELOOP {
		return unsafeEntry(entry, what+" leaves the layer")
	}
	return fmt.Errorf("layer entry %q: %s: %w", entry, what, err)
}

func entryError(entry, op string, err error) error {
	if op == "" {
		return fmt.Errorf("layer entry %q: %w", entry, err)
	}
	return fmt.Errorf("layer entry %q: %w", entry, os.NewSyscallError(op, err))
}
