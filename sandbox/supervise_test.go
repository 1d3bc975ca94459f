package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
)

// supervisedProcess is the host program of the supervisor's tests
// (BERTH_TEST_HOST=supervise): it starts a Detachable sandbox running
// BERTH_TEST_SV_SCRIPT with the test's directory at /x, prints "ok <ID>",
// and becomes the sandbox's supervisor.
func supervisedProcess() int {
	store, err := layerfs.Open(os.Getenv("BERTH_TEST_STORE"), nil)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: os.Getenv("BERTH_TEST_CGROUP_PARENT")})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	dir := os.Getenv("BERTH_TEST_SV_DIR")
	sb := New("alpine:test", &Options{
		Storage: store, Cgroups: cgm, StateDir: os.Getenv("BERTH_TEST_STATE"),
		Args:       []string{"sh", "-c", os.Getenv("BERTH_TEST_SV_SCRIPT")},
		Mounts:     []Mount{{Source: dir, Destination: "/x"}},
		TTY:        os.Getenv("BERTH_TEST_SV_TTY") != "",
		Detachable: true,
	})
	if err := sb.Start(context.Background()); err != nil {
		fmt.Println(err)
		return 1
	}
	cfg := &SuperviseConfig{Log: filepath.Join(dir, "log"), Exit: filepath.Join(dir, "exit.json")}
	if then := os.Getenv("BERTH_TEST_SV_THEN"); then != "" {
		cfg.Then = []string{then, filepath.Join(dir, "then.out")}
	}
	if n := os.Getenv("BERTH_TEST_SV_LOGMAX"); n != "" {
		cfg.LogMaxBytes, _ = strconv.ParseInt(n, 10, 64)
	}
	fmt.Println("ok", sb.ID())
	err = sb.Supervise(cfg)
	fmt.Println(err)
	sb.Kill()
	sb.Close()
	return 1
}

// A supervised is a sandbox that a supervisor process holds.
type supervised struct {
	cmd      *exec.Cmd
	id       string
	dir      string // the test's: mounted at /x, holding the log, exit.json and then.out
	stateDir string
	cgm      *cgroup.Manager
}

// startSupervised starts a host process that starts a Detachable sandbox
// running script and becomes its supervisor, with a Then program that
// records it ran, and returns once the sandbox runs.
func startSupervised(t *testing.T, script string, env ...string) *supervised {
	t.Helper()
	sv := &supervised{dir: t.TempDir(), stateDir: t.TempDir()}
	parent := fmt.Sprintf("berth-test-%d-%s", os.Getpid(), strings.ToLower(t.Name()))
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: parent})
	if err != nil {
		t.Fatal(err)
	}
	sv.cgm = cgm
	t.Cleanup(func() { cgm.RemoveParent() })
	then := filepath.Join(t.TempDir(), "then")
	// It records its arguments and the descriptors it was given.
	if err := os.WriteFile(then, []byte("#!/bin/sh\nls -l /proc/$$/fd > \"$1.fds\"\necho ran \"$@\" > \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BERTH_TEST_HOST=supervise", "BERTH_TEST_STORE="+testEnv.store.Root(),
		"BERTH_TEST_STATE="+sv.stateDir, "BERTH_TEST_CGROUP_PARENT="+parent,
		"BERTH_TEST_SV_DIR="+sv.dir, "BERTH_TEST_SV_SCRIPT="+script, "BERTH_TEST_SV_THEN="+then)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sv.cmd = cmd
	r := bufio.NewReader(out)
	line, _ := r.ReadString('\n')
	id, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "ok ")
	if !ok {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("host process: %q", line)
	}
	sv.id = id
	// The supervisor holds /dev/null as its stdout: the pipe's end says
	// the exec happened, and anything more is Supervise's error.
	if rest, _ := r.ReadString('\n'); rest != "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("Supervise: %s", rest)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		Recover(context.Background(), &Options{Storage: testEnv.store, Cgroups: cgm, StateDir: sv.stateDir})
	})
	return sv
}

// release lets the workload of a script that waits for /x/go end.
func (sv *supervised) release(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(sv.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the supervisor and the Then program after it.
func (sv *supervised) wait(t *testing.T) {
	t.Helper()
	if err := sv.cmd.Wait(); err != nil {
		t.Errorf("supervisor and Then: %v", err)
	}
}

func (sv *supervised) exitStatus(t *testing.T) ExitStatus {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sv.dir, "exit.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st ExitStatus
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("exit.json %q: %v", b, err)
	}
	return st
}

func (sv *supervised) entries(t *testing.T, opts *LogOptions) []LogEntry {
	t.Helper()
	var out []LogEntry
	err := ReadLog(context.Background(), filepath.Join(sv.dir, "log"), opts, func(e LogEntry) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// assertReclaimed recovers the sandbox and checks nothing of it is left.
func (sv *supervised) assertReclaimed(t *testing.T) {
	t.Helper()
	res, err := Recover(context.Background(), &Options{Storage: testEnv.store, Cgroups: sv.cgm, StateDir: sv.stateDir})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Sandboxes, sv.id) {
		t.Errorf("recovered %+v, want sandbox %s", res, sv.id)
	}
	if mounts := mountsUnder(t, sv.stateDir); len(mounts) > 0 {
		t.Errorf("mounts left in the state directory: %v", mounts)
	}
	if names := cgroupsLeft(t, sv.cgm); len(names) > 0 {
		t.Errorf("cgroups left: %v", names)
	}
	if left := stateLeft(t, sv.stateDir); len(left) > 0 {
		t.Errorf("state left: %v", left)
	}
	if slices.Contains(rootfsesLeft(t), "sandbox-"+sv.id) {
		t.Errorf("rootfs of %s left in the store", sv.id)
	}
}

// The whole life of a supervised sandbox: the Go host is gone, the
// sandbox runs on and its output goes to the log, its exit status is
// recorded, Then runs with nothing of the supervisor's, and Recover
// leaves nothing behind.
func TestSupervise(t *testing.T) {
	sv := startSupervised(t, "echo a; echo b >&2; while [ ! -e /x/go ]; do sleep 0.05; done; echo c; exit 3")

	pid := sv.cmd.Process.Pid
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if string(comm) != "berth-supervise\n" {
		t.Errorf("the host process is %q, want the supervisor", comm)
	}
	// No Go runtime: one thread.
	if tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); len(tasks) != 1 {
		t.Errorf("the supervisor has %d threads, want 1", len(tasks))
	}
	cg, err := sv.cgm.Open(sv.id)
	if err != nil {
		t.Fatal(err)
	}
	if pids, err := cg.Pids(); err != nil || len(pids) < 2 {
		t.Fatalf("sandbox runs %v (%v), want its PID 1 and its workload", pids, err)
	}
	states, err := ReadStates(sv.stateDir)
	if err != nil || len(states) != 1 || states[0].Log != filepath.Join(sv.dir, "log") {
		t.Errorf("records: %+v %v, want one whose Log is the supervisor's", states, err)
	}

	sv.release(t)
	sv.wait(t)
	if st := sv.exitStatus(t); st.ExitCode != 3 || st.Signal != 0 {
		t.Errorf("exit status %+v, want 3", st)
	} else if _, err := time.Parse(time.RFC3339Nano, st.Exited); err != nil {
		t.Errorf("exit time: %v", err)
	}
	then, err := os.ReadFile(filepath.Join(sv.dir, "then.out"))
	if err != nil || string(then) != "ran "+filepath.Join(sv.dir, "then.out")+"\n" {
		t.Errorf("Then: %q %v", then, err)
	}
	// Then's descriptors: /dev/null and its shell's own, nothing of the
	// supervisor's (pipes, the log's directory, the state directory).
	fds, err := os.ReadFile(filepath.Join(sv.dir, "then.out.fds"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(fds), "\n") {
		_, target, ok := strings.Cut(l, " -> ")
		if ok && target != "/dev/null" && target != filepath.Join(sv.dir, "then.out.fds") && !strings.HasSuffix(target, "/then") {
			t.Errorf("Then was given %q", l)
		}
	}

	var got []string
	for _, e := range sv.entries(t, nil) {
		if e.Partial || e.Time.IsZero() {
			t.Errorf("entry %+v", e)
		}
		got = append(got, e.Stream+" "+string(e.Text))
	}
	// stdout and stderr are two pipes: their order is not kept.
	slices.Sort(got)
	if want := []string{"stderr b", "stdout a", "stdout c"}; !slices.Equal(got, want) {
		t.Errorf("log entries %q, want %q", got, want)
	}
	sv.assertReclaimed(t)
}
