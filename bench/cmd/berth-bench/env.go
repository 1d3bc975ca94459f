package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox"
)

// env is everything the scenarios share: one temporary directory holding
// the berth store, the plain rootfs, the OCI bundle, runc's and crun's
// state and podman's storage, and the tools set up to use them.
type env struct {
	tmp          string
	tarball      string
	store        *layerfs.Store
	img          *layerfs.Image
	cgm          *cgroup.Manager
	cgParent     string // every cgroup this run makes is under a name starting with it
	state        string
	rootfs       string
	berthBin     string
	nets         *netplug.Networks
	bridge       sandbox.Network
	pool         *netplug.Pool
	sandboxes    *sandbox.Pool // sandboxes built ahead of time
	podman       []string      // podman's global flags: private storage and cgroups
	podmanUlimit []string

	tools []*tool
	notes []string
	seq   atomic.Int64

	cleanups []func() error // run last first
}

// A tool is one way of running the workload.
type tool struct {
	name string
	// err, if set, is why the tool cannot run here; its rows show it.
	err string
	// run starts `true` in a sandbox and waits for it to exit and be
	// torn down.
	run func(ctx context.Context) error
	// settle, if set, runs after each timed run, untimed: it waits for
	// the tool's background work to finish.
	settle func(ctx context.Context) error
	// idle starts `sleep 1000` and returns what the host keeps for it;
	// nil if the scenario does not apply to the tool.
	idle func(ctx context.Context) (*idleBox, error)
	// sleep starts `sleep 1000` and returns how to stop it, with none of
	// idle's accounting: idle scans /proc, which with thousands of
	// sandboxes would cost more than starting them.
	sleep func(ctx context.Context) (stop func() error, err error)
	// version is the tool's own idea of its version.
	version string
}

// An idleBox is one sandbox running sleep, and what the host keeps for it.
type idleBox struct {
	hostPIDs []int // processes the tool keeps on the host besides the workload
	cgPID    int   // a process in the sandbox's cgroup, 0 if it has none of its own
	stop     func() error
}

func (e *env) id(prefix string) string {
	return fmt.Sprintf("bench-%s-%d-%d", prefix, os.Getpid(), e.seq.Add(1))
}

func (e *env) onCleanup(f func() error) { e.cleanups = append(e.cleanups, f) }

func (e *env) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	progress("note: %s", n)
	e.notes = append(e.notes, n)
}

// cleanup undoes setup, then sweeps for anything a tool left behind
// under this run's names, then removes the temporary directory.
func (e *env) cleanup() error {
	if e == nil {
		return nil
	}
	progress("cleaning up")
	var errs []error
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		errs = append(errs, e.cleanups[i]())
	}
	if e.tmp != "" {
		errs = append(errs, unmountUnder(e.tmp))
	}
	errs = append(errs, removeCgroups(e.cgParent))
	if e.tmp != "" && !*keepTmp {
		errs = append(errs, os.RemoveAll(e.tmp))
	}
	return errors.Join(errs...)
}

// setup prepares the shared rootfs for every tool. Tools that fail to set
// up or to run once are kept with their error, not dropped.
func setup(ctx context.Context, tarball string) (*env, error) {
	e := &env{tarball: tarball, cgParent: fmt.Sprintf("berth-bench-%d", os.Getpid())}
	tmp, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		return e, err
	}
	e.tmp = tmp
	e.state = filepath.Join(tmp, "state")

	progress("importing %s into a private layerfs store", filepath.Base(tarball))
	if e.store, err = layerfs.Open(filepath.Join(tmp, "store"), nil); err != nil {
		return e, err
	}
	if e.img, err = e.store.Import(ctx, tarball, &layerfs.ImportOptions{Name: "alpine:bench"}); err != nil {
		return e, fmt.Errorf("import: %w", err)
	}
	if e.cgm, err = cgroup.NewManager(cgroup.Options{Parent: e.cgParent}); err != nil {
		return e, err
	}
	e.onCleanup(e.cgm.RemoveParent)

	e.rootfs = filepath.Join(tmp, "rootfs")
	if err := os.MkdirAll(e.rootfs, 0o755); err != nil {
		return e, err
	}
	if out, err := exec.CommandContext(ctx, "tar", "-xzf", tarball, "-C", e.rootfs).CombinedOutput(); err != nil {
		return e, fmt.Errorf("extract rootfs: %w: %s", err, out)
	}

	progress("building the berth CLI")
	e.berthBin = filepath.Join(tmp, "berth")
	if out, err := exec.CommandContext(ctx, goTool(), "build", "-o", e.berthBin, "./cmd/berth").CombinedOutput(); err != nil {
		return e, fmt.Errorf("build berth: %w: %s", err, out)
	}

	if err := e.setupNetwork(ctx); err != nil {
		e.note("berth bridge network: %v", err)
	}

	e.note("runc and crun get a bundle per container (config.json written inside the timed run, tens of microseconds) so each has a cgroup of its own")
	e.note("berth (Go API, sandbox.Pool) takes a sandbox the pool built ahead of time; after each run, untimed, the pool builds the next and tears the last one down (Pool.Ready) before the next tool runs. Its throughput rows include that work")
	e.tools = []*tool{e.berthAPI(), e.berthPool(ctx), e.berthCLI(), e.ociTool("runc", "runc"), e.ociTool("crun", "crun"),
		e.ociTool("crun (cgroups disabled)", "crun", "--cgroup-manager=disabled"), e.bwrap(), e.podmanTool(ctx)}
	return e, nil
}

// goTool finds the go command: $GO as make passes it, else the toolchain
// this program was built with, else $PATH.
func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	if g := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(g) {
		return g
	}
	return "go"
}

func linkExists(name string) bool { return fileExists("/sys/class/net/" + name) }

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func (e *env) setupNetwork(ctx context.Context) error {
	// The bridge plugin turns on IPv4 forwarding host-wide; the harness
	// leaves it as it found it.
	const forward = "/proc/sys/net/ipv4/ip_forward"
	if was, err := os.ReadFile(forward); err == nil {
		e.onCleanup(func() error { return os.WriteFile(forward, was, 0o644) })
	}
	nets, err := netplug.Open(&netplug.Options{
		ConfigDir: filepath.Join(e.tmp, "net", "config"),
		RunDir:    filepath.Join(e.tmp, "net", "run"),
		Default:   netplug.NetworkOptions{Bridge: "berth-bench", Subnet: netip.MustParsePrefix("10.217.0.0/24")},
	})
	if err != nil {
		return err
	}
	e.nets = nets
	// Prune after the pool is closed (cleanups run last first) removes
	// the bridge and the plugins' shared chains once nothing uses them.
	e.onCleanup(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return nets.Prune(ctx)
	})
	if e.bridge, err = nets.Get(ctx, "bridge"); err != nil {
		return err
	}
	if e.pool, err = netplug.NewPool(e.bridge, 4, nil); err != nil {
		return err
	}
	e.onCleanup(func() error { e.pool.Close(); return nil })
	return nil
}

// berthOptions are the options every in-process berth sandbox shares.
func (e *env) berthOptions(args ...string) *sandbox.Options {
	return &sandbox.Options{Args: args, Storage: e.store, Cgroups: e.cgm, StateDir: e.state}
}

func (e *env) berthAPI() *tool {
	return &tool{
		name:    "berth (Go API)",
		version: "this tree",
		sleep: func(ctx context.Context) (func() error, error) {
			sb := sandbox.New("alpine:bench", e.berthOptions("sleep", "1000"))
			if err := sb.Start(ctx); err != nil {
				return nil, err
			}
			return sb.Close, nil
		},
		run: func(ctx context.Context) error {
			return runBerth(ctx, e.berthOptions("true"))
		},
		idle: func(ctx context.Context) (*idleBox, error) {
			before := children(os.Getpid())
			sb := sandbox.New("alpine:bench", e.berthOptions("sleep", "1000"))
			if err := sb.Start(ctx); err != nil {
				return nil, err
			}
			b := &idleBox{stop: sb.Close}
			// The sandbox's init is the new child of this process in the
			// sandbox's cgroup; CNI plugins of pooled namespaces being
			// discarded are children too, but in this process's cgroup.
			want := "/" + e.cgParent + "/" + sb.ID()
			for _, pid := range children(os.Getpid()) {
				if !containsInt(before, pid) && memoryCgroup(pid) == want {
					b.hostPIDs = append(b.hostPIDs, pid)
					b.cgPID = pid
				}
			}
			if b.cgPID == 0 {
				return b, fmt.Errorf("sandbox %s: no init process found in cgroup %s", sb.ID(), want)
			}
			return b, nil
		},
	}
}

// berthPool is berth through the Go API with a sandbox.Pool of two: each
// run takes a sandbox built ahead of time, while the pool builds the next
// and tears the last down in the background.
func (e *env) berthPool(ctx context.Context) *tool {
	t := &tool{name: "berth (Go API, sandbox.Pool)", version: "this tree"}
	p, err := sandbox.NewPool(ctx, "alpine:bench", e.berthOptions(), 2)
	if err != nil {
		t.err = err.Error()
		return t
	}
	e.sandboxes = p
	e.onCleanup(p.Close)
	// Between samples the pool rebuilds and tears down, untimed, so that
	// its background work does not land on the next tool's run.
	t.settle = p.Ready
	t.run = func(ctx context.Context) error {
		res, err := p.New(&sandbox.Options{Args: []string{"true"}}).Run(ctx)
		if err != nil {
			return err
		}
		if !res.Success() {
			return fmt.Errorf("exit code %d, signal %d", res.ExitCode, res.Signal)
		}
		return nil
	}
	return t
}

func runBerth(ctx context.Context, o *sandbox.Options) error {
	res, err := sandbox.New("alpine:bench", o).Run(ctx)
	if err != nil {
		return err
	}
	if !res.Success() {
		return fmt.Errorf("exit code %d, signal %d", res.ExitCode, res.Signal)
	}
	return nil
}

func (e *env) berthCLI() *tool {
	return &tool{
		name:    "berth (CLI)",
		version: "this tree",
		run: func(ctx context.Context) error {
			return command(ctx, e.berthBin, "--root", filepath.Join(e.tmp, "store"), "--state", filepath.Join(e.tmp, "cli-state"),
				"--cgroup-parent", e.cgParent, "run", "alpine:bench", "true")
		},
	}
}

// ociTool is runc or crun (same command line) on the shared bundle, with
// state under the temporary directory and cgroups under this run's parent.
func (e *env) ociTool(name, bin string, global ...string) *tool {
	root := filepath.Join(e.tmp, "oci-"+strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(name))
	g := append([]string{"--root", root}, global...)
	t := &tool{name: name, version: firstLine(output(bin, "--version"))}
	if _, err := exec.LookPath(bin); err != nil {
		t.err = err.Error()
		return t
	}
	e.onCleanup(func() error {
		// Containers a failed run left: delete -f kills them first.
		ids := strings.Fields(output(bin, append(g, "list", "-q")...))
		var errs []error
		for _, id := range ids {
			errs = append(errs, command(context.Background(), bin, append(g, "delete", "-f", id)...))
		}
		return errors.Join(errs...)
	})
	// Every container gets a bundle of its own, for a cgroup of its own
	// under this run's parent (the final sweep finds what a failed run
	// left); all bundles share the one read-write rootfs. Writing the
	// small config.json is timed with the run: tens of microseconds.
	bundle := func(id string, args ...string) (string, error) {
		dir := filepath.Join(e.tmp, "bundles", id)
		return dir, writeBundle(dir, e.rootfs, "/"+e.cgParent+"-oci/"+id, args...)
	}
	t.run = func(ctx context.Context) error {
		id := e.id(bin)
		dir, err := bundle(id, "true")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		return command(ctx, bin, append(g, "run", "--bundle", dir, id)...)
	}
	t.idle = func(ctx context.Context) (*idleBox, error) {
		id := e.id(bin)
		dir, err := bundle(id, "sleep", "1000")
		if err != nil {
			return nil, err
		}
		if err := command(ctx, bin, append(g, "run", "-d", "--bundle", dir, id)...); err != nil {
			return nil, err
		}
		b := &idleBox{stop: func() error { return command(context.Background(), bin, append(g, "delete", "-f", id)...) }}
		var st struct{ Pid int }
		if err := json.Unmarshal([]byte(output(bin, append(g, "state", id)...)), &st); err != nil {
			return b, fmt.Errorf("%s state %s: %w", bin, id, err)
		}
		if ownCgroup(st.Pid) {
			b.cgPID = st.Pid
		}
		// The container's init is the workload itself; whatever runc or
		// crun process survives `run -d` is host overhead.
		for _, p := range allPIDs() {
			if c := comm(p); strings.HasPrefix(c, bin) {
				b.hostPIDs = append(b.hostPIDs, p)
			}
		}
		return b, nil
	}
	return t
}

func (e *env) bwrap() *tool {
	args := func(cmd ...string) []string {
		return append([]string{"--unshare-all", "--die-with-parent", "--bind", e.rootfs, "/", "--proc", "/proc", "--dev", "/dev"}, cmd...)
	}
	t := &tool{name: "bubblewrap", version: firstLine(output("bwrap", "--version"))}
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.err = err.Error()
		return t
	}
	t.run = func(ctx context.Context) error { return command(ctx, "bwrap", args("true")...) }
	t.idle = func(ctx context.Context) (*idleBox, error) {
		cmd := exec.Command("bwrap", args("sleep", "1000")...)
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		b := &idleBox{stop: func() error { cmd.Process.Kill(); cmd.Wait(); return nil }}
		// bwrap keeps itself and, with a new pid namespace, a second bwrap
		// as the namespace's init; sleep appears under that. Wait for it
		// so that the count is complete.
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			b.hostPIDs = b.hostPIDs[:0]
			sleeping := false
			for _, p := range descendants(cmd.Process.Pid, true) {
				if comm(p) == "sleep" {
					sleeping = true
				} else {
					b.hostPIDs = append(b.hostPIDs, p)
				}
			}
			if sleeping {
				return b, nil
			}
			time.Sleep(5 * time.Millisecond)
		}
		return b, errors.New("bwrap: sleep did not start within 5s")
	}
	return t
}

func (e *env) podmanTool(ctx context.Context) *tool {
	t := &tool{name: "podman", version: firstLine(output("podman", "--version"))}
	if _, err := exec.LookPath("podman"); err != nil {
		t.err = err.Error()
		return t
	}
	// Private storage, run root and cgroup parent so nothing global is
	// touched; runc because podman's default, crun, fails on this host's
	// hybrid cgroups (see the crun rows).
	e.podman = []string{"--root", filepath.Join(e.tmp, "podman", "root"), "--runroot", filepath.Join(e.tmp, "podman", "run"),
		"--tmpdir", filepath.Join(e.tmp, "podman", "tmp"), "--cgroup-manager", "cgroupfs", "--runtime", "runc", "--events-backend", "none"}
	// podman's default open-files and process limits are above what
	// runc may set here ("error setting rlimit type 7", then type 6 with
	// the host's hard limits or --ulimit host): ask for modest ones.
	ulimit := []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}
	e.podmanUlimit = ulimit
	e.note("podman runs with --ulimit nofile=1024:1024 --ulimit nproc=1024:1024: with its defaults (or --ulimit host) runc fails here with \"error setting rlimit type 7/6: operation not permitted\"; podman uses runc because its default, crun, fails on hybrid cgroups")
	// podman's default network is CNI's cni-podman0 bridge, which podman
	// never removes: remove it if this run made it.
	if !linkExists("cni-podman0") {
		e.onCleanup(func() error {
			if linkExists("cni-podman0") {
				return command(context.Background(), "ip", "link", "del", "cni-podman0")
			}
			return nil
		})
	}
	e.onCleanup(func() error {
		var errs []error
		errs = append(errs, command(context.Background(), "podman", append(e.podman, "rm", "-af", "-t", "0")...))
		errs = append(errs, command(context.Background(), "podman", append(e.podman, "rmi", "-af")...))
		// podman keeps the storage's overlay mounted; unmountUnder and
		// RemoveAll take care of the rest.
		return errors.Join(errs...)
	})
	progress("importing the tarball into a private podman storage")
	if err := command(ctx, "podman", append(e.podman, "import", e.tarball, "localhost/bench-alpine")...); err != nil {
		t.err = err.Error()
		return t
	}
	cgParent := "/" + e.cgParent + "-podman"
	run := func(ctx context.Context, detach bool, network string, cmd ...string) (string, error) {
		args := append(append(slicesClone(e.podman), "run", "--network", network, "--cgroup-parent", cgParent), ulimit...)
		if detach {
			args = append(args, "-d", "--name", e.id("podman"))
		} else {
			args = append(args, "--rm")
		}
		args = append(append(args, "localhost/bench-alpine"), cmd...)
		return commandOutput(ctx, "podman", args...)
	}
	t.run = func(ctx context.Context) error { _, err := run(ctx, false, "none", "true"); return err }
	t.idle = func(ctx context.Context) (*idleBox, error) {
		id, err := run(ctx, true, "none", "sleep", "1000")
		if err != nil {
			return nil, err
		}
		id = strings.TrimSpace(id)
		b := &idleBox{stop: func() error {
			return command(context.Background(), "podman", append(e.podman, "rm", "-f", "-t", "0", id)...)
		}}
		out, err := commandOutput(ctx, "podman", append(e.podman, "inspect", "--format", "{{.State.Pid}} {{.State.ConmonPid}}", id)...)
		if err != nil {
			return b, err
		}
		f := strings.Fields(out)
		if len(f) == 2 {
			b.cgPID, _ = strconv.Atoi(f[0])
			conmon, _ := strconv.Atoi(f[1])
			b.hostPIDs = []int{conmon}
		}
		return b, nil
	}
	return t
}

// podmanBridge returns a tool running podman with its default network,
// or nil when podman is unavailable.
func (e *env) podmanBridge() *tool {
	if e.podman == nil {
		return nil
	}
	return &tool{name: "podman (default network)", run: func(ctx context.Context) error {
		args := append(append(slicesClone(e.podman), "run", "--rm", "--cgroup-parent", "/"+e.cgParent+"-podman"), e.podmanUlimit...)
		args = append(args, "localhost/bench-alpine", "true")
		return command(ctx, "podman", args...)
	}}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// writeBundle writes an OCI bundle whose process runs args (default
// `true`) with the isolation berth gives: new pid, mount, uts, ipc and net
// namespaces, and nothing more that costs time (no user namespace).
func writeBundle(dir, rootfs, cgroupsPath string, args ...string) error {
	spec := map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"terminal": false, "user": map[string]int{"uid": 0, "gid": 0}, "args": args,
			"env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, "cwd": "/",
			"capabilities": map[string][]string{
				"bounding":  {"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"},
				"effective": {"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"},
				"permitted": {"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"},
			},
			"noNewPrivileges": true,
		},
		"root":     map[string]any{"path": rootfs, "readonly": false},
		"hostname": "bench",
		"mounts": []map[string]any{
			{"destination": "/proc", "type": "proc", "source": "proc"},
			{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		"linux": map[string]any{
			"cgroupsPath":   cgroupsPath,
			"namespaces":    []map[string]string{{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}},
			"maskedPaths":   []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"},
			"readonlyPaths": []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	b, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
}

// command runs a tool and turns a failure into an error carrying the
// first line of what it said, which is what the result rows show.
func command(ctx context.Context, name string, args ...string) error {
	_, err := commandOutput(ctx, name, args...)
	return err
}

func commandOutput(ctx context.Context, name string, args ...string) (string, error) {
	return commandOutputTimeout(ctx, 2*time.Minute, name, args...)
}

// commandOutputTimeout is commandOutput for a command that may take
// longer than two minutes, or should not take that long.
func commandOutputTimeout(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Files, not pipes: a detached container inherits the tool's stdio,
	// and with pipes Wait would wait for the container to exit.
	stdout, err := os.CreateTemp("", "berth-bench-out-")
	if err != nil {
		return "", err
	}
	defer os.Remove(stdout.Name())
	defer stdout.Close()
	stderr, err := os.CreateTemp("", "berth-bench-err-")
	if err != nil {
		return "", err
	}
	defer os.Remove(stderr.Name())
	defer stderr.Close()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	out, _ := os.ReadFile(stdout.Name())
	if err != nil {
		msg, _ := os.ReadFile(stderr.Name())
		if len(bytes.TrimSpace(msg)) == 0 {
			msg = out
		}
		m := strings.TrimSpace(string(msg))
		if len(m) > 400 {
			m = m[:400] + "…"
		}
		return string(out), fmt.Errorf("%s %s: %w: %s", name, subcommand(args), err, m)
	}
	return string(out), nil
}

// subcommand picks the verb out of a tool's arguments, for messages.
func subcommand(args []string) string {
	for _, a := range args {
		switch a {
		case "run", "import", "rm", "rmi", "inspect", "delete", "state", "list", "build", "ps", "gc":
			return a
		}
	}
	return ""
}

// output is a command's stdout, or "" if it fails: for versions and
// listings, where failure means there is nothing to report.
func output(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func (e *env) versions() map[string]string {
	v := map[string]string{"go": runtime.Version()}
	for _, t := range e.tools {
		if t.version != "" {
			v[t.name] = t.version
		}
	}
	v["conmon"] = firstLine(output("conmon", "--version"))
	return v
}
