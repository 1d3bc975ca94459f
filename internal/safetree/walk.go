package safetree

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Walk calls fn for name in the directory dir and, if it is a directory,
// for everything below it, parents before children, in name order. The
// entries are named as as, the children as/child and so on. No symbolic
// link is followed, name's own included: a link is an entry of its own. A
// regular file's Content is open for reading while fn runs, and closed
// after; other entries have none. Special files (FIFOs, sockets, devices)
// are passed to fn, which decides, but never opened.
//
// A tree that changes while it is walked gives entries as they were when
// each was looked at; an entry below name that vanished or changed its
// kind between its stat and its open is skipped. Should name itself do
// so, Walk returns an error that errors.Is ErrChanged.
func Walk(ctx context.Context, dir int, name, as string, fn func(*Entry) error) error {
	w := &walker{fn: fn, links: map[[2]uint64]string{}}
	return w.walk(ctx, dir, name, as, 0)
}

// A walker is one Walk's state.
type walker struct {
	fn func(*Entry) error
	// links are the names of the regular files with more than one link
	// met so far, by device and inode: the file's other names are passed
	// as hard links to the first, so that a tree of a thousand links to
	// one large file costs its copy that file once.
	links map[[2]uint64]string
	// linkNames is how many bytes of names links holds.
	linkNames int
}

// maxLinkNames bounds the bytes of names a walk keeps of files with
// several links: the names are the tree's owner's to choose, each up to
// PATH_MAX deep and more, and a workload's hard links would otherwise
// make berth hold any amount of them.
var maxLinkNames = 64 << 20

func (w *walker) walk(ctx context.Context, dir int, name, as string, depth int) error {
	fn := w.fn
	if err := ctx.Err(); err != nil {
		return err
	}
	if depth > MaxDepth {
		return pathError("walk", as, fmt.Errorf("%w: more than %d levels", ErrTooDeep, MaxDepth))
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if depth > 0 && errors.Is(err, unix.ENOENT) {
			return nil // removed since its directory was read
		}
		return pathError("lstat", as, err)
	}
	e := entryOf(as, &st)
	switch e.Type() {
	case unix.S_IFLNK:
		target, err := readlinkat(dir, name)
		if err != nil {
			return pathError("readlink", as, err)
		}
		e.Linkname = target
		return fn(e)
	case unix.S_IFREG:
		if st.Nlink > 1 {
			id := [2]uint64{st.Dev, st.Ino}
			if first, ok := w.links[id]; ok {
				e.HardLink, e.Size = first, 0
				return fn(e)
			}
		}
		f, ok, err := openRegular(dir, name, as)
		if err != nil {
			return err
		}
		if !ok {
			return w.changed(depth, as)
		}
		defer f.Close()
		var now unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &now); err != nil {
			return pathError("stat", as, err)
		}
		// Recorded once opened, and as the file opened: a name swapped
		// or gone since its lstat must not become the target of the
		// file's other names.
		if id := [2]uint64{now.Dev, now.Ino}; now.Nlink > 1 && w.links[id] == "" {
			if w.linkNames += len(as); w.linkNames > maxLinkNames {
				return pathError("walk", as, fmt.Errorf("%w: more than %d bytes of names of files with several links", ErrUnsafeEntry, maxLinkNames))
			}
			w.links[id] = as
		}
		e = entryOf(as, &now)
		e.Content = f
		return fn(e)
	case unix.S_IFDIR:
		fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ENOENT) {
				return w.changed(depth, as)
			}
			return pathError("open", as, err)
		}
		d := os.NewFile(uintptr(fd), as)
		defer d.Close()
		var now unix.Stat_t
		if err := unix.Fstat(fd, &now); err != nil {
			return pathError("stat", as, err)
		}
		if err := fn(entryOf(as, &now)); err != nil {
			return err
		}
		if kernelFS(fd) {
			return nil
		}
		// In batches: a directory may hold millions of names.
		for {
			names, err := d.Readdirnames(1024)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return pathError("readdir", as, err)
			}
			for _, child := range names {
				if err := w.walk(ctx, fd, child, path.Join(as, child), depth+1); err != nil {
					return err
				}
			}
		}
	}
	return fn(e)
}

// changed answers for an entry that was removed or swapped for one of
// another type between its lstat and its open. Below the walk's root it
// is left out, as it would have been had its owner been a moment faster.
// The root itself is all the walk was asked for: leaving it out would end
// a walk that produced nothing in success, so it is an error.
func (w *walker) changed(depth int, as string) error {
	if depth > 0 {
		return nil
	}
	return pathError("walk", as, ErrChanged)
}

// kernelFS reports whether fd (O_PATH will do) is on a filesystem of the
// kernel's (procfs, sysfs, cgroupfs, devpts and the like), whose contents
// are the kernel's state, not files: a walk does not descend into them.
// Reading some of their files has effects, or takes long.
func kernelFS(fd int) bool {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return false
	}
	switch fs.Type {
	case unix.PROC_SUPER_MAGIC, unix.SYSFS_MAGIC, unix.CGROUP_SUPER_MAGIC, unix.CGROUP2_SUPER_MAGIC,
		unix.DEVPTS_SUPER_MAGIC, unix.DEBUGFS_MAGIC, unix.SECURITYFS_MAGIC, unix.TRACEFS_MAGIC,
		unix.BPF_FS_MAGIC, unix.PSTOREFS_MAGIC, unix.EFIVARFS_MAGIC,
		unix.SELINUX_MAGIC, unix.SMACK_MAGIC, unix.NSFS_MAGIC:
		return true
	}
	return false
}

// openRegular opens the regular file name in dir for reading without
// opening anything else: an O_PATH descriptor, which opens nothing, is
// checked first, and only that inode is then opened, O_NONBLOCK so that a
// lease cannot hold the open up. ok is false if it is no longer a regular
// file.
func openRegular(dir int, name, as string) (f *os.File, ok bool, err error) {
	p, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, false, nil
		}
		return nil, false, pathError("open", as, err)
	}
	defer unix.Close(p)
	var st unix.Stat_t
	if err := unix.Fstat(p, &st); err != nil {
		return nil, false, pathError("stat", as, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, false, nil
	}
	// A file of procfs or sysfs is the kernel's state, and reading one
	// can act on the host's (/proc/kmsg takes the host's kernel log from
	// its syslog) or hand over the host's memory (/proc/kcore): a workload
	// that points a copy there, through a link to its /proc or a mount,
	// must not get berth, the host's root, to read it.
	if kernelFS(p) {
		return nil, false, pathError("open", as, fmt.Errorf("%w: a file of a kernel filesystem (procfs, sysfs and the like)", ErrUnsafeEntry))
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(p), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, pathError("open", as, errors.New("another process holds a lease on it"))
		}
		return nil, false, pathError("open", as, err)
	}
	return os.NewFile(uintptr(fd), as), true, nil
}

func entryOf(name string, st *unix.Stat_t) *Entry {
	return &Entry{
		Name: name, Mode: st.Mode, UID: int(st.Uid), GID: int(st.Gid), Size: st.Size,
		ModTime:  time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		DevMajor: unix.Major(st.Rdev), DevMinor: unix.Minor(st.Rdev),
	}
}

// readlinkat reads the target of the link name in dir, however long.
func readlinkat(dir int, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(dir, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		if len(buf) >= unix.PathMax {
			return "", unix.ENAMETOOLONG
		}
		buf = make([]byte, 2*len(buf))
	}
}
