package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestClaimStateDirBesideReaders claims new state directories while a
// reader tests each for its owner, as ReadRecords (berth ps) does: a
// reader's brief shared lock must not make a start fail.
func TestClaimStateDirBesideReaders(t *testing.T) {
	root := t.TempDir()
	const starts = 5000
	var current atomic.Pointer[string]
	done := make(chan struct{})
	var readerLocked atomic.Int64
	go func() {
		defer close(done)
		for {
			p := current.Load()
			if p == nil {
				return
			}
			// Spin on the directory about to be made, and take the
			// reader's lock the moment it exists.
			if lock, _ := tryOwnerLock(*p, unix.LOCK_SH); lock != nil {
				readerLocked.Add(1)
				lock.Close()
			}
		}
	}()
	var failed []error
	for i := range starts {
		dir := filepath.Join(root, fmt.Sprintf("%016x", i))
		current.Store(&dir)
		f, err := claimStateDir(root, dir)
		if err != nil {
			failed = append(failed, err)
			continue
		}
		f.Close()
	}
	current.Store(nil)
	<-done
	if len(failed) > 0 {
		t.Errorf("%d of %d starts failed beside a reader; first: %v", len(failed), starts, failed[0])
	}
	if readerLocked.Load() == 0 {
		t.Errorf("the reader never locked a directory: the test tested nothing")
	}
}

// TestClaimStateDirRefusesExisting checks that a directory that is there
// already, another sandbox's, is not claimed.
func TestClaimStateDirRefusesExisting(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "00000000000000ab")
	f, err := claimStateDir(root, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := claimStateDir(root, dir)
	if !errors.Is(err, fs.ErrExist) {
		if g != nil {
			g.Close()
		}
		t.Fatalf("second claim of %s: %v, want an error wrapping fs.ErrExist", dir, err)
	}
}
