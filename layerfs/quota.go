package layerfs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A disk quota caps what a rootfs's writable layer may hold, so that a
// workload filling its rootfs gets ENOSPC (or EDQUOT) while the host's
// filesystem keeps its space and its inodes. It covers everything the
// driver keeps in the rootfs's state directory: the overlay's upper and
// work directories or, for the copy driver, the whole copy of the image.
//
// There are two ways to enforce it, chosen per rootfs:
//
//   - "project": for a rootfs in a user namespace, where the store's
//     filesystem enforces project quotas (ext4 or XFS mounted with
//     prjquota), the state directory gets a project ID of its own,
//     inherited by everything made in it, and block and inode limits for
//     that ID. It costs two ioctls and two quotactls.
//   - "loop": elsewhere, the state directory is the mount point of an ext4
//     filesystem of the quota's size, in a sparse image file beside it on a
//     loop device. It costs a copy of an empty filesystem's metadata (made
//     once per size by mkfs.ext4), a loop device and a mount.
//
// Either way the rootfs record names the backend before anything is set
// up, so that Release, after a crash too, undoes it.
type diskQuota struct {
	Backend string `json:"backend"` // quotaProject or quotaLoop
	Bytes   int64  `json:"bytes"`
	Inodes  int64  `json:"inodes"`
	// Project is the project ID of the state directory: the inode number
	// of the rootfs's directory, which no other directory on the
	// filesystem has while it exists, in this process or any other.
	Project uint32 `json:"project,omitempty"`
}

const (
	quotaProject = "project"
	quotaLoop    = "loop"
)

// MinDiskQuota is the smallest disk quota Prepare accepts. Less would not
// hold the metadata of a filesystem of its own nor anything a workload
// could use.
const MinDiskQuota = 1 << 20

// maxDiskQuota keeps sizes within what ext4 and loop devices take (16
// TiB files with 4 KiB blocks) and far from overflowing.
const maxDiskQuota = 1 << 44

// bytesPerInode sets the inode limit that a byte quota implies: one per
// 4 KiB block. A file with data takes at least one block, so a workload of
// ordinary files runs out of bytes first; only one that makes empty files,
// links or directories in bulk meets the inode limit, which keeps it from
// taking more of the host's inodes than its share of the bytes would.
const bytesPerInode = 4096

// diskQuota checks the quota opts ask for and returns it, or nil for
// none. The backend is chosen later, by Prepare.
func (opts *PrepareOptions) diskQuota() (*diskQuota, error) {
	if opts == nil || (opts.DiskQuota == 0 && opts.DiskInodes == 0) {
		return nil, nil
	}
	q := &diskQuota{Bytes: opts.DiskQuota, Inodes: opts.DiskInodes}
	switch {
	case q.Bytes == 0:
		return nil, errors.New("DiskInodes needs a DiskQuota")
	case q.Bytes < 0:
		return nil, fmt.Errorf("disk quota of %d bytes: must be positive", q.Bytes)
	case q.Bytes < MinDiskQuota:
		return nil, fmt.Errorf("disk quota of %d bytes: less than the minimum of %d (1 MiB)", q.Bytes, MinDiskQuota)
	case q.Bytes > maxDiskQuota:
		return nil, fmt.Errorf("disk quota of %d bytes: more than the maximum of %d (16 TiB)", q.Bytes, int64(maxDiskQuota))
	case q.Inodes < 0:
		return nil, fmt.Errorf("disk quota of %d inodes: must be positive", q.Inodes)
	case q.Inodes == 0:
		q.Inodes = q.Bytes / bytesPerInode
	case q.Inodes > math.MaxUint32:
		return nil, fmt.Errorf("disk quota of %d inodes: more than a filesystem holds", q.Inodes)
	}
	return q, nil
}

// fsQuotas reports whether the store's filesystem enforces project
// quotas, and whether it enforces quotas of any type (user, group or
// project, an administrator's or a rootfs's own). It asks the kernel once
// per Store: quotas turned on later are seen by the next Open.
func (s *Store) fsQuotas() (project, any bool) {
	s.quotaOnce.Do(func() {
		s.projectQuotas, s.anyQuotas = quotasEnforced(s.root)
		s.log.Debug("store filesystem quotas", "project", s.projectQuotas, "any", s.anyQuotas, "root", s.root)
	})
	return s.projectQuotas, s.anyQuotas
}

// quotaBackend picks how to enforce q for the rootfs whose directory is
// dir, and sets q.Backend (and q.Project).
//
// A project quota is only for a rootfs shown in a user namespace
// (userNS). The kernel lets the owner of a file in the initial user
// namespace change its project ID, or take the inherit flag off a
// directory so that what is made in it gets project 0: chattr -p 0 or
// chattr -P through the overlay reaches the upper directory, and the
// workload's writes then count for a project without limits. Only a
// caller in another user namespace is refused (EINVAL), so a workload in
// the host's, as a Default sandbox is, gets a filesystem of its own,
// whose size no file attribute changes.
func (s *Store) quotaBackend(q *diskQuota, dir string, userNS bool) error {
	if project, _ := s.fsQuotas(); project && userNS {
		var st unix.Stat_t
		if err := unix.Lstat(dir, &st); err != nil {
			return &os.PathError{Op: "stat", Path: dir, Err: err}
		}
		// XFS's inode numbers may not fit a project ID; such a rootfs, rare
		// as it is, gets a filesystem of its own instead.
		if st.Ino > 0 && st.Ino <= math.MaxUint32 {
			id := uint32(st.Ino)
			used, err := projectInUse(s.root, id)
			if err != nil {
				return err
			}
			if !used {
				q.Backend, q.Project = quotaProject, id
				return nil
			}
			s.log.Warn("project ID already has files or limits on the store's filesystem, perhaps an administrator's project; using a filesystem of the rootfs's own for its quota", "project", id)
		}
	}
	q.Backend = quotaLoop
	return nil
}

// loopImage is the image file of a rootfs's own filesystem, in the
// rootfs's directory beside (not in) its state directory.
func loopImage(rootfsDir string) string { return filepath.Join(rootfsDir, "disk.img") }

// applyQuota sets up q for the rootfs in dir, whose state directory is
// state, before the driver makes anything there.
func (s *Store) applyQuota(ctx context.Context, q *diskQuota, dir, state string) error {
	var err error
	switch q.Backend {
	case quotaProject:
		err = setProjectQuota(s.root, state, q)
	case quotaLoop:
		err = s.mountLoopFS(ctx, q, loopImage(dir), state)
	default:
		err = fmt.Errorf("unknown backend %q", q.Backend)
	}
	if err != nil {
		return fmt.Errorf("disk quota (%s): %w", q.Backend, err)
	}
	return nil
}

// removeQuota undoes applyQuota, once the driver has unmounted what it
// made, and before the rootfs's directory is removed: for a project quota
// that directory's inode keeps the ID from being handed to another
// rootfs until the limits are cleared. It is idempotent, and succeeds
// where applyQuota failed half-way or never ran.
func (s *Store) removeQuota(q *diskQuota, dir, state string) error {
	var err error
	switch q.Backend {
	case quotaProject:
		err = clearProjectQuota(s.root, q.Project)
	case quotaLoop:
		// The loop device detaches itself when the filesystem is gone
		// (autoclear), and the image goes with the rootfs's directory.
		err = unmountAll(state, s.log)
	}
	if err != nil {
		return fmt.Errorf("remove disk quota (%s): %w", q.Backend, err)
	}
	return nil
}

// quotaFull reports whether err is a write refused for want of space or
// inodes, which under a quota means that the quota is too small.
func quotaFull(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}
