package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// berth runs the command line in-process against a store of the test's.
func berth(t *testing.T, root string, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"--root", root}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestImageCommands(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("must run as root: importing writes whiteout devices and overlay xattrs")
	}
	root := t.TempDir()
	alpine, _ := filepath.Abs("../../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz")
	busybox, _ := filepath.Abs("../../../shared/images/busybox-1.38-musl-oci")

	out, err := berth(t, root, "image", "import", alpine, "--name", "alpine:test")
	if err != nil || !strings.Contains(out, "alpine:test") {
		t.Fatalf("import: %q, %v", out, err)
	}
	if _, err := berth(t, root, "image", "import", busybox); err != nil {
		t.Fatal(err)
	}
	out, err = berth(t, root, "image", "ls")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(out, "alpine:test") || !strings.Contains(out, "busybox:1.38.0-musl") {
		t.Errorf("ls:\n%s", out)
	}

	out, err = berth(t, root, "image", "inspect", "busybox:1.38.0-musl")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Digest string
		Config struct{ Config struct{ Cmd []string } }
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Digest != "sha256:a34ce92094b7b100a98fbd21411a92825f6827b1bc5f6918c253516c90556998" || len(v.Config.Config.Cmd) != 1 {
		t.Errorf("inspect: %v %+v\n%s", err, v, out)
	}

	for _, format := range []string{"oci", "docker"} {
		p := filepath.Join(t.TempDir(), "x.tar")
		if _, err := berth(t, root, "image", "export", "alpine:test", p, "--format", format); err != nil {
			t.Fatalf("export %s: %v", format, err)
		}
		out, err := berth(t, t.TempDir(), "image", "import", p)
		if err != nil || !strings.Contains(out, "alpine:test") {
			t.Errorf("import of %s export: %q %v", format, out, err)
		}
	}
	dir := t.TempDir()
	if _, err := berth(t, root, "image", "export", "alpine:test", dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		t.Error("export to a directory wrote no OCI layout:", err)
	}

	if _, err := berth(t, root, "image", "tag", "alpine:test", "alpine:other"); err != nil {
		t.Fatal(err)
	}
	if _, err := berth(t, root, "image", "rm", "alpine:test", "alpine:other"); err != nil {
		t.Fatal(err)
	}
	out, err = berth(t, root, "image", "gc")
	if err != nil || !strings.HasPrefix(out, "removed 3 blobs and 1 layers") {
		t.Errorf("gc: %q %v", out, err)
	}
}

func TestImageCommandErrors(t *testing.T) {
	root := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"image", "inspect", "nope:1"}, `image "nope:1": not found`},
		{[]string{"image", "inspect", "Bad"}, "invalid image reference"},
		{[]string{"image", "import", "/does/not/exist"}, "no such file or directory"},
		{[]string{"image", "import", "/etc/hostname"}, "unknown image format"},
		{[]string{"image", "export", "x", "/tmp/x", "--format", "zip"}, `--format "zip"`},
		{[]string{"image", "import"}, "accepts 1 arg"},
	} {
		_, err := berth(t, root, tc.args...)
		if err == nil || !strings.Contains(err.Error(), strings.TrimSuffix(tc.want, ": ")) || strings.Contains(err.Error(), "\n") {
			t.Errorf("berth %v: %v, want one line containing %q", tc.args, err, tc.want)
		}
	}
}
