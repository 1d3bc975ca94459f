package sandbox_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"regexp"

	"github.com/berth-dev/berth/sandbox"
)

// Start a service and wait until it is ready: its log says so and its
// port answers. The checks reach the sandbox's own loopback from inside
// its network namespace, so the sandbox needs no network or published
// port, and DialContext talks to the service the same way.
func ExampleOptions_waitFor() {
	ctx := context.Background()
	store, cgroups, stateDir, done := exampleHost(ctx)
	defer done()

	sb := sandbox.New("alpine:3.20", &sandbox.Options{
		Args: []string{"sh", "-c", "echo warming up; sleep 1; echo listening on 7000; exec nc -lk -p 7000 -e echo hello from the sandbox"},
		WaitFor: []sandbox.ReadyCheck{
			sandbox.LogCheck{Match: regexp.MustCompile(`^listening on`)},
			sandbox.TCPCheck{Port: 7000},
		},
		LogBytes: 4 << 10,
		Storage:  store,
		Cgroups:  cgroups,
		StateDir: stateDir,
	})
	if err := sb.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer sb.Close()

	conn, err := sb.DialContext(ctx, "tcp", "127.0.0.1:7000")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(reply)
	for _, e := range sb.Logs() {
		fmt.Printf("%s: %s\n", e.Stream, e.Text)
	}
	// Output:
	// hello from the sandbox
	// stdout: warming up
	// stdout: listening on 7000
}
