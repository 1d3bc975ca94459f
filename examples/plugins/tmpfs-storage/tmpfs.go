package main

// The tmpfs of each rootfs: mounting it with its limits, and taking it
// away again however busy it is.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

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

// remove unmounts whatever is mounted on dir and removes it. A tmpfs that
// is still busy (a host process holds a file or directory in it) is
// detached: its memory is freed when the last user lets go of it. An
// overlay still mounted on it does not make it busy, since overlayfs
// holds a private clone of the mount, with the same effect.
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
