package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/sandbox"
)

func TestParseDevice(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want sandbox.Device
	}{
		{"/dev/fuse", sandbox.Device{Source: "/dev/fuse"}},
		{"/dev/fuse:/dev/f", sandbox.Device{Source: "/dev/fuse", Destination: "/dev/f"}},
		{"/dev/fuse:rw", sandbox.Device{Source: "/dev/fuse", Access: "rw"}},
		{"/dev/fuse:/dev/f:r", sandbox.Device{Source: "/dev/fuse", Destination: "/dev/f", Access: "r"}},
		{"/dev/fuse::m", sandbox.Device{Source: "/dev/fuse", Access: "m"}},
	} {
		got, err := parseDevice(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.in, d)
		}
	}
	for _, bad := range []string{"", ":/dev/x", "/dev/a:/dev/b:rw:x", "/dev/a:/dev/b:"} {
		if _, err := parseDevice(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// `berth run --device` passes a host device in; a bad one is an error
// before anything starts.
func TestRunDevice(t *testing.T) {
	root := t.TempDir()
	g := []string{"--state", filepath.Join(root, "state"), "--cgroup-parent", fmt.Sprintf("berth-clitest-%d-dev", os.Getpid())}
	alpine, _ := filepath.Abs("../../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz")
	if _, err := berth(t, root, "image", "import", alpine, "--name", "alpine:test"); err != nil {
		t.Fatal(err)
	}
	defer berth(t, root, append(g, "gc")...)

	out, err := berth(t, root, append(g, "run", "--device", "/dev/full:/dev/xfull", "alpine:test", "sh", "-c",
		"ls -l /dev/xfull | grep -c '1, *7'; echo x >/dev/xfull")...)
	var ee exitError
	if !errors.As(err, &ee) || !strings.HasPrefix(out, "1\n") || !strings.Contains(out, "No space left on device") {
		t.Errorf("--device /dev/full:/dev/xfull: %q %v", out, err)
	}
	for _, bad := range []string{"/etc/hostname:/dev/x", "/dev/full:/tmp/x", "/dev/full:/dev/x:rwx"} {
		_, err := berth(t, root, append(g, "run", "--device", bad, "alpine:test", "true")...)
		if !errors.Is(err, sandbox.ErrInvalidDevice) {
			t.Errorf("--device %s: %v, want ErrInvalidDevice", bad, err)
		}
	}
	// The state directory itself, not ReadStates, which skips a sandbox
	// whose record is missing or damaged; seccomp holds compiled programs.
	entries, err := os.ReadDir(filepath.Join(root, "state"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "seccomp" && e.Name() != ".lock" { // the compiled programs, and the lock ordering starts before gc's survey
			t.Errorf("left by refused runs in the state directory: %s", e.Name())
		}
	}
}
