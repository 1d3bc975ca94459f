package build

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// An imageRoot is a prepared rootfs of the parent image, looked at (never
// changed) to place a COPY's entries as Docker would: into a directory
// the destination names, through links the image has, with the parents
// the image lacks created. Every path is resolved inside it with
// openat2(RESOLVE_IN_ROOT), so a link in the image cannot point the
// build at a host file.
type imageRoot struct {
	path string
	root *os.File
}

func openImageRoot(dir string) (*imageRoot, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &imageRoot{path: dir, root: os.NewFile(uintptr(fd), dir)}, nil
}

func (r *imageRoot) Close() error { return r.root.Close() }

func (r *imageRoot) open(p string, flags int) (*os.File, error) {
	rel := strings.TrimLeft(p, "/")
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(int(r.root.Fd()), rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// resolve returns p, an absolute path in the image, with the links of
// the image it goes through followed inside the image, and p's stat if
// it exists. A missing path is resolved as far as it exists.
func (r *imageRoot) resolve(p string) (string, *unix.Stat_t, error) {
	return r.resolveDepth(p, 0)
}

// maxLinks bounds the dangling links resolve follows, as the kernel's
// ELOOP bounds links in a path.
const maxLinks = 40

func (r *imageRoot) resolveDepth(p string, links int) (string, *unix.Stat_t, error) {
	p = path.Clean("/" + p)
	f, err := r.open(p, unix.O_PATH)
	if err != nil {
		if !errors.Is(err, unix.ENOENT) || p == "/" {
			return "", nil, err
		}
		parent, _, err := r.resolveDepth(path.Dir(p), links)
		if err != nil {
			return "", nil, err
		}
		p = path.Join(parent, path.Base(p))
		// A dangling link is followed, inside the image, to where its
		// target would be, as Docker creates the target.
		target, err := r.readlink(p)
		if err != nil {
			return p, nil, nil
		}
		if links >= maxLinks {
			return "", nil, fmt.Errorf("%s: %w", p, unix.ELOOP)
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		return r.resolveDepth(target, links+1)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", nil, err
	}
	real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		return "", nil, err
	}
	rel, ok := strings.CutPrefix(real, r.path)
	if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
		return "", nil, fmt.Errorf("%s resolved to %s, outside the image's root", p, real)
	}
	return path.Clean("/" + rel), &st, nil
}

// readlink reads p if it is a link, its parents resolved in the image.
func (r *imageRoot) readlink(p string) (string, error) {
	f, err := r.open(p, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(int(f.Fd()), "", buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// owner is a COPY --chown: uid and gid, or nil for the entries' own.
type owner struct{ uid, gid int }

// resolveOwner resolves spec, "user[:group]" by number or by name in the
// image's /etc/passwd and /etc/group, as Docker does. As in Docker, a
// user without a group gets the user's numeric id as group id too.
func (r *imageRoot) resolveOwner(spec string) (*owner, error) {
	if spec == "" {
		return nil, nil
	}
	u, g, hasGroup := strings.Cut(spec, ":")
	o := &owner{}
	uid, err := strconv.Atoi(u)
	if err != nil || uid < 0 {
		fields, err := r.lookup("/etc/passwd", u)
		if err != nil {
			return nil, fmt.Errorf("--chown=%s: %w", spec, err)
		}
		if uid, err = strconv.Atoi(fields[2]); err != nil {
			return nil, fmt.Errorf("--chown=%s: /etc/passwd: bad uid %q", spec, fields[2])
		}
	}
	o.uid, o.gid = uid, uid
	if hasGroup {
		gid, err := strconv.Atoi(g)
		if err != nil || gid < 0 {
			fields, err := r.lookup("/etc/group", g)
			if err != nil {
				return nil, fmt.Errorf("--chown=%s: %w", spec, err)
			}
			if gid, err = strconv.Atoi(fields[2]); err != nil {
				return nil, fmt.Errorf("--chown=%s: /etc/group: bad gid %q", spec, fields[2])
			}
		}
		o.gid = gid
	}
	return o, nil
}

// maxUserDB bounds the image's /etc/passwd and /etc/group as read here.
const maxUserDB = 1 << 20

// lookup finds name in the image's passwd-style file db, read only if
// it is a regular file of bounded size: the image is untrusted.
func (r *imageRoot) lookup(db, name string) ([]string, error) {
	f, err := r.open(db, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", name, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%q: the image's %s is not a regular file", name, db)
	}
	sc := bufio.NewScanner(io.LimitReader(f, maxUserDB))
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 4 && fields[0] == name {
			return fields, nil
		}
	}
	return nil, fmt.Errorf("%q: not in the image's %s", name, db)
}

// placement says where a COPY's entries go in the image.
type placement struct {
	target  string // the destination directory, or the file for a single source
	asFile  bool   // target names the single file itself
	parents []*tar.Header
}

// place resolves dest (absolute, its trailing slash kept) in the image.
// The entries of every existing directory the target goes through are
// emitted with the image's own mode and owner, so that the new layer
// does not change them; missing ones are made 0755 and owned by own.
func (r *imageRoot) place(dest string, set *sourceSet, own *owner) (*placement, error) {
	dirWanted := strings.HasSuffix(dest, "/") || !set.single
	real, st, err := r.resolve(dest)
	if err != nil {
		return nil, err
	}
	pl := &placement{target: real}
	isDir := st != nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
	if !dirWanted && !isDir {
		pl.asFile = true
	}
	if st != nil && !isDir && dirWanted {
		return nil, fmt.Errorf("%s is not a directory in the image", dest)
	}
	dirs := pl.target
	if pl.asFile {
		dirs = path.Dir(pl.target)
	}
	var chain []string
	for d := dirs; d != "/"; d = path.Dir(d) {
		chain = append([]string{d}, chain...)
	}
	for _, d := range chain {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}
		f, err := r.open(d, unix.O_PATH|unix.O_NOFOLLOW)
		if err == nil {
			var st unix.Stat_t
			err = unix.Fstat(int(f.Fd()), &st)
			f.Close()
			if err != nil {
				return nil, err
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return nil, fmt.Errorf("%s is not a directory in the image", d)
			}
			hdr.Mode, hdr.Uid, hdr.Gid = int64(st.Mode&0o7777), int(st.Uid), int(st.Gid)
		} else if !errors.Is(err, unix.ENOENT) {
			return nil, err
		} else if own != nil {
			hdr.Uid, hdr.Gid = own.uid, own.gid
		}
		pl.parents = append(pl.parents, hdr)
	}
	return pl, nil
}

// writeLayer writes the layer of a COPY or ADD: pl's parents, then the
// source entries under pl's target, with own and mode (if set) applied.
func writeLayer(ctx context.Context, w io.Writer, set *sourceSet, pl *placement, own *owner, mode *int64) error {
	if _, err := set.file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, hdr := range pl.parents {
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	base := strings.TrimPrefix(pl.target, "/")
	tr := tar.NewReader(set.file)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if pl.asFile {
			hdr.Name = base
		} else {
			hdr.Name = path.Join(base, hdr.Name)
			if hdr.Typeflag == tar.TypeDir {
				hdr.Name += "/"
			}
		}
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = path.Join(base, hdr.Linkname)
		}
		if own != nil {
			hdr.Uid, hdr.Gid = own.uid, own.gid
		}
		if mode != nil && hdr.Typeflag != tar.TypeSymlink {
			hdr.Mode = *mode
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	return tw.Close()
}

// parseChmod parses a --chmod value, octal as Docker takes it.
func parseChmod(s string) (*int64, error) {
	if s == "" {
		return nil, nil
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return nil, fmt.Errorf("--chmod=%s: not an octal mode", s)
	}
	mode := int64(m)
	return &mode, nil
}
