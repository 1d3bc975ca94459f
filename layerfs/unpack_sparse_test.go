package layerfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A sparse entry of a few hundred bytes in the archive may claim any size;
// its holes must stay holes, or a tiny layer fills the host's disk.
func TestUnpackSparseFileStaysSparse(t *testing.T) {
	const size = 256 << 20
	layer, _ := unpackSandbox(t)
	if err := unpackTar(context.Background(), bytes.NewReader(sparseTar("big", size, "data")), layer); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(layer, "big")
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size {
		t.Errorf("size %d, want %d", st.Size, size)
	}
	if used := st.Blocks * 512; used > 1<<20 {
		t.Errorf("the file takes %d bytes of disk for 4 bytes of data", used)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 8)
	if _, err := f.ReadAt(head, 0); err != nil || string(head) != "data\x00\x00\x00\x00" {
		t.Errorf("file starts %q (%v), want the data then zeros", head, err)
	}
}

// A sparse entry larger than any file the filesystem can hold fails at
// once, and a caller's deadline stops one that would take long to expand;
// neither leaves more than its data on disk.
func TestUnpackHugeSparseFile(t *testing.T) {
	for _, size := range []int64{1 << 62, 1 << 43} {
		layer, _ := unpackSandbox(t)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := unpackTar(ctx, bytes.NewReader(sparseTar("huge", size, "data")), layer)
		cancel()
		if !errors.Is(err, unix.EFBIG) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("unpacking a file of %d bytes: %v, want EFBIG or the deadline's error", size, err)
		}
		var st unix.Stat_t
		if unix.Stat(filepath.Join(layer, "huge"), &st) == nil && st.Blocks*512 > 1<<20 {
			t.Errorf("a file of %d bytes takes %d bytes of disk for 4 bytes of data", size, st.Blocks*512)
		}
	}
}
