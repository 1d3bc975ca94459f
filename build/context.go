package build

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/safetree"
)

// ErrOutsideContext means a COPY or ADD source names a path outside the
// build context.
var ErrOutsideContext = errors.New("source outside the build context")

// A buildContext is the directory a build copies from. The directory is
// the caller's; what is in it may be anyone's (a repository just
// cloned), so every path in it is opened relative to a descriptor of the
// directory with openat2(RESOLVE_IN_ROOT): a symbolic link in the
// context, there from the start or swapped in while the build runs, is
// resolved as if the context were "/" and never reaches a host file
// outside it.
//
// .dockerignore is matched against paths as the kernel resolved them, so
// that a link cannot name what it leaves out; below a source, where
// links are copied as links, paths are opened without following any
// link, so that a directory swapped for one during the build fails the
// build instead of being read through.
type buildContext struct {
	dir    string
	root   *os.File // O_PATH descriptor of dir
	real   string   // root's path as the kernel gives it in /proc/self/fd
	ignore *patternmatcher.PatternMatcher
	// keepOwners keeps the files' owners, as COPY --from does; files
	// of the context are copied as 0:0, whoever owns them on the host.
	keepOwners bool
}

// setOwner gives hdr, an entry copied from st, its owner.
func (c *buildContext) setOwner(hdr *tar.Header, st *unix.Stat_t) {
	if c.keepOwners {
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
	}
}

func openContext(dir string) (*buildContext, error) {
	c, err := openTree(dir)
	if err != nil {
		return nil, fmt.Errorf("context %s: %w", dir, err)
	}
	data, err := c.readFile(".dockerignore", maxDockerfile)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		c.Close()
		return nil, fmt.Errorf("context %s: %w", dir, err)
	}
	if len(data) > 0 {
		patterns, err := ignorefile.ReadAll(bytes.NewReader(data))
		if err == nil {
			c.ignore, err = patternmatcher.New(patterns)
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("context %s: .dockerignore: %w", dir, err)
		}
	}
	return c, nil
}

// openTree opens dir as a tree to copy from, read inside it, with
// nothing ignored and owners dropped: the context (see openContext), or
// an image's prepared rootfs as a source of COPY --from (which keeps
// owners).
func openTree(dir string) (*buildContext, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	c := &buildContext{dir: dir, root: os.NewFile(uintptr(fd), dir)}
	if c.real, err = fdPath(fd); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// fdPath is the path of the file open as fd, as the kernel gives it.
func fdPath(fd int) (string, error) {
	return os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
}

// where returns the path in the context of f, a descriptor opened in it:
// where the links its name went through led.
func (c *buildContext) where(f *os.File) (string, error) {
	p, err := fdPath(int(f.Fd()))
	if err != nil {
		return "", err
	}
	if p == c.real {
		return "", nil
	}
	rel, ok := strings.CutPrefix(p, strings.TrimSuffix(c.real, "/")+"/")
	if !ok {
		return "", fmt.Errorf("%s resolved to %s, outside the context", f.Name(), p)
	}
	return rel, nil
}

func (c *buildContext) Close() error { return c.root.Close() }

// open opens rel, a path in the context, resolved inside it.
func (c *buildContext) open(rel string, flags int) (*os.File, error) {
	fd, err := safetree.InRoot(int(c.root.Fd()), rel, flags)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), rel), nil
}

// exact opens rel, a path in the context that goes through no link
// (one listed by readDir), following none: a link swapped in since is
// an error (ELOOP).
func (c *buildContext) exact(rel string, flags int) (*os.File, error) {
	fd, err := safetree.Beneath(int(c.root.Fd()), rel, flags)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), rel), nil
}

// readFile reads rel, which must be a regular file of at most max bytes:
// a FIFO or a device planted in the context is refused, not read.
func (c *buildContext) readFile(rel string, max int64) ([]byte, error) {
	f, err := c.openRegular(rel, false)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", rel, max)
	}
	return data, nil
}

// openRegular opens rel for reading if it is a regular file, following
// links inside the context unless exact. Nothing else is ever opened
// (see reopenRegular).
func (c *buildContext) openRegular(rel string, exact bool) (*os.File, error) {
	open := c.open
	if exact {
		open = c.exact
	}
	pf, err := open(rel, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	return reopenRegular(pf)
}

// reopenRegular opens for reading the file pf, an O_PATH descriptor
// (which opens nothing), if it is a regular file. A FIFO or a device
// node planted in a context or an image is so never opened: opening
// one can have effects of its own (a FIFO's writer let through, a
// device's driver called), whatever is read after. O_NONBLOCK keeps a
// lease from holding the open up.
func reopenRegular(pf *os.File) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(pf.Fd()), &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: pf.Name(), Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s: not a regular file", pf.Name())
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", pf.Fd()), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: pf.Name(), Err: err}
	}
	return os.NewFile(uintptr(fd), pf.Name()), nil
}

// ignored reports whether .dockerignore leaves rel out of the context.
func (c *buildContext) ignored(rel string) bool {
	if c.ignore == nil || rel == "" {
		return false
	}
	m, err := c.ignore.MatchesOrParentMatches(rel)
	return err == nil && m
}

// contextPath is src, a COPY or ADD source, as a path in the context
// without leading slash ("" for the context itself). As in Docker an
// absolute source is taken from the context's root; one that climbs out
// of the context with ".." is refused.
func contextPath(src string) (string, error) {
	clean := path.Clean(src)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%s: %w", src, ErrOutsideContext)
	}
	rel := strings.TrimPrefix(path.Clean("/"+clean), "/")
	return rel, nil
}

// hasGlob reports whether p is a pattern rather than a name.
func hasGlob(p string) bool { return strings.ContainsAny(p, `*?[\`) }

// glob returns the context paths pattern matches, as path.Match does,
// sorted, leaving out what .dockerignore excludes.
func (c *buildContext) glob(pattern string) ([]string, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("%s: %w", pattern, err)
	}
	depth := strings.Count(pattern, "/")
	var out []string
	var walk func(dir string, d int) error
	walk = func(dir string, d int) error {
		names, err := c.readDir(dir)
		if err != nil {
			return err
		}
		for _, name := range names {
			rel := path.Join(dir, name)
			if c.ignored(rel) && (c.ignore == nil || !c.ignore.Exclusions()) {
				continue
			}
			if d == depth {
				if ok, _ := path.Match(pattern, rel); ok && !c.ignored(rel) {
					out = append(out, rel)
				}
				continue
			}
			var st unix.Stat_t
			if err := c.lstat(rel, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
				if err := walk(rel, d+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk("", 0); err != nil {
		return nil, err
	}
	return out, nil
}

// readDir returns the names in the context directory rel (a path
// through no link), sorted.
func (c *buildContext) readDir(rel string) ([]string, error) {
	f, err := c.exact(rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", rel, err)
	}
	slices.Sort(names)
	return names, nil
}

// lstat stats rel (a path through no link) without following a link at
// its last component.
func (c *buildContext) lstat(rel string, st *unix.Stat_t) error {
	f, err := c.exact(rel, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fstat(int(f.Fd()), st)
}

// readlink reads the symbolic link rel (a path through no other link).
func (c *buildContext) readlink(rel string) (string, error) {
	f, err := c.exact(rel, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(int(f.Fd()), "", buf)
	if err != nil {
		return "", &os.PathError{Op: "readlink", Path: rel, Err: err}
	}
	return string(buf[:n]), nil
}
