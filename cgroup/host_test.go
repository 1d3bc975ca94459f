//go:build linux

package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestDetectMode(t *testing.T) {
	// What the mode must be, worked out independently, from the file
	// system types of the usual mount points.
	fsType := func(dir string) int64 {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return 0
		}
		return int64(st.Type)
	}
	var want Mode
	switch {
	case fsType("/sys/fs/cgroup") == unix.CGROUP2_SUPER_MAGIC:
		want = V2
	case fsType("/sys/fs/cgroup/unified") == unix.CGROUP2_SUPER_MAGIC:
		want = Hybrid
	case fsType("/sys/fs/cgroup/memory") == unix.CGROUP_SUPER_MAGIC:
		want = V1
	default:
		t.Skip("no cgroup hierarchy under /sys/fs/cgroup")
	}
	m, err := NewManager(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode() != want {
		t.Errorf("Mode() = %v, want %v", m.Mode(), want)
	}
	t.Logf("mode %v, unified %q, v1 %v", m.Mode(), m.unified, m.v1)
	if want == Hybrid {
		if m.unified != "/sys/fs/cgroup/unified" || m.v1["memory"] != "/sys/fs/cgroup/memory" {
			t.Errorf("hybrid layout: unified %q, memory %q", m.unified, m.v1["memory"])
		}
	}
}

// modes returns the Managers the lifecycle tests run against: the host's
// own layout, the host's v1 hierarchies alone, and a cgroup2 mount of our
// own in V2 mode.
func modes() []struct {
	name string
	new  func(t *testing.T) *Manager
} {
	return []struct {
		name string
		new  func(t *testing.T) *Manager
	}{
		{"host", func(t *testing.T) *Manager { return hostManager(t, Options{}) }},
		{"v1", func(t *testing.T) *Manager { return hostManager(t, Options{Mode: V1}) }},
		{"v2mount", func(t *testing.T) *Manager { return v2MountManager(t, nil) }},
	}
}

// counterScript writes a growing count to file every 10ms, with a
// background sleep as a second process.
func counterScript(file string) string {
	return fmt.Sprintf("sleep 60 &\ni=0; while :; do i=$((i+1)); echo $i > %s; sleep 0.01; done", file)
}

func TestLifecycle(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			m := mode.new(t)
			c := create(t, m, nil)

			if _, err := m.Create(c.Name(), nil); !errors.Is(err, ErrExists) {
				t.Errorf("second Create = %v, want ErrExists", err)
			}
			if names, err := m.List(); err != nil || !slices.Contains(names, c.Name()) {
				t.Errorf("List = %v, %v; want it to include %s", names, err, c.Name())
			}
			if _, err := m.Open(c.Name()); err != nil {
				t.Errorf("Open: %v", err)
			}

			counter := filepath.Join(t.TempDir(), "count")
			ch := startChild(t, c, counterScript(counter), nil)
			if err := c.Add(ch.pid()); err != nil {
				t.Fatal(err)
			}
			ch.release(t)
			checkMember(t, c, ch.pid())
			eventually(t, 5*time.Second, "two processes in the cgroup, counting", func() bool {
				pids, err := c.Pids()
				b, _ := os.ReadFile(counter)
				return err == nil && len(pids) >= 2 && slices.Contains(pids, ch.pid()) && len(b) > 0
			})

			// Frozen: the count stops.
			if err := c.Freeze(ctxFor(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			checkFrozenState(t, c, true)
			before := readTrimmed(t, counter)
			time.Sleep(150 * time.Millisecond)
			if after := readTrimmed(t, counter); after != before {
				t.Errorf("count went from %s to %s while frozen", before, after)
			}
			t.Logf("frozen shell: %s", procState(ch.pid()))

			// Thawed: it goes on.
			if err := c.Thaw(ctxFor(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			checkFrozenState(t, c, false)
			eventually(t, 2*time.Second, "count moving after Thaw", func() bool {
				return readTrimmed(t, counter) != before
			})

			s, err := c.Stats()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("stats: %+v", s)
			if s.Pids < 2 {
				t.Errorf("Stats.Pids = %d, want ≥ 2", s.Pids)
			}
			if s.CPU <= 0 {
				t.Errorf("Stats.CPU = %v", s.CPU)
			}
			if canLimit(t, m, "memory") && s.Memory == 0 {
				t.Errorf("Stats.Memory = 0")
			}
			u, err := c.Usage()
			if err != nil {
				t.Fatal(err)
			}
			if u.CPU < s.CPU || u.OOMKills != s.OOMKills || u.Pids != 0 || u.Memory != 0 {
				t.Errorf("Usage %+v after Stats %+v", u, s)
			}
			if canLimit(t, m, "memory") && u.MemoryPeak < s.Memory {
				t.Errorf("Usage.MemoryPeak = %d, below Stats.Memory %d", u.MemoryPeak, s.Memory)
			}

			// Kill, with the cgroup frozen again: Kill must cope and
			// leave it thawed.
			if err := c.Freeze(ctxFor(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := c.Kill(ctxFor(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			t.Logf("Kill took %v", time.Since(start))
			if pids, err := c.Pids(); err != nil || len(pids) != 0 {
				t.Errorf("after Kill: Pids = %v, %v", pids, err)
			}
			checkFrozenState(t, c, false)
			if ws := ch.wait(t, 5*time.Second); ws.Signal() != syscall.SIGKILL {
				t.Errorf("child status %v, want killed by SIGKILL", ws)
			}

			removeAndCheck(t, c)
			if err := c.Remove(ctxFor(t, time.Second)); err != nil {
				t.Errorf("second Remove: %v", err)
			}
			if _, err := m.Open(c.Name()); !errors.Is(err, ErrNotFound) {
				t.Errorf("Open after Remove = %v, want ErrNotFound", err)
			}
			if _, err := c.Pids(); !errors.Is(err, ErrNotFound) {
				t.Errorf("Pids after Remove = %v, want ErrNotFound", err)
			}
			if err := c.Add(os.Getpid()); !errors.Is(err, ErrNotFound) {
				t.Errorf("Add after Remove = %v, want ErrNotFound", err)
			}
			if names, err := m.List(); err != nil || slices.Contains(names, c.Name()) {
				t.Errorf("List after Remove: %v (%v), still has %s", names, err, c.Name())
			}
		})
	}
}

// checkMember checks that /proc/PID/cgroup puts pid in c in every
// hierarchy c has.
func checkMember(t *testing.T, c *Cgroup, pid int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	in := 0
	for line := range strings.Lines(string(b)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) == 3 && strings.HasSuffix(parts[2], c.rel) {
			in++
		}
	}
	if want := len(c.dirs()); in != want {
		t.Errorf("/proc/%d/cgroup shows it in %d hierarchies, want %d:\n%s", pid, in, want, b)
	}
}

func checkFrozenState(t *testing.T, c *Cgroup, frozen bool) {
	t.Helper()
	if c.unified != "" {
		kv, _, err := readKeyed(filepath.Join(c.unified, "cgroup.events"))
		if err != nil {
			t.Fatal(err)
		}
		if got := kv["frozen"] == 1; got != frozen {
			t.Errorf("cgroup.events frozen = %d, want %v", kv["frozen"], frozen)
		}
		return
	}
	want := map[bool]string{true: "FROZEN", false: "THAWED"}[frozen]
	if got := readTrimmed(t, filepath.Join(c.v1["freezer"], "freezer.state")); got != want {
		t.Errorf("freezer.state = %s, want %s", got, want)
	}
}

func procState(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "State:") {
			return strings.TrimSpace(line)
		}
	}
	return "?"
}

func TestCreateInterfaceFileName(t *testing.T) {
	m := hostManager(t, Options{})
	if _, err := m.Create("cgroup.procs", nil); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Create(cgroup.procs) = %v, want ErrInvalidName", err)
	}
	names, err := m.List()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(names, "cgroup.procs") {
		t.Errorf("List = %v", names)
	}
}

func TestCreateInvalidResources(t *testing.T) {
	m := hostManager(t, Options{})
	name := uniqueName()
	if _, err := m.Create(name, &Resources{CPUWeight: 20000}); !errors.Is(err, ErrInvalidResources) {
		t.Fatalf("Create = %v, want ErrInvalidResources", err)
	}
	if _, err := m.Open(name); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open after failed Create = %v, want ErrNotFound", err)
	}
}

// The most tasks Validate takes is the most the kernel takes: pids.max
// holds maxPids and refuses one more.
func TestPidsMaxBound(t *testing.T) {
	m := hostManager(t, Options{})
	if !canLimit(t, m, "pids") {
		t.Skip("no pids controller")
	}
	c := create(t, m, &Resources{PidsMax: maxPids})
	file := filepath.Join(c.unified, "pids.max")
	if dir := c.v1["pids"]; dir != "" {
		file = filepath.Join(dir, "pids.max")
	}
	if got, err := readString(file); err != nil || got != strconv.Itoa(maxPids) {
		t.Errorf("pids.max = %q, %v; want %d", got, err, maxPids)
	}
	if err := writeFile(file, strconv.Itoa(maxPids+1)); !errors.Is(err, unix.EINVAL) {
		t.Errorf("writing %d to pids.max: %v, want EINVAL", maxPids+1, err)
	}
}

var testLimits = Resources{
	MemoryMax:     32 << 20,
	MemorySwapMax: 32 << 20, // no swap
	CPUQuota:      50 * time.Millisecond,
	CPUPeriod:     100 * time.Millisecond,
	CPUWeight:     100,
	PidsMax:       20,
}

// limitManagers are the Managers limits are tested with: the host's own
// layout, and our cgroup2 mount, which on a hybrid host has no
// controllers, so that its limits tests skip.
func limitManagers() []struct {
	name string
	new  func(t *testing.T) *Manager
} {
	all := modes()
	return []struct {
		name string
		new  func(t *testing.T) *Manager
	}{all[0], all[2]}
}

// createLimited creates a cgroup with r, or skips if m's hierarchy does
// not have the controllers, after checking that Create says so properly.
func createLimited(t *testing.T, m *Manager, r *Resources) *Cgroup {
	t.Helper()
	if !canLimit(t, m, "memory", "cpu", "pids") {
		name := uniqueName()
		_, err := m.Create(name, r)
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("Create with limits and no controllers = %v, want ErrUnsupported", err)
		}
		if _, err := m.Open(name); !errors.Is(err, ErrNotFound) {
			t.Errorf("failed Create left the cgroup behind: Open = %v", err)
		}
		t.Skip(noV2Controllers)
	}
	return create(t, m, r)
}

func TestLimits(t *testing.T) {
	for _, mode := range limitManagers() {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			m := mode.new(t)
			rec := &recorder{}
			m.log = slog.New(tee{m.log.Handler(), rec})
			r := testLimits
			r.IOWeight = 100
			c := createLimited(t, m, &r)

			if m.mode == V2 {
				checkFiles(t, c.unified, map[string]string{
					"memory.max":      "33554432\n",
					"memory.swap.max": "0\n",
					"cpu.max":         "50000 100000\n",
					"cpu.weight":      "100\n",
					"pids.max":        "20\n",
				})
			} else {
				checkFiles(t, c.v1["memory"], map[string]string{
					"memory.limit_in_bytes":       "33554432\n",
					"memory.memsw.limit_in_bytes": "33554432\n",
				})
				checkFiles(t, c.v1["cpu"], map[string]string{
					"cpu.cfs_quota_us":  "50000\n",
					"cpu.cfs_period_us": "100000\n",
					"cpu.shares":        "2597\n",
				})
				checkFiles(t, c.v1["pids"], map[string]string{"pids.max": "20\n"})
				if dir := c.v1["cpuset"]; dir != "" {
					parent := filepath.Dir(dir)
					for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
						if got, want := readTrimmed(t, filepath.Join(dir, f)), readTrimmed(t, filepath.Join(parent, f)); got == "" || got != want {
							t.Errorf("%s = %q, parent's %q", f, got, want)
						}
					}
				}
			}
			// The I/O weight is applied where a weight file exists and
			// otherwise skipped with a warning.
			ioFiles := []string{"io.weight", "io.bfq.weight", "blkio.weight", "blkio.bfq.weight"}
			hasIOWeight := false
			for _, dir := range c.dirs() {
				for _, f := range ioFiles {
					hasIOWeight = hasIOWeight || exists(filepath.Join(dir, f))
				}
			}
			if warned := rec.has("WARN cgroup: no I/O weight file"); warned == hasIOWeight {
				t.Errorf("I/O weight file present: %v, warning logged: %v", hasIOWeight, warned)
			}

			// Growing and shrinking memory with swap in step (on v1 the
			// order of the two writes matters to the kernel).
			for _, mb := range []int64{64, 16} {
				if err := c.Update(&Resources{MemoryMax: mb << 20, MemorySwapMax: mb << 20}); err != nil {
					t.Fatalf("Update to %d MiB: %v", mb, err)
				}
			}
			if m.mode == V2 {
				checkFiles(t, c.unified, map[string]string{"memory.max": "16777216\n", "memory.swap.max": "0\n"})
			} else {
				checkFiles(t, c.v1["memory"], map[string]string{
					"memory.limit_in_bytes": "16777216\n", "memory.memsw.limit_in_bytes": "16777216\n",
				})
			}

			// Lifting the limits.
			if err := c.Update(&Resources{MemoryMax: -1, MemorySwapMax: -1, CPUQuota: -1, PidsMax: -1}); err != nil {
				t.Fatal(err)
			}
			if m.mode == V2 {
				checkFiles(t, c.unified, map[string]string{"memory.max": "max\n", "cpu.max": "max 100000\n", "pids.max": "max\n"})
			} else {
				checkFiles(t, c.v1["memory"], map[string]string{"memory.limit_in_bytes": "9223372036854771712\n"})
				checkFiles(t, c.v1["cpu"], map[string]string{"cpu.cfs_quota_us": "-1\n"})
				checkFiles(t, c.v1["pids"], map[string]string{"pids.max": "max\n"})
			}
		})
	}
}

func TestMemoryLimitOOM(t *testing.T) {
	for _, mode := range limitManagers() {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			m := mode.new(t)
			c := createLimited(t, m, &testLimits)
			// tail buffers its one endless line: it grows until killed.
			ch := startChild(t, c, "exec tail /dev/zero", nil)
			if err := c.Add(ch.pid()); err != nil {
				t.Fatal(err)
			}
			ch.release(t)
			if ws := ch.wait(t, 15*time.Second); ws.Signal() != syscall.SIGKILL {
				t.Errorf("memory hog status %v, want killed by SIGKILL", ws)
			}
			eventually(t, 2*time.Second, "OOMKilled", func() bool {
				ok, err := c.OOMKilled()
				if err != nil {
					t.Fatal(err)
				}
				return ok
			})
			s, err := c.Stats()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("stats: %+v", s)
			if s.OOMKills == 0 {
				t.Error("Stats.OOMKills = 0")
			}
			if s.MemoryPeak != 0 && (s.MemoryPeak < 16<<20 || s.MemoryPeak > 33<<20) {
				t.Errorf("Stats.MemoryPeak = %d, want about 32 MiB", s.MemoryPeak)
			}
		})
	}
}

func TestPidsLimit(t *testing.T) {
	for _, mode := range limitManagers() {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			m := mode.new(t)
			c := createLimited(t, m, &testLimits)
			// Sixty sleeps, most of whose forks must fail; each sleep
			// ends on its own anyway, bounding the test.
			ch := startChild(t, c, "i=0; while [ $i -lt 60 ]; do sleep 20 & i=$((i+1)); done; wait", nil)
			if err := c.Add(ch.pid()); err != nil {
				t.Fatal(err)
			}
			ch.release(t)
			events := filepath.Join(c.unified, "pids.events")
			if m.mode != V2 {
				events = filepath.Join(c.v1["pids"], "pids.events")
			}
			eventually(t, 5*time.Second, "a fork refused at pids.max", func() bool {
				kv, _, err := readKeyed(events)
				if err != nil {
					t.Fatal(err)
				}
				return kv["max"] > 0
			})
			s, err := c.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if s.Pids == 0 || s.Pids > 20 {
				t.Errorf("Stats.Pids = %d, want 1..20", s.Pids)
			}
			if pids, err := c.Pids(); err != nil || len(pids) > 20 {
				t.Errorf("Pids = %d pids, %v", len(pids), err)
			}
			if err := c.Kill(ctxFor(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			if pids, err := c.Pids(); err != nil || len(pids) != 0 {
				t.Errorf("after Kill: Pids = %v, %v", pids, err)
			}
		})
	}
}

func TestCPUQuota(t *testing.T) {
	for _, mode := range limitManagers() {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			m := mode.new(t)
			c := createLimited(t, m, &testLimits)
			ch := startChild(t, c, "while :; do :; done", nil)
			if err := c.Add(ch.pid()); err != nil {
				t.Fatal(err)
			}
			s0, err := c.Stats()
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			ch.release(t)
			time.Sleep(time.Second)
			s1, err := c.Stats()
			if err != nil {
				t.Fatal(err)
			}
			used, wall := s1.CPU-s0.CPU, time.Since(start)
			t.Logf("used %v of CPU in %v with a 50%% quota", used, wall)
			if used <= 0 || used > wall*65/100 {
				t.Errorf("used %v of CPU in %v, want ≤ 50%% (+slack)", used, wall)
			}
		})
	}
}

// CLONE_INTO_CGROUP: a child started directly in the unified cgroup.
func TestCloneIntoCgroup(t *testing.T) {
	for _, mode := range limitManagers() {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			m := mode.new(t)
			c := create(t, m, nil)
			dir, ok := c.V2Dir()
			if !ok {
				t.Skip("no unified hierarchy")
			}
			fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			ch := startChild(t, c, "exec sleep 30", &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd})
			b, err := os.ReadFile("/proc/" + strconv.Itoa(ch.pid()) + "/cgroup")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), "0::"+c.rel+"\n") {
				t.Errorf("/proc/PID/cgroup of a child cloned into %s:\n%s", dir, b)
			}
			if pids, err := c.Pids(); err != nil || !slices.Equal(pids, []int{ch.pid()}) {
				t.Errorf("Pids = %v, %v; want [%d]", pids, err, ch.pid())
			}
			// In Hybrid mode the v1 hierarchies still have to be joined.
			if err := c.Add(ch.pid()); err != nil {
				t.Fatal(err)
			}
			checkMember(t, c, ch.pid())
			ch.release(t)
			removeAndCheck(t, c)
			if ws := ch.wait(t, 5*time.Second); ws.Signal() != syscall.SIGKILL {
				t.Errorf("child status %v, want killed by SIGKILL", ws)
			}
		})
	}
}

// In Hybrid mode a process that joined only the v1 hierarchies is out of
// cgroup.kill's reach; Kill must still end it, through its pidfd.
func TestKillV1OnlyMember(t *testing.T) {
	t.Parallel()
	m := hostManager(t, Options{})
	if m.Mode() != Hybrid {
		t.Skip("needs a hybrid host")
	}
	c := create(t, m, nil)
	ch := startChild(t, c, "exec sleep 30", nil)
	for _, dir := range c.dirs() {
		if dir == c.unified {
			continue
		}
		if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(ch.pid())); err != nil {
			t.Fatal(err)
		}
	}
	ch.release(t)
	if pids, err := c.Pids(); err != nil || !slices.Equal(pids, []int{ch.pid()}) {
		t.Fatalf("Pids = %v, %v", pids, err)
	}
	if err := c.Kill(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if ws := ch.wait(t, 5*time.Second); ws.Signal() != syscall.SIGKILL {
		t.Errorf("child status %v, want killed by SIGKILL", ws)
	}
}

// One Manager used by many goroutines at once, each with its own cgroup.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	m := hostManager(t, Options{Logger: slog.New(slog.DiscardHandler)})
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			errs <- func() error {
				c, err := m.Create(uniqueName(), &Resources{PidsMax: 10})
				if err != nil {
					return err
				}
				if _, err := m.List(); err != nil {
					return err
				}
				if _, err := c.Stats(); err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := c.Freeze(ctx); err != nil {
					return err
				}
				return c.Remove(ctx)
			}()
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// What a crash mid-Create leaves: the cgroup in some hierarchies only,
// with a process in it. Open and Remove must still clean it up.
func TestRecoverPartial(t *testing.T) {
	for _, mode := range modes()[:2] {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			m := mode.new(t)
			c := create(t, m, nil)
			dirs := c.dirs()
			if len(dirs) < 2 {
				t.Skip("a single hierarchy cannot be partly there")
			}
			// Drop the cgroup from the unified hierarchy (or the last
			// v1 one) and from the freezer's, keeping the rest.
			gone := []string{dirs[len(dirs)-1]}
			if fz := c.v1["freezer"]; fz != "" && fz != gone[0] {
				gone = append(gone, fz)
			}
			for _, dir := range gone {
				if err := unix.Rmdir(dir); err != nil {
					t.Fatal(err)
				}
			}
			ch := startChild(t, c, "exec sleep 30", nil)
			for _, dir := range dirs {
				if !slices.Contains(gone, dir) {
					if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(ch.pid())); err != nil {
						t.Fatal(err)
					}
				}
			}
			ch.release(t)

			o, err := m.Open(c.Name())
			if err != nil {
				t.Fatal(err)
			}
			if err := o.Remove(ctxFor(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			if ws := ch.wait(t, 5*time.Second); ws.Signal() != syscall.SIGKILL {
				t.Errorf("child status %v, want killed by SIGKILL", ws)
			}
			if _, err := m.Open(c.Name()); !errors.Is(err, ErrNotFound) {
				t.Errorf("Open after Remove = %v, want ErrNotFound", err)
			}
		})
	}
}

// A single-threaded process moves itself in through JoinFiles, in every
// layout; so does one that could not open the files, running as another
// user, because the files are opened for it.
func TestJoinFiles(t *testing.T) {
	for _, md := range modes() {
		t.Run(md.name, func(t *testing.T) {
			m := md.new(t)
			for _, uid := range []uint32{0, 65534} {
				c := create(t, m, nil)
				files, err := c.JoinFiles(true)
				if err != nil {
					t.Fatal(err)
				}
				var script strings.Builder
				for i := range files {
					fmt.Fprintf(&script, "echo 0 >&%d || exit 1\n", 3+i)
				}
				script.WriteString("cat /proc/self/cgroup; exec sleep 60\n")
				// dash takes single-digit descriptors only.
				cmd := exec.Command("/bin/bash", "-c", script.String())
				cmd.ExtraFiles = files
				cmd.Stderr = os.Stderr
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				for _, f := range files {
					f.Close()
				}
				b := make([]byte, 4096)
				n, _ := io.ReadAtLeast(out, b, 1)
				checkMember(t, c, cmd.Process.Pid)
				t.Logf("uid %d: %s", uid, b[:n])
				cmd.Process.Kill()
				cmd.Wait()
				removeAndCheck(t, c)
			}
		})
	}
}
