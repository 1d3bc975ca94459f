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

// exampleHost makes a private store holding alpine:3.20, a cgroup parent
// and a state directory, so that the examples leave the host as they found
// it. A real program would use the default store and cgroup parent and
// need none of this.
func exampleHost(ctx context.Context) (*layerfs.Store, *cgroup.Manager, string, func()) {
	root, err := os.MkdirTemp("", "berth-example-")
	if err != nil {
		log.Fatal(err)
	}
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
	return store, cgroups, root + "/state", func() {
		if err := cgroups.RemoveParent(); err != nil {
			log.Print(err)
		}
		os.RemoveAll(root)
	}
}

// Run a command in an image, with limits, and read its output and how it
// ended.
func Example() {
	ctx := context.Background()
	store, cgroups, stateDir, done := exampleHost(ctx)
	defer done()

	var out strings.Builder
	sb := sandbox.New("alpine:3.20", &sandbox.Options{
		Args:      []string{"sh", "-c", "echo hello from $(hostname); id -un; exit 3"},
		Hostname:  "example",
		User:      "nobody",
		Stdout:    &out,
		Resources: &cgroup.Resources{MemoryMax: 64 << 20, PidsMax: 32},
		Storage:   store,
		Cgroups:   cgroups,
		StateDir:  stateDir,
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
	store, cgroups, stateDir, done := exampleHost(ctx)
	defer done()

	// What every sandbox of the pool shares: image, limits, security.
	pool, err := sandbox.NewPool(ctx, "alpine:3.20", &sandbox.Options{
		Resources: &cgroup.Resources{MemoryMax: 64 << 20, PidsMax: 32},
		Storage:   store,
		Cgroups:   cgroups,
		StateDir:  stateDir,
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
