// Command judge runs each line of its standard input as a shell snippet in
// a sandbox of its own, the way a grading or code-execution service would,
// taking the sandboxes from a pool built ahead of time so that each answer
// costs milliseconds, not the building of a sandbox.
//
//	printf 'echo hi\nexit 3\nsleep 5\n' | judge -image busybox:demo -timeout 1s
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/security"
)

func main() {
	image := flag.String("image", "busybox:demo", "image to run the snippets in")
	size := flag.Int("pool", 4, "sandboxes to keep built ahead of time")
	timeout := flag.Duration("timeout", 10*time.Second, "time limit per snippet")
	flag.Parse()
	ctx := context.Background()

	// What every sandbox shares: the image, the limits, untrusted-code
	// security (no capabilities, a user namespace, a read-only root).
	pool, err := sandbox.NewPool(ctx, *image, &sandbox.Options{
		Resources: &cgroup.Resources{MemoryMax: 64 << 20, PidsMax: 64},
		Security:  security.Strict(),
	}, *size)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	in := bufio.NewScanner(os.Stdin)
	for n := 1; in.Scan(); n++ {
		var out strings.Builder
		start := time.Now()
		// What each one runs.
		res, err := pool.New(&sandbox.Options{
			// The snippet is the command, whatever entrypoint the
			// image has.
			Entrypoint: []string{},
			Args:       []string{"/bin/sh", "-c", in.Text()},
			Stdout:     &out,
			Stderr:     &out,
			Timeout:    *timeout,
		}).Run(ctx)
		if err != nil {
			fmt.Printf("#%d: %v\n", n, err)
			continue
		}
		verdict := fmt.Sprintf("exit %d", res.ExitCode)
		switch {
		case res.TimedOut:
			verdict = "timed out"
		case res.OOMKilled:
			verdict = "out of memory"
		}
		fmt.Printf("#%d: %s in %v, %q\n", n, verdict, time.Since(start).Round(100*time.Microsecond), out.String())
	}
	if err := in.Err(); err != nil {
		log.Fatal(err)
	}
}
