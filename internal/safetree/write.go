package safetree

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// WriteOptions say how a Writer gives its entries owners and modes.
type WriteOptions struct {
	// KeepOwner gives each entry its own UID and GID, passed through
	// MapUID and MapGID if they are set. Otherwise every entry gets UID
	// and GID, where -1 keeps the owner the writing thread creates files
	// with.
	KeepOwner      bool
	UID, GID       int
	MapUID, MapGID func(int) (int, error)
	// KeepSetid keeps setuid and setgid bits. Without it they are
	// dropped: they would mean something else under another owner.
	KeepSetid bool
	// Special, if set, is told of FIFOs, sockets and device nodes, which
	// are then skipped; if nil, they are refused with ErrUnsafeEntry.
	// A Writer never makes one.
	Special func(*Entry)
}

// A Writer creates entries below a directory it does not own. Each
// entry's parent is opened from that directory without following any
// symbolic link (Beneath): a link made by an earlier entry, or planted by
// whoever else writes there, is never written through, and an entry
// below one fails. Files and links are made under a temporary name and
// renamed over the entry's: what was at the name before, a link
// included, is replaced, never opened, and a file is never seen half
// written under its name.
type Writer struct {
	dir  int
	opts WriteOptions
}

// NewWriter returns a Writer of entries below dir, a directory
// descriptor (O_PATH will do) that stays the caller's to close.
func NewWriter(dir int, opts WriteOptions) *Writer {
	return &Writer{dir: dir, opts: opts}
}

// Write creates e. A directory that exists already is merged into (it
// keeps its owner and mode); anything else at e's name but a directory is
// replaced. A directory cannot replace a non-directory, nor the other way
// round.
func (w *Writer) Write(ctx context.Context, e *Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !validName(e.Name) {
		return pathError("write", e.Name, fmt.Errorf("%w: the name leaves the destination", ErrUnsafeEntry))
	}
	switch e.Type() {
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK:
	default:
		if w.opts.Special != nil {
			w.opts.Special(e)
			return nil
		}
		return pathError("write", e.Name, fmt.Errorf("%w: %s", ErrUnsafeEntry, e.Kind()))
	}
	parentName, base := path.Split(e.Name)
	parent := w.dir
	if parentName != "" {
		fd, err := w.parent(path.Clean(parentName))
		if err != nil {
			return pathError("write", e.Name, fmt.Errorf("its directory: %w", belowLink(err)))
		}
		defer unix.Close(fd)
		parent = fd
	}
	uid, gid, err := w.owner(e)
	if err != nil {
		return pathError("chown", e.Name, err)
	}
	if e.Type() == unix.S_IFDIR {
		return w.mkdir(parent, base, e, uid, gid)
	}
	tmp := tempName()
	if err := w.create(ctx, parent, tmp, e, uid, gid); err != nil {
		unix.Unlinkat(parent, tmp, 0)
		return pathError("write", e.Name, err)
	}
	if err := unix.Renameat(parent, tmp, parent, base); err != nil {
		unix.Unlinkat(parent, tmp, 0)
		if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("cannot replace a directory with %s", e.Kind())
		}
		return pathError("write", e.Name, err)
	}
	return nil
}

// parent opens the directory name below the Writer's, making what is
// missing of it as tar streams that leave parents out expect. No
// component may be a symbolic link.
func (w *Writer) parent(name string) (int, error) {
	fd, err := Beneath(w.dir, name, unix.O_PATH|unix.O_DIRECTORY)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return fd, errors.Unwrap(err)
	}
	cur, err := unix.Openat(w.dir, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, elem := range strings.Split(name, "/") {
		made := true
		if err := unix.Mkdirat(cur, elem, 0o755); err != nil {
			if !errors.Is(err, unix.EEXIST) {
				unix.Close(cur)
				return -1, err
			}
			made = false
		}
		next, err := unix.Openat(cur, elem, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(cur)
		if err != nil {
			return -1, err
		}
		cur = next
		if made {
			if err := unix.Fchownat(cur, "", w.opts.UID, w.opts.GID, unix.AT_EMPTY_PATH); err != nil {
				unix.Close(cur)
				return -1, err
			}
		}
	}
	return cur, nil
}

// mkdir makes the directory base in parent, or finds it there.
func (w *Writer) mkdir(parent int, base string, e *Entry, uid, gid int) error {
	made := true
	if err := unix.Mkdirat(parent, base, 0o700); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return pathError("mkdir", e.Name, err)
		}
		made = false
	}
	fd, err := unix.Openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			err = errors.New("cannot replace a non-directory with a directory")
		}
		return pathError("mkdir", e.Name, err)
	}
	defer unix.Close(fd)
	if !made {
		return nil
	}
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return pathError("chown", e.Name, err)
	}
	if err := unix.Fchmod(fd, w.perm(e)); err != nil {
		return pathError("chmod", e.Name, err)
	}
	return nil
}

// create makes e, a file or a link, as tmp in parent.
func (w *Writer) create(ctx context.Context, parent int, tmp string, e *Entry, uid, gid int) error {
	switch {
	case e.HardLink != "":
		return w.link(parent, tmp, e)
	case e.Type() == unix.S_IFLNK:
		if err := unix.Symlinkat(e.Linkname, parent, tmp); err != nil {
			return err
		}
		// Owned through a descriptor of the link made, checked: whoever
		// else writes in parent may have put another file at tmp.
		fd, err := unix.Openat(parent, tmp, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			return fmt.Errorf("replaced while it was made by %s", KindOf(st.Mode&unix.S_IFMT))
		}
		if err := unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
			return err
		}
		ts := []unix.Timespec{unix.NsecToTimespec(e.ModTime.UnixNano()), unix.NsecToTimespec(e.ModTime.UnixNano())}
		return unix.UtimesNanoAt(parent, tmp, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	fd, err := unix.Openat(parent, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), tmp)
	defer f.Close()
	if e.Content != nil {
		if err := copyData(ctx, f, e.Content, e.Size); err != nil {
			return err
		}
	}
	// chown clears setuid and setgid: the mode comes after.
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, w.perm(e)); err != nil {
		return err
	}
	ts := []unix.Timespec{unix.NsecToTimespec(e.ModTime.UnixNano()), unix.NsecToTimespec(e.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH); err != nil {
		return err
	}
	return f.Close()
}

// link makes tmp in parent a hard link to the regular file e.HardLink,
// which must be below the Writer's directory.
func (w *Writer) link(parent int, tmp string, e *Entry) error {
	if !validName(e.HardLink) {
		return fmt.Errorf("%w: hard link to %q, outside the destination", ErrUnsafeEntry, e.HardLink)
	}
	dir, base := path.Split(e.HardLink)
	from := w.dir
	if dir != "" {
		fd, err := Beneath(w.dir, dir, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return fmt.Errorf("hard link to %s: %w", e.HardLink, belowLink(err))
		}
		defer unix.Close(fd)
		from = fd
	}
	var st unix.Stat_t
	if err := unix.Fstatat(from, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("hard link to %s: %w", e.HardLink, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%w: hard link to %s, %s", ErrUnsafeEntry, e.HardLink, KindOf(st.Mode&unix.S_IFMT))
	}
	// Without AT_SYMLINK_FOLLOW: should the file become a link since,
	// the new name is that link, not what it names.
	return unix.Linkat(from, base, parent, tmp, 0)
}

func (w *Writer) owner(e *Entry) (uid, gid int, err error) {
	if !w.opts.KeepOwner {
		return w.opts.UID, w.opts.GID, nil
	}
	uid, gid = e.UID, e.GID
	if w.opts.MapUID != nil {
		if uid, err = w.opts.MapUID(uid); err != nil {
			return 0, 0, err
		}
	}
	if w.opts.MapGID != nil {
		if gid, err = w.opts.MapGID(gid); err != nil {
			return 0, 0, err
		}
	}
	return uid, gid, nil
}

func (w *Writer) perm(e *Entry) uint32 {
	keep := uint32(0o777 | unix.S_ISVTX)
	if w.opts.KeepSetid {
		keep |= unix.S_ISUID | unix.S_ISGID
	}
	return e.Mode & keep
}

// belowLink marks as ErrUnsafeEntry the error of a path the Writer
// resolved without following links, that met one (ELOOP) or would have
// left its directory through one (EXDEV): an entry named below a link
// is refused, not a failure to write it.
func belowLink(err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("%w: below a symbolic link: %w", ErrUnsafeEntry, err)
	}
	return err
}

// validName reports whether name is a clean relative path that stays
// below its directory.
func validName(name string) bool {
	if name == "" || path.IsAbs(name) || path.Clean(name) != name {
		return false
	}
	return name != ".." && !strings.HasPrefix(name, "../")
}

// tempName is a name no entry of a copy has, for the moments before an
// entry is renamed into place.
func tempName() string {
	var b [8]byte
	rand.Read(b[:])
	return ".berth-copy-" + hex.EncodeToString(b[:])
}
