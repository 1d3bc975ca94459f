package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUnknownUser means a user or group name is not in the image.
var ErrUnknownUser = errors.New("no such user or group in the image")

type user struct {
	uid, gid uint32
	groups   []uint32
	home     string
}

// openInRoot opens name inside rootfs as if rootfs were "/", so that a
// symlink in the image cannot make the host read one of its own files.
func openInRoot(rootfs, name string, flags int) (*os.File, error) {
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(root)
	rel := strings.TrimLeft(name, "/")
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// mkdirInRoot creates dir and its parents inside rootfs.
func mkdirInRoot(rootfs, dir string) error {
	cur := ""
	for _, part := range strings.Split(strings.Trim(dir, "/"), "/") {
		if part == "" {
			continue
		}
		parent, err := openInRoot(rootfs, "/"+cur, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		err = unix.Mkdirat(int(parent.Fd()), part, 0o755)
		parent.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("mkdir %s/%s: %w", cur, part, err)
		}
		cur += "/" + part
	}
	return nil
}

// readDB calls fn with the colon-separated fields of each line of an
// /etc/passwd-style file in the image; a missing file has no lines. The
// file is the sandbox's to change: it is read only if it is a regular file
// of bounded size (openSandboxFile).
func readDB(rootfs, name string, fn func(f []string) bool) error {
	f, err := openSandboxFile(rootfs, name, maxSandboxFile)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(limitSandboxFile(f, maxSandboxFile))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if fn(strings.Split(line, ":")) {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	return nil
}

// resolveUser turns "user[:group]" (names or numbers) into ids the way
// Docker does: names come from the image's /etc/passwd and /etc/group, a
// number needs no entry, and a user's supplementary groups are those of
// /etc/group that list it.
func resolveUser(rootfs, spec string) (user, error) {
	u := user{home: "/"}
	if spec == "" {
		spec = "0"
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	name := ""
	found := false
	err := readDB(rootfs, "/etc/passwd", func(f []string) bool {
		if len(f) < 7 {
			return false
		}
		if f[0] != userPart && f[2] != userPart {
			return false
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return false
		}
		u.uid, u.gid, u.home, name, found = uint32(uid), uint32(gid), f[5], f[0], true
		return true
	})
	if err != nil {
		return u, err
	}
	if !found {
		n, err := strconv.ParseUint(userPart, 10, 32)
		if err != nil {
			return u, fmt.Errorf("user %q: %w", userPart, ErrUnknownUser)
		}
		u.uid, u.gid = uint32(n), uint32(n)
	}
	if hasGroup {
		gid, err := resolveGroup(rootfs, groupPart)
		if err != nil {
			return u, err
		}
		u.gid = gid
		return u, nil
	}
	if name == "" {
		return u, nil
	}
	err = readDB(rootfs, "/etc/group", func(f []string) bool {
		if len(f) < 4 {
			return false
		}
		for _, member := range strings.Split(f[3], ",") {
			if member == name {
				if gid, err := strconv.ParseUint(f[2], 10, 32); err == nil && uint32(gid) != u.gid {
					u.groups = append(u.groups, uint32(gid))
				}
			}
		}
		return false
	})
	if err != nil {
		return u, err
	}
	return u, nil
}

func resolveGroup(rootfs, spec string) (uint32, error) {
	var gid uint32
	found := false
	err := readDB(rootfs, "/etc/group", func(f []string) bool {
		if len(f) < 3 || (f[0] != spec && f[2] != spec) {
			return false
		}
		n, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return false
		}
		gid, found = uint32(n), true
		return true
	})
	if err != nil {
		return 0, err
	}
	if found {
		return gid, nil
	}
	n, err := strconv.ParseUint(spec, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %q: %w", spec, ErrUnknownUser)
	}
	return uint32(n), nil
}
