package plugintest

import (
	"os"
	"testing"
)

// TestNetnsKeepsMainThread: newNetns enters each namespace on a thread
// that then ends, and never on the main thread, which the runtime cannot
// end: a main thread left in a kit's namespace would keep it, and what a
// plugin left in it, alive after removeNetns, and would make it what
// /proc/self/ns/net names, which netplug takes for the host's.
func TestNetnsKeepsMainThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	host, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i := range 200 {
		p, err := newNetns(dir, "ns")
		if err != nil {
			t.Fatal(err)
		}
		if err := removeNetns(p); err != nil {
			t.Fatal(err)
		}
		if now, err := os.Readlink("/proc/self/ns/net"); err != nil || now != host {
			t.Fatalf("after %d namespaces the main thread is in %s (%v), not the host's %s", i+1, now, err, host)
		}
	}
}
