package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/berth-dev/berth/bench"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
	"github.com/berth-dev/berth/sandbox"
)

// Plugins is what scenario 7 measured: what running a storage or network
// backend out of process, as a plugin, costs.
type Plugins struct {
	// Calls are single calls through the host adapters to the no-op
	// plugins, which do nothing themselves: the plugin layer's own cost.
	Calls []PluginCalls `json:"calls"`
	// Starts are OpenStorage → ready → Close of the no-op storage
	// plugin, with and without AutoMTLS, and the restart after kill -9.
	Starts []Latency `json:"starts"`
	// PrepareRelease is Prepare then Release of a rootfs of the Alpine
	// image with the built-in overlay and with each storage plugin: the
	// same work in and out of process, for overlay-storage.
	PrepareRelease []Latency `json:"prepare_release"`
	// StartExit is start→exit of `true` with the built-in overlay and
	// with each storage plugin.
	StartExit []Latency `json:"start_exit"`
	// AttachDetach is Attach then Detach of one network namespace with
	// the built-in bridge and with each network plugin.
	AttachDetach []Latency `json:"attach_detach"`
	// Built lists the plugins found and built, with their Info.
	Built []string `json:"built"`
}

// PluginCalls is one operation's latency, in microseconds.
type PluginCalls struct {
	Op         string  `json:"op"`
	Goroutines int     `json:"goroutines"`
	Calls      int     `json:"calls"`
	P50        float64 `json:"p50_us"`
	P99        float64 `json:"p99_us"`
	Max        float64 `json:"max_us"`
	PerSec     float64 `json:"per_second"`
	Error      string  `json:"error,omitempty"`
}

// pluginConcurrency is the concurrent variant's goroutine count: more
// than the cores, as when many sandboxes start at once.
const pluginConcurrency = 16

// pluginBinary is a plugin built for the run and opened once to learn
// its kind.
type pluginBinary struct {
	name, path string
	info       plugin.Info
	err        error
}

// scenarioPlugins builds the plugins, then times the no-op ones (the
// plugin layer's own cost per call and per start) and every other one
// against the built-in backend of its kind.
func scenarioPlugins(ctx context.Context, e *env, cfg config, res *Results) error {
	p := &Plugins{}
	res.Plugins = p
	bins, err := e.buildPlugins(ctx)
	if err != nil {
		return err
	}
	var nopStorage, nopNetwork string
	var storages, networks []pluginBinary
	for _, b := range bins {
		switch {
		case b.err != nil:
			p.Built = append(p.Built, fmt.Sprintf("%s: %v", b.name, b.err))
			continue
		case b.name == "nop-storage":
			nopStorage = b.path
		case b.name == "nop-network":
			nopNetwork = b.path
		case b.info.Kind == plugin.KindStorage:
			storages = append(storages, b)
		case b.info.Kind == plugin.KindNetwork:
			networks = append(networks, b)
		}
		p.Built = append(p.Built, fmt.Sprintf("%s: %s plugin %q version %q, protocol %d, capabilities [%s]",
			b.name, b.info.Kind, b.info.Name, b.info.Version, b.info.Protocol, strings.Join(b.info.Capabilities, " ")))
	}

	if nopStorage != "" {
		progress("plugins: calls to the no-op storage plugin")
		p.Calls = append(p.Calls, e.storageCalls(ctx, nopStorage, cfg)...)
		progress("plugins: starts of the no-op storage plugin")
		p.Starts = e.pluginStarts(ctx, nopStorage, cfg)
	}
	if nopNetwork != "" {
		progress("plugins: calls to the no-op network plugin")
		p.Calls = append(p.Calls, e.networkCalls(ctx, nopNetwork, cfg)...)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := e.storageTables(ctx, storages, cfg, p); err != nil {
		return err
	}
	if nopNetwork != "" {
		networks = append([]pluginBinary{{name: "nop-network", path: nopNetwork}}, networks...)
	}
	err = e.networkTable(ctx, networks, cfg, p)
	e.note("scenario 7 times plugins built from this tree: plugin/internal/nopplugin (no-op storage and network, for the plugin layer's own cost) and every plugin in examples/plugins, with their state in the run's temporary directory; each network backend attaches and detaches one network namespace of its own, held by a sleeping process; the built-in bridge and cni-network attach to the same named network, %s (bridge %s, %s), p2p-network takes its links from %s", pluginNetwork, pluginNetworkBridge, pluginNetworkSubnet, p2pSubnet)
	return err
}

// storageTables times Prepare+Release and start→exit with the built-in
// overlay and each storage plugin, taking turns.
func (e *env) storageTables(ctx context.Context, storages []pluginBinary, cfg config, p *Plugins) error {
	// Each storage backend, built-in first, opened once for both tables.
	backends := []storageBackend{{name: "built-in overlay (layerfs)", s: e.store}}
	for _, b := range storages {
		sb := storageBackend{name: b.name + " (plugin)"}
		s, err := plugin.OpenStorage(ctx, b.path, e.pluginOptionsFor(b.name))
		if err != nil {
			sb.err = err.Error()
		} else {
			e.onCleanup(s.Close)
			sb.s = s
		}
		backends = append(backends, sb)
	}

	progress("plugins: Prepare+Release with each storage backend, %d runs", cfg.PrepareRuns)
	var tools []*tool
	for _, b := range backends {
		tools = append(tools, b.tool(func(ctx context.Context) error {
			key := e.id("prep")
			if _, err := b.s.Prepare(ctx, key, e.img, nil); err != nil {
				return err
			}
			return b.s.Release(ctx, key)
		}))
	}
	var err error
	if p.PrepareRelease, err = roundRobin(ctx, tools, cfg.PrepareRuns); err != nil {
		return err
	}

	runs := max(cfg.Runs, 50)
	progress("plugins: start→exit with each storage backend, %d runs", runs)
	tools = nil
	for _, b := range backends {
		tools = append(tools, b.tool(func(ctx context.Context) error {
			o := e.berthOptions("true")
			o.Storage = b.s
			return runBerth(ctx, o)
		}))
	}
	p.StartExit, err = roundRobin(ctx, tools, runs)
	return err
}

// networkTable times Attach+Detach with the built-in bridge and each
// network plugin, taking turns.
func (e *env) networkTable(ctx context.Context, networks []pluginBinary, cfg config, p *Plugins) error {
	runs := max(cfg.Runs, 50)
	progress("plugins: attach→detach with each network backend, %d runs", runs)
	var tools []*tool
	if e.nets != nil {
		t := &tool{name: "built-in CNI bridge (netplug)"}
		net, err := e.nets.Create(ctx, pluginNetwork, &netplug.NetworkOptions{
			Bridge: pluginNetworkBridge, Subnet: netip.MustParsePrefix(pluginNetworkSubnet)})
		if err != nil {
			t.err = err.Error()
		} else {
			t = e.attachTool(t.name, net, "")
		}
		tools = append(tools, t)
	}
	for _, b := range networks {
		t := &tool{name: b.name + " (plugin)"}
		n, err := plugin.OpenNetwork(ctx, b.path, e.pluginOptionsFor(b.name))
		if err != nil {
			t.err = err.Error()
			tools = append(tools, t)
			continue
		}
		e.onCleanup(n.Close)
		dummy := ""
		if b.name == "nop-network" {
			dummy = "eth0"
		}
		tools = append(tools, e.attachTool(t.name, n, dummy))
	}
	var err error
	p.AttachDetach, err = roundRobin(ctx, tools, runs)
	return err
}

// pluginNetwork is the named CNI bridge network the built-in netplug and
// the cni-network plugin both attach to in the attach→detach table, so
// that they do the same work; its bridge and subnet are this run's own.
const (
	pluginNetwork       = "bench-plugins"
	pluginNetworkBridge = "berth-bench-p"
	pluginNetworkSubnet = "10.218.0.0/24"
	// p2pSubnet keeps p2p-network's links off its default range, which
	// other users of the host may be using.
	p2pSubnet = "10.219.0.0/24"
)

// pluginOptions are the options every plugin of the run shares: sockets,
// rootfs mounts and the example plugins' own state in the run's
// temporary directory (through the variables each reads), the run's
// store, and cni-network pointed at the run's netplug configuration.
func (e *env) pluginOptions() *plugin.Options {
	state := func(name string) string { return filepath.Join(e.tmp, "plugins", "state", name) }
	return &plugin.Options{
		Store:    e.store,
		RunDir:   filepath.Join(e.tmp, "plugins", "run"),
		MountDir: filepath.Join(e.tmp, "plugins", "rootfs"),
		Env: []string{
			"BERTH_OVERLAY_STORAGE_ROOT=" + state("overlay-storage"),
			"BERTH_TMPFS_STORAGE_ROOT=" + state("tmpfs-storage"),
			"BERTH_CNI_NETWORK_ROOT=" + state("cni-network"),
			"BERTH_CNI_NETWORK_CONFIG_DIR=" + filepath.Join(e.tmp, "net", "config"),
			"BERTH_CNI_NETWORK_RUN_DIR=" + filepath.Join(e.tmp, "net", "run"),
			"BERTH_P2P_STATE_DIR=" + state("p2p-network"),
			"BERTH_P2P_SUBNET=" + p2pSubnet,
		},
	}
}

// pluginOptionsFor adds the settings the plugin named name needs here.
func (e *env) pluginOptionsFor(name string) *plugin.Options {
	o := e.pluginOptions()
	if name == "cni-network" {
		o.Settings = map[string]string{"network": pluginNetwork}
	}
	return o
}

// buildPlugins builds the no-op plugins and every plugin in
// examples/plugins, and starts each once (Describe) to learn its kind. A
// plugin that fails to build or start is kept with its error.
func (e *env) buildPlugins(ctx context.Context) ([]pluginBinary, error) {
	dir := filepath.Join(e.tmp, "plugins", "bin")
	for _, d := range []string{dir, e.pluginOptions().RunDir, e.pluginOptions().MountDir, filepath.Join(e.tmp, "plugins", "state")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	pkgs := [][2]string{{"nop-storage", "./plugin/internal/nopplugin/storage"}, {"nop-network", "./plugin/internal/nopplugin/network"}}
	// Every directory of examples/plugins with Go files is a plugin.
	sources, _ := filepath.Glob("examples/plugins/*/*.go")
	var dirs []string
	for _, f := range sources {
		if d := filepath.Dir(f); !slices.Contains(dirs, d) && !strings.HasSuffix(f, "_test.go") {
			dirs = append(dirs, d)
		}
	}
	for _, d := range dirs {
		pkgs = append(pkgs, [2]string{filepath.Base(d), "./" + d})
	}
	var bins []pluginBinary
	for _, p := range pkgs {
		progress("plugins: building %s", p[1])
		b := pluginBinary{name: p[0], path: filepath.Join(dir, p[0])}
		if out, err := exec.CommandContext(ctx, goTool(), "build", "-o", b.path, p[1]).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build: %w: %s", err, firstLine(string(out)))
			bins = append(bins, b)
			continue
		}
		b.info, b.err = plugin.Describe(ctx, b.path, e.pluginOptionsFor(b.name))
		bins = append(bins, b)
	}
	return bins, ctx.Err()
}

// storageCalls times the emptiest call (List) and Prepare+Release through
// the host adapter, which checks the plugin's answer and mounts it.
func (e *env) storageCalls(ctx context.Context, path string, cfg config) []PluginCalls {
	s, err := plugin.OpenStorage(ctx, path, e.pluginOptions())
	if err != nil {
		return []PluginCalls{{Op: "storage: open", Goroutines: 1, Error: err.Error()}}
	}
	defer s.Close()
	var rows []PluginCalls
	for _, g := range []int{1, pluginConcurrency} {
		rows = append(rows, timeCalls(ctx, "storage: List (the emptiest call)", cfg.PluginCalls, g, func(ctx context.Context, _ int) error {
			_, err := s.Rootfses(ctx)
			return err
		}))
	}
	for _, g := range []int{1, pluginConcurrency} {
		prefix := e.id("prep") + "-"
		rows = append(rows, timeCalls(ctx, "storage: Prepare+Release (mounts a tmpfs)", cfg.PluginCalls, g, func(ctx context.Context, i int) error {
			key := prefix + strconv.Itoa(i)
			if _, err := s.Prepare(ctx, key, e.img, nil); err != nil {
				return err
			}
			return s.Release(ctx, key)
		}))
	}
	return rows
}

// networkCalls times Attach+Detach of the no-op network plugin on one
// namespace, through the host adapter, which checks the answer.
func (e *env) networkCalls(ctx context.Context, path string, cfg config) []PluginCalls {
	netns, err := e.newNetns("eth0")
	if err != nil {
		return []PluginCalls{{Op: "network: namespace", Goroutines: 1, Error: err.Error()}}
	}
	n, err := plugin.OpenNetwork(ctx, path, e.pluginOptions())
	if err != nil {
		return []PluginCalls{{Op: "network: open", Goroutines: 1, Error: err.Error()}}
	}
	defer n.Close()
	var rows []PluginCalls
	for _, g := range []int{1, pluginConcurrency} {
		prefix := e.id("attach") + "-"
		rows = append(rows, timeCalls(ctx, "network: Attach+Detach", cfg.PluginCalls, g, func(ctx context.Context, i int) error {
			id := prefix + strconv.Itoa(i)
			if _, err := n.Attach(ctx, id, netns, nil); err != nil {
				return err
			}
			return n.Detach(ctx, id, netns)
		}))
	}
	return rows
}

func timeCalls(ctx context.Context, op string, n, g int, call func(context.Context, int) error) PluginCalls {
	c, err := bench.TimeCalls(ctx, n, g, call)
	row := PluginCalls{Op: op, Goroutines: g}
	if c != nil {
		row.Calls, row.P50, row.P99, row.Max, row.PerSec = len(c.Samples), c.P50(), c.P99(), c.Max(), c.PerSecond()
	}
	if err != nil {
		row.Error = err.Error()
		progress("%s, %d goroutines: %v", op, g, err)
	}
	return row
}

// pluginStarts times a plugin's start until it is ready, with and
// without AutoMTLS, and the first successful call after a kill -9.
func (e *env) pluginStarts(ctx context.Context, path string, cfg config) []Latency {
	var rows []Latency
	for _, mtls := range []bool{false, true} {
		name := "OpenStorage → ready"
		if mtls {
			name += ", AutoMTLS"
		}
		o := e.pluginOptions()
		o.AutoMTLS = mtls
		rows = append(rows, sampleLatency(ctx, name, cfg.PluginStarts, func(ctx context.Context) (time.Duration, error) {
			t := time.Now()
			s, err := plugin.OpenStorage(ctx, path, o)
			d := time.Since(t)
			if err != nil {
				return 0, err
			}
			return d, s.Close()
		}))
	}
	s, err := plugin.OpenStorage(ctx, path, e.pluginOptions())
	if err != nil {
		return append(rows, Latency{Tool: "restart after kill -9", Error: err.Error()})
	}
	defer s.Close()
	rows = append(rows, sampleLatency(ctx, "restart after kill -9 (first successful call)", cfg.PluginStarts, func(ctx context.Context) (time.Duration, error) {
		if _, err := s.Rootfses(ctx); err != nil { // the plugin is running
			return 0, err
		}
		if err := killChild(path); err != nil {
			return 0, err
		}
		// The call that finds the plugin dead fails with
		// ErrPluginExited; a later one starts it again.
		t := time.Now()
		for try := 0; ; try++ {
			_, err := s.Rootfses(ctx)
			if err == nil {
				return time.Since(t), nil
			}
			if try == 2 {
				return 0, fmt.Errorf("no call succeeded after kill -9: %w", err)
			}
		}
	}))
	return rows
}

// sampleLatency collects n samples of f, which times what it measures
// itself; the first error ends the row.
func sampleLatency(ctx context.Context, name string, n int, f func(context.Context) (time.Duration, error)) Latency {
	l := Latency{Tool: name}
	for range n {
		if ctx.Err() != nil {
			break
		}
		d, err := f(ctx)
		if err != nil {
			l.Error = err.Error()
			progress("%s: %v", name, err)
			break
		}
		l.Samples = append(l.Samples, float64(d.Microseconds())/1000)
	}
	l.N = len(l.Samples)
	l.P50, l.P90, l.P99 = bench.Percentile(l.Samples, 0.5), bench.Percentile(l.Samples, 0.9), bench.Percentile(l.Samples, 0.99)
	l.Max = bench.Percentile(l.Samples, 1)
	return l
}

// A storageBackend is the built-in store or an opened storage plugin.
type storageBackend struct {
	name string
	s    sandbox.Storage
	err  string // why it could not be opened
}

// tool is run under the backend's name, or its error.
func (b storageBackend) tool(run func(context.Context) error) *tool {
	if b.err != "" {
		return &tool{name: b.name, err: b.err}
	}
	return &tool{name: b.name, run: run}
}

// attachTool attaches and detaches a namespace of its own with n; dummy,
// if set, names a link made in the namespace first.
func (e *env) attachTool(name string, n sandbox.Network, dummy string) *tool {
	t := &tool{name: name}
	netns, err := e.newNetns(dummy)
	if err != nil {
		t.err = err.Error()
		return t
	}
	t.run = func(ctx context.Context) error {
		id := e.id("net")
		if _, err := n.Attach(ctx, id, netns, nil); err != nil {
			return err
		}
		return n.Detach(ctx, id, netns)
	}
	return t
}

// newNetns makes a network namespace held by a sleeping child, which
// dies with this process and is killed at cleanup. dummy, if set, names
// a link made in it (a veth pair, both ends inside: the dummy driver is a
// module that may not be loaded): the no-op network plugin reports one it
// did not make, and berth checks that it is there.
func (e *env) newNetns(dummy string) (string, error) {
	cmd := exec.Command("sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("network namespace: %w", err)
	}
	e.onCleanup(func() error { cmd.Process.Kill(); cmd.Wait(); return nil })
	path := fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
	if dummy == "" {
		return path, nil
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return "", err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", err
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dummy}, PeerName: dummy + "p"}); err != nil {
		return "", fmt.Errorf("add %s in %s: %w", dummy, path, err)
	}
	return path, nil
}

// killChild kills this process's child running the binary at path with
// SIGKILL and waits until it has been reaped.
func killChild(path string) error {
	var pid int
	for _, p := range children(os.Getpid()) {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p)); err == nil && exe == path {
			pid = p
		}
	}
	if pid == 0 {
		return fmt.Errorf("no child of this process runs %s", path)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	return fmt.Errorf("plugin %d still there 10s after SIGKILL", pid)
}

// markdown writes scenario 7's tables.
func (p *Plugins) markdown(b *strings.Builder) {
	b.WriteString("\n## 7. plugins: what an out-of-process backend costs\n\n")
	b.WriteString("Per call, through the host adapters to the no-op plugins (plugin/internal/nopplugin), which do nothing themselves; Prepare+Release includes berth's check and mount of the plugin's answer (a small tmpfs).\n\n")
	b.WriteString("| call | goroutines | calls | p50 µs | p99 µs | max µs | calls/s | result |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, c := range p.Calls {
		result := "ok"
		if c.Error != "" {
			result = "FAILED: " + cell(c.Error)
		}
		fmt.Fprintf(b, "| %s | %d | %d | %.0f | %.0f | %.0f | %.0f | %s |\n", c.Op, c.Goroutines, c.Calls, c.P50, c.P99, c.Max, c.PerSec, result)
	}
	latencyTable(b, "Starting the no-op storage plugin", "what", p.Starts)
	latencyTable(b, "Prepare then Release of an Alpine rootfs by storage backend (overlay-storage does the built-in's work behind the protocol)", "storage", p.PrepareRelease)
	latencyTable(b, "start→exit of `true` by storage backend", "storage", p.StartExit)
	latencyTable(b, "Attach then Detach of one network namespace by network backend", "network", p.AttachDetach)
	if len(p.Built) > 0 {
		b.WriteString("\nPlugins built for this run:\n\n")
		for _, s := range slices.Sorted(slices.Values(p.Built)) {
			fmt.Fprintf(b, "- %s\n", cell(s))
		}
	}
}

// pluginsOnlyMarkdown is the body of results.md when only scenario 7 ran.
func (r *Results) pluginsOnlyMarkdown(b *strings.Builder) {
	b.WriteString("\nOnly scenario 7 ran (-plugins only).\n")
	if r.Plugins != nil {
		r.Plugins.markdown(b)
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(b, "- %s\n", n)
		}
	}
}

func latencyTable(b *strings.Builder, title, what string, rows []Latency) {
	fmt.Fprintf(b, "\n%s:\n\n| %s | runs | p50 ms | p90 ms | p99 ms | max ms | result |\n| --- | ---: | ---: | ---: | ---: | ---: | --- |\n", title, what)
	for _, l := range rows {
		result := "ok"
		if l.Error != "" {
			result = "FAILED: " + cell(l.Error)
		}
		if l.N == 0 {
			fmt.Fprintf(b, "| %s | 0 | – | – | – | – | %s |\n", l.Tool, result)
			continue
		}
		fmt.Fprintf(b, "| %s | %d | %.2f | %.2f | %.2f | %.2f | %s |\n", l.Tool, l.N, l.P50, l.P90, l.P99, l.Max, result)
	}
}
