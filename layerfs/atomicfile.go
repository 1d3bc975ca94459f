package layerfs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// An atomicFile is a file being written that appears at its target path
// only once it is complete, whole and on disk, replacing anything there
// in one step. Until then it has no name at all where the filesystem
// supports O_TMPFILE, so a process killed while writing leaves nothing
// behind; elsewhere it is a hidden temporary file beside the target,
// removed on every path but a kill.
type atomicFile struct {
	*os.File
	target string
	temp   string // the temporary name, when the file has one
	done   bool
}

// createAtomic starts an atomicFile for target, with mode perm (less the
// umask) once it is in place.
func createAtomic(target string, perm os.FileMode) (*atomicFile, error) {
	dir := filepath.Dir(target)
	fd, err := unix.Open(dir, unix.O_WRONLY|unix.O_TMPFILE|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err == nil {
		return &atomicFile{File: os.NewFile(uintptr(fd), target), target: target}, nil
	}
	// Filesystems without O_TMPFILE answer EOPNOTSUPP, or EISDIR from
	// kernels that predate it.
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return nil, &os.PathError{Op: "create", Path: target, Err: err}
	}
	for tries := 0; ; tries++ {
		temp, err := tempName(target)
		if err != nil {
			return nil, err
		}
		// Opened by hand, so that errors name the target.
		fd, err := unix.Open(temp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, uint32(perm.Perm()))
		if err == nil {
			return &atomicFile{File: os.NewFile(uintptr(fd), target), target: target, temp: temp}, nil
		}
		if err != unix.EEXIST || tries == 10 {
			return nil, &os.PathError{Op: "create", Path: target, Err: err}
		}
	}
}

// commit syncs the file, puts it in place and syncs the directory, so that
// after a power cut the target holds either its old contents or all of
// the new. The file is closed either way.
func (f *atomicFile) commit() error {
	if f.done {
		return fmt.Errorf("%s: already committed or aborted", f.target)
	}
	f.done = true
	err := f.Sync()
	if err == nil {
		err = f.place()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(f.target))
	}
	if err != nil {
		if f.temp != "" {
			unix.Unlink(f.temp)
		}
		var pe *os.PathError
		if errors.As(err, &pe) && pe.Path == f.target {
			return err
		}
		return &os.PathError{Op: "write", Path: f.target, Err: err}
	}
	return nil
}

// place gives the file its target name.
func (f *atomicFile) place() error {
	// Errors are bare errnos, which commit reports with the target's
	// name: a temporary name means nothing to the caller.
	if f.temp != "" {
		return unix.Rename(f.temp, f.target)
	}
	// An O_TMPFILE file is linked to a name through /proc; linkat with
	// AT_EMPTY_PATH would do without /proc but needs
	// CAP_DAC_READ_SEARCH. A new name is linked straight into place;
	// an existing one is replaced by a rename, which must start from a
	// name of its own.
	proc := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	err := unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, f.target, unix.AT_SYMLINK_FOLLOW)
	if err == nil || !errors.Is(err, unix.EEXIST) {
		return err
	}
	temp, err := tempName(f.target)
	if err != nil {
		return err
	}
	if err := unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, temp, unix.AT_SYMLINK_FOLLOW); err != nil {
		return err
	}
	if err := unix.Rename(temp, f.target); err != nil {
		unix.Unlink(temp)
		return err
	}
	return nil
}

// abort discards the file; the target is left as it was.
func (f *atomicFile) abort() {
	if f.done {
		return
	}
	f.done = true
	f.Close()
	if f.temp != "" {
		unix.Unlink(f.temp)
	}
}

// tempName returns an unused-looking hidden name beside target.
func tempName(target string) (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".tmp-"+hex.EncodeToString(b)), nil
}

// syncDir flushes a directory's entries, so that a rename in it survives a
// power cut.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
