package sandbox

import (
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/sandbox/internal/nsinit"
)

// A pool's sandbox is built, its mount namespace made and pivoted into,
// before anyone asks for it; the mounts a request adds (Pool.New) are
// made afterwards by its PID 1, from sources the host opened as it opens
// New's (openBindSource, openVolumeSource). Only where that is as safe as
// a mount made while building: on the image's own filesystem, resolved
// inside the sandbox's root without crossing into another mount, so that
// nothing lands in /proc, /sys, /dev, the etc files or the pool's own
// mounts; and never with a user namespace, whose root could unmount what
// a bind mount's source has mounted below it (the build clones such
// sources again from inside, which a built sandbox can no longer reach).

// MaxRequestMounts is the most mounts a request may add to a pool's
// sandbox (Pool.New): each bind mount's source travels as a descriptor in
// one message to its PID 1, whose size is bounded too.
const MaxRequestMounts = 64

// checkRequestMounts checks the mounts a request adds to the pool's, by
// name: what the init refuses anyway, said before a sandbox is taken.
// Every error wraps ErrInvalidOptions.
func (p *Pool) checkRequestMounts(mounts []Mount) error {
	if len(mounts) > MaxRequestMounts {
		return fmt.Errorf("%w: Mounts: %d for a pool's sandbox, at most %d", ErrInvalidOptions, len(mounts), MaxRequestMounts)
	}
	if err := checkMounts(mounts); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	sec := defaultSecurity()
	if p.tmpl.Security != nil {
		sec = p.tmpl.Security
	}
	if sec.UserNamespace != nil {
		return fmt.Errorf("%w: Mounts: the pool's sandboxes have a user namespace, where mounts added to a built sandbox "+
			"could be taken apart by its root; give the pool the mounts, or start the sandbox with New", ErrInvalidOptions)
	}
	// Mount points every sandbox has, and the pool's own.
	taken := []string{"/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}
	if sec.ReadonlyRootfs && !mountsAt(p.tmpl.Mounts, "/tmp") {
		taken = append(taken, "/tmp")
	}
	for _, m := range p.tmpl.Mounts {
		taken = append(taken, path.Clean(m.Destination))
	}
	for i, m := range mounts {
		dst := path.Clean(m.Destination)
		for _, t := range taken {
			if dst == t || strings.HasPrefix(dst, t+"/") {
				return fmt.Errorf("%w: Mounts[%d]: destination %s is in the sandbox's mount at %s: a pool's sandbox adds mounts only on the image's own directories and files",
					ErrInvalidOptions, i, quoteShort(dst), t)
			}
		}
		// Nor inside one another: the init would have to make the inner
		// one's target in the outer one's source, or would hide it.
		for j, o := range mounts {
			if outer := path.Clean(o.Destination); j != i && strings.HasPrefix(dst, outer+"/") {
				return fmt.Errorf("%w: Mounts[%d]: destination %s is in Mounts[%d] at %s: a pool's sandbox adds mounts only on the image's own directories and files",
					ErrInvalidOptions, i, quoteShort(dst), j, quoteShort(outer))
			}
		}
	}
	return nil
}

// lateMounts is the message of a request's mounts for a taken sandbox's
// PID 1, and the sources it carries.
type lateMounts struct {
	msg     []byte
	sources []*os.File
}

// openLateMounts checks s's request mounts against the image's links in
// its rootfs (as checkMountTargets does for New's), records the named
// volumes among them before they are bound (see VolumeUsers), and opens
// their sources.
func (s *Sandbox) openLateMounts(rootfs string) (_ *lateMounts, err error) {
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: rootfs, Err: err}
	}
	_, err = checkMountTargets(root, s.lateMounts)
	unix.Close(root)
	if err != nil {
		return nil, err
	}
	if names := volumeNames(s.lateMounts); len(names) > 0 {
		for _, n := range names {
			if !slices.Contains(s.state.Volumes, n) {
				s.state.Volumes = append(s.state.Volumes, n)
			}
		}
		if err := writeState(s.stateDir(), &s.state); err != nil {
			return nil, err
		}
	}
	l := &lateMounts{}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	var mounts []nsinit.Mount
	for i := range s.lateMounts {
		m := s.lateMounts[i] // openSource sets a volume's Source to its directory
		if m.Type == "tmpfs" {
			flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
			if m.ReadOnly {
				flags |= unix.MS_RDONLY
			}
			mounts = append(mounts, nsinit.Mount{Kind: nsinit.MountFS, Source: "tmpfs", Target: m.Destination, FSType: "tmpfs", Flags: flags, Data: m.Options})
			continue
		}
		flags, err := bindFlags(&m)
		if err != nil {
			return nil, err
		}
		src, err := s.openSource(&m)
		if err != nil {
			return nil, err
		}
		l.sources = append(l.sources, src)
		mounts = append(mounts, nsinit.Mount{Kind: nsinit.MountBind, Source: m.Source, Target: m.Destination, Flags: flags})
	}
	if l.msg, err = nsinit.EncodeLateMounts(mounts); err != nil {
		return nil, err
	}
	return l, nil
}

// send sends the mounts to the init over its spec socket, after the
// workload's message.
func (l *lateMounts) send(conn *os.File) error {
	fds := make([]int, len(l.sources))
	for i, f := range l.sources {
		fds[i] = int(f.Fd())
	}
	return nsinit.SendMessage(int(conn.Fd()), l.msg, fds)
}

// close closes the host's copies of the sources: the init has its own
// once they are sent.
func (l *lateMounts) close() {
	for _, f := range l.sources {
		f.Close()
	}
	l.sources = nil
}
