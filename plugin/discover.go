package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// DefaultDir is where plugins are looked up by name when
// $BERTH_PLUGIN_DIR is not set.
const DefaultDir = "/usr/local/lib/berth/plugins"

// ErrUntrusted means that a plugin's binary, or a directory or symbolic
// link on its path, could be changed by someone other than root, or is
// not a regular executable file: berth, which runs plugins as root,
// refuses to run it, as sudo refuses such a sudoers file.
var ErrUntrusted = errors.New("plugin binary not trusted")

// Dir returns the directory plugins are looked up in by name:
// $BERTH_PLUGIN_DIR, or DefaultDir.
func Dir() string {
	if d := os.Getenv("BERTH_PLUGIN_DIR"); d != "" {
		return d
	}
	return DefaultDir
}

// Find returns the absolute path of the plugin name: a name without a
// slash is a file in Dir(), a path (with a slash) is used as it is, made
// absolute. A plugin runs as root, so Find refuses, with an error that
// wraps ErrUntrusted and names the path at fault, a binary that is not a
// regular executable file, or that anyone but root could replace: one
// not owned by root, or writable by its group or others, or reached
// through a directory or symbolic link that is. A missing binary is an
// error that wraps fs.ErrNotExist.
//
// The path returned is the one given, not the one its links lead to, so
// that a link updated by root to a new version is followed next time.
func Find(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("plugin name %q: want a file name in %s, or a path", name, Dir())
	}
	path := name
	if !strings.ContainsRune(name, '/') {
		path = filepath.Join(Dir(), name)
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("plugin %q: %w", name, err)
	}
	if err := checkTrusted(path); err != nil {
		return "", err
	}
	return path, nil
}

// maxLinks bounds the symbolic links followed on one path, as the
// kernel's ELOOP does.
const maxLinks = 40

// checkTrusted walks the absolute path from / a component at a time,
// following symbolic links as the kernel would, and checks everything it
// passes through: each directory, each link, and the file at the end.
// Every one of them must be root's and writable by root alone, or
// whoever can write it could put another program in the plugin's place.
func checkTrusted(path string) error {
	rest := strings.Split(strings.TrimPrefix(path, "/"), "/")
	cur := "/"
	if err := checkOwner(cur, true); err != nil {
		return err
	}
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur) // checked already on the way down
			continue
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(next)
		if err != nil {
			return fmt.Errorf("plugin %s: %w", path, err)
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if err := checkOwner(next, false); err != nil {
				return err
			}
			if links++; links > maxLinks {
				return fmt.Errorf("plugin %s: %w", path, syscall.ELOOP)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return fmt.Errorf("plugin %s: %w", path, err)
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			rest = append(strings.Split(target, "/"), rest...)
		case fi.IsDir():
			if err := checkOwner(next, true); err != nil {
				return err
			}
			cur = next
		case len(rest) > 0:
			return fmt.Errorf("plugin %s: %s: %w", path, next, syscall.ENOTDIR)
		default:
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("plugin %s: %s is not a regular file: %w", path, next, ErrUntrusted)
			}
			if fi.Mode().Perm()&0o111 == 0 {
				return fmt.Errorf("plugin %s: %s is not executable: %w", path, next, ErrUntrusted)
			}
			return checkOwner(next, false)
		}
	}
	return fmt.Errorf("plugin %s: %s is a directory, not a program: %w", path, cur, ErrUntrusted)
}

// checkOwner checks that only root can change p: its owner is root and
// (but for a link, whose mode means nothing) its group and others cannot
// write it.
func checkOwner(p string, dir bool) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	what := "file"
	switch {
	case dir:
		what = "directory"
	case fi.Mode()&fs.ModeSymlink != 0:
		what = "symbolic link"
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s %s: no owner: %w", what, p, ErrUntrusted)
	}
	if st.Uid != 0 {
		return fmt.Errorf("%s %s is owned by uid %d, not root: %w", what, p, st.Uid, ErrUntrusted)
	}
	if fi.Mode()&fs.ModeSymlink == 0 && fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s %s is writable by group or others (mode %04o): %w", what, p, fi.Mode().Perm(), ErrUntrusted)
	}
	return nil
}

// An Entry is one program in a plugins directory: what it says it is, or
// why that could not be had.
type Entry struct {
	Name string // its file name
	Info Info   // valid if Err is nil
	Err  error
}

// describeTimeout bounds how long List waits for one plugin to start and
// describe itself, so that one that hangs does not hang the listing.
const describeTimeout = 10 * time.Second

// List starts each program in dir (empty means Dir()) that Find accepts,
// asks it what it is, and stops it. A program that is not a plugin, or is
// not trusted, or fails, is listed with its error: one broken plugin
// does not hide the others. Files whose names start with "." and
// directories are left out; a dir that does not exist holds no plugins.
// The entries are sorted by name.
func List(ctx context.Context, dir string, opts *Options) ([]Entry, error) {
	if dir == "" {
		dir = Dir()
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".") || de.IsDir() {
			continue
		}
		if err := ctx.Err(); err != nil {
			return out, err
		}
		e := Entry{Name: de.Name()}
		path, err := Find(filepath.Join(dir, de.Name()))
		if err == nil {
			dctx, cancel := context.WithTimeout(ctx, describeTimeout)
			e.Info, err = Describe(dctx, path, opts)
			cancel()
		}
		e.Err = err
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
