package plugin_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/plugin"
)

// A plugin's rootfs commits to an image the built-in store prepares: a
// file written in the plugin's rootfs is in it, and a file deleted there
// is gone.
func TestStorageCommit(t *testing.T) {
	e := newStorageEnv(t)
	s := e.open(t, nil)
	const key = "overlay--commit"
	r, err := s.Prepare(ctx, key, e.img, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release(ctx, key)
	if err := os.WriteFile(filepath.Join(r.Path, "committed"), []byte("from the plugin"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(r.Path, "etc", "motd")); err != nil {
		t.Fatal(err)
	}

	img, err := s.Commit(ctx, key, &layerfs.CommitOptions{Name: "alpine:committed", Comment: "plugin commit",
		CreatedBy: "RUN plugin", Config: &v1.Config{Cmd: []string{"/committed"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != len(e.img.Layers)+1 || !slices.Equal(img.Layers[:len(e.img.Layers)], e.img.Layers) || !slices.Contains(img.Names, "alpine:committed") {
		t.Fatalf("committed image: names %v, layers %+v on %+v", img.Names, img.Layers, e.img.Layers)
	}
	if h := img.Config.History; len(h) == 0 || h[len(h)-1].CreatedBy != "RUN plugin" || !slices.Equal(img.Config.Config.Cmd, []string{"/committed"}) {
		t.Errorf("a plugin commit's options did not reach the image: cmd %v, history %+v", img.Config.Config.Cmd, h)
	}
	built, err := e.store.Prepare(ctx, "builtin", img, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.store.Release(ctx, "builtin")
	if b, err := os.ReadFile(filepath.Join(built.Path, "committed")); err != nil || string(b) != "from the plugin" {
		t.Errorf("the committed file in the new image: %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(built.Path, "etc", "motd")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the deleted file in the new image: %v, want it gone", err)
	}
	if _, err := os.Lstat(filepath.Join(built.Path, "bin", "busybox")); err != nil {
		t.Errorf("the base image's files in the new image: %v", err)
	}

	if _, err := s.Commit(ctx, "nope", nil); !errors.Is(err, plugin.ErrNotFound) || !errors.Is(err, layerfs.ErrNotFound) {
		t.Errorf("Commit of an unknown key: %v, want ErrNotFound", err)
	}
	if _, err := s.Commit(ctx, "../"+key, nil); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("Commit of a key with a slash: %v, want ErrNotFound", err)
	}

	// A plugin that does not announce diff is not asked.
	bin := filepath.Join(filepath.Dir(e.bin), "teststorage-nodiff")
	if err := os.Link(e.bin, bin); err != nil {
		t.Fatal(err)
	}
	nd, err := plugin.OpenStorage(ctx, bin, &plugin.Options{Store: e.store, MountDir: e.mountDir})
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	if _, err := nd.Commit(ctx, key, nil); !errors.Is(err, plugin.ErrUnsupported) {
		t.Errorf("Commit through a plugin without capability diff: %v, want ErrUnsupported", err)
	}
}

// A hostile plugin's diff that names a path outside the layer is refused:
// no image, nothing written outside the store, nothing left in it after
// GC.
func TestStorageCommitHostileDiff(t *testing.T) {
	e := newStorageEnv(t)
	s := e.open(t, nil)
	const key = "overlay--evildiff"
	if _, err := s.Prepare(ctx, key, e.img, nil); err != nil {
		t.Fatal(err)
	}
	defer s.Release(ctx, key)
	before, err := e.store.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.Commit(ctx, key, &layerfs.CommitOptions{Name: "evil:1"})
	if !errors.Is(err, layerfs.ErrUnsafeEntry) {
		t.Fatalf("Commit of a diff with a ../ name made %v (err %v); want %v", img != nil, err, layerfs.ErrUnsafeEntry)
	}
	if after, err := e.store.Images(ctx); err != nil || len(after) != len(before) {
		t.Errorf("%d images after the refused commit (%v), %d before", len(after), err, len(before))
	}
	if _, err := e.store.Image(ctx, "evil:1"); !errors.Is(err, layerfs.ErrNotFound) {
		t.Errorf("the refused commit's name: %v, want ErrNotFound", err)
	}
	for _, dir := range []string{e.dir, os.TempDir()} {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Name() == "escape" {
				t.Errorf("the plugin's diff wrote %s", p)
			}
			if err == nil && d.IsDir() && p != dir && dir != e.dir {
				return filepath.SkipDir // only the top of the temporary directory
			}
			return nil
		})
	}
	if ents, err := os.ReadDir(filepath.Join(e.dir, "store", "tmp")); err != nil || len(ents) > 0 {
		t.Errorf("the store's staging area after the refused commit: %v, %v", ents, err)
	}
}
