package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/bench"
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/sandbox"
)

// Detached is what the host keeps per idle detached sandbox — one
// started by `berth run -d`, which outlives the command — and how long
// starting and removing N of them took. Memory is in KiB per sandbox.
type Detached struct {
	N int `json:"n"`
	// Procs counts the host-side processes per sandbox: its supervisor
	// and its PID 1 (the workload runs inside, and is not counted).
	Procs         float64 `json:"host_processes_per_sandbox"`
	SupervisorPSS float64 `json:"supervisor_pss_kib"`
	SupervisorRSS float64 `json:"supervisor_rss_kib"`
	InitPSS       float64 `json:"init_pss_kib"`
	InitRSS       float64 `json:"init_rss_kib"`
	// Private is both processes' private memory (Private_Clean and
	// Private_Dirty of smaps): the floor PSS nears as N grows.
	Private  float64 `json:"private_kib_per_sandbox"`
	KernelKB float64 `json:"kmem_kib_per_sandbox"` // -1: not readable
	// StartSeconds is the time to start all N, one `berth run -d` after
	// another; StartP50 and StartP99 are one command's, in ms.
	StartSeconds float64 `json:"seconds_to_start_all"`
	StartP50     float64 `json:"start_p50_ms"`
	StartP99     float64 `json:"start_p99_ms"`
	// RemoveSeconds is the time of one `berth rm -f` of all N, until
	// the last of their reapers has exited.
	RemoveSeconds float64 `json:"seconds_to_remove_all"`
	Error         string  `json:"error,omitempty"`
}

// Total is what one detached sandbox costs the host in memory: its two
// processes' PSS and its cgroup's kernel memory.
func (d Detached) Total() float64 { return d.SupervisorPSS + d.InitPSS + max(d.KernelKB, 0) }

// detachedNotePrefix begins the notes of scenario 3b.
const detachedNotePrefix = "detached sandboxes (3b): "

// scenarioDetached starts N idle detached sandboxes through the berth
// command, as a user would (`berth run -d alpine sleep 1000`), measures
// what the host keeps for them, then removes them all with one
// `berth rm -f` and checks that nothing is left.
func scenarioDetached(ctx context.Context, e *env, cfg config, res *Results) error {
	for _, n := range cfg.DetachedN {
		if err := ctx.Err(); err != nil {
			return err
		}
		progress("detached: %d idle sandboxes of berth run -d", n)
		d := e.measureDetached(ctx, n)
		if d.Error != "" {
			progress("detached: N=%d: %s", n, d.Error)
		}
		res.Detached = append(res.Detached, d)
	}
	e.note(detachedNotePrefix + "started one after another by `berth run -d` with a state directory and cgroup parent of their own, and removed by one `berth rm -f` of them all; the supervisor is the process that stays behind for each, the parent of its PID 1")
	return ctx.Err()
}

// detachedCLI runs the berth command with the detached scenario's
// store, state directory and cgroup parent.
type detachedCLI struct {
	bin, store, state, cgParent string
}

// detachedCLI's store is its own: the reaper of a detached sandbox runs
// Recover, which releases every rootfs of its store that its state
// directory does not name, the other scenarios' sandboxes (recorded in
// another state directory) among them.
func (e *env) detachedCLI() detachedCLI {
	return detachedCLI{bin: e.berthBin, store: filepath.Join(e.tmp, "detached-store"),
		state: filepath.Join(e.tmp, "detached-state"), cgParent: e.cgParent + "-detached"}
}

// importImage puts the Alpine tarball in the store as alpine:bench, once.
func (c detachedCLI) importImage(ctx context.Context, tarball string) error {
	store, err := layerfs.Open(c.store, nil)
	if err != nil {
		return err
	}
	if _, err := store.Image(ctx, "alpine:bench"); err == nil {
		return nil
	}
	_, err = store.Import(ctx, tarball, &layerfs.ImportOptions{Name: "alpine:bench"})
	return err
}

func (c detachedCLI) args(args ...string) []string {
	return append([]string{"--root", c.store, "--state", c.state, "--cgroup-parent", c.cgParent}, args...)
}

func (c detachedCLI) run(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	return commandOutputTimeout(ctx, timeout, c.bin, c.args(args...)...)
}

// detachedBox is one running detached sandbox, as its record names it.
type detachedBox struct {
	id         string
	supervisor process // the record's Host: the child `run -d` left, now the supervisor
	init       process
	rootfs     string // the rootfs's host path, a mount point while it runs
}

// process names a process for as long as it lives, as the sandbox's
// record does: a pid with its start time.
type process struct {
	pid   int
	start uint64
}

func (p process) alive() bool {
	if p.pid <= 0 {
		return false
	}
	st, err := startTime(p.pid)
	return err == nil && st == p.start
}

func (e *env) measureDetached(ctx context.Context, n int) (d Detached) {
	d = Detached{N: n, KernelKB: -1}
	c := e.detachedCLI()
	// Whatever happened, nothing this N started may outlive it: the
	// next N, and the other scenarios, measure a clean machine.
	defer func() {
		if err := c.sweep(); err != nil {
			d.Error = joinErr(d.Error, "cleanup: "+err.Error())
		}
	}()

	if err := c.importImage(ctx, e.tarball); err != nil {
		d.Error = fmt.Sprintf("import into the detached sandboxes' store: %v", err)
		return d
	}
	var ids []string
	var took []float64
	began := time.Now()
	for i := range n {
		if err := ctx.Err(); err != nil {
			d.Error = err.Error()
			return d
		}
		t := time.Now()
		out, err := c.run(ctx, 2*time.Minute, "run", "-d", "alpine:bench", "sleep", "1000")
		took = append(took, float64(time.Since(t).Microseconds())/1000)
		if err != nil {
			d.Error = err.Error()
			return d
		}
		id, err := printedID(out)
		if err != nil {
			d.Error = fmt.Sprintf("run -d number %d: %v", i+1, err)
			return d
		}
		ids = append(ids, id)
		if (i+1)%100 == 0 {
			progress("detached: %d running", i+1)
		}
	}
	d.StartSeconds = time.Since(began).Seconds()
	d.StartP50, d.StartP99 = bench.Percentile(took, 0.5), bench.Percentile(took, 0.99)

	boxes, err := c.settled(ctx, ids)
	if err != nil {
		d.Error = err.Error()
		return d
	}
	var supPSS, supRSS, initPSS, initRSS, private, kmem int
	kmemOK := true
	for _, b := range boxes {
		ps, rs, pr := smaps(b.supervisor.pid)
		supPSS, supRSS, private = supPSS+ps, supRSS+rs, private+pr
		ps, rs, pr = smaps(b.init.pid)
		initPSS, initRSS, private = initPSS+ps, initRSS+rs, private+pr
		k := kmemKiB(b.init.pid)
		if k < 0 {
			kmemOK = false
		}
		kmem += k
	}
	f := float64(n)
	d.Procs = 2
	d.SupervisorPSS, d.SupervisorRSS = float64(supPSS)/f, float64(supRSS)/f
	d.InitPSS, d.InitRSS = float64(initPSS)/f, float64(initRSS)/f
	d.Private = float64(private) / f
	if kmemOK {
		d.KernelKB = float64(kmem) / f
	}

	progress("detached: removing %d sandboxes", n)
	t := time.Now()
	if _, err := c.run(ctx, 20*time.Minute, append([]string{"rm", "-f"}, ids...)...); err != nil {
		d.Error = err.Error()
		return d
	}
	// rm -f returns once each reaper has recorded its sandbox's end,
	// after reclaiming it; the reapers then exit.
	if err := awaitGone(ctx, boxes, time.Minute); err != nil {
		d.Error = err.Error()
		return d
	}
	d.RemoveSeconds = time.Since(t).Seconds()
	if err := c.leftovers(boxes); err != nil {
		d.Error = "berth rm -f left something behind: " + err.Error()
	}
	return d
}

// hexID is what `berth run -d` prints: a container ID, in full or
// shortened.
var hexID = regexp.MustCompile(`^[0-9a-f]{12,64}$`)

// printedID is the ID on the last line `berth run -d` printed.
func printedID(out string) (string, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	id := strings.TrimSpace(lines[len(lines)-1])
	if !hexID.MatchString(id) {
		return "", fmt.Errorf("berth run -d printed %q, not an ID", clip.Cut(strings.TrimSpace(out), 200))
	}
	return id, nil
}

// settled waits until every sandbox in ids is recorded with its PID 1
// and its supervisor runs: `run -d` returns once the workload runs, when
// the child it forked may still be the Go program that started the
// sandbox, on its way to exec the supervisor. The supervisor is a C
// program with one thread; a Go process has several.
func (c detachedCLI) settled(ctx context.Context, ids []string) ([]detachedBox, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		boxes, waiting, err := c.boxes(ids)
		if err == nil && waiting == "" {
			return boxes, nil
		}
		if err == nil && time.Now().After(deadline) {
			err = errors.New(waiting)
		}
		if err != nil {
			return boxes, err
		}
		select {
		case <-ctx.Done():
			return boxes, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// boxes reads the records of the sandboxes in ids; waiting says why
// they are not all settled yet, err what cannot change by waiting.
func (c detachedCLI) boxes(ids []string) (boxes []detachedBox, waiting string, err error) {
	states, err := sandbox.ReadStates(c.state)
	if err != nil {
		return nil, "", err
	}
	for _, id := range ids {
		i := slices.IndexFunc(states, func(st sandbox.State) bool { return strings.HasPrefix(st.ID, id) })
		if i < 0 {
			return nil, "", fmt.Errorf("sandbox %s: no record in %s although berth run -d printed its ID", id, c.state)
		}
		st := states[i]
		b := detachedBox{id: st.ID, rootfs: st.Rootfs,
			supervisor: process{st.Host.PID, st.Host.StartTime}, init: process{st.Init.PID, st.Init.StartTime}}
		if st.Pending || b.init.pid == 0 {
			return nil, fmt.Sprintf("sandbox %s: its PID 1 is not recorded", id), nil
		}
		if !b.init.alive() || !b.supervisor.alive() {
			return nil, "", fmt.Errorf("sandbox %s: its PID 1 (%d) or supervisor (%d) is gone", id, b.init.pid, b.supervisor.pid)
		}
		if pp := ppid(b.init.pid); pp != b.supervisor.pid {
			return nil, "", fmt.Errorf("sandbox %s: PID 1 (%d) is the child of %d, not of its owner %d", id, b.init.pid, pp, b.supervisor.pid)
		}
		if th := threads(b.supervisor.pid); th != 1 {
			return nil, fmt.Sprintf("sandbox %s: its owner %d has %d threads, not the supervisor's one", id, b.supervisor.pid, th), nil
		}
		boxes = append(boxes, b)
	}
	return boxes, "", nil
}

// awaitGone waits until the supervisors of boxes (by then their
// reapers) have exited.
func awaitGone(ctx context.Context, boxes []detachedBox, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, b := range boxes {
		for b.supervisor.alive() {
			if time.Now().After(deadline) {
				return fmt.Errorf("sandbox %s: its supervisor or reaper %d still runs %v after berth rm -f", b.id, b.supervisor.pid, timeout)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	return nil
}

// leftovers checks, after `berth rm -f`, that the removed sandboxes left
// nothing: no process, no record (and `berth ps -a` lists none), no
// container directory or name, no cgroup under the scenario's parent, no
// rootfs mount.
func (c detachedCLI) leftovers(boxes []detachedBox) error {
	var errs []error
	for _, b := range boxes {
		if b.supervisor.alive() {
			errs = append(errs, fmt.Errorf("sandbox %s: supervisor %d still runs", b.id, b.supervisor.pid))
		}
		if b.init.alive() {
			errs = append(errs, fmt.Errorf("sandbox %s: PID 1 %d still runs", b.id, b.init.pid))
		}
	}
	if recs, err := sandbox.ReadRecords(c.state); err != nil {
		errs = append(errs, err)
	} else if len(recs) > 0 {
		errs = append(errs, fmt.Errorf("%d sandbox records left in %s", len(recs), c.state))
	}
	if lines, err := c.psAll(); err != nil {
		errs = append(errs, err)
	} else if len(lines) > 0 {
		errs = append(errs, fmt.Errorf("berth ps -a still lists %d: %s", len(lines), clip.Cut(lines[0], 200)))
	}
	if left := containerDirs(c.state); len(left) > 0 {
		errs = append(errs, fmt.Errorf("container directories or names left: %s", clip.Cut(strings.Join(left, " "), 200)))
	}
	if left := cgroupsUnder(c.cgParent); len(left) > 0 {
		errs = append(errs, fmt.Errorf("cgroups left: %s", clip.Cut(strings.Join(left, " "), 200)))
	}
	points, _ := mountPoints()
	for _, b := range boxes {
		if b.rootfs != "" && slices.Contains(points, b.rootfs) {
			errs = append(errs, fmt.Errorf("sandbox %s: rootfs %s still mounted", b.id, b.rootfs))
		}
	}
	return errors.Join(errs...)
}

// psAll is what `berth ps -a -q` lists: one container ID a line.
func (c detachedCLI) psAll() ([]string, error) {
	out, err := c.run(context.Background(), time.Minute, "ps", "-a", "-q")
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// containerDirs lists what is left under the state directory's
// containers/ (the CLI's container records) and containers/names/.
func containerDirs(state string) []string {
	dir := filepath.Join(state, "containers")
	var left []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "names" {
			left = append(left, e.Name())
		}
	}
	names, _ := os.ReadDir(filepath.Join(dir, "names"))
	for _, e := range names {
		left = append(left, "names/"+e.Name())
	}
	return left
}

// cgroupsUnder lists the cgroups below parent (a top-level cgroup
// name) in every hierarchy.
func cgroupsUnder(parent string) []string {
	points, types := mountPoints()
	var left []string
	for i, root := range points {
		if types[i] != "cgroup" && types[i] != "cgroup2" {
			continue
		}
		ents, _ := os.ReadDir(filepath.Join(root, parent))
		for _, e := range ents {
			if e.IsDir() {
				left = append(left, filepath.Join(root, parent, e.Name()))
			}
		}
	}
	return left
}

// sweep removes every detached sandbox of the scenario's state
// directory, whatever state the run left it in: `berth rm -f` of every
// container and sandbox it knows; then, for any sandbox still there,
// SIGKILL to the processes in its cgroups and to its supervisor, and
// `berth gc` to reclaim the rest. It runs on every path, with a context
// of its own: the run's may be cancelled.
func (c detachedCLI) sweep() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	ids := containerDirs(c.state)
	ids = slices.DeleteFunc(ids, func(s string) bool { return strings.HasPrefix(s, "names/") })
	states, _ := sandbox.ReadStates(c.state)
	for _, st := range states {
		if !slices.ContainsFunc(ids, func(id string) bool { return strings.HasPrefix(st.ID, id) }) {
			ids = append(ids, st.ID)
		}
	}
	var errs []error
	if len(ids) > 0 {
		progress("detached: cleanup: berth rm -f of %d sandboxes", len(ids))
		if _, err := c.run(ctx, 20*time.Minute, append([]string{"rm", "-f"}, ids...)...); err != nil {
			errs = append(errs, err)
		}
	}
	// What rm -f could not remove: kill it, then let gc reclaim it.
	// The reapers of what it removed exit on their own.
	var owners []detachedBox
	for _, st := range states {
		owners = append(owners, detachedBox{id: st.ID, supervisor: process{st.Host.PID, st.Host.StartTime}})
	}
	awaitGone(ctx, owners, 10*time.Second)
	states, _ = sandbox.ReadStates(c.state)
	killCgroups(ctx, c.cgParent)
	for _, st := range states {
		killProcess(process{st.Init.PID, st.Init.StartTime})
		killProcess(process{st.Host.PID, st.Host.StartTime})
	}
	if len(states) > 0 || len(cgroupsUnder(c.cgParent)) > 0 {
		if _, err := c.run(ctx, 10*time.Minute, "gc"); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if left := cgroupsUnder(c.cgParent); len(left) > 0 {
		return fmt.Errorf("cgroups left: %s", clip.Cut(strings.Join(left, " "), 200))
	}
	return nil
}

// killCgroups kills every process in the sandbox cgroups berth made
// below parent, with the cgroup package's own Kill: the cgroup frozen (or
// cgroup.kill), each process signalled through a pidfd once it is seen
// to be a member, so that a PID reused meanwhile is never hit.
func killCgroups(ctx context.Context, parent string) {
	m, err := cgroup.NewManager(cgroup.Options{Parent: parent})
	if err != nil {
		return
	}
	names, _ := m.List()
	for _, name := range names {
		if cg, err := m.Open(name); err == nil {
			kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			cg.Kill(kctx)
			cancel()
		}
	}
}

// killProcess sends SIGKILL to p if it is still the process it was, and
// waits a little for it to go.
func killProcess(p process) {
	if !p.alive() {
		return
	}
	syscall.Kill(p.pid, syscall.SIGKILL)
	for i := 0; i < 100 && p.alive(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

// startTime is a process's start time, in clock ticks after boot: with
// the pid, it names the process even after the pid is reused.
func startTime(pid int) (uint64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func ppid(pid int) int { _, pp := stat(pid); return pp }

// statFields are the fields of /proc/PID/stat after the command name.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// threads is a process's thread count, 0 if it cannot be read.
func threads(pid int) int {
	f, err := statFields(pid)
	if err != nil || len(f) < 18 {
		return 0
	}
	n, _ := strconv.Atoi(f[17])
	return n
}

func joinErr(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
