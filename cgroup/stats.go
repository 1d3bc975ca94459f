//go:build linux

package cgroup

import (
	"fmt"
	"path/filepath"
	"time"
)

// Stats is what a cgroup has used. A figure the host cannot report (a
// controller that is not mounted, memory.peak before Linux 5.19) is zero.
type Stats struct {
	// CPU is the CPU time used by all tasks, ever; CPUUser and
	// CPUSystem split it into user and kernel time. On v1 the split is
	// sampled at each scheduler tick while CPU is exact, so for short
	// runs the two parts need not add up to CPU.
	CPU, CPUUser, CPUSystem time.Duration

	// Memory is the memory in use now, page cache included, and
	// MemoryPeak the most ever in use, in bytes.
	Memory, MemoryPeak uint64

	// Pids is the number of tasks (processes and threads) now in the
	// cgroup, as the pids controller counts them.
	Pids uint64

	// OOMKills is how many tasks the OOM killer has killed because the
	// cgroup reached its memory limit.
	OOMKills uint64
}

// userHZ is the unit of cpuacct.stat: USER_HZ, 100 on every Linux ABI.
const userHZ = 100

// Stats reads the cgroup's usage. In Hybrid mode figures come from the v1
// controllers, falling back to the unified hierarchy for those (such as
// CPU time) it keeps without a controller.
func (c *Cgroup) Stats() (Stats, error) {
	var s Stats
	if err := c.cpuStats(&s); err != nil {
		return Stats{}, err
	}
	if err := c.memoryStats(&s); err != nil {
		return Stats{}, err
	}
	if err := c.pidsStats(&s); err != nil {
		return Stats{}, err
	}
	return s, nil
}

// Usage returns what the cgroup's tasks have used in all: CPU, MemoryPeak
// and OOMKills, the other fields left zero. It reads three files where
// Stats reads up to eleven: the summary of a sandbox that has ended.
func (c *Cgroup) Usage() (Stats, error) {
	var s Stats
	switch dir := c.v1["cpuacct"]; {
	case dir != "":
		n, err := readExisting(filepath.Join(dir, "cpuacct.usage"))
		if err != nil {
			return Stats{}, err
		}
		s.CPU = time.Duration(n)
	case c.unified != "":
		kv, ok, err := readKeyed(filepath.Join(c.unified, "cpu.stat"))
		if err == nil && !ok {
			err = fmt.Errorf("cgroup: %s: %w", c.unified, ErrNotFound)
		}
		if err != nil {
			return Stats{}, err
		}
		s.CPU = time.Duration(kv["usage_usec"]) * time.Microsecond
	}
	peak, events := "", ""
	switch dir := c.v1["memory"]; {
	case dir != "":
		peak, events = filepath.Join(dir, "memory.max_usage_in_bytes"), filepath.Join(dir, "memory.oom_control")
	case c.unified != "" && len(c.v1) == 0:
		peak, events = filepath.Join(c.unified, "memory.peak"), filepath.Join(c.unified, "memory.events")
	default:
		return s, nil
	}
	// Missing without the memory controller, or before Linux 5.19
	// (memory.peak): zero, as Stats has it.
	n, _, err := readUint(peak)
	if err != nil {
		return Stats{}, err
	}
	s.MemoryPeak = n
	kv, _, err := readKeyed(events)
	if err != nil {
		return Stats{}, err
	}
	s.OOMKills = kv["oom_kill"]
	return s, nil
}

// readExisting is readUint for a file that must be there: its absence
// means the cgroup is gone.
func readExisting(path string) (uint64, error) {
	n, ok, err := readUint(path)
	if err == nil && !ok {
		err = fmt.Errorf("cgroup: %s: %w", filepath.Dir(path), ErrNotFound)
	}
	return n, err
}

// OOMKilled reports whether the OOM killer has killed any task of the
// cgroup because of its memory limit. On v1 it needs Linux 4.13 or later
// (memory.oom_control's oom_kill).
func (c *Cgroup) OOMKilled() (bool, error) {
	var s Stats
	if err := c.memoryStats(&s); err != nil {
		return false, err
	}
	return s.OOMKills > 0, nil
}

func (c *Cgroup) cpuStats(s *Stats) error {
	if dir := c.v1["cpuacct"]; dir != "" {
		if err := checkDir(dir); err != nil {
			return err
		}
		total, _, err := readUint(filepath.Join(dir, "cpuacct.usage"))
		if err != nil {
			return err
		}
		s.CPU = time.Duration(total)
		// cpuacct.usage_user and _sys (Linux 4.7) are in nanoseconds;
		// cpuacct.stat only in ticks.
		user, okUser, err := readUint(filepath.Join(dir, "cpuacct.usage_user"))
		if err != nil {
			return err
		}
		sys, okSys, err := readUint(filepath.Join(dir, "cpuacct.usage_sys"))
		if err != nil {
			return err
		}
		if okUser && okSys {
			s.CPUUser, s.CPUSystem = time.Duration(user), time.Duration(sys)
			return nil
		}
		kv, _, err := readKeyed(filepath.Join(dir, "cpuacct.stat"))
		if err != nil {
			return err
		}
		s.CPUUser = time.Duration(kv["user"]) * time.Second / userHZ
		s.CPUSystem = time.Duration(kv["system"]) * time.Second / userHZ
		return nil
	}
	if c.unified == "" {
		return nil
	}
	// cpu.stat is kept for every cgroup2 cgroup, cpu controller or not.
	if err := checkDir(c.unified); err != nil {
		return err
	}
	kv, _, err := readKeyed(filepath.Join(c.unified, "cpu.stat"))
	if err != nil {
		return err
	}
	s.CPU = time.Duration(kv["usage_usec"]) * time.Microsecond
	s.CPUUser = time.Duration(kv["user_usec"]) * time.Microsecond
	s.CPUSystem = time.Duration(kv["system_usec"]) * time.Microsecond
	return nil
}

func (c *Cgroup) memoryStats(s *Stats) error {
	var err error
	if dir := c.v1["memory"]; dir != "" {
		if err := checkDir(dir); err != nil {
			return err
		}
		if s.Memory, _, err = readUint(filepath.Join(dir, "memory.usage_in_bytes")); err != nil {
			return err
		}
		if s.MemoryPeak, _, err = readUint(filepath.Join(dir, "memory.max_usage_in_bytes")); err != nil {
			return err
		}
		kv, _, err := readKeyed(filepath.Join(dir, "memory.oom_control"))
		if err != nil {
			return err
		}
		s.OOMKills = kv["oom_kill"]
		return nil
	}
	if c.unified == "" || len(c.v1) > 0 {
		return nil
	}
	if err := checkDir(c.unified); err != nil {
		return err
	}
	if s.Memory, _, err = readUint(filepath.Join(c.unified, "memory.current")); err != nil {
		return err
	}
	if s.MemoryPeak, _, err = readUint(filepath.Join(c.unified, "memory.peak")); err != nil {
		return err
	}
	kv, _, err := readKeyed(filepath.Join(c.unified, "memory.events"))
	if err != nil {
		return err
	}
	s.OOMKills = kv["oom_kill"]
	return nil
}

func (c *Cgroup) pidsStats(s *Stats) error {
	var dir string
	switch {
	case c.v1["pids"] != "":
		dir = c.v1["pids"]
	case len(c.v1) == 0:
		dir = c.unified
	}
	if dir != "" {
		if err := checkDir(dir); err != nil {
			return err
		}
		n, ok, err := readUint(filepath.Join(dir, "pids.current"))
		if err != nil || ok {
			s.Pids = n
			return err
		}
	}
	// No pids controller: count the tasks themselves, in the cgroup and
	// its descendants, as pids.current would.
	var n uint64
	for _, dir := range c.dirs() {
		file := "tasks"
		if dir == c.unified {
			file = "cgroup.threads"
		}
		var count uint64
		if err := walkCgroup(dir, func(d string) error {
			tids, err := readPids(filepath.Join(d, file))
			count += uint64(len(tids))
			return err
		}); err != nil {
			return err
		}
		n = max(n, count)
	}
	s.Pids = n
	return nil
}
