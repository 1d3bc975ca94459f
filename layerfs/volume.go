package layerfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/clip"
)

// Named volumes are directories under volumes/ in the store, which
// sandboxes bind by name (sandbox.Mount of type "volume") and which outlast
// them. A volume's name is 1 to MaxVolumeName letters, digits, '.', '_'
// or '-', starting with a letter or digit: a single path element that
// cannot be "." or "..".
//
// The store does not know which sandboxes use a volume; the callers that
// remove volumes pass a VolumeUsers that does (sandbox.VolumeUsers asks
// the sandboxes' records). Removal decides under the store's volume lock,
// which Volume also takes, so that a sandbox whose record names the volume
// either is seen using it or binds a volume made anew after the removal.

// MaxVolumeName is the longest volume name, in bytes.
const MaxVolumeName = 128

// ErrVolumeInUse means a volume is not removed because a sandbox that
// exists uses it.
var ErrVolumeInUse = errors.New("volume in use")

// A VolumeInfo describes a named volume.
type VolumeInfo struct {
	Name string
	Path string // its directory on the host
	Size int64  // bytes of disk its files take, as du counts them
}

// VolumeUsers returns the IDs of the sandboxes that use the named volume,
// or an error if it cannot tell.
type VolumeUsers func(name string) ([]string, error)

func checkVolumeName(name string) error {
	if !keyRE.MatchString(name) {
		return fmt.Errorf("volume name %s: must be 1-%d letters, digits, '.', '_' or '-', starting with a letter or digit", clip.Quote(name), MaxVolumeName)
	}
	return nil
}

func (s *Store) volumeDir(name string) string { return s.path("volumes", name) }

// volumesLock is the file of the volume lock. It is not under locks/,
// whose files GC deletes as it ends.
const volumesLock = "volumes.lock"

// lockVolumes takes the lock that orders removals of volumes (exclusive)
// against their use (shared).
func (s *Store) lockVolumes(ctx context.Context, how int) (*fileLock, error) {
	return lockFile(ctx, s.path(volumesLock), how)
}

// Volume returns the directory of the named volume, creating it empty the
// first time. Volumes live in the store and outlast the sandboxes that
// mount them, until RemoveVolume.
func (s *Store) Volume(ctx context.Context, name string) (string, error) {
	return s.makeVolume(ctx, name, func(dir string) error { return os.MkdirAll(dir, 0o755) })
}

// CreateVolume creates the named volume, empty, and returns its
// directory. It fails with ErrExists if the volume exists.
func (s *Store) CreateVolume(ctx context.Context, name string) (string, error) {
	return s.makeVolume(ctx, name, func(dir string) error {
		// 0755, as Volume makes it: a user-namespaced sandbox's init
		// reaches its volume by path (see the sandbox package's bind
		// mounts), which a 0700 directory would refuse.
		if err := os.MkdirAll(s.path("volumes"), 0o755); err != nil {
			return err
		}
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, fs.ErrExist) {
			return ErrExists
		}
		return err
	})
}

// makeVolume checks the volume's name and, holding the volume lock shared
// so that no removal runs meanwhile, has mkdir make its directory, which
// it returns.
func (s *Store) makeVolume(ctx context.Context, name string, mkdir func(dir string) error) (string, error) {
	if err := checkVolumeName(name); err != nil {
		return "", err
	}
	l, err := s.lockVolumes(ctx, unix.LOCK_SH)
	if err != nil {
		return "", err
	}
	defer l.unlock()
	dir := s.volumeDir(name)
	if err := mkdir(dir); err != nil {
		return "", fmt.Errorf("volume %s: %w", name, err)
	}
	return dir, nil
}

// Volumes lists the store's volumes, by name, with the space each takes.
func (s *Store) Volumes(ctx context.Context) ([]VolumeInfo, error) {
	entries, err := os.ReadDir(s.path("volumes"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("volumes: %w", err)
	}
	var out []VolumeInfo
	for _, e := range entries {
		if !e.IsDir() || !keyRE.MatchString(e.Name()) {
			continue // not one Volume made
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dir := s.volumeDir(e.Name())
		size, err := volumeUsage(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", e.Name(), err)
		}
		out = append(out, VolumeInfo{Name: e.Name(), Path: dir, Size: size})
	}
	return out, nil
}

// RemoveVolume deletes the named volume and everything in it, whoever
// uses it. A volume that does not exist is ErrNotFound.
func (s *Store) RemoveVolume(ctx context.Context, name string) error {
	return s.RemoveUnusedVolume(ctx, name, nil)
}

// RemoveUnusedVolume is RemoveVolume for a volume no sandbox uses. users
// is asked under the volume lock who uses it: a volume with users is
// kept, and the error wraps ErrVolumeInUse and names them; nil users
// removes it regardless.
func (s *Store) RemoveUnusedVolume(ctx context.Context, name string, users VolumeUsers) error {
	if err := checkVolumeName(name); err != nil {
		return fmt.Errorf("%w: %w", err, ErrNotFound)
	}
	_, err := s.removeVolume(ctx, name, users)
	return err
}

// VolumePruneResult says what PruneVolumes removed.
type VolumePruneResult struct {
	Removed []string // names of the volumes removed
	Bytes   int64    // the space they took
}

// PruneVolumes removes every volume that users says no sandbox uses. It
// carries on past a volume it cannot remove, and returns the errors of
// all those it could not remove joined.
func (s *Store) PruneVolumes(ctx context.Context, users VolumeUsers) (*VolumePruneResult, error) {
	if users == nil {
		return nil, errors.New("prune volumes: no way to tell which volumes are in use")
	}
	vols, err := s.Volumes(ctx)
	if err != nil {
		return nil, err
	}
	res := &VolumePruneResult{}
	var errs []error
	for _, v := range vols {
		size, err := s.removeVolume(ctx, v.Name, users)
		switch {
		case err == nil:
			res.Removed = append(res.Removed, v.Name)
			res.Bytes += size
		case errors.Is(err, ErrVolumeInUse), errors.Is(err, ErrNotFound):
		default:
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return res, errors.Join(errs...)
}

// removeVolume moves the volume out of volumes/ under the lock, so that
// no sandbox binds it from then on, and deletes it afterwards, without
// holding up others' use of volumes while it does. It returns the space
// the volume took.
func (s *Store) removeVolume(ctx context.Context, name string, users VolumeUsers) (int64, error) {
	l, err := s.lockVolumes(ctx, unix.LOCK_EX)
	if err != nil {
		return 0, err
	}
	dir := s.volumeDir(name)
	if _, err := os.Lstat(dir); err != nil {
		l.unlock()
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("volume %s: %w", name, ErrNotFound)
		}
		return 0, fmt.Errorf("volume %s: %w", name, err)
	}
	if users != nil {
		ids, err := users(name)
		if err == nil && len(ids) > 0 {
			err = fmt.Errorf("%w by sandbox %s", ErrVolumeInUse, ids[0])
			if len(ids) > 1 {
				err = fmt.Errorf("%w and %d more", err, len(ids)-1)
			}
		}
		if err != nil {
			l.unlock()
			return 0, fmt.Errorf("volume %s: %w", name, err)
		}
	}
	// The staging directory is the store's way to have an interrupted
	// removal finished by the next GC.
	st, err := s.newStaging()
	if err != nil {
		l.unlock()
		return 0, fmt.Errorf("volume %s: %w", name, err)
	}
	err = os.Rename(dir, st.path("volume"))
	l.unlock()
	if err != nil {
		st.remove()
		return 0, fmt.Errorf("volume %s: %w", name, err)
	}
	size, _ := volumeUsage(st.path("volume"))
	if err := os.RemoveAll(st.path("volume")); err != nil {
		st.lock.unlock() // the next GC finishes it
		return 0, fmt.Errorf("volume %s: %w", name, err)
	}
	st.remove()
	return size, nil
}

// volumeUsage adds up the disk space the files under dir take, counting a
// file with several links once, as du does. A volume is a sandbox's to
// write while this walks it, so the walk goes from directory descriptor to
// directory descriptor and never follows a symlink: a directory swapped
// for a symlink meanwhile cannot send it through the host's tree.
func volumeUsage(dir string) (int64, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return 0, &os.PathError{Op: "fstat", Path: dir, Err: err}
	}
	u := &usageWalk{total: st.Blocks * 512, seen: map[[2]uint64]bool{}, buf: make([]byte, 32<<10)}
	err = u.walk(fd, dir)
	return u.total, err
}

// A usageWalk is volumeUsage's walk of a tree.
type usageWalk struct {
	total int64
	seen  map[[2]uint64]bool // files with several links already counted, by device and inode
	buf   []byte             // for readDirNames
}

// walk adds up what the directory open as fd, at path, holds, and closes
// fd. Entries removed meanwhile are skipped.
func (u *usageWalk) walk(fd int, path string) error {
	defer unix.Close(fd)
	names, err := readDirNames(fd, u.buf)
	if err != nil {
		return &os.PathError{Op: "readdir", Path: path, Err: err}
	}
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err == unix.ENOENT {
				continue
			}
			return &os.PathError{Op: "lstat", Path: filepath.Join(path, name), Err: err}
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if st.Nlink > 1 && !isDir {
			k := [2]uint64{uint64(st.Dev), st.Ino}
			if u.seen[k] {
				continue
			}
			u.seen[k] = true
		}
		u.total += st.Blocks * 512
		if !isDir {
			continue
		}
		sub, err := openDirAt(fd, name)
		switch {
		case err == unix.ENOENT || err == unix.ELOOP || err == unix.ENOTDIR:
			continue // removed or replaced meanwhile
		case err != nil:
			return &os.PathError{Op: "open", Path: filepath.Join(path, name), Err: err}
		}
		if err := u.walk(sub, filepath.Join(path, name)); err != nil {
			return err
		}
	}
	return nil
}
