package sandbox

import (
	"github.com/berth-dev/berth/netplug"
	"os/exec"

	"bufio"
	"context"
	"fmt"
	"github.com/berth-dev/berth/sandbox/internal/nsinit"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func percentiles(b *testing.B, samples []time.Duration) {
	slices.Sort(samples)
	if len(samples) == 0 {
		return
	}
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(samples[len(samples)*99/100].Microseconds())/1000, "p99-ms")
}

// timeStartExit runs sandboxes of `true` that next makes, b.N of them,
// timing each run and pausing, untimed, for pause after it; then reports
// the percentiles.
func timeStartExit(b *testing.B, pause time.Duration, next func() *Sandbox) {
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		res, err := next().Run(context.Background())
		if err != nil || !res.Success() {
			b.Fatal(res, err)
		}
		samples = append(samples, time.Since(start))
		if pause > 0 {
			b.StopTimer()
			time.Sleep(pause)
			b.StartTimer()
		}
	}
	percentiles(b, samples)
}

// BenchmarkStartExit measures New+Run of `true`: from nothing to a
// finished, torn-down sandbox. Run with -benchtime=200x or more for the
// percentiles to mean something.
func BenchmarkStartExit(b *testing.B) {
	bridge, err := testEnv.nets.Get(context.Background(), "bridge")
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name, image string
		net         Network
	}{{"busybox", "busybox:test", nil}, {"alpine", "alpine:test", nil}, {"alpine-bridge", "alpine:test", bridge}} {
		image := c.image
		b.Run(c.name, func(b *testing.B) {
			timeStartExit(b, 0, func() *Sandbox {
				return New(image, opts(func(o *Options) { o.Args = []string{"true"}; o.Network = c.net }))
			})
		})
	}
}

// BenchmarkIdleMemory starts N sandboxes running sleep and reports what
// the host holds for each beyond the workload: its PID 1 (proportional
// set size, so pages shared between the inits count once) and the growth
// of this process.
func BenchmarkIdleMemory(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				hostBefore := pss(b, os.Getpid())
				var sbs []*Sandbox
				for j := 0; j < n; j++ {
					sb := New("busybox:test", opts(func(o *Options) { o.Args = []string{"sleep", "1000"} }))
					if err := sb.Start(context.Background()); err != nil {
						b.Fatal(err)
					}
					sbs = append(sbs, sb)
				}
				var initPSS, initRSS int
				for _, sb := range sbs {
					initPSS += pss(b, sb.proc.Pid)
					initRSS += rss(b, sb.proc.Pid)
				}
				hostAfter := pss(b, os.Getpid())
				b.ReportMetric(float64(initPSS)/float64(n), "init-PSS-KiB/sandbox")
				b.ReportMetric(float64(initRSS)/float64(n), "init-RSS-KiB/sandbox")
				b.ReportMetric(float64(hostAfter-hostBefore)/float64(n), "host-PSS-KiB/sandbox")
				for _, sb := range sbs {
					sb.Close()
				}
			}
		})
	}
}

func smapsField(b *testing.B, pid int, field string) int {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 2 && fs[0] == field+":" {
			n, _ := strconv.Atoi(fs[1])
			return n
		}
	}
	b.Fatalf("no %s in smaps_rollup of %d", field, pid)
	return 0
}

func pss(b *testing.B, pid int) int { return smapsField(b, pid, "Pss") }
func rss(b *testing.B, pid int) int { return smapsField(b, pid, "Rss") }

// BenchmarkReexec measures what starting the host's own executable again
// costs up to the point where the init takes over (fork, exec through the
// read-only view, the dynamic loader, the constructor), next to fork and
// exec of a static busybox.
func BenchmarkReexec(b *testing.B) {
	self, err := nsinit.SelfExe()
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cmd  func() *exec.Cmd
	}{
		{"self", func() *exec.Cmd {
			return &exec.Cmd{Path: nsinit.ExecPath(3), Args: []string{"berth-noop"}, Env: []string{nsinit.EnvMode + "=" + nsinit.ModeNoop}, ExtraFiles: []*os.File{self}}
		}},
		{"busybox-true", func() *exec.Cmd { return exec.Command("/bin/busybox", "true") }},
	} {
		b.Run(c.name, func(b *testing.B) {
			samples := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if err := c.cmd().Run(); err != nil {
					b.Fatal(err)
				}
				samples = append(samples, time.Since(start))
			}
			percentiles(b, samples)
		})
	}
}

// BenchmarkStartExitPooled measures start→exit of `true` on the bridge
// with a warm pool of prepared namespaces: between runs (untimed) the pool
// has the time to refill, as it would between sandboxes that do not start
// back to back faster than the plugins can attach.
func BenchmarkStartExitPooled(b *testing.B) {
	bridge, err := testEnv.nets.Get(context.Background(), "bridge")
	if err != nil {
		b.Fatal(err)
	}
	pool, err := netplug.NewPool(bridge, 2, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	time.Sleep(200 * time.Millisecond)
	timeStartExit(b, 150*time.Millisecond, func() *Sandbox {
		return New("alpine:test", opts(func(o *Options) { o.Args = []string{"true"}; o.NetworkPool = pool }))
	})
}

// BenchmarkStartExitPool measures start→exit of `true` from a Pool of
// built sandboxes. Between runs (untimed) the pool has the time to tear
// the last one down and build the next, as it has when sandboxes are not
// wanted back to back faster than it builds them; -benchtime sets how
// many runs, not how long.
func BenchmarkStartExitPool(b *testing.B) {
	pool, err := NewPool(context.Background(), "alpine:test", opts(nil), 2)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	time.Sleep(100 * time.Millisecond)
	timeStartExit(b, 20*time.Millisecond, func() *Sandbox {
		return pool.New(&Options{Args: []string{"true"}})
	})
}

// signalWriter reports each write on a channel: the workload's "I run".
type signalWriter chan struct{}

func (w signalWriter) Write(p []byte) (int, error) {
	w <- struct{}{}
	return len(p), nil
}

// BenchmarkReset measures Reset of a sandbox on the bridge, from the call
// to the new workload's first output (it writes a line, then sleeps),
// beside the same for a fresh sandbox from New (its Close untimed), and
// the part of a Reset spent releasing and preparing the rootfs again.
func BenchmarkReset(b *testing.B) {
	bridge, err := testEnv.nets.Get(context.Background(), "bridge")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	newSandbox := func(running signalWriter) *Sandbox {
		return New("alpine:test", opts(func(o *Options) {
			o.Network = bridge
			o.Stdout = running
			o.Args = []string{"/bin/sh", "-c", "echo running; exec sleep 1000"}
		}))
	}
	b.Run("reset", func(b *testing.B) {
		running := make(signalWriter)
		sb := newSandbox(running)
		if err := sb.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer sb.Close()
		<-running
		samples := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			if err := sb.Reset(ctx); err != nil {
				b.Fatal(err)
			}
			<-running
			samples = append(samples, time.Since(start))
		}
		percentiles(b, samples)
	})
	b.Run("start", func(b *testing.B) {
		samples := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			running := make(signalWriter)
			start := time.Now()
			sb := newSandbox(running)
			if err := sb.Start(ctx); err != nil {
				b.Fatal(err)
			}
			<-running
			samples = append(samples, time.Since(start))
			b.StopTimer()
			sb.Close()
			b.StartTimer()
		}
		percentiles(b, samples)
	})
	b.Run("rootfs", func(b *testing.B) {
		img, err := testEnv.store.Image(ctx, "alpine:test")
		if err != nil {
			b.Fatal(err)
		}
		key := fmt.Sprintf("bench-reset-%d", os.Getpid())
		if _, err := testEnv.store.Prepare(ctx, key, img, nil); err != nil {
			b.Fatal(err)
		}
		defer testEnv.store.Release(ctx, key)
		samples := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			if err := testEnv.store.Release(ctx, key); err != nil {
				b.Fatal(err)
			}
			if _, err := testEnv.store.Prepare(ctx, key, img, nil); err != nil {
				b.Fatal(err)
			}
			samples = append(samples, time.Since(start))
		}
		percentiles(b, samples)
	})
}
