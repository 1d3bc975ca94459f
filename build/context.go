package build

import (
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
type buildContext struct {
	dir    string
	root   *os.File // O_PATH descriptor of dir
	ignore *patternmatcher.PatternMatcher
}

func openContext(dir string) (*buildContext, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("context %s: %w", dir, err)
	}
	c := &buildContext{dir: dir, root: os.NewFile(uintptr(fd), dir)}
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

// openTree opens dir, an image's prepared rootfs, as a source of COPY
// --from: read as the context is, inside it, with nothing ignored.
func openTree(dir string) (*buildContext, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &buildContext{dir: dir, root: os.NewFile(uintptr(fd), dir)}, nil
}

func (c *buildContext) Close() error { return c.root.Close() }

// open opens rel, a path in the context, resolved inside it.
func (c *buildContext) open(rel string, flags int) (*os.File, error) {
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(int(c.root.Fd()), rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: rel, Err: err}
	}
	return os.NewFile(uintptr(fd), rel), nil
}

// readFile reads rel, which must be a regular file of at most max bytes:
// a FIFO or a device planted in the context is refused, not read.
func (c *buildContext) readFile(rel string, max int64) ([]byte, error) {
	f, err := c.openRegular(rel)
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

// openRegular opens rel for reading if it is a regular file. O_NONBLOCK
// keeps a FIFO from blocking the open; it means nothing to a regular
// file.
func (c *buildContext) openRegular(rel string) (*os.File, error) {
	f, err := c.open(rel, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file", rel)
	}
	return f, nil
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

// readDir returns the names in the context directory rel, sorted.
func (c *buildContext) readDir(rel string) ([]string, error) {
	f, err := c.open(rel, unix.O_RDONLY|unix.O_DIRECTORY)
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

// lstat stats rel without following a link at its last component.
func (c *buildContext) lstat(rel string, st *unix.Stat_t) error {
	f, err := c.open(rel, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fstat(int(f.Fd()), st)
}

// readlink reads the symbolic link rel.
func (c *buildContext) readlink(rel string) (string, error) {
	f, err := c.open(rel, unix.O_PATH|unix.O_NOFOLLOW)
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
