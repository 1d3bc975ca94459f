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

// Close takes the plugin's directory under MountDir away once no rootfs
// is in it, and a Storage on the same plugin makes it again when it
// prepares one.
func TestStorageCloseRemovesEmptyDirectory(t *testing.T) {
	requireRoot(t)
	store, err := layerfs.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	mountDir := t.TempDir()
	opts, _ := testOptions(t, "storage")
	opts.Store, opts.MountDir = store, mountDir
	st, err := OpenStorage(context.Background(), testPluginBin, opts)
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(mountDir); len(ents) != 1 {
		t.Fatalf("mount directory holds %d entries after open, want the plugin's", len(ents))
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(mountDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left in the mount directory after Close: %s", e.Name())
	}
}
