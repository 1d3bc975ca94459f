package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// A File is a file being written that appears under its name only
// once it is complete, whole and on disk, replacing anything there in one
// step. Until then it has no name at all where the filesystem supports
// O_TMPFILE, so a process killed while writing leaves nothing behind;
// elsewhere it is a hidden temporary file beside the target, removed on
// every path but a kill.
//
// The file is made relative to a descriptor of its directory, and its
// name is replaced, never followed: a symlink at the name is replaced
// like any file.
type File struct {
	*os.File
	dir    *os.File // the directory it goes in
	name   string   // its name there
	target string   // the whole path, for errors
	temp   string   // the temporary name in dir, when the file has one
	done   bool
}

// Create starts a File for the path target, with mode perm
// (less the umask) once it is in place.
func Create(target string, perm os.FileMode) (*File, error) {
	dir, err := os.Open(filepath.Dir(target))
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &os.PathError{Op: "create", Path: target, Err: err}
	}
	f, err := CreateAt(dir, filepath.Base(target), target, perm)
	dir.Close()
	return f, err
}

// CreateAt starts a File named name in the directory dir;
// target is the path errors give for it.
func CreateAt(dir *os.File, name, target string, perm os.FileMode) (*File, error) {
	d, err := unix.Dup(int(dir.Fd()))
	if err != nil {
		return nil, &os.PathError{Op: "create", Path: target, Err: err}
	}
	unix.CloseOnExec(d)
	a := &File{dir: os.NewFile(uintptr(d), dir.Name()), name: name, target: target}
	fd, err := unix.Openat(d, ".", unix.O_WRONLY|unix.O_TMPFILE|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err == nil {
		a.File = os.NewFile(uintptr(fd), target)
		return a, nil
	}
	// Filesystems without O_TMPFILE answer EOPNOTSUPP, or EISDIR from
	// kernels that predate it.
	if err != unix.EOPNOTSUPP && err != unix.EISDIR && err != unix.EINVAL {
		a.dir.Close()
		return nil, &os.PathError{Op: "create", Path: target, Err: err}
	}
	for tries := 0; ; tries++ {
		temp, err := tempName(name)
		if err == nil {
			// Opened by hand, so that errors name the target.
			fd, err = unix.Openat(d, temp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Perm()))
		}
		if err == nil {
			a.File, a.temp = os.NewFile(uintptr(fd), target), temp
			return a, nil
		}
		if err != unix.EEXIST || tries == 10 {
			a.dir.Close()
			return nil, &os.PathError{Op: "create", Path: target, Err: err}
		}
	}
}

// Commit syncs the file, puts it in place and syncs the directory, so that
// after a power cut the name holds either its old contents or all of the
// new. The file is closed either way.
func (f *File) Commit() error {
	if f.done {
		return &os.PathError{Op: "write", Path: f.target, Err: os.ErrClosed}
	}
	f.done = true
	defer f.dir.Close()
	err := f.Sync()
	if err == nil {
		err = f.place()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = f.dir.Sync()
	}
	if err != nil {
		if f.temp != "" {
			unix.Unlinkat(int(f.dir.Fd()), f.temp, 0)
		}
		var pe *os.PathError
		if errors.As(err, &pe) {
			if pe.Path == f.target {
				return err
			}
			err = pe.Err
		}
		return &os.PathError{Op: "write", Path: f.target, Err: err}
	}
	return nil
}

// place gives the file its name. Errors are bare errnos, which commit
// reports with the target's path: a temporary name means nothing to the
// caller.
func (f *File) place() error {
	dirfd := int(f.dir.Fd())
	if f.temp != "" {
		return unix.Renameat(dirfd, f.temp, dirfd, f.name)
	}
	// An O_TMPFILE file is linked to a name through /proc; linkat with
	// AT_EMPTY_PATH would do without /proc but needs
	// CAP_DAC_READ_SEARCH. A new name is linked straight into place;
	// an existing one is replaced by a rename, which must start from a
	// name of its own.
	proc := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	err := unix.Linkat(unix.AT_FDCWD, proc, dirfd, f.name, unix.AT_SYMLINK_FOLLOW)
	if err != unix.EEXIST {
		return err
	}
	temp, err := tempName(f.name)
	if err != nil {
		return err
	}
	if err := unix.Linkat(unix.AT_FDCWD, proc, dirfd, temp, unix.AT_SYMLINK_FOLLOW); err != nil {
		return err
	}
	if err := unix.Renameat(dirfd, temp, dirfd, f.name); err != nil {
		unix.Unlinkat(dirfd, temp, 0)
		return err
	}
	return nil
}

// Abort discards the file; the name is left as it was.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.Close()
	if f.temp != "" {
		unix.Unlinkat(int(f.dir.Fd()), f.temp, 0)
	}
	f.dir.Close()
}

// tempName returns a hidden name for a temporary file beside name, unused
// with all likelihood, and short enough for any name (NAME_MAX is 255).
func tempName(name string) (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	if len(name) > 200 {
		name = name[:200]
	}
	return TempPrefix + name + "-" + hex.EncodeToString(b), nil
}
