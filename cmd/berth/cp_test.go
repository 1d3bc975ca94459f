package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCopyCommand copies in and out of a `berth run` sandbox, as files
// and as tar streams on stdin and stdout.
func TestCopyCommand(t *testing.T) {
	e := newCLIEnv(t)
	run := func(args ...string) (string, string, int) { return berthExit(t, e.root, e.args(args...)...) }
	done := make(chan error, 1)
	go func() {
		_, err := berth(t, e.root, e.args("run", "alpine:test", "sh", "-c", "echo inside > /f; ln -s /etc/shadow /out; exec sleep 100")...)
		done <- err
	}()
	var id string
	for deadline := time.Now().Add(10 * time.Second); id == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, _, _ := run("ps")
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) == 2 && strings.Contains(lines[1], " Up ") {
			if _, _, code := run("exec", strings.Fields(lines[1])[0], "test", "-L", "/out"); code == 0 {
				id = strings.Fields(lines[1])[0]
			}
		}
	}
	if id == "" {
		t.Fatal("the sandbox never ran")
	}
	defer func() {
		run("kill", id)
		<-done
	}()
	host := t.TempDir()

	if _, stderr, code := run("cp", id[:6]+":/f", filepath.Join(host, "f")); code != 0 {
		t.Fatalf("cp out: %s", stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(host, "f")); string(b) != "inside\n" {
		t.Errorf("cp out: %q", b)
	}
	if _, stderr, code := run("cp", id+":/out", host); code != 0 {
		t.Fatalf("cp a link out: %s", stderr)
	}
	if l, err := os.Readlink(filepath.Join(host, "out")); err != nil || l != "/etc/shadow" {
		t.Errorf("cp a link out: %q %v", l, err)
	}
	os.WriteFile(filepath.Join(host, "g"), []byte("from the host\n"), 0o644)
	if _, stderr, code := run("cp", filepath.Join(host, "g"), id+":/out"); code != 0 {
		t.Fatalf("cp in: %s", stderr)
	}
	if out, _, _ := run("exec", id, "cat", "/out"); out != "from the host\n" {
		t.Errorf("cp in over a link: %q", out)
	}

	// Tar streams: out on stdout, in on stdin.
	var tarOut, errOut bytes.Buffer
	if code := execute(context.Background(), append([]string{"--root", e.root}, e.args("cp", id+":/etc", "-")...), strings.NewReader(""), &tarOut, &errOut); code != 0 {
		t.Fatalf("cp to -: %s", errOut.String())
	}
	names := map[string]bool{}
	tr := tar.NewReader(bytes.NewReader(tarOut.Bytes()))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = true
	}
	if !names["etc/"] || !names["etc/passwd"] {
		t.Errorf("cp to - wrote %d entries, without etc/passwd", len(names))
	}
	errOut.Reset()
	if code := execute(context.Background(), append([]string{"--root", e.root}, e.args("cp", "-", id+":/tmp")...), bytes.NewReader(tarOut.Bytes()), io.Discard, &errOut); code != 0 {
		t.Fatalf("cp from -: %s", errOut.String())
	}
	if _, stderr, code := run("exec", id, "diff", "/etc/passwd", "/tmp/etc/passwd"); code != 0 {
		t.Errorf("cp from -: %s", stderr)
	}

	for _, args := range [][]string{
		{"cp", filepath.Join(host, "f"), filepath.Join(host, "h")},
		{"cp", id + ":/f", id + ":/g"},
		{"cp", id + ":", host},
	} {
		if _, stderr, code := run(args...); code != 125 || stderr == "" {
			t.Errorf("%q: exit %d, %q", args, code, stderr)
		}
	}
}

// TestCopyOutToTerminal refuses to write a sandbox's tar stream to a
// terminal, which would take the workload's bytes for its controls.
func TestCopyOutToTerminal(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skip(err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pts.Close()
	var errOut bytes.Buffer
	code := execute(context.Background(), []string{"--root", t.TempDir(), "cp", "abcdef:/etc", "-"}, strings.NewReader(""), pts, &errOut)
	if code != 125 || !strings.Contains(errOut.String(), "terminal") {
		t.Errorf("cp to - on a terminal: exit %d, %q", code, errOut.String())
	}
}
