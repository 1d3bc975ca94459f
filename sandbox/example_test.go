package sandbox_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/sandbox"
)

// Run a command in an image, with limits, and read its output and how it
// ended. A real program would use the default store and cgroup parent and
// need none of the set-up at the top.
func Example() {
	ctx := context.Background()
	root, _ := os.MkdirTemp("", "berth-example-")
	defer os.RemoveAll(root)
	store, err := layerfs.Open(root, nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := store.Import(ctx, "../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz", &layerfs.ImportOptions{Name: "alpine:3.20"}); err != nil {
		log.Fatal(err)
	}
	cgroups, err := cgroup.NewManager(cgroup.Options{Parent: fmt.Sprintf("berth-example-%d", os.Getpid())})
	if err != nil {
		log.Fatal(err)
	}
	defer cgroups.RemoveParent()

	var out strings.Builder
	sb := sandbox.New("alpine:3.20", &sandbox.Options{
		Args:      []string{"sh", "-c", "echo hello from $(hostname); id -un; exit 3"},
		Hostname:  "example",
		User:      "nobody",
		Stdout:    &out,
		Resources: &cgroup.Resources{MemoryMax: 64 << 20, PidsMax: 32},
		Storage:   store,
		Cgroups:   cgroups,
		StateDir:  root + "/state",
	})
	res, err := sb.Run(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(out.String())
	fmt.Println("exit code", res.ExitCode)
	// Output:
	// hello from example
	// nobody
	// exit code 3
}

// Keep sandboxes built ahead of time for a service that starts many: each
// start only names the workload, and the pool builds the next sandbox and
// tears the last one down in the background.
func ExamplePool() {
	ctx := context.Background()
	root, _ := os.MkdirTemp("", "berth-example-")
	defer os.RemoveAll(root)
	store, err := layerfs.Open(root, nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := store.Import(ctx, "../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz", &layerfs.ImportOptions{Name: "alpine:3.20"}); err != nil {
		log.Fatal(err)
	}
	cgroups, err := cgroup.NewManager(cgroup.Options{Parent: fmt.Sprintf("berth-example-%d", os.Getpid())})
	if err != nil {
		log.Fatal(err)
	}
	defer cgroups.RemoveParent()

	// What every sandbox of the pool shares: image, limits, security.
	pool, err := sandbox.NewPool(ctx, "alpine:3.20", &sandbox.Options{
		Resources: &cgroup.Resources{MemoryMax: 64 << 20, PidsMax: 32},
		Storage:   store,
		Cgroups:   cgroups,
		StateDir:  root + "/state",
	}, 2)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	for _, name := range []string{"ada", "grace"} {
		var out strings.Builder
		// What each one runs.
		res, err := pool.New(&sandbox.Options{
			Args:   []string{"sh", "-c", "echo hello $0 as $(id -un)", name},
			User:   "nobody",
			Stdout: &out,
		}).Run(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Print(out.String())
		fmt.Println("exit code", res.ExitCode)
	}
	// Output:
	// hello ada as nobody
	// exit code 0
	// hello grace as nobody
	// exit code 0
}
