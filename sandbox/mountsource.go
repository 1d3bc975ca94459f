package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrMountSourceLink means a bind mount's source path goes through a
// symbolic link, which berth does not follow: see openBindSource.
var ErrMountSourceLink = errors.New("symbolic link on the path")

// openBindSource opens the host path src for a bind mount and returns a
// detached copy of its mount tree (open_tree(2)), which the sandbox's init
// attaches as it is: what was checked here is what gets mounted, whatever
// is renamed or relinked on the host in between.
//
// No symbolic link on the path is followed. A sandbox that can write to a
// host directory can leave a link there (sub -> /etc), and a later mount
// of dir/sub would otherwise hand the next sandbox whatever the link names
// (Kubernetes' CVE-2017-1002101). From the host, a link a sandbox made
// looks like any other: a Default sandbox's root is the host's root. So
// every link is refused, with an error that names it and where it leads,
// for a caller who trusts it to pass that path instead.
func openBindSource(src string) (*os.File, error) {
	src = filepath.Clean(src)
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS}
	fd, err := unix.Openat2(unix.AT_FDCWD, src, how)
	if errors.Is(err, unix.ELOOP) {
		return nil, linkError(src, "/", true)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: src, Err: err}
	}
	defer unix.Close(fd)
	return cloneTree(fd, src)
}

// openVolumeSource is openBindSource for a named volume's directory. The
// directory holding the volumes is the storage's own, trusted as it is
// configured, symbolic links and all; no sandbox sees it. Only the
// volume's own directory, which a sandbox with access to its parent could
// have replaced with a link, must not be one.
func openVolumeSource(dir string) (*os.File, error) {
	dir = filepath.Clean(dir)
	parent, name := filepath.Split(dir)
	pfd, err := unix.Open(parent, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: parent, Err: err}
	}
	defer unix.Close(pfd)
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS}
	fd, err := unix.Openat2(pfd, name, how)
	if errors.Is(err, unix.ELOOP) {
		return nil, linkError(dir, parent, false)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	return cloneTree(fd, dir)
}

// cloneTree returns a detached copy of the mount tree at fd, submounts
// included, as a bind mount with MS_REC would take.
func cloneTree(fd int, name string) (*os.File, error) {
	tree, err := unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return nil, fmt.Errorf("detached mount of %s: %w", name, err)
	}
	return os.NewFile(uintptr(tree), name), nil
}

// linkError describes the first symbolic link on path below the directory
// from: the link, what it says, and, with suggest, the path with it
// resolved, which a caller who trusts the link can pass instead.
func linkError(path, from string, suggest bool) error {
	link, target := firstLink(path, from)
	if link == "" {
		// Gone since the open failed: still refused, without details.
		return fmt.Errorf("%s: %w", path, ErrMountSourceLink)
	}
	hint := ""
	if real, err := filepath.EvalSymlinks(link); err == nil && suggest {
		rest, _ := filepath.Rel(link, path)
		hint = "; if you trust it, pass " + filepath.Join(real, rest)
	}
	return fmt.Errorf("%s: %w: %s -> %s (not followed, as a sandbox that could write there may have made it%s)",
		path, ErrMountSourceLink, link, target, hint)
}

// firstLink returns the first component of path below the directory from
// that is a symbolic link, and its contents, or "" if none is.
func firstLink(path, from string) (link, target string) {
	rel, err := filepath.Rel(from, path)
	if err != nil {
		return "", ""
	}
	cur := from
	for _, part := range strings.Split(rel, "/") {
		if part == "" || part == "." {
			continue
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if err != nil {
			return "", ""
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			t, err := os.Readlink(cur)
			if err != nil {
				return "", ""
			}
			return cur, t
		}
	}
	return "", ""
}

// bindFlags are the mount flags of a bind mount or volume. They are nosuid
// and nodev unless its Options say "suid" or "dev": a setuid binary or a
// device node that a sandbox, or anyone, left in a host directory grants
// nothing inside. "noexec" forbids running its files.
func bindFlags(m *Mount) (uintptr, error) {
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if m.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if m.Options == "" {
		return flags, nil
	}
	for _, o := range strings.Split(m.Options, ",") {
		switch o {
		case "suid":
			flags &^= unix.MS_NOSUID
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "dev":
			flags &^= unix.MS_NODEV
		case "nodev":
			flags |= unix.MS_NODEV
		case "exec":
			flags &^= unix.MS_NOEXEC
		case "noexec":
			flags |= unix.MS_NOEXEC
		default:
			return 0, fmt.Errorf("mount %s: option %q (want suid, nosuid, dev, nodev, exec or noexec)", m.Destination, o)
		}
	}
	return flags, nil
}

// closeMountSources closes the host's copies of the mount trees opened for
// the sandbox's init: once the init holds them, or when the start fails.
func (s *Sandbox) closeMountSources() {
	for _, f := range s.mountSources {
		f.Close()
	}
	s.mountSources = nil
}
