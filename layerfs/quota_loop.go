package layerfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoMkfs means a disk quota needs a filesystem of its own, on a store
// whose filesystem does not enforce project quotas, and mkfs.ext4
// (e2fsprogs) is not installed to make one.
var ErrNoMkfs = errors.New("mkfs.ext4 not found: a disk quota on a filesystem without project quotas needs e2fsprogs")

// ext4InodeSize is the size of each inode mkfs.ext4 makes: room for
// nanosecond timestamps past 2038 and small extended attributes inline.
const ext4InodeSize = 256

// loopImageSize returns the size of an image file whose ext4 filesystem
// leaves about q.Bytes free for files: the inode tables, a few blocks of
// each 128 MiB block group (bitmaps, backups of the superblock) and the
// superblock, root and lost+found directories come on top. The file is
// sparse; only what is written takes space on the host.
func loopImageSize(q *diskQuota) int64 {
	const block = 4096
	groups := q.Bytes/(128<<20) + 1
	size := q.Bytes + q.Inodes*ext4InodeSize + (8+4*groups)*block
	return (size + block - 1) &^ (block - 1)
}

// mkfsPath finds mkfs.ext4 in $PATH or, since PATH often lacks them for
// non-login shells and services, in the sbin directories.
func mkfsPath() (string, error) {
	if p, err := exec.LookPath("mkfs.ext4"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", ErrNoMkfs
}

// mountLoopFS makes image, a sparse file, an ext4 filesystem of q's size
// and inodes (a copy of the store's template for them, see loopTemplate),
// and mounts it on target through a loop device that detaches itself once
// unmounted (or, if this process dies first, once its descriptor is
// closed). Its content only ever comes through the kernel's ext4 driver,
// so the image is never a crafted one.
func (s *Store) mountLoopFS(ctx context.Context, q *diskQuota, image, target string) error {
	tmpl, err := s.loopTemplate(ctx, q)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(image, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := copySparse(f, tmpl); err != nil {
		return fmt.Errorf("copy %s to %s: %w", tmpl, image, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dev, err := attachLoop(f)
	if err != nil {
		return err
	}
	// The mount takes its own reference to the device; closing ours then
	// leaves the mount the last one, whose end detaches the device.
	defer dev.Close()
	// Without barriers, neither unmounting nor a workload's fsync make the
	// loop device flush the image to the host's disk, which cost a few
	// milliseconds each: the filesystem is thrown away after a crash.
	// Setuid programs and device nodes that a workload leaves in its upper
	// directory grant nothing to a host user who reaches them there.
	if err := unix.Mount(dev.Name(), target, "ext4", unix.MS_NOSUID|unix.MS_NODEV, "nobarrier"); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", dev.Name(), image, target, err)
	}
	return nil
}

// loopTemplate returns the path of an image file holding an empty ext4
// filesystem for q's size and inodes, which the store keeps in
// quota/ for each size and inode count it was asked for: copying its few
// hundred KiB of metadata takes a fraction of running mkfs.ext4 (which
// also syncs), several milliseconds here. The filesystem has no journal
// and reserves no blocks for root: it lives as long as one rootfs, is
// never mounted again after a crash, and root in the sandbox gets no more
// than others. Every copy has the same UUID, which ext4 does not mind.
func (s *Store) loopTemplate(ctx context.Context, q *diskQuota) (string, error) {
	// The version changes with how templates are made, so that a store
	// never copies one made another way.
	path := s.path("quota", fmt.Sprintf("ext4-v1-%d-%d.img", loopImageSize(q), q.Inodes))
	if exists(path) {
		return path, nil
	}
	mkfs, err := mkfsPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(s.path("quota"), 0o700); err != nil {
		return "", err
	}
	st, err := s.newStaging()
	if err != nil {
		return "", err
	}
	defer st.remove()
	img := st.path("ext4.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return "", err
	}
	if err := os.Truncate(img, loopImageSize(q)); err != nil {
		return "", fmt.Errorf("size %s: %w", img, err)
	}
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-b", "4096", "-m", "0", "-I", strconv.Itoa(ext4InodeSize),
		"-N", strconv.FormatInt(q.Inodes, 10), "-O", "^has_journal,^resize_inode", "-E", "root_owner=0:0", img)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(out.String()); msg != "" {
			return "", fmt.Errorf("mkfs.ext4: %w: %s", err, msg)
		}
		return "", fmt.Errorf("mkfs.ext4: %w", err)
	}
	// mkfs.ext4 synced the image, so the name never points at less than a
	// whole one. Another process making the same template at once renames
	// an equal one over it.
	if err := os.Rename(img, path); err != nil {
		return "", err
	}
	return path, nil
}

// copySparse copies the file at src into dst, an empty file, leaving its
// holes holes.
func copySparse(dst *os.File, src string) error {
	sf, err := os.Open(src)
	if err != nil {
		return err
	}
	defer sf.Close()
	fi, err := sf.Stat()
	if err != nil {
		return err
	}
	var noCopyRange bool
	return copyHoles(sf, dst, fi.Size(), &noCopyRange)
}

// attachLoop attaches backing to a free loop device, with autoclear, and
// returns the device open.
func attachLoop(backing *os.File) (*os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
	cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], backing.Name())
	// Another process may take the device LOOP_CTL_GET_FREE returned
	// before it is configured here: try the next one.
	for range 64 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		name := "/dev/loop" + strconv.Itoa(n)
		dev, err := os.OpenFile(name, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == unix.EINVAL || err == unix.ENOTTY {
			err = configureLoopOld(dev, backing, &cfg.Info) // Linux before 5.8
		}
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if err != unix.EBUSY {
			return nil, fmt.Errorf("attach %s to %s: %w", backing.Name(), name, err)
		}
	}
	return nil, fmt.Errorf("attach %s to a loop device: every free one was taken first", backing.Name())
}

// configureLoopOld attaches backing to dev in the two steps that kernels
// without LOOP_CONFIGURE take. A crash between them leaves the device
// attached without autoclear, until a reboot or losetup -d.
func configureLoopOld(dev, backing *os.File, info *unix.LoopInfo64) error {
	if err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(int(dev.Fd()), info); err != nil {
		unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}
