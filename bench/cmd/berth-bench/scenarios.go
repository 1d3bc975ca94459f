package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/bench"
	"github.com/berth-dev/berth/layerfs"
)

// Latency is one tool's start→exit distribution, in milliseconds.
type Latency struct {
	Tool    string    `json:"tool"`
	N       int       `json:"n"`
	P50     float64   `json:"p50_ms"`
	P90     float64   `json:"p90_ms"`
	P99     float64   `json:"p99_ms"`
	Max     float64   `json:"max_ms"`
	Error   string    `json:"error,omitempty"`
	Samples []float64 `json:"samples_ms,omitempty"`
}

// roundRobin runs each tool's run n times, one of each per iteration. A
// tool that fails is kept with its first error and not run again: its
// failure is the result.
func roundRobin(ctx context.Context, tools []*tool, n int) ([]Latency, error) {
	rows := make([]Latency, len(tools))
	for i, t := range tools {
		rows[i] = Latency{Tool: t.name, Error: t.err}
	}
	for it := 0; it < n; it++ {
		for i, t := range tools {
			if err := ctx.Err(); err != nil {
				return rows, err
			}
			if rows[i].Error != "" || t.run == nil {
				continue
			}
			start := time.Now()
			err := t.run(ctx)
			d := time.Since(start)
			if err == nil && t.settle != nil {
				err = t.settle(ctx)
			}
			if err != nil {
				rows[i].Error = err.Error()
				progress("%s failed: %v", t.name, err)
				continue
			}
			rows[i].Samples = append(rows[i].Samples, float64(d.Microseconds())/1000)
		}
		if (it+1)%10 == 0 {
			progress("iteration %d/%d", it+1, n)
		}
	}
	for i := range rows {
		r := &rows[i]
		r.N = len(r.Samples)
		r.P50, r.P90, r.P99 = bench.Percentile(r.Samples, 0.5), bench.Percentile(r.Samples, 0.9), bench.Percentile(r.Samples, 0.99)
		r.Max = bench.Percentile(r.Samples, 1)
	}
	return rows, nil
}

func scenarioStartup(ctx context.Context, e *env, cfg config, res *Results) error {
	rows, err := roundRobin(ctx, e.tools, cfg.Runs)
	res.Startup = rows
	return err
}

func scenarioNetwork(ctx context.Context, e *env, cfg config, res *Results) error {
	var tools []*tool
	if e.bridge != nil {
		tools = append(tools,
			&tool{name: "berth (Go API, bridge)", run: func(ctx context.Context) error {
				o := e.berthOptions("true")
				o.Network = e.bridge
				return runBerth(ctx, o)
			}},
			&tool{name: "berth (Go API, bridge, netplug.Pool)", run: func(ctx context.Context) error {
				o := e.berthOptions("true")
				o.NetworkPool = e.pool
				return runBerth(ctx, o)
			}})
	}
	if t := e.podmanBridge(); t != nil {
		for _, s := range e.tools {
			if s.name == "podman" && s.err != "" {
				t.err = s.err
			}
		}
		tools = append(tools, t)
	}
	e.note("scenario 2 leaves out runc, crun and bubblewrap: wiring CNI to them by hand would measure the harness, not the tools")
	rows, err := roundRobin(ctx, tools, cfg.Runs)
	res.Network = rows
	return err
}

// Memory is what the host keeps per idle sandbox, in KiB.
type Memory struct {
	Tool     string  `json:"tool"`
	N        int     `json:"n"`
	Procs    float64 `json:"host_processes_per_sandbox"`
	PSS      float64 `json:"pss_kib_per_sandbox"`
	RSS      float64 `json:"rss_kib_per_sandbox"`
	KernelKB float64 `json:"kmem_kib_per_sandbox"` // -1: no cgroup of its own
	Error    string  `json:"error,omitempty"`
}

func scenarioMemory(ctx context.Context, e *env, cfg config, res *Results) error {
	for _, n := range cfg.IdleN {
		for _, t := range e.tools {
			if t.idle == nil && t.err == "" {
				continue
			}
			if t.name == "podman" && n > cfg.PodmanIdleMax {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			progress("memory: %d idle sandboxes of %s", n, t.name)
			res.Memory = append(res.Memory, measureIdle(ctx, t, n))
		}
	}
	if cfg.PodmanIdleMax < cfg.IdleN[len(cfg.IdleN)-1] {
		e.note("podman's idle memory is measured up to N=%d only: it starts and removes containers at well under 10 a second", cfg.PodmanIdleMax)
	}
	e.note("berth (CLI) is left out of the idle memory scenario: `berth run` waits in the foreground, so its cost is that of the Go API plus one CLI process; section 3b measures `berth run -d`, which returns")
	return nil
}

func measureIdle(ctx context.Context, t *tool, n int) Memory {
	m := Memory{Tool: t.name, N: n, Error: t.err}
	if t.idle == nil || m.Error != "" {
		return m
	}
	var boxes []*idleBox
	defer func() {
		for _, b := range boxes {
			if err := b.stop(); err != nil {
				progress("%s: stop: %v", t.name, err)
			}
		}
	}()
	for range n {
		b, err := t.idle(ctx)
		if b != nil {
			boxes = append(boxes, b)
		}
		if err != nil {
			m.Error = err.Error()
			return m
		}
	}
	var procs, pss, rss, kmem int
	kmemOK := true
	for _, b := range boxes {
		procs += len(b.hostPIDs)
		for _, p := range b.hostPIDs {
			ps, rs, _ := smaps(p)
			pss, rss = pss+ps, rss+rs
		}
		k := -1
		if b.cgPID != 0 {
			k = kmemKiB(b.cgPID)
		}
		if k < 0 {
			kmemOK = false
		}
		kmem += k
	}
	f := float64(n)
	m.Procs, m.PSS, m.RSS, m.KernelKB = float64(procs)/f, float64(pss)/f, float64(rss)/f, float64(kmem)/f
	if !kmemOK {
		m.KernelKB = -1
	}
	return m
}

// Density is how many idle sandboxes one tool ran at once.
type Density struct {
	Tool    string  `json:"tool"`
	Cap     int     `json:"cap"`
	Reached int     `json:"reached"`
	Seconds float64 `json:"seconds_to_start_all"`
	// StopSeconds is how long closing them all took.
	StopSeconds float64 `json:"seconds_to_stop_all"`
	Error       string  `json:"error,omitempty"`
}

func scenarioDensity(ctx context.Context, e *env, cfg config, res *Results) error {
	t := e.tools[0] // berth (Go API); the others would take longer than the time box
	d := Density{Tool: t.name, Cap: cfg.DensityCap}
	var boxes []*idleBox
	start := time.Now()
	for len(boxes) < cfg.DensityCap {
		if err := ctx.Err(); err != nil {
			break
		}
		stop, err := t.sleep(ctx)
		if err != nil {
			d.Error = err.Error()
			break
		}
		boxes = append(boxes, &idleBox{stop: stop})
		if len(boxes)%100 == 0 {
			progress("density: %d running", len(boxes))
		}
	}
	d.Seconds = time.Since(start).Seconds()
	d.Reached = len(boxes)
	progress("density: stopping %d sandboxes", len(boxes))
	stopStart := time.Now()
	stopAll(boxes)
	d.StopSeconds = time.Since(stopStart).Seconds()
	res.Density = append(res.Density, d)
	e.note("density is measured for berth only; the sandboxes start one after another")
	return ctx.Err()
}

// stopAll stops boxes a few at a time.
func stopAll(boxes []*idleBox) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, b := range boxes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			b.stop()
			<-sem
		}()
	}
	wg.Wait()
}

// Throughput is completed start→exit runs per second.
type Throughput struct {
	Tool    string  `json:"tool"`
	Workers int     `json:"workers"`
	Runs    int     `json:"runs"`
	PerSec  float64 `json:"per_second"`
	Error   string  `json:"error,omitempty"`
}

func scenarioThroughput(ctx context.Context, e *env, cfg config, res *Results) error {
	for _, t := range e.tools[:2] { // berth (Go API), and from a sandbox.Pool
		if t.run == nil || t.err != "" {
			continue
		}
		if err := throughput(ctx, t, cfg, res); err != nil {
			return err
		}
	}
	return nil
}

func throughput(ctx context.Context, t *tool, cfg config, res *Results) error {
	for _, workers := range []int{1, 2} {
		progress("throughput: %s, %d worker(s) for %v", t.name, workers, cfg.ThroughputTime)
		var runs atomic.Int64
		var firstErr atomic.Value
		deadline := time.Now().Add(cfg.ThroughputTime)
		start := time.Now()
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) && ctx.Err() == nil {
					if err := t.run(ctx); err != nil {
						firstErr.CompareAndSwap(nil, err.Error())
						return
					}
					runs.Add(1)
				}
			}()
		}
		wg.Wait()
		el := time.Since(start).Seconds()
		tp := Throughput{Tool: t.name, Workers: workers, Runs: int(runs.Load()), PerSec: float64(runs.Load()) / el}
		if s, ok := firstErr.Load().(string); ok {
			tp.Error = s
		}
		res.Throughput = append(res.Throughput, tp)
	}
	return ctx.Err()
}

// Layerfs is the store's own cost: an overlay rootfs and an import.
type Layerfs struct {
	PrepareRuns   int     `json:"prepare_release_runs"`
	PrepareP50    float64 `json:"prepare_release_p50_ms"`
	PrepareP99    float64 `json:"prepare_release_p99_ms"`
	Imports       int     `json:"imports"`
	ImportP50     float64 `json:"import_p50_ms"`
	ImportMax     float64 `json:"import_max_ms"`
	ImportedBytes int64   `json:"tarball_bytes"`
}

func scenarioLayerfs(ctx context.Context, e *env, cfg config, res *Results) error {
	var l Layerfs
	var prep []float64
	for i := range cfg.PrepareRuns {
		key := fmt.Sprintf("bench-prepare-%d", i)
		start := time.Now()
		if _, err := e.store.Prepare(ctx, key, e.img, nil); err != nil {
			return err
		}
		if err := e.store.Release(ctx, key); err != nil {
			return err
		}
		prep = append(prep, float64(time.Since(start).Microseconds())/1000)
	}
	l.PrepareRuns, l.PrepareP50, l.PrepareP99 = len(prep), bench.Percentile(prep, 0.5), bench.Percentile(prep, 0.99)
	var imp []float64
	for i := range cfg.Imports {
		dir := filepath.Join(e.tmp, fmt.Sprintf("import-%d", i))
		s, err := layerfs.Open(dir, nil)
		if err != nil {
			return err
		}
		start := time.Now()
		_, err = s.Import(ctx, e.tarball, &layerfs.ImportOptions{Name: "alpine:bench"})
		d := time.Since(start)
		os.RemoveAll(dir)
		if err != nil {
			return err
		}
		imp = append(imp, float64(d.Microseconds())/1000)
	}
	l.Imports, l.ImportP50, l.ImportMax = len(imp), bench.Percentile(imp, 0.5), bench.Percentile(imp, 1)
	if fi, err := os.Stat(e.tarball); err == nil {
		l.ImportedBytes = fi.Size()
	}
	res.Layerfs = l
	return nil
}
