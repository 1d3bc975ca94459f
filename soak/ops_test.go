//go:build soak

package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// The kinds of operation the soak does, and how often, out of the sum of
// the weights.
var operations = []struct {
	name   string
	weight int
	args   func(s *soak, i int) []string
}{
	{"run", 30, func(s *soak, i int) []string {
		return []string{"run", "soak:alpine", "sh", "-c", fmt.Sprintf("echo soak; sleep 0.%d", s.intN(4))}
	}},
	// Long runs are what execs go into.
	{"run (long)", 10, func(s *soak, i int) []string {
		return []string{"run", "soak:alpine", "sleep", fmt.Sprint(1 + s.intN(3))}
	}},
	{"run --net -p", 20, func(s *soak, i int) []string {
		port := fmt.Sprintf("127.0.0.1:%d:80", s.portBase+i%5000)
		return []string{"run", "--net", s.network, "-p", port, "soak:alpine", "sh", "-c", fmt.Sprintf("ip addr show eth0 >/dev/null; sleep 0.%d", s.intN(4))}
	}},
	// Some write more than their quota allows.
	{"run --disk", 12, func(s *soak, i int) []string {
		return []string{"run", "--disk", "16m", "soak:alpine", "sh", "-c", fmt.Sprintf("dd if=/dev/zero of=/fill bs=1M count=%d 2>/dev/null; sync", 1+s.intN(20))}
	}},
	{"exec", 15, func(s *soak, i int) []string {
		id := s.liveSandbox()
		if id == "" {
			return []string{"run", "soak:alpine", "sleep", "2"}
		}
		return []string{"exec", id, "sh", "-c", "echo soak"}
	}},
	{"image import", 8, func(s *soak, i int) []string {
		return []string{"image", "import", s.busybox, "--name", fmt.Sprintf("soak-import%d:x", i%8)}
	}},
	// A killed export must leave no partial archive.
	{"image export", 4, func(s *soak, i int) []string {
		format := []string{"oci", "docker"}[s.intN(2)]
		return []string{"image", "export", "--format", format, "soak:busybox", filepath.Join(s.dir, "exports", fmt.Sprintf("busybox%d.tar", i%4))}
	}},
	// Collections while sandboxes run must leave those alone.
	{"gc", 5, func(s *soak, i int) []string { return []string{"gc"} }},
}

// cliKillChance is how likely the soak is to kill an operation's berth
// command, at a random moment in its first cliKillWithin.
const (
	cliKillChance = 0.25
	cliKillWithin = 800 * time.Millisecond
	// opTimeout is how long an operation may take before the soak
	// calls it hung.
	opTimeout = 3 * time.Minute
)

// operate does operation i, of a kind chosen at random.
func (s *soak) operate(i int) {
	total := 0
	for _, o := range operations {
		total += o.weight
	}
	pick := s.intN(total)
	k := 0
	for pick >= operations[k].weight {
		pick -= operations[k].weight
		k++
	}
	op := operations[k]
	args := op.args(s, i)
	if op.name == "exec" && args[0] == "run" {
		op = operations[1] // no sandbox to go into: start one
	}

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cmd := s.command(ctx, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		s.t.Errorf("start berth: %v", err)
		return
	}
	var killed atomic.Bool
	if s.chance(cliKillChance) {
		// os.Process signals through a pidfd: never another process
		// that reused the pid.
		// Marked before the signal goes, or Wait could return first.
		timer := time.AfterFunc(s.delay(cliKillWithin), func() {
			killed.Store(true)
			cmd.Process.Kill()
		})
		defer timer.Stop()
	}
	err := cmd.Wait()
	outcome := s.outcome(ctx, cmd, err, killed.Load())
	s.count(func(st *stats) { st.op(op.name).add(outcome) })
	if outcome.failed() {
		s.note(op.name, outcome, stderr.String())
	}
	// Imported images go again half the time, so that gc has blobs and
	// layers to remove and imports have work to do.
	if op.name == "image import" && s.chance(0.5) {
		s.command(ctx, "image", "rm", args[len(args)-1]).Run()
	}
}

// An outcome is how an operation ended: exit code, or killed by the
// soak, or hung.
type outcome struct {
	code   int
	killed bool
	hung   bool
	err    error // from Wait, when it is not an exit status
}

func (o outcome) failed() bool { return o.hung || (!o.killed && o.code != 0) }

func (s *soak) outcome(ctx context.Context, cmd *exec.Cmd, err error, killed bool) outcome {
	if ctx.Err() != nil {
		return outcome{hung: true}
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if killed && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		return outcome{killed: true}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws.Signaled() {
			// Not the soak's doing: say which signal, as a shell would.
			return outcome{code: 128 + int(ws.Signal()), err: err}
		}
		return outcome{code: ee.ExitCode()}
	}
	if err != nil {
		// exec.ErrWaitDelay: berth exited, but something it left holds
		// its stderr open.
		return outcome{code: -1, err: err}
	}
	return outcome{}
}

// note keeps count of the first line of each distinct failure, for the
// report.
func (s *soak) note(op string, o outcome, stderr string) {
	line, _, _ := strings.Cut(strings.TrimSpace(stderr), "\n")
	if o.err != nil {
		line = o.err.Error() + ": " + line
	}
	if len(line) > 200 {
		line = line[:200] + "..."
	}
	key := fmt.Sprintf("%s: exit %d: %s", op, o.code, line)
	if o.hung {
		key = fmt.Sprintf("%s: hung: %s", op, line)
	}
	s.mu.Lock()
	s.sample[key]++
	s.mu.Unlock()
}
