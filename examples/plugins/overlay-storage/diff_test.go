package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDiffRacingWorkload: Diff may run on a live sandbox's rootfs, whose
// workload can swap a file of its upper directory for a symlink to a host
// file or for a FIFO between Diff's look at the entry and its open. The
// host file must never reach the tar, and Diff must never hang on a FIFO.
func TestDiffRacingWorkload(t *testing.T) {
	s, err := newStorage(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const secret = "host-secret-0b7e4f"
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	upper := filepath.Join(s.dir("racy"), "upper")
	if err := os.MkdirAll(upper, 0o755); err != nil {
		t.Fatal(err)
	}
	target, tmp := filepath.Join(upper, "f"), filepath.Join(upper, "f.tmp")
	if err := os.WriteFile(target, []byte("plain"), 0o644); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the workload
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			os.Remove(tmp)
			switch i % 3 {
			case 0:
				os.Symlink(secretFile, tmp)
			case 1:
				syscall.Mkfifo(tmp, 0o644)
			case 2:
				os.WriteFile(tmp, []byte("plain"), 0o644)
			}
			os.Rename(tmp, target)
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	race := 2 * time.Second
	if testing.Short() {
		race = 500 * time.Millisecond
	}
	for deadline := time.Now().Add(race); time.Now().Before(deadline); {
		var buf bytes.Buffer
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.Diff(context.Background(), "racy", &buf) // an error is fine: the tree changed
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			// Unblock the open of the FIFO, so the test can end.
			if f, err := os.OpenFile(target, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				f.Close()
			}
			t.Fatal("Diff hangs on a FIFO put in place of a regular file")
		}
		if bytes.Contains(buf.Bytes(), []byte(secret)) {
			t.Fatal("Diff followed a symlink put in place of a regular file: a host file is in the layer")
		}
	}
}
