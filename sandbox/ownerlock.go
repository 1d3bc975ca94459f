package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"golang.org/x/sys/unix"
)

// A sandbox's owner (the process that started it) holds an exclusive
// flock(2) on the sandbox's state directory for the sandbox's whole life:
// from just after the directory is made until just after it is removed.
// The kernel drops the lock when the owner dies, however it dies, so the
// lock says whether a sandbox is alive even when its record (state.json)
// is missing, empty or garbled.
//
// Making the directory and locking it are two steps. So that Recover never
// takes a directory in between for one left by a kill, starters make and
// lock theirs under a shared lock on rootLockName in the state root, and
// Recover surveys the directories under an exclusive one.

// rootLockName is the lock file in the state root (see above).
const rootLockName = ".lock"

// sandboxIDRE matches the names of sandboxes' state directories, and
// nothing else that lives in the state root (networks, seccomp).
var sandboxIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// lockRoot takes a lock of type how (unix.LOCK_SH or unix.LOCK_EX) on the
// state root's lock file, creating both if need be. Closing the file
// releases it.
func lockRoot(root string, how int) (*os.File, error) {
	if err := os.MkdirAll(root, 0o711); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(root, rootLockName), os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := flock(f, how); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return f, nil
}

// claimStateDir makes the state directory dir in root and takes its owner
// lock, which holds until the returned file is closed. A directory that
// already exists is another sandbox's (an ID clash), and an error.
//
// The lock is taken blocking: the directory is new, so the only locks in
// the way are readers' brief shared ones (ReadRecords testing for an
// owner), and failing on one of those would make a listing break a start.
// Recover, the only taker of exclusive owner locks besides owners, cannot
// reach the directory while the shared root lock is held.
func claimStateDir(root, dir string) (*os.File, error) {
	rl, err := lockRoot(root, unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer rl.Close()
	if err := os.Mkdir(dir, 0o711); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("state directory %s is another sandbox's: %w", dir, err)
		}
		return nil, err
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := flock(f, unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}

// tryOwnerLock takes the owner lock of the state directory dir if no live
// owner holds it. It returns nil, nil if one does.
func tryOwnerLock(dir string, how int) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	err = flock(f, how|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		f.Close()
		return nil, nil
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}

// readersWait bounds how long lockAbandoned waits for readers' shared
// locks to go. Readers hold theirs for an instant; one held longer leaves
// the sandbox to the next Recover rather than holding up starts, which
// wait for Recover's root lock meanwhile.
const readersWait = time.Second

// lockAbandoned takes the exclusive owner lock of the state directory dir
// for Recover, which holds the exclusive root lock. It returns nil, nil if
// a live owner holds the directory's lock, or if readers hold it too long
// to tell.
//
// Readers (ReadRecords) test for an owner with brief shared locks, which
// also keep LOCK_EX|LOCK_NB from succeeding: taken for an owner, a reader
// would make Recover leave a dead sandbox. So a refused lock is told
// apart: an owner's exclusive lock also refuses a shared one, readers'
// shared locks do not, and are waited out. No owner can come back to the
// directory meanwhile: a start makes a new one (claimStateDir) and, like
// another Recover, waits for the root lock.
func lockAbandoned(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(readersWait)
	for {
		err := flock(f, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		if err := flock(f, unix.LOCK_SH|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, nil // the owner's exclusive lock
			}
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		flock(f, unix.LOCK_UN)
		if time.Now().After(deadline) {
			f.Close()
			return nil, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}
