package main

import (
	"os"
	"testing"

	"github.com/berth-dev/berth/plugin/plugintest"
)

// The plugin keeps berth's storage contract, as the conformance kit
// checks it through the built binary.
func TestConformance(t *testing.T) {
	setup(t)
	// The plugin makes its root on its first Prepare and keeps it, empty,
	// after the last Release; the kit would count that one directory as
	// left behind by whichever check came first.
	if err := os.MkdirAll(shared.root, 0o700); err != nil {
		t.Fatal(err)
	}
	plugintest.Storage(t, shared.bin, &plugintest.StorageOptions{
		Settings: map[string]string{"size": "16m"},
	})
}
