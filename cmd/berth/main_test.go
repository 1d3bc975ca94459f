package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

func TestRunCommands(t *testing.T) {
	root := t.TempDir()
	state := filepath.Join(root, "state")
	parent := fmt.Sprintf("berth-clitest-%d", os.Getpid())
	alpine, _ := filepath.Abs("../../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz")
	g := []string{"--state", state, "--cgroup-parent", parent}
	if _, err := berth(t, root, "image", "import", alpine, "--name", "alpine:test"); err != nil {
		t.Fatal(err)
	}
	defer berth(t, root, append(g, "gc")...)

	out, err := berth(t, root, append(g, "run", "-e", "A=1", "-w", "/tmp", "-u", "nobody", "--hostname", "h", "alpine:test", "sh", "-c", "echo $A $(pwd) $(id -u) $(hostname)")...)
	if err != nil || out != "1 /tmp 65534 h\n" {
		t.Errorf("run: %q %v", out, err)
	}
	_, err = berth(t, root, append(g, "run", "alpine:test", "sh", "-c", "exit 7")...)
	var ee exitError
	if !errors.As(err, &ee) || ee != 7 {
		t.Errorf("exit 7: %v", err)
	}
	out, err = berth(t, root, append(g, "run", "-m", "32m", "alpine:test", "tail", "/dev/zero")...)
	if !errors.As(err, &ee) || ee != 137 || !strings.Contains(out, "OOM-killed") {
		t.Errorf("OOM: %q %v", out, err)
	}
	out, err = berth(t, root, append(g, "run", "--disk", "4m", "alpine:test", "sh", "-c", "dd if=/dev/zero of=/big bs=64k count=192 2>&1 | grep -c 'No space left'")...)
	if err != nil || out != "1\n" {
		t.Errorf("run --disk 4m writing 12m: %q %v", out, err)
	}
	if _, err := berth(t, root, append(g, "run", "--disk", "1k", "alpine:test", "true")...); err == nil || !strings.Contains(err.Error(), "--disk") {
		t.Errorf("bad --disk: %v", err)
	}
	cmd := newRootCommand()
	var buf bytes.Buffer
	cmd.SetOut(&buf)
	cmd.SetIn(strings.NewReader("piped\n"))
	cmd.SetArgs(append([]string{"--root", root}, append(g, "run", "-i", "alpine:test", "cat")...))
	if err := cmd.ExecuteContext(context.Background()); err != nil || buf.String() != "piped\n" {
		t.Errorf("run -i: %q %v", buf.String(), err)
	}
	// `berth run ... > job.log`: the workload writes to the log through
	// a pipe and cannot truncate what the host wrote there before.
	log, err := os.OpenFile(filepath.Join(t.TempDir(), "job.log"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	log.WriteString("host line\n")
	cmd = newRootCommand()
	cmd.SetOut(log)
	cmd.SetArgs(append([]string{"--root", root}, append(g, "run", "alpine:test", "sh", "-c", "stat -L -c %F /proc/self/fd/1; truncate -s 0 /proc/self/fd/1 2>/dev/null; echo done")...))
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Errorf("run > job.log: %v", err)
	}
	if b, _ := os.ReadFile(log.Name()); string(b) != "host line\nfifo\ndone\n" {
		t.Errorf("run > job.log: the log holds %q", b)
	}
	if _, err := berth(t, root, append(g, "run", "-v", "nocolon", "alpine:test", "true")...); err == nil || !strings.Contains(err.Error(), "SRC:DST") {
		t.Errorf("bad -v: %v", err)
	}

	// A sandbox in the background, seen by ps, joined by exec, ended by kill.
	done := make(chan error, 1)
	go func() {
		_, err := berth(t, root, append(g, "run", "alpine:test", "sleep", "100")...)
		done <- err
	}()
	var id string
	for deadline := time.Now().Add(10 * time.Second); id == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, _ := berth(t, root, append(g, "ps")...)
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) == 2 && strings.Contains(lines[1], " Up ") {
			id = strings.Fields(lines[1])[0]
		}
	}
	if id == "" {
		t.Fatal("ps never showed the sandbox")
	}
	out, err = berth(t, root, append(g, "exec", id, "sh", "-c", "ps -o comm | grep -c sleep")...)
	if err != nil || out != "1\n" {
		t.Errorf("exec: %q %v", out, err)
	}
	if _, err := berth(t, root, append(g, "kill", id)...); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.As(err, &ee) || ee != 137 {
		t.Errorf("killed run: %v", err)
	}
	out, _ = berth(t, root, append(g, "ps")...)
	if strings.Count(out, "\n") != 1 {
		t.Errorf("ps after kill:\n%s", out)
	}
}
