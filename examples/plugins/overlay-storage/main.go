// Command overlay-storage is berth's built-in overlay rootfs served as a
// storage plugin: the same stack of the store's unpacked layers under a
// private upper directory, only made by another process and mounted by
// berth from the plugin's answer. It is an example, the reference the
// conformance kit is proven against, and what the plugin benchmark
// compares with the built-in store.
//
// It does not open berth's store: berth hands it the layers' directories
// in each request, and it keeps only each rootfs's upper and work
// directories under its root ($BERTH_OVERLAY_STORAGE_ROOT, by default
// /var/lib/berth/plugins/overlay-storage). It mounts nothing that berth
// or a sandbox has: for a user namespace, idmapped clones of the layers
// under its own root (see idmap.go); berth mounts the overlay.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/berth-dev/berth/plugin"
)

// rootEnv names the variable that moves the root: berth starts plugins
// without arguments, in its own environment.
const rootEnv = "BERTH_OVERLAY_STORAGE_ROOT"

const defaultRoot = "/var/lib/berth/plugins/overlay-storage"

func main() {
	holdIfAsked()
	root := os.Getenv(rootEnv)
	if root == "" {
		root = defaultRoot
	}
	s, err := newStorage(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "overlay-storage:", err)
		os.Exit(1)
	}
	plugin.ServeStorage(s)
}

// keyPattern is the protocol's: a key is a name, never a path.
var keyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// storage keeps root/rootfs/<key>/{upper,work} per rootfs. The directory
// of a key is the whole record: what is on disk is what is prepared, so
// a restarted plugin knows the keys its predecessor prepared.
type storage struct {
	root  string
	mu    sync.Mutex
	locks map[string]*keyLock // keys with a call in progress or waiting
}

type keyLock struct {
	sync.Mutex
	users int
}

func newStorage(root string) (*storage, error) {
	if !filepath.IsAbs(root) || filepath.Clean(root) != root {
		return nil, fmt.Errorf("root %q: not an absolute, clean path", root)
	}
	if err := os.MkdirAll(filepath.Join(root, "rootfs"), 0o711); err != nil {
		return nil, err
	}
	return &storage{root: root, locks: map[string]*keyLock{}}, nil
}

func (s *storage) Roots() []string { return []string{s.root} }

// lock claims key for one call, so that a Prepare and a Release of the
// same key never interleave; calls for other keys go on meanwhile.
func (s *storage) lock(key string) (unlock func(), err error) {
	if !keyPattern.MatchString(key) {
		return nil, fmt.Errorf("key %q: %w", key, plugin.ErrInvalid)
	}
	s.mu.Lock()
	l := s.locks[key]
	if l == nil {
		l = &keyLock{}
		s.locks[key] = l
	}
	l.users++
	s.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		s.mu.Lock()
		if l.users--; l.users == 0 {
			delete(s.locks, key)
		}
		s.mu.Unlock()
	}, nil
}

func (s *storage) dir(key string) string { return filepath.Join(s.root, "rootfs", key) }

// Prepare makes key's upper and work directories and answers with one
// overlay mount of the layers under them, with the options the built-in
// driver uses, which keep the upper directory a plain diff of the layers.
func (s *storage) Prepare(ctx context.Context, req *plugin.PrepareRequest) (_ *plugin.PrepareResult, err error) {
	unlock, err := s.lock(req.Key)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if len(req.Layers) == 0 {
		return nil, fmt.Errorf("an image without layers: %w", plugin.ErrUnsupported)
	}
	lowers := make([]string, len(req.Layers))
	for i, l := range req.Layers {
		if !filepath.IsAbs(l.UnpackedPath) || strings.ContainsAny(l.UnpackedPath, ":,") {
			return nil, fmt.Errorf("layer %s: unpacked path %q: %w", l.DiffID, l.UnpackedPath, plugin.ErrInvalid)
		}
		lowers[len(lowers)-1-i] = l.UnpackedPath // overlayfs wants the top first
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir := s.dir(req.Key)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("rootfs %q: %w", req.Key, plugin.ErrExists)
		}
		return nil, err
	}
	defer func() {
		if err != nil {
			s.remove(dir)
		}
	}()
	if len(req.UIDMap) > 0 || len(req.GIDMap) > 0 {
		if lowers, err = idmapLayers(dir, lowers, req.UIDMap, req.GIDMap); err != nil {
			return nil, err
		}
	}
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	// The root of an overlay takes its owner and mode from the upper
	// directory: give it the image's (mapped, through an idmapped layer).
	if err := copyOwnerMode(lowers[0], upper); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &plugin.PrepareResult{
		Driver: "overlay",
		Mounts: []plugin.Mount{{
			Type:   "overlay",
			Source: "overlay",
			Options: []string{
				"lowerdir=" + strings.Join(lowers, ":"),
				"upperdir=" + upper,
				"workdir=" + work,
				"redirect_dir=off", "metacopy=off", "index=off",
			},
		}},
	}, nil
}

func copyOwnerMode(from, to string) error {
	var st syscall.Stat_t
	if err := syscall.Stat(from, &st); err != nil {
		return err
	}
	if err := os.Lchown(to, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	return os.Chmod(to, os.FileMode(st.Mode&0o7777))
}

// Release removes key's directories; berth has unmounted the overlay.
func (s *storage) Release(ctx context.Context, key string) error {
	unlock, err := s.lock(key)
	if err != nil {
		return err
	}
	defer unlock()
	dir := s.dir(key)
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rootfs %q: %w", key, plugin.ErrNotFound)
	}
	return s.remove(dir)
}

// remove removes a rootfs's directory, once nothing is mounted in it.
func (s *storage) remove(dir string) error {
	if err := unmountUnder(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// ShiftsOwners says that Prepare honours the request's user namespace
// maps itself (capability "idmap").
func (s *storage) ShiftsOwners() bool { return true }

func (s *storage) List(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "rootfs"))
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, e := range entries {
		keys = append(keys, e.Name())
	}
	sort.Strings(keys)
	return keys, nil
}
