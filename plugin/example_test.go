package plugin_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/berth-dev/berth/plugin"
)

// scratch is a storage plugin: each rootfs is the image's layers under an
// upper directory of its own, which berth mounts as an overlay.
type scratch struct{ root string }

func (s scratch) Roots() []string { return []string{s.root} }

func (s scratch) Prepare(ctx context.Context, req *plugin.PrepareRequest) (*plugin.PrepareResult, error) {
	dir := filepath.Join(s.root, req.Key)
	if err := os.Mkdir(dir, 0o700); os.IsExist(err) {
		return nil, fmt.Errorf("rootfs %s: %w", req.Key, plugin.ErrExists)
	}
	os.Mkdir(dir+"/upper", 0o755)
	os.Mkdir(dir+"/work", 0o700)
	var lowers []string // overlayfs wants the top layer first
	for _, l := range slices.Backward(req.Layers) {
		lowers = append(lowers, l.UnpackedPath)
	}
	return &plugin.PrepareResult{Driver: "scratch", Mounts: []plugin.Mount{{Type: "overlay", Source: "overlay",
		Options: []string{"lowerdir=" + strings.Join(lowers, ":"), "upperdir=" + dir + "/upper", "workdir=" + dir + "/work"}}}}, nil
}

func (s scratch) Release(ctx context.Context, key string) error {
	if _, err := os.Stat(filepath.Join(s.root, key)); err != nil {
		return fmt.Errorf("rootfs %s: %w", key, plugin.ErrNotFound)
	}
	return os.RemoveAll(filepath.Join(s.root, key))
}

func (s scratch) List(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(s.root)
	var keys []string
	for _, e := range ents {
		keys = append(keys, e.Name())
	}
	return keys, err
}

// A storage plugin's main serves its implementation; berth starts the
// program (berth run --storage-plugin PATH) and talks to it.
func ExampleServeStorage() {
	os.MkdirAll("/var/lib/scratch-storage", 0o700)
	plugin.ServeStorage(scratch{root: "/var/lib/scratch-storage"})
}
