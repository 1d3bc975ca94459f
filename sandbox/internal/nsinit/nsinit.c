// The sandbox's first process. The host starts its own executable again,
// already in fresh namespaces, with _BERTH_INIT in the environment; this
// constructor runs before the Go runtime does, sets the sandbox up from the
// spec on fd 3, starts the workload and stays behind as PID 1, reaping
// zombies and forwarding signals. The Go runtime never starts in it, so an
// idle sandbox costs the host a few hundred KiB rather than a Go heap.
//
// Exec mode (_BERTH_INIT=exec) joins the namespaces of a running sandbox
// instead, through a pidfd on its PID 1, and runs one more process there.
//
// Standby mode (_BERTH_INIT=standby) is an init built ahead of its
// workload, for a pool: it sets the sandbox up from a first message and
// forks the workload's process, which does what it can ahead (bounding
// set, seccomp filter), reports "P", and execs the workload once a second
// message names it.
//
// Protocol. Spec, on fd 3: records of a 2-byte tag, a 4-byte length and
// that many bytes, to EOF; in standby mode fd 3 is a socket and each of the
// two messages is a 4-byte length and its records, the second carrying the
// workload's descriptors (spec.h says which). A spec, or a message, is at
// most SPEC_MAX_BYTES. Status, on fd 4: lines "R" (the workload has
// been exec'd), "X <code>" or "S <signal>" (it ended), or "E <errno>
// <message>" (setting up failed; nothing was started).

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/magic.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#ifndef MOUNT_ATTR_RDONLY // glibc before 2.36
#include <linux/mount.h>
#endif
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "spec.h"
#include "supervise.h"

#define SPEC_FD 3
#define STATUS_FD 4
#define CONSOLE_FD 5 // init with a terminal: a socket to send its master on

// ---- failure reporting ----------------------------------------------------

static int status_fd = STATUS_FD;

// exec_mode is set in a process that joins a running sandbox.
static int exec_mode;

static void write_all(int fd, const char *buf, size_t n) {
	while (n > 0) {
		ssize_t w = write(fd, buf, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		buf += w;
		n -= (size_t)w;
	}
}

static void status(const char *fmt, ...) {
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	write_all(status_fd, buf, (size_t)n);
}

// report sends a failure line of the given kind to the host: the errno
// apart, so the host can wrap it, and the message on one line.
static void report(char kind, int err, const char *fmt, va_list ap) {
	char msg[400];
	vsnprintf(msg, sizeof msg, fmt, ap);
	for (char *p = msg; *p; p++)
		if (*p == '\n')
			*p = ' ';
	status("%c %d %s", kind, err, msg);
}

// die reports a setup failure and exits: nothing of the workload ran.
__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...) {
	int err = errno;
	va_list ap;
	va_start(ap, fmt);
	report('E', err, fmt, ap);
	va_end(ap);
	_exit(126);
}

// exec_failed reports that the workload's program could not be run: a
// missing or unrunnable command, which callers treat apart from a broken
// sandbox.
__attribute__((noreturn, format(printf, 1, 2))) static void exec_failed(const char *fmt, ...) {
	int err = errno;
	va_list ap;
	va_start(ap, fmt);
	report('C', err, fmt, ap);
	va_end(ap);
	_exit(127);
}

// ---- the spec ---------------------------------------------------------------

struct mountspec {
	const char *source, *target, *fstype, *data;
	unsigned long flags;
	int kind;
	int source_fd; // a bind's source as a detached mount tree, or -1
};

// A device node to add to /dev (TAG_DEVICE).
struct devspec {
	const char *path, *source; // path is under /dev; source is the host's node
	mode_t type, mode;         // S_IFCHR or S_IFBLK; permission bits
	unsigned int major, minor;
	uid_t uid;
	gid_t gid;
	int bind; // bind source rather than mknod
};

struct spec {
	char *buf; // the records, which the strings below point into
	const char *rootfs, *hostname, *cwd, *path;
	char **argv, **envp;
	int argc, envc;
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	int ngroups;
	struct mountspec *mounts;
	int nmounts;
	const char **masked, **readonly_paths;
	int nmasked, nreadonly;
	int readonly_root, no_new_privs, tty, loopback, bind_devices, unshare_cgroup;
	uint64_t caps[5];  // bounding, effective, permitted, inheritable, ambient
	int have_caps;
	struct sock_fprog seccomp;
	unsigned int seccomp_flags;
	struct rlimit rlimits[RLIM_NLIMITS];
	int rlimit_set[RLIM_NLIMITS];
	int oom_score_adj, have_oom_score_adj;
	int target_pidfd;  // exec mode
	int tty_slave;     // the terminal made in the sandbox's devpts, or -1
	unsigned short tty_rows, tty_cols; // its size, if set
	int netns_fd;      // a network namespace to join, or -1
	uint64_t landlock; // Landlock file rights to confine to "/", or 0
	int extra_files;   // descriptors from fd 6 to pass as 3, 4, ...
	struct filewrite {
		const char *path, *data;
	} *writes;         // written just before exec
	int nwrites;
	int namespaces;    // exec mode: CLONE_NEW* to join
	uint64_t bounding; // standby: the bounding set, dropped to ahead of the workload
	int have_bounding;
	int *cgroup_fds;   // files to write "0" to, to join the sandbox's cgroups
	int ncgroup_fds;
	struct filewrite *sysctls; // paths under /proc/sys, written after /proc is mounted
	int nsysctls;
	struct devspec *devices; // nodes added to /dev
	int ndevices;
	int late_mounts; // standby: the request's mounts follow the workload's message
};

// read_all reads the spec to EOF. The buffer grows as needed, to one byte
// more than the host may send: a spec as large as that is refused.
static char *read_all(int fd, size_t *len) {
	size_t cap = 16384, n = 0;
	char *buf = malloc(cap);
	if (!buf)
		die("read spec: out of memory");
	for (;;) {
		if (n > SPEC_MAX_BYTES) {
			errno = E2BIG;
			die("read spec: more than %d bytes", SPEC_MAX_BYTES);
		}
		if (n == cap) {
			cap = cap * 2 > SPEC_MAX_BYTES ? (size_t)SPEC_MAX_BYTES + 1 : cap * 2;
			buf = realloc(buf, cap);
			if (!buf)
				die("read spec: out of memory");
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			die("read spec");
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	*len = n;
	return buf;
}

// num reads a decimal number of at most max. strtoull alone would take
// "-1" for its largest value, and leading spaces.
static unsigned long long num_max(const char *s, const char *what, unsigned long long max) {
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (*s < '0' || *s > '9' || errno || *end || v > max) {
		errno = EINVAL;
		die("spec: bad %s '%.40s'", what, s);
	}
	return v;
}

static unsigned long long num(const char *s, const char *what) {
	return num_max(s, what, ULLONG_MAX);
}

// id reads a user or group ID. (uid_t)-1 is refused: to setresuid and its
// kin it means "leave unchanged", which would leave the workload root.
static unsigned int id(const char *s, const char *what) {
	return (unsigned int)num_max(s, what, UINT_MAX - 1);
}

// fdnum reads a descriptor number.
static int fdnum(const char *s, const char *what) {
	return (int)num_max(s, what, INT_MAX);
}

// fields splits a record of NUL-terminated strings.
static int fields(char *p, uint32_t len, char **out, int max) {
	int n = 0;
	char *end = p + len;
	while (p < end && n < max) {
		out[n++] = p;
		p += strlen(p) + 1;
	}
	return n;
}

// capacity is the number of elements PUSH allocates for n: a power of
// two, so that an array grows in amortised constant time per element even
// to the hundreds of thousands of strings execve(2) takes.
static size_t capacity(size_t n) {
	size_t c = 4;
	while (c < n)
		c *= 2;
	return c;
}

// PUSH appends to a growing array and keeps a zeroed element after the
// last, so that argv and envp end in NULL. The count stays far below
// INT_MAX: every element takes a record of at least 7 bytes of a spec
// of at most SPEC_MAX_BYTES.
#define PUSH(arr, count, val)                                                         \
	do {                                                                          \
		size_t need_ = (size_t)(count) + 2;                                   \
		if (!(arr) || capacity(need_) != capacity(need_ - 1)) {               \
			arr = realloc(arr, sizeof(*arr) * capacity(need_));           \
			if (!arr)                                                     \
				die("spec: out of memory");                           \
		}                                                                     \
		arr[(count)++] = (val);                                               \
		memset(&arr[(count)], 0, sizeof(*arr));                               \
	} while (0)

static void init_spec(struct spec *s) {
	memset(s, 0, sizeof *s);
	s->target_pidfd = -1;
	s->tty_slave = -1;
	s->netns_fd = -1;
}

// parse_spec adds buf's records to s: a standby init parses two messages
// into one spec.
static void parse_spec(struct spec *s, char *buf, size_t len) {
	size_t off = 0;
	while (off + 6 <= len) {
		uint16_t tag;
		uint32_t n;
		memcpy(&tag, buf + off, 2);
		memcpy(&n, buf + off + 2, 4);
		off += 6;
		if (n > len - off) {
			errno = EINVAL;
			die("spec: record %d overruns the spec", tag);
		}
		char *v = buf + off;
		off += n;
		// Every string record is sent NUL-terminated; check, so that a
		// bad spec cannot make the parser read past it.
		if (tag != TAG_SECCOMP && (n == 0 || v[n - 1] != 0)) {
			errno = EINVAL;
			die("spec: record %d is not terminated", tag);
		}
		char *f[6];
		switch (tag) {
		case TAG_ROOTFS: s->rootfs = v; break;
		case TAG_HOSTNAME: s->hostname = v; break;
		case TAG_CWD: s->cwd = v; break;
		case TAG_PATH: s->path = v; break;
		case TAG_ARG: PUSH(s->argv, s->argc, v); break;
		case TAG_ENV: PUSH(s->envp, s->envc, v); break;
		case TAG_UID: s->uid = (uid_t)id(v, "uid"); break;
		case TAG_GID: s->gid = (gid_t)id(v, "gid"); break;
		case TAG_GROUP: PUSH(s->groups, s->ngroups, (gid_t)id(v, "group")); break;
		case TAG_MASK: PUSH(s->masked, s->nmasked, v); break;
		case TAG_READONLY_PATH: PUSH(s->readonly_paths, s->nreadonly, v); break;
		case TAG_READONLY_ROOT: s->readonly_root = 1; break;
		case TAG_NO_NEW_PRIVS: s->no_new_privs = 1; break;
		case TAG_TTY: s->tty = 1; break;
		case TAG_LOOPBACK: s->loopback = 1; break;
		case TAG_BIND_DEVICES: s->bind_devices = 1; break;
		case TAG_UNSHARE_CGROUP: s->unshare_cgroup = 1; break;
		case TAG_LATE_MOUNTS: s->late_mounts = 1; break;
		case TAG_PIDFD: s->target_pidfd = fdnum(v, "pidfd"); break;
		case TAG_LANDLOCK: s->landlock = num(v, "landlock rights"); break;
		case TAG_SECCOMP_FLAGS: s->seccomp_flags = (unsigned int)num_max(v, "seccomp flags", UINT_MAX); break;
		case TAG_NETNS_FD: s->netns_fd = fdnum(v, "netns fd"); break;
		case TAG_CGROUP_FD: PUSH(s->cgroup_fds, s->ncgroup_fds, fdnum(v, "cgroup fd")); break;
		case TAG_BOUNDING:
			s->bounding = num(v, "bounding set");
			s->have_bounding = 1;
			break;
		// fd 6 and up, with room to move the status pipe above them.
		case TAG_EXTRA_FILES: s->extra_files = (int)num_max(v, "extra files", INT_MAX - 16); break;
		case TAG_EXEC_WRITE: {
			if (fields(v, n, f, 2) != 2) {
				errno = EINVAL;
				die("spec: exec write needs a path and data");
			}
			struct filewrite w = {.path = f[0], .data = f[1]};
			PUSH(s->writes, s->nwrites, w);
			break;
		}
		case TAG_SYSCTL: {
			if (fields(v, n, f, 2) != 2) {
				errno = EINVAL;
				die("spec: sysctl needs a path and a value");
			}
			struct filewrite w = {.path = f[0], .data = f[1]};
			PUSH(s->sysctls, s->nsysctls, w);
			break;
		}
		case TAG_NAMESPACES: s->namespaces = (int)num_max(v, "namespaces", INT_MAX); break;
		case TAG_OOM_SCORE_ADJ: {
			// -1000 to 1000, sent as signed decimal.
			int neg = v[0] == '-';
			s->oom_score_adj = (int)num_max(v + neg, "oom_score_adj", 1000) * (neg ? -1 : 1);
			s->have_oom_score_adj = 1;
			break;
		}
		case TAG_CAPS:
			if (fields(v, n, f, 5) != 5) {
				errno = EINVAL;
				die("spec: capabilities need 5 sets");
			}
			for (int i = 0; i < 5; i++)
				s->caps[i] = num(f[i], "capability set");
			s->have_caps = 1;
			break;
		case TAG_TTY_SIZE: {
			if (fields(v, n, f, 2) != 2) {
				errno = EINVAL;
				die("spec: terminal size needs 2 fields");
			}
			s->tty_rows = (unsigned short)num_max(f[0], "terminal rows", USHRT_MAX);
			s->tty_cols = (unsigned short)num_max(f[1], "terminal columns", USHRT_MAX);
			break;
		}
		case TAG_RLIMIT: {
			if (fields(v, n, f, 3) != 3) {
				errno = EINVAL;
				die("spec: rlimit needs 3 fields");
			}
			unsigned long long r = num(f[0], "rlimit");
			if (r >= RLIM_NLIMITS) {
				errno = EINVAL;
				die("spec: rlimit %llu", r);
			}
			s->rlimits[r].rlim_cur = (rlim_t)num(f[1], "rlimit soft");
			s->rlimits[r].rlim_max = (rlim_t)num(f[2], "rlimit hard");
			s->rlimit_set[r] = 1;
			break;
		}
		case TAG_MOUNT: {
			if (fields(v, n, f, 6) != 6) {
				errno = EINVAL;
				die("spec: mount needs 6 fields");
			}
			struct mountspec m = {
			    .kind = (int)num_max(f[0], "mount kind", INT_MAX),
			    .source = f[1],
			    .target = f[2],
			    .fstype = f[3],
			    .flags = (unsigned long)num(f[4], "mount flags"),
			    .data = f[5],
			    .source_fd = -1,
			};
			PUSH(s->mounts, s->nmounts, m);
			break;
		}
		case TAG_MOUNT_SOURCE_FD:
			// Belongs to the bind mount just before it.
			if (s->nmounts == 0 || s->mounts[s->nmounts - 1].kind != MOUNT_BIND) {
				errno = EINVAL;
				die("spec: a mount source descriptor without its bind mount");
			}
			s->mounts[s->nmounts - 1].source_fd = fdnum(v, "mount source fd");
			break;
		case TAG_DEVICE: {
			char *d[9];
			if (fields(v, n, d, 9) != 9 || strncmp(d[0], "/dev/", 5) != 0 || (strcmp(d[2], "c") != 0 && strcmp(d[2], "b") != 0)) {
				errno = EINVAL;
				die("spec: bad device record");
			}
			struct devspec dev = {
			    .path = d[0],
			    .source = d[1],
			    .type = d[2][0] == 'c' ? S_IFCHR : S_IFBLK,
			    .major = (unsigned int)num_max(d[3], "device major", UINT_MAX),
			    .minor = (unsigned int)num_max(d[4], "device minor", UINT_MAX),
			    .mode = (mode_t)num(d[5], "device mode") & 0777,
			    .uid = (uid_t)id(d[6], "device uid"),
			    .gid = (gid_t)id(d[7], "device gid"),
			    .bind = strcmp(d[8], "1") == 0,
			};
			PUSH(s->devices, s->ndevices, dev);
			break;
		}
		case TAG_SECCOMP:
			// At most BPF_MAXINSNS instructions, which also keeps the
			// count within the unsigned short it is kept in.
			if (n % sizeof(struct sock_filter) != 0 || n == 0 || n / sizeof(struct sock_filter) > BPF_MAXINSNS) {
				errno = EINVAL;
				die("spec: seccomp program of %u bytes", n);
			}
			s->seccomp.len = (unsigned short)(n / sizeof(struct sock_filter));
			s->seccomp.filter = (struct sock_filter *)v;
			break;
		default:
			errno = EINVAL;
			die("spec: unknown record %d", tag);
		}
	}
	if (off != len) {
		errno = EINVAL;
		die("spec: %zu trailing bytes", len - off);
	}
}

static void need_command(struct spec *s) {
	if (s->argc == 0) {
		errno = EINVAL;
		die("spec: no command");
	}
}

// The seccomp program must be aligned for the kernel's struct; the spec
// buffer gives no such promise, so copy it.
static void align_seccomp(struct spec *s) {
	if (!s->seccomp.len)
		return;
	size_t n = s->seccomp.len * sizeof(struct sock_filter);
	struct sock_filter *p = malloc(n);
	if (!p)
		die("seccomp: out of memory");
	memcpy(p, s->seccomp.filter, n);
	s->seccomp.filter = p;
}

// ---- paths inside the rootfs ----------------------------------------------

static long openat2_(int dirfd, const char *path, int flags, unsigned long long resolve) {
	struct open_how how = {.flags = (uint64_t)flags, .resolve = resolve};
	return syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

// open_in_root opens path inside the rootfs as if the rootfs were "/": a
// symlink in the image can never lead a mount out of it. resolve adds
// RESOLVE_* flags: RESOLVE_NO_XDEV keeps the walk on the rootfs's own
// filesystem.
static int open_in_root_how(int rootfd, const char *path, int flags, unsigned long long resolve) {
	while (*path == '/')
		path++;
	if (!*path)
		path = ".";
	return (int)openat2_(rootfd, path, flags | O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | resolve);
}

static int open_in_root(int rootfd, const char *path, int flags) {
	return open_in_root_how(rootfd, path, flags, 0);
}

// target_failed reports a mount target that could not be reached. With
// RESOLVE_NO_XDEV, EXDEV means its path crosses into another mount.
__attribute__((noreturn)) static void target_failed(const char *what, const char *path, unsigned long long resolve) {
	if ((resolve & RESOLVE_NO_XDEV) && errno == EXDEV)
		die("mount target %s: leads out of the image's own filesystem, into another mount "
		    "(a pooled sandbox's own mounts go only into the image's directories)",
		    path);
	die("%s %s", what, path);
}

// make_in_root creates path's missing directories inside the rootfs, and
// the last component as a directory or (file set) an empty file, resolving
// each step with resolve's flags added.
static void make_in_root(int rootfd, const char *path, int file, unsigned long long resolve) {
	char buf[PATH_MAX];
	if (strlen(path) >= sizeof buf) {
		errno = ENAMETOOLONG;
		die("mount target %s", path);
	}
	strcpy(buf, path);
	char *p = buf;
	while (*p == '/')
		p++;
	for (;;) {
		char *slash = strchr(p, '/');
		int last = slash == NULL;
		if (slash)
			*slash = 0;
		int fd = open_in_root_how(rootfd, buf, O_PATH, resolve);
		if (fd >= 0) {
			close(fd);
		} else if (errno == ENOENT) {
			// Create it in its parent, itself found inside the root.
			char *base = strrchr(buf, '/');
			int pfd;
			if (base) {
				*base = 0;
				pfd = open_in_root_how(rootfd, buf, O_PATH | O_DIRECTORY, resolve);
				*base = '/';
				base++;
			} else {
				pfd = open_in_root_how(rootfd, ".", O_PATH | O_DIRECTORY, resolve);
				base = buf;
			}
			if (pfd < 0)
				target_failed("the parent of mount target", path, resolve);
			int r;
			if (last && file) {
				r = openat(pfd, base, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
				if (r >= 0)
					close(r);
			} else {
				r = mkdirat(pfd, base, 0755);
			}
			if (r < 0 && errno != EEXIST)
				die("create mount target %s", path);
			close(pfd);
		} else {
			target_failed("mount target", path, resolve);
		}
		if (last)
			return;
		*slash = '/';
		p = slash + 1;
	}
}

static void fdpath(char *buf, size_t n, int fd) {
	snprintf(buf, n, "/proc/self/fd/%d", fd);
}

// remount_bind changes the flags of a bind mount, keeping those it already
// has: a remount that dropped nosuid or nodev from a mount that has them
// would be refused.
static void remount_bind(const char *what, const char *where, unsigned long flags) {
	struct statvfs sv;
	if (statvfs(where, &sv) < 0)
		die("statvfs %s", what);
	static const struct {
		unsigned long st, ms;
	} keep[] = {
	    {ST_RDONLY, MS_RDONLY}, {ST_NOSUID, MS_NOSUID}, {ST_NODEV, MS_NODEV}, {ST_NOEXEC, MS_NOEXEC},
	    {ST_NOATIME, MS_NOATIME}, {ST_NODIRATIME, MS_NODIRATIME}, {ST_RELATIME, MS_RELATIME},
	};
	for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
		if (sv.f_flag & keep[i].st)
			flags |= keep[i].ms;
	if (mount(NULL, where, NULL, MS_BIND | MS_REMOUNT | flags, NULL) < 0)
		die("remount %s", what);
}

static void remount_ro(const char *what, const char *where, unsigned long flags) {
	remount_bind(what, where, MS_RDONLY | flags);
}

// clone_locked returns a detached copy of the mount tree of a bind's
// source, cloned from the sandbox's own mount namespace rather than the
// host's. The kernel locked every mount there when it copied the host's
// into a namespace of a user namespace of the sandbox's (MNT_LOCKED, and
// their flags): a copy keeps its submounts locked, so that a workload
// with CAP_SYS_ADMIN in its user namespace can neither unmount one, to
// see what the host hid below it, nor clear a flag the host gave it. The
// host's own copy (m->source_fd) was cloned in the host's namespace, where
// nothing is locked. The path is looked up without following symbolic
// links and must lead to the directory or file the host opened.
static int clone_locked(const struct mountspec *m) {
	int fd = (int)openat2_(AT_FDCWD, m->source, O_PATH | O_CLOEXEC, RESOLVE_NO_SYMLINKS);
	if (fd < 0)
		die("bind mount %s: the workload may hold CAP_SYS_ADMIN, so its source must be reachable "
		    "by its path from the sandbox's user namespace, which keeps the host's submounts locked",
		    m->source);
	struct stat want, got;
	if (fstat(m->source_fd, &want) < 0 || fstat(fd, &got) < 0)
		die("bind mount source %s", m->source);
	if (want.st_dev != got.st_dev || want.st_ino != got.st_ino) {
		errno = ESTALE;
		die("bind mount %s: its path leads elsewhere than when the host opened it", m->source);
	}
	int tree = (int)syscall(SYS_open_tree, fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
	if (tree < 0)
		die("bind mount %s: detached mount", m->source);
	close(fd);
	return tree;
}

// admin_possible reports whether the workload may hold CAP_SYS_ADMIN: its
// bounding set keeps it, or the spec keeps every capability.
static int admin_possible(const struct spec *s) {
	const uint64_t admin = 1ULL << CAP_SYS_ADMIN;
	if (s->have_bounding)
		return (s->bounding & admin) != 0;
	if (s->have_caps)
		return (s->caps[0] & admin) != 0;
	return 1;
}

// attach_tree mounts a bind's source that the host resolved and cloned
// into a detached mount tree, so that what it checked is what is mounted:
// no component of the path is looked up again. Flags go on every mount of
// the tree, the source's submounts too, and add to those each has; the
// tree becomes private, so that no mount event crosses between the host
// and the sandbox.
//
// With lock, the tree attached is cloned here instead, from the same
// directory reached by its path in the sandbox's mount namespace: see
// clone_locked.
static void attach_tree(const struct mountspec *m, int target, int lock) {
	const unsigned long known = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
	if (m->flags & ~known) {
		errno = EINVAL;
		die("bind mount %s: flags %#lx", m->source, m->flags & ~known);
	}
	int tree = m->source_fd;
	if (lock) {
		tree = clone_locked(m);
		close(m->source_fd);
	}
	struct mount_attr attr = {.propagation = MS_PRIVATE};
	if (m->flags & MS_RDONLY)
		attr.attr_set |= MOUNT_ATTR_RDONLY;
	if (m->flags & MS_NOSUID)
		attr.attr_set |= MOUNT_ATTR_NOSUID;
	if (m->flags & MS_NODEV)
		attr.attr_set |= MOUNT_ATTR_NODEV;
	if (m->flags & MS_NOEXEC)
		attr.attr_set |= MOUNT_ATTR_NOEXEC;
	if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
		die("set the flags of bind mount %s", m->source);
	if (syscall(SYS_move_mount, tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		die("bind mount %s on %s", m->source, m->target);
	close(tree);
}

static void do_mount(int rootfd, const struct mountspec *m, int lock) {
	int file = 0;
	if (m->kind == MOUNT_BIND) {
		struct stat st;
		if ((m->source_fd >= 0 ? fstat(m->source_fd, &st) : stat(m->source, &st)) < 0)
			die("bind mount source %s", m->source);
		file = !S_ISDIR(st.st_mode);
	}
	make_in_root(rootfd, m->target, file, 0);
	int fd = open_in_root(rootfd, m->target, O_PATH);
	if (fd < 0)
		die("mount target %s", m->target);
	char where[64];
	fdpath(where, sizeof where, fd);
	unsigned long flags = m->flags;
	switch (m->kind) {
	case MOUNT_BIND:
		if (m->source_fd >= 0) {
			attach_tree(m, fd, lock);
			break;
		}
		if (mount(m->source, where, NULL, MS_BIND | MS_REC, NULL) < 0)
			die("bind mount %s on %s", m->source, m->target);
		if (flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)) {
			// The descriptor names what was under the new mount; the
			// remount must name the mount itself.
			close(fd);
			fd = open_in_root(rootfd, m->target, O_PATH);
			if (fd < 0)
				die("mount target %s", m->target);
			fdpath(where, sizeof where, fd);
			remount_bind(m->target, where, flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC));
		}
		break;
	default:
		if (mount(m->source, where, m->fstype, flags, m->data[0] ? m->data : NULL) < 0)
			die("mount %s (%s) on %s", m->source, m->fstype, m->target);
	}
	close(fd);
}

// ---- a pooled sandbox's own mounts -------------------------------------------

// only_mounts checks that a request's mounts message holds TAG_MOUNT
// records and nothing else: the rest of a spec is no business of PID 1's
// once the sandbox is built.
static void only_mounts(const char *buf, size_t len) {
	for (size_t off = 0; off + 6 <= len;) {
		uint16_t tag;
		uint32_t n;
		memcpy(&tag, buf + off, 2);
		memcpy(&n, buf + off + 2, 4);
		off += 6;
		if (tag != TAG_MOUNT || n > len - off) {
			errno = EINVAL;
			die("spec: record %d among a request's mounts", tag);
		}
		off += n;
	}
}

// late_mounts makes a pooled sandbox's request's mounts, in PID 1, once
// the sandbox is built and pivoted into: each bind mount's source is the
// next of fds, a detached mount tree the host opened, and a tmpfs is made
// here. A target is resolved inside the sandbox's root without leaving
// the image's own filesystem (RESOLVE_NO_XDEV), as are the directories
// made for it: nothing goes into /proc, /sys, /dev, the etc files or the
// pool's own mounts, whatever links the image has, and nothing is made
// inside them on the way.
static void late_mounts(char *buf, size_t len, const int *fds, int nfds) {
	only_mounts(buf, len);
	struct spec late;
	init_spec(&late);
	parse_spec(&late, buf, len);
	int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	struct stat rst;
	if (root < 0 || fstat(root, &rst) < 0)
		die("open the sandbox's root");
	const unsigned long known = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
	int next = 0;
	for (int i = 0; i < late.nmounts; i++) {
		struct mountspec *m = &late.mounts[i];
		int file = 0;
		if (m->kind == MOUNT_BIND) {
			if (next == nfds) {
				errno = EINVAL;
				die("spec: bind mount on %s without its source", m->target);
			}
			m->source_fd = fds[next++];
			struct stat st;
			if (fstat(m->source_fd, &st) < 0)
				die("bind mount source %s", m->source);
			file = !S_ISDIR(st.st_mode);
		} else if (m->kind != MOUNT_FS || strcmp(m->fstype, "tmpfs") != 0 || (m->flags & ~known)) {
			errno = EINVAL;
			die("spec: a request's mount on %s: kind %d, type %s, flags %#lx", m->target, m->kind, m->fstype, m->flags);
		}
		make_in_root(root, m->target, file, RESOLVE_NO_XDEV);
		int fd = open_in_root_how(root, m->target, O_PATH, RESOLVE_NO_XDEV);
		if (fd < 0)
			target_failed("mount target", m->target, RESOLVE_NO_XDEV);
		struct stat tst;
		if (fstat(fd, &tst) < 0)
			die("mount target %s", m->target);
		if (tst.st_dev == rst.st_dev && tst.st_ino == rst.st_ino) {
			errno = EINVAL;
			die("mount target %s: the sandbox's root", m->target);
		}
		if (m->kind == MOUNT_BIND) {
			// Never cloned again here: a request's mounts are refused
			// with a user namespace, the only case where locking them
			// would keep anything from the workload.
			attach_tree(m, fd, 0);
		} else {
			char where[64];
			fdpath(where, sizeof where, fd);
			if (mount("tmpfs", where, "tmpfs", m->flags, m->data[0] ? m->data : NULL) < 0)
				die("mount tmpfs on %s", m->target);
		}
		close(fd);
	}
	if (next != nfds) {
		errno = EINVAL;
		die("spec: %d descriptors for %d bind mounts", nfds, next);
	}
	close(root);
	free(late.mounts);
}

struct devnode {
	const char *name;
	unsigned int major, minor;
};

static const struct devnode devnodes[] = {
    {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
};

// add_device makes one of the spec's device nodes in /dev, whose
// descriptor dev is: its missing directories, then the node, made with
// mknod or bound from the host's. Every step is taken from the directory
// before it and follows no symbolic link, so it stays inside /dev.
static void add_device(int dev, const struct devspec *d) {
	char buf[PATH_MAX];
	const char *rel = d->path + strlen("/dev/");
	if (strlen(rel) >= sizeof buf) {
		errno = ENAMETOOLONG;
		die("device %s", d->path);
	}
	strcpy(buf, rel);
	int dir = fcntl(dev, F_DUPFD_CLOEXEC, 0);
	if (dir < 0)
		die("device %s", d->path);
	char *name = buf;
	for (;;) {
		char *slash = strchr(name, '/');
		if (slash)
			*slash = 0;
		if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
			errno = EINVAL;
			die("device path %s", d->path);
		}
		if (!slash)
			break;
		if (mkdirat(dir, name, 0755) < 0 && errno != EEXIST)
			die("make the directory of device %s", d->path);
		int next = openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0)
			die("open the directory of device %s", d->path);
		close(dir);
		dir = next;
		name = slash + 1;
	}
	if (d->bind) {
		int fd = openat(dir, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0);
		if (fd < 0)
			die("create %s", d->path);
		close(fd);
		int t = openat(dir, name, O_PATH | O_CLOEXEC | O_NOFOLLOW);
		if (t < 0)
			die("open %s", d->path);
		// The host checked what its path named; it may name something
		// else by now (a link swapped in a directory a sandbox can
		// write): bind only the device node the spec says, through a
		// descriptor, so that the path is looked up once.
		int src = open(d->source, O_PATH | O_CLOEXEC);
		struct stat st;
		if (src < 0 || fstat(src, &st) < 0)
			die("device %s: source %s", d->path, d->source);
		if ((st.st_mode & S_IFMT) != d->type || st.st_rdev != makedev(d->major, d->minor)) {
			errno = ESTALE;
			die("device %s: source %s is no longer the device it was", d->path, d->source);
		}
		char from[64], where[64];
		fdpath(from, sizeof from, src);
		fdpath(where, sizeof where, t);
		if (mount(from, where, NULL, MS_BIND, NULL) < 0)
			die("bind %s on %s", d->source, d->path);
		close(src);
		close(t);
	} else {
		if (mknodat(dir, name, d->type | d->mode, makedev(d->major, d->minor)) < 0)
			die("mknod %s", d->path);
		if (fchownat(dir, name, d->uid, d->gid, AT_SYMLINK_NOFOLLOW) < 0)
			die("chown %s", d->path);
	}
	close(dir);
}

// setup_dev fills the sandbox's own /dev tmpfs: the usual device nodes
// (made, or bound from the host's where a user namespace forbids mknod),
// a private devpts, the conventional links, and the devices the spec
// adds.
static void setup_dev(int rootfd, const struct spec *s) {
	int bind_devices = s->bind_devices;
	int dev = open_in_root(rootfd, "/dev", O_PATH | O_DIRECTORY);
	if (dev < 0)
		die("open /dev");
	// The modes below are meant as written: the host's umask would make
	// /dev/null unwritable for any user but root.
	mode_t umask_was = umask(0);
	for (size_t i = 0; i < sizeof devnodes / sizeof devnodes[0]; i++) {
		const struct devnode *d = &devnodes[i];
		if (!bind_devices) {
			if (mknodat(dev, d->name, S_IFCHR | 0666, makedev(d->major, d->minor)) < 0)
				die("mknod /dev/%s", d->name);
			continue;
		}
		int fd = openat(dev, d->name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
		if (fd < 0)
			die("create /dev/%s", d->name);
		close(fd);
		char src[64], where[64];
		snprintf(src, sizeof src, "/dev/%s", d->name);
		int t = openat(dev, d->name, O_PATH | O_CLOEXEC | O_NOFOLLOW);
		if (t < 0)
			die("open /dev/%s", d->name);
		fdpath(where, sizeof where, t);
		if (mount(src, where, NULL, MS_BIND, NULL) < 0)
			die("bind /dev/%s", d->name);
		close(t);
	}
	static const char *links[][2] = {
	    {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
	    {"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"},
	};
	for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
		if (symlinkat(links[i][0], dev, links[i][1]) < 0)
			die("link /dev/%s", links[i][1]);
	if (mkdirat(dev, "pts", 0755) < 0 || mkdirat(dev, "shm", 01777) < 0 || mkdirat(dev, "mqueue", 0755) < 0)
		die("mkdir in /dev");
	for (int i = 0; i < s->ndevices; i++)
		add_device(dev, &s->devices[i]);
	umask(umask_was);
	close(dev);
}

// mask hides a path of the rootfs: /dev/null over a file, an empty
// read-only tmpfs over a directory. Paths the image lacks need no hiding.
static void mask(const char *path) {
	struct stat st;
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return;
		die("mask %s", path);
	}
	if (S_ISDIR(st.st_mode)) {
		if (mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0555") < 0)
			die("mask %s", path);
	} else if (mount("/dev/null", path, NULL, MS_BIND, NULL) < 0) {
		die("mask %s", path);
	}
}

static void make_readonly(const char *path) {
	if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0) {
		if (errno == ENOENT)
			return;
		die("bind %s", path);
	}
	remount_ro(path, path, MS_NOSUID | MS_NODEV | MS_NOEXEC);
}

static void loopback_up(void) {
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		die("socket for loopback");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		die("get flags of lo");
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		die("bring lo up");
	close(s);
}

static void write_file(const char *path, const char *s);

// write_sysctls sets the kernel parameters of the sandbox's own
// namespaces, through its own /proc. Each path is resolved beneath
// /proc/sys and no link is followed, so none leads elsewhere.
static void write_sysctls(struct spec *s) {
	if (!s->nsysctls)
		return;
	int dir = open("/proc/sys", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		die("open /proc/sys");
	for (int i = 0; i < s->nsysctls; i++) {
		const struct filewrite *w = &s->sysctls[i];
		int fd = (int)openat2_(dir, w->path, O_WRONLY | O_CLOEXEC, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
		if (fd < 0)
			die("sysctl %s", w->path);
		size_t len = strlen(w->data);
		if (write(fd, w->data, len) != (ssize_t)len)
			die("sysctl %s = %s", w->path, w->data);
		close(fd);
	}
	close(dir);
}

static void write_file(const char *path, const char *s) {
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		die("open %s", path);
	size_t n = strlen(s);
	if (write(fd, s, n) != (ssize_t)n)
		die("write %s", path);
	close(fd);
}

// setup_root builds the sandbox's mount tree and moves into it. It runs in
// the sandbox's own mount namespace, so nothing here shows on the host.
static void setup_root(struct spec *s) {
	// Nothing done from here on may reach back into the host's mounts.
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die("make mounts private");
	if (mount(s->rootfs, s->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0)
		die("bind rootfs %s", s->rootfs);
	int rootfd = open(s->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		die("open rootfs %s", s->rootfs);
	for (int i = 0; i < s->nmounts; i++) {
		do_mount(rootfd, &s->mounts[i], admin_possible(s));
		if (strcmp(s->mounts[i].target, "/dev") == 0 && s->mounts[i].kind == MOUNT_DEV)
			setup_dev(rootfd, s);
	}
	if (fchdir(rootfd) < 0)
		die("chdir to rootfs");
	// pivot_root(".", ".") stacks the old root under the new one; the
	// detach then drops it, without needing a directory for it.
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		die("pivot_root");
	if (umount2(".", MNT_DETACH) < 0)
		die("detach the host's root");
	if (chdir("/") < 0)
		die("chdir /");
	close(rootfd);
	write_sysctls(s);
	for (int i = 0; i < s->nmasked; i++)
		mask(s->masked[i]);
	for (int i = 0; i < s->nreadonly; i++)
		make_readonly(s->readonly_paths[i]);
	if (s->readonly_root)
		remount_ro("/", "/", 0);
}

// ---- the workload -----------------------------------------------------------

static int capset_(uint64_t eff, uint64_t perm, uint64_t inh) {
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[2] = {
	    {.effective = (uint32_t)eff, .permitted = (uint32_t)perm, .inheritable = (uint32_t)inh},
	    {.effective = (uint32_t)(eff >> 32), .permitted = (uint32_t)(perm >> 32), .inheritable = (uint32_t)(inh >> 32)},
	};
	return (int)syscall(SYS_capset, &h, d);
}

// drop_bounding drops from the bounding set every capability not in keep.
// Each drop commits new credentials, which costs: those already gone are
// skipped, and the first one the kernel does not know ends the loop.
static void drop_bounding(uint64_t keep) {
	for (int c = 0; c <= 63; c++) {
		if (keep & (1ULL << c))
			continue;
		int have = prctl(PR_CAPBSET_READ, c, 0, 0, 0);
		if (have < 0 && errno == EINVAL)
			break;
		if (have == 0)
			continue;
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0)
			die("drop capability %d from the bounding set", c);
	}
}

static void drop_privileges(struct spec *s) {
	if (s->have_caps) {
		// The bounding set first: dropping from it needs CAP_SETPCAP,
		// which the effective set may be about to lose.
		drop_bounding(s->caps[0]);
		// Keep the permitted set across the uid change; the capset after
		// it sets what remains.
		if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
			die("keep capabilities");
	}
	if (setgroups((size_t)s->ngroups, s->groups) < 0)
		die("set supplementary groups");
	if (setresgid(s->gid, s->gid, s->gid) < 0)
		die("set gid %u", s->gid);
	if (setresuid(s->uid, s->uid, s->uid) < 0)
		die("set uid %u", s->uid);
	if (s->have_caps) {
		if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
			die("reset keepcaps");
		if (capset_(s->caps[1], s->caps[2], s->caps[3]) < 0)
			die("set capabilities");
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
			die("clear ambient capabilities");
		for (int c = 0; c <= 63; c++)
			if (s->caps[4] & (1ULL << c))
				if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
					die("raise ambient capability %d", c);
	}
}

// The kernel's structures for Landlock, as this file's callers need them:
// only handled_access_fs, so that kernels of any Landlock ABI take it.
struct ll_ruleset_attr {
	uint64_t handled_access_fs;
};
struct ll_path_beneath {
	uint64_t allowed_access;
	int32_t parent_fd;
} __attribute__((packed));

// confine_to_root lets the process reach files only through the sandbox's
// own tree: a descriptor to anything outside it, passed in or leaked,
// opens nothing more.
static void confine_to_root(uint64_t rights) {
	struct ll_ruleset_attr attr = {.handled_access_fs = rights};
	int rs = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
	if (rs < 0)
		die("landlock: create ruleset");
	int root = open("/", O_PATH | O_CLOEXEC);
	if (root < 0)
		die("landlock: open /");
	struct ll_path_beneath rule = {.allowed_access = rights, .parent_fd = root};
	if (syscall(SYS_landlock_add_rule, rs, 1 /* LANDLOCK_RULE_PATH_BENEATH */, &rule, 0) < 0)
		die("landlock: allow /");
	if (syscall(SYS_landlock_restrict_self, rs, 0) < 0)
		die("landlock: restrict");
	close(root);
	close(rs);
}

// pass_extra_files moves the descriptors meant for the workload from fd 6
// down to 3, 4, ..., clear of the descriptors set-up still needs.
static void pass_extra_files(struct spec *s, int *errfd) {
	if (s->extra_files <= 0)
		return;
	int high = fcntl(*errfd, F_DUPFD_CLOEXEC, 6 + s->extra_files);
	if (high < 0)
		die("move status descriptor");
	close(*errfd);
	*errfd = status_fd = high;
	for (int i = 0; i < s->extra_files; i++)
		if (dup2(6 + i, 3 + i) < 0)
			die("pass descriptor %d", 3 + i);
}

// lookup finds the command the way execvp would, but in the sandbox's PATH
// rather than the host's.
static const char *lookup(struct spec *s, char *buf, size_t n) {
	const char *cmd = s->argv[0];
	if (strchr(cmd, '/'))
		return cmd;
	const char *path = s->path && *s->path ? s->path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	int saw_eacces = 0;
	while (*path) {
		const char *colon = strchr(path, ':');
		size_t len = colon ? (size_t)(colon - path) : strlen(path);
		int w = len == 0 ? snprintf(buf, n, "%s", cmd) : snprintf(buf, n, "%.*s/%s", (int)len, path, cmd);
		path += len + (colon ? 1 : 0);
		// A path cut short would name another file: skipped, as execvp
		// does.
		if (w < 0 || (size_t)w >= n)
			continue;
		if (access(buf, X_OK) == 0)
			return buf;
		if (errno == EACCES)
			saw_eacces = 1;
	}
	errno = saw_eacces ? EACCES : ENOENT;
	exec_failed("exec %s: not found in PATH", cmd);
}

// arg_limit is how many bytes of strings and pointers execve(2) takes
// with a stack limit of stack, as the kernel works it out: a quarter of
// the limit, but no more than three quarters of _STK_LIM (8 MiB) and no
// less than ARG_MAX (32 pages).
static unsigned long long arg_limit(rlim_t stack) {
	unsigned long long page = (unsigned long long)sysconf(_SC_PAGESIZE);
	unsigned long long limit = (8ULL << 20) / 4 * 3;
	if (stack / 4 < limit)
		limit = stack / 4;
	if (limit < 32 * page)
		limit = 32 * page;
	return limit;
}

// too_big explains an execve that failed with E2BIG, naming the limit its
// arguments and environment went over: one string longer than
// MAX_ARG_STRLEN, or all of them more than the stack limit allows.
__attribute__((noreturn)) static void too_big(const struct spec *s, const char *path) {
	unsigned long long page = (unsigned long long)sysconf(_SC_PAGESIZE);
	unsigned long long longest = 0, total = strlen(path) + 1;
	int ptrs = (s->argc > 1 ? s->argc : 1) + s->envc;
	for (int i = 0; i < s->argc + s->envc; i++) {
		const char *str = i < s->argc ? s->argv[i] : s->envp[i - s->argc];
		unsigned long long n = strlen(str) + 1;
		total += n;
		if (n > longest)
			longest = n;
	}
	total += (unsigned long long)ptrs * sizeof(char *);
	errno = E2BIG;
	if (longest > 32 * page)
		exec_failed("exec %s: a string of %llu bytes in its arguments or environment, more than the "
		            "%llu Linux takes (MAX_ARG_STRLEN)",
		            path, longest - 1, 32 * page - 1);
	// The spec's limit, if it sets one, is in force; else the one this
	// process inherited, which the seccomp filter, loaded by now, may
	// refuse to tell.
	struct rlimit rl = s->rlimits[RLIMIT_STACK];
	if (!s->rlimit_set[RLIMIT_STACK] && getrlimit(RLIMIT_STACK, &rl) < 0) {
		errno = E2BIG;
		exec_failed("exec %s: its arguments and environment take %llu bytes, more than Linux takes "
		            "(ARG_MAX, a quarter of the stack limit)",
		            path, total);
	}
	errno = E2BIG;
	exec_failed("exec %s: its arguments and environment take %llu bytes, more than the %llu Linux takes "
	            "with a stack limit of %llu bytes (ARG_MAX, a quarter of it)",
	            path, total, arg_limit(rl.rlim_cur), (unsigned long long)rl.rlim_cur);
}

// exec_workload runs in the workload's own process: the last steps that
// only it may take, then the exec. errfd is close-on-exec, so the exec
// closing it is how init learns it worked.
__attribute__((noreturn)) static void exec_workload(struct spec *s, int errfd) {
	status_fd = errfd;
	pass_extra_files(s, &errfd);
	sigset_t all;
	sigfillset(&all);
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigprocmask(SIG_UNBLOCK, &all, NULL);
	if (setsid() < 0)
		die("setsid");

	if (s->tty_slave >= 0) {
		for (int fd = 0; fd < 3; fd++)
			if (dup2(s->tty_slave, fd) < 0)
				die("terminal as fd %d", fd);
		close(s->tty_slave);
	}
	if (s->tty && ioctl(0, TIOCSCTTY, 0) < 0)
		die("make stdin the controlling terminal");
	for (int r = 0; r < RLIM_NLIMITS; r++)
		if (s->rlimit_set[r] && setrlimit(r, &s->rlimits[r]) < 0)
			die("set rlimit %d", r);
	if (s->have_oom_score_adj) {
		char v[16];
		snprintf(v, sizeof v, "%d", s->oom_score_adj);
		write_file("/proc/self/oom_score_adj", v);
	}
	char exe[PATH_MAX];
	const char *path = lookup(s, exe, sizeof exe);
	// Landlock before the capabilities go, while restricting needs no
	// no_new_privs.
	if (s->landlock)
		confine_to_root(s->landlock);
	// Without no_new_privs, loading a filter takes CAP_SYS_ADMIN, which
	// the workload may be about to lose: load it now, and let it allow
	// what the rest of the set-up calls.
	if (!s->no_new_privs && s->seccomp.len && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, s->seccomp_flags, &s->seccomp) < 0)
		die("load seccomp filter");
	drop_privileges(s);
	// An exec'd process lives in the sandbox's PID namespace, out of reach
	// of the host's kill of its helper; tie it to the helper's life. Set
	// after the uid change, which would clear it.
	if (exec_mode && prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		die("set parent death signal");
	if (s->cwd && chdir(s->cwd) < 0)
		die("chdir %s", s->cwd);
	if (s->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		die("set no_new_privs");
	for (int i = 0; i < s->nwrites; i++)
		write_file(s->writes[i].path, s->writes[i].data);
	// Nothing of the host's may reach the workload: every descriptor but
	// stdio and the ones passed on purpose closes at exec (runc's
	// CVE-2024-21626 leaked one).
	if (syscall(SYS_close_range, 3 + (unsigned)s->extra_files, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
		die("close descriptors");
	// The filter goes last, so that it need not allow what set-up uses.
	if (s->no_new_privs && s->seccomp.len && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, s->seccomp_flags, &s->seccomp) < 0)
		die("load seccomp filter");
	execve(path, s->argv, s->envp ? s->envp : (char *[]){NULL});
	if (errno == E2BIG)
		too_big(s, path);
	exec_failed("exec %s", path);
}

static void await_workload(struct spec *s, int *errfd);
static void pass_late_mounts(int chan);

// forget_workload frees, in PID 1 once the workload runs, what only the
// workload's exec needed: the records and the arrays of its arguments and
// environment, which may come to several MiB that would otherwise stay
// for the sandbox's life.
static void forget_workload(struct spec *s) {
	free(s->buf);
	free(s->argv);
	free(s->envp);
	s->buf = NULL;
	s->argv = s->envp = NULL;
	s->argc = s->envc = 0;
}

// read_report reads what the workload's process says before its exec,
// which closes its end: nothing, or why it could not start.
static size_t read_report(int fd, char *buf, size_t cap) {
	ssize_t n;
	size_t got = 0;
	while ((n = read(fd, buf + got, cap - 1 - got)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		got += (size_t)n;
		if (got >= cap - 1)
			break;
	}
	return got;
}

// serve_standby is read_report for a standby init's workload process,
// which may first have PID 1 make its request's mounts: a record that
// begins with 'M', the mounts message after it and its sources attached
// (see pass_late_mounts). PID 1 answers "K" once they are made.
static size_t serve_standby(int fd, char *buf, size_t cap) {
	size_t got = 0;
	for (;;) {
		char kind;
		ssize_t size = recv(fd, &kind, 1, MSG_PEEK | MSG_TRUNC);
		if (size < 0 && errno == EINTR)
			continue;
		if (size <= 0)
			return got;
		if (kind != 'M') {
			if (got >= cap - 1)
				return got;
			ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
			if (n > 0)
				got += (size_t)n;
			continue;
		}
		if ((size_t)size > 1 + LATE_MOUNTS_MAX_BYTES) {
			errno = E2BIG;
			die("the request's mounts: %zd bytes", size);
		}
		char *msg = malloc((size_t)size);
		if (!msg)
			die("the request's mounts: out of memory");
		union {
			char buf[CMSG_SPACE(sizeof(int) * STANDBY_MAX_FDS)];
			struct cmsghdr align;
		} u;
		struct iovec iov = {.iov_base = msg, .iov_len = (size_t)size};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
		ssize_t n;
		while ((n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
			;
		if (n != size || (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC))) {
			errno = EMSGSIZE;
			die("receive the request's mounts");
		}
		int fds[STANDBY_MAX_FDS], nfds = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			if (nfds + k > STANDBY_MAX_FDS) {
				errno = EMSGSIZE;
				die("receive the request's mounts: too many descriptors");
			}
			memcpy(fds + nfds, CMSG_DATA(c), sizeof(int) * (size_t)k);
			nfds += k;
		}
		late_mounts(msg + 1, (size_t)size - 1, fds, nfds);
		free(msg);
		write_all(fd, "K", 1);
	}
}

// start forks the workload and waits for its exec: returns its pid, or
// reports the failure and exits. A standby init forks it ahead of its
// spec, reports itself ready, and leaves the process to wait for it.
static pid_t start(struct spec *s, int standby) {
	int p[2];
	// A standby init's workload process may pass PID 1 descriptors (see
	// serve_standby): it reports on a socket rather than a pipe.
	if ((standby ? socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) : pipe2(p, O_CLOEXEC)) < 0)
		die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		die("fork the workload");
	if (pid == 0) {
		close(p[0]);
		if (standby)
			await_workload(s, &p[1]);
		exec_workload(s, p[1]);
	}
	close(p[1]);
	if (standby)
		close(SPEC_FD);
	char buf[512];
	size_t got = standby ? serve_standby(p[0], buf, sizeof buf) : read_report(p[0], buf, sizeof buf);
	close(p[0]);
	if (standby && got > 0 && buf[0] == 'N') {
		waitpid(pid, NULL, 0);
		_exit(0);
	}
	if (got > 0) {
		// The workload's own report of why it could not start.
		write_all(status_fd, buf, got);
		waitpid(pid, NULL, 0);
		_exit(126);
	}
	// Before the report, so that the host sees PID 1 as it stays.
	forget_workload(s);
	status("R");
	return pid;
}

// ---- PID 1 --------------------------------------------------------------------

// join_cgroups moves this process into the sandbox's cgroups through the
// files the host opened for it. Still single-threaded, it moves itself by
// writing "0" to each v1 tasks file, which spares the kernel the global
// lock a move by PID takes (and the RCU grace period its first taker
// after a quiet spell waits for); and it is in them before anything of
// the workload runs.
static void join_cgroups(struct spec *s) {
	for (int i = 0; i < s->ncgroup_fds; i++) {
		if (write(s->cgroup_fds[i], "0", 1) != 1)
			die("join the sandbox's cgroups");
		close(s->cgroup_fds[i]);
	}
}

// reap waits for the workload, forwarding signals to it and reaping every
// orphan the kernel hands to PID 1, and exits with its status.
__attribute__((noreturn)) static void reap(pid_t main_pid, int sfd) {
	for (;;) {
		struct signalfd_siginfo si;
		ssize_t n = read(sfd, &si, sizeof si);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != sizeof si)
			die("read signalfd");
		if (si.ssi_signo != SIGCHLD) {
			int sig = (int)si.ssi_signo;
			// A process that joined a sandbox must not outlive its
			// helper as an orphan: the host's reaper, not the
			// sandbox's, would inherit it. So the host asks the helper
			// to kill it, and the helper reaps it.
			if (exec_mode && sig == SIGRTMAX)
				sig = SIGKILL;
			kill(main_pid, sig);
			continue;
		}
		for (;;) {
			int st;
			pid_t p = waitpid(-1, &st, WNOHANG);
			if (p <= 0)
				break;
			if (p != main_pid)
				continue;
			// The sandbox ends with its main process; the kernel kills
			// the rest when PID 1 exits.
			if (WIFSIGNALED(st)) {
				status("S %d", WTERMSIG(st));
				_exit(128 + WTERMSIG(st));
			}
			status("X %d", WEXITSTATUS(st));
			_exit(WEXITSTATUS(st));
		}
	}
}

static int block_signals(void) {
	sigset_t all;
	sigfillset(&all);
	if (sigprocmask(SIG_BLOCK, &all, NULL) < 0)
		die("block signals");
	int sfd = signalfd(-1, &all, SFD_CLOEXEC);
	if (sfd < 0)
		die("signalfd");
	return sfd;
}

static void give_terminal(struct spec *s, int master, int slave);

// make_terminal opens a terminal in the sandbox's own devpts, so that the
// workload sees it at a /dev/pts path that exists for it, and hands the
// master side to the host over the socket at fd 5.
static void make_terminal(struct spec *s) {
	int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0)
		die("open /dev/ptmx");
	int unlock = 0, n;
	if (ioctl(master, TIOCSPTLCK, &unlock) < 0 || ioctl(master, TIOCGPTN, &n) < 0)
		die("set up terminal");
	char path[64];
	snprintf(path, sizeof path, "/dev/pts/%d", n);
	int slave = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (slave < 0)
		die("open %s", path);
	give_terminal(s, master, slave);
}

// give_terminal makes slave the workload's terminal, owned by its user,
// and sends master to the host over the socket at fd 5.
static void give_terminal(struct spec *s, int master, int slave) {
	if (fchown(slave, s->uid, (gid_t)-1) < 0)
		die("chown the terminal");
	if (s->tty_rows || s->tty_cols) {
		struct winsize ws = {.ws_row = s->tty_rows, .ws_col = s->tty_cols};
		if (ioctl(master, TIOCSWINSZ, &ws) < 0)
			die("set the terminal's size");
	}
	char byte = 0;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof u);
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &master, sizeof(int));
	if (sendmsg(CONSOLE_FD, &msg, 0) < 0)
		die("send the terminal to the host");
	close(master);
	close(CONSOLE_FD);
	s->tty_slave = slave;
}

// make_exec_terminal is make_terminal for a process joining a running
// sandbox, whose workload has had time to put what it likes at /dev/ptmx
// and under /dev/pts: a symbolic link out of the sandbox, a FIFO that
// would hold this process forever in open, another device. So no link is
// followed, the open does not wait, what was opened must be the ptmx
// device of a devpts, and the terminal's other side comes from the
// master itself (TIOCGPTPEER), not from a path.
static void make_exec_terminal(struct spec *s) {
	int master = (int)openat2_(AT_FDCWD, "/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC,
	                           RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
	if (master < 0)
		die("open the sandbox's /dev/pts/ptmx");
	struct stat st;
	struct statfs sfs;
	if (fstat(master, &st) < 0 || fstatfs(master, &sfs) < 0)
		die("stat /dev/pts/ptmx");
	if (!S_ISCHR(st.st_mode) || major(st.st_rdev) != 5 || minor(st.st_rdev) != 2 || sfs.f_type != DEVPTS_SUPER_MAGIC) {
		errno = EPERM;
		die("the sandbox's /dev/pts/ptmx is not a devpts ptmx");
	}
	int flags = fcntl(master, F_GETFL);
	if (flags < 0 || fcntl(master, F_SETFL, flags & ~O_NONBLOCK) < 0)
		die("set up terminal");
	int unlock = 0;
	if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
		die("set up terminal");
	int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (slave < 0)
		die("open the terminal");
	give_terminal(s, master, slave);
}

static struct spec *load_spec(void) {
	static struct spec s;
	size_t len;
	char *buf = read_all(SPEC_FD, &len);
	close(SPEC_FD);
	init_spec(&s);
	s.buf = buf;
	parse_spec(&s, buf, len);
	need_command(&s);
	align_seccomp(&s);
	return &s;
}

// read_message reads one framed message from the standby socket, and the
// descriptors that came with it. It returns NULL at EOF before a message:
// the host gave the sandbox up.
static char *read_message(size_t *len, int *fds, int *nfds) {
	uint32_t n;
	char *hdr = (char *)&n;
	size_t got = 0;
	*nfds = 0;
	union {
		char buf[CMSG_SPACE(sizeof(int) * STANDBY_MAX_FDS)];
		struct cmsghdr align;
	} u;
	while (got < sizeof n) {
		struct iovec iov = {.iov_base = hdr + got, .iov_len = sizeof n - got};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
		ssize_t r = recvmsg(SPEC_FD, &msg, MSG_CMSG_CLOEXEC);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			die("read spec");
		}
		if (r == 0) {
			if (got == 0)
				return NULL;
			errno = EPIPE;
			die("read spec: cut short");
		}
		if (msg.msg_flags & MSG_CTRUNC) {
			errno = EMSGSIZE;
			die("read spec: too many descriptors");
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			if (*nfds + k > STANDBY_MAX_FDS) {
				errno = EMSGSIZE;
				die("read spec: too many descriptors");
			}
			memcpy(fds + *nfds, CMSG_DATA(c), sizeof(int) * (size_t)k);
			*nfds += k;
		}
		got += (size_t)r;
	}
	if (n > SPEC_MAX_BYTES) {
		errno = E2BIG;
		die("read spec: a message of %u bytes, more than %d", n, SPEC_MAX_BYTES);
	}
	char *buf = malloc(n ? n : 1);
	if (!buf)
		die("read spec: out of memory");
	for (got = 0; got < n;) {
		ssize_t r = read(SPEC_FD, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = EPIPE;
			die("read spec: cut short");
		}
		got += (size_t)r;
	}
	*len = n;
	return buf;
}

// install_fds puts the workload's descriptors where the rest of the init
// expects them, as if the host had started it with them: stdio at 0-2,
// the extra files from 6, the console socket at 5. Each goes high first,
// so that no move overwrites one not yet moved.
static void install_fds(struct spec *s, int *fds, int nfds) {
	int want = 3 + s->extra_files + (s->tty ? 1 : 0);
	if (nfds != want) {
		errno = EINVAL;
		die("spec: %d descriptors for %d", nfds, want);
	}
	int base = 6 + s->extra_files + 1;
	for (int i = 0; i < nfds; i++) {
		int hi = fcntl(fds[i], F_DUPFD_CLOEXEC, base);
		if (hi < 0)
			die("move descriptor");
		close(fds[i]);
		fds[i] = hi;
	}
	for (int i = 0; i < nfds; i++) {
		int target = i < 3 ? i : i < 3 + s->extra_files ? 6 + (i - 3) : CONSOLE_FD;
		if (dup2(fds[i], target) < 0)
			die("place descriptor %d", target);
		close(fds[i]);
	}
}

// load_standby reads the sandbox's half of the spec.
static struct spec *load_standby(void) {
	static struct spec s;
	init_spec(&s);
	size_t len;
	int fds[STANDBY_MAX_FDS], nfds;
	char *buf = read_message(&len, fds, &nfds);
	if (!buf)
		_exit(0);
	if (nfds) {
		errno = EINVAL;
		die("spec: descriptors with the sandbox's message");
	}
	s.buf = buf;
	parse_spec(&s, buf, len);
	return &s;
}

// await_workload runs in the workload's process, forked ahead: it reads
// the workload's half of the spec and its descriptors, and makes its
// terminal. Its failures go through errfd, as exec_workload's do. EOF
// means the pool let the sandbox go unused: it says so ("N") and exits.
static void await_workload(struct spec *s, int *errfd) {
	int high = fcntl(*errfd, F_DUPFD_CLOEXEC, 8 + STANDBY_MAX_FDS);
	if (high < 0)
		die("move the error pipe");
	close(*errfd);
	*errfd = status_fd = high;
	// What depends only on the sandbox's configuration is done while it
	// waits: dropping from the bounding set costs a credential commit per
	// capability.
	if (s->have_bounding)
		drop_bounding(s->bounding);
	// A filter the host found to allow everything this process does from
	// here on is loaded now rather than just before the exec: the kernel
	// takes hundreds of microseconds to take a large one in.
	if (s->seccomp.len) {
		align_seccomp(s);
		if (s->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
			die("set no_new_privs");
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, s->seccomp_flags, &s->seccomp) < 0)
			die("load seccomp filter");
		s->seccomp.len = 0;
	}
	// Ready: said here, so that a failure above is the standby's error.
	write_all(STATUS_FD, "P\n", 2);
	size_t len;
	int fds[STANDBY_MAX_FDS], nfds;
	char *buf = read_message(&len, fds, &nfds);
	if (!buf) {
		write_all(high, "N\n", 2);
		_exit(0);
	}
	parse_spec(s, buf, len);
	if (s->late_mounts)
		pass_late_mounts(high);
	close(SPEC_FD);
	need_command(s);
	align_seccomp(s);
	install_fds(s, fds, nfds);
	if (s->tty)
		make_terminal(s);
}

// pass_late_mounts reads the request's mounts, the message that follows
// the workload's, and has PID 1 make them (serve_standby): this process
// may be under its seccomp filter already, which refuses mount calls; PID
// 1 never is. PID 1 answers "K" once they are made; if it cannot make
// them, it reports why to the host and exits, which ends this process.
static void pass_late_mounts(int chan) {
	size_t len;
	int fds[STANDBY_MAX_FDS], nfds;
	char *buf = read_message(&len, fds, &nfds);
	if (!buf) {
		errno = EPIPE;
		die("read the request's mounts: cut short");
	}
	if (len > LATE_MOUNTS_MAX_BYTES) {
		errno = E2BIG;
		die("the request's mounts: %zu bytes, more than %d", len, LATE_MOUNTS_MAX_BYTES);
	}
	char *msg = malloc(len + 1);
	if (!msg)
		die("the request's mounts: out of memory");
	msg[0] = 'M';
	memcpy(msg + 1, buf, len);
	free(buf);
	union {
		char buf[CMSG_SPACE(sizeof(int) * STANDBY_MAX_FDS)];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof u);
	struct iovec iov = {.iov_base = msg, .iov_len = len + 1};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds > 0) {
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	ssize_t w;
	while ((w = sendmsg(chan, &mh, 0)) < 0 && errno == EINTR)
		;
	if (w != (ssize_t)(len + 1))
		die("pass the request's mounts to PID 1");
	free(msg);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	char ok = 0;
	ssize_t r;
	while ((r = read(chan, &ok, 1)) < 0 && errno == EINTR)
		;
	if (r != 1 || ok != 'K') {
		errno = EPROTO;
		die("PID 1 did not make the request's mounts");
	}
}

static void run_init(int standby) {
	prctl(PR_SET_NAME, "berth-init", 0, 0, 0);
	struct spec *s = standby ? load_standby() : load_spec();
	join_cgroups(s);
	// No one in the sandbox may ptrace PID 1 or open its /proc entries,
	// its exe link among them (runc's CVE-2019-5736 went through it).
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		die("set non-dumpable");
	int sfd = block_signals();
	// In the sandbox's cgroups now, a cgroup namespace made now has them
	// as its root.
	if (s->unshare_cgroup && unshare(CLONE_NEWCGROUP) < 0)
		die("new cgroup namespace");
	// Sharing another sandbox's network: join it before /sys is mounted,
	// so that /sys shows that namespace's interfaces.
	if (s->netns_fd >= 0) {
		if (setns(s->netns_fd, CLONE_NEWNET) < 0)
			die("join the network namespace");
		close(s->netns_fd);
	}
	if (s->rootfs)
		setup_root(s);
	if (s->hostname && sethostname(s->hostname, strlen(s->hostname)) < 0)
		die("set hostname %s", s->hostname);
	if (s->loopback)
		loopback_up();
	if (s->tty)
		make_terminal(s);
	pid_t pid = start(s, standby);
	reap(pid, sfd);
}

// run_exec joins a running sandbox. Entering its PID namespace only takes
// effect for children, so the process forks once more and waits, passing
// the status on like PID 1 does.
static void run_exec(void) {
	exec_mode = 1;
	prctl(PR_SET_NAME, "berth-exec", 0, 0, 0);
	struct spec *s = load_spec();
	join_cgroups(s);
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		die("set non-dumpable");
	if (setns(s->target_pidfd, s->namespaces) < 0)
		die("join the sandbox's namespaces");
	close(s->target_pidfd);
	if (chdir("/") < 0)
		die("chdir /");
	if (s->tty)
		make_exec_terminal(s);
	int sfd = block_signals();
	pid_t pid = start(s, 0);
	reap(pid, sfd);
}

// close_host_fds closes the descriptor this program was executed through,
// /proc/self/fd/N, and every one above it. The host passes its read-only
// view of the executable as the last of the process's files, so that N is
// above all of them; whatever else is open is the host's, inherited
// because it was not close-on-exec, and none of the init's business: a
// pipe held open here would keep the host's reader waiting for the
// sandbox's end. The workload would not get it anyway (see the
// close_range before its exec).
static void close_host_fds(void) {
	static const char prefix[] = "/proc/self/fd/";
	const char *fn = (const char *)getauxval(AT_EXECFN);
	if (!fn || strncmp(fn, prefix, sizeof prefix - 1) != 0)
		return;
	char *end;
	long fd = strtol(fn + sizeof prefix - 1, &end, 10);
	if (*end != '\0' || fd < 3 || fd > INT_MAX)
		return;
	if (syscall(SYS_close_range, (unsigned)fd, ~0U, 0) < 0)
		die("close the host's descriptors");
}

// glibc passes constructors the program's arguments and environment.
__attribute__((constructor)) static void berth_nsinit(int argc, char **argv, char **envp) {
	(void)envp;
	const char *mode = getenv("_BERTH_INIT");
	if (!mode)
		return;
	// The supervisor keeps the descriptors its settings name, wherever
	// they are, and closes the rest itself.
	if (strcmp(mode, "supervise") == 0 && argc >= 1)
		berth_supervise(argv);
	close_host_fds();
	if (strcmp(mode, "init") == 0)
		run_init(0);
	if (strcmp(mode, "standby") == 0)
		run_init(1);
	if (strcmp(mode, "exec") == 0)
		run_exec();
	// Measures what starting this program again costs, up to here.
	if (strcmp(mode, "noop") == 0)
		_exit(0);
	// Holds a new namespace open for the host until stdin closes.
	if (strcmp(mode, "hold") == 0) {
		char c;
		while (read(0, &c, 1) > 0 || errno == EINTR)
			;
		_exit(0);
	}
	errno = EINVAL;
	die("unknown _BERTH_INIT mode %s", mode);
}
