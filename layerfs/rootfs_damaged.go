package layerfs

import (
	"errors"
	"fmt"
	"math"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrDamagedRecord means a rootfs's record (rootfs.json) cannot be read:
// empty, truncated or garbled. Diff and Commit fail with it; Release still
// frees such a rootfs, from what it finds on the host (sweepRootfs), and
// one whose record is missing or names no driver berth has, too.
var ErrDamagedRecord = errors.New("rootfs record damaged")

// releaseDamaged frees the rootfs under key without its record.
func (s *Store) releaseDamaged(key string, cause error) error {
	n, err := s.sweepRootfs(key)
	if err != nil {
		return err
	}
	// Without a record and with nothing mounted, it is most likely a
	// Prepare killed before it wrote the record: nothing to worry about.
	log := s.log.Info
	if n > 0 {
		log = s.log.Warn
	}
	log("released a rootfs whose record was damaged", "key", key, "err", cause, "unmounted", n)
	return nil
}

// sweepRootfs removes the directory of the rootfs under key and whatever
// is still mounted in it, with no help from its record, and returns how
// many mounts it undid. A record says which driver and which disk quota
// to undo; what they made can be found without one: every mount is on a
// path in the rootfs's directory (the overlay or the copy, idmapped
// layers, a disk quota's loop filesystem, whose loop device detaches
// itself once unmounted), and a project quota's ID is the directory's
// inode number, which its state directory carries. Release sweeps after
// undoing what the record names too, since a record that parses may
// still be wrong.
func (s *Store) sweepRootfs(key string) (int, error) {
	dir := s.rootfsDir(key)
	mounts, err := mountsUnder(dir)
	if err != nil {
		return 0, err
	}
	for _, m := range mounts {
		if err := unmountAll(m, s.log); err != nil {
			return 0, err
		}
	}
	if id, ok := ownProject(dir, s.path("rootfs", key, "state")); ok {
		if err := clearProjectQuota(s.root, id); err != nil {
			return 0, err
		}
	}
	return len(mounts), os.RemoveAll(dir)
}

// ownProject returns the project ID of a rootfs's project quota, if state
// is in one: only the ID a quota of its own would have (dir's inode
// number), never an administrator's that it inherited from the store.
func ownProject(dir, state string) (uint32, bool) {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil || st.Ino == 0 || st.Ino > math.MaxUint32 {
		return 0, false
	}
	fd, err := unix.Open(state, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	var attr fsxattr
	if err := ioctlPtr(fd, fsIOCFSGetXattr, unsafe.Pointer(&attr)); err != nil {
		return 0, false
	}
	if attr.ProjID != uint32(st.Ino) {
		return 0, false
	}
	return attr.ProjID, true
}

// damaged wraps err, an unreadable rootfs record's, in ErrDamagedRecord.
func damaged(key string, err error) error {
	return fmt.Errorf("rootfs %q: %w: %w", key, ErrDamagedRecord, err)
}
