package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/plugin"
	"github.com/berth-dev/berth/sandbox"
)

// pluginDir makes a directory for plugins that only root can write, on a
// path only root can write, as berth requires of plugins (t.TempDir is
// under /tmp, which anyone can write to).
func pluginDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("must run as root: plugins must be root's")
	}
	dir, err := os.MkdirTemp("/run", "berth-clitest-plugins-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// buildPlugin builds the plugin whose main package is pkg (relative to
// this directory) into dir, as name.
func buildPlugin(t *testing.T, dir, name, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func writeScript(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 0\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// TestRunPluginFlagErrors: a mistake in the plugin flags is the command
// line's, exit status 125, with a message naming the flag and the
// problem, and no sandbox is made.
func TestRunPluginFlagErrors(t *testing.T) {
	e := newCLIEnv(t)
	dir := pluginDir(t)
	t.Setenv("BERTH_PLUGIN_DIR", dir)
	writeScript(t, filepath.Join(dir, "writable"), 0o777)
	writeScript(t, filepath.Join(dir, "not-a-plugin"), 0o755)
	long := strings.Repeat("x", 5000)
	for _, c := range []struct {
		name   string
		args   []string
		stderr string
	}{
		{"opt without plugin", []string{"--storage-opt", "size=1m"}, "--storage-opt needs --storage-plugin"},
		{"network opt without plugin", []string{"--network-opt", "subnet=10.0.0.0/24"}, "--network-opt needs --network-plugin"},
		{"opt without =", []string{"--storage-plugin", "not-a-plugin", "--storage-opt", "size"}, `--storage-opt "size": want KEY=VALUE`},
		{"opt without key", []string{"--storage-plugin", "not-a-plugin", "--storage-opt", "=1"}, `want KEY=VALUE`},
		{"opt twice", []string{"--storage-plugin", "not-a-plugin", "--storage-opt", "size=1m", "--storage-opt", "size=2m"}, `"size" given twice`},
		{"plugin and --net", []string{"--network-plugin", "not-a-plugin", "--net", "host"}, "--network-plugin and --net"},
		{"missing plugin", []string{"--storage-plugin", "nosuch"}, filepath.Join(dir, "nosuch") + ": no such file or directory"},
		{"untrusted plugin", []string{"--storage-plugin", "writable"}, "writable by group or others"},
		{"untrusted plugin by path", []string{"--network-plugin", filepath.Join(dir, "writable")}, "writable by group or others"},
		{"long name", []string{"--storage-plugin", long}, "bytes): file name too long"},
		{"not a plugin", []string{"--storage-plugin", "not-a-plugin"}, "--storage-plugin not-a-plugin: "},
	} {
		args := e.args(append(append([]string{"run"}, c.args...), "alpine:test", "true")...)
		_, stderr, code := berthExit(t, e.root, args...)
		if code != 125 || !strings.Contains(stderr, c.stderr) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s: exit %d, stderr %q; want 125 and one line with %q", c.name, code, stderr, c.stderr)
		}
	}
	if out, _ := berth(t, e.root, e.args("ps")...); strings.Count(out, "\n") != 1 {
		t.Errorf("sandboxes left by refused command lines:\n%s", out)
	}
}

// TestPluginList lists a plugins directory holding a plugin, a program
// that is not one, one anybody could replace, and one whose name is
// made to break the table and the terminal.
func TestPluginList(t *testing.T) {
	dir := pluginDir(t)
	buildPlugin(t, dir, "info", "../../plugin/testdata/infoplugin")
	writeScript(t, filepath.Join(dir, "not-a-plugin"), 0o755)
	writeScript(t, filepath.Join(dir, "writable"), 0o777)
	hostile := "evil\x1b[2J\tname" + strings.Repeat("y", 200)
	writeScript(t, filepath.Join(dir, hostile), 0o755)

	for _, args := range [][]string{{"plugin", "ls", "--dir", dir}, {"plugin", "ls"}} {
		t.Setenv("BERTH_PLUGIN_DIR", dir)
		stdout, stderr, code := berthExit(t, t.TempDir(), args...)
		if code != 0 {
			t.Fatalf("berth %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
		if len(lines) != 5 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[0], "KIND") || !strings.Contains(lines[0], "CAPABILITIES") {
			t.Fatalf("berth %s: want a header and 4 plugins:\n%s", strings.Join(args, " "), stdout)
		}
		// Sorted: "evil...", "info", "not-a-plugin", "writable".
		if f := strings.Fields(lines[2]); len(f) != 5 || f[0] != "info" || f[1] != "network" || f[2] != "1" || f[4] != "ports" {
			t.Errorf("the plugin's line: %q", lines[2])
		}
		if !strings.HasPrefix(lines[3], "not-a-plugin ") || !strings.Contains(lines[3], "error: ") {
			t.Errorf("a program that is no plugin: %q", lines[3])
		}
		if !strings.HasPrefix(lines[4], "writable ") || !strings.Contains(lines[4], "writable by group or others") {
			t.Errorf("a program anybody can replace: %q", lines[4])
		}
		if strings.ContainsAny(stdout, "\x1b") || !strings.HasPrefix(lines[1], `evil\x1b[2J name`) || len(lines[1]) > 400 {
			t.Errorf("a hostile name reached the table as it is: %q", lines[1])
		}
	}
}

// TestPluginRunEndToEnd runs the real berth binary with the two example
// plugins: a sandbox whose rootfs is tmpfs-storage's and whose network is
// p2p-network's fetches a page from a server on the host end of its link.
// Then a berth run killed -9 with its sandbox running leaves a rootfs
// and a link that only the plugins know how to free, which berth gc
// must: no mount, no link, nothing in either plugin's list.
func TestPluginRunEndToEnd(t *testing.T) {
	dir := pluginDir(t) // first, so that it goes after the env's gc
	e := newCLIEnv(t)
	busybox, _ := filepath.Abs("../../../shared/images/busybox-1.38-musl-oci")
	if _, err := berth(t, e.root, "image", "import", busybox, "--name", "busybox:demo"); err != nil {
		t.Fatal(err)
	}
	storagePlugin := buildPlugin(t, dir, "tmpfs-storage", "../../examples/plugins/tmpfs-storage")
	networkPlugin := buildPlugin(t, dir, "p2p-network", "../../examples/plugins/p2p-network")
	bin := filepath.Join(t.TempDir(), "berth")
	if b, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build berth: %v\n%s", err, b)
	}
	t.Setenv("BERTH_PLUGIN_DIR", dir) // for the in-process gc of the env's cleanup, too
	berthCmd := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, append([]string{"--root", e.root}, args...)...)
		cmd.Env = append(os.Environ(), "BERTH_PLUGIN_DIR="+dir)
		return cmd
	}

	out, err := berthCmd("plugin", "ls").CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^p2p-network +network +1 `).Match(out) || !regexp.MustCompile(`(?m)^tmpfs-storage +storage +1 `).Match(out) {
		t.Errorf("berth plugin ls: %v\n%s", err, out)
	}

	// The p2p plugin gives a sandbox the second /31 of its subnet: the
	// host end is the subnet's address + 2. The server listens there
	// before the address exists (IP_FREEBIND).
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.219.%d.0/24", os.Getpid()%250))
	hostEnd := subnet.Addr().Next().Next()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1) })
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp4", netip.AddrPortFrom(hostEnd, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from the host end")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	plugins := []string{"--storage-plugin", "tmpfs-storage", "--network-plugin", "p2p-network", "--network-opt", "subnet=" + subnet.String()}

	run := berthCmd(e.args(append(append([]string{"run"}, plugins...), "busybox:demo", "wget", "-qO-", "http://"+ln.Addr().String()+"/")...)...)
	var stderr bytes.Buffer
	run.Stderr = &stderr
	out, err = run.Output()
	if err != nil || string(out) != "hello from the host end\n" {
		t.Fatalf("berth run with both plugins: %q, %v\n%s", out, err, stderr.String())
	}

	// Killed -9 with its sandbox running. Its plugins' socket
	// directories stay in the host's plugin run directory; berth gc
	// takes them only after a minute, so the test removes its own.
	before := pluginSocketDirs(t)
	defer removeDeadSocketDirs(t, before)
	run = berthCmd(e.args(append(append([]string{"run"}, plugins...), "busybox:demo", "sleep", "1000")...)...)
	run.Stderr = os.Stderr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	id := waitRunning(t, e)
	if id == "" {
		run.Process.Kill()
		run.Wait()
		t.Fatal("the sandbox never ran")
	}
	hostIf := interfaceWith(t, hostEnd)
	if hostIf == "" {
		t.Error("no interface has the host end's address while the sandbox runs")
	}
	if mounts := mountsNaming(t, id); len(mounts) == 0 {
		t.Error("no mount names the sandbox while it runs")
	}
	run.Process.Kill()
	run.Wait()

	out, err = berthCmd(e.args("gc")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "reclaimed 1 dead sandboxes") {
		t.Errorf("berth gc: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(e.state, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the sandbox's state after gc: %v", err)
	}
	if mounts := mountsNaming(t, id); len(mounts) > 0 {
		t.Errorf("mounts left after gc: %q", mounts)
	}
	if hostIf != "" {
		if _, err := net.InterfaceByName(hostIf); err == nil {
			t.Errorf("the link's host end %s is left after gc", hostIf)
		}
	}
	for _, p := range []string{storagePlugin, networkPlugin} {
		if pids := processesOf(t, p); len(pids) > 0 {
			t.Errorf("%s still runs after berth and gc ended: %v", filepath.Base(p), pids)
		}
	}
	ctx := context.Background()
	s, err := plugin.OpenStorage(ctx, storagePlugin, &plugin.Options{Store: mustStore(t, e.root)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if keys, err := s.Rootfses(ctx); err != nil || slices.Contains(keys, "sandbox-"+id) {
		t.Errorf("tmpfs-storage after gc: %q, %v", keys, err)
	}
	n, err := plugin.OpenNetwork(ctx, networkPlugin, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if ids, err := n.Attached(ctx); err != nil || slices.Contains(ids, id) {
		t.Errorf("p2p-network after gc: %q, %v", ids, err)
	}
}

// processesOf returns the PIDs of the processes running the program at
// path.
func processesOf(t *testing.T, path string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == path {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitRunning returns the ID of the one sandbox in e's state directory,
// once it runs, or "" if it does not within a minute.
func waitRunning(t *testing.T, e *cliEnv) string {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		records, err := sandbox.ReadRecords(e.state)
		if err != nil {
			t.Fatal(err)
		}
		if len(records) == 1 && records[0].State != nil && !records[0].State.Pending && records[0].Owned {
			return records[0].ID
		}
	}
	return ""
}

// interfaceWith names the host's interface that has address a.
func interfaceWith(t *testing.T, a netip.Addr) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		addrs, _ := i.Addrs()
		for _, ad := range addrs {
			if p, err := netip.ParsePrefix(ad.String()); err == nil && p.Addr() == a {
				return i.Name
			}
		}
	}
	return ""
}

// mountsNaming returns the mount points in this mount namespace whose
// path holds id.
func mountsNaming(t *testing.T, id string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for l := range strings.Lines(string(b)) {
		if f := strings.Fields(l); len(f) > 4 && strings.Contains(f[4], id) {
			out = append(out, f[4])
		}
	}
	return out
}

func mustStore(t *testing.T, root string) *layerfs.Store {
	t.Helper()
	s, err := layerfs.Open(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pluginRunDir is where berth's plugins bind their sockets by default.
const pluginRunDir = "/run/berth/plugins"

// pluginSocketDirs returns the socket directories in pluginRunDir now.
func pluginSocketDirs(t *testing.T) map[string]bool {
	t.Helper()
	dirs := map[string]bool{}
	ents, err := os.ReadDir(pluginRunDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "plugin-dir") {
			dirs[e.Name()] = true
		}
	}
	return dirs
}

// removeDeadSocketDirs removes the socket directories made since before
// whose sockets no process has bound any more (none is in
// /proc/net/unix): those of the plugins the test killed, and never those
// of a plugin another program runs meanwhile.
func removeDeadSocketDirs(t *testing.T, before map[string]bool) {
	t.Helper()
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Error(err)
		return
	}
	bound := string(b)
	for name := range pluginSocketDirs(t) {
		if before[name] {
			continue
		}
		dir := filepath.Join(pluginRunDir, name)
		socks, err := os.ReadDir(dir)
		if err != nil {
			t.Error(err)
			continue
		}
		live := false
		for _, s := range socks {
			if strings.Contains(bound, " "+filepath.Join(dir, s.Name())+"\n") {
				live = true
			}
		}
		if !live {
			if err := os.RemoveAll(dir); err != nil {
				t.Error(err)
			}
		}
	}
}
