package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/internal/mountinfo"
	"github.com/berth-dev/berth/layerfs"
)

// berth performs a storage plugin's mounts itself, in the host's mount
// namespace, under a directory of its own per rootfs (keyDir):
//
//	keyDir/record.json   written before anything is mounted (storage.go)
//	keyDir/rootfs        where the first mount goes; Rootfs.Path
//	keyDir/idmapped/<n>  idmapped clones of an overlay's lower directories
//
// Every path of the answer is opened without following a symlink in any
// component (openat2 with RESOLVE_NO_SYMLINKS) and mounted from that
// descriptor (open_tree, /proc/self/fd/N for overlayfs, move_mount onto a
// target opened likewise), so that nothing planted between the check and
// the mount, by the plugin or by a workload writing under its roots, can
// swap what is mounted or where. Targets are opened beneath the rootfs.

// resolveNoLinks is how every path of an answer is opened.
const resolveNoLinks = unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openDir opens the directory at the absolute path p without following a
// symlink anywhere in it. flags is O_PATH, or O_RDONLY to change it.
func openDir(p string, flags int) (*os.File, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_DIRECTORY | unix.O_CLOEXEC),
		Resolve: resolveNoLinks,
	})
	if err != nil {
		if err == unix.ELOOP {
			return nil, fmt.Errorf("%s: a component is a symlink, which berth does not follow", p)
		}
		if err == unix.ENOTDIR {
			return nil, fmt.Errorf("%s: not a directory", p)
		}
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// openTarget opens the directory at the relative path t beneath root,
// following no symlink and not leaving root.
func openTarget(root *os.File, t string) (*os.File, error) {
	fd, err := unix.Openat2(int(root.Fd()), t, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: resolveNoLinks | unix.RESOLVE_BENEATH,
	})
	if err != nil {
		switch err {
		case unix.ELOOP:
			return nil, fmt.Errorf("target %s: a component is a symlink, which berth does not follow", clip.Quote(t))
		case unix.EXDEV:
			return nil, fmt.Errorf("target %s leaves the rootfs", clip.Quote(t))
		case unix.ENOENT, unix.ENOTDIR:
			return nil, fmt.Errorf("target %s is not a directory in the rootfs", clip.Quote(t))
		}
		return nil, fmt.Errorf("target %s: %w", clip.Quote(t), err)
	}
	return os.NewFile(uintptr(fd), t), nil
}

// fdPath names what f is open on, for interfaces that take a path:
// resolving it yields exactly that file.
func fdPath(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }

// A mounter performs the checked mounts of one rootfs.
type mounter struct {
	dir string // keyDir
	// userns, if set, is the user namespace to idmap the mounts marked
	// idmap by, with uids and gids its maps.
	userns     *os.File
	uids, gids []layerfs.IDMap
	// legacy makes overlays go through mount(2), as on kernels before
	// 6.8, for tests; noAppend records that the kernel is one such.
	legacy   bool
	noAppend *atomic.Bool
}

// mountAll performs ms, the first on m.dir/rootfs and the others beneath
// it, and returns the rootfs's path. On error, what it mounted is left for
// the caller to undo with unmountUnder.
func (m *mounter) mountAll(ctx context.Context, ms []checkedMount) (string, error) {
	rootfs := filepath.Join(m.dir, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return "", err
	}
	var root *os.File
	defer func() {
		if root != nil {
			root.Close()
		}
	}()
	for i := range ms {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		c := &ms[i]
		var target *os.File
		var err error
		if i == 0 {
			target, err = openDir(rootfs, unix.O_PATH)
		} else {
			target, err = openTarget(root, c.target)
		}
		if err != nil {
			return "", fmt.Errorf("mount %d (%s on %s): %w", i, c.typ, clip.Quote(c.target), err)
		}
		err = m.mount(i, c, target)
		target.Close()
		if err != nil {
			return "", fmt.Errorf("mount %d (%s on %s): %w", i, c.typ, clip.Quote(c.target), err)
		}
		if i == 0 {
			// The rootfs as mounted, for the targets of the others.
			if root, err = openDir(rootfs, unix.O_PATH); err != nil {
				return "", err
			}
		}
	}
	return rootfs, nil
}

// mount performs c, the i'th mount, onto target.
func (m *mounter) mount(i int, c *checkedMount, target *os.File) error {
	var tree int
	var err error
	switch c.typ {
	case "bind":
		tree, err = m.bindTree(c)
	case "overlay":
		return m.mountOverlay(i, c, target)
	case "tmpfs":
		tree, err = m.tmpfsTree(c)
	default:
		return fmt.Errorf("type %s: %w", c.typ, ErrRefused) // checkMount lets no other through
	}
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	return moveTo(tree, target)
}

// setAttrs gives the detached mount tree c's attributes and, if c asks
// for it and there is a user namespace, an idmapping.
func (m *mounter) setAttrs(tree int, c *checkedMount) error {
	attr := unix.MountAttr{Attr_set: c.attrs}
	if c.attrs&unix.MOUNT_ATTR__ATIME != 0 {
		attr.Attr_clr |= unix.MOUNT_ATTR__ATIME
	}
	if c.idmap && m.userns != nil {
		attr.Attr_set |= unix.MOUNT_ATTR_IDMAP
		attr.Userns_fd = uint64(m.userns.Fd())
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		if attr.Attr_set&unix.MOUNT_ATTR_IDMAP != 0 && (err == unix.EINVAL || err == unix.EOPNOTSUPP || err == unix.ENOSYS) {
			return fmt.Errorf("idmap: %w: %w", layerfs.ErrIDMapUnsupported, err)
		}
		return fmt.Errorf("mount_setattr: %w", err)
	}
	return nil
}

// bindTree returns a detached clone of c's source (that mount only, not
// those under it), with c's attributes.
func (m *mounter) bindTree(c *checkedMount) (int, error) {
	src, err := openDir(c.source, unix.O_PATH)
	if err != nil {
		return -1, err
	}
	defer src.Close()
	tree, err := unix.OpenTree(int(src.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", c.source, err)
	}
	if err := m.setAttrs(tree, c); err != nil {
		unix.Close(tree)
		return -1, err
	}
	return tree, nil
}

// tmpfsTree returns a new detached tmpfs with c's options and attributes.
func (m *mounter) tmpfsTree(c *checkedMount) (int, error) {
	fs, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen tmpfs: %w", err)
	}
	defer unix.Close(fs)
	for _, o := range c.fsOptions {
		if err := unix.FsconfigSetString(fs, o[0], o[1]); err != nil {
			return -1, fsError(fs, "fsconfig "+o[0]+"="+o[1], err)
		}
	}
	return m.create(fs, c)
}

// create makes the filesystem configured on fs and returns it as a
// detached mount with c's attributes.
func (m *mounter) create(fs int, c *checkedMount) (int, error) {
	if err := unix.FsconfigCreate(fs); err != nil {
		return -1, fsError(fs, "fsconfig create", err)
	}
	tree, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return -1, fsError(fs, "fsmount", err)
	}
	if err := m.setAttrs(tree, c); err != nil {
		unix.Close(tree)
		return -1, err
	}
	return tree, nil
}

// mountOverlay mounts an overlay of c's directories on target. Under a
// user namespace, if c asks for an idmapping, its lower directories are
// idmapped (overlayfs cannot be idmapped itself, but takes idmapped
// layers), attached under m.dir/idmapped so that Release finds them, and
// the upper directory's root gets the mapped owner of the top layer's.
func (m *mounter) mountOverlay(i int, c *checkedMount, target *os.File) error {
	var open []*os.File
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	dir := func(p string, flags int) (*os.File, error) {
		f, err := openDir(p, flags)
		if err == nil {
			open = append(open, f)
		}
		return f, err
	}
	var dirs overlayDirs
	var top *os.File
	for n, l := range c.lowers {
		f, err := dir(l, unix.O_PATH)
		if err != nil {
			return fmt.Errorf("lowerdir: %w", err)
		}
		if n == 0 {
			top = f
		}
		if c.idmap && m.userns != nil {
			if f, err = m.idmapLower(i, n, f); err != nil {
				return err
			}
			open = append(open, f)
		}
		dirs.lowers = append(dirs.lowers, fdPath(f))
	}
	if c.upper != "" {
		u, err := dir(c.upper, unix.O_RDONLY)
		if err != nil {
			return fmt.Errorf("upperdir: %w", err)
		}
		w, err := dir(c.work, unix.O_PATH)
		if err != nil {
			return fmt.Errorf("workdir: %w", err)
		}
		if c.idmap && m.userns != nil {
			if err := m.shiftUpperRoot(top, u); err != nil {
				return err
			}
		}
		dirs.upper, dirs.work = fdPath(u), fdPath(w)
	}

	if !m.legacy && !m.noAppend.Load() {
		tree, err := m.overlayTree(c, &dirs)
		if !errors.Is(err, errNoAppend) {
			if err != nil {
				return err
			}
			defer unix.Close(tree)
			return moveTo(tree, target)
		}
		m.noAppend.Store(true)
	}
	return mountOverlayLegacy(c, &dirs, target)
}

// overlayDirs are an overlay's directories as paths to berth's
// descriptors of them: short, and resolving to what berth opened.
type overlayDirs struct {
	lowers      []string // top first
	upper, work string
}

// errNoAppend means the kernel does not know the "lowerdir+" option
// (before Linux 6.8) or the new mount API at all.
var errNoAppend = errors.New(`overlayfs does not support "lowerdir+"`)

// overlayTree returns a new detached overlay, made with the new mount
// API, which passes each lower directory as an option of its own.
func (m *mounter) overlayTree(c *checkedMount, dirs *overlayDirs) (int, error) {
	fs, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		if err == unix.ENOSYS {
			return -1, fmt.Errorf("%w: fsopen: %w", errNoAppend, err)
		}
		return -1, fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fs)
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fs, k, v); err != nil {
			return fsError(fs, "fsconfig "+k+"="+v, err)
		}
		return nil
	}
	for n, l := range dirs.lowers {
		if err := unix.FsconfigSetString(fs, "lowerdir+", l); err != nil {
			ferr := fsError(fs, "fsconfig lowerdir+", err)
			// Kernels before 6.8 reject the unknown key and log why; any
			// other EINVAL is about the directory.
			if msg := ferr.Error(); n == 0 && err == unix.EINVAL && (!strings.Contains(msg, "kernel:") || strings.Contains(msg, "Unknown parameter")) {
				return -1, fmt.Errorf("%w: %w", errNoAppend, ferr)
			}
			return -1, fmt.Errorf("lowerdir %s: %w", c.lowers[n], ferr)
		}
	}
	opts := [][2]string{{"source", "overlay"}}
	if dirs.upper != "" {
		opts = append(opts, [2]string{"upperdir", dirs.upper}, [2]string{"workdir", dirs.work})
	}
	for _, o := range append(opts, c.fsOptions...) {
		var err error
		if o[1] == "" {
			if err = unix.FsconfigSetFlag(fs, o[0]); err != nil {
				err = fsError(fs, "fsconfig "+o[0], err)
			}
		} else {
			err = set(o[0], o[1])
		}
		if err != nil {
			return -1, err
		}
	}
	// The overlay itself is never idmapped (overlayfs refuses it); its
	// layers are, above.
	plain := *c
	plain.idmap = false
	return m.create(fs, &plain)
}

// mountOverlayLegacy mounts the overlay on target with mount(2), whose
// options are one string of at most a page: for kernels before 6.8. The
// paths to descriptors keep even 200 layers within it.
func mountOverlayLegacy(c *checkedMount, dirs *overlayDirs, target *os.File) error {
	var b strings.Builder
	b.WriteString("lowerdir=" + strings.Join(dirs.lowers, ":"))
	if dirs.upper != "" {
		b.WriteString(",upperdir=" + dirs.upper + ",workdir=" + dirs.work)
	}
	for _, o := range c.fsOptions {
		b.WriteString("," + o[0])
		if o[1] != "" {
			b.WriteString("=" + o[1])
		}
	}
	data := b.String()
	if limit := os.Getpagesize(); len(data) >= limit {
		return fmt.Errorf("%d lower directories need %d bytes of mount options, more than mount(2)'s %d; Linux 6.8 or later lifts the limit", len(dirs.lowers), len(data)+1, limit)
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	for attr, flag := range map[uint64]uintptr{
		unix.MOUNT_ATTR_RDONLY: unix.MS_RDONLY, unix.MOUNT_ATTR_NOEXEC: unix.MS_NOEXEC,
		unix.MOUNT_ATTR_NOATIME: unix.MS_NOATIME, unix.MOUNT_ATTR_NODIRATIME: unix.MS_NODIRATIME,
		unix.MOUNT_ATTR_STRICTATIME: unix.MS_STRICTATIME,
	} {
		if c.attrs&attr == attr {
			flags |= flag
		}
	}
	if err := unix.Mount("overlay", fdPath(target), "overlay", flags, data); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	return nil
}

// moveTo attaches the detached mount tree on target.
func moveTo(tree int, target *os.File) error {
	err := unix.MoveMount(tree, "", int(target.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// idmapLower attaches an idmapped, read-only clone of the lower directory
// l (the n'th of mount i) under m.dir/idmapped and returns it open.
func (m *mounter) idmapLower(i, n int, l *os.File) (*os.File, error) {
	base := filepath.Join(m.dir, "idmapped")
	if err := os.Mkdir(base, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	at := filepath.Join(base, strconv.Itoa(i)+"-"+strconv.Itoa(n))
	if err := os.Mkdir(at, 0o700); err != nil {
		return nil, err
	}
	tree, err := unix.OpenTree(int(l.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return nil, fmt.Errorf("open_tree %s: %w", l.Name(), err)
	}
	defer unix.Close(tree)
	ro := checkedMount{attrs: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV, idmap: true}
	if err := m.setAttrs(tree, &ro); err != nil {
		return nil, fmt.Errorf("lowerdir %s: %w", l.Name(), err)
	}
	dst, err := openDir(at, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	if err := unix.MoveMount(tree, "", int(dst.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return nil, fmt.Errorf("lowerdir %s: move_mount: %w", l.Name(), err)
	}
	return openDir(at, unix.O_PATH)
}

// shiftUpperRoot gives the root of an overlay's upper directory the
// owner (mapped to the host) and mode of the top layer's root, which the
// overlay's root shows: else it would show an owner the namespace does
// not map, and its root could not write to "/".
func (m *mounter) shiftUpperRoot(top, upper *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(top.Fd()), &st); err != nil {
		return &os.PathError{Op: "stat", Path: top.Name(), Err: err}
	}
	uid, gid := layerfs.HostID(m.uids, st.Uid), layerfs.HostID(m.gids, st.Gid)
	if err := unix.Fchown(int(upper.Fd()), int(uid), int(gid)); err != nil {
		return &os.PathError{Op: "chown", Path: upper.Name(), Err: err}
	}
	if err := unix.Fchmod(int(upper.Fd()), st.Mode&0o1777); err != nil {
		return &os.PathError{Op: "chmod", Path: upper.Name(), Err: err}
	}
	return nil
}

// fsError adds what the kernel logged on the filesystem context fs to
// err: it says which option it disliked and why, which errno does not.
func fsError(fs int, op string, err error) error {
	var msgs []string
	buf := make([]byte, 1024)
	for range 16 {
		n, rerr := unix.Read(fs, buf)
		if rerr != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	if len(msgs) > 0 {
		return fmt.Errorf("%s: %w (kernel: %s)", op, err, strings.Join(msgs, "; "))
	}
	return fmt.Errorf("%s: %w", op, err)
}

// unmountUnder detaches every mount on dir or below it, the last made
// first, and reports how many there were. Detaching does not wait for a
// sandbox that still uses one; berth releases a rootfs once its sandbox
// is gone anyway.
func unmountUnder(dir string) (int, error) {
	total := 0
	// A mount hidden under another appears once the one on top is gone,
	// so look again until nothing is left.
	for range 8 {
		points, err := listMounts(dir)
		if err != nil {
			return total, err
		}
		if len(points) == 0 {
			return total, nil
		}
		for _, p := range slices.Backward(points) {
			if err := detach(dir, p); err != nil {
				return total, err
			}
			total++
		}
	}
	return total, fmt.Errorf("unmount under %s: mounts keep appearing", dir)
}

// listMounts lists the mount points under a directory; tests change
// the tree between the listing and the unmounts.
var listMounts = mountsUnder

// detach detaches the mount on p, a path at or below dir as mountinfo
// names it. umount(2) follows a symlink in every component but the last,
// and what is below dir may be written by others between the listing and
// the unmount (a bind of a plugin's root, under which a workload writes):
// a directory swapped for a symlink there would have berth detach a
// host's mount. So p is opened beneath dir following no symlink, and the
// mount detached through that descriptor.
func detach(dir, p string) error {
	rel, err := filepath.Rel(dir, p)
	if err != nil || !filepath.IsLocal(rel) {
		return fmt.Errorf("unmount %s: not under %s", clip.Quote(p), dir)
	}
	// dir afresh each time: a descriptor of it taken before a mount on it
	// went away would resolve in the detached mount.
	base, err := openDir(dir, unix.O_PATH)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("unmount %s: %w", clip.Quote(p), err)
	}
	defer base.Close()
	fd, err := unix.Openat2(int(base.Fd()), rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: resolveNoLinks | unix.RESOLVE_BENEATH,
	})
	switch err {
	case nil:
	case unix.ENOENT:
		return nil // gone already
	case unix.ELOOP, unix.EXDEV:
		return fmt.Errorf("unmount %s: a component is now a symlink, which berth does not follow", clip.Quote(p))
	default:
		return &os.PathError{Op: "unmount", Path: clip.Quote(p), Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	// Without UMOUNT_NOFOLLOW: the one link followed is /proc's to f.
	err = unix.Unmount(fdPath(f), unix.MNT_DETACH)
	if err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return &os.PathError{Op: "unmount", Path: clip.Quote(p), Err: err}
	}
	return nil
}

// mountsUnder returns the mount points on dir or below it, in the order
// /proc/self/mountinfo lists them (a mount after the one it is on).
func mountsUnder(dir string) ([]string, error) { return mountinfo.Under(dir) }
