package bench_test

// Benchmarks of what a plugin adds to a sandbox's start, and to a
// network attachment, against the built-in backend doing the same work:
// the example plugins in examples/plugins, built from this tree. They are
// berth-bench's scenario 7 as `go test -bench` (the per-call and per
// plugin start benchmarks are in the plugin package):
//
//	go test -run '^$' -bench Plugin -benchtime 50x -timeout 10m ./bench/
//
// They need root and the test images in ../shared/images.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/bench"
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
	"github.com/berth-dev/berth/sandbox"
)

// BenchmarkPluginStartExit times start→exit of `true` in an Alpine
// sandbox whose rootfs comes from the built-in overlay, from the
// overlay-storage plugin (the same overlay, made behind the protocol) and
// from the tmpfs-storage plugin.
func BenchmarkPluginStartExit(b *testing.B) {
	ctx := context.Background()
	tmp := benchRoot(b)
	store, err := layerfs.Open(filepath.Join(tmp, "store"), nil)
	if err != nil {
		b.Fatal(err)
	}
	const tarball = "../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz"
	if _, err := store.Import(ctx, tarball, &layerfs.ImportOptions{Name: "alpine:bench"}); err != nil {
		b.Fatalf("import %s (the benchmarks need ../shared/images beside the repository): %v", tarball, err)
	}
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: fmt.Sprintf("berth-bench-test-%d", os.Getpid())})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cgm.RemoveParent() })
	bins := benchBuild(b, tmp, "overlay-storage", "tmpfs-storage")
	opts := benchPluginOptions(tmp, store)

	backends := []struct {
		name string
		s    sandbox.Storage
	}{{"builtin-overlay", store}}
	for _, name := range []string{"overlay-storage", "tmpfs-storage"} {
		s, err := plugin.OpenStorage(ctx, bins[name], opts)
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		b.Cleanup(func() { s.Close() })
		backends = append(backends, struct {
			name string
			s    sandbox.Storage
		}{name, s})
	}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			var ms []float64
			for b.Loop() {
				t := time.Now()
				res, err := sandbox.New("alpine:bench", &sandbox.Options{Args: []string{"true"}, Storage: be.s,
					Cgroups: cgm, StateDir: filepath.Join(tmp, "state")}).Run(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if !res.Success() {
					b.Fatalf("true: exit code %d, signal %d", res.ExitCode, res.Signal)
				}
				ms = append(ms, float64(time.Since(t).Microseconds())/1000)
			}
			benchReportMS(b, ms)
		})
	}
}

// BenchmarkPluginAttachDetach times Attach then Detach of a network
// namespace with the built-in CNI bridge, with the cni-network plugin
// (the same bridge network, attached behind the protocol) and with the
// p2p-network plugin (a veth pair, no bridge, no iptables).
func BenchmarkPluginAttachDetach(b *testing.B) {
	ctx := context.Background()
	tmp := benchRoot(b)
	// The bridge plugin turns on IPv4 forwarding host-wide; leave it as
	// it was.
	const forward = "/proc/sys/net/ipv4/ip_forward"
	if was, err := os.ReadFile(forward); err == nil {
		b.Cleanup(func() { os.WriteFile(forward, was, 0o644) })
	}
	nets, err := netplug.Open(&netplug.Options{ConfigDir: filepath.Join(tmp, "net", "config"), RunDir: filepath.Join(tmp, "net", "run")})
	if err != nil {
		b.Fatal(err)
	}
	// The bridge and subnet are this benchmark's own, and pruned after.
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := nets.Prune(ctx); err != nil {
			b.Errorf("prune: %v", err)
		}
	})
	bridge, err := nets.Create(ctx, "bench-plugins", &netplug.NetworkOptions{
		Bridge: fmt.Sprintf("berthbp%d", os.Getpid()%100000), Subnet: netip.MustParsePrefix("10.220.0.0/24")})
	if err != nil {
		b.Fatal(err)
	}
	bins := benchBuild(b, tmp, "cni-network", "p2p-network")
	backends := []struct {
		name string
		n    sandbox.Network
	}{{"builtin-bridge", bridge}}
	for _, name := range []string{"cni-network", "p2p-network"} {
		opts := benchPluginOptions(tmp, nil)
		if name == "cni-network" {
			opts.Settings = map[string]string{"network": "bench-plugins"}
		}
		n, err := plugin.OpenNetwork(ctx, bins[name], opts)
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		b.Cleanup(func() { n.Close() })
		backends = append(backends, struct {
			name string
			n    sandbox.Network
		}{name, n})
	}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			netns := benchNetns(b)
			var ms []float64
			i := 0
			for b.Loop() {
				i++
				id := fmt.Sprintf("bench-%d-%d", os.Getpid(), i)
				t := time.Now()
				if _, err := be.n.Attach(ctx, id, netns, nil); err != nil {
					b.Fatal(err)
				}
				if err := be.n.Detach(ctx, id, netns); err != nil {
					b.Fatal(err)
				}
				ms = append(ms, float64(time.Since(t).Microseconds())/1000)
			}
			benchReportMS(b, ms)
		})
	}
}

func benchReportMS(b *testing.B, ms []float64) {
	b.ReportMetric(bench.Percentile(ms, 0.5), "p50-ms")
	b.ReportMetric(bench.Percentile(ms, 0.9), "p90-ms")
}

// benchRoot is the benchmark's temporary directory, skipping without
// root. Its removal at the end fails, and says so, if a plugin or berth
// left anything mounted in it.
func benchRoot(b *testing.B) string {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	return b.TempDir()
}

// benchBuild builds the named example plugins into tmp/bin.
func benchBuild(b *testing.B, tmp string, names ...string) map[string]string {
	b.Helper()
	bins := map[string]string{}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, name := range names {
		out := filepath.Join(tmp, "bin", name)
		cmd := exec.Command(goTool, "build", "-o", out, "../examples/plugins/"+name)
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("build %s: %v\n%s", name, err, msg)
		}
		bins[name] = out
	}
	return bins
}

// benchPluginOptions puts the plugins' sockets, mounts and state under
// tmp, through the variables each example plugin reads.
func benchPluginOptions(tmp string, store *layerfs.Store) *plugin.Options {
	state := func(name string) string { return filepath.Join(tmp, "plugins", "state", name) }
	return &plugin.Options{
		Store:    store,
		RunDir:   filepath.Join(tmp, "plugins", "run"),
		MountDir: filepath.Join(tmp, "plugins", "rootfs"),
		Env: []string{
			"BERTH_OVERLAY_STORAGE_ROOT=" + state("overlay-storage"),
			"BERTH_TMPFS_STORAGE_ROOT=" + state("tmpfs-storage"),
			"BERTH_CNI_NETWORK_ROOT=" + state("cni-network"),
			"BERTH_CNI_NETWORK_CONFIG_DIR=" + filepath.Join(tmp, "net", "config"),
			"BERTH_CNI_NETWORK_RUN_DIR=" + filepath.Join(tmp, "net", "run"),
			"BERTH_P2P_STATE_DIR=" + state("p2p-network"),
			"BERTH_P2P_SUBNET=10.221.0.0/24",
		},
	}
}

// benchNetns returns the path of a new network namespace, held by a
// sleeping child for the benchmark's life.
func benchNetns(b *testing.B) string {
	b.Helper()
	cmd := exec.Command("sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatalf("new network namespace: %v", err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
}
