// Command snippet runs a shell snippet from its arguments in a throwaway
// sandbox, the way a service that runs untrusted code would: a memory,
// process and time budget, no network, and a report of how it ended.
//
//	snippet -image alpine:3.20 'echo hi; uname -a'
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/sandbox"
)

func main() {
	image := flag.String("image", "busybox:demo", "image to run the snippet in")
	memory := flag.Int64("memory", 64, "memory limit in MiB")
	timeout := flag.Duration("timeout", 10*time.Second, "time limit")
	flag.Parse()
	if flag.NArg() == 0 {
		log.Fatal("usage: snippet [-image REF] [-memory MiB] [-timeout D] 'shell snippet'")
	}

	var stdout, stderr strings.Builder
	res, err := sandbox.New(*image, &sandbox.Options{
		// The snippet is the command, whatever entrypoint the image has.
		Entrypoint: []string{},
		Args:       []string{"/bin/sh", "-c", strings.Join(flag.Args(), " ")},
		Stdout:     &stdout,
		Stderr:     &stderr,
		Resources:  &cgroup.Resources{MemoryMax: *memory << 20, PidsMax: 64},
		Timeout:    *timeout,
	}).Run(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("stdout: %q\nstderr: %q\n", stdout.String(), stderr.String())
	fmt.Printf("exit %d, signal %v, oom %v, timed out %v, %v CPU, %d KiB peak, %v wall\n",
		res.ExitCode, res.Signal, res.OOMKilled, res.TimedOut, res.CPUTime, res.PeakMemory>>10, res.Exited.Sub(res.Started).Round(time.Millisecond))
	if !res.Success() {
		os.Exit(1)
	}
}
