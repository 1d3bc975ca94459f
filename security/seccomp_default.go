package security

import (
	"slices"

	"golang.org/x/sys/unix"
)

// DefaultSeccompProfile returns the equivalent of Docker's default profile:
// every call not listed fails with EPERM; ordinary programs find all they
// use; calls that reach past a container (mount, namespaces, keyrings,
// modules, the clock, rebooting, BPF, tracing other users' processes...)
// are allowed only to a process holding the capability that governs them,
// so that the profile and the capability set agree.
//
// It follows Docker's profile since 25.0, which refuses io_uring's calls
// for the kernel bugs reached through them, and allows the calls of Linux
// up to 6.7. It adds one call Docker's lacks, uretprobe: the kernel takes
// it only from the code it writes itself for a uretprobe and kills any
// other caller, so refusing it only crashes programs being traced.
func DefaultSeccompProfile() *SeccompProfile {
	p := &SeccompProfile{
		DefaultAction:   ActErrno,
		DefaultErrnoRet: errno(unix.EPERM),
		ArchMap:         dockerArchMap(),
		Syscalls: []SeccompRule{
			{Names: slices.Clone(allowedSyscalls), Action: ActAllow},
			{
				// Before 4.8 a tracer could change a call after the
				// filter had passed it; since, the kernel filters the
				// call again, so tracing no longer gets around seccomp.
				Names:    []string{"process_vm_readv", "process_vm_writev", "ptrace"},
				Action:   ActAllow,
				Includes: &SeccompFilter{MinKernel: "4.8"},
			},
			{
				// Sockets of any family but AF_VSOCK, which reaches the
				// host or its other guests.
				Names:  []string{"socket"},
				Action: ActAllow,
				Args:   []SeccompArg{{Index: 0, Value: unix.AF_VSOCK, Op: OpNotEqual}},
			},
		},
	}
	p.Syscalls = append(p.Syscalls, personalityRules(dockerPersonalities)...)
	p.Syscalls = append(p.Syscalls, archRules(true)...)
	p.Syscalls = append(p.Syscalls, capabilityRules()...)
	p.Syscalls = append(p.Syscalls, cloneRules(true)...)
	return p
}

// StrictSeccompProfile returns a profile for untrusted code run with no
// capabilities: DefaultSeccompProfile without what only capabilities
// unlock, and without calls that ordinary programs do without but that
// widen what a hostile one can reach:
//
//   - ptrace, process_vm_readv and process_vm_writev: no process may
//     inspect another, even its own child;
//   - personality other than reading it (0xffffffff) or setting Linux's
//     (0): the other personalities change how the kernel lays out memory;
//   - socket only for AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK (which
//     getaddrinfo uses): the other families are seldom used and often
//     the home of kernel bugs. socketcall, the 32-bit x86 multiplexer,
//     answers ENOSYS, since a filter cannot see the family through it:
//     a 32-bit x86 program whose C library does not fall back to the
//     direct calls cannot use sockets;
//   - modify_ldt, vmsplice, remap_file_pages and name_to_handle_at: old
//     or rarely needed calls with a history of exploits or of leaking
//     file handles.
//
// Namespaces stay closed to clone whatever the capabilities, and clone3
// answers ENOSYS so that C libraries fall back to clone.
func StrictSeccompProfile() *SeccompProfile {
	drop := []string{"modify_ldt", "name_to_handle_at", "remap_file_pages", "socketcall", "vmsplice"}
	allowed := slices.DeleteFunc(slices.Clone(allowedSyscalls), func(n string) bool {
		return slices.Contains(drop, n)
	})
	p := &SeccompProfile{
		DefaultAction:   ActErrno,
		DefaultErrnoRet: errno(unix.EPERM),
		ArchMap:         dockerArchMap(),
		Syscalls:        []SeccompRule{{Names: allowed, Action: ActAllow}},
	}
	for _, family := range []uint64{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6, unix.AF_NETLINK} {
		p.Syscalls = append(p.Syscalls, SeccompRule{
			Names:  []string{"socket"},
			Action: ActAllow,
			Args:   []SeccompArg{{Index: 0, Value: family, Op: OpEqualTo}},
		})
	}
	p.Syscalls = append(p.Syscalls, SeccompRule{
		Names:    []string{"socketcall"},
		Action:   ActErrno,
		ErrnoRet: errno(unix.ENOSYS),
		Comment:  "the families socket is restricted to cannot be checked through socketcall",
	})
	p.Syscalls = append(p.Syscalls, personalityRules([]uint64{0, 0xffffffff})...)
	p.Syscalls = append(p.Syscalls, archRules(false)...)
	p.Syscalls = append(p.Syscalls, cloneRules(false)...)
	return p
}

func errno(e unix.Errno) *uint {
	n := uint(e)
	return &n
}

// dockerArchMap is the architectures Docker's profile accepts besides the
// machine's own.
func dockerArchMap() []SeccompArchMap {
	return []SeccompArchMap{
		{Architecture: "SCMP_ARCH_X86_64", SubArchitectures: []string{"SCMP_ARCH_X86", "SCMP_ARCH_X32"}},
		{Architecture: "SCMP_ARCH_AARCH64", SubArchitectures: []string{"SCMP_ARCH_ARM"}},
		{Architecture: "SCMP_ARCH_MIPS64", SubArchitectures: []string{"SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"}},
		{Architecture: "SCMP_ARCH_MIPS64N32", SubArchitectures: []string{"SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"}},
		{Architecture: "SCMP_ARCH_MIPSEL64", SubArchitectures: []string{"SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"}},
		{Architecture: "SCMP_ARCH_MIPSEL64N32", SubArchitectures: []string{"SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"}},
		{Architecture: "SCMP_ARCH_S390X", SubArchitectures: []string{"SCMP_ARCH_S390"}},
		{Architecture: "SCMP_ARCH_RISCV64"},
	}
}

// dockerPersonalities are the personalities Docker's profile lets a
// process set: Linux's own, with 32-bit uname, with a 2.6 version in
// uname, both; and 0xffffffff, which only reads the current one.
var dockerPersonalities = []uint64{0x0, 0x8, 0x20000, 0x20008, 0xffffffff}

// personalityRules allows personality for the values given: one rule each,
// since one rule's tests must all hold.
func personalityRules(values []uint64) []SeccompRule {
	var rules []SeccompRule
	for _, v := range values {
		rules = append(rules, SeccompRule{
			Names:  []string{"personality"},
			Action: ActAllow,
			Args:   []SeccompArg{{Index: 0, Value: v, Op: OpEqualTo}},
		})
	}
	return rules
}

// archRules allows the calls only some architectures have; withLDT adds
// x86's modify_ldt.
func archRules(withLDT bool) []SeccompRule {
	rules := []SeccompRule{
		{
			Names:    []string{"sync_file_range2", "swapcontext"},
			Action:   ActAllow,
			Includes: &SeccompFilter{Arches: []string{"ppc64le"}},
		},
		{
			Names:    []string{"arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"},
			Action:   ActAllow,
			Includes: &SeccompFilter{Arches: []string{"arm", "arm64"}},
		},
		{
			Names:    []string{"arch_prctl"},
			Action:   ActAllow,
			Includes: &SeccompFilter{Arches: []string{"amd64", "x32"}},
		},
		{
			Names:    []string{"s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"},
			Action:   ActAllow,
			Includes: &SeccompFilter{Arches: []string{"s390", "s390x"}},
		},
		{
			Names:    []string{"riscv_flush_icache"},
			Action:   ActAllow,
			Includes: &SeccompFilter{Arches: []string{"riscv64"}},
		},
	}
	if withLDT {
		rules = append(rules, SeccompRule{
			Names:    []string{"modify_ldt"},
			Action:   ActAllow,
			Includes: &SeccompFilter{Arches: []string{"amd64", "x32", "x86"}},
		})
	}
	return rules
}

// capabilityRules allows what a capability governs to a process holding it.
func capabilityRules() []SeccompRule {
	group := func(capability string, names ...string) SeccompRule {
		return SeccompRule{
			Names:    names,
			Action:   ActAllow,
			Includes: &SeccompFilter{Caps: []string{capability}},
		}
	}
	return []SeccompRule{
		group("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
		group("CAP_SYS_ADMIN", "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount",
			"fsopen", "fspick", "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree",
			"perf_event_open", "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns",
			"syslog", "umount", "umount2", "unshare"),
		group("CAP_SYS_BOOT", "reboot"),
		group("CAP_SYS_CHROOT", "chroot"),
		group("CAP_SYS_MODULE", "delete_module", "init_module", "finit_module"),
		group("CAP_SYS_PACCT", "acct"),
		group("CAP_SYS_PTRACE", "kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
			"process_vm_writev", "ptrace"),
		group("CAP_SYS_RAWIO", "iopl", "ioperm"),
		group("CAP_SYS_TIME", "settimeofday", "stime", "clock_settime", "clock_settime64"),
		group("CAP_SYS_TTY_CONFIG", "vhangup"),
		group("CAP_SYS_NICE", "get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
		group("CAP_SYSLOG", "syslog"),
		group("CAP_BPF", "bpf"),
		group("CAP_PERFMON", "perf_event_open"),
	}
}

// cloneNamespaces are clone's flags that make namespaces. CLONE_NEWTIME
// is not among them: its bit is part of clone's exit signal, so only
// clone3 and unshare can ask for it.
const cloneNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
	unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// cloneRules lets clone make processes and threads but no namespaces, and
// makes clone3, whose flags are in memory where a filter cannot see them,
// answer ENOSYS so that C libraries fall back to clone. With
// unlessSysAdmin, a process holding CAP_SYS_ADMIN is exempt (the
// capability rules allow it both calls outright).
func cloneRules(unlessSysAdmin bool) []SeccompRule {
	excludes := func(arches ...string) *SeccompFilter {
		if !unlessSysAdmin && arches == nil {
			return nil
		}
		f := &SeccompFilter{Arches: arches}
		if unlessSysAdmin {
			f.Caps = []string{"CAP_SYS_ADMIN"}
		}
		return f
	}
	return []SeccompRule{
		{
			Names:    []string{"clone"},
			Action:   ActAllow,
			Args:     []SeccompArg{{Index: 0, Value: cloneNamespaces, Op: OpMaskedEqual}},
			Excludes: excludes("s390", "s390x"),
		},
		{
			Names:    []string{"clone"},
			Action:   ActAllow,
			Args:     []SeccompArg{{Index: 1, Value: cloneNamespaces, Op: OpMaskedEqual}},
			Comment:  "s390 passes clone's flags second",
			Includes: &SeccompFilter{Arches: []string{"s390", "s390x"}},
			Excludes: excludes(),
		},
		{
			Names:    []string{"clone3"},
			Action:   ActErrno,
			ErrnoRet: errno(unix.ENOSYS),
			Excludes: excludes(),
		},
	}
}

// allowedSyscalls are the calls Docker's default profile allows every
// process, on every architecture that has them, and uretprobe.
var allowedSyscalls = []string{
	"accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
	"capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
	"clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
	"clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect",
	"copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
	"epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old",
	"eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2",
	"fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat",
	"fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr",
	"flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64",
	"fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_requeue",
	"futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd",
	"getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid",
	"getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp",
	"getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
	"getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname",
	"getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr",
	"inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel",
	"ioctl", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get",
	"ioprio_set", "io_setup", "io_submit", "ipc", "kill", "landlock_add_rule",
	"landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32", "lgetxattr",
	"link", "linkat", "listen", "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek",
	"lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier",
	"memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock",
	"mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
	"mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
	"mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
	"munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open",
	"openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
	"pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
	"pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
	"pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
	"readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
	"remap_file_pages", "removexattr", "rename", "renameat", "renameat2", "restart_syscall",
	"rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
	"rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
	"rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam",
	"sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
	"sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
	"sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
	"semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile",
	"sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid",
	"setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
	"setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
	"setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
	"setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr",
	"shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4",
	"sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat", "stat64", "statfs",
	"statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo",
	"tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun",
	"timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
	"timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times",
	"tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat",
	"uretprobe", "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice",
	"wait4", "waitid", "waitpid", "write", "writev",
}
