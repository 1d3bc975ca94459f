package sandbox

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/sandbox/internal/nsinit"
)

// Where the etc files are bound.
//
// An image's /etc/resolv.conf, /etc/hosts or /etc/hostname may be a
// symbolic link, and often one to nothing: Ubuntu's resolv.conf leads to
// ../run/systemd/resolve/stub-resolv.conf, which only a running
// systemd-resolved makes. Docker (through runc) resolves a mount's
// destination inside the rootfs, as if the rootfs were "/", and creates
// what is missing there; the link then shows the bound file. berth does
// the same, but the image is not trusted to choose where berth mounts: a
// link that, resolved inside the rootfs, leads to something a file cannot
// be bound over (a directory, a loop), into a filesystem the sandbox gets
// mounted there (/proc, /sys, /dev, a volume), or onto another of the etc
// files, is replaced by an empty file in the sandbox's own rootfs, over
// which the file is bound. Either way the workload reads berth's content
// at /etc/resolv.conf; nothing outside the rootfs is ever looked at, made
// or mounted over, since every lookup is confined to it.

// etcMounts returns the init's binds of the sandbox's etc files (in
// stateDir) into the rootfs open at root. early and late list the
// destinations, inside the sandbox, of the filesystems the init mounts
// before the etc files (/proc, /sys, /dev) and after them (the caller's). A bind must never land in an
// early one: it would create or mount over something in the sandbox's
// procfs, sysfs or /dev. A link must not lead a bind into a late one
// either, where it would be hidden; the files' own places in /etc may be
// under a late one, as when the caller mounts over /etc itself.
func (s *Sandbox) etcMounts(stateDir string, root int, early, late []string) ([]nsinit.Mount, error) {
	etc, err := resolveInRoot(root, "/etc")
	if err != nil {
		return nil, fmt.Errorf("image's /etc: %w", err)
	}
	// Each file's own place is its own, whatever the others' links say.
	taken := map[string]bool{}
	for _, f := range etcFiles {
		taken[path.Join(etc, f)] = true
	}
	var out []nsinit.Mount
	for _, f := range etcFiles {
		own := path.Join(etc, f)
		target, why, err := etcTarget(root, "/etc/"+f, early)
		if err != nil {
			return nil, err
		}
		if why == "" && target != own {
			if c := coveredBy(target, late); c != "" {
				why = "leads to " + target + ", below the mount at " + c
			} else if taken[target] {
				why = "leads to " + target + ", where another of berth's files is bound"
			}
		}
		if why != "" {
			if err := replaceEtcLink(root, etc, f, early); err != nil {
				return nil, fmt.Errorf("image's /etc/%s %s: %w", f, why, err)
			}
			s.log.Info("image's etc file is a link that cannot be bound over: replaced by a file", "id", s.id, "file", "/etc/"+f, "why", why)
			target = own
		}
		taken[target] = true
		out = append(out, nsinit.Mount{Kind: nsinit.MountBind, Source: etcFile(stateDir, f), Target: target})
	}
	return out, nil
}

// etcTarget resolves name inside the rootfs open at root, links and all,
// and returns where a file bound at name lands, as a path inside the
// sandbox. The init
// creates it, and the directories leading to it, if they are missing.
// If a file cannot be bound there (in covered, among others), target is
// empty and why says what is wrong with the place.
func etcTarget(root int, name string, covered []string) (target, why string, err error) {
	target, err = resolveInRoot(root, name)
	if errors.Is(err, unix.ELOOP) {
		return "", "is a loop of symbolic links", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("resolve the image's %s: %w", name, err)
	}
	if c := coveredBy(target, covered); c != "" {
		return "", "leads to " + target + ", inside the sandbox's " + c, nil
	}
	var st unix.Stat_t
	err = unix.Fstatat(root, relInRoot(target), &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return target, "", nil
	case errors.Is(err, unix.ENOTDIR):
		return "", "leads to " + target + ", below something that is not a directory", nil
	case err != nil:
		return "", "", fmt.Errorf("resolve the image's %s: %w", name, err)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return "", fmt.Sprintf("leads to %s, which is not a regular file (mode %#o)", target, st.Mode&unix.S_IFMT), nil
	}
	return target, "", nil
}

// replaceEtcLink replaces the symbolic link name in the image's /etc (etc,
// already resolved inside rootfs) with an empty file. Only a link is
// removed: anything else there is the image's, and an error, as is an
// /etc that leads into covered.
func replaceEtcLink(root int, etc, name string, covered []string) error {
	if c := coveredBy(etc, covered); c != "" {
		return fmt.Errorf("/etc leads to %s, inside the sandbox's %s", etc, c)
	}
	// etc holds no link any more: one now would be a change made since
	// it was resolved, and is refused.
	dir, err := unix.Openat2(root, relInRoot(etc), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return fmt.Errorf("open %s: %w", etc, err)
	}
	defer unix.Close(dir)
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return fmt.Errorf("it is not a symbolic link, and not a file (mode %#o)", st.Mode)
	}
	if err := unix.Unlinkat(dir, name, 0); err != nil {
		return fmt.Errorf("remove the link: %w", err)
	}
	fd, err := unix.Openat(dir, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("replace the link: %w", err)
	}
	return unix.Close(fd)
}

// relInRoot turns p, a clean absolute path inside the sandbox, into one
// relative to the rootfs's descriptor.
func relInRoot(p string) string {
	if p == "/" {
		return "."
	}
	return p[1:]
}

// coveredBy returns the mount destination in covered that p is at or
// below, or "".
func coveredBy(p string, covered []string) string {
	for _, c := range covered {
		c = path.Clean(c)
		if p == c || c == "/" || strings.HasPrefix(p, c+"/") {
			return c
		}
	}
	return ""
}

// mountDestinations returns the destinations of mounts, each resolved
// inside the rootfs open at root as the init will (a destination may
// itself lead through one of the image's links).
func mountDestinations(root int, mounts []nsinit.Mount) []string {
	var out []string
	for _, m := range mounts {
		out = appendDestination(out, root, path.Clean(m.Target))
	}
	return out
}

// appendDestination appends dst, and where the image's links lead it if
// that is elsewhere, to out.
func appendDestination(out []string, root int, dst string) []string {
	out = append(out, dst)
	if t, err := resolveInRoot(root, dst); err == nil && t != dst {
		out = append(out, t)
	}
	return out
}
