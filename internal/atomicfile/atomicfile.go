// Package atomicfile replaces files so that readers, and the files left
// after a crash or a power cut, hold either the old content or the new,
// never a mix, a prefix or nothing.
//
// Rename alone is atomic for readers, but not across a power cut: the
// rename can reach the disk before the data it names (leaving an empty or
// truncated file), and the rename itself lives in the directory, which is
// written back on its own schedule. WriteFile therefore writes a
// temporary file in the target's directory, syncs it, renames it over the
// target and syncs the directory; Replace skips the syncs, for records a
// power cut makes moot. File is the same for content streamed in, such as
// an exported image: made relative to a descriptor of its directory, never
// following a link at its name, and nameless until committed where the
// filesystem has O_TMPFILE, so that a killed writer leaves nothing.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// TempPrefix begins the names of every temporary file here, so that
// whoever cleans a directory up after a crash can recognise them.
const TempPrefix = ".tmp-"

// IsTemp reports whether name, a file name without directory, is one of
// WriteFile's temporary files.
func IsTemp(name string) bool { return strings.HasPrefix(name, TempPrefix) }

// WriteFile replaces the file at path with data, with permissions perm
// (the umask does not apply), durably: once it returns nil the new content
// survives a power cut, and at no moment does path name anything but the
// complete old content or the complete new. No temporary file is left on
// any error; path is unchanged unless the error is the directory's sync,
// after the rename.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, true)
}

// Replace is WriteFile without the syncs: readers, and a process killed at
// any moment, still see the complete old content or the complete new, but
// a power cut may leave an empty or truncated file. It is for records that
// a power cut makes moot, such as those of running sandboxes and of their
// mounts, which the reboot ends: their readers must cope with a damaged
// record anyway, and a sync costs a start about a millisecond on a disk.
func Replace(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, false)
}

func write(path string, data []byte, perm os.FileMode, durable bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, TempPrefix+base+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if durable {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	if !durable {
		return nil
	}
	return SyncDir(dir)
}

// SyncDir makes the entries of dir (files created, renamed or removed in
// it) durable.
func SyncDir(dir string) error {
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
