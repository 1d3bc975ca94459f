package layerfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The overlay driver hands the layer directories to overlayfs as they are,
// so it relies on them holding whiteouts and opaque directories in overlay
// form. Where the store's filesystem refused those (overlayfs itself does),
// unpackTar kept them in OCI form instead (see ociMarker), which overlayfs
// would show as plain .wh.* files while hiding nothing below them. Such a
// store never gets this driver from the probe in newDriver, which needs
// the overlay forms to work; only forcing it, or moving the store to
// another filesystem, would mount such layers. Mount does not check for
// them, since that would take a walk of every layer.

// maxLowers is the most lower layers overlayfs stacks (OVL_MAX_STACK).
const maxLowers = 500

// overlayOptions keep the upper directory a plain diff of the lowers:
// redirects, metacopy-only copy-ups and the inode index would all leave
// state in it that only overlayfs can interpret, not an OCI layer.
var overlayOptions = [...][2]string{
	{"redirect_dir", "off"},
	{"metacopy", "off"},
	{"index", "off"},
}

// overlayDriver stacks the layers with overlayfs. Its layout under a rootfs
// directory is upper (the changes), work (overlayfs scratch), merged (the
// mount point), on kernels before 6.8 l (short links to the lowers) and,
// for a user namespace, idmapped (an idmapped mount of each lower).
type overlayDriver struct {
	log *slog.Logger

	// legacy forces the mount(2) path that older kernels need, so that
	// tests cover it on new ones.
	legacy bool
	// volatile skips syncing the upper filesystem on unmount and makes
	// fsync in the sandbox a no-op. Without it every Release flushes the
	// whole store filesystem (a second and more with a lot of dirty data),
	// and a sandbox's rootfs is thrown away after a crash anyway: it is
	// never mounted again.
	volatile bool
	// noAppend records that the kernel rejected "lowerdir+", so that later
	// mounts go straight to the legacy path.
	noAppend atomic.Bool
}

func (d *overlayDriver) Name() string { return "overlay" }

func (d *overlayDriver) Mount(ctx context.Context, lowers []string, dir string, ids *idMapping) (string, error) {
	dir, err := absDir(dir)
	if err != nil {
		return "", err
	}
	merged := filepath.Join(dir, "merged")
	if len(lowers) > maxLowers {
		return "", fmt.Errorf("mount overlay on %s: %d layers exceed the overlayfs limit of %d lower layers", merged, len(lowers), maxLowers)
	}
	for _, l := range lowers {
		if !filepath.IsAbs(l) {
			return "", fmt.Errorf("mount overlay on %s: lower layer %q is not an absolute path", merged, l)
		}
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}

	upper := filepath.Join(dir, "upper")
	work := filepath.Join(dir, "work")
	for _, p := range []string{upper, work, merged} {
		if err := os.Mkdir(p, 0o755); err != nil {
			return "", err
		}
	}
	noLayers := len(lowers) == 0
	if noLayers {
		// An image without layers is an empty directory, but overlayfs
		// wants at least one lower. Being empty, it needs no idmapping.
		empty := filepath.Join(dir, "l", "empty")
		if err := os.MkdirAll(empty, 0o755); err != nil {
			return "", err
		}
		lowers = []string{empty}
	}
	// The root of an overlay takes its owner and mode from the upper
	// directory; give it those of the image's root, as the copy driver does.
	if err := copyDirOwnerMode(lowers[0], upper, ids); err != nil {
		return "", fmt.Errorf("mount overlay on %s: %w", merged, err)
	}
	if ids != nil && !noLayers {
		// overlayfs cannot be idmapped itself, but (since Linux 5.19) takes
		// idmapped layers. What it copies up from them, and what is
		// created through it by a process of the namespace, keeps the
		// mapped host owners in the upper directory.
		lowers, err = d.idmapLayers(lowers, dir, ids)
		if err != nil {
			return "", err
		}
	}

	if !d.legacy && !d.noAppend.Load() {
		err := d.mountAppend(lowers, upper, work, merged)
		if !errors.Is(err, errNoAppend) {
			if err != nil {
				return "", err
			}
			return merged, nil
		}
		d.noAppend.Store(true)
		d.log.Info("kernel lacks overlayfs lowerdir+ (Linux 6.8); mounting through short links to the layers", "err", err)
	}
	if err := d.mountLegacy(lowers, dir); err != nil {
		if ids != nil && !noLayers && errors.Is(err, unix.EINVAL) {
			// overlayfs before Linux 5.19 refuses idmapped layers so, and
			// only logs why.
			return "", fmt.Errorf("%w: %w", ErrIDMapUnsupported, err)
		}
		return "", err
	}
	return merged, nil
}

// testHookIDMap, if set, is called as each layer is idmapped; an error it
// returns stands for one from mount_setattr.
var testHookIDMap func(layer string) error

// idmapLayers attaches an idmapped, read-only clone of each of lowers as
// dir/idmapped/<i> and returns their paths. Attached, they have paths to
// give overlayfs, on either mount path, and Unmount finds them there after
// a crash.
func (d *overlayDriver) idmapLayers(lowers []string, dir string, ids *idMapping) ([]string, error) {
	base := filepath.Join(dir, "idmapped")
	if err := os.Mkdir(base, 0o700); err != nil {
		return nil, err
	}
	mapped := make([]string, len(lowers))
	for i, l := range lowers {
		mapped[i] = filepath.Join(base, strconv.Itoa(i))
		if err := os.Mkdir(mapped[i], 0o700); err != nil {
			return nil, err
		}
		if err := idmapMount(l, mapped[i], ids.userns); err != nil {
			return nil, err
		}
	}
	return mapped, nil
}

// idmapMount mounts a read-only clone of the directory src at target that
// shows every file owned by the id userns maps its owner to.
func idmapMount(src, target string, userns *os.File) error {
	unsupported := func(op string, err error) error {
		return fmt.Errorf("idmap layer %s: %s: %w: %w", src, op, ErrIDMapUnsupported, err)
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		if err == unix.ENOSYS {
			return unsupported("open_tree", err) // Linux before 5.2
		}
		return &os.PathError{Op: "open_tree", Path: src, Err: err}
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{
		Attr_set:  unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY,
		Userns_fd: uint64(userns.Fd()),
	}
	if testHookIDMap != nil {
		err = testHookIDMap(src)
	}
	if err == nil {
		err = unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr)
	}
	if err != nil {
		switch err {
		case unix.ENOSYS, unix.EINVAL, unix.EOPNOTSUPP:
			// ENOSYS: Linux before 5.12; EINVAL: a filesystem without
			// idmapped mounts (or a namespace without maps written).
			return unsupported("mount_setattr", err)
		}
		return &os.PathError{Op: "mount_setattr", Path: src, Err: err}
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("idmap layer %s: move_mount to %s: %w", src, target, err)
	}
	return nil
}

// errNoAppend means the kernel does not know the "lowerdir+" option.
var errNoAppend = errors.New(`overlayfs does not support "lowerdir+"`)

// mountAppend mounts with the new mount API, which passes each option
// separately and so has no limit on the total length of the layer paths.
func (d *overlayDriver) mountAppend(lowers []string, upper, work, merged string) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		if err == unix.ENOSYS {
			// Linux before 5.2, or a seccomp filter that hides the call.
			return fmt.Errorf("%w: fsopen: %w", errNoAppend, err)
		}
		return fmt.Errorf("mount overlay on %s: fsopen: %w", merged, err)
	}
	defer unix.Close(fd)

	fail := func(op string, err error) error {
		if msg := fsLog(fd); msg != "" {
			return fmt.Errorf("mount overlay on %s: %s: %w (kernel: %s)", merged, op, err, msg)
		}
		return fmt.Errorf("mount overlay on %s: %s: %w", merged, op, err)
	}
	set := func(key, val string) error {
		if err := unix.FsconfigSetString(fd, key, val); err != nil {
			return fail("fsconfig "+key+"="+val, err)
		}
		return nil
	}

	for i, l := range lowers {
		err := unix.FsconfigSetString(fd, "lowerdir+", l)
		if err == nil {
			continue
		}
		if i == 0 && err == unix.EINVAL {
			// Kernels before 6.8 reject the unknown key with EINVAL and
			// say so in the log. Any other EINVAL is about the layer.
			msg := fsLog(fd)
			if msg == "" || strings.Contains(msg, "Unknown parameter") {
				return fmt.Errorf("%w: %s", errNoAppend, msg)
			}
			return fmt.Errorf("mount overlay on %s: fsconfig lowerdir+=%s: %w (kernel: %s)", merged, l, err, msg)
		}
		return fail("fsconfig lowerdir+="+l, err)
	}
	if err := set("source", "overlay"); err != nil {
		return err
	}
	if err := set("upperdir", upper); err != nil {
		return err
	}
	if err := set("workdir", work); err != nil {
		return err
	}
	for _, o := range overlayOptions {
		if err := set(o[0], o[1]); err != nil {
			return err
		}
	}
	if d.volatile {
		if err := unix.FsconfigSetFlag(fd, "volatile"); err != nil {
			return fail("fsconfig volatile", err)
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fail("fsconfig create", err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fail("fsmount", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, merged, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount overlay on %s: move_mount: %w", merged, err)
	}
	return nil
}

// fsLog drains the messages the kernel queued on a filesystem context; they
// say which option it disliked and why, which errno alone does not.
func fsLog(fd int) string {
	var msgs []string
	buf := make([]byte, 1024)
	for range 16 {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		// Each message starts with "e ", "w " or "i " for its severity.
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	return strings.Join(msgs, "; ")
}

// mountLegacy mounts with mount(2), whose option string is limited to one
// page. Layer paths in a store are long, so it names each lower by a short
// link under dir/l and mounts with dir as the working directory, where
// "l/0:l/1:..." stays within a page for all 500 layers overlayfs allows.
func (d *overlayDriver) mountLegacy(lowers []string, dir string) error {
	merged := filepath.Join(dir, "merged")
	var b strings.Builder
	b.WriteString("upperdir=upper,workdir=work")
	for _, o := range overlayOptions {
		b.WriteString("," + o[0] + "=" + o[1])
	}
	if d.volatile {
		b.WriteString(",volatile")
	}
	b.WriteString(",lowerdir=")
	for i := range lowers {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString("l/" + strconv.Itoa(i))
	}
	data := b.String()
	if limit := os.Getpagesize(); len(data) >= limit {
		return fmt.Errorf("mount overlay on %s: %d layers need %d bytes of mount options, more than the %d-byte limit of mount(2); Linux 6.8 or later lifts it",
			merged, len(lowers), len(data)+1, limit)
	}

	links := filepath.Join(dir, "l")
	if err := os.MkdirAll(links, 0o755); err != nil {
		return err
	}
	for i, l := range lowers {
		if err := os.Symlink(l, filepath.Join(links, strconv.Itoa(i))); err != nil {
			return err
		}
	}
	err := inDir(dir, func() error {
		// inDir's thread is not the caller's, which Prepare may have
		// already rid of CAP_SYS_RESOURCE (see Store.Prepare); the thread
		// is a new one anyway, and dropping it here costs nothing.
		if err := dropResourceCap(); err != nil {
			return err
		}
		return unix.Mount("overlay", merged, "overlay", 0, data)
	})
	if err != nil {
		// mount(2) does not say which of the layers it could not find.
		if err == unix.ENOENT {
			for _, l := range lowers {
				if _, serr := os.Stat(l); serr != nil {
					return fmt.Errorf("mount overlay on %s: lower layer: %w", merged, serr)
				}
			}
		}
		return fmt.Errorf("mount overlay on %s with %d layers: %w", merged, len(lowers), err)
	}
	return nil
}

// inDir calls fn with the working directory set to dir. Only the calling
// OS thread changes directory: it first stops sharing its filesystem
// attributes with the rest of the process, and it is never unlocked, so the
// runtime ends it when the goroutine exits instead of reusing it.
func inDir(dir string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare CLONE_FS: %w", err)
			return
		}
		if err := unix.Chdir(dir); err != nil {
			errc <- &os.PathError{Op: "chdir", Path: dir, Err: err}
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// copyDirOwnerMode gives dst the owner and permission bits of src, the
// owner mapped to the host by ids if set.
func copyDirOwnerMode(src, dst string, ids *idMapping) error {
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		return &os.PathError{Op: "stat", Path: src, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("lower layer %s is not a directory", src)
	}
	if ids != nil {
		st.Uid, st.Gid = ids.hostUID(st.Uid), ids.hostGID(st.Gid)
	}
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return &os.PathError{Op: "chown", Path: dst, Err: err}
	}
	if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
		return &os.PathError{Op: "chmod", Path: dst, Err: err}
	}
	return nil
}

// Unmount unmounts dir/merged, if it is mounted, then the idmapped layers,
// which the overlay keeps busy, and removes everything Mount made. A busy
// mount is detached, since the store is about to remove what it is made
// of.
func (d *overlayDriver) Unmount(ctx context.Context, dir string) error {
	dir, err := absDir(dir)
	if err != nil {
		return err
	}
	if err := unmountAll(filepath.Join(dir, "merged"), d.log); err != nil {
		return err
	}
	// Mount made each mount point before mounting on it, so a crash at any
	// point leaves every idmapped mount on one of these.
	idmapped := filepath.Join(dir, "idmapped")
	entries, err := os.ReadDir(idmapped)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if err := unmountAll(filepath.Join(idmapped, e.Name()), d.log); err != nil {
			return err
		}
	}
	for _, name := range []string{"merged", "upper", "work", "l", "idmapped"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

func (d *overlayDriver) Changes(ctx context.Context, lowers []string, dir string, ids *idMapping, w io.Writer) error {
	return writeOverlayDiff(ctx, w, filepath.Join(dir, "upper"), ids)
}
