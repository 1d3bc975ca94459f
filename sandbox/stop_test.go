package sandbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A workload that says goodbye when asked to stop, once it is ready to.
var politeWorkload = []string{"sh", "-c", "trap 'echo bye; exit 0' TERM; echo ready; sleep 1000 & wait"}

// A workload that ignores SIGTERM, and has a child that forked away and
// ignores it too.
var stubbornWorkload = []string{"sh", "-c", "trap '' TERM; (trap '' TERM; sleep 1000) & echo ready; sleep 1000"}

// longGrace is a grace no test waits out: the workloads given it end
// when asked, or the test fails by its own timeout.
const longGrace = 5 * time.Minute

// waitReady waits until the workload has printed its first line, so that
// its trap is set.
func waitReady(t *testing.T, out *syncBuffer) {
	t.Helper()
	for !strings.Contains(out.String(), "ready\n") {
		time.Sleep(10 * time.Millisecond)
	}
}

// With a Grace, a Timeout sends SIGTERM first: a workload that traps it
// cleans up and exits as it likes, and the Result still says TimedOut.
// Output counts that as a failure.
func TestGraceOnTimeout(t *testing.T) {
	out, err := New("alpine:test", opts(func(o *Options) {
		o.Args, o.Timeout, o.Grace = politeWorkload, 3*time.Second, longGrace
	})).Output(context.Background())
	var ee *ExitError
	if !errors.As(err, &ee) || !ee.TimedOut || ee.ExitCode != 0 || ee.Signal != 0 {
		t.Fatalf("Output: %v; want an ExitError of a timed-out workload that exited 0", err)
	}
	if string(out) != "ready\nbye\n" {
		t.Errorf("output %q; want the trap's bye", out)
	}
	if !strings.Contains(err.Error(), "timed out") {
		t.Errorf("error %q does not say it timed out", err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// With a Grace, a cancelled context sends SIGTERM first, too.
func TestGraceOnCancel(t *testing.T) {
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) { o.Args, o.Stdout, o.Grace = politeWorkload, &out, longGrace }))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	waitReady(t, &out)
	cancel()
	res, err := sb.Wait()
	if err != nil || !res.Canceled || !res.Success() || out.String() != "ready\nbye\n" {
		t.Errorf("%+v, %v, output %q; want a cancelled workload that said bye and exited 0", res, err, out.String())
	}
}

// A workload that ignores SIGTERM is killed, with everything it started,
// once its grace has passed.
func TestGraceThenKill(t *testing.T) {
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) { o.Args, o.Stdout, o.Grace = stubbornWorkload, &out, time.Second }))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	waitReady(t, &out)
	cancel()
	res, err := sb.Wait()
	if err != nil || !res.Canceled || res.Signal != syscall.SIGKILL {
		t.Errorf("%+v, %v; want a cancelled workload, killed", res, err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// Stop asks, waits for the workload's end and its teardown, and kills
// only if the grace runs out; stopping again, or an ended sandbox, is no
// error.
func TestStop(t *testing.T) {
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) { o.Args, o.Stdout = politeWorkload, &out }))
	if err := sb.Stop(context.Background(), time.Second); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Stop before Start: %v; want ErrNotStarted", err)
	}
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	waitReady(t, &out)
	if err := sb.Stop(context.Background(), longGrace); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.done:
	default:
		t.Error("Stop returned before the sandbox was torn down")
	}
	res, err := sb.Wait()
	if err != nil || !res.Success() || res.Canceled || res.TimedOut || out.String() != "ready\nbye\n" {
		t.Errorf("%+v, %v, output %q; want the trap's bye and status 0", res, err, out.String())
	}
	if err := sb.Stop(context.Background(), time.Second); err != nil {
		t.Errorf("Stop of an ended sandbox: %v", err)
	}
	if err := sb.Stop(context.Background(), -time.Second); err == nil {
		t.Error("Stop took a negative grace")
	}

	// One that will not go is killed; a Stop whose context ends first
	// returns, and the kill still comes.
	var out2 syncBuffer
	sb = New("alpine:test", opts(func(o *Options) { o.Args, o.Stdout = stubbornWorkload, &out2 }))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	waitReady(t, &out2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sb.Stop(ctx, time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("Stop with a cancelled context: %v; want context.Canceled", err)
	}
	res, err = sb.Wait()
	if err != nil || res.Signal != syscall.SIGKILL || res.Canceled || res.TimedOut {
		t.Errorf("%+v, %v; want a workload killed after its grace", res, err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// A handle from Open stops the sandbox as its starter would, watching
// PID 1 itself: it cannot Wait.
func TestStopOpenHandle(t *testing.T) {
	for _, c := range []struct {
		name     string
		workload []string
		grace    time.Duration
		check    func(*Result, string) bool
	}{
		{"polite", politeWorkload, longGrace, func(r *Result, out string) bool { return r.Success() && out == "ready\nbye\n" }},
		{"stubborn", stubbornWorkload, 500 * time.Millisecond, func(r *Result, _ string) bool { return r.Signal == syscall.SIGKILL }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out syncBuffer
			sb := New("alpine:test", opts(func(o *Options) { o.Args, o.Stdout = c.workload, &out }))
			if err := sb.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			waitReady(t, &out)
			h, err := Open(context.Background(), sb.ID(), opts(nil))
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			if err := h.Stop(context.Background(), c.grace); err != nil {
				t.Fatal(err)
			}
			if running(h.proc.Pid) {
				t.Error("the sandbox's init still runs after Stop returned")
			}
			res, err := sb.Wait()
			if err != nil || !c.check(res, out.String()) || res.Canceled || res.TimedOut {
				t.Errorf("%+v, %v, output %q", res, err, out.String())
			}
			if err := h.Stop(context.Background(), time.Second); err != nil {
				t.Errorf("handle's Stop of an ended sandbox: %v", err)
			}
		})
	}
}

// running reports whether the process pid is there and no zombie.
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// Stop of a Detachable sandbox that was never handed to Supervise ends it
// and tears it down here, as Wait would.
func TestStopDetachable(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) { o.Args, o.Detachable = politeWorkload, true }))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := sb.Stop(ctx, longGrace); err != nil {
		t.Fatal(err)
	}
	res, err := sb.Wait()
	// SIGTERM may come before the trap is set: either end will do.
	if err != nil || !res.Success() && res.Signal != syscall.SIGTERM {
		t.Errorf("%+v, %v; want the workload ended by its trap or by SIGTERM", res, err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// A readiness wait that fails ends the workload as Stop does: with a
// Grace, SIGTERM first, so that a service that never became ready can
// still say goodbye; the sandbox is torn down by the time Start returns.
func TestGraceOnFailedReadiness(t *testing.T) {
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args, o.Stdout, o.Grace = politeWorkload, &out, longGrace
		o.WaitFor, o.ReadyTimeout = []ReadyCheck{TCPCheck{Port: 9}}, time.Second
	}))
	defer sb.Close()
	if err := sb.Start(context.Background()); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Start: %v, want ErrNotReady", err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	res, err := sb.Wait()
	if err != nil || res == nil || !res.Success() || out.String() != "ready\nbye\n" {
		t.Errorf("%+v, %v, output %q; want a workload that said bye and exited 0", res, err, out.String())
	}
}
