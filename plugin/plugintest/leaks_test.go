package plugintest

import (
	"os"
	"slices"
	"testing"
)

// What a check reports as left behind is what is new, less the plugin's
// declared bookkeeping, each leftover once (not every path under it).
func TestNewSince(t *testing.T) {
	roots := []string{"/r"}
	before := tree{"/r": true, "/r/rootfs": true, "/r/state.json": true}
	now := tree{
		"/r": true, "/r/rootfs": true, "/r/state.json": true,
		"/r/rootfs/k": true, "/r/rootfs/k/upper": true, "/r/rootfs/k/upper/f": true, // a rootfs left
		"/r/cache": true, "/r/cache/a": true, // bookkeeping
		"/r/journal-1": true, // bookkeeping by a pattern
		"/r/stray":     true,
	}
	got := newSince(before, now, roots, []string{"cache", "journal-*"})
	want := []string{"/r/rootfs/k", "/r/stray"}
	if !slices.Equal(got, want) {
		t.Errorf("newSince = %q, want %q", got, want)
	}
	if got := newSince(before, before, roots, nil); len(got) != 0 {
		t.Errorf("newSince of the same tree = %q, want nothing", got)
	}
}

func TestWithin(t *testing.T) {
	for _, c := range []struct {
		dir, path string
		want      bool
	}{
		{"/a/b", "/a/b", true},
		{"/a/b", "/a/b/c", true},
		{"/a/b/", "/a/b/c", true},
		{"/a/b", "/a/bc", false},
		{"/a/b", "/a", false},
		{"/", "/x", true},
	} {
		if got := within(c.dir, c.path); got != c.want {
			t.Errorf("within(%q, %q) = %v, want %v", c.dir, c.path, got, c.want)
		}
	}
}

// mountinfo escapes spaces and the like in paths; a path with a space
// under a root is still found under it.
// The command name in /proc/<pid>/stat may hold spaces and parentheses.
func TestProcStat(t *testing.T) {
	ppid, state, err := procStat(os.Getpid())
	if err != nil || ppid != os.Getppid() || state == 0 {
		t.Errorf("procStat(self) = %d, %q, %v; want ppid %d", ppid, state, err, os.Getppid())
	}
	if !gone(1 << 30) {
		t.Errorf("gone(a pid that cannot exist) = false")
	}
}
