// Command berth-bench compares berth with runc, crun, bubblewrap and podman
// on the same Alpine rootfs at the same isolation (new pid, mount, uts, ipc
// and net namespaces, no network), in one process so that every tool sees
// the same machine state. Tools alternate round-robin within each
// iteration so that drift (page cache, thermal, background load) hits all
// of them alike.
//
//	berth-bench -quick|-full -out bench/results
//
// Scenario 7 times storage and network backends run as plugins against
// the built-in ones; -plugins only runs it alone, -plugins no leaves it out.
// Scenario 3b measures idle detached sandboxes (`berth run -d`); -detached
// only and -detached no do the same for it.
//
// It writes results.json, results.md, startup-cdf.svg and memory.svg to
// -out, prints progress to stderr and the markdown tables to stdout. It
// needs root and leaves nothing behind: every container, cgroup, mount,
// network interface and temporary directory it makes is removed on exit,
// also on error or interrupt.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

var (
	quick    = flag.Bool("quick", false, "quick mode: 30 runs per tool, idle sandboxes up to 100, density cap 200 (the default)")
	full     = flag.Bool("full", false, "full mode: 200 runs per tool, idle sandboxes up to 1000, density cap 2000")
	outDir   = flag.String("out", "bench/results", "directory for results.json, results.md and the SVG plots")
	image    = flag.String("image", "../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz", "the Alpine minirootfs tarball every tool runs")
	keepTmp  = flag.Bool("keep-tmp", false, "leave the temporary directory (stores, bundles) in place, for debugging")
	plugins  = flag.String("plugins", "yes", "scenario 7, what a plugin costs: yes, no, or only (skip scenarios 1-6)")
	detached = flag.String("detached", "yes", "scenario 3b, idle detached sandboxes of berth run -d: yes, no, or only (skip the others)")
)

func main() {
	flag.Parse()
	if *plugins != "yes" && *plugins != "no" && *plugins != "only" {
		fmt.Fprintf(os.Stderr, "berth-bench: -plugins %q: want yes, no or only\n", *plugins)
		os.Exit(2)
	}
	if *detached != "yes" && *detached != "no" && *detached != "only" {
		fmt.Fprintf(os.Stderr, "berth-bench: -detached %q: want yes, no or only\n", *detached)
		os.Exit(2)
	}
	if *plugins == "only" && *detached == "only" {
		fmt.Fprintln(os.Stderr, "berth-bench: -plugins only and -detached only exclude each other")
		os.Exit(2)
	}
	if *quick && *full {
		fmt.Fprintln(os.Stderr, "berth-bench: -quick and -full exclude each other")
		os.Exit(2)
	}
	cfg := quickConfig
	if *full {
		cfg = fullConfig
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth-bench:", err)
		os.Exit(1)
	}
}

// config is what differs between quick and full mode.
type config struct {
	Mode           string
	Runs           int   // start→exit samples per tool
	IdleN          []int // idle sandbox counts for the memory scenario
	DetachedN      []int // idle detached sandbox counts (`berth run -d`)
	PodmanIdleMax  int   // podman is slow to start and stop: cap its idle N
	DensityCap     int
	ThroughputTime time.Duration
	Imports        int // fresh-store imports timed
	PrepareRuns    int
	PluginCalls    int // calls timed per plugin operation and concurrency
	PluginStarts   int // plugin starts (and restarts) timed
}

var (
	quickConfig = config{Mode: "quick", Runs: 30, IdleN: []int{1, 10, 100}, DetachedN: []int{100}, PodmanIdleMax: 10,
		DensityCap: 200, ThroughputTime: 4 * time.Second, Imports: 5, PrepareRuns: 100,
		PluginCalls: 2000, PluginStarts: 20}
	fullConfig = config{Mode: "full", Runs: 200, IdleN: []int{1, 10, 100, 1000}, DetachedN: []int{100, 1000}, PodmanIdleMax: 100,
		DensityCap: 2000, ThroughputTime: 20 * time.Second, Imports: 20, PrepareRuns: 1000,
		PluginCalls: 20000, PluginStarts: 100}
)

func run(ctx context.Context, cfg config) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("must run as root: it creates namespaces, cgroups and mounts")
	}
	tarball, err := filepath.Abs(*image)
	if err != nil {
		return err
	}
	if _, err := os.Stat(tarball); err != nil {
		return fmt.Errorf("image tarball: %w", err)
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	began := time.Now()
	e, err := setup(ctx, tarball)
	// Cleanup runs whatever happened, and its failure is an error of the
	// run: the benchmark must not leave mounts, cgroups or links behind.
	defer func() {
		if cerr := e.cleanup(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
		}
	}()
	if err != nil {
		return err
	}
	res := &Results{Mode: cfg.Mode, Started: began.UTC(), Machine: machineInfo(), Notes: e.notes, PluginsOnly: *plugins == "only", DetachedOnly: *detached == "only"}
	res.Machine.Tools = e.versions()

	scenarios := []struct {
		name string
		f    func(context.Context, *env, config, *Results) error
	}{
		{"1 start→exit", scenarioStartup},
		{"2 start→exit with a network", scenarioNetwork},
		{"3 memory per idle sandbox", scenarioMemory},
		{"3b memory per idle detached sandbox", scenarioDetached},
		{"4 density", scenarioDensity},
		{"5 throughput", scenarioThroughput},
		{"6 layerfs", scenarioLayerfs},
		{"7 plugins", scenarioPlugins},
	}
	for _, s := range scenarios {
		if skipScenario(s.name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		progress("scenario %s", s.name)
		t := time.Now()
		if err := s.f(ctx, e, cfg, res); err != nil {
			return fmt.Errorf("scenario %s: %w", s.name, err)
		}
		progress("scenario %s took %v", s.name, time.Since(t).Round(time.Millisecond))
	}
	res.DurationSeconds = time.Since(began).Seconds()
	res.Notes = e.notes
	if res.DetachedOnly {
		res = res.mergeDetached(*outDir)
	}
	return res.write(*outDir)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s berth-bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// skipScenario reports whether -plugins or -detached leaves the
// scenario out.
func skipScenario(name string) bool {
	isPlugins, isDetached := name == "7 plugins", name == "3b memory per idle detached sandbox"
	return (*plugins == "no" && isPlugins) || (*plugins == "only" && !isPlugins) ||
		(*detached == "no" && isDetached) || (*detached == "only" && !isDetached)
}
