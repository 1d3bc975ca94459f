package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The seam of KeepRootfs, Reset, Commit, Wait and Close: a sandbox on a
// network that keeps its rootfs is reset while commits read it, exits,
// is committed with Close racing the commit, and leaves nothing behind.
func TestKeepRootfsResetCommitClose(t *testing.T) {
	ctx := context.Background()
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.Network = defaultNetwork(t)
		o.KeepRootfs = true
		o.Stdout, o.Stderr = &out, &out
		o.Args = []string{"sh", "-c", "if [ -e /marker ]; then echo dirty; fi; echo $$ > /marker; echo ready; read x < /dev/null; sleep 0.3"}
	}))
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	runDir := testEnv.dir + "/run-networks"
	traces := traceNetworks(t, runDir, []string{sb.ID()})
	key, rootfs := "sandbox-"+sb.ID(), sb.rootfs

	var wg sync.WaitGroup
	for range 2 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := sb.Reset(ctx); err != nil && !errors.Is(err, ErrNotRunning) {
				t.Errorf("Reset: %v", err)
			}
		}()
		go func() {
			defer wg.Done()
			img, err := sb.Commit(ctx, "", nil)
			if err != nil {
				t.Errorf("Commit during Reset: %v", err)
				return
			}
			removeImage(t, img)
		}()
	}
	wg.Wait()
	if _, err := sb.Wait(); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if strings.Contains(out.String(), "dirty") {
		t.Errorf("a reset workload saw the last one's file: %q", out.String())
	}
	if !slices.Contains(rootfsesLeft(t), key) {
		t.Fatalf("the kept rootfs %s is gone after a reset workload ended", key)
	}

	var closing sync.WaitGroup
	closing.Add(2)
	go func() {
		defer closing.Done()
		img, err := sb.Commit(ctx, "", nil)
		if err != nil {
			if !errors.Is(err, ErrNotRunning) {
				t.Errorf("Commit racing Close: %v", err)
			}
			return
		}
		removeImage(t, img)
	}()
	go func() {
		defer closing.Done()
		if err := sb.Close(); err != nil {
			t.Errorf("Close racing Commit: %v", err)
		}
	}()
	closing.Wait()
	if slices.Contains(rootfsesLeft(t), key) {
		t.Errorf("rootfs %s left after Close", key)
	}
	if m := mountsUnder(t, rootfs); len(m) > 0 {
		t.Errorf("mounts left after Close: %v", m)
	}
	if _, err := os.Stat(filepath.Join(testEnv.stateDir, sb.ID())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory after Close: %v, want it gone", err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %q", left)
	}
	if left := traces.left(t, runDir); len(left) > 0 {
		t.Errorf("network left behind: %q", left)
	}
}
