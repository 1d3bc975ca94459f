package safetree

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnsafeEntry means an entry of a tree or tar stream was refused: its
// name leaves the destination, it is a hard link to something outside,
// or it is of a kind that is not copied (a device node).
var ErrUnsafeEntry = errors.New("unsafe entry")

// ErrTooDeep means a tree is nested deeper than MaxDepth directories.
var ErrTooDeep = errors.New("tree nested too deep")

// ErrChanged means the path a walk was asked to copy was removed, or
// swapped for an entry of another type, while the walk opened it.
var ErrChanged = errors.New("changed while being copied")

// MaxDepth is how deep a walk descends. Each level holds a descriptor
// open; a tree a workload made may be far deeper than PATH_MAX allows to
// name, and no real one is.
const MaxDepth = 512

// An Entry is one file, directory, link or special file of a tree.
type Entry struct {
	// Name is slash-separated and relative to the destination's
	// directory, without ".." elements.
	Name string
	// Mode is the type and permission bits, as st_mode.
	Mode     uint32
	UID, GID int
	Size     int64
	ModTime  time.Time
	Linkname string // a symbolic link's target
	HardLink string // for a hard link (tar streams only), the Name of the entry it links to
	DevMajor uint32 // device nodes (tar streams only)
	DevMinor uint32
	// Content is a regular file's data: from a directory, the open file
	// (an *os.File, whose holes are kept); from a tar stream, the stream.
	Content io.Reader
}

// Type returns the entry's file type bits (unix.S_IFREG, ...).
func (e *Entry) Type() uint32 { return e.Mode & unix.S_IFMT }

// Kind describes the entry's type in words, for errors and warnings.
func (e *Entry) Kind() string { return KindOf(e.Type()) }

// KindOf describes a file type (unix.S_IF*) in words.
func KindOf(t uint32) string {
	switch t {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFIFO:
		return "a named pipe"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return "of an unknown type"
}

// fileMode turns st_mode's permission bits into an fs.FileMode's.
func fileMode(mode uint32) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	if mode&unix.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if mode&unix.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if mode&unix.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// pathError names the entry in an error.
func pathError(op, name string, err error) error {
	if name == "" {
		name = "."
	}
	return &os.PathError{Op: op, Path: name, Err: err}
}
