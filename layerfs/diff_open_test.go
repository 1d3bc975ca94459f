package layerfs

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A running sandbox can swap a file of its writable layer for a device
// after the diff has looked at it: writeFile refuses what is not a
// regular file without opening it. Opening this device, which no driver
// answers, would fail with ENXIO.
func TestWriteFileNeverOpensADevice(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mknod(filepath.Join(dir, "swapped"), unix.S_IFCHR|0o600, int(unix.Mkdev(0, 0))); err != nil {
		t.Fatal(err)
	}
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirfd)
	w := newTreeWriter(context.Background(), io.Discard, dir, nil)
	err = w.writeFile(dirfd, "swapped", "swapped")
	if err == nil || errors.Is(err, unix.ENXIO) || !strings.Contains(err.Error(), "changed type") {
		t.Errorf("got %v, want the device refused unopened", err)
	}
}
