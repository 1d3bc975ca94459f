package plugin

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestSweepRunDir(t *testing.T) {
	requireRoot(t)
	run := t.TempDir()
	old := time.Now().Add(-2 * staleAfter)
	mk := func(name string) string {
		dir := filepath.Join(run, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	// A dead plugin's: a socket file nobody is bound to, old.
	dead := mk("plugin-dir1")
	l, err := net.Listen("unix", filepath.Join(dead, "plugin1"))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	// A live plugin's: bound, old.
	live := mk("plugin-dir2")
	l2, err := net.Listen("unix", filepath.Join(live, "plugin2"))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	// One being started: empty, new.
	starting := mk("plugin-dir3")
	// Not go-plugin's.
	other := mk("cni-network")
	for _, d := range []string{dead, live, other} {
		os.Chtimes(d, old, old)
	}

	removed, err := SweepRunDir(run)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{dead}) {
		t.Errorf("removed %q, want only %s", removed, dead)
	}
	for _, d := range []string{live, starting, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s: %v", d, err)
		}
	}

	// A real plugin's directory, while it runs, stays.
	opts, _ := testOptions(t, "storage")
	opts.RunDir = run
	c, err := startClient(context.Background(), testPluginBin, KindStorage, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ents, _ := os.ReadDir(run)
	for _, e := range ents {
		if p := filepath.Join(run, e.Name()); !slices.Contains([]string{live, starting, other}, p) {
			os.Chtimes(p, old, old) // the running plugin's, aged
		}
	}
	removed, err = SweepRunDir(run)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 0 {
		t.Errorf("removed a running plugin's directory: %q", removed)
	}
	if _, err := c.conn(context.Background()); err != nil {
		t.Errorf("plugin after the sweep: %v", err)
	}
}
