package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/safetree"
)

// Copying files in and out of a sandbox.
//
// A sandbox's tree is its workload's to rewrite at any moment: a host
// process that opened <rootfs>/out would follow a link /out -> /etc/shadow
// to the host's own file. So the host never names a file of the sandbox by
// a host path. The copy opens the sandbox's root as a directory descriptor
// (through its PID 1, /proc/<pid>/root, so that it sees the sandbox's
// mounts as the workload does), resolves the path it is given inside that
// root (openat2 RESOLVE_IN_ROOT), and does everything after relative to
// descriptors of directories, never following a symbolic link below the
// named path (internal/safetree). The worst a workload that swaps its files
// during a copy can do is make that copy fail or copy a mix of its files.

// CopyOptions adjust CopyTo, CopyFrom and the tar forms.
type CopyOptions struct {
	// Archive keeps the owners of what is copied, as `cp -a`. Copied into
	// a sandbox, the ids are the sandbox's own (its user namespace maps
	// them to host ids), and setuid and setgid bits are kept; otherwise
	// everything belongs to the sandbox's root and loses them. Copied out,
	// the ids are the host's view of the sandbox's files; otherwise the
	// files belong to the caller. Setuid and setgid bits never leave a
	// sandbox.
	Archive bool
	// FollowLink copies what the source path names when it is itself a
	// symbolic link (`cp -L`): for CopyFrom, resolved inside the sandbox.
	// Links below the path are copied as links in any case.
	FollowLink bool
}

// CopyTo copies the host file or directory hostPath into the sandbox at
// sandboxPath, as `docker cp` does: onto an existing directory, it goes
// inside it under its own name; otherwise it takes sandboxPath's name,
// whose parent directory must exist, replacing a file or link there (a
// link is replaced, never written through). A directory is copied
// recursively and merged into one that exists. sandboxPath is resolved
// inside the sandbox's root: a symbolic link the workload planted is
// followed only within the sandbox, never to the host. Links below it are
// never followed. FIFOs, sockets and devices in hostPath are skipped, with
// a warning in the sandbox's log.
//
// What is written counts against the sandbox's disk quota, and a
// read-only filesystem of the sandbox refuses it (an error that
// errors.Is unix.EROFS). Each file appears whole or not at all (it is
// written under a temporary name first); a copy that fails or whose ctx
// ends leaves the entries done so far.
func (s *Sandbox) CopyTo(ctx context.Context, hostPath, sandboxPath string, opts *CopyOptions) error {
	o := copyOptions(opts)
	if o.FollowLink {
		p, err := filepath.EvalSymlinks(hostPath)
		if err != nil {
			return fmt.Errorf("copy to sandbox %s: %w", s.id, err)
		}
		hostPath = p
	}
	srcDir, srcName := filepath.Split(filepath.Clean(hostPath))
	if srcName == "" || srcName == "." || srcName == ".." {
		return fmt.Errorf("copy to sandbox %s: %s: copy a named file or directory, not %q", s.id, hostPath, srcName)
	}
	if srcDir == "" {
		srcDir = "."
	}
	src, err := unix.Open(srcDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("copy to sandbox %s: %w", s.id, &os.PathError{Op: "open", Path: srcDir, Err: err})
	}
	defer unix.Close(src)
	return s.withRoot(true, func(root *sandboxRoot) error {
		dir, name, err := root.destination(sandboxPath, srcName)
		if err != nil {
			return s.copyError("copy to", sandboxPath, err)
		}
		defer unix.Close(dir)
		w := safetree.NewWriter(dir, root.writeOptions(o, s.skipped("copy to")))
		err = safetree.OnThread(root.creds(), func() error {
			return safetree.Walk(ctx, src, srcName, name, func(e *safetree.Entry) error { return w.Write(ctx, e) })
		})
		return s.copyError("copy to", sandboxPath, err)
	})
}

// CopyToTar unpacks the tar stream r into the directory sandboxDir inside
// the sandbox, resolved as CopyTo resolves its destination; it must
// exist. Absolute member names are taken from sandboxDir; a name or hard
// link that climbs out of it with "..", a device node, or a member below
// a symbolic link (one the stream made included) is refused with
// ErrUnsafeEntry, and the members unpacked before stay.
// Symbolic links are made as they are: inside the sandbox they resolve
// within it. Owners, setuid and setgid bits are kept only with
// opts.Archive, as for CopyTo.
//
// Like every copy, it holds the sandbox's rootfs while it runs: a
// workload that ends meanwhile is torn down, and Wait returns, once the
// copy has. ctx is checked between reads of r; a read that blocks is
// r's to end (close it).
func (s *Sandbox) CopyToTar(ctx context.Context, r io.Reader, sandboxDir string, opts *CopyOptions) error {
	o := copyOptions(opts)
	return s.withRoot(true, func(root *sandboxRoot) error {
		dir, err := safetree.InRoot(root.fd, sandboxDir, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return s.copyError("copy to", sandboxDir, err)
		}
		defer unix.Close(dir)
		w := safetree.NewWriter(dir, root.writeOptions(o, nil))
		err = safetree.OnThread(root.creds(), func() error {
			return safetree.ReadTar(ctx, r, func(e *safetree.Entry) error { return w.Write(ctx, e) })
		})
		return s.copyError("copy to", sandboxDir, err)
	})
}

// CopyFrom copies the file or directory sandboxPath, resolved inside the
// sandbox's root, to hostPath on the host: into it, under sandboxPath's
// name, if it is a directory; otherwise as hostPath, whose parent must
// exist. Symbolic links are copied as links, never followed, sandboxPath's
// own included unless opts.FollowLink asks to resolve it (inside the
// sandbox). FIFOs, sockets and devices are skipped, with a warning in the
// sandbox's log. The files made belong to the caller (opts.Archive keeps
// the owners) and never have setuid or setgid bits. Holes are kept, so a
// sparse file of a terabyte costs the host its data only. Each file
// appears whole or not at all.
func (s *Sandbox) CopyFrom(ctx context.Context, sandboxPath, hostPath string, opts *CopyOptions) error {
	o := copyOptions(opts)
	return s.withRoot(false, func(root *sandboxRoot) error {
		parent, name, err := root.source(sandboxPath, o.FollowLink)
		if err != nil {
			return s.copyError("copy from", sandboxPath, err)
		}
		defer unix.Close(parent)
		as := name
		if as == "." {
			as = ""
		}
		dst, dstName, err := hostDestination(hostPath, as)
		if err != nil {
			return fmt.Errorf("copy from sandbox %s: %w", s.id, err)
		}
		defer unix.Close(dst)
		wo := safetree.WriteOptions{UID: -1, GID: -1, KeepOwner: o.Archive, Special: s.skipped("copy from")}
		w := safetree.NewWriter(dst, wo)
		err = safetree.Walk(ctx, parent, name, dstName, func(e *safetree.Entry) error { return w.Write(ctx, e) })
		return s.copyError("copy from", sandboxPath, err)
	})
}

// CopyFromTar writes sandboxPath, resolved inside the sandbox's root as
// CopyFrom resolves it, to w as a tar stream whose entries are named after
// sandboxPath's last element (the root's entries by their own names).
// Links are archived as links, and a file's further names as hard links
// to its first; FIFOs, sockets and devices are left out, with a warning in
// the sandbox's log. A sparse file is a sparse member (GNU tar's PAX
// format 1.0), so its holes take no room in the stream; one of more than
// 65,536 ranges of data is refused.
func (s *Sandbox) CopyFromTar(ctx context.Context, sandboxPath string, w io.Writer, opts *CopyOptions) error {
	o := copyOptions(opts)
	return s.withRoot(false, func(root *sandboxRoot) error {
		parent, name, err := root.source(sandboxPath, o.FollowLink)
		if err != nil {
			return s.copyError("copy from", sandboxPath, err)
		}
		defer unix.Close(parent)
		as := name
		if as == "." {
			as = ""
		}
		tw := safetree.NewTarWriter(w)
		skip := s.skipped("copy from")
		err = safetree.Walk(ctx, parent, name, as, func(e *safetree.Entry) error {
			switch e.Type() {
			case unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK:
				return tw.Write(ctx, e)
			}
			skip(e)
			return nil
		})
		if err == nil {
			err = tw.Close()
		}
		return s.copyError("copy from", sandboxPath, err)
	})
}

func copyOptions(o *CopyOptions) CopyOptions {
	if o == nil {
		return CopyOptions{}
	}
	return *o
}

// skipped returns what a copy calls for a special file it leaves out.
func (s *Sandbox) skipped(op string) func(*safetree.Entry) {
	return func(e *safetree.Entry) {
		s.log.Warn(op+" sandbox: skipped a special file", "id", s.id, "path", e.Name, "kind", e.Kind())
	}
}

// copyError names the sandbox and its path in err, if there is one.
func (s *Sandbox) copyError(op, sandboxPath string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EROFS) {
		return fmt.Errorf("%s sandbox %s: %s is on a read-only filesystem of the sandbox: %w", op, s.id, sandboxPath, err)
	}
	return fmt.Errorf("%s sandbox %s: %s: %w", op, s.id, sandboxPath, err)
}

// hostDestination returns the directory on the host a copy out writes
// into, and the name of what it writes there: hostPath's own if it does
// not exist or is not a directory, name inside it if it is. The host's
// path is the caller's, and resolved as any path of the caller's; only
// what the copy makes below it is made without following links.
func hostDestination(hostPath, name string) (dir int, as string, err error) {
	st, err := os.Stat(hostPath)
	if err == nil && st.IsDir() {
		if name == "" {
			return -1, "", fmt.Errorf("%s exists: copy the sandbox's root to a new directory", hostPath)
		}
		dir, err = unix.Open(hostPath, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, "", &os.PathError{Op: "open", Path: hostPath, Err: err}
		}
		return dir, name, nil
	}
	if strings.HasSuffix(hostPath, "/") {
		return -1, "", &os.PathError{Op: "copy", Path: hostPath, Err: errors.New("no such directory")}
	}
	parent, base := filepath.Split(filepath.Clean(hostPath))
	if parent == "" {
		parent = "."
	}
	dir, err = unix.Open(parent, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", &os.PathError{Op: "open", Path: parent, Err: err}
	}
	return dir, base, nil
}

// destination resolves sandboxPath, where a copy into the sandbox of
// something called name goes, to a directory and the name to write in it.
func (r *sandboxRoot) destination(sandboxPath, name string) (dir int, as string, err error) {
	dir, err = safetree.InRoot(r.fd, sandboxPath, unix.O_PATH|unix.O_DIRECTORY)
	if err == nil {
		return dir, name, nil
	}
	// Not a directory, missing, or a link that cannot be followed (a
	// magic link, a loop): the copy takes its name, and replaces a link.
	if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) && !errors.Is(err, unix.ELOOP) {
		return -1, "", err
	}
	if strings.HasSuffix(sandboxPath, "/") {
		return -1, "", fmt.Errorf("no such directory: %w", err)
	}
	parent, base := safetree.Split(sandboxPath)
	if base == "" {
		return -1, "", err
	}
	dir, err = safetree.InRoot(r.fd, parent, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return -1, "", err
	}
	return dir, base, nil
}

// source resolves sandboxPath, what a copy out of the sandbox reads, to
// its directory and its name there ("." for the root). With follow, a
// link at sandboxPath is resolved first, inside the root; the copy reads
// the name it leads to without following a link there again.
func (r *sandboxRoot) source(sandboxPath string, follow bool) (dir int, name string, err error) {
	p := path.Clean("/" + sandboxPath)
	if follow {
		if p, err = resolveInRoot(r.fd, p); err != nil {
			return -1, "", err
		}
	}
	parent, base := safetree.Split(p)
	if base == "" {
		parent, base = "/", "."
	}
	dir, err = safetree.InRoot(r.fd, parent, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return -1, "", err
	}
	return dir, base, nil
}
