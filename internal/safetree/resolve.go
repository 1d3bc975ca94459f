package safetree

import (
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// InRoot opens name inside the directory root as if root were "/": symbolic
// links are followed, but an absolute one starts again from root and ".."
// never climbs above it. Magic links (/proc/self/root and the like) are
// not followed at all.
func InRoot(root int, name string, flags int) (int, error) {
	fd, err := unix.Openat2(root, relative(name), &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return fd, nil
}

// Beneath opens rel below the directory dir without following a symbolic
// link on any component, its last included, and without leaving dir.
func Beneath(dir int, rel string, flags int) (int, error) {
	fd, err := unix.Openat2(dir, relative(rel), &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: rel, Err: err}
	}
	return fd, nil
}

// relative turns a slash-separated name into one openat2 takes relative
// to its directory: "/" and "" name the directory itself.
func relative(name string) string {
	rel := strings.TrimLeft(name, "/")
	if rel == "" {
		return "."
	}
	return rel
}

// Split returns the directory and last element of name, a path inside a
// root: Split("/a/b") is "/a", "b"; the root itself ("/", "", ".") has no
// last element, and base is then "".
func Split(name string) (dir, base string) {
	clean := path.Clean("/" + name)
	if clean == "/" {
		return "/", ""
	}
	return path.Dir(clean), path.Base(clean)
}
