package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/berth-dev/berth/sandbox"
)

// Run a command for its output, as os/exec's Output does: a workload that
// fails gives an *ExitError, with its Result and the end of its standard
// error.
func ExampleSandbox_Output() {
	ctx := context.Background()
	store, cgroups, stateDir, done := exampleHost(ctx)
	defer done()

	out, err := sandbox.New("alpine:3.20", &sandbox.Options{
		Args:    []string{"sh", "-c", "echo partial; echo 'no such table' >&2; exit 2"},
		Storage: store, Cgroups: cgroups, StateDir: stateDir,
	}).Output(ctx)
	var ee *sandbox.ExitError
	if errors.As(err, &ee) {
		fmt.Printf("exit %d: %s", ee.ExitCode, ee.Stderr)
	} else if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("output: %s", out)
	// Output:
	// exit 2: no such table
	// output: partial
}

// Give a job that outlives its Timeout the time to clean up: SIGTERM when
// the Timeout runs out, SIGKILL only Grace later.
func ExampleOptions_grace() {
	ctx := context.Background()
	store, cgroups, stateDir, done := exampleHost(ctx)
	defer done()

	out, err := sandbox.New("alpine:3.20", &sandbox.Options{
		Args:    []string{"sh", "-c", "trap 'echo saving work; exit 0' TERM; sleep 1000 & wait"},
		Timeout: 2 * time.Second,
		Grace:   10 * time.Second,
		Storage: store, Cgroups: cgroups, StateDir: stateDir,
	}).Output(ctx)
	var ee *sandbox.ExitError
	if !errors.As(err, &ee) {
		log.Fatal(err)
	}
	fmt.Printf("%stimed out: %v, exit code %d\n", out, ee.TimedOut, ee.ExitCode)
	// Output:
	// saving work
	// timed out: true, exit code 0
}
