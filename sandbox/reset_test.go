package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/security"
)

// resetWeb is a workload that says whether it found its rootfs clean,
// counts its runs in the volume at /vol, leaves a process behind it, and
// serves its finding on port 80.
const resetWeb = `mkdir -p /www
if [ -e /marker ]; then echo dirty; else echo clean; fi > /www/index.html
touch /marker
echo run >> /vol/runs
sleep 1000 &
exec httpd -f -p 80 -h /www`

// cgroupProcs returns the PIDs, on the host, of the processes in the
// sandbox's cgroup.
func cgroupProcs(t *testing.T, sb *Sandbox) []int {
	t.Helper()
	dir, _ := sb.cg.V2Dir()
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// Reset gives the workload a clean rootfs on the same address, published
// port and cgroup; the volume keeps its data; nothing of the old workload
// is left; and a Wait begun before the Reset returns the new workload's
// end. Once closed, the sandbox leaves nothing behind.
func TestResetBridge(t *testing.T) {
	vol := "reset-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	defer testEnv.store.RemoveVolume(context.Background(), vol)
	sb := New("busybox:test", opts(func(o *Options) {
		o.Network = defaultNetwork(t)
		o.Ports = []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 80, Protocol: "tcp"}}
		o.Mounts = []Mount{{Type: "volume", Source: vol, Destination: "/vol"}}
		o.Args = []string{"/bin/sh", "-c", resetWeb}
	}))
	ctx := context.Background()
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	runDir := testEnv.dir + "/run-networks"
	traces := traceNetworks(t, runDir, []string{sb.ID()})
	if len(traces.ports) == 0 {
		t.Fatal("no attachment recorded")
	}

	a := sb.Attachment()
	byPort := fmt.Sprintf("http://127.0.0.1:%d/index.html", a.Ports[0].HostPort)
	byIP := fmt.Sprintf("http://%s:80/index.html", a.IPs[0].Addr())
	for _, url := range []string{byPort, byIP} {
		if body := httpBody(t, url); body != "clean\n" {
			t.Fatalf("before Reset, GET %s: %q", url, body)
		}
	}
	cgroupDir, _ := sb.cg.V2Dir()
	oldPids := cgroupProcs(t, sb)
	if len(oldPids) < 3 {
		t.Fatalf("processes before Reset: %v", oldPids)
	}

	type waited struct {
		r   *Result
		err error
	}
	waitDone := make(chan waited, 1)
	go func() {
		r, err := sb.Wait()
		waitDone <- waited{r, err}
	}()
	resetAt := time.Now()
	if err := sb.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-waitDone:
		t.Fatalf("Wait returned at the Reset: %+v %v", w.r, w.err)
	default:
	}

	if b := sb.Attachment(); b.IPs[0] != a.IPs[0] || b.Ports[0].HostPort != a.Ports[0].HostPort {
		t.Errorf("attachment changed: %+v, was %+v", b, a)
	}
	for _, url := range []string{byPort, byIP} {
		if body := httpBody(t, url); body != "clean\n" {
			t.Errorf("after Reset, GET %s: %q (the old rootfs?)", url, body)
		}
	}
	if dir, _ := sb.cg.V2Dir(); dir != cgroupDir {
		t.Errorf("cgroup %s, was %s", dir, cgroupDir)
	}
	newPids := cgroupProcs(t, sb)
	for _, old := range oldPids {
		for _, p := range newPids {
			if p == old {
				t.Errorf("process %d of the old workload is still in the cgroup (now %v)", old, newPids)
			}
		}
	}
	volDir, err := testEnv.store.Volume(ctx, vol)
	if err != nil {
		t.Fatal(err)
	}
	if runs := readFile(t, filepath.Join(volDir, "runs")); runs != "run\nrun\n" {
		t.Errorf("volume's runs: %q", runs)
	}
	// The record is completed beside the workload.
	var st *State
	waitFor(t, func() bool {
		st, err = readState(filepath.Join(testEnv.stateDir, sb.ID()), sb.ID())
		return err == nil && st.Init.PID == sb.proc.Pid
	})
	if st.RootfsKey != "sandbox-"+sb.ID() || st.Pending {
		t.Errorf("state after Reset: %+v", st)
	}

	if err := sb.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	w := <-waitDone
	if w.err != nil || w.r.Signal != syscall.SIGTERM || w.r.Started.Before(resetAt) {
		t.Errorf("Wait: %+v %v; want the new workload's end by SIGTERM", w.r, w.err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %q", left)
	}
	if left := traces.left(t, runDir); len(left) > 0 {
		t.Errorf("network left behind: %q", left)
	}
}

// Output goes on to the same writers after a Reset, and the new workload
// reads no input.
func TestResetKeepsOutput(t *testing.T) {
	var out syncBuffer
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sb := New("alpine:test", opts(func(o *Options) {
		o.Stdin = strings.NewReader("input\n")
		o.Stdout = &out
		o.Stderr = w
		o.Args = []string{"/bin/sh", "-c", "echo err >&2; cat; echo done; exec sleep 1000"}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.Close() // the sandbox has its own copy
	defer sb.Close()
	waitFor(t, func() bool { return out.String() == "input\ndone\n" })
	if err := sb.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return out.String() == "input\ndone\ndone\n" })
	if err := sb.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Wait(); err != nil {
		t.Fatal(err)
	}
	// Once the sandbox has ended, its copy of the pipe is closed.
	errOut, err := io.ReadAll(r)
	if err != nil || string(errOut) != "err\nerr\n" {
		t.Errorf("stderr: %q %v", errOut, err)
	}
}

// Reset refuses what it cannot restart, with errors callers can test.
func TestResetRefused(t *testing.T) {
	ctx := context.Background()
	if err := New("alpine:test", opts(nil)).Reset(ctx); !errors.Is(err, ErrNotStarted) {
		t.Errorf("not started: %v", err)
	}

	done := New("alpine:test", opts(func(o *Options) { o.Args = []string{"true"} }))
	if _, err := done.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := done.Reset(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("exited: %v", err)
	}

	tty := New("alpine:test", opts(func(o *Options) { o.TTY, o.Args = true, []string{"sleep", "1000"} }))
	if err := tty.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	if err := tty.Reset(ctx); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("terminal: %v", err)
	}

	pool, err := NewPool(ctx, "alpine:test", opts(nil), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	pooled := pool.New(&Options{Args: []string{"sleep", "1000"}})
	if err := pooled.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer pooled.Close()
	if err := pooled.Reset(ctx); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("pooled: %v", err)
	}

	sb := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "1000"} }))
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	h, err := Open(ctx, sb.ID(), opts(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Reset(ctx); !errors.Is(err, ErrNotOwner) {
		t.Errorf("Open's handle: %v", err)
	}
	sb.Close()
	if err := sb.Reset(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("closed: %v", err)
	}
}

// A Reset whose context has ended tears the sandbox down, network
// included, and Wait reports it.
func TestResetCancelled(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) {
		o.Network = defaultNetwork(t)
		o.Args = []string{"sleep", "1000"}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	runDir := testEnv.dir + "/run-networks"
	traces := traceNetworks(t, runDir, []string{sb.ID()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sb.Reset(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Reset: %v", err)
	}
	if _, err := sb.Wait(); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait: %v", err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %q", left)
	}
	if left := traces.left(t, runDir); len(left) > 0 {
		t.Errorf("network left behind: %q", left)
	}
}

// failingPrepare is the test store, whose Prepare fails after the first.
type failingPrepare struct {
	*layerfs.Store
	prepared int
}

func (f *failingPrepare) Prepare(ctx context.Context, key string, img *layerfs.Image, o *layerfs.PrepareOptions) (*layerfs.Rootfs, error) {
	if f.prepared++; f.prepared > 1 {
		return nil, errors.New("storage broken")
	}
	return f.Store.Prepare(ctx, key, img, o)
}

// A Reset whose storage cannot prepare the rootfs again leaves nothing
// behind (the old rootfs released, no other), and Wait reports it.
func TestResetPrepareFails(t *testing.T) {
	var logged syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.Storage = &failingPrepare{Store: testEnv.store}
		o.Args = []string{"sleep", "1000"}
		o.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if err := sb.Reset(context.Background()); err == nil || !strings.Contains(err.Error(), "storage broken") {
		t.Errorf("Reset: %v", err)
	}
	if _, err := sb.Wait(); err == nil || !strings.Contains(err.Error(), "storage broken") {
		t.Errorf("Wait: %v", err)
	}
	if err := sb.Close(); err == nil {
		t.Error("Close: no error")
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %q", left)
	}
	// The teardown found everything where it should be: it did not try
	// to release the rootfs a second time, say.
	if logged.String() != "" {
		t.Errorf("teardown logged: %s", logged.String())
	}
}

// Resets racing with each other, Wait, Signal, Kill and Close are safe
// (run with -race), and the sandbox ends with nothing left.
func TestResetConcurrent(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) {
		o.Network = defaultNetwork(t)
		o.Args = []string{"sleep", "1000"}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	runDir := testEnv.dir + "/run-networks"
	traces := traceNetworks(t, runDir, []string{sb.ID()})
	var wg sync.WaitGroup
	waited := make(chan error, 1)
	go func() {
		_, err := sb.Wait()
		waited <- err
	}()
	for i := 0; i < 3; i++ {
		wg.Add(3)
		go func() {
			defer wg.Done()
			if err := sb.Reset(context.Background()); err != nil {
				t.Errorf("Reset: %v", err)
			}
		}()
		go func() {
			defer wg.Done()
			sb.Signal(syscall.SIGCONT)
			sb.Stats()
		}()
		go func() {
			defer wg.Done()
			sb.Exec(context.Background(), &ExecOptions{Args: []string{"true"}})
		}()
	}
	wg.Wait()
	var closing sync.WaitGroup
	closing.Add(2)
	go func() {
		defer closing.Done()
		// Racing with Close: done, or refused as closed.
		if err := sb.Reset(context.Background()); err != nil && !errors.Is(err, ErrNotRunning) {
			t.Errorf("Reset racing Close: %v", err)
		}
	}()
	go func() {
		defer closing.Done()
		// As any Close of a running sandbox: no error.
		if err := sb.Close(); err != nil {
			t.Errorf("Close racing Reset: %v", err)
		}
	}()
	closing.Wait()
	sb.Close()
	if err := <-waited; err != nil {
		t.Errorf("Wait: %v", err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %q", left)
	}
	if left := traces.left(t, runDir); len(left) > 0 {
		t.Errorf("network left behind: %q", left)
	}
}

// Under Strict, in a user namespace, a sandbox without a network is reset
// like any other (its /tmp is a fresh tmpfs); one attached to a network is
// refused, as a new user namespace could not join its network namespace.
func TestResetUserNamespace(t *testing.T) {
	ctx := context.Background()
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.Security = security.Strict()
		o.Stdout = &out
		o.Args = []string{"/bin/sh", "-c", "if [ -e /tmp/marker ]; then echo dirty; else echo clean; fi; touch /tmp/marker; exec sleep 1000"}
	}))
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	waitFor(t, func() bool { return out.String() == "clean\n" })
	if err := sb.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return out.String() == "clean\nclean\n" })
	sb.Close()

	attached := New("alpine:test", opts(func(o *Options) {
		o.Security = security.Strict()
		o.Network = defaultNetwork(t)
		o.Args = []string{"sleep", "1000"}
	}))
	if err := attached.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer attached.Close()
	if err := attached.Reset(ctx); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Reset: %v", err)
	}
	if err := attached.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the refused Reset stopped the sandbox: %v", err)
	}
}

// Options.Timeout counts again from a Reset: the new workload is given
// all of it.
func TestResetRestartsTimeout(t *testing.T) {
	const timeout = 1500 * time.Millisecond
	sb := New("alpine:test", opts(func(o *Options) {
		o.Timeout = timeout
		o.Args = []string{"sleep", "1000"}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	// Most of the first deadline gone: it must not end the next workload.
	time.Sleep(timeout * 2 / 3)
	resetAt := time.Now()
	if err := sb.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := sb.Wait()
	if err != nil || !r.TimedOut {
		t.Fatalf("Wait: %+v %v, want a timeout", r, err)
	}
	if lived := r.Exited.Sub(resetAt); lived < timeout {
		t.Errorf("the reset workload ended %s after the Reset, before its timeout of %s", lived, timeout)
	}
}

// A Reset gives a sandbox with a disk quota a new rootfs with the same
// quota: what the last workload wrote no longer counts, and the quota
// still holds.
func TestResetDiskQuota(t *testing.T) {
	var out syncBuffer
	// 3 MiB fits a 4 MiB quota once, not twice.
	const fill = `if dd if=/dev/zero of=/fill bs=64k count=48 2>/dev/null; then echo fit; else echo full; fi
if dd if=/dev/zero of=/more bs=64k count=48 2>/dev/null; then echo fit; else echo full; fi
exec sleep 1000`
	sb := New("alpine:test", opts(func(o *Options) {
		o.DiskQuota = testDiskQuota
		o.Stdout = &out
		o.Args = []string{"/bin/sh", "-c", fill}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	waitFor(t, func() bool { return strings.Count(out.String(), "\n") == 2 })
	if err := sb.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Count(out.String(), "\n") == 4 })
	if got := out.String(); got != "fit\nfull\nfit\nfull\n" {
		t.Errorf("output %q, want each workload to fit 3 MiB once in its 4 MiB", got)
	}
	sb.Close()
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %q", left)
	}
	if loops := loopsBackedBy(testEnv.store.Root()); len(loops) > 0 {
		t.Errorf("loop devices left: %v", loops)
	}
}

// Commit after a Reset reads the new rootfs: what was written before the
// Reset is not in the layer.
func TestResetThenCommit(t *testing.T) {
	ctx := context.Background()
	sb := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "1000"} }))
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if r, err := sb.Exec(ctx, &ExecOptions{Args: []string{"touch", "/before-reset"}}); err != nil || !r.Success() {
		t.Fatal(r, err)
	}
	if err := sb.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := sb.Exec(ctx, &ExecOptions{Args: []string{"touch", "/after-reset"}}); err != nil || !r.Success() {
		t.Fatal(r, err)
	}
	img, err := sb.Commit(ctx, "alpine:reset-commit", nil)
	if err != nil {
		t.Fatal(err)
	}
	removeImage(t, img)
	got := runOutput(t, "alpine:reset-commit", "sh", "-c", "ls /before-reset /after-reset 2>&1 | sort")
	if !strings.Contains(got, "/after-reset") || !strings.Contains(got, "before-reset: No such file") {
		t.Errorf("the committed image has: %q", got)
	}
}
