package plugintest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/mountinfo"
)

// mountsUnder returns the mount points in the kit's mount namespace that
// are dir or lie under it, as /proc/self/mountinfo names them.
func mountsUnder(dirs ...string) ([]string, error) { return mountinfo.Under(dirs...) }

// within reports whether path is dir or under it.
func within(dir, path string) bool {
	dir, path = filepath.Clean(dir), filepath.Clean(path)
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// A tree is the set of paths under some directories, taken to find what
// a plugin left behind.
type tree map[string]bool

// snapshot lists every path under roots, not following symlinks and not
// crossing into mounts it cannot read. A root that does not exist yet is
// empty.
func snapshot(roots []string) (tree, error) {
	t := tree{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			t[p] = true
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return t, nil
}

// newSince returns the paths of now that before lacks and that none of
// keep (globs relative to one of roots) matches, shortest first, leaving
// out those under a path already listed.
func newSince(before, now tree, roots, keep []string) []string {
	var added []string
	for p := range now {
		if !before[p] && !kept(p, roots, keep) {
			added = append(added, p)
		}
	}
	slices.Sort(added)
	var out []string
	for _, p := range added {
		if len(out) > 0 && within(out[len(out)-1], p) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// kept reports whether p matches one of the globs keep, taken relative to
// one of roots, or lies under a path that does.
func kept(p string, roots, keep []string) bool {
	for _, root := range roots {
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			continue
		}
		for _, pattern := range keep {
			for r := rel; r != "." && r != "/"; r = filepath.Dir(r) {
				if ok, _ := filepath.Match(pattern, r); ok {
					return true
				}
			}
		}
	}
	return false
}

// pluginProcs returns the pids of the kit's children that run the binary
// at bin: its exe, or the first or second word of its command line (an
// interpreter's script), resolves to bin.
func pluginProcs(bin string) ([]int, error) {
	bin, err := resolve(bin)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, state, err := procStat(pid)
		if err != nil || ppid != self || state == 'Z' {
			continue
		}
		if runs(pid, bin) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func resolve(p string) (string, error) {
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(p)
}

// runs reports whether process pid runs bin.
func runs(pid int, bin string) bool {
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == bin {
		return true
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	for i := 0; i < len(args) && i < 2; i++ {
		if r, err := resolve(args[i]); err == nil && r == bin {
			return true
		}
	}
	return false
}

// procStat returns a process's parent and state from /proc/<pid>/stat.
func procStat(pid int) (ppid int, state byte, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may hold anything: parse
	// after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 2 || len(fields[0]) != 1 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	ppid, err = strconv.Atoi(fields[1])
	return ppid, fields[0][0], err
}

// gone reports whether process pid has exited (it may be a zombie, not
// yet reaped by the host's side of go-plugin).
func gone(pid int) bool {
	_, state, err := procStat(pid)
	return err != nil || state == 'Z' || state == 'X'
}

// waitGone waits up to d for every one of pids to exit and returns those
// still running.
func waitGone(pids []int, d time.Duration) []int {
	deadline := time.Now().Add(d)
	for {
		var alive []int
		for _, pid := range pids {
			if !gone(pid) {
				alive = append(alive, pid)
			}
		}
		if len(alive) == 0 || time.Now().After(deadline) {
			return alive
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill9 kills process pid with SIGKILL and waits for it to die, so that
// the next call on the plugin meets a dead process, not a dying one.
func kill9(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill -9 %d: %w", pid, err)
	}
	if alive := waitGone([]int{pid}, 10*time.Second); len(alive) > 0 {
		return fmt.Errorf("plugin process %d still runs 10s after kill -9", pid)
	}
	return nil
}
