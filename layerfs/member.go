package layerfs

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// maxDocumentSize bounds the JSON documents an import reads whole (an
// index, a manifest, a config); real ones are a few KiB.
const maxDocumentSize = 16 << 20

// openMember opens the file name (slash-separated, relative) of the OCI
// layout or docker archive in dir. An archive is untrusted, and unpacking
// it keeps its symlinks, FIFOs and device nodes: a member is followed
// through symlinks only while they stay inside dir, opened without
// blocking, and must be a regular file, so that an archive can neither
// make the import read the host's files or devices nor hang it on a FIFO.
func openMember(dir, name string) (*os.File, error) {
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(root)
	fd, err := openat2(root, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY,
		Resolve: resolveBeneath,
	})
	switch {
	case err == unix.EXDEV || err == unix.ELOOP:
		return nil, fmt.Errorf("%w %q: leads outside the archive", ErrUnsafeEntry, name)
	case err != nil:
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fstat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%w %q: not a regular file (mode %#o)", ErrUnsafeEntry, name, st.Mode)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// readMember returns the contents of the document name in dir, which may
// be no larger than maxDocumentSize; see openMember.
func readMember(dir, name string) ([]byte, error) {
	f, err := openMember(dir, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > maxDocumentSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, maxDocumentSize)
	}
	return b, nil
}

// memberOpener returns an opener of the member name in dir, for a
// layerSource.
func memberOpener(dir, name string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return openMember(dir, name) }
}
