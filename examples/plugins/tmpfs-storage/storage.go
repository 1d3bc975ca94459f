package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/plugin"
)

// keyPattern is the protocol's: a key is also a directory name under the
// root, so it must not be able to name anything but one entry of it.
var keyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// storage is the plugin. It is safe for concurrent use: calls for
// different keys run in parallel, and a key is claimed for the length of
// a Prepare, Release or Diff so that no two of them work on it at once.
type storage struct {
	cfg config
	log *slog.Logger

	// noSwapless records that the kernel refused tmpfs's noswap (Linux
	// before 6.4), so that later mounts go without it.
	noSwapless atomic.Bool

	// afterMount, if set, is called by Prepare once the tmpfs is
	// mounted, for tests to end a Prepare half way.
	afterMount func()

	mu   sync.Mutex
	busy map[string]string // key → the call that has it: "prepare", "release" or "diff"
}

var (
	_ plugin.StoragePlugin = (*storage)(nil)
	_ plugin.QuotaEnforcer = (*storage)(nil)
)

// newStorage checks the plugin's root, if it exists, and logs the
// rootfses it finds there. It makes the root only when a Prepare needs
// it, so that a plugin started only to describe itself (berth plugin ls)
// changes nothing on the host.
func newStorage(cfg config, log *slog.Logger) (*storage, error) {
	s := &storage{cfg: cfg, log: log, busy: make(map[string]string)}
	switch err := checkRoot(cfg.root); {
	case errors.Is(err, fs.ErrNotExist):
		log.Debug("tmpfs-storage ready; its root is made on the first prepare", "root", cfg.root)
		return s, nil
	case err != nil:
		return nil, err
	}
	keys, err := s.List(context.Background())
	if err != nil {
		return nil, err
	}
	if len(keys) > 0 {
		// Left by an earlier process of the plugin: berth releases
		// those it no longer knows.
		log.Info("rootfses from an earlier run", "root", cfg.root, "count", len(keys))
	}
	log.Debug("tmpfs-storage ready", "root", cfg.root, "size", cfg.size, "inodes", cfg.inodes, "swap", cfg.swap)
	return s, nil
}

// makeRoot makes the root if need be and checks it.
func (s *storage) makeRoot() error {
	if err := os.MkdirAll(s.cfg.root, 0o700); err != nil {
		return err
	}
	return checkRoot(s.cfg.root)
}

// checkRoot refuses a root that a user other than root could rename
// entries in, or that is a symbolic link: the plugin mounts on, unmounts
// and removes paths under it by name.
func checkRoot(root string) error {
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: root, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("root %s is not a directory", root)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("root %s is owned by uid %d, not by this process's %d", root, st.Uid, os.Geteuid())
	case st.Mode&0o022 != 0:
		return fmt.Errorf("root %s is writable by group or others (mode %#o)", root, st.Mode&0o7777)
	}
	return nil
}

// Name is the plugin's name in berth's logs and `berth plugin ls`.
func (s *storage) Name() string { return "tmpfs-storage" }

func (s *storage) Roots() []string { return []string{s.cfg.root} }

// EnforcesQuota: a tmpfs's size and nr_inodes are the quota.
func (s *storage) EnforcesQuota() bool { return true }

// claim marks key busy with call, or reports that another call has it.
func (s *storage) claim(key, call string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[key] != "" {
		return false
	}
	s.busy[key] = call
	return true
}

func (s *storage) unclaim(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.busy, key)
}

func (s *storage) preparing(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busy[key] == "prepare"
}

func checkKey(key string) error {
	if !keyPattern.MatchString(key) {
		return fmt.Errorf("key %q is not [A-Za-z0-9][A-Za-z0-9_.-]{0,127}: %w", key, plugin.ErrInvalid)
	}
	return nil
}

// Prepare mounts a tmpfs for key with the rootfs's limits, makes the
// overlay's directories on it, and answers with the overlay to mount.
// On any failure, and when ctx ends first, it leaves nothing behind.
func (s *storage) Prepare(ctx context.Context, req *plugin.PrepareRequest) (*plugin.PrepareResult, error) {
	if err := checkKey(req.Key); err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	lim, err := s.cfg.limitsFor(req.DiskQuota, req.DiskInodes, req.Options)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w: %w", req.Key, err, plugin.ErrInvalid)
	}
	lowers, err := lowerDirs(req.Layers)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w: %w", req.Key, err, plugin.ErrInvalid)
	}
	if !s.claim(req.Key, "prepare") {
		return nil, fmt.Errorf("prepare: rootfs %q is being prepared or released: %w", req.Key, plugin.ErrExists)
	}
	defer s.unclaim(req.Key)

	if err := s.makeRoot(); err != nil {
		return nil, fmt.Errorf("prepare %s: %w", req.Key, err)
	}
	dir := filepath.Join(s.cfg.root, req.Key)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("prepare: rootfs %q: %w", req.Key, plugin.ErrExists)
		}
		return nil, fmt.Errorf("prepare %s: %w", req.Key, err)
	}
	done := false
	defer func() {
		if !done {
			if err := s.remove(dir); err != nil {
				s.log.Error("undo a failed prepare", "key", req.Key, "err", err)
			}
		}
	}()

	rec := record{Key: req.Key, Image: req.ImageDigest, UIDMap: req.UIDMap, GIDMap: req.GIDMap,
		Size: lim.size, Inodes: lim.inodes, Created: time.Now().UTC()}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("prepare %s: %w", req.Key, err)
	}
	if err := s.mountTmpfs(dir, lim); err != nil {
		return nil, fmt.Errorf("prepare %s: %w", req.Key, err)
	}
	if s.afterMount != nil {
		s.afterMount()
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("prepare %s: %w", req.Key, err)
	}
	if rec.Lowers, err = makeLayout(dir, lowers, &rec); err != nil {
		return nil, fmt.Errorf("prepare %s: %w", req.Key, err)
	}
	if err := writeRecord(dir, &rec); err != nil {
		return nil, fmt.Errorf("prepare %s: %w", req.Key, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("prepare %s: %w", req.Key, err)
	}
	done = true
	s.log.Debug("prepared", "key", req.Key, "layers", len(lowers), "size", lim.size, "inodes", lim.inodes)
	return &plugin.PrepareResult{Driver: "tmpfs", Mounts: []plugin.Mount{rec.overlay(dir)}}, nil
}

// Release unmounts key's tmpfs, which frees all the rootfs held at once,
// and removes its mount point. It also clears a rootfs a crash left half
// made, which List names so that berth can.
func (s *storage) Release(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	if !s.claim(key, "release") {
		return fmt.Errorf("release: rootfs %q is being prepared or released", key)
	}
	defer s.unclaim(key)
	dir := filepath.Join(s.cfg.root, key)
	if _, err := os.Lstat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("release: rootfs %q: %w", key, plugin.ErrNotFound)
		}
		return fmt.Errorf("release %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("release %s: %w", key, err)
	}
	if err := s.remove(dir); err != nil {
		return fmt.Errorf("release %s: %w", key, err)
	}
	s.log.Debug("released", "key", key)
	return nil
}

// List names every rootfs under the root, complete or left half made by
// a crash, except those this process is preparing right now: berth
// releases the ones it no longer knows.
func (s *storage) List(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(s.cfg.root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // no rootfs made yet
	}
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	var keys []string
	for _, e := range entries {
		if !e.IsDir() || checkKey(e.Name()) != nil || s.preparing(e.Name()) {
			continue
		}
		keys = append(keys, e.Name())
	}
	return keys, nil
}
