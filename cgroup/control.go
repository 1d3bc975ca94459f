//go:build linux

package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Add moves the process pid, with all its threads, into the cgroup in
// every hierarchy. The caller must know pid still names the process it
// means (its child, not yet waited for). Processes it forks afterwards
// start in the cgroup. If Add fails part way, the process is in some
// hierarchies only; Kill and Remove still find it there.
func (c *Cgroup) Add(pid int) error {
	return c.add(pid, c.dirs())
}

func (c *Cgroup) add(pid int, dirs []string) error {
	if pid <= 0 {
		// "0" would move the calling process, which is never what a
		// sandbox manager wants done by accident.
		return fmt.Errorf("cgroup: add %d to %s: invalid pid", pid, c.name)
	}
	for _, dir := range dirs {
		if err := checkDir(dir); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// Pids returns, sorted, the processes in the cgroup or its descendants,
// in any hierarchy.
func (c *Cgroup) Pids() ([]int, error) {
	if !c.existsAnywhere() {
		return nil, fmt.Errorf("cgroup: %s: %w", c.name, ErrNotFound)
	}
	pids, _, err := c.members()
	return pids, err
}

// members returns the processes in the cgroup and its descendants in
// every hierarchy, and whether cgroup.events in the unified hierarchy says
// the cgroup is populated: the kernel's own answer, which Kill waits on as
// well as on the listings. A hierarchy where the cgroup is gone
// contributes nothing.
func (c *Cgroup) members() (pids []int, populated bool, err error) {
	// A set, not a search of pids: a runaway cgroup can hold tens of
	// thousands of processes, listed once per hierarchy.
	seen := make(map[int]bool)
	for _, dir := range c.dirs() {
		err := walkCgroup(dir, func(d string) error {
			ps, err := readPids(filepath.Join(d, "cgroup.procs"))
			for _, pid := range ps {
				if !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return err
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, false, err
		}
	}
	slices.Sort(pids)
	if c.unified != "" {
		kv, _, err := readKeyed(filepath.Join(c.unified, "cgroup.events"))
		if err != nil {
			return nil, false, err
		}
		populated = kv["populated"] == 1
	}
	return pids, populated, nil
}

// walkCgroup calls fn for dir and then for each descendant cgroup, depth
// first, parents before children.
func walkCgroup(dir string, fn func(dir string) error) error {
	if err := fn(dir); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := walkCgroup(filepath.Join(dir, e.Name()), fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// Freeze stops every task in the cgroup and waits until all are stopped.
// It uses the unified hierarchy's cgroup.freeze where there is one (Linux
// 5.2), else the v1 freezer. If ctx ends first the cgroup stays asked to
// freeze; Thaw undoes that.
func (c *Cgroup) Freeze(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.setFrozen(ctx, true)
}

// Thaw lets the tasks of a frozen cgroup run again and waits until they
// do.
func (c *Cgroup) Thaw(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.setFrozen(ctx, false)
}

func (c *Cgroup) setFrozen(ctx context.Context, frozen bool) error {
	what := "thaw " + c.name
	if frozen {
		what = "freeze " + c.name
	}
	// Where the cgroup is only partly there (a crash during Create or
	// Remove), whichever freezer remains is used.
	if c.unified != "" && exists(filepath.Join(c.unified, "cgroup.freeze")) {
		val, want := "0", uint64(0)
		if frozen {
			val, want = "1", 1
		}
		if err := writeFile(filepath.Join(c.unified, "cgroup.freeze"), val); err != nil {
			return err
		}
		events := filepath.Join(c.unified, "cgroup.events")
		return waitUntil(ctx, what, func() (bool, error) {
			kv, _, err := readKeyed(events)
			return kv["frozen"] == want, err
		})
	}
	if dir := c.v1["freezer"]; dir != "" && exists(dir) {
		state, want := filepath.Join(dir, "freezer.state"), "THAWED"
		if frozen {
			want = "FROZEN"
		}
		return waitUntil(ctx, what, func() (bool, error) {
			// Writing again is what gets a freeze unstuck when tasks
			// raced with it (they read FREEZING until then).
			if err := writeFile(state, want); err != nil {
				return false, err
			}
			got, err := readString(state)
			return got == want, err
		})
	}
	if !c.existsAnywhere() {
		return fmt.Errorf("cgroup: %s: %w", what, ErrNotFound)
	}
	return unsupported(what, "no cgroup.freeze and no v1 freezer hierarchy")
}

// waitUntil calls done until it reports true, backing off from 1ms to
// 20ms between calls: short enough to notice quickly and to heed ctx
// without a goroutine, long enough not to spin.
func waitUntil(ctx context.Context, what string, done func() (bool, error)) error {
	delay := time.Millisecond
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("cgroup: %s: %w", what, context.Cause(ctx))
		case <-t.C:
		}
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// Kill sends SIGKILL to every process in the cgroup, and its descendants,
// and waits until they have all exited. It leaves the cgroup thawed, so
// that a process added afterwards runs.
//
// With cgroup.kill (Linux 5.14) the kernel kills them all at once, forks
// in flight included. Otherwise Kill freezes the cgroup so that none can
// fork, signals each process through a pidfd once /proc shows its PID
// still names a member (so a PID reused by an unrelated process is never
// signalled), thaws so the signals are delivered, and repeats until the
// cgroup is empty.
func (c *Cgroup) Kill(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.existsAnywhere() {
		return fmt.Errorf("cgroup: kill %s: %w", c.name, ErrNotFound)
	}
	return c.kill(ctx, true)
}

// KillEach is Kill without cgroup.kill, for a cgroup that is to take new
// processes afterwards: it signals the processes one by one, the cgroup
// frozen, as Kill does where the kernel has no cgroup.kill. Once
// cgroup.kill has been written, Linux (seen on 6.18) kills at birth the
// next process born into the cgroup with CLONE_INTO_CGROUP, as the
// sandbox package starts its processes.
func (c *Cgroup) KillEach(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.existsAnywhere() {
		return fmt.Errorf("cgroup: kill %s: %w", c.name, ErrNotFound)
	}
	return c.kill(ctx, false)
}

func (c *Cgroup) kill(ctx context.Context, useKillFile bool) error {
	killFile := filepath.Join(c.unified, "cgroup.kill")
	canKill := useKillFile && c.unified != "" && exists(killFile)
	err := waitUntil(ctx, "kill "+c.name, func() (bool, error) {
		pids, populated, err := c.members()
		if err != nil || len(pids) == 0 && !populated {
			return true, err
		}
		if canKill {
			if err := writeFile(killFile, "1"); err != nil {
				return false, err
			}
			// In Hybrid mode a process may have joined only v1
			// hierarchies, out of cgroup.kill's reach.
			if len(c.v1) > 0 {
				return false, c.signal(pids)
			}
			return false, nil
		}
		return false, c.freezeAndSignal(ctx, pids)
	})
	if err != nil {
		return err
	}
	// A freeze requested before (or left by an interrupted Kill) would
	// stop the next process to join.
	if err := c.setFrozen(ctx, false); err != nil && !errors.Is(err, errors.ErrUnsupported) && !errors.Is(err, ErrNotFound) && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// freezeAndSignal signals pids with the cgroup frozen, so that none of its
// processes can fork while it does. A freeze that does not complete soon
// (a task in uninterruptible sleep) is not waited for: signals are sent
// anyway, and the caller's loop comes back for whatever remains.
func (c *Cgroup) freezeAndSignal(ctx context.Context, pids []int) error {
	fctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	err := c.setFrozen(fctx, true)
	froze := true
	switch {
	case err == nil:
	case errors.Is(err, errors.ErrUnsupported):
		froze = false // no freezer: signal them running
	case fctx.Err() != nil:
		// Still freezing: signal, and thaw, all the same.
	default:
		return err
	}
	if froze {
		// The list may have changed since it was read, and can no
		// longer change until thawed.
		if pids, _, err = c.members(); err != nil {
			return err
		}
	}
	serr := c.signal(pids)
	if froze {
		if err := c.setFrozen(ctx, false); err != nil {
			return err
		}
	}
	return serr
}

// signal sends SIGKILL to each of pids that is still a member.
func (c *Cgroup) signal(pids []int) error {
	for _, pid := range pids {
		if err := c.signalOne(pid); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cgroup) signalOne(pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		return nil // exited
	case errors.Is(err, unix.ENOSYS):
		// No pidfds (before Linux 5.3): kill(2) right after the
		// membership check, the narrowest window available.
		if !c.isMember(pid) {
			return nil
		}
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("cgroup: kill %d: %w", pid, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("cgroup: pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	// The pidfd pins the process it was opened on. If /proc/PID, read
	// after that, shows a member, then either it is that process, or that
	// process has since died and signalling the pidfd does nothing.
	if !c.isMember(pid) {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("cgroup: pidfd_send_signal %d: %w", pid, err)
	}
	return nil
}

// isMember reports whether /proc/PID/cgroup puts pid in the cgroup, or a
// descendant, in any hierarchy.
func (c *Cgroup) isMember(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	// Lines are "ID:CONTROLLERS:PATH".
	for line := range strings.Lines(string(b)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) == 3 && isUnder(parts[2], c.rel) {
			return true
		}
	}
	return false
}

// isUnder reports whether a /proc/PID/cgroup path names the cgroup rel or
// one of its descendants.
func isUnder(path, rel string) bool {
	return strings.HasSuffix(path, rel) || strings.Contains(path, rel+"/")
}

// Remove kills every process in the cgroup, waits until it is empty and
// removes its directory, and those of any descendants, from every
// hierarchy. Removing a cgroup that no longer exists anywhere succeeds.
func (c *Cgroup) Remove(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.existsAnywhere() {
		return nil
	}
	if err := c.kill(ctx, true); err != nil {
		return err
	}
	for _, dir := range c.dirs() {
		if err := removeTree(ctx, dir); err != nil {
			return err
		}
	}
	c.log.Debug("cgroup: removed")
	return nil
}

// removeTree rmdirs dir after its descendants. cgroupfs directories are
// removed with rmdir(2) alone: their files are the kernel's interface, not
// data, and cannot be unlinked.
func removeTree(ctx context.Context, dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(ctx, filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	// A cgroup whose last task has just exited can still be busy for a
	// moment while the kernel finishes with it.
	return waitUntil(ctx, "rmdir "+dir, func() (bool, error) {
		err := unix.Rmdir(dir)
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return true, nil
		case errors.Is(err, unix.EBUSY):
			return false, nil
		}
		return false, fmt.Errorf("cgroup: rmdir %s: %w", dir, err)
	})
}
