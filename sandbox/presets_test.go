package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/security"
)

// ucountsProbe builds testdata/ucounts.c statically, once, into a
// directory a sandbox can bind.
var ucountsProbe = staticProgram("ucounts", "testdata/ucounts.c")

// withUcounts binds the ucounts probe at /probe and runs it with args.
func withUcounts(t *testing.T, sec *security.Config, args ...string) func(*Options) {
	t.Helper()
	dir, err := ucountsProbe()
	if err != nil {
		t.Fatal(err)
	}
	return func(o *Options) {
		o.Security = sec
		o.Mounts = []Mount{{Source: dir, Destination: "/probe", ReadOnly: true}}
		o.Args = append([]string{"/probe/ucounts"}, args...)
	}
}

// cgroupLimit reads a limit of the cgroup the process pid is in: file v1
// in the controller's v1 hierarchy if the host binds it there, else v2 in
// the unified hierarchy.
func cgroupLimit(t *testing.T, pid int, controller, v1, v2 string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var unified string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			unified = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, parts[2], v1))
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(string(v))
			}
		}
	}
	for _, root := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if v, err := os.ReadFile(filepath.Join(root, unified, v2)); err == nil {
			return strings.TrimSpace(string(v))
		}
	}
	t.Fatalf("no %s limit for pid %d", controller, pid)
	return ""
}

// Default keeps neither CAP_MKNOD nor CAP_NET_RAW, even in the bounding
// set: root in the sandbox makes no device node.
func TestDefaultRefusesMknodAndRawSockets(t *testing.T) {
	res, out, _ := run(t, "alpine:test", opts(sh(`
		mknod /tmp/null c 1 3 2>/dev/null && echo "made a device node"
		caps=$(grep '^CapBnd:' /proc/self/status | cut -f2)
		[ $(( 0x$caps & (1 << 13) )) = 0 ] || echo "has NET_RAW"
		[ $(( 0x$caps & (1 << 27) )) = 0 ] || echo "has MKNOD"
		echo end`)))
	if !res.Success() || out != "end\n" {
		t.Errorf("got %q", out)
	}
}

// ping works without CAP_NET_RAW, for root and other users, in the
// sandbox's own network namespace (made by the init, in Strict's user
// namespace too, or by a netplug.Pool): every group the sandbox has may
// open ICMP echo sockets.
func TestPingWithoutNetRaw(t *testing.T) {
	pool, err := netplug.NewPool(netplug.None(), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, tc := range []struct {
		name, user, groups string
		sec                *security.Config
		pool               NamespacePool
	}{
		{"default", "", "0\t2147483647", security.Default(), nil},
		{"default-nobody", "nobody", "0\t2147483647", security.Default(), nil},
		{"strict", "", "0\t65535", security.Strict(), nil},
		{"default-pooled-netns", "", "0\t2147483647", security.Default(), pool},
		{"default-pooled-netns-nobody", "nobody", "0\t2147483647", security.Default(), pool},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
				o.Security, o.User, o.NetworkPool = tc.sec, tc.user, tc.pool
				o.Args = []string{"/bin/sh", "-c", `
					cat /proc/sys/net/ipv4/ping_group_range
					caps=$(grep '^CapBnd:' /proc/self/status | cut -f2)
					[ $(( 0x$caps & (1 << 13) )) = 0 ] || echo "has NET_RAW"
					ping -c 1 -W 2 127.0.0.1 >/dev/null && echo pinged`}
			}))
			if want := tc.groups + "\npinged\n"; !res.Success() || out != want {
				t.Errorf("got %q (stderr %q), want %q", out, errOut, want)
			}
		})
	}
}

// A sandbox changes no kernel parameter of the host's: none of its
// defaults on the host's network, and a sysctl it asks for there, or of a
// joined namespace, or outside its namespaces, is an error before
// anything starts.
func TestSysctlsStayInSandbox(t *testing.T) {
	const hostFile = "/proc/sys/net/ipv4/ping_group_range"
	before, err := os.ReadFile(hostFile)
	if err != nil {
		t.Fatal(err)
	}
	// Should the protection fail, the host gets its setting back.
	defer func() {
		if now, _ := os.ReadFile(hostFile); string(now) != string(before) {
			os.WriteFile(hostFile, before, 0)
			t.Errorf("the host's ping_group_range changed from %q to %q", before, now)
		}
	}()
	res, out, _ := run(t, "alpine:test", opts(func(o *Options) {
		o.Network = netplug.Host()
		o.Args = []string{"cat", "/proc/sys/net/ipv4/ping_group_range"}
	}))
	if !res.Success() || out != string(before) {
		t.Errorf("on the host's network the sandbox sees %q, the host %q", out, before)
	}

	web := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "30"} }))
	if err := web.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	for _, tc := range []struct {
		name string
		set  func(*Options)
	}{
		{"host network", func(o *Options) {
			o.Network = netplug.Host()
			o.Sysctls = map[string]string{"net.ipv4.ping_group_range": "0 1"}
		}},
		{"joined network", func(o *Options) {
			o.JoinNetwork = web.NetworkNamespace()
			o.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"}
		}},
		{"host-wide key", func(o *Options) { o.Sysctls = map[string]string{"kernel.panic": "1"} }},
		{"host-wide path", func(o *Options) { o.Sysctls = map[string]string{"vm/overcommit_memory": "1"} }},
		{"parent path", func(o *Options) { o.Sysctls = map[string]string{"net/../kernel/panic": "1"} }},
		{"hostname", func(o *Options) { o.Sysctls = map[string]string{"kernel.hostname": "x"} }},
		{"user namespace limits without one", func(o *Options) {
			o.Sysctls = map[string]string{"user.max_inotify_instances": "1"}
		}},
		{"host-wide key in the configuration", func(o *Options) {
			o.Security = security.Default()
			o.Security.Sysctls = map[string]string{"kernel.panic": "1"}
		}},
		{"empty value", func(o *Options) { o.Sysctls = map[string]string{"kernel.shmmni": ""} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts(tc.set)
			o.Args = []string{"true"}
			_, err := New("alpine:test", o).Run(context.Background())
			if !errors.Is(err, security.ErrSysctl) {
				t.Errorf("got %v, want ErrSysctl", err)
			}
		})
	}
}

// Sysctls of the sandbox's own namespaces are set before the workload
// runs, and /proc/sys is read-only again for it.
func TestSysctlOptions(t *testing.T) {
	res, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
		o.Sysctls = map[string]string{
			"net.ipv4.ip_unprivileged_port_start": "80",
			"kernel.shmmni":                       "100",
			"fs/mqueue/queues_max":                "5",
			"kernel.domainname":                   "example",
		}
		o.Args = []string{"/bin/sh", "-c", `
			cd /proc/sys
			cat net/ipv4/ip_unprivileged_port_start kernel/shmmni fs/mqueue/queues_max kernel/domainname
			echo 200 > kernel/shmmni 2>/dev/null && echo "proc/sys writable"
			echo end`}
	}))
	if want := "80\n100\n5\nexample\nend\n"; !res.Success() || out != want {
		t.Errorf("got %q (stderr %q), want %q", out, errOut, want)
	}
	// A pool's sandboxes get them too, fixed for all of them.
	p := newPool(t, opts(func(o *Options) { o.Sysctls = map[string]string{"kernel.shmmni": "123"} }), 1)
	defer p.Close()
	var stdout strings.Builder
	res, err := p.New(&Options{Args: []string{"cat", "/proc/sys/kernel/shmmni", "/proc/sys/net/ipv4/ping_group_range"}, Stdout: &stdout}).Run(context.Background())
	if err != nil || !res.Success() || stdout.String() != "123\n0\t2147483647\n" {
		t.Errorf("pooled: %q %+v %v", stdout.String(), res, err)
	}
	if _, err := p.New(&Options{Sysctls: map[string]string{"kernel.shmmni": "1"}}).Run(context.Background()); err == nil {
		t.Error("a pooled sandbox took sysctls of its own")
	}
}

// forkLoop is a shell script that starts n sleeps, the shell giving up at
// the first fork refused, and counts with builtins only (no pids may be
// left) the sandbox's processes then: all of them, since a sleep just
// forked may not have become one yet.
func forkLoop(n int) string {
	return fmt.Sprintf(`
		(i=0; while [ $i -lt %d ]; do sleep 30 & i=$((i+1)); done) 2>/dev/null
		n=0
		for p in /proc/[0-9]*; do n=$((n+1)); done
		echo $n`, n)
}

// checkForkLoop says what is wrong with forkLoop(attempts)'s output
// under a pids limit: the limit must have stopped the loop, and held.
func checkForkLoop(out string, limit, attempts int) string {
	n, err := strconv.Atoi(strings.TrimSpace(out))
	switch {
	case err != nil:
		return fmt.Sprintf("no count: %q", out)
	case n >= attempts || n > limit:
		return fmt.Sprintf("%d processes under a limit of %d", n, limit)
	case n < limit/2:
		return fmt.Sprintf("only %d processes under a limit of %d: something else stopped the loop", n, limit)
	}
	return ""
}

// Default gives every sandbox a pids limit and a memory limit, and a
// security configuration's limits hold when the options set none.
func TestDefaultLimits(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "30"} }))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	pid := sb.proc.Pid
	pids := cgroupLimit(t, pid, "pids", "pids.max", "pids.max")
	mem := cgroupLimit(t, pid, "memory", "memory.limit_in_bytes", "memory.max")
	sb.Close()
	def := security.Default()
	if pids != "4096" || def.PidsMax != 4096 {
		t.Errorf("pids.max %s", pids)
	}
	if def.MemoryMax <= 0 || mem != strconv.FormatInt(def.MemoryMax, 10) {
		t.Errorf("memory limit %s, want %d", mem, def.MemoryMax)
	}

	// A small limit in the configuration, so that the fork loop stays
	// small: forks fail once it is reached.
	sec := security.Default()
	sec.PidsMax = 20
	res, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
		o.Security = sec
		o.Args = []string{"/bin/sh", "-c", `
			` + forkLoop(40)}
	}))
	if bad := checkForkLoop(out, 20, 40); !res.Success() || bad != "" {
		t.Errorf("%s (stderr %q)", bad, errOut)
	}
}

// Strict's limits hold inside: no core dumps, 1024 files, 1 GiB files,
// none of them raised again; 256 processes and 512 MiB; 16 inotify
// instances in its user namespace.
func TestStrictLimits(t *testing.T) {
	res, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
		o.Security = security.Strict()
		o.Args = []string{"/bin/sh", "-c", `
			grep -E '^Max (core file size|open files|file size|msgqueue size)' /proc/self/limits | tr -s ' '
			ulimit -c 1024 2>/dev/null && echo "core limit raised"
			ulimit -n 4096 2>/dev/null && echo "files limit raised"
			# A sparse write past 1 GiB: SIGXFSZ ends dd.
			dd if=/dev/zero of=/tmp/big bs=1 count=1 seek=1073741824 2>/dev/null; echo "dd $?"
			cat /proc/sys/user/max_inotify_instances /proc/sys/user/max_inotify_watches`}
	}))
	want := "Max file size 1073741824 1073741824 bytes \nMax core file size 0 0 bytes \nMax open files 1024 1024 files \n" +
		"Max msgqueue size 102400 102400 bytes \ndd 153\n16\n8192\n"
	if !res.Success() || out != want {
		t.Errorf("got %q (stderr %q), want %q", out, errOut, want)
	}

	sb := New("alpine:test", opts(func(o *Options) {
		o.Security = security.Strict()
		o.Args = []string{"sleep", "30"}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	pid := sb.proc.Pid
	pids := cgroupLimit(t, pid, "pids", "pids.max", "pids.max")
	mem := cgroupLimit(t, pid, "memory", "memory.limit_in_bytes", "memory.max")
	sb.Close()
	// Fatal: the memory bomb below must not run without its limit.
	if pids != "256" || mem != strconv.Itoa(512<<20) {
		t.Fatalf("pids.max %s, memory limit %s", pids, mem)
	}
	res, out, _ = run(t, "alpine:test", opts(func(o *Options) {
		o.Security = security.Strict()
		o.Args = []string{"/bin/sh", "-c", `
			` + forkLoop(300)}
	}))
	if bad := checkForkLoop(out, 256, 300); !res.Success() || bad != "" {
		t.Errorf("Strict: %s", bad)
	}
	res, _, _ = run(t, "alpine:test", opts(func(o *Options) {
		o.Security = security.Strict()
		o.Args = []string{"tail", "/dev/zero"}
	}))
	if !res.OOMKilled || res.Signal != syscall.SIGKILL || res.PeakMemory > 513<<20 {
		t.Errorf("memory bomb under Strict: %+v", res)
	}
}

// POSIX message queues are charged to the user across the host: a
// Default sandbox's root is the host's, a Strict sandbox's is charged to
// it too. RLIMIT_MSGQUEUE bounds what a sandbox takes of it. The probe
// stops at 300 KiB, well within the host root's 800 KiB, whether or not
// the limit holds.
func TestMsgqueueBounded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sec     *security.Config
		limit   int
		refusal string
	}{
		{"default", security.Default(), 200 << 10, "EMFILE"},
		// Strict's Landlock refuses mq_open outright (a queue is a file
		// outside the sandbox's tree); without it the limit holds.
		{"strict", security.Strict(), 0, "EACCES"},
		{"strict-without-landlock", strictWithoutLandlock(), 100 << 10, "EMFILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 2048
			res, out, errOut := run(t, "alpine:test", opts(withUcounts(t, tc.sec, "mq", strconv.Itoa(300<<10), strconv.Itoa(size))))
			var n int
			var why string
			if _, err := fmt.Sscanf(out, "mq %d %s", &n, &why); err != nil || !res.Success() {
				t.Fatalf("probe: %q %q %+v", out, errOut, res)
			}
			t.Logf("%d queues of %d bytes, then %s", n, size, why)
			if why != tc.refusal || n*size > tc.limit || n == 0 && tc.limit > 0 {
				t.Errorf("%d queues of %d bytes, then %s; want %s within %d bytes", n, size, why, tc.refusal, tc.limit)
			}
		})
	}
}

func strictWithoutLandlock() *security.Config {
	sec := security.Strict()
	sec.Landlock = false
	return sec
}

// inotifyInstances counts the inotify instances the processes of the
// sandbox hold.
func inotifyInstances(t *testing.T, sb *Sandbox) int {
	t.Helper()
	pids, err := sb.cg.Pids()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, pid := range pids {
		n += inotifyFDs(pid)
	}
	return n
}

// hostInotifyInstances counts the inotify descriptors of every process
// of the host: no fewer than the instances they hold.
func hostInotifyInstances() int {
	procs, _ := os.ReadDir("/proc")
	n := 0
	for _, p := range procs {
		if pid, err := strconv.Atoi(p.Name()); err == nil {
			n += inotifyFDs(pid)
		}
	}
	return n
}

func inotifyFDs(pid int) int {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	fds, _ := os.ReadDir(dir)
	n := 0
	for _, fd := range fds {
		if l, _ := os.Readlink(filepath.Join(dir, fd.Name())); l == "anon_inode:inotify" {
			n++
		}
	}
	return n
}

// In Strict's user namespace the kernel counts inotify instances and
// watches against the namespace's own limits before the host root's,
// which it charges too: the namespace's limits bound what the sandbox
// takes. The test sets them small, and its probe stops at twice that,
// far within the host's allowance, whether or not they hold.
func TestInotifyBoundedInStrict(t *testing.T) {
	const limit = 4
	// The probe may take 2*limit of the host root's instances, should
	// the limit fail; not if that could be all root has left. Every
	// instance on the host counts, as root's or not, to be safe.
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_user_instances")
	if err != nil {
		t.Fatal(err)
	}
	if max, _ := strconv.Atoi(strings.TrimSpace(string(b))); max-hostInotifyInstances() < 2*limit+16 {
		t.Skipf("the host's root may have too few inotify instances left of its %d", max)
	}
	for _, tc := range []struct {
		what, key, refusal string
	}{
		{"inotify", "user.max_inotify_instances", "EMFILE"},
		{"watches", "user.max_inotify_watches", "ENOSPC"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			sec := security.Strict()
			sec.Sysctls[tc.key] = strconv.Itoa(limit)
			stdinR, stdinW := io.Pipe()
			defer stdinW.Close()
			stdoutR, stdoutW := io.Pipe()
			sb := New("alpine:test", opts(func(o *Options) {
				withUcounts(t, sec, tc.what, strconv.Itoa(2*limit))(o)
				o.Stdin, o.Stdout = stdinR, stdoutW
			}))
			if err := sb.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			line, err := bufio.NewReader(stdoutR).ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			go io.Copy(io.Discard, stdoutR)
			var n int
			var why string
			if _, err := fmt.Sscanf(line, tc.what+" %d %s", &n, &why); err != nil {
				t.Fatalf("probe: %q", line)
			}
			if n != limit || why != tc.refusal {
				t.Errorf("%d %s, then %s; want %d, then %s", n, tc.what, why, limit, tc.refusal)
			}
			// What the host's root is charged for this sandbox: the
			// instances its processes hold.
			if tc.what == "inotify" {
				if held := inotifyInstances(t, sb); held != n {
					t.Errorf("the sandbox holds %d instances, the probe says %d", held, n)
				}
			}
			stdinW.Close()
			if res, err := sb.Wait(); err != nil || !res.Success() {
				t.Errorf("probe: %+v %v", res, err)
			}
			stdoutW.Close()
		})
	}
}

// On a host whose cgroups have no pids or memory controller for berth
// (here: the unified hierarchy of a hybrid host, which has neither), a
// sandbox runs without the defaults, saying so, as it did before the
// presets had them; a limit asked for still fails.
func TestDefaultLimitsWithoutControllers(t *testing.T) {
	const unified = "/sys/fs/cgroup/unified"
	b, err := os.ReadFile(filepath.Join(unified, "cgroup.controllers"))
	if ctrls := strings.Fields(string(b)); err != nil || slices.Contains(ctrls, "pids") || slices.Contains(ctrls, "memory") {
		t.Skip("no cgroup2 hierarchy without pids and memory controllers here")
	}
	var logged syncBuffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	cgm, err := cgroup.NewManager(cgroup.Options{Mode: cgroup.V2, UnifiedMount: unified, Parent: fmt.Sprintf("berth-presets-test-%d", os.Getpid()), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer cgm.RemoveParent()
	res, _, _ := run(t, "alpine:test", opts(func(o *Options) {
		o.Cgroups, o.Logger = cgm, log
		o.Args = []string{"true"}
	}))
	if !res.Success() || !strings.Contains(logged.String(), "cannot enforce the security configuration's default limits") {
		t.Errorf("%+v, logged %q", res, logged.String())
	}
	_, err = New("alpine:test", opts(func(o *Options) {
		o.Cgroups = cgm
		o.Args = []string{"true"}
		o.Resources = &cgroup.Resources{PidsMax: 10}
	})).Run(context.Background())
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("a pids limit asked for where there is no pids controller: %v", err)
	}
}

// Strict without its user namespace runs, without the limits of the
// namespace it no longer has.
func TestStrictWithoutUserNamespace(t *testing.T) {
	sec := security.Strict()
	sec.UserNamespace = nil
	res, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
		o.Security = sec
		o.Args = []string{"cat", "/proc/sys/user/max_inotify_instances"}
	}))
	host, _ := os.ReadFile("/proc/sys/user/max_inotify_instances")
	if !res.Success() || out != string(host) {
		t.Errorf("got %q (stderr %q), want the host's %q", out, errOut, host)
	}
}
