package main

import (
	"fmt"
	"math"
	"runtime"
	"time"

	"github.com/berth-dev/berth/internal/clip"
)

// cpuPeriod is the period --cpus sets its quota for: the kernel's default.
const cpuPeriod = 100 * time.Millisecond

// cpuQuota returns the CPU time per cpuPeriod that --cpus allows: 0 (no
// limit) for 0, else at least the 1ms the kernel takes and at most the
// host's CPUs, as Docker has it. A quota that rounded to 0, or that
// overflowed to a negative one, would silently lift the limit asked for.
func cpuQuota(cpus float64) (time.Duration, error) {
	if cpus == 0 {
		return 0, nil
	}
	if n := runtime.NumCPU(); math.IsNaN(cpus) || cpus < 0.01 || cpus > float64(n) {
		return 0, fmt.Errorf("%v CPUs: want 0.01 to %d (the host's CPUs), or 0 for no limit", cpus, n)
	}
	return max(time.Duration(cpus*float64(cpuPeriod)), time.Millisecond), nil
}

// parseMemory reads --memory: a size as parseBytes takes, "" for the
// preset's default. Unlike --memory-swap it has no -1: a negative size is
// a mistake, and no limit at all is not what a sandbox is for.
func parseMemory(s string) (int64, error) {
	n, err := parseBytes(s)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("%s: want a size such as 64m (at least 1m)", clip.Quote(s))
	}
	return n, nil
}
