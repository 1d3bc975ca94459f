package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// buildBerth returns the berth command, built for the tests to run as
// users do: its exit status is main's. It is built once per test binary
// (berthBinary): even from the build cache, a build links for about two
// seconds, and some twenty tests want one.
func buildBerth(t *testing.T) string {
	t.Helper()
	bin, err := berthBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// berthBinaryDir holds the berth that berthBinary built; TestMain removes
// it once the tests are done.
var berthBinaryDir string

var berthBinary = sync.OnceValues(func() (string, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	if berthBinaryDir, err = os.MkdirTemp("", "berth-test-bin-"); err != nil {
		return "", err
	}
	bin := filepath.Join(berthBinaryDir, "berth")
	if out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if berthBinaryDir != "" {
		os.RemoveAll(berthBinaryDir)
	}
	os.Exit(code)
}

// Flags and options that make no sense exit 125, as every failure before
// the workload starts does, with one line that says what is wrong, and
// leave nothing behind.
func TestRunRefusesNonsense(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("must run as root: importing writes whiteout devices and overlay xattrs")
	}
	bin := buildBerth(t)
	root := t.TempDir()
	state := filepath.Join(root, "state")
	parent := fmt.Sprintf("berth-clivalidate-%d", os.Getpid())
	alpine, _ := filepath.Abs("../../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz")
	if _, err := berth(t, root, "image", "import", alpine, "--name", "alpine:test"); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(root, "empty.json")
	if err := os.WriteFile(empty, []byte(`{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}`), 0o644); err != nil {
		t.Fatal(err)
	}
	g := []string{"--root", root, "--state", state, "--cgroup-parent", parent}
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"-m", "1"}, "MemoryMax 1 is too small: a sandbox needs at least 1048576 bytes (1 MiB)"},
		{[]string{"-m", "100k"}, "MemoryMax 102400 is too small"},
		{[]string{"-m", "99999999999g"}, `--memory: size "99999999999g" is too large (the most is 9223372036854775807 bytes`},
		{[]string{"-m", "-1"}, `--memory: "-1": want a size such as 64m`},
		{[]string{"--memory-swap", "1g"}, "MemorySwapMax 1073741824 needs a positive MemoryMax"},
		{[]string{"--timeout", "-1s"}, "--timeout -1s: want a positive duration"},
		{[]string{"--timeout", "5"}, `invalid argument "5" for "--timeout" flag`},
		{[]string{"--stop-timeout", "-1"}, "--stop-timeout -1: want a number of seconds, 0 to 9223372036"},
		{[]string{"--stop-timeout", "10000000000"}, "--stop-timeout 10000000000: want a number of seconds, 0 to 9223372036"},
		{[]string{"--cpus", "1000"}, fmt.Sprintf("1000 CPUs: want 0.01 to %d (the host's CPUs)", runtime.NumCPU())},
		{[]string{"--pids-limit", "-5"}, "PidsMax -5"},
		{[]string{"--pids-limit", "1"}, "PidsMax 1 is too small"},
		{[]string{"--disk", "1k"}, "--disk 1k: want a size of at least 1m"},
		{[]string{"-e", "=value"}, `-e "=value": want KEY=VALUE or KEY`},
		{[]string{"-v", "/tmp:/proc"}, "destination /proc: the sandbox's own /proc goes there"},
		{[]string{"-v", "/tmp:/sys/fs/cgroup"}, "destination /sys/fs/cgroup is under /sys"},
		{[]string{"-v", "/tmp:/mnt/../proc"}, `destination "/mnt/../proc" contains ".."`},
		{[]string{"-v", "/tmp:mnt"}, `destination "mnt" is not an absolute path`},
		{[]string{"--tmpfs", "/dev"}, "destination /dev: the sandbox's own /dev goes there"},
		{[]string{"--hostname", "a b"}, "a host name has only letters"},
		{[]string{"--hostname", strings.Repeat("h", 5000)}, "(5000 bytes) is longer than 64 bytes"},
		{[]string{"-w", "tmp"}, `Dir: "tmp" is not an absolute path`},
		{[]string{"--seccomp", empty}, "the seccomp profile lets no program start: it refuses execve"},
	} {
		args := append(append(append([]string{}, g...), "run"), c.flags...)
		args = append(args, "alpine:test", "echo", "ran")
		out, err := exec.Command(bin, args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 125 {
			t.Errorf("run %q: %v, want exit status 125; output %q", c.flags, err, out)
			continue
		}
		msg := string(out)
		if c.flags[0] == "--seccomp" && !strings.HasPrefix(msg, "berth: --seccomp "+empty+": ") {
			t.Errorf("run %q said %q, which does not name the profile first", c.flags, msg)
		}
		if !strings.HasPrefix(msg, "berth: ") || !strings.Contains(msg, c.want) || strings.Count(msg, "\n") != 1 || len(msg) > 300 {
			t.Errorf("run %q said %q, want one short line containing %q", c.flags, msg, c.want)
		}
	}
	// Nothing of the refused sandboxes is left.
	if entries, err := os.ReadDir(state); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Error(err)
	} else {
		for _, e := range entries {
			if e.Name() != "seccomp" && e.Name() != ".lock" { // the compiled programs, and the lock ordering starts before gc's survey
				t.Errorf("left in the state directory: %s", e.Name())
			}
		}
	}
	for _, dir := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(dir, parent)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cgroup parent %s left in %s (stat: %v)", parent, dir, err)
		}
	}
	// What is sound still runs.
	sound := append(append([]string{}, g...), "run", "-m", "4m", "--pids-limit", "2", "-e", "A=", "--timeout", "1m",
		"-v", "/etc/hostname:/proc/uptime:ro", "alpine:test", "sh", "-c", "echo ran")
	out, err := exec.Command(bin, sound...).CombinedOutput()
	if err != nil || string(out) != "ran\n" {
		t.Errorf("a sound run: %v, %q", err, out)
	}
}
