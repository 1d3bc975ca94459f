package sandbox

import (
	"errors"
	"fmt"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/safetree"
	"github.com/berth-dev/berth/security"
)

// A sandboxRoot is the root directory of a sandbox, open, for a copy.
type sandboxRoot struct {
	fd int
	// userns is the sandbox's user namespace's mapping, nil without one.
	userns *security.UserNamespace
}

// withRoot calls fn with the sandbox's root directory open. A running
// sandbox's is opened through its PID 1 (/proc/<pid>/root), which walks
// the sandbox's own mount namespace: its volumes, tmpfs mounts and
// read-only mounts are seen as its workload sees them. The pid is checked
// to be still the sandbox's init after the open, through the pidfd behind
// s.proc, so that a pid reused by another process cannot hand the copy
// that process's root. An exited sandbox kept with Options.KeepRootfs is
// opened at its rootfs's host path, through no symbolic link, and held
// until fn returns (withRootfs); its mounts are gone with its mount
// namespace. forWrite refuses an exited sandbox whose root was read-only.
func (s *Sandbox) withRoot(forWrite bool, fn func(*sandboxRoot) error) error {
	s.mu.Lock()
	proc, started, readonly := s.proc, s.result != nil && s.proc != nil, s.opts.ReadonlyRootfs
	hold, handle := s.hold, s.cmd == nil
	running := started
	if started {
		select {
		case <-s.done:
			running = false
		default:
		}
	}
	s.mu.Unlock()
	if !started {
		return fmt.Errorf("sandbox %s: %w", s.id, ErrNotStarted)
	}
	sec := s.security(&s.opts)
	r := &sandboxRoot{fd: -1, userns: sec.UserNamespace}
	if running {
		open := func() error {
			fd, err := unix.Open("/proc/"+strconv.Itoa(proc.Pid)+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("sandbox %s: %w: open its root: %w", s.id, ErrNotRunning, err)
			}
			defer unix.Close(fd)
			if err := proc.Signal(syscall.Signal(0)); err != nil {
				return fmt.Errorf("sandbox %s: %w", s.id, ErrNotRunning)
			}
			r.fd = fd
			return fn(r)
		}
		if handle {
			return open() // the owner's process releases its rootfs
		}
		// Held as a commit holds it: the workload may end during the
		// copy, and its teardown (or a Reset's swap) must wait rather
		// than remove the rootfs the copy still writes into.
		err := hold.read(open)
		if errors.Is(err, errRootfsReleased) {
			return fmt.Errorf("sandbox %s: %w: %w", s.id, ErrNotRunning, err)
		}
		return err
	}
	return s.withRootfs(func(rootfs string, _ bool) error {
		if forWrite && (readonly || sec.ReadonlyRootfs) {
			return fmt.Errorf("sandbox %s: its root filesystem is read-only: %w", s.id, unix.EROFS)
		}
		fd, err := unix.Openat2(unix.AT_FDCWD, rootfs, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			return fmt.Errorf("sandbox %s: %w: its root filesystem: %w", s.id, ErrNotRunning, err)
		}
		defer unix.Close(fd)
		r.fd = fd
		return fn(r)
	})
}

// creds are what a copy into the sandbox writes as: its root's host ids,
// so that files it makes belong to root inside, and a tmpfs mounted in
// its user namespace lets them be made at all.
func (r *sandboxRoot) creds() safetree.Creds {
	c := safetree.NoCreds
	if r.userns != nil {
		if uid, err := mapID(r.userns.UIDMap, 0); err == nil {
			c.FSUID = uid
		}
		if gid, err := mapID(r.userns.GIDMap, 0); err == nil {
			c.FSGID = gid
		}
	}
	return c
}

// writeOptions say how a copy into the sandbox owns what it makes.
func (r *sandboxRoot) writeOptions(o CopyOptions, special func(*safetree.Entry)) safetree.WriteOptions {
	c := r.creds()
	uid, gid := 0, 0
	if c.FSUID != -1 {
		uid = c.FSUID
	}
	if c.FSGID != -1 {
		gid = c.FSGID
	}
	w := safetree.WriteOptions{UID: uid, GID: gid, KeepOwner: o.Archive, KeepSetid: o.Archive, Special: special}
	if o.Archive && r.userns != nil {
		w.MapUID = func(id int) (int, error) { return mapID(r.userns.UIDMap, id) }
		w.MapGID = func(id int) (int, error) { return mapID(r.userns.GIDMap, id) }
	}
	return w
}

// errUnmapped means an id has no host id in the sandbox's user namespace.
var errUnmapped = errors.New("id not mapped in the sandbox's user namespace")

// mapID returns the host id that id, inside a user namespace with maps m,
// is.
func mapID(m []security.IDMap, id int) (int, error) {
	for _, e := range m {
		if id >= 0 && uint64(id) >= uint64(e.ContainerID) && uint64(id) < uint64(e.ContainerID)+uint64(e.Size) {
			return int(e.HostID) + id - int(e.ContainerID), nil
		}
	}
	return -1, fmt.Errorf("%d: %w", id, errUnmapped)
}
