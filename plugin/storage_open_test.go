package plugin

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/berth-dev/berth/layerfs"
)

// A program that is not a plugin, or a plugin refused, leaves nothing in
// berth's mount directory: its directory there is made only for a plugin
// that started and was accepted.
func TestOpenStorageFailureLeavesNoDirectory(t *testing.T) {
	requireRoot(t)
	store, err := layerfs.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	mountDir := t.TempDir()
	opts := &Options{Store: store, MountDir: mountDir, RunDir: t.TempDir()}
	_, err = OpenStorage(context.Background(), writeScript(t, "not-a-plugin", "exit 0"), opts)
	if !errors.Is(err, ErrNotPlugin) {
		t.Fatalf("OpenStorage of a script: %v, want ErrNotPlugin", err)
	}
	ents, err := os.ReadDir(mountDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left in the mount directory: %s", e.Name())
	}
}
