package plugin

// Benchmarks of what a plugin costs: one call's round trip over the
// protocol, sequentially and from 16 goroutines at once, the same calls
// through the host adapters (which check the answer and mount or verify
// it), and a plugin's start and restart after kill -9. They run the
// no-op plugins of internal/nopplugin, so they time berth's plugin layer
// and nothing else. Each reports p50 and p99 latencies besides ns/op:
//
//	go test -run '^$' -bench 'Plugin' -benchtime 2000x -timeout 10m ./plugin/
//
// They need root (the adapters mount, and network namespaces are made).

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/berth-dev/berth/bench"
	"github.com/berth-dev/berth/layerfs"
	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// benchConcurrency is how many goroutines call at once in the concurrent
// variants: more than the cores, as many sandboxes starting at once are.
const benchConcurrency = 16

func BenchmarkPluginStorageCalls(b *testing.B) {
	ctx := context.Background()
	bins := benchBuildNop(b)
	store, img := benchStore(b)
	s, err := OpenStorage(ctx, bins.storage, &Options{Store: store, RunDir: b.TempDir(), MountDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	cc, err := s.c.conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	info := pb.NewInfoServiceClient(cc)
	rpc := pb.NewStorageServiceClient(cc)
	for _, g := range []int{1, benchConcurrency} {
		b.Run(fmt.Sprintf("Info/goroutines=%d", g), func(b *testing.B) {
			benchCalls(b, g, func(ctx context.Context, _ int) error {
				_, err := info.Info(ctx, &pb.InfoRequest{})
				return err
			})
		})
	}
	// The protocol alone: the Prepare and Release RPCs, no checks and
	// no mounts.
	for _, g := range []int{1, benchConcurrency} {
		b.Run(fmt.Sprintf("PrepareReleaseRPC/goroutines=%d", g), func(b *testing.B) {
			prefix := benchKeyPrefix(b)
			benchCalls(b, g, func(ctx context.Context, i int) error {
				key := prefix + strconv.Itoa(i)
				if _, err := rpc.Prepare(ctx, &pb.PrepareRequest{Key: key}); err != nil {
					return err
				}
				_, err := rpc.Release(ctx, &pb.ReleaseRequest{Key: key})
				return err
			})
		})
	}
	// What a sandbox pays: the adapter sends the image's layers, checks
	// the answer, mounts the rootfs, and unmounts it on Release.
	for _, g := range []int{1, benchConcurrency} {
		b.Run(fmt.Sprintf("PrepareRelease/goroutines=%d", g), func(b *testing.B) {
			prefix := benchKeyPrefix(b)
			benchCalls(b, g, func(ctx context.Context, i int) error {
				key := prefix + strconv.Itoa(i)
				if _, err := s.Prepare(ctx, key, img, nil); err != nil {
					return err
				}
				return s.Release(ctx, key)
			})
		})
	}
}

func BenchmarkPluginNetworkCalls(b *testing.B) {
	ctx := context.Background()
	bins := benchBuildNop(b)
	netns := benchNetns(b, "eth0")
	var st syscall.Stat_t
	if err := syscall.Stat(netns, &st); err != nil {
		b.Fatal(err)
	}
	n, err := OpenNetwork(ctx, bins.network, &Options{RunDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	cc, err := n.c.conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	rpc := pb.NewNetworkServiceClient(cc)
	// The protocol alone, with the plugin's side opening and checking
	// the namespace it is given.
	for _, g := range []int{1, benchConcurrency} {
		b.Run(fmt.Sprintf("AttachDetachRPC/goroutines=%d", g), func(b *testing.B) {
			prefix := benchKeyPrefix(b)
			benchCalls(b, g, func(ctx context.Context, i int) error {
				id := prefix + strconv.Itoa(i)
				req := &pb.AttachRequest{Id: id, NetnsPath: netns, NetnsDev: uint64(st.Dev), NetnsIno: st.Ino}
				if _, err := rpc.Attach(ctx, req); err != nil {
					return err
				}
				_, err := rpc.Detach(ctx, &pb.DetachRequest{Id: id, NetnsPath: netns})
				return err
			})
		})
	}
	// What a sandbox pays: the adapter also checks the answer against
	// the namespace.
	for _, g := range []int{1, benchConcurrency} {
		b.Run(fmt.Sprintf("AttachDetach/goroutines=%d", g), func(b *testing.B) {
			prefix := benchKeyPrefix(b)
			benchCalls(b, g, func(ctx context.Context, i int) error {
				id := prefix + strconv.Itoa(i)
				if _, err := n.Attach(ctx, id, netns, nil); err != nil {
					return err
				}
				return n.Detach(ctx, id, netns)
			})
		})
	}
}

// BenchmarkPluginStart times OpenStorage until the plugin is ready
// (started, handshake done, Info read) and Close, with and without
// AutoMTLS, and how long the first successful call takes after the
// plugin was killed with SIGKILL (the restart).
func BenchmarkPluginStart(b *testing.B) {
	ctx := context.Background()
	bins := benchBuildNop(b)
	// An empty store of the benchmark's own: without one OpenStorage
	// opens berth's default store.
	store, err := layerfs.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, mtls := range []bool{false, true} {
		b.Run(fmt.Sprintf("AutoMTLS=%v", mtls), func(b *testing.B) {
			opts := &Options{Store: store, RunDir: b.TempDir(), MountDir: b.TempDir(), AutoMTLS: mtls}
			var samples []float64
			for b.Loop() {
				t := time.Now()
				s, err := OpenStorage(ctx, bins.storage, opts)
				if err != nil {
					b.Fatal(err)
				}
				samples = append(samples, float64(time.Since(t).Microseconds()))
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
			benchReport(b, samples)
		})
	}
	b.Run("RestartAfterKill9", func(b *testing.B) {
		s, err := OpenStorage(ctx, bins.storage, &Options{Store: store, RunDir: b.TempDir(), MountDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		var samples []float64
		failed := 0
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			if err := benchKillPlugin(bins.storage); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			// The call that finds the plugin dead fails with
			// ErrPluginExited, and a later one starts it again.
			t := time.Now()
			var err error
			for try := 0; try < 3; try++ {
				if _, err = s.Rootfses(ctx); err == nil {
					break
				}
				failed++
			}
			if err != nil {
				b.Fatalf("no call succeeded after the plugin was killed: %v", err)
			}
			samples = append(samples, float64(time.Since(t).Microseconds()))
		}
		benchReport(b, samples)
		b.ReportMetric(float64(failed)/float64(b.N), "failed-calls/restart")
	})
}

// benchCalls makes b.N calls from g goroutines and reports their
// latency percentiles.
func benchCalls(b *testing.B, g int, call func(ctx context.Context, i int) error) {
	b.ResetTimer()
	c, err := bench.TimeCalls(context.Background(), b.N, g, call)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	benchReport(b, c.Samples)
}

func benchReport(b *testing.B, us []float64) {
	b.ReportMetric(bench.Percentile(us, 0.5), "p50-µs")
	b.ReportMetric(bench.Percentile(us, 0.99), "p99-µs")
}

// benchKeyPrefix makes keys unique to one run of one sub-benchmark: the
// testing package runs each several times against the same plugin.
func benchKeyPrefix(b *testing.B) string {
	return fmt.Sprintf("bench-%d-%d-", b.N, time.Now().UnixNano())
}

type benchBinaries struct{ storage, network string }

// benchBuildNop builds the no-op plugins into a temporary directory.
// Every Options a benchmark gives has a RunDir, and for storage a
// MountDir and a Store, of its own, so that nothing is made in berth's
// default directories.
func benchBuildNop(b *testing.B) benchBinaries {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	dir := b.TempDir()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	bins := benchBinaries{storage: filepath.Join(dir, "nop-storage"), network: filepath.Join(dir, "nop-network")}
	for bin, pkg := range map[string]string{bins.storage: "./internal/nopplugin/storage", bins.network: "./internal/nopplugin/network"} {
		if out, err := exec.Command(goTool, "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			b.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	return bins
}

// benchStore imports the Alpine test image into a store of the
// benchmark's own.
func benchStore(b *testing.B) (*layerfs.Store, *layerfs.Image) {
	b.Helper()
	store, err := layerfs.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	const tarball = "../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz"
	img, err := store.Import(context.Background(), tarball, &layerfs.ImportOptions{Name: "alpine:bench"})
	if err != nil {
		b.Fatalf("import %s (the benchmarks need ../shared/images beside the repository): %v", tarball, err)
	}
	return store, img
}

// benchNetns returns the path of a new network namespace, held by a
// sleeping child for the benchmark's life, with a link named dummy in it
// (a veth pair, both ends inside: the dummy driver is a module that may
// not be loaded): the no-op network plugin reports one it did not make.
func benchNetns(b *testing.B, dummy string) string {
	b.Helper()
	cmd := exec.Command("sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatalf("new network namespace: %v", err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	path := fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
	ns, err := netns.GetFromPath(path)
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dummy}, PeerName: dummy + "p"}); err != nil {
		b.Fatalf("add %s in %s: %v", dummy, path, err)
	}
	return path
}

// benchKillPlugin kills the running instance of the plugin binary at
// path, a child of this process, with SIGKILL and waits until it is gone.
func benchKillPlugin(path string) error {
	pid, err := benchChild(path)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return err
	}
	// go-plugin reaps it; until then /proc/<pid> stays.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return nil
		}
	}
	return fmt.Errorf("plugin %d still there 10s after SIGKILL", pid)
}

// benchChild finds the child of this process running the binary at path.
func benchChild(path string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The fields after the command's closing parenthesis: state, ppid.
		i := strings.LastIndexByte(string(stat), ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(self) {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == path {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no running child of this process is %s", path)
}
