package main

import (
	"testing"

	"github.com/berth-dev/berth/plugin/plugintest"
)

// The plugin keeps berth's storage contract, as the conformance kit
// checks it through the built binary.
func TestConformance(t *testing.T) {
	setup(t)
	plugintest.Storage(t, shared.bin, &plugintest.StorageOptions{
		Settings: map[string]string{"size": "16m"},
	})
}
