package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/berth-dev/berth/layerfs"
)

// bombLayer writes a zstd rootfs tarball of a few KiB holding one file of
// size bytes of zeros.
func bombLayer(t *testing.T, size int64) string {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "zeros", Size: size, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, 1<<20)
	for n := size; n > 0; n -= int64(len(zero)) {
		tw.Write(zero[:min(n, int64(len(zero)))])
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bomb.tar.zst")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestImageImportLimits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("must run as root: importing writes whiteout devices and overlay xattrs")
	}
	src := bombLayer(t, 8<<20)

	_, err := berth(t, t.TempDir(), "image", "import", "--max-size", "4m", src)
	if !errors.Is(err, layerfs.ErrImportTooLarge) || !strings.Contains(err.Error(), "4 MiB") || !strings.Contains(err.Error(), "--max-size") {
		t.Errorf("import of 8 MiB with --max-size 4m: %v, want %v naming 4 MiB and --max-size", err, layerfs.ErrImportTooLarge)
	}
	_, err = berth(t, t.TempDir(), "image", "import", "--max-files", "1", src)
	if err != nil {
		t.Errorf("import of one file with --max-files 1: %v", err)
	}
	for _, args := range [][]string{{"--max-size", "9m"}, {"--max-size", "-1"}, {}} {
		if _, err := berth(t, t.TempDir(), append(append([]string{"image", "import"}, args...), src)...); err != nil {
			t.Errorf("import of 8 MiB with %v: %v", args, err)
		}
	}
	for _, args := range [][]string{{"--max-size", "0"}, {"--max-size", "lots"}, {"--max-files", "-2"}} {
		_, err := berth(t, t.TempDir(), append(append([]string{"image", "import"}, args...), src)...)
		if err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("import with %v: %v, want an error naming %s", args, err, args[0])
		}
	}
}

// Limits that make no sense are usage errors, exit 125, naming the flag:
// none of them may quietly mean "no limit" or "the default".
func TestImageImportLimitFlagsAreUsageErrors(t *testing.T) {
	src := filepath.Join(t.TempDir(), "missing.tar") // never reached
	for _, args := range [][]string{
		{"--max-size", "-5"}, {"--max-size=-2"}, {"--max-size", "0"}, {"--max-size", "lots"},
		{"--max-files", "-5"}, {"--max-files=-2"}, {"--max-files", "0"},
	} {
		_, stderr, code := berthExit(t, t.TempDir(), append(append([]string{"image", "import"}, args...), src)...)
		flag, _, _ := strings.Cut(args[0], "=")
		if code != 125 || !strings.Contains(stderr, flag) || strings.Contains(stderr, "missing.tar") {
			t.Errorf("berth image import %s: exit %d, %q; want 125 naming %s", strings.Join(args, " "), code, stderr, flag)
		}
	}
}
