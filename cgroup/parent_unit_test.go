//go:build linux

package cgroup

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A parent path is checked before anything is touched: whatever escapes
// the hierarchy, names its root or could be read two ways is refused.
func TestParentPaths(t *testing.T) {
	good := map[string]string{
		"berth":                               "berth",
		"/berth":                              "berth",
		"a/b/c":                               "a/b/c",
		"/system.slice/ci.service":            "system.slice/ci.service",
		"user.slice/user@1000.service/berth":  "user.slice/user@1000.service/berth",
		strings.Repeat("a/", 31) + "b":        strings.Repeat("a/", 31) + "b",
		"system.slice/ci.service/berth-1.2_3": "system.slice/ci.service/berth-1.2_3",
	}
	for in, want := range good {
		got, err := cleanParent(in)
		if err != nil || got != want {
			t.Errorf("cleanParent(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := map[string]string{
		"/":                             "root",
		"//":                            "empty path element",
		"a//b":                          "empty path element",
		"a/b/":                          "empty path element",
		"//a":                           "empty path element",
		"..":                            `".."`,
		"../../etc":                     `".."`,
		"a/../../b":                     `".."`,
		"a/./b":                         `"."`,
		"a/.hidden":                     `".hidden"`,
		"a/-x":                          `"-x"`,
		"a b":                           `"a b"`,
		"a/b\nc":                        `"b\nc"`,
		"a\x00":                         `"a\x00"`,
		"é":                             `"é"`,
		strings.Repeat("a/", 32) + "b":  "deeper than 32 levels",
		strings.Repeat("x", 2049):       "longer than",
		"a/" + strings.Repeat("x", 256): "must match",
	}
	for in, why := range bad {
		_, err := cleanParent(in)
		if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), why) {
			t.Errorf("cleanParent(%q) = %v, want ErrInvalidName saying %s", in, err, why)
		}
		if _, err := NewManager(Options{Parent: in}); !errors.Is(err, ErrInvalidName) {
			t.Errorf("NewManager with parent %q: %v, want ErrInvalidName", in, err)
		}
	}
}

// fakeV2Tree lays out plain directories like a v2 hierarchy whose root
// gives its children cpu and pids, with the path a/b below it. On this
// host no real cgroup2 cgroup has controllers, so this is where the walk
// down the path can be seen.
func fakeV2Tree(t *testing.T) (root string, m *Manager) {
	t.Helper()
	root = t.TempDir()
	for _, rel := range []string{".", "a", "a/b"} {
		dir := filepath.Join(root, rel)
		os.MkdirAll(dir, 0o755)
		for name, content := range map[string]string{
			"cgroup.controllers":     "cpu pids",
			"cgroup.subtree_control": "",
			"cgroup.procs":           "",
		} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root, &Manager{mode: V2, parent: "a/b", unified: root, v2want: v2Controllers, log: slog.New(slog.DiscardHandler)}
}

// Controllers are enabled at every level of the path, never at the root.
func TestParentEnablesControllersDownThePath(t *testing.T) {
	root, m := fakeV2Tree(t)
	if err := m.prepareParent(); err != nil {
		t.Fatal(err)
	}
	// A plain file keeps only the last write: one per controller.
	for _, rel := range []string{"a", "a/b"} {
		if got := readTrimmed(t, filepath.Join(root, rel, "cgroup.subtree_control")); got != "+pids" {
			t.Errorf("%s/cgroup.subtree_control = %q, want the last of +cpu, +pids", rel, got)
		}
	}
	if got := readTrimmed(t, filepath.Join(root, "cgroup.subtree_control")); got != "" {
		t.Errorf("the root's cgroup.subtree_control was written: %q", got)
	}
}

// A level of the path that holds processes is an error that says so, and
// nothing is enabled below it.
func TestParentWithProcesses(t *testing.T) {
	root, m := fakeV2Tree(t)
	if err := os.WriteFile(filepath.Join(root, "a", "cgroup.procs"), []byte("4242\n4243\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.parent = "a/b/new" // made, then undone
	err := m.prepareParent()
	if _, serr := os.Stat(filepath.Join(root, "a/b/new")); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("the refused parent's new directory is still there (stat: %v)", serr)
	}
	if !errors.Is(err, ErrParentHasProcesses) || !strings.Contains(err.Error(), filepath.Join(root, "a")+" holds 2 processes,") {
		t.Fatalf("prepareParent = %v, want ErrParentHasProcesses naming %s/a", err, root)
	}
	if strings.Contains(err.Error(), "berth's own") {
		t.Errorf("blames berth for processes not its own: %v", err)
	}
	for _, rel := range []string{"a", "a/b"} {
		if got := readTrimmed(t, filepath.Join(root, rel, "cgroup.subtree_control")); got != "" {
			t.Errorf("%s/cgroup.subtree_control = %q after the refusal", rel, got)
		}
	}

	// Run from inside the parent, as from a systemd service without
	// DelegateSubgroup=, berth says it is one of them.
	if err := os.WriteFile(filepath.Join(root, "a", "cgroup.procs"), fmt.Appendf(nil, "1\n%d\n", os.Getpid()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.prepareParent(); !errors.Is(err, ErrParentHasProcesses) || !strings.Contains(err.Error(), "holds 2 processes, berth's own among them") {
		t.Errorf("prepareParent with berth in the parent = %v", err)
	}
}
