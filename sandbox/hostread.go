package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrSandboxFile means berth refused to read a file of a sandbox's tree on
// the host's side: it is not a regular file, it is larger than berth reads,
// or another process holds a lease that reading would have to wait out.
// The sandbox's workload can change its own tree at will, so the host
// reads from it only what cannot block or exhaust it.
var ErrSandboxFile = errors.New("unsafe file in the sandbox")

// maxSandboxFile is the most berth reads of one file of a sandbox's tree,
// such as /etc/passwd: far more than any real one, and bounded.
const maxSandboxFile = 4 << 20

// openSandboxFile opens name in rootfs for reading, on the host's side,
// without blocking and without touching anything but a regular file:
// the name is resolved inside rootfs (openat2 RESOLVE_IN_ROOT), the file
// found is checked through an O_PATH descriptor before it is opened, so
// that a FIFO, a device or a socket is never opened at all, and the open
// itself is O_NONBLOCK, so that a lease does not hold it up. A file
// larger than max is refused. The error names the file.
func openSandboxFile(rootfs, name string, max int64) (*os.File, error) {
	path, err := openInRoot(rootfs, name, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	defer path.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(path.Fd()), &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: name, Err: err}
	}
	if kind := st.Mode & unix.S_IFMT; kind != unix.S_IFREG {
		return nil, fmt.Errorf("read %s: %w: %s, not a regular file", name, ErrSandboxFile, fileKind(kind))
	}
	if st.Size > max {
		return nil, fmt.Errorf("read %s: %w: %d bytes, more than %d", name, ErrSandboxFile, st.Size, max)
	}
	// Reopening the O_PATH descriptor opens the very inode checked.
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(int(path.Fd())), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("read %s: %w: another process holds a lease on it", name, ErrSandboxFile)
		}
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// limitSandboxFile returns a reader of f that fails past max bytes: the
// file can grow after openSandboxFile checked its size.
func limitSandboxFile(f *os.File, max int64) io.Reader {
	return &cappedReader{r: io.LimitReader(f, max+1), left: max, max: max, name: f.Name()}
}

// cappedReader reads at most max bytes of r and fails past them.
type cappedReader struct {
	r         io.Reader
	left, max int64
	name      string
}

func (c *cappedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return 0, fmt.Errorf("read %s: %w: it grew past %d bytes while read", c.name, ErrSandboxFile, c.max)
	}
	return n, err
}

func fileKind(mode uint32) string {
	switch mode {
	case unix.S_IFIFO:
		return "a named pipe"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return "of an unknown type"
}
