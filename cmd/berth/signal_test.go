package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// frozenParent makes the cgroup parent name frozen, so that a sandbox's
// init, born into or joining a cgroup below it, stops there: a start that
// hangs. It returns the function that thaws it.
func frozenParent(t *testing.T, name string) (thaw func()) {
	t.Helper()
	dir, file, frozen, thawed := filepath.Join("/sys/fs/cgroup/freezer", name), "freezer.state", "FROZEN", "THAWED"
	if _, err := os.Stat("/sys/fs/cgroup/freezer"); err != nil {
		// cgroup v2 only.
		dir, file, frozen, thawed = filepath.Join("/sys/fs/cgroup", name), "cgroup.freeze", "1", "0"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// berth removes only the cgroup directories it made: this one is the
	// test's, gone once the test's deferred gc has emptied it.
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, file), []byte(frozen), 0o644); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(thawed), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Error(err)
		}
	}
}

// childInit returns the PID of this process's child berth-init, once
// there is one.
func childInit(t *testing.T) int {
	t.Helper()
	for {
		entries, err := os.ReadDir("/proc")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...
			s := string(b)
			comm := s[strings.IndexByte(s, '(')+1 : strings.LastIndexByte(s, ')')]
			f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
			if comm == "berth-init" && len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
				return pid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// killed waits until pid has a SIGKILL pending (a frozen cgroup v1 task
// takes it only once thawed) or is gone. It gives up after a minute, which
// only a broken berth takes, so that the test thaws the cgroup and fails
// rather than hang with it frozen.
func killed(t *testing.T, pid int) {
	t.Helper()
	for giveUp := time.Now().Add(time.Minute); time.Now().Before(giveUp); {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			for _, field := range []string{"SigPnd:", "ShdPnd:"} {
				if v, ok := strings.CutPrefix(line, field); ok {
					mask, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
					if mask&(1<<8) != 0 { // SIGKILL, 9
						return
					}
				}
			}
		}
		if strings.Contains(string(b), "State:\tZ") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A signal that ends berth's context (SIGINT, SIGTERM: main's
// signal.NotifyContext) while a start hangs stops the start: the workload
// never runs, and the error says so.
func TestRunSignalStopsHungStart(t *testing.T) {
	root := t.TempDir()
	parent := fmt.Sprintf("berth-clitest-%d-hang", os.Getpid())
	g := []string{"--state", filepath.Join(root, "state"), "--cgroup-parent", parent}
	alpine, _ := filepath.Abs("../../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz")
	if _, err := berth(t, root, "image", "import", alpine, "--name", "alpine:test"); err != nil {
		t.Fatal(err)
	}
	defer berth(t, root, append(g, "gc")...)
	thaw := frozenParent(t, parent)
	defer thaw()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		cmd := newRootCommand()
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append([]string{"--root", root}, append(g, "run", "alpine:test", "echo", "the workload ran")...))
		done <- cmd.ExecuteContext(ctx)
	}()
	pid := childInit(t)
	cancel() // as main's context is on SIGINT or SIGTERM
	killed(t, pid)
	thaw()
	err := <-done
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "stopped before the workload started") {
		t.Errorf("run: %v, want the start stopped", err)
	}
	if strings.Contains(out.String(), "the workload ran") {
		t.Errorf("the workload ran: %q", out.String())
	}
}
