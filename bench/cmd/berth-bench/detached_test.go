package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// detachedEnv is the part of the harness's env the detached scenario
// uses: the image tarball, the berth command built from this tree, and a
// cgroup parent of the test's own.
func detachedEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it runs sandboxes")
	}
	tarball, err := filepath.Abs("../../../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tarball); err != nil {
		t.Fatalf("test image: %v (the tests need ../shared/images beside the repository)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := &env{tmp: t.TempDir(), tarball: tarball, cgParent: fmt.Sprintf("berth-bench-test-%d", os.Getpid())}
	e.berthBin = filepath.Join(e.tmp, "berth")
	if out, err := exec.CommandContext(ctx, goTool(), "build", "-o", e.berthBin, "github.com/berth-dev/berth/cmd/berth").CombinedOutput(); err != nil {
		t.Fatalf("build berth: %v: %s", err, out)
	}
	t.Cleanup(func() {
		c := e.detachedCLI()
		if err := c.sweep(); err != nil {
			t.Errorf("sweep: %v", err)
		}
		if err := unmountUnder(e.tmp); err != nil {
			t.Error(err)
		}
		if err := removeCgroups(c.cgParent); err != nil {
			t.Error(err)
		}
	})
	return e
}

// TestDetachedScenario runs the scenario for real with a few sandboxes:
// it must measure both host-side processes of each, and leave nothing.
func TestDetachedScenario(t *testing.T) {
	e := detachedEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d := e.measureDetached(ctx, 3)
	if d.Error != "" {
		t.Fatalf("scenario failed: %s", d.Error)
	}
	t.Logf("%+v", d)
	if d.SupervisorRSS <= 0 || d.InitRSS <= 0 || d.SupervisorPSS <= 0 || d.InitPSS <= 0 || d.Private <= 0 {
		t.Errorf("a host-side process was not measured: %+v", d)
	}
	if d.StartSeconds <= 0 || d.RemoveSeconds <= 0 {
		t.Errorf("start or removal not timed: %+v", d)
	}
	c := e.detachedCLI()
	if left := cgroupsUnder(c.cgParent); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
	if left := containerDirs(c.state); len(left) > 0 {
		t.Errorf("containers left: %v", left)
	}
}

// TestDetachedLeftoversAndSweep checks the checker: a detached sandbox
// that was not removed is reported, and the sweep removes it.
func TestDetachedLeftoversAndSweep(t *testing.T) {
	e := detachedEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := e.detachedCLI()
	if err := c.importImage(ctx, e.tarball); err != nil {
		t.Fatal(err)
	}
	out, err := c.run(ctx, time.Minute, "run", "-d", "alpine:bench", "sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	id, err := printedID(out)
	if err != nil {
		t.Fatal(err)
	}
	boxes, err := c.settled(ctx, []string{id})
	if err != nil {
		t.Fatal(err)
	}
	err = c.leftovers(boxes)
	if err == nil {
		t.Fatal("a running detached sandbox is not reported as left behind")
	}
	for _, want := range []string{"supervisor", "PID 1", "records left", "ps -a", "cgroups left", "still mounted"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("leftovers does not report %q: %v", want, err)
		}
	}
	if err := c.sweep(); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if err := c.leftovers(boxes); err != nil {
		t.Errorf("after the sweep: %v", err)
	}
}

func TestPrintedID(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, c := range []struct {
		out, want string
		ok        bool
	}{
		{id + "\n", id, true},
		{"warning: something\n" + id[:12] + "\n", id[:12], true},
		{"", "", false},
		{"../../etc\n", "", false},
		{id + " extra\n", "", false},
	} {
		got, err := printedID(c.out)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("printedID(%q) = %q, %v; want %q, ok=%v", c.out, got, err, c.want, c.ok)
		}
	}
}

// TestMergeDetached: a -detached only run lands in section 3b of the
// complete run already in the output directory, and nowhere else.
func TestMergeDetached(t *testing.T) {
	dir := t.TempDir()
	only := &Results{Mode: "full", DetachedOnly: true, Detached: []Detached{{N: 1000, SupervisorPSS: 100}},
		Notes: []string{"setup note", detachedNotePrefix + "how"}}
	if got := only.mergeDetached(dir); got != only {
		t.Error("merged with a results.json that does not exist")
	}
	prev := &Results{Mode: "quick", Memory: []Memory{{Tool: "berth (Go API)", N: 100}},
		Detached: []Detached{{N: 100}}, Notes: []string{"old note", detachedNotePrefix + "how"}}
	b, err := json.Marshal(prev)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	got := only.mergeDetached(dir)
	if got.DetachedOnly || got.Mode != "quick" || len(got.Memory) != 1 {
		t.Errorf("the previous run's sections are not kept: %+v", got)
	}
	if len(got.Detached) != 1 || got.Detached[0].N != 1000 {
		t.Errorf("section 3b is not the new run's: %+v", got.Detached)
	}
	md := got.markdown()
	for _, want := range []string{"## 3. host memory", "## 3b.", "| 1000 |", "old note", "later run (-detached only, full mode"} {
		if !strings.Contains(md, want) {
			t.Errorf("results.md lacks %q", want)
		}
	}
	if n := strings.Count(md, detachedNotePrefix+"how"); n != 1 {
		t.Errorf("the scenario's note appears %d times", n)
	}
	if strings.Contains(md, "setup note") {
		t.Error("the -detached only run's other notes were merged")
	}

	prev.PluginsOnly = true
	b, _ = json.Marshal(prev)
	os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644)
	if got := only.mergeDetached(dir); got != only {
		t.Error("merged into a -plugins only run")
	}
}

// TestBoxesWaitsForTheSupervisor: a sandbox is measured only once its
// owner is the single-threaded C supervisor and the parent of its PID 1,
// never while the owner is still the Go child `run -d` forked.
func TestBoxesWaitsForTheSupervisor(t *testing.T) {
	const id = "0123456789abcdef"
	state := t.TempDir()
	c := detachedCLI{state: state}
	child := exec.Command("sleep", "100")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	record := func(host, init int) {
		t.Helper()
		hostStart, err := startTime(host)
		if err != nil {
			t.Fatal(err)
		}
		initStart, _ := startTime(init)
		st := map[string]any{"id": id, "host": map[string]any{"pid": host, "startTime": hostStart}}
		if init != 0 {
			st["init"] = map[string]any{"pid": init, "startTime": initStart}
		}
		b, _ := json.Marshal(st)
		if err := os.MkdirAll(filepath.Join(state, id), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, id, "state.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	record(os.Getpid(), 0)
	if _, waiting, err := c.boxes([]string{id[:12]}); err != nil || !strings.Contains(waiting, "not recorded") {
		t.Errorf("no PID 1 yet: waiting %q, err %v", waiting, err)
	}
	// This test's process, a Go program, owns the sandbox: not yet the
	// supervisor.
	record(os.Getpid(), child.Process.Pid)
	if _, waiting, err := c.boxes([]string{id[:12]}); err != nil || !strings.Contains(waiting, "threads") {
		t.Errorf("a multi-threaded owner: waiting %q, err %v", waiting, err)
	}
	// An owner that is not PID 1's parent is wrong, not early.
	record(child.Process.Pid, child.Process.Pid)
	if _, _, err := c.boxes([]string{id[:12]}); err == nil || !strings.Contains(err.Error(), "child of") {
		t.Errorf("an owner that is not PID 1's parent: err %v", err)
	}
	if _, _, err := c.boxes([]string{"fedcba987654"}); err == nil || !strings.Contains(err.Error(), "no record") {
		t.Errorf("an ID with no record: err %v", err)
	}
}
