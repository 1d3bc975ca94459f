package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// pluginDir makes a directory for plugins that only root can write, on a
// path only root can write, as berth requires of plugins (t.TempDir is
// under /tmp, which anyone can write to).
func pluginDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("must run as root: plugins must be root's")
	}
	dir, err := os.MkdirTemp("/run", "berth-clitest-plugins-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// buildPlugin builds the plugin whose main package is pkg (relative to
// this directory) into dir, as name.
func buildPlugin(t *testing.T, dir, name, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func writeScript(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 0\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// TestRunPluginFlagErrors: a mistake in the plugin flags is the command
// line's, exit status 125, with a message naming the flag and the
// problem, and no sandbox is made.
func TestRunPluginFlagErrors(t *testing.T) {
	e := newCLIEnv(t)
	dir := pluginDir(t)
	t.Setenv("BERTH_PLUGIN_DIR", dir)
	writeScript(t, filepath.Join(dir, "writable"), 0o777)
	writeScript(t, filepath.Join(dir, "not-a-plugin"), 0o755)
	long := strings.Repeat("x", 5000)
	for _, c := range []struct {
		name   string
		args   []string
		stderr string
	}{
		{"opt without plugin", []string{"--storage-opt", "size=1m"}, "--storage-opt needs --storage-plugin"},
		{"network opt without plugin", []string{"--network-opt", "subnet=10.0.0.0/24"}, "--network-opt needs --network-plugin"},
		{"opt without =", []string{"--storage-plugin", "not-a-plugin", "--storage-opt", "size"}, `--storage-opt "size": want KEY=VALUE`},
		{"opt without key", []string{"--storage-plugin", "not-a-plugin", "--storage-opt", "=1"}, `want KEY=VALUE`},
		{"opt twice", []string{"--storage-plugin", "not-a-plugin", "--storage-opt", "size=1m", "--storage-opt", "size=2m"}, `"size" given twice`},
		{"plugin and --net", []string{"--network-plugin", "not-a-plugin", "--net", "host"}, "--network-plugin and --net"},
		{"missing plugin", []string{"--storage-plugin", "nosuch"}, filepath.Join(dir, "nosuch") + ": no such file or directory"},
		{"untrusted plugin", []string{"--storage-plugin", "writable"}, "writable by group or others"},
		{"untrusted plugin by path", []string{"--network-plugin", filepath.Join(dir, "writable")}, "writable by group or others"},
		{"long name", []string{"--storage-plugin", long}, "bytes): file name too long"},
		{"not a plugin", []string{"--storage-plugin", "not-a-plugin"}, "--storage-plugin not-a-plugin: "},
	} {
		args := e.args(append(append([]string{"run"}, c.args...), "alpine:test", "true")...)
		_, stderr, code := berthExit(t, e.root, args...)
		if code != 125 || !strings.Contains(stderr, c.stderr) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s: exit %d, stderr %q; want 125 and one line with %q", c.name, code, stderr, c.stderr)
		}
	}
	if out, _ := berth(t, e.root, e.args("ps")...); strings.Count(out, "\n") != 1 {
		t.Errorf("sandboxes left by refused command lines:\n%s", out)
	}
}

// TestPluginList lists a plugins directory holding a plugin, a program
// that is not one, one anybody could replace, and one whose name is
// made to break the table and the terminal.
func TestPluginList(t *testing.T) {
	dir := pluginDir(t)
	buildPlugin(t, dir, "info", "../../plugin/testdata/infoplugin")
	writeScript(t, filepath.Join(dir, "not-a-plugin"), 0o755)
	writeScript(t, filepath.Join(dir, "writable"), 0o777)
	hostile := "evil\x1b[2J\tname" + strings.Repeat("y", 200)
	writeScript(t, filepath.Join(dir, hostile), 0o755)

	for _, args := range [][]string{{"plugin", "ls", "--dir", dir}, {"plugin", "ls"}} {
		t.Setenv("BERTH_PLUGIN_DIR", dir)
		stdout, stderr, code := berthExit(t, t.TempDir(), args...)
		if code != 0 {
			t.Fatalf("berth %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
		if len(lines) != 5 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[0], "KIND") || !strings.Contains(lines[0], "CAPABILITIES") {
			t.Fatalf("berth %s: want a header and 4 plugins:\n%s", strings.Join(args, " "), stdout)
		}
		// Sorted: "evil...", "info", "not-a-plugin", "writable".
		if f := strings.Fields(lines[2]); len(f) != 5 || f[0] != "info" || f[1] != "network" || f[2] != "1" || f[4] != "ports" {
			t.Errorf("the plugin's line: %q", lines[2])
		}
		if !strings.HasPrefix(lines[3], "not-a-plugin ") || !strings.Contains(lines[3], "error: ") {
			t.Errorf("a program that is no plugin: %q", lines[3])
		}
		if !strings.HasPrefix(lines[4], "writable ") || !strings.Contains(lines[4], "writable by group or others") {
			t.Errorf("a program anybody can replace: %q", lines[4])
		}
		if strings.ContainsAny(stdout, "\x1b") || !strings.HasPrefix(lines[1], `evil\x1b[2J name`) || len(lines[1]) > 400 {
			t.Errorf("a hostile name reached the table as it is: %q", lines[1])
		}
	}
}
