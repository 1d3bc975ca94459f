package sandbox_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/sandbox"
)

// A request brings its own input directory and variables to a sandbox the
// pool built ahead of time; Stats tells whether the pool keeps up.
func ExamplePool_Stats() {
	ctx := context.Background()
	store, cgroups, stateDir, done := exampleHost(ctx)
	defer done()

	pool, err := sandbox.NewPool(ctx, "alpine:3.20", &sandbox.Options{
		Env:      []string{"MODE=batch"},
		Storage:  store,
		Cgroups:  cgroups,
		StateDir: stateDir,
	}, 1)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := pool.Ready(ctx); err != nil {
		log.Fatal(err)
	}

	input, err := os.MkdirTemp("", "berth-example-input-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(input)
	if err := os.WriteFile(filepath.Join(input, "job.txt"), []byte("resize photo.jpg\n"), 0o644); err != nil {
		log.Fatal(err)
	}

	var out strings.Builder
	_, err = pool.New(&sandbox.Options{
		Args:   []string{"sh", "-c", `echo "$MODE job $JOB: $(cat /input/job.txt)"`},
		Env:    []string{"JOB=42"},
		Mounts: []sandbox.Mount{{Source: input, Destination: "/input", ReadOnly: true}},
		Stdout: &out,
	}).Run(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(out.String())
	st := pool.Stats()
	fmt.Printf("hits %d, misses %d\n", st.Hits, st.Misses)
	// Output:
	// batch job 42: resize photo.jpg
	// hits 1, misses 0
}
