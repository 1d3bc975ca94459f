package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox"
)

// detachEnv is a cliEnv with busybox:demo too, and berth built.
type detachEnv struct {
	*cliEnv
	bin string
	t   *testing.T
}

func newDetachEnv(t *testing.T) *detachEnv {
	t.Helper()
	bin := buildBerth(t)
	e := &detachEnv{cliEnv: newCLIEnv(t), bin: bin, t: t}
	busybox, _ := filepath.Abs("../../../shared/images/busybox-1.38-musl-oci")
	if _, err := berth(t, e.root, "image", "import", busybox, "--name", "busybox:demo"); err != nil {
		t.Fatal(err)
	}
	// Before the env's gc: whatever a failed test left running goes.
	t.Cleanup(func() {
		cs, _ := listContainers(e.state)
		for _, c := range cs {
			if _, stderr, code := e.berth("rm", "-f", c.ID); code != 0 {
				t.Errorf("rm -f %s: %s", c.ID, stderr)
			}
		}
	})
	return e
}

// commandTimeout bounds every berth the tests run, so that one that
// hangs (wait on a container that never exits) fails the test and lets
// its cleanups run.
const commandTimeout = time.Minute

func (e *detachEnv) command(args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	e.t.Cleanup(cancel)
	return exec.CommandContext(ctx, e.bin, append([]string{"--root", e.root}, e.args(args...)...)...)
}

// berth runs berth with the env's flags and args, and returns what it
// printed and its exit status.
func (e *detachEnv) berth(args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	cmd := e.command(args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// must is berth that must succeed.
func (e *detachEnv) must(args ...string) string {
	e.t.Helper()
	out, stderr, code := e.berth(args...)
	if code != 0 {
		e.t.Fatalf("berth %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return out
}

func (e *detachEnv) container(nameOrID string) *containerRecord {
	e.t.Helper()
	c, err := loadContainer(e.state, nameOrID)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// log returns the text of container id's log, both files.
func (e *detachEnv) log(id string) string {
	dir := containerDir(e.state, id)
	old, _ := os.ReadFile(filepath.Join(dir, containerLog+".1"))
	cur, _ := os.ReadFile(filepath.Join(dir, containerLog))
	return string(old) + string(cur)
}

// eventually polls cond until it holds, failing the test after a minute.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// logLine matches an entry of the supervisor's log with text.
func logLine(stream, text string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^\S+Z ` + stream + ` F ` + regexp.QuoteMeta(text) + `$`)
}

var idRE = regexp.MustCompile(`^[0-9a-f]{16}\n$`)

// TestDetachedLifecycle is issue 14's story through the real CLI: run -d
// --name of a server that keeps running after berth has exited, its
// output in the log and its port answering; a taken name and a bad one
// refused; stop -t 2 whose TERM the workload's trap sees; wait printing
// its status; rm leaving nothing behind.
func TestDetachedLifecycle(t *testing.T) {
	e := newDetachEnv(t)
	script := `trap 'echo got TERM; exit 7' TERM; echo started; echo oops >&2; httpd -p 80 -h /; while :; do sleep 0.1; done`
	out := e.must("run", "-d", "--name", "db", "--net", "bridge", "-p", "127.0.0.1::80", "busybox:demo", "sh", "-c", script)
	if !idRE.MatchString(out) {
		t.Fatalf("run -d printed %q, want an ID", out)
	}
	id := strings.TrimSpace(out)
	// berth has exited; the sandbox runs on.
	if got := e.must("exec", "db", "echo", "hi"); got != "hi\n" {
		t.Errorf("exec db: %q", got)
	}
	if got := e.must("exec", id[:6], "echo", "hi"); got != "hi\n" {
		t.Errorf("exec by ID prefix: %q", got)
	}
	eventually(t, "the output in the log", func() bool {
		l := e.log(id)
		return logLine("stdout", "started").MatchString(l) && logLine("stderr", "oops").MatchString(l)
	})
	c := e.container("db")
	if c.ID != id || c.SandboxID != id || c.Status != statusRunning || c.Name != "db" || len(c.Ports) != 1 || c.Ports[0].HostPort == 0 {
		t.Fatalf("record: %+v", c)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(c.Ports[0].HostPort)))
	eventually(t, "the published port to answer", func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})

	// The hidden reaper refuses a container that runs.
	if _, stderr, code := e.berth(reapCommand, id); code == 0 || !strings.Contains(stderr, "still runs") {
		t.Errorf("%s of a running container: exit %d, %q", reapCommand, code, stderr)
	}
	if c := e.container(id); c.Status != statusRunning {
		t.Errorf("after a refused reap: %+v", c)
	}

	// The name is taken, by a detached container or a foreground one.
	for _, args := range [][]string{
		{"run", "-d", "--name", "db", "busybox:demo", "true"},
		{"run", "--name", "db", "busybox:demo", "true"},
	} {
		if _, stderr, code := e.berth(args...); code != 125 || !strings.Contains(stderr, "already in use") {
			t.Errorf("berth %s: exit %d, %q; want 125 and the name in use", strings.Join(args, " "), code, stderr)
		}
	}
	if _, stderr, code := e.berth("run", "-d", "--name", "../../etc", "busybox:demo", "true"); code != 125 || !strings.Contains(stderr, "--name") {
		t.Errorf("run -d --name ../../etc: exit %d, %q", code, stderr)
	}
	if _, err := os.Lstat(filepath.Join(e.state, "etc")); err == nil {
		t.Error("a name made a file outside the names directory")
	}

	if got := e.must("stop", "-t", "2", "db"); got != "db\n" {
		t.Errorf("stop printed %q", got)
	}
	if l := e.log(id); !logLine("stdout", "got TERM").MatchString(l) {
		t.Errorf("the workload's trap did not run on stop; log:\n%s", l)
	}
	if got := e.must("wait", "db"); got != "7\n" {
		t.Errorf("wait printed %q, want 7", got)
	}
	if c := e.container("db"); c.Status != statusExited || c.ExitCode != 7 || !c.Stopped {
		t.Errorf("record after stop: %+v", c)
	}
	if ps := e.must("ps", "-a"); !regexp.MustCompile(`(?m)^` + id[:12] + ` .*Exited \(7\).* db$`).MatchString(ps) {
		t.Errorf("ps -a does not show db exited with 7:\n%s", ps)
	}
	if logs := e.must("logs", "db"); !strings.Contains(logs, "started\n") || !strings.Contains(logs, "got TERM\n") {
		t.Errorf("logs db: %q", logs)
	}
	if _, _, code := e.berth("exec", "db", "true"); code == 0 {
		t.Error("exec into a stopped container succeeded")
	}
	// The sandbox is gone already: reaped before stop returned.
	if left := sandboxesLeft(t, e.state); len(left) > 0 {
		t.Errorf("after stop: %v", left)
	}

	if got := e.must("rm", "db"); got != "db\n" {
		t.Errorf("rm printed %q", got)
	}
	if left := e.leftBehind(id); len(left) > 0 {
		t.Errorf("after rm: %s", strings.Join(left, "; "))
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Error("the published port still answers after rm")
	}
	// The name is free again.
	out = e.must("run", "-d", "--rm", "--name", "db", "busybox:demo", "true")
	eventually(t, "--rm to remove the container", func() bool {
		_, err := os.Stat(containerDir(e.state, strings.TrimSpace(out)))
		return errors.Is(err, os.ErrNotExist)
	})
	if left := e.leftBehind(strings.TrimSpace(out)); len(left) > 0 {
		t.Errorf("after --rm: %s", strings.Join(left, "; "))
	}
}

// sandboxesLeft returns the sandboxes' directories in the state directory.
func sandboxesLeft(t *testing.T, state string) []string {
	t.Helper()
	entries, err := os.ReadDir(state)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		if containerIDRE.MatchString(e.Name()) {
			left = append(left, e.Name())
		}
	}
	return left
}

// leftBehind lists what of sandbox or container id is left: its
// container's directory and name, sandbox state, cgroups, rootfs, mounts
// under the store or the state directory, network attachments.
func (e *detachEnv) leftBehind(id string) []string {
	t := e.t
	t.Helper()
	var left []string
	if _, err := os.Stat(containerDir(e.state, id)); !errors.Is(err, os.ErrNotExist) {
		left = append(left, "container directory")
	}
	names, err := os.ReadDir(filepath.Join(containersRoot(e.state), "names"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, n := range names {
		left = append(left, "container name "+n.Name())
	}
	if s := sandboxesLeft(t, e.state); len(s) > 0 {
		left = append(left, "sandbox state "+strings.Join(s, " "))
	}
	if names, err := os.ReadDir(filepath.Join(e.state, "names")); err == nil && len(names) > 0 {
		left = append(left, fmt.Sprintf("%d sandbox names", len(names)))
	}
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: e.flags[3]})
	if err != nil {
		t.Fatal(err)
	}
	if cgs, err := cgm.List(); err != nil {
		t.Fatal(err)
	} else if len(cgs) > 0 {
		left = append(left, "cgroups "+strings.Join(cgs, " "))
	}
	store, err := layerfs.Open(e.root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := store.Rootfses(t.Context()); err != nil {
		t.Fatal(err)
	} else if len(keys) > 0 {
		left = append(left, "rootfs "+strings.Join(keys, " "))
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (strings.HasPrefix(f[4], e.root+"/") || strings.HasPrefix(f[4], e.state+"/")) {
			left = append(left, "mount "+f[4])
		}
	}
	// The attachment's records (lease, CNI cache), which name the ID.
	if b, err := exec.Command("grep", "-rl", id, netplug.DefaultRunDir).Output(); err == nil && len(b) > 0 {
		left = append(left, "network records "+strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", " "))
	}
	return left
}

// The command that starts a detached sandbox is killed with -9 while the
// sandbox is starting: the sandbox starts all the same, keeps running and
// logging, and is the container's as usual.
func TestDetachedSurvivesStarterKill(t *testing.T) {
	e := newDetachEnv(t)
	parent := e.command("run", "-d", "--name", "ticker", "busybox:demo", "sh", "-c", `i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done`)
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	// The child has made the container's record: it is starting.
	var id string
	eventually(t, "the detached child to start", func() bool {
		cs, _ := listContainers(e.state)
		if len(cs) == 1 {
			id = cs[0].ID
		}
		return id != ""
	})
	parent.Process.Signal(syscall.SIGKILL)
	if err := parent.Wait(); err == nil {
		t.Log("the parent had exited already")
	}
	eventually(t, "the container to run", func() bool {
		c, err := loadContainer(e.state, "ticker")
		return err == nil && c.Status == statusRunning
	})
	tick := regexp.MustCompile(`(?m)^\S+Z stdout F tick [0-9]+$`)
	ticks := func() int { return len(tick.FindAllString(e.log(id), -1)) }
	var first int
	eventually(t, "output in the log", func() bool { first = ticks(); return first > 0 })
	eventually(t, "more output in the log", func() bool { return ticks() > first })
	// Its sandbox has no owner but its supervisor, a process with no Go
	// runtime and no link to the killed command.
	if got := e.must("exec", "ticker", "echo", "alive"); got != "alive\n" {
		t.Errorf("exec: %q", got)
	}
	e.must("rm", "-f", "ticker")
	if left := e.leftBehind(id); len(left) > 0 {
		t.Errorf("after rm -f: %s", strings.Join(left, "; "))
	}
}

func TestDetachedRestartPolicies(t *testing.T) {
	e := newDetachEnv(t)
	// on-failure:2: two restarts, then it stays exited.
	id := strings.TrimSpace(e.must("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox:demo", "sh", "-c", "echo run; exit 3"))
	if got := e.must("wait", "flaky"); got != "3\n" {
		t.Errorf("wait: %q", got)
	}
	c := e.container("flaky")
	if c.RestartCount != 2 || c.Status != statusExited || c.ExitCode != 3 {
		t.Errorf("record: %+v", c)
	}
	if n := len(logLine("stdout", "run").FindAllString(e.log(id), -1)); n != 3 {
		t.Errorf("%d runs in the log, want 3", n)
	}
	if left := sandboxesLeft(t, e.state); len(left) > 0 {
		t.Errorf("sandboxes left: %v", left)
	}
	e.must("rm", "flaky")

	// always: restarted until stopped; stop keeps it stopped.
	e.must("run", "-d", "--name", "loop", "--restart", "always", "busybox:demo", "sh", "-c", "echo run; sleep 0.3; exit 1")
	eventually(t, "a restart", func() bool { return e.container("loop").RestartCount >= 1 })
	e.must("stop", "-t", "1", "loop")
	c = e.container("loop")
	if c.Status != statusExited || !c.Stopped {
		t.Errorf("after stop: %+v", c)
	}
	count := c.RestartCount
	time.Sleep(time.Second) // longer than the backoff of the next restart, were there one
	if c := e.container("loop"); c.Status != statusExited || c.RestartCount != count {
		t.Errorf("a stopped container was restarted: %+v", c)
	}
	// restart starts it again, and a running container is not removed
	// without -f.
	e.must("restart", "-t", "0", "loop")
	if c := e.container("loop"); !c.Running() && c.Status != statusRestarting {
		t.Errorf("after restart: %+v", c)
	}
	if _, stderr, code := e.berth("rm", "loop"); code == 0 || !strings.Contains(stderr, "rm -f") {
		t.Errorf("rm of a running container: exit %d, %q", code, stderr)
	}
	// berth kill stops it for good too.
	eventually(t, "the restarted container to run", func() bool { return e.container("loop").Status == statusRunning })
	e.must("kill", "loop")
	// (Killed, or, if it was ending just then, its own status.)
	if got := e.must("wait", "loop"); got != "137\n" && got != "1\n" {
		t.Errorf("wait after kill: %q", got)
	}
	if c := e.container("loop"); c.Status != statusExited || !c.Stopped {
		t.Errorf("after kill: %+v", c)
	}
	e.must("rm", "loop")
	if left := e.leftBehind(c.ID); len(left) > 0 {
		t.Errorf("after rm -f: %s", strings.Join(left, "; "))
	}

	// --stop-timeout is stop's grace when -t is not given: 0 kills at
	// once, and the trap never runs.
	e.must("run", "-d", "--name", "quick", "--stop-timeout", "0", "busybox:demo", "sh", "-c", "trap 'exit 5' TERM; while :; do sleep 0.1; done")
	e.must("stop", "quick")
	if c := e.container("quick"); c.ExitCode != 137 {
		t.Errorf("stop of a --stop-timeout 0 container: exit %d, want 137", c.ExitCode)
	}
	e.must("rm", "quick")

	// restart of an --rm container keeps it; its stop removes it.
	id = strings.TrimSpace(e.must("run", "-d", "--rm", "--name", "temp", "busybox:demo", "sleep", "100"))
	e.must("restart", "-t", "0", "temp")
	if c := e.container("temp"); !c.Running() || c.SandboxID == id {
		t.Errorf("after restart: %+v", c)
	}
	if got := e.must("exec", "temp", "hostname"); got != id[:12]+"\n" {
		t.Errorf("host name after restart: %q, want the container's, %s", got, id[:12])
	}
	e.must("stop", "-t", "0", "temp")
	eventually(t, "--rm to remove the stopped container", func() bool {
		_, err := loadContainer(e.state, "temp")
		return errors.Is(err, errContainerNotFound)
	})
}

// Mistakes in run -d's command line are the command's to report, with
// status 125, before anything starts.
func TestRunDetachedRefusals(t *testing.T) {
	e := newCLIEnv(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--restart", "always"}, "only for a detached sandbox"},
		{[]string{"-d", "--restart", "sometimes"}, "--restart"},
		{[]string{"-d", "--restart", "on-failure:-1"}, "--restart"},
		{[]string{"-d", "--rm", "--restart", "always"}, "--rm and --restart"},
		{[]string{"-d", "-i"}, "-i with -d"},
		{[]string{"-d", "--timeout", "1s"}, "--timeout with -d"},
		{[]string{"-d", "--name", "../x"}, "--name"},
		{[]string{"-d", "--name", "a\nb"}, "--name"},
		{[]string{"-d", "--name", strings.Repeat("n", 129)}, "--name"},
	} {
		args := e.args(append(append([]string{"run"}, c.args...), "alpine:test", "true")...)
		_, stderr, code := berthExit(t, e.root, args...)
		if code != 125 || !strings.Contains(stderr, c.want) {
			t.Errorf("run %s: exit %d, %q; want 125 and %q", strings.Join(c.args, " "), code, stderr, c.want)
		}
	}
	if _, stderr, code := berthExit(t, e.root, e.args("run", "-d", "nope:1", "true")...); code != 125 || !strings.Contains(stderr, "not found") {
		t.Errorf("run -d of a missing image: exit %d, %q", code, stderr)
	}
	if cs, _ := listContainers(e.state); len(cs) > 0 {
		t.Errorf("refused runs left containers: %v", cs)
	}
}

// A container record is JSON a reader can use.
func TestContainerRecordJSON(t *testing.T) {
	state := t.TempDir()
	c := &containerRecord{ID: "0123456789abcdef", Name: "web", Created: time.Now().UTC(), Image: "busybox:demo", Argv: []string{"run", "-d"}, Restart: restartPolicy{Name: "on-failure", MaxRetries: 2}, Status: statusRunning}
	if err := createContainer(state, c); err != nil {
		t.Fatal(err)
	}
	dup := *c
	dup.ID = "fedcba9876543210"
	if err := createContainer(state, &dup); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second container named web: %v", err)
	}
	if _, err := os.Stat(containerDir(state, dup.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Error("a refused container left its directory")
	}
	b, err := os.ReadFile(filepath.Join(containerDir(state, c.ID), containerConfig))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil || v["name"] != "web" || v["status"] != "running" {
		t.Errorf("config.json: %v %s", err, b)
	}
	for _, arg := range []string{"web", "0123", c.ID} {
		if got, err := loadContainer(state, arg); err != nil || got.ID != c.ID {
			t.Errorf("loadContainer(%q): %v", arg, err)
		}
	}
	for _, arg := range []string{"012", "../web", "nope"} {
		if _, err := loadContainer(state, arg); !errors.Is(err, errContainerNotFound) {
			t.Errorf("loadContainer(%q): %v", arg, err)
		}
	}
	if err := removeContainer(state, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(nameLink(state, "web")); !errors.Is(err, os.ErrNotExist) {
		t.Error("rm left the name")
	}
}

// A sandbox on its way to its reaper (its exit recorded, its owner lock
// let go) is no orphan; nor is one whose end a reaper recorded and a
// restart replaced meanwhile: marking it would record 137 for a workload
// that ended otherwise, or end the next sandbox's record. One whose
// supervisor's process died, as supervisor or as reaper, is: its end is
// recorded as the supervisor saw it, if it did, and a restart its reaper
// waited for does not happen.
func TestContainerOrphanedSeams(t *testing.T) {
	g := &globals{state: t.TempDir()}
	first, next := "0123456789abcdef", "fedcba9876543210"
	c := &containerRecord{ID: first, Created: time.Now().UTC(), Image: "busybox:demo", SandboxID: first, Status: statusRunning}
	if err := createContainer(g.state, c); err != nil {
		t.Fatal(err)
	}
	update := func(fn func(c *containerRecord)) {
		t.Helper()
		if _, err := updateContainer(g.state, first, func(c *containerRecord) error { fn(c); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	// No state directory: nothing owns the sandbox. A record from before
	// supervisors were named: the exit record tells.
	exitFile := filepath.Join(containerDir(g.state, first), containerExit)
	if err := os.WriteFile(exitFile, []byte(`{"exitCode":7,"exited":"2026-01-02T03:04:05Z"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if sid := g.orphaned(first); sid != "" {
		t.Errorf("an exited sandbox, its owner gone, counts as orphaned (%s)", sid)
	}
	os.Remove(exitFile)
	if sid := g.orphaned(first); sid != first {
		t.Fatalf("orphaned = %q, want %s", sid, first)
	}
	// Meanwhile its reaper recorded the end, and a restart began the next.
	update(func(c *containerRecord) { c.SandboxID = next })
	if err := markOrphanEnded(g.state, first, first); err != nil {
		t.Fatal(err)
	}
	if c := must(loadContainer(g.state, first)); c.Status != statusRunning || c.ExitCode != 0 || c.Error != "" {
		t.Errorf("the next sandbox's record was marked: %+v", c)
	}

	// Its supervisor (this process) lives: no orphan, owner or not.
	self := must(thisProcess())
	dead := &processRef{PID: os.Getpid(), StartTime: self.StartTime + 1}
	update(func(c *containerRecord) { c.Supervisor = self })
	if sid := g.orphaned(first); sid != "" {
		t.Errorf("a sandbox whose supervisor lives counts as orphaned (%s)", sid)
	}
	// Its reaper died after the supervisor recorded the end.
	if err := os.WriteFile(exitFile, []byte(`{"exitCode":7,"exited":"2026-01-02T03:04:05Z"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	update(func(c *containerRecord) { c.Supervisor = dead })
	if sid := g.orphaned(first); sid != next {
		t.Fatalf("orphaned = %q with its reaper dead, want %s", sid, next)
	}
	if err := markOrphanEnded(g.state, first, next); err != nil {
		t.Fatal(err)
	}
	if c := must(loadContainer(g.state, first)); c.Status != statusExited || c.ExitCode != 7 || c.Error != "its reaper died" {
		t.Errorf("after its reaper died: %+v", c)
	}
	// Its reaper died while it waited to start it again.
	update(func(c *containerRecord) { c.Status, c.Supervisor = statusRestarting, self })
	if sid := g.orphaned(first); sid != "" {
		t.Errorf("a restart whose reaper lives counts as orphaned (%s)", sid)
	}
	update(func(c *containerRecord) { c.Supervisor = dead })
	if sid := g.orphaned(first); sid != next {
		t.Fatalf("orphaned = %q with its reaper dead before a restart, want %s", sid, next)
	}
	if err := markOrphanEnded(g.state, first, next); err != nil {
		t.Fatal(err)
	}
	if c := must(loadContainer(g.state, first)); c.Status != statusExited {
		t.Errorf("after its reaper died before a restart: %+v", c)
	}
	// berth restart's start, which names no supervisor until it claims
	// the record.
	update(func(c *containerRecord) { c.Status, c.Supervisor = statusRestarting, nil })
	if sid := g.orphaned(first); sid != "" {
		t.Errorf("berth restart's start counts as orphaned (%s)", sid)
	}
	// The child that starts it, alive, then killed.
	update(func(c *containerRecord) { c.Status, c.Supervisor = statusCreated, self })
	if sid := g.orphaned(first); sid != "" {
		t.Errorf("a container starting counts as orphaned (%s)", sid)
	}
	update(func(c *containerRecord) { c.Supervisor = dead })
	if sid := g.orphaned(first); sid != next {
		t.Fatalf("orphaned = %q with the berth starting it dead, want %s", sid, next)
	}
	if err := markOrphanEnded(g.state, first, next); err != nil {
		t.Fatal(err)
	}
	if c := must(loadContainer(g.state, first)); c.Status != statusExited || c.ExitCode != 137 {
		t.Errorf("after the berth starting it died: %+v", c)
	}
}

// Of two removals of one container at once (two rm, or rm -f and an
// --rm container's reaper), the one that waited for the lock finds it
// gone: errContainerNotFound, which rm -f takes for done.
func TestContainerRemovedWhileWaiting(t *testing.T) {
	state := t.TempDir()
	c := &containerRecord{ID: "0123456789abcdef", Name: "web", Created: time.Now().UTC(), Image: "busybox:demo", Status: statusExited}
	if err := createContainer(state, c); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockContainer(containerDir(state, c.ID))
	if err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() { second <- removeContainer(state, c.ID) }()
	time.Sleep(100 * time.Millisecond) // the second waits for the lock
	if err := os.RemoveAll(containerDir(state, c.ID)); err != nil {
		t.Fatal(err)
	}
	unlock()
	if err := <-second; !errors.Is(err, errContainerNotFound) {
		t.Errorf("the second removal: %v, want errContainerNotFound", err)
	}
}

// Two run -d --name at once: one gets the name, the other is refused.
func TestDetachedNameRace(t *testing.T) {
	e := newDetachEnv(t)
	type result struct {
		out, stderr string
		code        int
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			cmd := e.command("run", "-d", "--name", "same", "busybox:demo", "sleep", "100")
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				code = -1
			}
			results <- result{out.String(), errOut.String(), code}
		}()
	}
	a, b := <-results, <-results
	if a.code != 0 {
		a, b = b, a
	}
	if a.code != 0 || !idRE.MatchString(a.out) || b.code != 125 || !strings.Contains(b.stderr, "already in use") {
		t.Errorf("two run -d --name same: %+v and %+v; want one ID and one refusal", a, b)
	}
	if cs, _ := listContainers(e.state); len(cs) != 1 {
		t.Errorf("%d containers, want 1", len(cs))
	}
}

// A supervisor killed with -9 leaves a container whose record says it
// runs, and a sandbox with no owner: stop reclaims it (as berth gc would)
// and records the end, and rm leaves nothing.
func TestDetachedSupervisorKilled(t *testing.T) {
	e := newDetachEnv(t)
	id := strings.TrimSpace(e.must("run", "-d", "--name", "orphan", "busybox:demo", "sleep", "100"))
	states, err := sandbox.ReadStates(e.state)
	if err != nil || len(states) != 1 || states[0].ID != id {
		t.Fatalf("records: %v %+v", err, states)
	}
	supervisor := states[0].Host.PID
	// The child that started the sandbox becomes its supervisor, with
	// the same PID, just after run -d returns.
	eventually(t, "the supervisor", func() bool {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", supervisor))
		return strings.HasPrefix(string(comm), "berth-supervise")
	})
	// A follower of its log: no exit record will ever come, so it must
	// see the supervisor die instead.
	follow := e.command("logs", "-f", "orphan")
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	followed := make(chan error, 1)
	go func() { followed <- follow.Wait() }()
	if err := syscall.Kill(supervisor, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-followed:
		if err != nil {
			t.Errorf("logs -f: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("logs -f still follows 30 s after the supervisor died")
	}
	// gc reclaims it, and records its end; so would wait, stop and rm.
	e.must("gc")
	if c := e.container("orphan"); c.Status != statusExited {
		t.Errorf("after gc: %+v", c)
	}
	if got := e.must("wait", "orphan"); got != "137\n" {
		t.Errorf("wait: %q", got)
	}
	e.must("stop", "orphan")
	c := e.container("orphan")
	if c.Status != statusExited || c.Error == "" {
		t.Errorf("record: %+v", c)
	}
	e.must("rm", "orphan")
	if left := e.leftBehind(id); len(left) > 0 {
		t.Errorf("after rm: %s", strings.Join(left, "; "))
	}

	// Without gc, wait sees it end.
	id = strings.TrimSpace(e.must("run", "-d", "--name", "orphan2", "busybox:demo", "sleep", "100"))
	states, err = sandbox.ReadStates(e.state)
	if err != nil || len(states) != 1 {
		t.Fatalf("records: %v %+v", err, states)
	}
	if err := syscall.Kill(states[0].Host.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if got := e.must("wait", "orphan2"); got != "137\n" {
		t.Errorf("wait: %q", got)
	}
	e.must("rm", "orphan2")
	if left := e.leftBehind(id); len(left) > 0 {
		t.Errorf("after rm: %s", strings.Join(left, "; "))
	}
}

// The reaper (Then of the supervisor) records a container's end even
// while a berth gc reclaims its sandbox, which holds the sandbox's owner
// lock meanwhile: the sandbox's PID 1 is gone, so it does not run,
// whoever holds its lock. (The reaper also has the PID and start time the
// record names as its host.)
func TestReapWhileGCReclaims(t *testing.T) {
	e := newDetachEnv(t)
	id := strings.TrimSpace(e.must("run", "-d", "--name", "gcrace", "busybox:demo", "sleep", "100"))
	states, err := sandbox.ReadStates(e.state)
	if err != nil || len(states) != 1 || states[0].ID != id {
		t.Fatalf("records: %v %+v", err, states)
	}
	supervisor := states[0].Host.PID
	eventually(t, "the supervisor", func() bool {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", supervisor))
		return strings.HasPrefix(string(comm), "berth-supervise")
	})
	// The record must name PID 1 as the supervisor left it.
	states, err = sandbox.ReadStates(e.state)
	if err != nil || len(states) != 1 || states[0].Init.PID == 0 {
		t.Fatalf("records: %v %+v", err, states)
	}
	init := states[0].Init.PID
	// The supervisor and the sandbox end without the reaper, which this
	// test runs itself, as the supervisor would have.
	if err := syscall.Kill(supervisor, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(init, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the sandbox's PID 1 to end", func() bool {
		return syscall.Kill(init, 0) != nil
	})
	// A gc reclaiming it holds its owner lock.
	lock, err := os.Open(filepath.Join(e.state, id))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := e.berth(reapCommand, id); code != 0 {
		t.Errorf("%s while gc reclaims: exit %d, %q", reapCommand, code, stderr)
	}
	if c := e.container("gcrace"); c.Status != statusExited {
		t.Errorf("record after the reaper: %+v", c)
	}
	// The gc's reclaim, which the lock stood for.
	lock.Close()
	e.must("gc")
	e.must("rm", "gcrace")
	if left := e.leftBehind(id); len(left) > 0 {
		t.Errorf("after rm: %s", strings.Join(left, "; "))
	}
}

// The Go API's view of a detached sandbox: Open by its name gives a
// handle whose record names the supervisor's log, which ReadLog reads,
// and whose Stop ends it gracefully; the container records the end.
func TestDetachedOpenByName(t *testing.T) {
	e := newDetachEnv(t)
	id := strings.TrimSpace(e.must("run", "-d", "--name", "api", "-l", "team=qa", "busybox:demo", "sh", "-c", "trap 'echo bye; exit 4' TERM; echo hello; while :; do sleep 0.1; done"))
	ctx := t.Context()
	h, err := sandbox.Open(ctx, "api", &sandbox.Options{StateDir: e.state, Storage: must(layerfs.Open(e.root, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	st := h.State()
	if h.ID() != id || st.Name != "api" || st.Labels["team"] != "qa" || st.Log != filepath.Join(containerDir(e.state, id), containerLog) {
		t.Fatalf("handle %s: %+v", h.ID(), st)
	}
	eventually(t, "hello in the log", func() bool {
		var seen bool
		sandbox.ReadLog(ctx, st.Log, nil, func(le sandbox.LogEntry) error {
			seen = seen || (le.Stream == "stdout" && string(le.Text) == "hello")
			return nil
		})
		return seen
	})
	if err := h.Stop(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := e.must("wait", "api"); got != "4\n" {
		t.Errorf("wait after Stop: %q", got)
	}
	var lines []string
	err = sandbox.ReadLog(ctx, st.Log, &sandbox.LogOptions{Follow: true, Exit: filepath.Join(containerDir(e.state, id), containerExit)}, func(le sandbox.LogEntry) error {
		lines = append(lines, string(le.Text))
		return nil
	})
	if err != nil || strings.Join(lines, ",") != "hello,bye" {
		t.Errorf("the log, followed to the end: %q %v", lines, err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A sandbox run in the foreground with --name: other commands take its
// name, stop ends it gracefully, and the berth that runs it exits with
// the workload's status.
func TestStopForegroundByName(t *testing.T) {
	e := newDetachEnv(t)
	fg := e.command("run", "--name", "fg", "busybox:demo", "sh", "-c", "trap 'exit 9' TERM; while :; do sleep 0.1; done")
	if err := fg.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the named sandbox", func() bool {
		out, _, code := e.berth("exec", "fg", "echo", "up")
		return code == 0 && out == "up\n"
	})
	e.must("stop", "-t", "5", "fg")
	err := fg.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 9 {
		t.Errorf("the foreground berth: %v, want exit status 9", err)
	}
	if _, stderr, code := e.berth("wait", "fg"); code == 0 || !strings.Contains(stderr, "no such container") {
		t.Errorf("wait of a foreground sandbox: %d %q", code, stderr)
	}
}

// A detached sandbox's reaper frees its own sandbox and nothing else:
// sandboxes recorded in another state directory that shares the store and
// the cgroup parent are not its leftovers, and keep running.
func TestDetachedReaperSparesOtherStateDirs(t *testing.T) {
	e := newDetachEnv(t)
	other := filepath.Join(t.TempDir(), "state")
	id := strings.TrimSpace(e.must("run", "-d", "busybox:demo", "sleep", "1000"))
	short := strings.TrimSpace(e.must("--state", other, "run", "-d", "busybox:demo", "true"))
	t.Cleanup(func() { e.berth("--state", other, "rm", "-f", short) })
	if out := strings.TrimSpace(e.must("--state", other, "wait", short)); out != "0" {
		t.Errorf("wait of the short one: %q", out)
	}
	if out := e.must("exec", id, "echo", "alive"); out != "alive\n" {
		t.Errorf("exec in the sandbox of the other state directory after the reaper ran: %q", out)
	}
	if c := e.container(id); c.Status != statusRunning {
		t.Errorf("its record after the other's reaper: %+v", c)
	}
	e.must("--state", other, "rm", short)
	e.must("rm", "-f", id)
	if left := e.leftBehind(id); len(left) > 0 {
		t.Errorf("after rm: %s", strings.Join(left, "; "))
	}
}

// stop ends several containers at once, not one after another: each of
// three workloads, asked to stop, waits until all three have been asked
// before it exits 0, which one-at-a-time stops would never let happen
// before the grace ran out (and SIGKILL made it 137). What stop and rm
// print follows the arguments' order, and a name that names nothing
// fails on its own.
func TestStopConcurrently(t *testing.T) {
	e := newDetachEnv(t)
	shared := t.TempDir()
	names := []string{"one", "two", "three"}
	for _, n := range names {
		e.must("run", "-d", "--name", n, "-v", shared+":/shared", "-e", "N="+n, "busybox:demo", "sh", "-c",
			`trap 'touch /shared/$N; while [ $(ls /shared | wc -l) -lt 3 ]; do sleep 0.05; done; exit 0' TERM; echo ready; while :; do sleep 1; done`)
	}
	t.Cleanup(func() { e.berth(append([]string{"rm", "-f"}, names...)...) })
	for _, n := range names {
		id := e.container(n).ID
		eventually(t, n+"'s trap", func() bool { return strings.Contains(e.log(id), "ready") })
	}
	if out := e.must(append([]string{"stop", "-t", "60"}, names...)...); out != "one\ntwo\nthree\n" {
		t.Errorf("stop printed %q", out)
	}
	for _, n := range names {
		if c := e.container(n); c.Status != statusExited || c.ExitCode != 0 {
			t.Errorf("%s after stop: %s, exit %d; want exited 0", n, c.Status, c.ExitCode)
		}
	}
	stdout, stderr, code := e.berth("rm", "three", "none-such", "one", "two")
	if code != exitFailure || stdout != "three\none\ntwo\n" || !strings.Contains(stderr, "none-such") {
		t.Errorf("rm: exit %d, %q %q; want the three removed in order, and none-such refused", code, stdout, stderr)
	}
}

// A container started again runs the image it was made from, by digest,
// not whatever its tag names by then, as Docker's restarts do.
func TestRestartKeepsItsImage(t *testing.T) {
	e := newDetachEnv(t)
	e.must("image", "tag", "busybox:demo", "pinned:test")
	e.must("run", "-d", "--name", "pin", "pinned:test", "sh", "-c", "if [ -e /etc/alpine-release ]; then echo alpine; else echo busybox; fi; sleep 1000")
	t.Cleanup(func() { e.berth("rm", "-f", "pin") })
	id := e.container("pin").ID
	eventually(t, "the first run's line", func() bool { return strings.Contains(e.log(id), "busybox") })
	e.must("image", "tag", "alpine:test", "pinned:test")
	e.must("restart", "-t", "0", "pin")
	eventually(t, "the second run's line", func() bool { return strings.Count(e.log(id), "\n") >= 2 })
	if log := e.log(id); strings.Contains(log, "alpine") {
		t.Errorf("restarted with the image its tag names now:\n%s", log)
	}
	if out := e.must("ps", "-a", "--filter", "name=pin", "--format", "{{.Image}}"); out != "pinned:test\n" {
		t.Errorf("ps shows image %q; want the name it was run with", out)
	}

	// Its image stays while the container does: by digest, or by its
	// last name. A name of an image with others may go.
	digest := strings.TrimSpace(e.must("inspect", "--format", "{{.Config.ImageDigest}}", "pin"))
	e.must("image", "tag", digest, "other:name")
	refused := func(ref string) {
		t.Helper()
		if _, stderr, code := e.berth("image", "rm", ref); code == 0 || !strings.Contains(stderr, "container pin") {
			t.Errorf("image rm %s of pin's image: exit %d, %q; want a refusal naming pin", ref, code, stderr)
		}
	}
	refused(digest)
	e.must("image", "rm", "other:name")
	refused("busybox:demo")
	e.must("rm", "-f", "pin")
	e.must("image", "rm", "busybox:demo")
	if _, _, code := e.berth("image", "inspect", digest); code == 0 {
		t.Errorf("pin's image is still there after its container and its last name went")
	}
}

// A container whose image was removed with image rm -f can still be
// looked at, stopped and removed, leaving nothing; only exec, which
// needs the image's defaults, refuses, saying why.
func TestImageRemovedUnderContainer(t *testing.T) {
	e := newDetachEnv(t)
	e.must("image", "tag", "busybox:demo", "doomed:test")
	id := strings.TrimSpace(e.must("run", "-d", "--name", "orphaned-image", "doomed:test", "sleep", "1000"))
	digest := strings.TrimSpace(e.must("inspect", "--format", "{{.Config.ImageDigest}}", "orphaned-image"))
	e.must("image", "rm", "-f", digest)
	if _, stderr, code := e.berth("exec", "orphaned-image", "true"); code == 0 || !strings.Contains(stderr, "has left the store") {
		t.Errorf("exec after the image went: exit %d, %q; want a refusal saying the image is gone", code, stderr)
	}
	e.must("inspect", "orphaned-image")
	e.must("stop", "-t", "0", "orphaned-image")
	e.must("rm", "orphaned-image")
	if left := e.leftBehind(id); len(left) > 0 {
		t.Errorf("after rm: %s", strings.Join(left, "; "))
	}
}
