// probe makes system calls and says how each went, to test seccomp filters
// and sandboxes from the inside. Every call is made with arguments that
// make it fail or do nothing even when a filter lets it through and the
// caller is root with every capability: nothing is mounted, loaded,
// rebooted, or set on the host.
//
// Build it static, so that it runs in any root filesystem:
//
//	gcc -static -O2 -o probe security/testdata/probe.c
//
// Usage:
//
//	probe [-f FILTER] PROBE[=ARG]...   make each call; print "PROBE RESULT"
//	probe [-f FILTER] -e PROG [ARG]... exec PROG
//	probe -l                           list the probes
//
// RESULT is OK or the name of the errno the call failed with (EPERM,
// ENOSYS, ...; E<number> for names it does not know). With -f, the program
// in FILTER (an array of struct sock_filter, as security.SeccompProfile's
// Compile returns) is loaded first, after setting no_new_privs. A call a
// filter kills the process for ends the output early.
//
// ARG is a path for the probes on files, a pid for ptrace, a number for
// personality and nr (which makes system call ARG with zero arguments:
// give it only numbers no system call has).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOWHERE "/berth-probe-nonexistent"
#define NO_PID 0x3ffffff0 // above PID_MAX_LIMIT, so no process has it

static long arg_long(const char *arg, long def) {
	return arg ? strtol(arg, NULL, 0) : def;
}

static long p_getpid(const char *arg) { return syscall(SYS_getpid); }

static long p_open(const char *arg) {
	long fd = syscall(SYS_openat, AT_FDCWD, arg ? arg : "/", O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		close(fd);
	return fd;
}

static long p_mkdir(const char *arg) {
	const char *path = arg ? arg : "berth-probe-dir";
	long r = syscall(SYS_mkdirat, AT_FDCWD, path, 0700);
	if (r == 0)
		rmdir(path);
	return r;
}

#ifdef SYS_fchmodat2
#define NR_fchmodat2 SYS_fchmodat2
#else
#define NR_fchmodat2 452
#endif
// fchmodat2 cannot change a symbolic link's mode: EOPNOTSUPP if let
// through.
static long p_fchmodat2(const char *arg) {
	return syscall(NR_fchmodat2, AT_FDCWD, arg ? arg : "/proc/self/exe", 0755, AT_SYMLINK_NOFOLLOW);
}

static long sock(int family, int type) {
	long fd = syscall(SYS_socket, family, type | SOCK_CLOEXEC, 0);
	if (fd >= 0)
		close(fd);
	return fd;
}
static long p_socket_unix(const char *arg) { return sock(AF_UNIX, SOCK_STREAM); }
static long p_socket_inet(const char *arg) { return sock(AF_INET, SOCK_STREAM); }
static long p_socket_inet6(const char *arg) { return sock(AF_INET6, SOCK_STREAM); }
static long p_socket_netlink(const char *arg) { return sock(AF_NETLINK, SOCK_RAW); }
static long p_socket_packet(const char *arg) { return sock(AF_PACKET, SOCK_DGRAM); }
static long p_socket_vsock(const char *arg) { return sock(40 /* AF_VSOCK */, SOCK_STREAM); }

// clone as fork does, with flags added; the child exits at once.
static long do_clone(unsigned long flags) {
	long pid;
#if defined(__s390__) || defined(__s390x__)
	pid = syscall(SYS_clone, 0, flags | SIGCHLD, 0, 0, 0);
#else
	pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
#endif
	if (pid == 0)
		syscall(SYS_exit_group, 0);
	if (pid > 0) {
		int saved = errno;
		waitpid(pid, NULL, 0);
		errno = saved;
		return 0;
	}
	return pid;
}
static long p_clone(const char *arg) { return do_clone(0); }
static long p_clone_newuts(const char *arg) { return do_clone(CLONE_NEWUTS); }
static long p_clone_newuser(const char *arg) { return do_clone(CLONE_NEWUSER); }

#ifdef SYS_clone3
#define NR_clone3 SYS_clone3
#else
#define NR_clone3 435
#endif
// A zero size is refused before anything is made: EINVAL if let through.
static long p_clone3(const char *arg) { return syscall(NR_clone3, NULL, 0); }

static long p_unshare(const char *arg) { return syscall(SYS_unshare, arg_long(arg, CLONE_NEWUTS)); }
static long p_setns(const char *arg) { return syscall(SYS_setns, -1, 0); }
static long p_mount(const char *arg) {
	return syscall(SYS_mount, "berth-probe", NOWHERE, "berth-probe-fs", 0, NULL);
}
static long p_umount2(const char *arg) { return syscall(SYS_umount2, NOWHERE, 0); }
static long p_pivot_root(const char *arg) { return syscall(SYS_pivot_root, NOWHERE, NOWHERE); }
static long p_chroot(const char *arg) { return syscall(SYS_chroot, NOWHERE); }
static long p_acct(const char *arg) { return syscall(SYS_acct, NOWHERE); }
static long p_swapon(const char *arg) { return syscall(SYS_swapon, NOWHERE, 0); }
static long p_swapoff(const char *arg) { return syscall(SYS_swapoff, NOWHERE); }

// An unknown command.
static long p_keyctl(const char *arg) { return syscall(SYS_keyctl, 0x7fff, 0, 0, 0, 0); }
// No keyring 0 and no payload: EINVAL.
static long p_add_key(const char *arg) { return syscall(SYS_add_key, "user", "berth-probe", NULL, 0, 0); }
// No callout, so nothing is run to find the key: ENOKEY.
static long p_request_key(const char *arg) {
	return syscall(SYS_request_key, "user", "berth-probe-nonexistent", NULL, 0);
}

static long p_bpf(const char *arg) { return syscall(SYS_bpf, 5 /* BPF_PROG_LOAD */, NULL, 0); }
static long p_perf_event_open(const char *arg) { return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0); }
// PTRACE_SEIZE neither stops the tracee nor outlives the tracer.
static long p_ptrace(const char *arg) { return syscall(SYS_ptrace, 0x4206 /* PTRACE_SEIZE */, arg_long(arg, NO_PID), 0, 0); }
static long p_process_vm_readv(const char *arg) {
	char buf[1];
	struct iovec iov = {buf, sizeof buf};
	return syscall(SYS_process_vm_readv, arg_long(arg, NO_PID), &iov, 1, &iov, 1, 0);
}
static long p_open_by_handle_at(const char *arg) { return syscall(SYS_open_by_handle_at, -1, NULL, 0); }

// Undefined flags: EINVAL before anything is loaded or unloaded.
static long p_kexec_load(const char *arg) { return syscall(SYS_kexec_load, 0, 0, NULL, 0x8000); }
#ifdef SYS_kexec_file_load
static long p_kexec_file_load(const char *arg) {
	return syscall(SYS_kexec_file_load, -1, -1, 0, NULL, 0x80000000UL);
}
#endif
// An empty image: ENOEXEC.
static long p_init_module(const char *arg) { return syscall(SYS_init_module, NULL, 0, ""); }
static long p_finit_module(const char *arg) { return syscall(SYS_finit_module, -1, "", 0); }
static long p_delete_module(const char *arg) {
	return syscall(SYS_delete_module, "berth_probe_nonexistent", O_NONBLOCK);
}
// Wrong magic numbers and an unknown command: EINVAL, whoever asks.
static long p_reboot(const char *arg) { return syscall(SYS_reboot, 0xdead, 0xbeef, 0xbadc0de, NULL); }

// With neither time nor zone, settimeofday checks the capability and does
// nothing.
static long p_settimeofday(const char *arg) { return syscall(SYS_settimeofday, NULL, NULL); }
// No such clock: EINVAL.
static long p_clock_settime(const char *arg) {
	struct timespec ts = {0, 0};
	return syscall(SYS_clock_settime, 0x7fff, &ts);
}
// Longer than a host name may be: EINVAL.
static long p_sethostname(const char *arg) {
	static const char name[128];
	return syscall(SYS_sethostname, name, sizeof name);
}
// Reads the size of the kernel's log buffer.
static long p_syslog(const char *arg) { return syscall(SYS_syslog, 10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0); }

#ifdef SYS_iopl
static long p_iopl(const char *arg) { return syscall(SYS_iopl, 4); }           // no level 4: EINVAL
static long p_ioperm(const char *arg) { return syscall(SYS_ioperm, 0x10000, 1, 0); } // past the ports: EINVAL
#endif
#ifdef SYS_modify_ldt
static long p_modify_ldt(const char *arg) { return syscall(SYS_modify_ldt, 0, NULL, 0); } // reads nothing
#endif

static long p_personality(const char *arg) {
	return syscall(SYS_personality, arg_long(arg, 0xffffffff)) < 0 ? -1 : 0;
}
static long p_userfaultfd(const char *arg) {
	// arg adds flags: 1 is UFFD_USER_MODE_ONLY, which needs no capability.
	long fd = syscall(SYS_userfaultfd, O_CLOEXEC | arg_long(arg, 0));
	if (fd >= 0)
		close(fd);
	return fd;
}
#ifdef SYS_io_uring_setup
static long p_io_uring_setup(const char *arg) { return syscall(SYS_io_uring_setup, 0, NULL); }
#endif
static long p_nr(const char *arg) { return syscall(arg_long(arg, -1), 0, 0, 0, 0, 0, 0); }

static const struct probe {
	const char *name;
	long (*fn)(const char *arg);
} probes[] = {
	{"getpid", p_getpid},
	{"open", p_open},
	{"mkdir", p_mkdir},
	{"fchmodat2", p_fchmodat2},
	{"socket-unix", p_socket_unix},
	{"socket-inet", p_socket_inet},
	{"socket-inet6", p_socket_inet6},
	{"socket-netlink", p_socket_netlink},
	{"socket-packet", p_socket_packet},
	{"socket-vsock", p_socket_vsock},
	{"clone", p_clone},
	{"clone-newuts", p_clone_newuts},
	{"clone-newuser", p_clone_newuser},
	{"clone3", p_clone3},
	{"unshare", p_unshare},
	{"setns", p_setns},
	{"mount", p_mount},
	{"umount2", p_umount2},
	{"pivot_root", p_pivot_root},
	{"chroot", p_chroot},
	{"acct", p_acct},
	{"swapon", p_swapon},
	{"swapoff", p_swapoff},
	{"keyctl", p_keyctl},
	{"add_key", p_add_key},
	{"request_key", p_request_key},
	{"bpf", p_bpf},
	{"perf_event_open", p_perf_event_open},
	{"ptrace", p_ptrace},
	{"process_vm_readv", p_process_vm_readv},
	{"open_by_handle_at", p_open_by_handle_at},
	{"kexec_load", p_kexec_load},
#ifdef SYS_kexec_file_load
	{"kexec_file_load", p_kexec_file_load},
#endif
	{"init_module", p_init_module},
	{"finit_module", p_finit_module},
	{"delete_module", p_delete_module},
	{"reboot", p_reboot},
	{"settimeofday", p_settimeofday},
	{"clock_settime", p_clock_settime},
	{"sethostname", p_sethostname},
	{"syslog", p_syslog},
#ifdef SYS_iopl
	{"iopl", p_iopl},
	{"ioperm", p_ioperm},
#endif
#ifdef SYS_modify_ldt
	{"modify_ldt", p_modify_ldt},
#endif
	{"personality", p_personality},
	{"userfaultfd", p_userfaultfd},
#ifdef SYS_io_uring_setup
	{"io_uring_setup", p_io_uring_setup},
#endif
	{"nr", p_nr},
};

static const struct {
	int errno_;
	const char *name;
} errnames[] = {
	{EPERM, "EPERM"}, {ENOENT, "ENOENT"}, {ESRCH, "ESRCH"}, {EINTR, "EINTR"},
	{EIO, "EIO"}, {ENXIO, "ENXIO"}, {E2BIG, "E2BIG"}, {ENOEXEC, "ENOEXEC"},
	{EBADF, "EBADF"}, {ECHILD, "ECHILD"}, {EAGAIN, "EAGAIN"}, {ENOMEM, "ENOMEM"},
	{EACCES, "EACCES"}, {EFAULT, "EFAULT"}, {EBUSY, "EBUSY"}, {EEXIST, "EEXIST"},
	{ENODEV, "ENODEV"}, {ENOTDIR, "ENOTDIR"}, {EISDIR, "EISDIR"}, {EINVAL, "EINVAL"},
	{EMFILE, "EMFILE"}, {ENOTTY, "ENOTTY"}, {ENOSPC, "ENOSPC"}, {EROFS, "EROFS"},
	{ERANGE, "ERANGE"}, {ENAMETOOLONG, "ENAMETOOLONG"}, {ENOSYS, "ENOSYS"},
	{ENOTEMPTY, "ENOTEMPTY"}, {ELOOP, "ELOOP"}, {ENOKEY, "ENOKEY"},
	{EOPNOTSUPP, "EOPNOTSUPP"}, {EAFNOSUPPORT, "EAFNOSUPPORT"},
	{EPROTONOSUPPORT, "EPROTONOSUPPORT"}, {ESOCKTNOSUPPORT, "ESOCKTNOSUPPORT"},
	{EKEYREJECTED, "EKEYREJECTED"}, {EUSERS, "EUSERS"},
};

static void report(const char *name, long r, int err) {
	if (r >= 0) {
		printf("%s OK\n", name);
		return;
	}
	for (size_t i = 0; i < sizeof errnames / sizeof errnames[0]; i++) {
		if (errnames[i].errno_ == err) {
			printf("%s %s\n", name, errnames[i].name);
			return;
		}
	}
	printf("%s E%d\n", name, err);
}

static int load_filter(const char *path) {
	FILE *f = fopen(path, "rb");
	if (!f) {
		perror(path);
		return -1;
	}
	static struct sock_filter prog[4096];
	size_t n = fread(prog, sizeof prog[0], sizeof prog / sizeof prog[0], f);
	fclose(f);
	if (n == 0) {
		fprintf(stderr, "%s: no program\n", path);
		return -1;
	}
	struct sock_fprog fprog = {.len = (unsigned short)n, .filter = prog};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		perror("no_new_privs");
		return -1;
	}
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) < 0) {
		perror("seccomp");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	int i = 1;
	if (i < argc && strcmp(argv[i], "-l") == 0) {
		for (size_t j = 0; j < sizeof probes / sizeof probes[0]; j++)
			printf("%s\n", probes[j].name);
		return 0;
	}
	if (i + 1 < argc && strcmp(argv[i], "-f") == 0) {
		if (load_filter(argv[i + 1]) < 0)
			return 2;
		i += 2;
	}
	if (i + 1 < argc && strcmp(argv[i], "-e") == 0) {
		execv(argv[i + 1], argv + i + 1);
		perror(argv[i + 1]);
		return 127;
	}
	for (; i < argc; i++) {
		char name[64];
		const char *arg = NULL, *eq = strchr(argv[i], '=');
		size_t len = eq ? (size_t)(eq - argv[i]) : strlen(argv[i]);
		if (len >= sizeof name)
			len = sizeof name - 1;
		memcpy(name, argv[i], len);
		name[len] = 0;
		if (eq)
			arg = eq + 1;
		const struct probe *p = NULL;
		for (size_t j = 0; j < sizeof probes / sizeof probes[0]; j++)
			if (strcmp(probes[j].name, name) == 0)
				p = &probes[j];
		if (!p) {
			fprintf(stderr, "probe: unknown probe %s\n", name);
			return 2;
		}
		errno = 0;
		long r = p->fn(arg);
		report(argv[i], r, errno);
	}
	return 0;
}
