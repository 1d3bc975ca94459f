// Package plugintest is berth's conformance kit for plugins: a plugin's
// author runs `go test` with the path of the plugin's binary and gets
// berth's contract checked, the way berth itself will use the plugin,
// through plugin.OpenStorage or plugin.OpenNetwork.
//
// A storage plugin's test, in the plugin's own module:
//
//	package main_test
//
//	import (
//		"os/exec"
//		"path/filepath"
//		"testing"
//
//		"github.com/berth-dev/berth/plugin/plugintest"
//	)
//
//	func TestConformance(t *testing.T) {
//		bin := filepath.Join(t.TempDir(), "my-storage")
//		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
//			t.Fatalf("build: %v\n%s", err, out)
//		}
//		plugintest.Storage(t, bin, &plugintest.StorageOptions{
//			Env:      []string{"MY_STORAGE_ROOT=" + t.TempDir()}, // berth passes no arguments
//			Settings: map[string]string{"size": "64m"},           // sent with every Prepare
//			Keep:     []string{"state.json"},                     // bookkeeping that may stay under the roots
//		})
//	}
//
// and a network plugin's:
//
//	func TestConformance(t *testing.T) {
//		plugintest.Network(t, bin, &plugintest.NetworkOptions{
//			Skip: map[string]string{"Restart": "keeps no state across restarts, by design"},
//		})
//	}
//
// Each check is a subtest (go test -run 'TestConformance/RoundTrip'),
// starts the plugin afresh, and ends by auditing what the plugin left
// behind. Checks of optional features skip themselves when the plugin's
// Info does not announce the capability; StorageOptions.Skip and
// NetworkOptions.Skip skip others, with a reason the test log shows.
//
// The kit finds the plugin's process among the test's children that run
// the binary, to kill it: run one kit test per binary at a time, not two
// in parallel.
//
// The kit needs root: it mounts, makes network namespaces and user
// namespaces, and kills the plugin's process with SIGKILL. It makes all
// it uses in the test's temporary directories (its own image store, a
// tiny image built in memory, namespaces bind-mounted there), touches
// nothing else of the host's, and finds the plugin's process among the
// test's own children.
package plugintest
