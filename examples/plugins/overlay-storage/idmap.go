package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/layerfs"
)

// A rootfs for a sandbox with a user namespace must show the image's
// files owned by the ids they map to. overlayfs cannot be idmapped
// itself, but takes idmapped layers (Linux 5.19): the plugin makes a user
// namespace with the request's maps, mounts an idmapped read-only clone
// of each layer under the rootfs's directory, lower/<i>, and stacks those.
// The clones are the plugin's own mounts, in its root; Release unmounts
// them. The maps are kept in idmap.json for Diff, which maps owners back.

// holdEnv makes the program, started with it, only hold a user namespace
// open until its stdin closes: a process must be in a namespace while its
// maps are written.
const holdEnv = "BERTH_OVERLAY_STORAGE_HOLD"

// holdIfAsked is the first thing main does.
func holdIfAsked() {
	if os.Getenv(holdEnv) == "1" {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
}

// newUserNS makes a user namespace with the maps and returns it open.
func newUserNS(uids, gids []layerfs.IDMap) (*os.File, error) {
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = []string{holdEnv + "=1"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: sysMaps(uids),
		GidMappings: sysMaps(gids),
		Pdeathsig:   syscall.SIGKILL,
	}
	hold, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("make a user namespace: %w", err)
	}
	ns, err := os.Open("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user")
	hold.Close()
	cmd.Wait()
	return ns, err
}

func sysMaps(m []layerfs.IDMap) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, len(m))
	for i, e := range m {
		out[i] = syscall.SysProcIDMap{ContainerID: int(e.ContainerID), HostID: int(e.HostID), Size: int(e.Size)}
	}
	return out
}

// idmapLayers mounts an idmapped read-only clone of each of lowers under
// dir/lower and returns their paths, in the same order.
func idmapLayers(dir string, lowers []string, uids, gids []layerfs.IDMap) ([]string, error) {
	ns, err := newUserNS(uids, gids)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	b, _ := json.Marshal(idmaps{UIDs: uids, GIDs: gids})
	if err := os.WriteFile(filepath.Join(dir, "idmap.json"), b, 0o600); err != nil {
		return nil, err
	}
	base := filepath.Join(dir, "lower")
	if err := os.Mkdir(base, 0o700); err != nil {
		return nil, err
	}
	mapped := make([]string, len(lowers))
	for i, l := range lowers {
		mapped[i] = filepath.Join(base, strconv.Itoa(i))
		if err := os.Mkdir(mapped[i], 0o700); err != nil {
			return nil, err
		}
		if err := idmapMount(l, mapped[i], ns); err != nil {
			return nil, err
		}
	}
	return mapped, nil
}

func idmapMount(src, target string, ns *os.File) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return &os.PathError{Op: "open_tree", Path: src, Err: err}
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY, Userns_fd: uint64(ns.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return &os.PathError{Op: "idmap", Path: src, Err: err}
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return &os.PathError{Op: "move_mount", Path: target, Err: err}
	}
	return nil
}

// unmountUnder detaches every mount at or below dir, deepest first, and
// fails if any stays: what is below dir must not be removed through a
// mount of the store's layers.
func unmountUnder(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			return &os.PathError{Op: "unmount", Path: m, Err: err}
		}
	}
	if left, err := mountsUnder(dir); err != nil || len(left) > 0 {
		return errors.Join(err, fmt.Errorf("still mounted under %s: %q", dir, left))
	}
	return nil
}

// mountsUnder lists the mount points at or below dir.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// Paths are octal-escaped; the plugin's own never need escaping
		// (keys are names), so an escaped one is not under dir.
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	return out, sc.Err()
}

// idmaps are a rootfs's user namespace maps, as idmap.json keeps them.
type idmaps struct {
	UIDs []layerfs.IDMap `json:"uids"`
	GIDs []layerfs.IDMap `json:"gids"`
}

// readIDMaps reads the maps of the rootfs in dir, nil if it has none.
func readIDMaps(dir string) (*idmaps, error) {
	b, err := os.ReadFile(filepath.Join(dir, "idmap.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m idmaps
	return &m, json.Unmarshal(b, &m)
}
