package main

import (
	"context"
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
	if d.SupervisorRSS <= 0 || d.InitRSS <= 0 || d.SupervisorPSS <= 0 || d.InitPSS <= 0 {
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
