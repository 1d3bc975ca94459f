//go:build linux

package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// foreignDir makes rel in every hierarchy of m, as a caller or an
// administrator would (without berth's mark). The directories are removed
// when the test ends, or earlier by the function returned.
func foreignDir(t *testing.T, m *Manager, rel string) (remove func()) {
	t.Helper()
	var dirs []string
	remove = func() {
		for _, dir := range dirs {
			if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
				t.Errorf("remove %s: %v", dir, err)
			}
		}
		dirs = nil
	}
	t.Cleanup(remove)
	for _, mnt := range m.mounts() {
		dir := filepath.Join(mnt, rel)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
	return remove
}

func gone(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s is still there (stat: %v)", dir, err)
	}
}

// A nested parent is made in every hierarchy below a directory the caller
// owns, holds processes at the right path, and goes when its last cgroup
// does, leaving the caller's directory; on the host's layout (v1
// controllers, hybrid here) and on a private cgroup2 mount.
func TestNestedParent(t *testing.T) {
	layouts := []struct {
		name string
		opts func(t *testing.T) Options
	}{
		{"host", func(*testing.T) Options { return Options{} }},
		{"v1", func(*testing.T) Options { return Options{Mode: V1} }},
		{"v2", func(t *testing.T) Options { return Options{Mode: V2, UnifiedMount: mountCgroup2(t)} }},
	}
	for _, layout := range layouts {
		t.Run(layout.name, func(t *testing.T) {
			requireRoot(t)
			opts := layout.opts(t)
			outer := fmt.Sprintf("%s-nest-%d", testParent, nameSeq.Add(1))
			opts.Parent, opts.Logger = "/"+outer+"/x/y", testLogger(t)
			m, err := NewManager(opts)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := m.Parent(), outer+"/x/y"; got != want {
				t.Errorf("Parent() = %q, want %q", got, want)
			}
			foreignDir(t, m, outer)

			c, err := m.Create(uniqueName(), nil)
			if err != nil {
				t.Fatal(err)
			}
			removed := false
			t.Cleanup(func() {
				if !removed {
					removeAndCheck(t, c)
					m.RemoveParent()
				}
			})
			for _, mnt := range m.mounts() {
				for rel, want := range map[string]string{
					outer:                      "",
					outer + "/x":               madeParent,
					outer + "/x/y":             madeParent,
					outer + "/x/y/" + c.Name(): madeCgroup,
				} {
					if got, err := madeBy(filepath.Join(mnt, rel)); err != nil || got != want {
						t.Errorf("mark of %s/%s = %q, %v; want %q", mnt, rel, got, err, want)
					}
				}
				if mnt == m.v1["cpuset"] {
					for _, rel := range []string{"x", "x/y", "x/y/" + c.Name()} {
						if cpus := readTrimmed(t, filepath.Join(mnt, outer, rel, "cpuset.cpus")); cpus == "" {
							t.Errorf("%s/%s has no cpuset.cpus", outer, rel)
						}
					}
				}
			}
			if m.mode == V2 {
				// What the root gives, berth passes down every level.
				rootGives, err := readFields(filepath.Join(m.unified, "cgroup.subtree_control"))
				if err != nil {
					t.Fatal(err)
				}
				for _, rel := range []string{outer, outer + "/x", outer + "/x/y"} {
					got, err := readFields(filepath.Join(m.unified, rel, "cgroup.subtree_control"))
					if err != nil {
						t.Fatal(err)
					}
					for _, ctrl := range m.v2want {
						if slices.Contains(rootGives, ctrl) && !slices.Contains(got, ctrl) {
							t.Errorf("%s does not give %s to its children: %v", rel, ctrl, got)
						}
					}
				}
			}

			ch := startChild(t, c, "exit 0", nil)
			if err := c.Add(ch.pid()); err != nil {
				t.Fatal(err)
			}
			checkMember(t, c, ch.pid())
			ch.release(t)
			ch.wait(t, 10*time.Second)

			// Someone else's directory in the parent is no sandbox.
			removeForeign := foreignDir(t, m, outer+"/x/y/not-berths")
			if names, err := m.List(); err != nil || !slices.Equal(names, []string{c.Name()}) {
				t.Errorf("List = %v, %v; want only %s", names, err, c.Name())
			}
			if err := m.RemoveParent(); !errors.Is(err, unix.EBUSY) {
				t.Errorf("RemoveParent with a cgroup in it = %v, want EBUSY", err)
			}
			removeForeign()
			removed = true
			removeAndCheck(t, c)
			if err := m.RemoveParent(); err != nil {
				t.Errorf("RemoveParent: %v", err)
			}
			for _, mnt := range m.mounts() {
				gone(t, filepath.Join(mnt, outer, "x"))
				if _, err := os.Stat(filepath.Join(mnt, outer)); err != nil {
					t.Errorf("the caller's own %s/%s went: %v", mnt, outer, err)
				}
			}
			// Twice is fine.
			if err := m.RemoveParent(); err != nil {
				t.Errorf("RemoveParent again: %v", err)
			}
		})
	}
}

// A parent inside systemd's units is taken only within a delegated unit
// (one systemd marked with trusted.delegate), and berth never makes a
// directory named like a unit. Shown on a private cgroup2 mount with
// directories laid out and marked as systemd would.
func TestParentInsideSystemdUnits(t *testing.T) {
	requireRoot(t)
	mnt := mountCgroup2(t)
	base := fmt.Sprintf("%s-systemd-%d", testParent, nameSeq.Add(1))
	for _, rel := range []string{"", "ci.slice", "ci.slice/job.service", "ci.slice/plain.service", "ci.slice/job.service/inner.scope"} {
		dir := filepath.Join(mnt, base, rel)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := unix.Rmdir(dir); err != nil {
				t.Errorf("remove %s: %v", dir, err)
			}
		})
	}
	if err := unix.Setxattr(filepath.Join(mnt, base, "ci.slice/job.service"), "trusted.delegate", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}

	for parent, want := range map[string]string{
		"ci.slice/job.service/berth":             "",
		"ci.slice/job.service":                   "",
		"ci.slice/job.service/a/b":               "",
		"ci.slice/plain.service/berth":           "has not delegated it",
		"ci.slice/plain.service":                 "has not delegated it",
		"ci.slice":                               "a slice is never delegated",
		"ci.slice/berth":                         "a slice is never delegated",
		"ci.slice/job.service/inner.scope/berth": "has not delegated it",
		"new.slice/berth":                        "does not exist",
		"ci.slice/job.service/new.scope":         "does not exist",
		"ci.slice/job.service/x/new.scope/y":     "does not exist",
	} {
		t.Run(strings.ReplaceAll(parent, "/", "_"), func(t *testing.T) {
			m, err := NewManager(Options{Parent: base + "/" + parent, Mode: V2, UnifiedMount: mnt, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			c, err := m.Create(uniqueName(), nil)
			if want != "" {
				if !errors.Is(err, ErrNotDelegated) || !strings.Contains(err.Error(), want) {
					t.Fatalf("Create = %v, want ErrNotDelegated saying %q", err, want)
				}
				// Nothing was made anywhere under base.
				filepath.WalkDir(filepath.Join(mnt, base), func(path string, d fs.DirEntry, err error) error {
					if err == nil && d.IsDir() {
						if made, _ := madeBy(path); made != "" {
							t.Errorf("the refused Create made %s", path)
						}
					}
					return err
				})
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			removeAndCheck(t, c)
			if err := m.RemoveParent(); err != nil {
				t.Errorf("RemoveParent: %v", err)
			}
			job := filepath.Join(mnt, base, "ci.slice/job.service")
			if !isDelegated(job) {
				t.Errorf("the delegated unit %s went, or lost its mark", job)
			}
			if entries, err := os.ReadDir(job); err != nil {
				t.Error(err)
			} else {
				for _, e := range entries {
					if e.IsDir() && e.Name() != "inner.scope" {
						t.Errorf("left in the unit: %s", e.Name())
					}
				}
			}
		})
	}
}

// A parent made by berth whose last cgroup is gone is removed even if the
// mark is only on the deeper levels: an administrator's directory above
// it is kept, and so is one berth did not make in the middle.
func TestRemoveParentKeepsWhatBerthDidNotMake(t *testing.T) {
	requireRoot(t)
	m := hostManager(t, Options{})
	outer := fmt.Sprintf("%s-keep-%d", testParent, nameSeq.Add(1))
	foreignDir(t, m, outer)
	foreignDir(t, m, outer+"/admin")
	var err error
	if m, err = m.WithParent(outer + "/admin/mine"); err != nil {
		t.Fatal(err)
	}
	if err := m.ensureParent(); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveParent(); err != nil {
		t.Fatal(err)
	}
	for _, mnt := range m.mounts() {
		gone(t, filepath.Join(mnt, outer, "admin/mine"))
		if _, err := os.Stat(filepath.Join(mnt, outer, "admin")); err != nil {
			t.Errorf("%s/%s/admin went: %v", mnt, outer, err)
		}
	}
}

// A path element that is an interface file in some hierarchies only is
// refused, and what was made in the others before goes again.
func TestParentUndoneHalfWay(t *testing.T) {
	requireRoot(t)
	m := hostManager(t, Options{})
	if m.v1["memory"] == "" {
		t.Skip("no v1 memory hierarchy")
	}
	outer := fmt.Sprintf("%s-undo-%d", testParent, nameSeq.Add(1))
	foreignDir(t, m, outer)
	m, err := m.WithParent(outer + "/x/memory.limit_in_bytes")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(uniqueName(), nil); !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), "interface file") {
		t.Fatalf("Create under an interface file = %v, want ErrInvalidName", err)
	}
	for _, mnt := range m.mounts() {
		gone(t, filepath.Join(mnt, outer, "x"))
	}
}

// An older berth marked nothing: the cgroups it left in its one-level
// parent, named by a sandbox ID, are still listed (so that Recover and
// berth gc reclaim them), while an unmarked directory of another name,
// and any unmarked one below a nested parent, are not.
func TestListUnmarkedLegacyCgroups(t *testing.T) {
	requireRoot(t)
	m := hostManager(t, Options{})
	if err := m.ensureParent(); err != nil {
		t.Fatal(err)
	}
	legacy := fmt.Sprintf("%016x", uint64(os.Getpid())<<20|uint64(nameSeq.Add(1)))
	foreignDir(t, m, filepath.Join(m.parent, legacy))
	foreignDir(t, m, filepath.Join(m.parent, "someone-else"))
	names, err := m.List()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, legacy) || slices.Contains(names, "someone-else") {
		t.Errorf("List = %v; want the older berth's %s, not someone-else", names, legacy)
	}
	c, err := m.Open(legacy)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}

	nested, err := m.WithParent(m.parent + "/nested")
	if err != nil {
		t.Fatal(err)
	}
	if err := nested.ensureParent(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The test parent above still holds someone-else: EBUSY there.
		if err := nested.RemoveParent(); err != nil && !errors.Is(err, unix.EBUSY) {
			t.Error(err)
		}
		for _, mnt := range nested.mounts() {
			gone(t, filepath.Join(mnt, nested.parent))
		}
	})
	foreignDir(t, nested, filepath.Join(nested.parent, legacy))
	if names, err := nested.List(); err != nil || len(names) != 0 {
		t.Errorf("nested List = %v, %v; want nothing unmarked", names, err)
	}
}
