package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/sandbox"
)

func TestVolumeCommands(t *testing.T) {
	e := newCLIEnv(t)
	run := func(args ...string) (string, string, int) { return berthExit(t, e.root, e.args(args...)...) }

	if out, stderr, code := run("volume", "create", "data"); code != 0 || out != "data\n" {
		t.Fatalf("create: %q %q %d", out, stderr, code)
	}
	if _, stderr, code := run("volume", "create", "data"); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Errorf("create again: %q %d", stderr, code)
	}
	if _, _, code := run("volume", "create", "spare"); code != 0 {
		t.Fatal("create spare")
	}

	// A sandbox that uses the volume, in the background.
	done := make(chan error, 1)
	go func() {
		_, err := berth(t, e.root, e.args("run", "-v", "data:/d", "alpine:test", "sh", "-c", "echo kept > /d/f; exec sleep 100")...)
		done <- err
	}()
	var id string
	for deadline := time.Now().Add(10 * time.Second); id == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, _, _ := run("ps")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		_, err := os.Stat(filepath.Join(e.root, "volumes", "data", "f"))
		if len(lines) == 2 && strings.Contains(lines[1], " Up ") && err == nil {
			id = strings.Fields(lines[1])[0]
		}
	}
	if id == "" {
		t.Fatal("the sandbox never ran")
	}

	out, _, code := run("volume", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[1], "data ") || !strings.HasSuffix(lines[1], id) || !strings.HasSuffix(lines[2], "-") {
		t.Errorf("ls while data is in use by %s:\n%s", id, out)
	}
	for _, args := range [][]string{{"volume", "rm", "data"}, {"volume", "rm", "-f", "data"}} {
		if _, stderr, code := run(args...); code != 1 || !strings.Contains(stderr, "volume in use by sandbox "+id) {
			t.Errorf("%s while in use: exit %d, %q", strings.Join(args, " "), code, stderr)
		}
	}
	if out, stderr, code := run("volume", "prune"); code != 0 || out != "spare\nremoved 1 volumes (4.0 KiB)\n" {
		t.Errorf("prune while data is in use: %q %q %d", out, stderr, code)
	}
	if b, err := os.ReadFile(filepath.Join(e.root, "volumes", "data", "f")); err != nil || string(b) != "kept\n" {
		t.Errorf("the volume in use lost its file: %q %v", b, err)
	}

	// A process exec cannot start is a setup failure too.
	if _, stderr, code := run("exec", "-u", "nobodyx", id, "true"); code != 125 || !strings.Contains(stderr, "nobodyx") {
		t.Errorf("exec as an unknown user: exit %d, %q", code, stderr)
	}
	if _, err := berth(t, e.root, e.args("exec", "-u", "nobodyx", id, "true")...); !errors.Is(err, sandbox.ErrSetup) {
		t.Errorf("exec as an unknown user: %v does not wrap ErrSetup", err)
	}
	if _, _, code := run("exec", id, "sh", "-c", "exit 3"); code != 3 {
		t.Errorf("exec's own status: %d, want 3", code)
	}

	// A record that cannot be read might name any volume: nothing is
	// removed while it is there.
	damaged := filepath.Join(e.state, "0000000000000000")
	if err := os.MkdirAll(damaged, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(damaged, "state.json"), []byte(`{"id": "00`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, code := run("volume", "create", "other"); code != 0 {
		t.Fatal("create other")
	}
	if _, stderr, code := run("volume", "rm", "other"); code != 1 || !strings.Contains(stderr, "cannot tell whether sandbox 0000000000000000 uses it") {
		t.Errorf("rm with a damaged record: exit %d, %q", code, stderr)
	}
	if out, _, code := run("volume", "prune"); code != 1 || !strings.HasPrefix(out, "removed 0 volumes") {
		t.Errorf("prune with a damaged record: exit %d, %q", code, out)
	}
	if err := os.RemoveAll(damaged); err != nil {
		t.Fatal(err)
	}

	if _, _, code := run("kill", id); code != 0 {
		t.Fatal("kill")
	}
	<-done
	if _, stderr, code := run("volume", "rm", "data", "other"); code != 0 {
		t.Errorf("rm once no sandbox uses them: exit %d, %q", code, stderr)
	}
	if _, stderr, code := run("volume", "rm", "data"); code != 1 || !strings.Contains(stderr, "volume data: not found") {
		t.Errorf("rm of a removed volume: exit %d, %q", code, stderr)
	}
	if _, _, code := run("volume", "rm", "-f", "data"); code != 0 {
		t.Errorf("rm -f of a removed volume: exit %d", code)
	}
	if out, _, _ := run("volume", "ls"); out != "NAME   SIZE   USED BY\n" {
		t.Errorf("ls at the end:\n%s", out)
	}
}
