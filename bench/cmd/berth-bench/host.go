package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// allPIDs lists the processes on the host.
func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stat returns a process's command name and parent from /proc/PID/stat.
func stat(pid int) (comm string, ppid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return "", 0
	}
	f := strings.Fields(s[j+1:])
	if len(f) < 2 {
		return s[i+1 : j], 0
	}
	ppid, _ = strconv.Atoi(f[1])
	return s[i+1 : j], ppid
}

func comm(pid int) string { c, _ := stat(pid); return c }

func children(pid int) []int {
	var out []int
	for _, p := range allPIDs() {
		if _, pp := stat(p); pp == pid {
			out = append(out, p)
		}
	}
	return out
}

// descendants lists pid's process tree, pid itself first if self is set.
func descendants(pid int, self bool) []int {
	parent := map[int]int{}
	for _, p := range allPIDs() {
		_, parent[p] = stat(p)
	}
	var out []int
	if self {
		out = append(out, pid)
	}
	queue := []int{pid}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for p, pp := range parent {
			if pp == cur {
				out = append(out, p)
				queue = append(queue, p)
			}
		}
	}
	return out
}

func containsInt(s []int, v int) bool { return slices.Contains(s, v) }

// smaps returns a process's proportional and resident set sizes, and
// the memory it has to itself (Private_Clean + Private_Dirty: what its
// PSS comes down to when many processes share the rest), in KiB.
func smaps(pid int) (pss, rss, private int) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		n, _ := strconv.Atoi(fs[1])
		switch fs[0] {
		case "Pss:":
			pss = n
		case "Rss:":
			rss = n
		case "Private_Clean:", "Private_Dirty:":
			private += n
		}
	}
	return pss, rss, private
}

// memoryCgroup is the memory cgroup path of pid ("" if none): its v1
// memory hierarchy's where there is one (hybrid and v1 hosts), else its
// cgroup2 path.
func memoryCgroup(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	unified := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if slices.Contains(strings.Split(f[1], ","), "memory") {
			return f[2]
		}
		if f[0] == "0" && f[1] == "" {
			unified = f[2]
		}
	}
	if fileExists(memoryV1) {
		return "" // v1 has a memory hierarchy, and pid is not in it
	}
	return unified
}

// ownCgroup tells whether pid is in a memory cgroup other than this
// program's, i.e. one the tool made for the sandbox.
func ownCgroup(pid int) bool {
	cg := memoryCgroup(pid)
	return cg != "" && cg != memoryCgroup(os.Getpid())
}

const (
	memoryV1 = "/sys/fs/cgroup/memory"
	cgroupV2 = "/sys/fs/cgroup" // on a host with cgroup2 alone
)

// kmemKiB is the kernel memory charged to pid's memory cgroup, in KiB,
// or -1 where it cannot be read: v1's memory.kmem.usage_in_bytes, or
// the "kernel" line of cgroup2's memory.stat.
func kmemKiB(pid int) int {
	cg := memoryCgroup(pid)
	if cg == "" {
		return -1
	}
	if !fileExists(memoryV1) {
		return kmemV2KiB(filepath.Join(cgroupV2, cg, "memory.stat"))
	}
	b, err := os.ReadFile(filepath.Join(memoryV1, cg, "memory.kmem.usage_in_bytes"))
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n / 1024
}

// kmemV2KiB is the "kernel" line of a cgroup2 memory.stat, in KiB, or
// -1 where there is none (kernels before 5.18).
func kmemV2KiB(memoryStat string) int {
	b, err := os.ReadFile(memoryStat)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "kernel "); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n / 1024
			}
		}
	}
	return -1
}

// mountPoints lists mount points from /proc/self/mountinfo, with their
// filesystem types.
func mountPoints() (points, types []string) {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		i := slices.Index(f, "-")
		if i < 0 || i+1 >= len(f) {
			continue
		}
		points = append(points, unescapeMount(f[4]))
		types = append(types, f[i+1])
	}
	return points, types
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// unmountUnder detaches every mount at or below dir, deepest first: what
// podman's storage or an interrupted sandbox may have left.
func unmountUnder(dir string) error {
	points, _ := mountPoints()
	var under []string
	for _, p := range points {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			under = append(under, p)
		}
	}
	slices.SortFunc(under, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, p := range under {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes every cgroup directory whose top-level name starts
// with prefix, in every hierarchy, deepest first. A cgroup that still has
// processes cannot be removed, and is an error.
func removeCgroups(prefix string) error {
	points, types := mountPoints()
	var errs []error
	for i, root := range points {
		if types[i] != "cgroup" && types[i] != "cgroup2" {
			continue
		}
		tops, _ := filepath.Glob(filepath.Join(root, prefix+"*"))
		for _, top := range tops {
			var dirs []string
			filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for j := len(dirs) - 1; j >= 0; j-- {
				if err := unix.Rmdir(dirs[j]); err != nil && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[j], err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Machine describes the host the numbers come from.
type Machine struct {
	Kernel     string            `json:"kernel"`
	CPU        string            `json:"cpu"`
	Cores      int               `json:"cores"`
	MemoryKiB  int               `json:"memory_kib"`
	CgroupMode string            `json:"cgroup_mode"`
	Tools      map[string]string `json:"tools"`
}

func machineInfo() Machine {
	m := Machine{Cores: runtime.NumCPU()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				m.MemoryKiB, _ = strconv.Atoi(f[1])
			}
		}
	}
	_, types := mountPoints()
	v1, v2 := slices.Contains(types, "cgroup"), slices.Contains(types, "cgroup2")
	switch {
	case v1 && v2:
		m.CgroupMode = "hybrid (v1 controllers, cgroup2 unified)"
	case v2:
		m.CgroupMode = "v2"
	case v1:
		m.CgroupMode = "v1"
	}
	return m
}
