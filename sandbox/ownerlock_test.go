package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestClaimStateDirBesideReaders claims new state directories while a
// reader tests each for its owner, as ReadRecords (berth ps) does: a
// reader's brief shared lock must not make a start fail.
func TestClaimStateDirBesideReaders(t *testing.T) {
	root := t.TempDir()
	// At least this many starts, and on until the reader has locked a
	// few directories (under the race detector, on a busy machine, its
	// spin can miss thousands of them), up to a bound.
	const starts, maxStarts, wantLocked = 5000, 100000, 3
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
	n := 0
	for i := 0; i < maxStarts && (i < starts || readerLocked.Load() < wantLocked); i++ {
		n++
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
		t.Errorf("%d of %d starts failed beside a reader; first: %v", len(failed), n, failed[0])
	}
	if readerLocked.Load() == 0 {
		// The reader's spin must land between a claim's mkdir and its
		// lock, or just after it; under the race detector on a busy
		// machine it may not in any of the starts. The plain run of make
		// test is where this test bites.
		if testing.Short() {
			t.Skipf("the reader never locked a directory in %d starts: nothing was tested", n)
		}
		t.Errorf("the reader never locked a directory in %d starts: the test tested nothing", n)
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

// TestRecoverBesideReaders checks that a reader's shared lock on a dead
// sandbox's state directory (berth ps, at that instant) does not make
// Recover take the sandbox for a live one and leave it.
func TestRecoverBesideReaders(t *testing.T) {
	stateDir := filepath.Join(t.TempDir(), "state")
	dead := filepath.Join(stateDir, "00000000000000dd")
	if err := os.MkdirAll(dead, 0o711); err != nil {
		t.Fatal(err)
	}
	reader, err := tryOwnerLock(dead, unix.LOCK_SH)
	if err != nil || reader == nil {
		t.Fatalf("reader's lock: %v", err)
	}
	// The reader lets go a moment later, as ReadRecords does.
	released := time.AfterFunc(100*time.Millisecond, func() { reader.Close() })
	defer func() {
		if released.Stop() {
			reader.Close()
		}
	}()
	res, err := Recover(context.Background(), opts(func(o *Options) { o.StateDir = stateDir }))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Sandboxes, []string{"00000000000000dd"}) {
		t.Errorf("recover beside a reader: %+v, want the dead sandbox reclaimed", res)
	}
	if _, err := os.Stat(dead); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dead sandbox's state: %v", err)
	}
}
