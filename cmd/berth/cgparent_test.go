package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupMounts returns the mount points of the host's cgroup hierarchies
// that berth uses: every cgroup2 mount and every v1 one with a controller
// berth puts sandboxes under, read from mountinfo.
func cgroupMounts(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var mounts []string
	for line := range strings.Lines(string(b)) {
		pre, post, ok := strings.Cut(line, " - ")
		fields, after := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(after) < 3 {
			continue
		}
		switch after[0] {
		case "cgroup2":
		case "cgroup":
			if !slices.ContainsFunc(strings.Split(after[2], ","), func(opt string) bool {
				return slices.Contains([]string{"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids"}, opt)
			}) {
				continue
			}
		default:
			continue
		}
		// Private mounts of other tests live under /tmp; the host's are
		// under /sys.
		if strings.HasPrefix(fields[4], "/sys/") {
			mounts = append(mounts, fields[4])
		}
	}
	if len(mounts) == 0 {
		t.Fatal("no cgroup hierarchy in mountinfo")
	}
	return mounts
}

// TestRunCgroupParent runs a sandbox through the CLI under a nested
// --cgroup-parent whose top directory the caller made: the workload is in
// the nested path in every hierarchy while it runs (seen from the host:
// its own cgroup namespace shows it only "/"), and afterwards berth has
// removed what it made and kept the caller's directory. Bad parents are
// refused before anything is made.
func TestRunCgroupParent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	root := t.TempDir()
	state := filepath.Join(root, "state")
	outer := fmt.Sprintf("berth-clitest-%d-cgparent", os.Getpid())
	busybox, _ := filepath.Abs("../../../shared/images/busybox-1.38-musl-oci")
	if _, err := berth(t, root, "image", "import", busybox, "--name", "busybox:demo"); err != nil {
		t.Fatal(err)
	}
	mounts := cgroupMounts(t)
	for _, mnt := range mounts {
		dir := filepath.Join(mnt, outer)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := unix.Rmdir(dir); err != nil {
				t.Errorf("remove the caller's %s: %v", dir, err)
			}
		})
	}
	g := []string{"--state", state, "--cgroup-parent", "/" + outer + "/b/c"}
	defer berth(t, root, append(g, "gc")...)

	stdin, gate := io.Pipe()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		cmd := newRootCommand()
		cmd.SetIn(stdin)
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append([]string{"--root", root}, append(g, "run", "-i", "busybox:demo", "sh", "-c", "cat /proc/self/cgroup; cat >/dev/null")...))
		done <- cmd.ExecuteContext(context.Background())
	}()
	defer gate.Close()

	// The sandbox's cgroup is the one directory in the parent.
	parent := filepath.Join(mounts[0], outer, "b", "c")
	var id string
	for deadline := time.Now().Add(30 * time.Second); id == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		entries, _ := os.ReadDir(parent)
		for _, e := range entries {
			if e.IsDir() {
				id = e.Name()
			}
		}
	}
	if id == "" {
		t.Fatalf("no sandbox cgroup appeared in %s", parent)
	}
	want := "/" + outer + "/b/c/" + id
	for _, mnt := range mounts {
		var procs []string
		for deadline := time.Now().Add(30 * time.Second); len(procs) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			b, _ := os.ReadFile(filepath.Join(mnt, want, "cgroup.procs"))
			procs = strings.Fields(string(b))
		}
		if len(procs) == 0 {
			t.Errorf("no process in %s%s", mnt, want)
			continue
		}
		b, err := os.ReadFile("/proc/" + procs[0] + "/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), ":"+want+"\n") {
			t.Errorf("/proc/%s/cgroup does not name %s:\n%s", procs[0], want, b)
		}
	}
	gate.Close()
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "0::/\n") {
		t.Errorf("inside, /proc/self/cgroup should show its own namespace's root:\n%s", out.String())
	}
	for _, mnt := range mounts {
		if _, err := os.Stat(filepath.Join(mnt, outer, "b")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("berth left %s/%s/b (stat: %v)", mnt, outer, err)
		}
		if _, err := os.Stat(filepath.Join(mnt, outer)); err != nil {
			t.Errorf("berth removed the caller's %s/%s: %v", mnt, outer, err)
		}
	}

	for parent, why := range map[string]string{
		"../../etc":     `".."`,
		outer + "//b":   "empty path element",
		outer + "/b/":   "empty path element",
		"/":             "root of the hierarchy",
		outer + "/a b":  `"a b"`,
		outer + "/x\ny": `"x\ny"`,
	} {
		out, err := berth(t, root, "--state", state, "--cgroup-parent", parent, "run", "busybox:demo", "true")
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("--cgroup-parent %q: %v %s; want a refusal saying %s", parent, err, out, why)
		}
	}
	for _, mnt := range mounts {
		if entries, err := os.ReadDir(filepath.Join(mnt, outer)); err != nil || len(entries) != countFiles(entries) {
			t.Errorf("something was made in %s/%s: %v %v", mnt, outer, entries, err)
		}
	}
}

func countFiles(entries []os.DirEntry) int {
	n := 0
	for _, e := range entries {
		if !e.IsDir() {
			n++
		}
	}
	return n
}
