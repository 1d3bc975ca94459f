package plugin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/clip"
)

// A netnsFile is a network namespace held open, and its identity: the
// device and inode of its nsfs file, which stay its own for as long as it
// exists, whereas a path such as /proc/<pid>/ns/net names whatever
// namespace the process holding that pid has now.
type netnsFile struct {
	*os.File
	dev, ino uint64
}

// openNetns opens the network namespace at path (a /proc/<pid>/ns/net
// link, a bind mount of one, a /proc/<pid>/fd/<n> of one) and checks that
// it is one. The caller closes it.
func openNetns(path string) (*netnsFile, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("network namespace path %s is not absolute: %w", clip.Quote(path), ErrInvalid)
	}
	// No O_NOFOLLOW: /proc/<pid>/ns/net is a magic link that must be
	// followed. What the path named does not matter, only what was
	// opened, which is checked below and by its identity. O_NONBLOCK, so
	// that a FIFO put in its place cannot hang the open.
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	ns, err := identify(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("network namespace %s: %w", clip.Quote(path), err)
	}
	return ns, nil
}

// identify checks that f is a network namespace and reads its identity.
func identify(f *os.File) (*netnsFile, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var (
		st    unix.Stat_t
		typ   int
		opErr error
	)
	err = rc.Control(func(fd uintptr) {
		if opErr = unix.Fstat(int(fd), &st); opErr != nil {
			return
		}
		// NS_GET_NSTYPE answers only on an nsfs file (ENOTTY on any
		// other), with the namespace's CLONE_NEW* flag.
		typ, opErr = unix.IoctlRetInt(int(fd), unix.NS_GET_NSTYPE)
	})
	if err == nil {
		err = opErr
	}
	if errors.Is(err, unix.ENOTTY) || err == nil && typ != unix.CLONE_NEWNET {
		return nil, fmt.Errorf("not a network namespace: %w", ErrInvalid)
	}
	if err != nil {
		return nil, err
	}
	return &netnsFile{File: f, dev: st.Dev, ino: st.Ino}, nil
}

// procPath is a path to the namespace that stays valid, and names this
// very namespace, for as long as ns is open: the descriptor's own entry
// in /proc, which programs that this process starts can open too.
func (ns *netnsFile) procPath() string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.Fd())
}
