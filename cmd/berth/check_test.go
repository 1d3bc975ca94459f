package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImageCheck requires berth image check to pass a sound store and to
// fail, naming what is wrong, on one with a changed file in an unpacked
// layer (with --layers only), one with a sandbox's rootfs that no sandbox
// owns, and one with a flipped byte in a blob.
func TestImageCheck(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("must run as root: importing writes whiteout devices and overlay xattrs")
	}
	root := t.TempDir()
	alpine, _ := filepath.Abs("../../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz")
	if _, err := berth(t, root, "image", "import", alpine, "--name", "alpine:test"); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	if out, err := berth(t, root, "--state", state, "image", "check", "--layers"); err != nil || out != "" {
		t.Fatalf("check of a sound store: %v\n%s", err, out)
	}
	// A file changed in the unpacked layer, which only --layers sees.
	hostname, err := filepath.Glob(filepath.Join(root, "layers", "*", "diff", "etc", "hostname"))
	if err != nil || len(hostname) != 1 {
		t.Fatalf("no /etc/hostname in the unpacked layer: %v", err)
	}
	if err := os.WriteFile(hostname[0], []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := berth(t, root, "--state", state, "image", "check"); err != nil || out != "" {
		t.Fatalf("check without --layers of a store whose unpacked layer changed: %v\n%s", err, out)
	}
	out, err := berth(t, root, "--state", state, "image", "check", "--layers")
	if !errors.Is(err, errStoreDamaged) || !strings.Contains(out, "/etc/hostname: size") {
		t.Fatalf("check --layers of a store whose unpacked layer changed: %v\n%s", err, out)
	}
	if err := os.Remove(hostname[0]); err != nil {
		t.Fatal(err)
	}

	// A rootfs with a sound record, which a sandbox in state would own.
	rootfs := filepath.Join(root, "rootfs", "sandbox-0123456789abcdef")
	if err := os.Mkdir(rootfs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "rootfs.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = berth(t, root, "--state", state, "image", "check")
	if !errors.Is(err, errStoreDamaged) || !strings.Contains(out, "stray rootfs: "+rootfs) {
		t.Errorf("check of a store with a stray rootfs: %v\n%s", err, out)
	}
	if err := os.Mkdir(filepath.Join(state, "0123456789abcdef"), 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := berth(t, root, "--state", state, "image", "check"); err != nil || out != "" {
		t.Fatalf("check of a store whose rootfs a sandbox owns: %v\n%s", err, out)
	}

	blobs, err := filepath.Glob(filepath.Join(root, "blobs", "sha256", "*"))
	if err != nil || len(blobs) == 0 {
		t.Fatalf("no blobs in the store: %v", err)
	}
	b, err := os.ReadFile(blobs[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(blobs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = berth(t, root, "--state", state, "image", "check")
	if !errors.Is(err, errStoreDamaged) || !strings.Contains(out, "corrupt blob: "+blobs[0]) {
		t.Errorf("check of a store with a flipped byte in %s: %v\n%s", blobs[0], err, out)
	}
}
