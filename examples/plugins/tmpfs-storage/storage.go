package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/plugin"
)

// Layout of one rootfs: root/<key> is the mount point of its tmpfs, which
// holds the overlay's upper and work directories and the record that says
// the rootfs is complete. Nothing else keeps state, so a plugin started
// again (after berth restarted it, or after a kill -9) knows every rootfs
// from its root alone: the tmpfses outlive the process that mounted them.
const (
	upperDir   = "upper"
	workDir    = "work"
	emptyDir   = "empty" // the lower of an image without layers
	recordFile = "rootfs.json"
)

// maxLowers is the most lower layers overlayfs stacks (OVL_MAX_STACK).
const maxLowers = 500

// keyPattern is the protocol's: a key is also a directory name under the
// root, so it must not be able to name anything but one entry of it.
var keyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// overlayOptions keep the upper directory a plain diff of the lowers, one
// that Diff can read as an OCI layer: redirects, metacopy-only copy-ups
// and the inode index would all leave state only overlayfs understands.
var overlayOptions = []string{"redirect_dir=off", "index=off", "metacopy=off"}

// record is what the plugin knows of a rootfs, kept on its tmpfs.
type record struct {
	Key     string          `json:"key"`
	Image   string          `json:"image"`
	Lowers  []string        `json:"lowers"` // top first
	UIDMap  []layerfs.IDMap `json:"uidMap,omitempty"`
	GIDMap  []layerfs.IDMap `json:"gidMap,omitempty"`
	Size    int64           `json:"size"`
	Inodes  int64           `json:"inodes"`
	Created time.Time       `json:"created"`
}

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

// newStorage makes the plugin's root if need be, checks that no one but
// root can change what is in it, and logs the rootfses it finds there.
func newStorage(cfg config, log *slog.Logger) (*storage, error) {
	if err := os.MkdirAll(cfg.root, 0o700); err != nil {
		return nil, err
	}
	if err := checkRoot(cfg.root); err != nil {
		return nil, err
	}
	s := &storage{cfg: cfg, log: log, busy: make(map[string]string)}
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

// overlay is the mount that assembles rec's rootfs in dir.
func (rec *record) overlay(dir string) plugin.Mount {
	opts := []string{
		"lowerdir=" + strings.Join(rec.Lowers, ":"),
		"upperdir=" + filepath.Join(dir, upperDir),
		"workdir=" + filepath.Join(dir, workDir),
	}
	return plugin.Mount{
		Type:    "overlay",
		Source:  "overlay",
		Options: append(opts, overlayOptions...),
		// overlayfs cannot be idmapped itself; berth idmaps its layers
		// and writes through it then keep host ids on the tmpfs.
		IDMap: len(rec.UIDMap) > 0,
	}
}

// lowerDirs checks the layers' directories and returns those overlayfs
// is to show, top first. A layer whose root is opaque hides every layer
// below it, which overlayfs would not do by itself (it ignores an opaque
// layer root).
func lowerDirs(layers []plugin.Layer) ([]string, error) {
	lowers := make([]string, 0, len(layers))
	for i := len(layers) - 1; i >= 0; i-- {
		dir := layers[i].UnpackedPath
		if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir {
			return nil, fmt.Errorf("layer %s: unpacked path %q is not absolute and clean", layers[i].DiffID, dir)
		}
		if strings.ContainsAny(dir, ",:\\") {
			return nil, fmt.Errorf("layer %s: unpacked path %q contains a comma, colon or backslash, which overlayfs's options cannot carry", layers[i].DiffID, dir)
		}
		var st unix.Stat_t
		if err := unix.Lstat(dir, &st); err != nil {
			return nil, fmt.Errorf("layer %s: %w", layers[i].DiffID, &os.PathError{Op: "lstat", Path: dir, Err: err})
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil, fmt.Errorf("layer %s: %s is not a directory", layers[i].DiffID, dir)
		}
		lowers = append(lowers, dir)
		if opaque, err := isOpaque(dir); err != nil {
			return nil, fmt.Errorf("layer %s: %w", layers[i].DiffID, err)
		} else if opaque {
			break
		}
	}
	if len(lowers) > maxLowers {
		return nil, fmt.Errorf("%d layers exceed overlayfs's limit of %d", len(lowers), maxLowers)
	}
	return lowers, nil
}

// isOpaque reports whether overlayfs marked directory path opaque.
func isOpaque(path string) (bool, error) {
	buf := make([]byte, 1)
	n, err := unix.Lgetxattr(path, "trusted.overlay.opaque", buf)
	switch err {
	case nil:
		return n == 1 && buf[0] == 'y', nil
	case unix.ENODATA, unix.ENOTSUP, unix.ERANGE:
		return false, nil
	}
	return false, &os.PathError{Op: "getxattr", Path: path, Err: err}
}

// mountTmpfs mounts dir's tmpfs with lim. It is mode 0700, so that only
// root on the host reaches the upper directory other than through the
// overlay, and nosuid and nodev, like everything berth mounts.
//
// Unless the plugin runs with -swap, the tmpfs is noswap: otherwise memory
// pressure writes the rootfs to the swap device, to disk, which is what
// the plugin is for avoiding. A kernel without noswap (before Linux 6.4)
// gets tmpfses without it only while the host has no swap on, and the
// plugin says so; with swap on, Prepare fails instead and names -swap.
func (s *storage) mountTmpfs(dir string, lim limits) error {
	data := fmt.Sprintf("size=%d,nr_inodes=%d,mode=0700", lim.size, lim.inodes)
	const flags = unix.MS_NOSUID | unix.MS_NODEV
	if !s.cfg.swap && !s.noSwapless.Load() {
		err := unix.Mount("tmpfs", dir, "tmpfs", flags, data+",noswap")
		if err != unix.EINVAL {
			return mountErr(dir, err)
		}
		if swapOn() {
			return fmt.Errorf("mount tmpfs on %s: the kernel refuses noswap (Linux 6.4 or later has it) and the host has swap on, where the rootfs could be written; run the plugin with -swap (BERTH_TMPFS_STORAGE_SWAP=true) to accept that", dir)
		}
		s.noSwapless.Store(true)
		s.log.Info("the kernel refuses tmpfs's noswap (Linux 6.4 or later has it); mounting without it while the host has no swap", "err", err)
	}
	if s.noSwapless.Load() && !s.cfg.swap && swapOn() {
		return fmt.Errorf("mount tmpfs on %s: the kernel has no noswap and the host now has swap on; run the plugin with -swap (BERTH_TMPFS_STORAGE_SWAP=true) to accept that", dir)
	}
	return mountErr(dir, unix.Mount("tmpfs", dir, "tmpfs", flags, data))
}

// swapOn reports whether the host has a swap device or file on: whether
// /proc/swaps lists any below its heading. Unreadable, it says yes.
func swapOn() bool {
	b, err := os.ReadFile("/proc/swaps")
	return err != nil || listsSwap(string(b))
}

// listsSwap reports whether the text of /proc/swaps lists a device.
func listsSwap(swaps string) bool {
	return strings.Count(strings.TrimSpace(swaps), "\n") > 0
}

func mountErr(dir string, err error) error {
	if err != nil {
		return &os.PathError{Op: "mount tmpfs", Path: dir, Err: err}
	}
	return nil
}

// makeLayout makes the overlay's directories on dir's tmpfs and returns
// the lowers to mount, top first. The upper directory, which is the
// rootfs's root, gets the owner and mode of the image's root, its owner
// mapped to the host when the rootfs is for a user namespace.
func makeLayout(dir string, lowers []string, rec *record) ([]string, error) {
	uid, gid, mode := uint32(0), uint32(0), uint32(0o755)
	if len(lowers) == 0 {
		empty := filepath.Join(dir, emptyDir)
		if err := os.Mkdir(empty, 0o755); err != nil {
			return nil, err
		}
		lowers = []string{empty}
	} else {
		var st unix.Stat_t
		if err := unix.Stat(lowers[0], &st); err != nil {
			return nil, &os.PathError{Op: "stat", Path: lowers[0], Err: err}
		}
		uid, gid, mode = st.Uid, st.Gid, st.Mode&0o7777
	}
	if len(rec.UIDMap) > 0 {
		uid, gid = hostID(rec.UIDMap, uid), hostID(rec.GIDMap, gid)
	}
	upper := filepath.Join(dir, upperDir)
	if err := os.Mkdir(upper, 0o700); err != nil {
		return nil, err
	}
	if err := unix.Lchown(upper, int(uid), int(gid)); err != nil {
		return nil, &os.PathError{Op: "chown", Path: upper, Err: err}
	}
	if err := unix.Chmod(upper, mode); err != nil {
		return nil, &os.PathError{Op: "chmod", Path: upper, Err: err}
	}
	if err := os.Mkdir(filepath.Join(dir, workDir), 0o700); err != nil {
		return nil, err
	}
	return lowers, nil
}

// overflowID is the id the kernel shows for one a user namespace leaves
// unmapped.
const overflowID = 65534

// hostID maps a container id to the host by maps.
func hostID(maps []layerfs.IDMap, id uint32) uint32 {
	for _, m := range maps {
		if id >= m.ContainerID && uint64(id) < uint64(m.ContainerID)+uint64(m.Size) {
			return m.HostID + (id - m.ContainerID)
		}
	}
	return overflowID
}

// containerID maps a host id back into the container by maps.
func containerID(maps []layerfs.IDMap, id uint32) uint32 {
	for _, m := range maps {
		if id >= m.HostID && uint64(id) < uint64(m.HostID)+uint64(m.Size) {
			return m.ContainerID + (id - m.HostID)
		}
	}
	return overflowID
}

// writeRecord writes rec into dir whole or not at all: a record on the
// tmpfs means the rootfs was complete.
func writeRecord(dir string, rec *record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+recordFile)
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, recordFile))
}

// readRecord reads the record of key's complete rootfs.
func (s *storage) readRecord(key string) (*record, error) {
	b, err := os.ReadFile(filepath.Join(s.cfg.root, key, recordFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("rootfs %q: %w", key, plugin.ErrNotFound)
		}
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("rootfs %q: record: %w", key, err)
	}
	return &rec, nil
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

// remove unmounts whatever is mounted on dir and removes it. A tmpfs that
// is still busy (berth failed to unmount the overlay on it) is detached:
// its memory is freed when the last user lets go of it.
func (s *storage) remove(dir string) error {
	for range 8 {
		mounted, err := isMountPoint(dir)
		if err != nil {
			return err
		}
		if !mounted {
			break
		}
		err = unix.Unmount(dir, unix.UMOUNT_NOFOLLOW)
		if err == unix.EBUSY {
			s.log.Warn("tmpfs still in use; detaching it", "dir", dir)
			err = unix.Unmount(dir, unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH)
		}
		if err != nil {
			return &os.PathError{Op: "unmount", Path: dir, Err: err}
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// isMountPoint reports whether something is mounted on dir.
func isMountPoint(dir string) (bool, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO, &stx); err != nil {
		return false, &os.PathError{Op: "statx", Path: dir, Err: err}
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
	}
	// Before Linux 5.8: a mount has another device than its parent.
	var parent unix.Stat_t
	if err := unix.Stat(filepath.Dir(dir), &parent); err != nil {
		return false, &os.PathError{Op: "stat", Path: filepath.Dir(dir), Err: err}
	}
	return unix.Mkdev(stx.Dev_major, stx.Dev_minor) != parent.Dev, nil
}

// List names every rootfs under the root, complete or left half made by
// a crash, except those this process is preparing right now: berth
// releases the ones it no longer knows.
func (s *storage) List(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(s.cfg.root)
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
