package sandbox

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/cgroup"
)

// The leak checks' listings. Each fails the test when it cannot list what
// it looks for: an error must never read as "nothing left".

// sharedStateEntries are what a state directory holds besides its
// sandboxes', and keeps: the compiled seccomp programs.
var sharedStateEntries = []string{"seccomp"}

// stateLeft returns the entries of the state directory dir that belong to
// sandboxes: each one's directory, whether or not its record can be read
// (ReadStates skips those it cannot), and any file half-written there.
// keep names more entries that are not sandboxes'. A directory that does
// not exist holds nothing.
func stateLeft(t *testing.T, dir string, keep ...string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("list the state directory: %v", err)
	}
	var left []string
	for _, e := range entries {
		if !slices.Contains(sharedStateEntries, e.Name()) && !slices.Contains(keep, e.Name()) {
			left = append(left, e.Name())
		}
	}
	return left
}

// cgroupsLeft returns the cgroups in m's parent.
func cgroupsLeft(t *testing.T, m *cgroup.Manager) []string {
	t.Helper()
	names, err := m.List()
	if err != nil {
		t.Fatalf("list cgroups: %v", err)
	}
	return names
}

// rootfsesLeft returns the keys of the rootfses in the test store.
func rootfsesLeft(t *testing.T) []string {
	t.Helper()
	keys, err := testEnv.store.Rootfses(context.Background())
	if err != nil {
		t.Fatalf("list rootfses: %v", err)
	}
	return keys
}

// leftBehind reports what of berth's a test left: rootfses, cgroups,
// state directories, mounts under the store or the state directory.
func leftBehind(t *testing.T) []string {
	t.Helper()
	var left []string
	if r := rootfsesLeft(t); len(r) > 0 {
		left = append(left, "rootfses "+strings.Join(r, " "))
	}
	if names := cgroupsLeft(t, testEnv.cgroups); len(names) > 0 {
		left = append(left, "cgroups "+strings.Join(names, " "))
	}
	if s := stateLeft(t, testEnv.stateDir); len(s) > 0 {
		left = append(left, "state "+strings.Join(s, " "))
	}
	if m := mountsUnder(t, testEnv.store.Root()); len(m) > 0 {
		left = append(left, "mounts "+strings.Join(m, " "))
	}
	if m := mountsUnder(t, testEnv.stateDir); len(m) > 0 {
		left = append(left, "mounts "+strings.Join(m, " "))
	}
	return left
}
