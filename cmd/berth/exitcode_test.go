package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/sandbox"
)

// berthExit runs the command line in-process as main does, exit status
// included, against a store of the test's.
func berthExit(t *testing.T, root string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = execute(context.Background(), append([]string{"--root", root}, args...), strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), code
}

// cliEnv is a store holding alpine:test, a state directory and a cgroup
// parent of the test's own, and the global flags that name them.
type cliEnv struct {
	root, state string
	flags       []string
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("must run as root: it runs sandboxes")
	}
	root := t.TempDir()
	e := &cliEnv{root: root, state: filepath.Join(root, "state")}
	e.flags = []string{"--state", e.state, "--cgroup-parent", fmt.Sprintf("berth-clitest-%d", os.Getpid())}
	alpine, _ := filepath.Abs("../../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz")
	if _, err := berth(t, root, "image", "import", alpine, "--name", "alpine:test"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := berth(t, root, append(e.flags, "gc")...); err != nil {
			t.Errorf("gc: %v\n%s", err, out)
		}
	})
	return e
}

func (e *cliEnv) args(args ...string) []string {
	return append(append([]string(nil), e.flags...), args...)
}

// Status 1 is the workload's: whatever stops a sandbox from being made
// exits 125, and the sandbox package says so with ErrSetup where it found
// the failure, so that embedders can tell as well.
func TestExitCodes(t *testing.T) {
	e := newCLIEnv(t)

	// A state directory on a full filesystem: the record cannot be
	// written.
	full := t.TempDir()
	if err := unix.Mount("tmpfs", full, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(full, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(full, "filler"), make([]byte, 128<<10), 0o600); err == nil || !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("filling the tmpfs: %v", err)
	}

	for _, c := range []struct {
		name     string
		args     []string
		code     int
		setupErr bool   // the sandbox package's error wraps ErrSetup
		stderr   string // what the message must say
	}{
		{"workload exits 1", e.args("run", "alpine:test", "sh", "-c", "exit 1"), 1, false, ""},
		{"workload exits 7", e.args("run", "alpine:test", "sh", "-c", "exit 7"), 7, false, ""},
		{"no such program", e.args("run", "alpine:test", "nosuchprog"), 127, false, "nosuchprog"},
		{"program not executable", e.args("run", "alpine:test", "/etc/passwd"), 126, false, "permission denied"},

		{"missing image", e.args("run", "nope:1", "true"), 125, true, `image "nope:1" not found in the store; berth pull nope:1 gets it`},
		{"unknown user", e.args("run", "-u", "nobodyx", "alpine:test", "true"), 125, true, `"nobodyx"`},
		{"missing volume source", e.args("run", "-v", "/does/not/exist:/x", "alpine:test", "true"), 125, true, "/does/not/exist"},
		{"bad volume name", e.args("run", "-v", "bad..name!:/x", "alpine:test", "true"), 125, true, "volume name"},
		{"unknown network", e.args("run", "--net", "nonet", "alpine:test", "true"), 125, false, "nonet"},
		{"bad -v", e.args("run", "-v", "nocolon", "alpine:test", "true"), 125, false, "SRC:DST"},
		{"bad preset", e.args("run", "--security", "bogus", "alpine:test", "true"), 125, false, "bogus"},
		{"bad -m", e.args("run", "-m", "lots", "alpine:test", "true"), 125, false, "--memory"},
		{"exec in no sandbox", e.args("exec", "abcdef", "true"), 125, false, "no such sandbox"},

		// Commands that run no workload keep 1 for their failures.
		{"inspect missing image", e.args("image", "inspect", "nope:1"), 1, false, "not found"},
		{"kill no sandbox", e.args("kill", "abcdef"), 1, false, "no such sandbox"},
	} {
		_, stderr, code := berthExit(t, e.root, c.args...)
		if code != c.code || !strings.Contains(stderr, c.stderr) {
			t.Errorf("%s: berth %s: exit %d, stderr %q; want %d and %q", c.name, strings.Join(c.args[len(e.flags):], " "), code, stderr, c.code, c.stderr)
		}
		if c.setupErr {
			if _, err := berth(t, e.root, c.args...); !errors.Is(err, sandbox.ErrSetup) {
				t.Errorf("%s: %v does not wrap sandbox.ErrSetup", c.name, err)
			}
		}
	}

	// The full state directory, apart: its flags come first.
	args := []string{"--state", full, "--cgroup-parent", e.flags[3], "run", "alpine:test", "true"}
	_, stderr, code := berthExit(t, e.root, args...)
	if code != 125 || !strings.Contains(stderr, "no space left on device") {
		t.Errorf("run with a full state directory: exit %d, %q; want 125 and ENOSPC", code, stderr)
	}
	if _, err := berth(t, e.root, args...); !errors.Is(err, sandbox.ErrSetup) || !errors.Is(err, unix.ENOSPC) {
		t.Errorf("run with a full state directory: %v does not wrap both ErrSetup and ENOSPC", err)
	}
}

// TestHelperMain is not a test: run by TestMainExitStatus as a process of
// its own, it is berth's main, with the arguments after "--".
func TestHelperMain(t *testing.T) {
	if os.Getenv("BERTH_TEST_MAIN") == "" {
		t.Skip("run as berth's main by TestMainExitStatus")
	}
	for i, a := range os.Args {
		if a == "--" {
			os.Args = append([]string{"berth"}, os.Args[i+1:]...)
			break
		}
	}
	main()
	os.Exit(0)
}

// main exits with what execute says, in a process of its own.
func TestMainExitStatus(t *testing.T) {
	e := newCLIEnv(t)
	for _, c := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"bogus"}, 125, `unknown command "bogus"`},
		{e.args("run", "nope:1", "true"), 125, "not found"},
		{e.args("run", "alpine:test", "sh", "-c", "echo out; exit 3"), 3, ""},
		{e.args("run", "alpine:test", "sh", "-c", "exit 1"), 1, ""},
		{e.args("image", "inspect", "nope:1"), 1, "not found"},
		{e.args("image", "ls"), 0, ""},
	} {
		cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestHelperMain$", "--", "--root", e.root}, c.args...)...)
		cmd.Env = append(os.Environ(), "BERTH_TEST_MAIN=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code || !strings.Contains(stderr.String(), c.stderr) {
			t.Errorf("berth %s: exit %d, stderr %q; want %d and %q", strings.Join(c.args, " "), code, stderr.String(), c.code, c.stderr)
		}
	}
}
