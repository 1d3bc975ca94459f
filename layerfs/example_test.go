package layerfs_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/berth-dev/berth/layerfs"
)

// Import a root filesystem tarball as an image, make a writable rootfs of
// it, change a file and commit the change as a new image.
func Example() {
	ctx := context.Background()
	root, err := os.MkdirTemp("", "berth-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)

	store, err := layerfs.Open(root, nil)
	if err != nil {
		log.Fatal(err)
	}
	img, err := store.Import(ctx, "../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz",
		&layerfs.ImportOptions{Name: "alpine:3.20"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(img.Names, len(img.Layers), "layer")

	rootfs, err := store.Prepare(ctx, "example", img, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Release(ctx, "example")
	release, _ := os.ReadFile(filepath.Join(rootfs.Path, "etc", "alpine-release"))
	fmt.Printf("alpine %s", release)

	if err := os.WriteFile(filepath.Join(rootfs.Path, "etc", "motd"), []byte("hello\n"), 0o644); err != nil {
		log.Fatal(err)
	}
	changed, err := store.Commit(ctx, "example", &layerfs.CommitOptions{Name: "alpine:hello"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(changed.Names, len(changed.Layers), "layers")
	// Output:
	// [alpine:3.20] 1 layer
	// alpine 3.20.3
	// [alpine:hello] 2 layers
}
