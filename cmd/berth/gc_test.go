package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGCDamagedState gives berth gc two dead sandboxes whose records are
// damaged, one of which cannot be reclaimed (a file in its rootfs is
// immutable): ps must list both, and gc must reclaim the other, name the
// one it could not and why, still collect the store, and exit 1.
func TestGCDamagedState(t *testing.T) {
	root := t.TempDir()
	state := filepath.Join(root, "state")
	g := []string{"--state", state, "--cgroup-parent", fmt.Sprintf("berth-clitest-%d-gc", os.Getpid())}
	if _, err := berth(t, root, "image", "ls"); err != nil { // makes the store
		t.Fatal(err)
	}
	const garbled, stuck = "00000000000000a1", "00000000000000a2"
	for _, id := range []string{garbled, stuck} {
		rootfs := filepath.Join(root, "rootfs", "sandbox-"+id)
		for _, d := range []string{filepath.Join(state, id), rootfs} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(rootfs, "file"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(state, garbled, "state.json"), []byte("{\"id"), 0o600); err != nil {
		t.Fatal(err)
	}
	immutable := filepath.Join(root, "rootfs", "sandbox-"+stuck, "file")
	if out, err := exec.Command("chattr", "+i", immutable).CombinedOutput(); err != nil {
		t.Skipf("chattr +i: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", immutable).Run() })

	out, err := berth(t, root, append(g, "ps")...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		garbled[:12] + " ", "dead, damaged record (berth gc reclaims it): state.json: unexpected end of JSON input",
		stuck[:12] + " ", "dead, damaged record (berth gc reclaims it): no state.json",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ps does not say %q:\n%s", want, out)
		}
	}

	out, err = berth(t, root, append(g, "gc")...)
	var ee exitError
	if !errors.As(err, &ee) || ee != 1 {
		t.Errorf("gc with something it cannot reclaim: %v, want exit status 1", err)
	}
	for _, want := range []string{
		"reclaimed 1 dead sandboxes (1 with damaged records)",
		"berth gc: could not reclaim sandbox " + stuck + ": ",
		"operation not permitted",
		"removed 0 blobs and 0 layers",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("gc does not say %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(state, garbled)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the reclaimable sandbox's state: %v", err)
	}
	if _, err := os.Stat(filepath.Join(state, stuck)); err != nil {
		t.Errorf("the state of the sandbox gc could not reclaim is gone, so the next gc cannot retry: %v", err)
	}

	// Once nothing is in the way, the next gc reclaims it and succeeds.
	if out, err := exec.Command("chattr", "-i", immutable).CombinedOutput(); err != nil {
		t.Fatalf("chattr -i: %v %s", err, out)
	}
	if out, err := berth(t, root, append(g, "gc")...); err != nil || !strings.Contains(out, "reclaimed 1 dead sandboxes") {
		t.Errorf("second gc: %v\n%s", err, out)
	}
	entries, err := os.ReadDir(state)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "00000000000000a") {
			t.Errorf("state left: %s", e.Name())
		}
	}
	if out, err := berth(t, root, append(g, "ps")...); err != nil || strings.Count(out, "\n") != 1 {
		t.Errorf("ps after gc: %v\n%s", err, out)
	}
}
