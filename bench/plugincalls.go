package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Calls is what TimeCalls measured: one latency per call, in
// microseconds, in no particular order, and the wall time of them all.
type Calls struct {
	Goroutines int
	Samples    []float64 // µs
	Elapsed    time.Duration
}

// P50, P99 and Max are the calls' latency percentiles in microseconds.
func (c *Calls) P50() float64 { return Percentile(c.Samples, 0.5) }
func (c *Calls) P99() float64 { return Percentile(c.Samples, 0.99) }
func (c *Calls) Max() float64 { return Percentile(c.Samples, 1) }

// PerSecond is the calls completed per second of wall time, all
// goroutines together.
func (c *Calls) PerSecond() float64 {
	if c.Elapsed <= 0 {
		return 0
	}
	return float64(len(c.Samples)) / c.Elapsed.Seconds()
}

// TimeCalls makes n calls of call, from goroutines goroutines at once,
// each timed on its own, and returns the timings. Every call gets its own
// index i in [0, n), so that callers can make keys that do not collide.
// The first error stops all goroutines (calls under way finish) and is
// returned, naming the call it came from, with the timings of the calls
// that succeeded. Latencies under concurrency include waiting for the
// other goroutines' calls: that is the point of measuring them.
func TimeCalls(ctx context.Context, n, goroutines int, call func(ctx context.Context, i int) error) (*Calls, error) {
	if n < 0 || goroutines < 1 {
		return nil, fmt.Errorf("TimeCalls: %d calls from %d goroutines", n, goroutines)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		mu       sync.Mutex
		samples  = make([]float64, 0, n)
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]float64, 0, n/goroutines+1)
			defer func() {
				mu.Lock()
				samples = append(samples, mine...)
				mu.Unlock()
			}()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t := time.Now()
				err := call(ctx, i)
				d := time.Since(t)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("call %d: %w", i, err)
					}
					mu.Unlock()
					cancel()
					return
				}
				mine = append(mine, float64(d.Nanoseconds())/1e3)
			}
		}()
	}
	wg.Wait()
	c := &Calls{Goroutines: goroutines, Samples: samples, Elapsed: time.Since(start)}
	return c, firstErr
}
