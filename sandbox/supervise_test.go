package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
)

// supervisedProcess is the host program of the supervisor's tests
// (BERTH_TEST_HOST=supervise): it starts a Detachable sandbox running
// BERTH_TEST_SV_SCRIPT with the test's directory at /x, prints "ok <ID>",
// and becomes the sandbox's supervisor.
func supervisedProcess() int {
	if os.Args[len(os.Args)-1] == "berth-test-reap" {
		return reaperProcess()
	}
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
	logDir := dir
	if d := os.Getenv("BERTH_TEST_SV_LOGDIR"); d != "" {
		logDir = d
	}
	cfg := &SuperviseConfig{Log: filepath.Join(logDir, "log"), Exit: filepath.Join(dir, "exit.json")}
	switch then := os.Getenv("BERTH_TEST_SV_THEN"); then {
	case "":
	case "reap":
		cfg.Then = []string{os.Args[0], "-test.run=^$", "berth-test-reap"}
	default:
		cfg.Then = []string{then, filepath.Join(dir, "then.out")}
	}
	if n := os.Getenv("BERTH_TEST_SV_LOGMAX"); n != "" {
		cfg.LogMaxBytes, _ = strconv.ParseInt(n, 10, 64)
	}
	if os.Getenv("BERTH_TEST_SV_IGNORE_INT") != "" {
		// As a shell's background job does.
		signal.Ignore(syscall.SIGINT)
		// And a real-time signal glibc keeps for itself, which its
		// signal() cannot give back its default (a CI runner's
		// starter ignored 32).
		var ignore [8]uint64
		ignore[0] = 1 // SIG_IGN
		if _, _, errno := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, 32, uintptr(unsafe.Pointer(&ignore[0])), 0, 8, 0, 0); errno != 0 {
			fmt.Println("ignore signal 32:", errno)
			return 1
		}
	}
	if os.Getenv("BERTH_TEST_SV_E2BIG") != "" {
		// More than execve takes in one string: the exec fails.
		os.Setenv("BERTH_TEST_BIG", strings.Repeat("x", 256<<10))
	}
	fmt.Println("ok", sb.ID())
	err = sb.Supervise(cfg)
	if os.Getenv("BERTH_TEST_SV_E2BIG") != "" {
		states, rerr := ReadStates(os.Getenv("BERTH_TEST_STATE"))
		if rerr != nil || len(states) != 1 {
			fmt.Println("records:", rerr, len(states))
		} else {
			fmt.Printf("log %q: %v\n", states[0].Log, err)
		}
	}
	fmt.Println(err)
	sb.Kill()
	sb.Close()
	return 1
}

// reaperProcess is the Then program of TestSuperviseThenRecovers, run by
// the supervisor: it reclaims the sandbox with Recover, as berth's reaper
// does, and says what it found in then.out.
func reaperProcess() int {
	store, err := layerfs.Open(os.Getenv("BERTH_TEST_STORE"), nil)
	if err != nil {
		return 1
	}
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: os.Getenv("BERTH_TEST_CGROUP_PARENT")})
	if err != nil {
		return 1
	}
	res, err := Recover(context.Background(), &Options{Storage: store, Cgroups: cgm, StateDir: os.Getenv("BERTH_TEST_STATE")})
	msg := fmt.Sprintf("recovered %v %v", res.Sandboxes, err)
	os.WriteFile(filepath.Join(os.Getenv("BERTH_TEST_SV_DIR"), "then.out"), []byte(msg), 0o600)
	return 0
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
func startSupervised(t testing.TB, script string, env ...string) *supervised {
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
	// It records its arguments, the descriptors it was given and the
	// signals it ignores.
	if err := os.WriteFile(then, []byte("#!/bin/sh\nls -l /proc/$$/fd > \"$1.fds\"\ngrep SigIgn /proc/$$/status > \"$1.sigign\"\necho ran \"$@\" > \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BERTH_TEST_HOST=supervise", "BERTH_TEST_STORE="+testEnv.store.Root(),
		"BERTH_TEST_STATE="+sv.stateDir, "BERTH_TEST_CGROUP_PARENT="+parent,
		"BERTH_TEST_SV_DIR="+sv.dir, "BERTH_TEST_SV_SCRIPT="+script, "BERTH_TEST_SV_THEN="+then)
	cmd.Env = append(cmd.Env, env...)
	if slices.Contains(env, "BERTH_TEST_SV_THEN=reap") {
		cmd.Env = slices.DeleteFunc(cmd.Env, func(e string) bool { return e == "BERTH_TEST_SV_THEN="+then })
	}
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
func (sv *supervised) release(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(sv.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the supervisor and the Then program after it. A
// supervisor that does not end within minutes is broken: it is killed, so
// that the test fails rather than hangs.
func (sv *supervised) wait(t testing.TB) {
	t.Helper()
	hung := time.AfterFunc(2*time.Minute, func() { sv.cmd.Process.Kill() })
	err := sv.cmd.Wait()
	if !hung.Stop() {
		t.Fatalf("the supervisor did not end: %v", err)
	}
	if err != nil {
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

// Then, the host program itself as berth's reaper is, reclaims the
// sandbox with Recover: the supervisor has let go of the owner lock, and
// the record, whose host process has Then's PID and start time, does not
// keep the sandbox alive.
func TestSuperviseThenRecovers(t *testing.T) {
	sv := startSupervised(t, "echo done", "BERTH_TEST_SV_THEN=reap")
	sv.wait(t)
	if st := sv.exitStatus(t); st.ExitCode != 0 {
		t.Errorf("exit status %+v", st)
	}
	then, err := os.ReadFile(filepath.Join(sv.dir, "then.out"))
	if want := fmt.Sprintf("recovered [%s] <nil>", sv.id); err != nil || string(then) != want {
		t.Errorf("Then: %q %v, want %q", then, err, want)
	}
	if names := cgroupsLeft(t, sv.cgm); len(names) > 0 {
		t.Errorf("cgroups left: %v", names)
	}
	if left := stateLeft(t, sv.stateDir); len(left) > 0 {
		t.Errorf("state left: %v", left)
	}
	if mounts := mountsUnder(t, sv.stateDir); len(mounts) > 0 {
		t.Errorf("mounts left in the state directory: %v", mounts)
	}
	if slices.Contains(rootfsesLeft(t), "sandbox-"+sv.id) {
		t.Errorf("rootfs of %s left in the store", sv.id)
	}
}

// A handle opened between Start and Supervise has a record that names no
// log yet: a log check on it reads the record again, and follows the
// supervisor's log, rather than finding no output to match (berth run -d
// --wait-for log:... once did).
func TestOpenedBeforeSuperviseFollowsLog(t *testing.T) {
	sv := startSupervised(t, "echo warming; echo serving; while [ ! -e /x/go ]; do sleep 0.1; done")
	h, err := Open(t.Context(), sv.id, &Options{Storage: testEnv.store, Cgroups: sv.cgm, StateDir: sv.stateDir})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	h.mu.Lock()
	h.state.Log = "" // as read before the supervisor wrote its record
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := h.WaitReady(ctx, LogCheck{Match: regexp.MustCompile("^serving$")}); err != nil {
		t.Errorf("WaitReady on a handle opened before Supervise: %v", err)
	}
	if log := h.State().Log; log != filepath.Join(sv.dir, "log") {
		t.Errorf("State().Log = %q after the check", log)
	}
	sv.release(t)
	sv.wait(t)
}

// A supervisor killed with SIGKILL drops the owner lock with it: Recover
// then kills the sandbox and reclaims everything, as for any dead owner.
func TestSupervisorKilled(t *testing.T) {
	sv := startSupervised(t, "while :; do sleep 1; done")
	cg, err := sv.cgm.Open(sv.id)
	if err != nil {
		t.Fatal(err)
	}
	pids, err := cg.Pids()
	if err != nil || len(pids) < 2 {
		t.Fatalf("sandbox runs %v (%v)", pids, err)
	}
	// While the supervisor lives, Recover leaves the sandbox alone.
	svOpts := &Options{Storage: testEnv.store, Cgroups: sv.cgm, StateDir: sv.stateDir}
	if res, err := Recover(context.Background(), svOpts); err != nil || len(res.Sandboxes) != 0 {
		t.Fatalf("Recover with the supervisor alive: %+v %v", res, err)
	}
	// And so does Reclaim, which names it.
	if err := Reclaim(context.Background(), sv.id, svOpts); !errors.Is(err, ErrOwned) {
		t.Fatalf("Reclaim with the supervisor alive: %v, want ErrOwned", err)
	}
	if err := Reclaim(context.Background(), "0123456789abcdef", svOpts); err != nil {
		t.Errorf("Reclaim of a sandbox that is not there: %v", err)
	}
	if err := Reclaim(context.Background(), "../x", svOpts); !errors.Is(err, ErrNotFound) {
		t.Errorf("Reclaim of a bad ID: %v, want ErrNotFound", err)
	}
	sv.cmd.Process.Kill()
	sv.cmd.Wait()
	if _, err := os.Stat(filepath.Join(sv.dir, "then.out")); err == nil {
		t.Error("Then ran after the supervisor was killed")
	}
	sv.assertReclaimed(t)
}

// A workload flooding its output is bounded on disk by the rotation, and
// every line of the log stays well formed.
func TestSuperviseLogFlood(t *testing.T) {
	// 100 MiB of 100-byte lines as fast as the workload can write them.
	sv := startSupervised(t, "yes 012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678 | head -c 104857600; echo end",
		"BERTH_TEST_SV_LOGMAX=1048576")
	sv.wait(t)
	if st := sv.exitStatus(t); st.ExitCode != 0 {
		t.Errorf("exit status %+v", st)
	}
	lines := 0
	for _, name := range []string{"log", "log.1"} {
		b, err := os.ReadFile(filepath.Join(sv.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 1<<20 {
			t.Errorf("%s holds %d bytes, past LogMaxBytes", name, len(b))
		}
		for _, l := range strings.SplitAfter(string(b), "\n") {
			if l == "" {
				continue
			}
			lines++
			e, ok := parseLogLine([]byte(strings.TrimSuffix(l, "\n")))
			if !ok || !strings.HasSuffix(l, "\n") || e.Stream != "stdout" ||
				(string(e.Text) != "end" && string(e.Text) != "012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678") {
				t.Fatalf("%s: damaged line %q", name, l)
			}
		}
	}
	entries := sv.entries(t, nil)
	if len(entries) != lines || len(entries) == 0 || string(entries[len(entries)-1].Text) != "end" {
		t.Errorf("ReadLog read %d entries of %d lines, the last %+v", len(entries), lines, entries[len(entries)-1])
	}
	sv.assertReclaimed(t)
}

// A line longer than an entry is split into partial entries of 16 KiB,
// which put together give the line back.
func TestSuperviseLongLine(t *testing.T) {
	sv := startSupervised(t, "head -c 1048576 /dev/zero | tr '\\0' x; echo; printf tail")
	sv.wait(t)
	entries := sv.entries(t, nil)
	var line []byte
	i := 0
	for ; i < len(entries); i++ {
		e := entries[i]
		if len(e.Text) > LogEntryMax {
			t.Fatalf("entry of %d bytes", len(e.Text))
		}
		line = append(line, e.Text...)
		if !e.Partial {
			break
		}
	}
	if len(line) != 1<<20 || strings.Trim(string(line), "x") != "" || i != 1<<20/LogEntryMax {
		t.Errorf("the long line came back as %d bytes in %d entries", len(line), i+1)
	}
	// Output cut short by the stream's end is a partial entry.
	if rest := entries[i+1:]; len(rest) != 1 || string(rest[0].Text) != "tail" || !rest[0].Partial {
		t.Errorf("entries after the line: %+v", rest)
	}
	sv.assertReclaimed(t)
}

// SIGHUP does not end a supervisor; SIGINT (as SIGTERM and SIGQUIT) is
// passed on to the workload, whose trap runs, and whose end is recorded
// as usual, even when the process that became the supervisor ignored it.
func TestSupervisorSignals(t *testing.T) {
	sv := startSupervised(t, "trap 'echo got INT; exit 7' INT; echo ready; while :; do sleep 0.1; done",
		"BERTH_TEST_SV_IGNORE_INT=1")
	waitForEntry(t, filepath.Join(sv.dir, "log"), "ready")
	pid := sv.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	sv.wait(t)
	if st := sv.exitStatus(t); st.ExitCode != 7 {
		t.Errorf("exit status %+v, want the trap's 7", st)
	}
	var texts []string
	for _, e := range sv.entries(t, nil) {
		texts = append(texts, string(e.Text))
	}
	if !slices.Contains(texts, "got INT") {
		t.Errorf("log %q: the trap did not run", texts)
	}
	// Then does not inherit the starter's ignored SIGINT.
	if ign, err := os.ReadFile(filepath.Join(sv.dir, "then.out.sigign")); err != nil || strings.Fields(string(ign))[1] != "0000000000000000" {
		t.Errorf("Then's ignored signals: %q %v, want none", ign, err)
	}
	sv.assertReclaimed(t)
}

// A terminal's output is one stream, its lines without the terminal's
// "\r".
func TestSuperviseTTY(t *testing.T) {
	sv := startSupervised(t, "echo one; echo two >&2; [ -t 1 ] && echo tty; exit 5", "BERTH_TEST_SV_TTY=1")
	sv.wait(t)
	if st := sv.exitStatus(t); st.ExitCode != 5 {
		t.Errorf("exit status %+v, want 5", st)
	}
	var got []string
	for _, e := range sv.entries(t, nil) {
		got = append(got, e.Stream+" "+string(e.Text))
	}
	if want := []string{"stdout one", "stdout two", "stdout tty"}; !slices.Equal(got, want) {
		t.Errorf("log %q, want %q", got, want)
	}
	sv.assertReclaimed(t)
}

// A Supervise whose exec fails leaves the sandbox its caller's, and its
// record as it was: naming no log that nobody writes.
func TestSuperviseExecFails(t *testing.T) {
	dir, stateDir := t.TempDir(), t.TempDir()
	parent := fmt.Sprintf("berth-test-%d-%s", os.Getpid(), strings.ToLower(t.Name()))
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: parent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cgm.RemoveParent() })
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BERTH_TEST_HOST=supervise", "BERTH_TEST_STORE="+testEnv.store.Root(),
		"BERTH_TEST_STATE="+stateDir, "BERTH_TEST_CGROUP_PARENT="+parent,
		"BERTH_TEST_SV_DIR="+dir, "BERTH_TEST_SV_SCRIPT=sleep 100", "BERTH_TEST_SV_E2BIG=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	t.Cleanup(func() {
		Recover(context.Background(), &Options{Storage: testEnv.store, Cgroups: cgm, StateDir: stateDir})
	})
	lines := strings.Split(string(out), "\n")
	if err == nil || len(lines) < 2 || !strings.HasPrefix(lines[0], "ok ") {
		t.Fatalf("host process: %v, %q", err, out)
	}
	if want := `log "": `; !strings.HasPrefix(lines[1], want) || !strings.Contains(lines[1], "exec the supervisor") {
		t.Errorf("after the failed exec: %q, want %s and the exec's error", lines[1], want)
	}
}

// waitForEntry follows the log at path until an entry with text appears.
func waitForEntry(t *testing.T, path, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errFound := fmt.Errorf("found")
	err := ReadLog(ctx, path, &LogOptions{Follow: true}, func(e LogEntry) error {
		if string(e.Text) == text {
			return errFound
		}
		return nil
	})
	if err != errFound {
		t.Fatalf("waiting for %q in the log: %v", text, err)
	}
}

// BenchmarkSupervisorMemory reports what an idle supervisor costs the
// host: its proportional and resident set sizes (smaps_rollup), beside
// its private dirty pages (what each more supervisor adds), beside its
// sandbox's PID 1's PSS.
//
//	go test -run '^$' -bench SupervisorMemory -benchtime 1x ./sandbox/
func BenchmarkSupervisorMemory(b *testing.B) {
	for b.Loop() {
		sv := startSupervised(b, "while [ ! -e /x/go ]; do sleep 1; done")
		cg, err := sv.cgm.Open(sv.id)
		if err != nil {
			b.Fatal(err)
		}
		pids, err := cg.Pids()
		if err != nil || len(pids) < 2 {
			b.Fatalf("sandbox runs %v (%v)", pids, err)
		}
		pid1 := slices.Min(pids)
		// Its first entries written, the supervisor is as it stays.
		time.Sleep(time.Second)
		var dirty int
		pss, rss := smapsRollup(b, sv.cmd.Process.Pid, &dirty)
		initPSS, _ := smapsRollup(b, pid1, nil)
		b.ReportMetric(float64(pss), "supervisor-PSS-KiB")
		b.ReportMetric(float64(rss), "supervisor-RSS-KiB")
		b.ReportMetric(float64(dirty), "supervisor-private-dirty-KiB")
		b.ReportMetric(float64(initPSS), "init-PSS-KiB")
		sv.release(b)
		sv.wait(b)
	}
}

// smapsRollup returns a process's PSS and RSS in KiB.
func smapsRollup(t testing.TB, pid int, priv *int) (pss, rss int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "Pss:":
			pss = n
		case "Rss:":
			rss = n
		case "Private_Dirty:":
			if priv != nil {
				*priv = n
			}
		}
	}
	return pss, rss
}

// What a Detachable sandbox cannot have is refused before anything is
// made.
func TestDetachableOptions(t *testing.T) {
	for name, set := range map[string]func(*Options){
		"Stdout":     func(o *Options) { o.Stdout = new(strings.Builder) },
		"Stderr":     func(o *Options) { o.Stderr = new(strings.Builder) },
		"Stdin":      func(o *Options) { o.Stdin = strings.NewReader("") },
		"Timeout":    func(o *Options) { o.Timeout = time.Minute },
		"KeepRootfs": func(o *Options) { o.KeepRootfs = true },
	} {
		sb := New("alpine:test", opts(func(o *Options) {
			o.Args = []string{"true"}
			o.Detachable = true
			set(o)
		}))
		err := sb.Start(context.Background())
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), name) {
			t.Errorf("Detachable with %s: %v, want ErrInvalidOptions naming it", name, err)
		}
		sb.Close()
	}
}

// A Detachable sandbox that is waited for instead of supervised works as
// any other, its output discarded; Supervise refuses bad settings with
// the sandbox still its caller's, and a sandbox already waited for.
func TestDetachableWithoutSupervise(t *testing.T) {
	dir := t.TempDir()
	sb := New("alpine:test", opts(func(o *Options) {
		// More output than a pipe holds: nothing may wait for a reader.
		o.Args = []string{"sh", "-c", "head -c 1000000 /dev/zero; exit 4"}
		o.Detachable = true
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	then := filepath.Join(dir, "then")
	os.WriteFile(then, []byte("#!/bin/sh\n"), 0o755)
	log, exit := filepath.Join(dir, "log"), filepath.Join(dir, "exit.json")
	for _, c := range []struct {
		name string
		cfg  *SuperviseConfig
	}{
		{"no config", nil},
		{"relative log", &SuperviseConfig{Log: "log", Exit: exit}},
		{"no exit", &SuperviseConfig{Log: log}},
		{"log is exit", &SuperviseConfig{Log: log, Exit: log}},
		{"exit is the rotated log", &SuperviseConfig{Log: log, Exit: log + ".1"}},
		{"no log directory", &SuperviseConfig{Log: filepath.Join(dir, "none", "log"), Exit: exit}},
		{"small bound", &SuperviseConfig{Log: log, Exit: exit, LogMaxBytes: 100}},
		{"relative Then", &SuperviseConfig{Log: log, Exit: exit, Then: []string{"then"}}},
		{"missing Then", &SuperviseConfig{Log: log, Exit: exit, Then: []string{filepath.Join(dir, "none")}}},
		{"Then a directory", &SuperviseConfig{Log: log, Exit: exit, Then: []string{dir}}},
	} {
		if err := sb.Supervise(c.cfg); err == nil {
			t.Fatalf("%s: Supervise returned no error", c.name)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
	if err := sb.Reset(context.Background()); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Reset: %v, want ErrUnsupported", err)
	}
	// The workload blocks on its full pipe until Wait discards its
	// output.
	r, err := sb.Wait()
	if err != nil || r.ExitCode != 4 {
		t.Errorf("Wait: %+v %v, want the workload's exit 4", r, err)
	}
	if err := sb.Supervise(&SuperviseConfig{Log: log, Exit: exit}); err == nil {
		t.Error("Supervise after Wait returned no error")
	}

	// Supervise is for Detachable sandboxes only.
	plain := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "100"} }))
	if err := plain.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := plain.Supervise(&SuperviseConfig{Log: log, Exit: exit}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("Supervise of a sandbox not Detachable: %v", err)
	}
}

// A pool's sandboxes cannot be detached: the pool owns them.
func TestDetachablePool(t *testing.T) {
	p, err := NewPool(context.Background(), "alpine:test", opts(func(o *Options) {
		o.Args = []string{"true"}
		o.Detachable = true
	}), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sb := p.New(nil)
	if err := sb.Start(context.Background()); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "Detachable") {
		t.Errorf("a pooled Detachable sandbox: %v, want ErrInvalidOptions naming Detachable", err)
	}
	sb.Close()
}

// A log whose disk is full drops output rather than holding the workload
// up, and what it holds stays whole entries.
func TestSuperviseDiskFull(t *testing.T) {
	logDir := t.TempDir()
	// A disk of 96 KiB: full before the log reaches its bound of 64
	// KiB a second time.
	if err := unix.Mount("tmpfs", logDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=96k"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(logDir, unix.MNT_DETACH)
	sv := startSupervised(t, "yes 0123456789012345678901234567890123456789012345678901234567890123456789 | head -c 10485760",
		"BERTH_TEST_SV_LOGDIR="+logDir, "BERTH_TEST_SV_LOGMAX=65536")
	sv.wait(t)
	if st := sv.exitStatus(t); st.ExitCode != 0 {
		t.Errorf("exit status %+v: the workload did not end on its own", st)
	}
	for _, name := range []string{"log", "log.1"} {
		b, err := os.ReadFile(filepath.Join(logDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 || b[len(b)-1] != '\n' {
			t.Errorf("%s ends with a broken entry: %q", name, b[max(0, len(b)-80):])
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if _, ok := parseLogLine([]byte(l)); !ok {
				t.Fatalf("%s: damaged line %q", name, l)
			}
		}
	}
	sv.assertReclaimed(t)
}

// A process outside the sandbox holding the workload's output pipe does
// not keep the supervisor from recording the end: the drain after PID 1's
// end is bounded.
func TestSuperviseOutputHeldOutside(t *testing.T) {
	sv := startSupervised(t, "echo ready; while [ ! -e /x/go ]; do sleep 0.05; done; exit 6")
	waitForEntry(t, filepath.Join(sv.dir, "log"), "ready")
	cg, err := sv.cgm.Open(sv.id)
	if err != nil {
		t.Fatal(err)
	}
	pids, err := cg.Pids()
	if err != nil || len(pids) < 2 {
		t.Fatalf("sandbox runs %v (%v)", pids, err)
	}
	// The workload's shell, PID 1's child: take its stdout.
	var held *os.File
	for _, pid := range pids {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if string(comm) != "sh\n" {
			continue
		}
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.PidfdGetfd(pidfd, 1, 0)
		unix.Close(pidfd)
		if err != nil {
			t.Fatal(err)
		}
		held = os.NewFile(uintptr(fd), "the workload's stdout")
	}
	if held == nil {
		t.Fatalf("no workload shell among %v", pids)
	}
	defer held.Close()
	sv.release(t)
	sv.wait(t)
	if st := sv.exitStatus(t); st.ExitCode != 6 {
		t.Errorf("exit status %+v, want 6", st)
	}
	sv.assertReclaimed(t)
}

// A workload that leaves a process behind holding its output does not
// keep the supervisor waiting: the sandbox ends with its main process.
func TestSuperviseOutputHeldByOrphan(t *testing.T) {
	sv := startSupervised(t, "(trap '' TERM HUP; sleep 1000) & echo bye; exit 2")
	sv.wait(t)
	if st := sv.exitStatus(t); st.ExitCode != 2 {
		t.Errorf("exit status %+v, want 2", st)
	}
	if e := sv.entries(t, nil); len(e) != 1 || string(e[0].Text) != "bye" {
		t.Errorf("log %+v", e)
	}
	sv.assertReclaimed(t)
}
