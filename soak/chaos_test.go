//go:build soak

package soak

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// How often chaos strikes: every tick (a random time below chaosTick) it
// kills a sandbox's init with one chance, and damages a record with
// another.
const (
	chaosTick       = 400 * time.Millisecond
	initKillChance  = 0.15
	damageChance    = 0.15
	damageKindCount = 4
)

// chaos kills sandboxes' init processes and damages state and rootfs
// records at random moments until stop is closed, and notes which
// sandboxes and bridge ports it saw, for the audit.
func (s *soak) chaos(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(s.delay(chaosTick)):
		}
		s.look()
		if s.chance(initKillChance) {
			s.killInit()
		}
		if s.chance(damageChance) {
			s.damage()
		}
	}
}

// look records the sandboxes in the state directory and the ports on the
// network's bridge, so that the audit can look for rules naming them.
func (s *soak) look() {
	entries, _ := os.ReadDir(s.state)
	ports, _ := bridgePorts(s.bridge)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			s.seen[e.Name()] = true
		}
	}
	for _, p := range ports {
		s.ports[p] = true
	}
}

// sandboxRecord is the part of a sandbox's state.json the soak reads.
type sandboxRecord struct {
	ID      string `json:"id"`
	Pending bool   `json:"pending"`
	Init    struct {
		PID       int    `json:"pid"`
		StartTime uint64 `json:"startTime"`
	} `json:"init"`
}

// sandboxes returns the readable records in the state directory, in a
// random order.
func (s *soak) sandboxes() []sandboxRecord {
	entries, _ := os.ReadDir(s.state)
	var out []sandboxRecord
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(s.state, e.Name(), "state.json"))
		var r sandboxRecord
		if err != nil || json.Unmarshal(b, &r) != nil || r.Init.PID <= 0 {
			continue
		}
		out = append(out, r)
	}
	s.mu.Lock()
	s.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	s.mu.Unlock()
	return out
}

// liveSandbox returns the ID of a sandbox whose init runs, or "".
func (s *soak) liveSandbox() string {
	for _, r := range s.sandboxes() {
		if !r.Pending && s.isOurInit(r.Init.PID, r.Init.StartTime) {
			return r.ID
		}
	}
	return ""
}

// killInit kills the init of a sandbox in the soak's state directory.
func (s *soak) killInit() {
	for _, r := range s.sandboxes() {
		if s.killOurInit(r.Init.PID, r.Init.StartTime) {
			s.count(func(st *stats) { st.InitKills++ })
			return
		}
	}
}

// killOurInit sends SIGKILL to pid if it is still the process that
// started at startTime and it runs in one of the soak's cgroups: a
// sandbox's init that the soak's runs started. The pidfd pins the
// process, so the checks cannot be about one process and the signal go
// to another.
func (s *soak) killOurInit(pid int, startTime uint64) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if !s.isOurInit(pid, startTime) {
		return false
	}
	return unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil
}

func (s *soak) isOurInit(pid int, startTime uint64) bool {
	st, err := procStartTime(pid)
	if err != nil || st != startTime {
		return false
	}
	return inCgroupUnder(pid, s.parent)
}

// procStartTime returns field 22 of /proc/PID/stat, the process's start
// time in clock ticks after boot, which tells it from a later process
// that got the same pid.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// inCgroupUnder reports whether pid is in a cgroup below parent in any
// hierarchy.
func inCgroupUnder(pid int, parent string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controllers:path
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && strings.HasPrefix(f[2], "/"+parent+"/") {
			return true
		}
	}
	return false
}

// damage empties, garbles, truncates or deletes a sandbox's state.json or
// a rootfs's rootfs.json, as a crash or a full disk might.
func (s *soak) damage() {
	records, _ := filepath.Glob(filepath.Join(s.state, "*", "state.json"))
	rootfs, _ := filepath.Glob(filepath.Join(s.root, "rootfs", "*", "rootfs.json"))
	records = append(records, rootfs...)
	if len(records) == 0 {
		return
	}
	p := records[s.intN(len(records))]
	kind := filepath.Base(p)
	var err error
	switch s.intN(damageKindCount) {
	case 0:
		kind += " emptied"
		err = os.Truncate(p, 0)
	case 1:
		kind += " garbled"
		junk := make([]byte, 1+s.intN(64))
		s.mu.Lock()
		for i := range junk {
			junk[i] = byte(s.rng.IntN(256))
		}
		s.mu.Unlock()
		err = os.WriteFile(p, junk, 0o600)
	case 2:
		kind += " cut short"
		var fi os.FileInfo
		if fi, err = os.Stat(p); err == nil {
			err = os.Truncate(p, fi.Size()/2)
		}
	default:
		kind += " deleted"
		err = os.Remove(p)
	}
	if err == nil {
		s.count(func(st *stats) { st.damage(kind) })
	}
}
