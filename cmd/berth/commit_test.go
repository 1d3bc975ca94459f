package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// `berth commit` saves a sandbox that another `berth run` runs, with
// --change applied; the new image runs with `berth run`.
func TestCommitCommand(t *testing.T) {
	root := t.TempDir()
	state := filepath.Join(root, "state")
	parent := fmt.Sprintf("berth-clitest-%d-commit", os.Getpid())
	alpine, _ := filepath.Abs("../../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz")
	g := []string{"--state", state, "--cgroup-parent", parent}
	if _, err := berth(t, root, "image", "import", alpine, "--name", "alpine:test"); err != nil {
		t.Fatal(err)
	}
	defer berth(t, root, append(g, "gc")...)

	done := make(chan error, 1)
	go func() {
		_, err := berth(t, root, append(g, "run", "alpine:test", "sh", "-c", "echo saved > /saved; rm /etc/motd; touch /ready; exec sleep 100")...)
		done <- err
	}()
	var id string
	for deadline := time.Now().Add(30 * time.Second); id == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, _ := berth(t, root, append(g, "ps")...)
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) == 2 && strings.Contains(lines[1], " Up ") {
			id = strings.Fields(lines[1])[0]
		}
	}
	if id == "" {
		t.Fatal("ps never showed the sandbox")
	}
	defer func() {
		berth(t, root, append(g, "kill", id)...)
		<-done
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := berth(t, root, append(g, "exec", id, "test", "-e", "/ready")...); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the workload never got ready")
		}
	}

	out, err := berth(t, root, append(g, "commit", "-a", "ann", "-m", "saved it",
		"-c", `CMD ["sh", "-c", "cat /saved; echo $MODE; test -e /etc/motd || echo motd-gone"]`, "--change", "ENV MODE=prod",
		id[:6], "alpine:committed")...)
	if err != nil {
		t.Fatalf("commit: %q %v", out, err)
	}
	if digest := strings.TrimSpace(out); !strings.HasPrefix(digest, "sha256:") {
		t.Errorf("commit printed %q, want the new image's digest", out)
	}
	out, err = berth(t, root, append(g, "run", "alpine:committed")...)
	if want := "saved\nprod\nmotd-gone\n"; err != nil || out != want {
		t.Errorf("run of the committed image: %q %v, want %q", out, err, want)
	}
	out, err = berth(t, root, "image", "inspect", "alpine:committed")
	if err != nil || !strings.Contains(out, `"author": "ann"`) || !strings.Contains(out, "saved it") {
		t.Errorf("inspect of the committed image shows no author or message:\n%s", out)
	}

	if _, err := berth(t, root, append(g, "commit", "-c", "RUN true", id, "x:1")...); err == nil || !strings.Contains(err.Error(), "RUN") {
		t.Errorf("commit --change RUN: %v, want an error naming RUN", err)
	}
	_, err = berth(t, root, append(g, "commit", "ffffffffffff", "x:1")...)
	if err == nil {
		t.Error("commit of no such sandbox: no error")
	}
	var ee exitError
	if errors.As(err, &ee) {
		t.Errorf("commit's failure took a workload's exit status: %v", err)
	}
}

// run --commit saves what a workload wrote once it has exited with status
// 0, and only then; the kept rootfs goes with the sandbox.
func TestRunCommit(t *testing.T) {
	root := t.TempDir()
	state := filepath.Join(root, "state")
	parent := fmt.Sprintf("berth-clitest-%d-runcommit", os.Getpid())
	alpine, _ := filepath.Abs("../../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz")
	g := []string{"--state", state, "--cgroup-parent", parent}
	if _, err := berth(t, root, "image", "import", alpine, "--name", "alpine:test"); err != nil {
		t.Fatal(err)
	}
	defer berth(t, root, append(g, "gc")...)

	out, err := berth(t, root, append(g, "run", "--commit", "alpine:set-up", "alpine:test", "sh", "-c", "echo ready > /set-up; rm /etc/motd")...)
	if err != nil || !strings.Contains(out, "committed sandbox") || !strings.Contains(out, "alpine:set-up (sha256:") {
		t.Fatalf("run --commit: %q %v", out, err)
	}
	out, err = berth(t, root, append(g, "run", "alpine:set-up", "sh", "-c", "cat /set-up; test -e /etc/motd || echo motd-gone")...)
	if want := "ready\nmotd-gone\n"; err != nil || out != want {
		t.Errorf("run of the committed image: %q %v, want %q", out, err, want)
	}

	out, err = berth(t, root, append(g, "run", "--commit", "alpine:failed", "alpine:test", "sh", "-c", "touch /x; exit 3")...)
	if code, ok := err.(exitError); !ok || int(code) != 3 || !strings.Contains(out, "not committed") {
		t.Errorf("run --commit of a failing workload: %q %v, want exit 3 and no commit", out, err)
	}
	if _, err := berth(t, root, "image", "inspect", "alpine:failed"); err == nil {
		t.Error("a failing workload's sandbox was committed")
	}
	if _, err := berth(t, root, append(g, "run", "--commit", "Not A Name", "alpine:test", "true")...); err == nil {
		t.Error("run --commit with a name that is not a reference succeeded")
	}

	// Nothing of the kept rootfses is left: no state, no rootfs.
	if out, _ := berth(t, root, append(g, "ps")...); strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("ps after the runs:\n%s", out)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "rootfs")); len(entries) != 0 {
		t.Errorf("rootfses left in the store: %v", entries)
	}
}
