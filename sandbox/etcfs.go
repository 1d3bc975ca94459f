package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// A sandbox's /etc/hosts, /etc/hostname and /etc/resolv.conf are files of
// its state directory that the init binds read-write over the image's:
// workloads may append to /etc/hosts, as under Docker and Kubernetes, and
// netplug rewrites the hosts file in place as a named network's sandboxes
// come and go. The state directory is on the host's /run, a tmpfs shared
// with the host's services, so the files live on a small tmpfs of the
// sandbox's own, mounted at etcDir: a workload that writes without end
// gets ENOSPC at etcFSSize instead of filling the host's memory and /run.
const (
	etcDirName = "etc"
	// etcFSSize bounds what the three files may hold together. A named
	// network's hosts file takes a line per peer, some 50 bytes: a
	// megabyte is room for thousands.
	etcFSSize = 1 << 20
	// etcFSInodes is room for the directory and its three files, with
	// some to spare; nothing else is created there.
	etcFSInodes = 16
)

// etcFiles are the names, under etcDir and /etc, of the files bound.
var etcFiles = [...]string{"hosts", "hostname", "resolv.conf"}

// etcDir is where the sandbox's etc files' filesystem is mounted.
func etcDir(stateDir string) string { return filepath.Join(stateDir, etcDirName) }

// etcFile is the host path of the sandbox's /etc/name.
func etcFile(stateDir, name string) string { return filepath.Join(stateDir, etcDirName, name) }

// mountEtcFS mounts the filesystem of the sandbox's etc files at
// etcDir(stateDir). mountData is added to its options (an SELinux
// context, so that the sandbox may read what is bound from there).
// removeStateDir unmounts it.
func mountEtcFS(stateDir, mountData string) error {
	dir := etcDir(stateDir)
	if err := os.Mkdir(dir, 0o711); err != nil {
		return fmt.Errorf("etc files: %w", err)
	}
	// The user namespace's root, an ordinary id on the host, must reach
	// the files to bind them.
	data := "mode=0711,size=" + strconv.Itoa(etcFSSize) + ",nr_inodes=" + strconv.Itoa(etcFSInodes)
	if mountData != "" {
		data += "," + mountData
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, data); err != nil {
		return fmt.Errorf("etc files: mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

// removeStateDir removes a sandbox's state directory, unmounting its etc
// files' filesystem first. The unmount is lazy: a host process that
// still writes there (netplug, rewriting the hosts file) keeps only its
// open file, and the memory is freed when the last user is gone.
func removeStateDir(stateDir string) error {
	err := unix.Unmount(etcDir(stateDir), unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	// EINVAL: not a mount point, as when the start failed before the
	// mount, or it was unmounted already.
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount the etc files of %s: %w", stateDir, err)
	}
	return os.RemoveAll(stateDir)
}
