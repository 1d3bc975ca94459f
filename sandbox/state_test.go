package sandbox

import (
	"net/netip"
	"path/filepath"

	"github.com/berth-dev/berth/netplug"

	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroup"
)

// TestRecoverAfterHostKilled kills -9 a host program with three running
// sandboxes and checks that Recover leaves no mount, cgroup, rootfs or
// state of theirs behind.
func TestRecoverAfterHostKilled(t *testing.T) { recoverAfterHostKilled(t) }

// TestRecoverAfterResetHostKilled is TestRecoverAfterHostKilled with
// sandboxes that Reset restarted: the new PID 1s die with their host too,
// and their records still lead Recover to all they hold.
func TestRecoverAfterResetHostKilled(t *testing.T) {
	recoverAfterHostKilled(t, "BERTH_TEST_RESET=1")
}

// TestRecoverUnderOwnCgroupParent is TestRecoverAfterHostKilled with a
// host that put its sandboxes under a nested cgroup parent of its own
// (--cgroup-parent) and a Recover whose Manager has another: the records
// lead it to their cgroups, and the parent berth made goes with them.
func TestRecoverUnderOwnCgroupParent(t *testing.T) {
	recoverAfterHostKilled(t, "BERTH_TEST_OWN_PARENT=own/x")
}

func recoverAfterHostKilled(t *testing.T, env ...string) {
	stateDir := t.TempDir()
	parent := fmt.Sprintf("berth-test-%d-recover", os.Getpid())
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: parent})
	if err != nil {
		t.Fatal(err)
	}
	defer cgm.RemoveParent()
	hostParent, hostCgm := parent, cgm
	for _, e := range env {
		if own, ok := strings.CutPrefix(e, "BERTH_TEST_OWN_PARENT="); ok {
			hostParent = parent + "/" + own
			if hostCgm, err = cgm.WithParent(hostParent); err != nil {
				t.Fatal(err)
			}
			defer hostCgm.RemoveParent()
		}
	}

	netConfig, netRun := filepath.Join(stateDir, "net-config"), filepath.Join(stateDir, "net-run")
	nets, err := netplug.Open(&netplug.Options{ConfigDir: netConfig, RunDir: netRun,
		Default: netplug.NetworkOptions{Bridge: "berth-sbtest", Subnet: netip.MustParsePrefix("10.216.0.0/24")}})
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BERTH_TEST_HOST=1", "BERTH_TEST_STORE="+testEnv.store.Root(),
		"BERTH_TEST_STATE="+stateDir, "BERTH_TEST_CGROUP_PARENT="+hostParent,
		"BERTH_TEST_NET_CONFIG="+netConfig, "BERTH_TEST_NET_RUN="+netRun)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "started\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("host process: %q", line)
	}
	states, err := ReadStates(stateDir)
	if err != nil || len(states) != 3 || !states[0].Alive() {
		t.Fatalf("states while running: %+v, %v", states, err)
	}
	// Every process of the sandboxes, to check they die with the host:
	// their PID 1s have the parent-death signal, and the rest die with
	// their PID namespace.
	var procs []*os.File
	defer func() {
		for _, p := range procs {
			p.Close()
		}
	}()
	for _, st := range states {
		cg, err := hostCgm.Open(st.Cgroup)
		if err != nil {
			t.Fatal(err)
		}
		pids, err := cg.Pids()
		if err != nil || len(pids) < 2 {
			t.Fatalf("sandbox %s runs %v (%v), want its PID 1 and its workload", st.ID, pids, err)
		}
		for _, pid := range pids {
			fd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				t.Fatal(err)
			}
			procs = append(procs, os.NewFile(uintptr(fd), fmt.Sprint("pidfd ", pid)))
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	for _, p := range procs {
		// A pidfd reads as ready once its process has ended; a minute
		// is only how long the test waits before calling it a failure.
		fds := []unix.PollFd{{Fd: int32(p.Fd()), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, int(time.Minute/time.Millisecond)); n != 1 || err != nil {
			// Recover, below, still reclaims it.
			t.Errorf("%s outlives its host (%v)", p.Name(), err)
			break
		}
	}

	if mounts := mountsUnder(t, stateDir); len(mounts) != 3 {
		t.Errorf("mounts in the state directory after the crash: %v, want the 3 sandboxes' etc files'", mounts)
	}
	if loops := loopsBackedBy(testEnv.store.Root()); len(loops) != 1 {
		t.Errorf("loop devices after the crash: %v, want the disk quota's", loops)
	}
	var ids []string
	for _, st := range states {
		ids = append(ids, st.ID)
	}
	traces := traceNetworks(t, netRun, ids)
	during := traces.left(t, netRun)
	if len(traces.ports) != 1 || len(traces.chains) == 0 || !slices.ContainsFunc(during, func(l string) bool { return strings.HasPrefix(l, "nftables ") }) {
		t.Fatalf("the bridge sandbox left no trace to reclaim, or has no filter: %+v: %q", traces, during)
	}
	res, err := Recover(context.Background(), &Options{Storage: testEnv.store, Cgroups: cgm, StateDir: stateDir, Networks: nets})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Sandboxes) != 3 {
		t.Errorf("recovered %+v, want the 3 sandboxes", res)
	}
	if mounts := mountsUnder(t, testEnv.store.Root()); len(mounts) > 0 {
		t.Errorf("mounts left: %v", mounts)
	}
	if mounts := mountsUnder(t, stateDir); len(mounts) > 0 {
		t.Errorf("mounts left in the state directory: %v", mounts)
	}
	if loops := loopsBackedBy(testEnv.store.Root()); len(loops) > 0 {
		t.Errorf("loop devices left: %v", loops)
	}
	if names := cgroupsLeft(t, hostCgm); len(names) > 0 {
		t.Errorf("cgroups left: %v", names)
	}
	if hostParent != parent {
		if dirs := cgroupDirs(t, hostParent, ""); len(dirs) > 0 {
			t.Errorf("the sandboxes' own cgroup parent is left: %v", dirs)
		}
	}
	if left := stateLeft(t, stateDir, filepath.Base(netConfig), filepath.Base(netRun)); len(left) > 0 {
		t.Errorf("state left: %v", left)
	}
	if left := traces.left(t, netRun); len(left) > 0 {
		t.Errorf("network leftovers: %q", left)
	}
	keys := rootfsesLeft(t)
	for _, st := range states {
		if slices.Contains(keys, st.RootfsKey) {
			t.Errorf("rootfs %s left in the store", st.RootfsKey)
		}
	}
	// A second pass finds nothing to do.
	if res, err := Recover(context.Background(), &Options{Storage: testEnv.store, Cgroups: cgm, StateDir: stateDir, Networks: nets}); err != nil || len(res.Sandboxes)+len(res.Rootfs)+len(res.Cgroups) > 0 {
		t.Errorf("second recover: %+v %v", res, err)
	}
}

func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			out = append(out, f[4])
		}
	}
	return out
}

// Another process's handle, opened the moment Start returns, already sees
// the sandbox as started: its record is completed after Start, and Open
// waits for that. A sandbox still waiting in a pool is not running.
func TestOpenRightAfterStart(t *testing.T) {
	p := newPool(t, opts(nil), 1)
	defer p.Close()
	for _, sb := range []*Sandbox{
		New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "30"}; o.User = "nobody" })),
		p.New(&Options{Args: []string{"sleep", "30"}, User: "nobody"}),
	} {
		if err := sb.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		h, err := Open(context.Background(), sb.ID(), &Options{Storage: testEnv.store, Cgroups: testEnv.cgroups, StateDir: testEnv.stateDir})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		res, err := h.Exec(context.Background(), &ExecOptions{Args: []string{"id", "-u"}, Stdout: &out})
		if err != nil || !res.Success() || out.String() != "65534\n" {
			t.Errorf("exec through a handle: %+v %v %q", res, err, out.String())
		}
		if err := h.Close(); err != nil {
			t.Errorf("close the handle: %v", err)
		}
		if _, err := sb.Stats(); err != nil {
			t.Errorf("the sandbox after its handle closed: %v", err)
		}
		sb.Close()
	}
	// The pool has built its next sandbox by now, or soon: its record
	// stays pending, and Open gives up when its context ends.
	var standby string
	for range 100 {
		for _, st := range must(ReadStates(testEnv.stateDir)) {
			if st.Pending {
				standby = st.ID
			}
		}
		if standby != "" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Open(ctx, standby, &Options{StateDir: testEnv.stateDir}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("open a sandbox waiting in a pool: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
