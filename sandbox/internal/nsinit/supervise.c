// The supervisor of a detached sandbox (_BERTH_INIT=supervise). The host
// process that started a Detachable sandbox becomes this program by execve
// (Sandbox.Supervise), so it keeps its PID: it is still the parent of the
// sandbox's PID 1, which it reaps, and still holds the owner lock on the
// sandbox's state directory, an inherited descriptor. The Go runtime never
// starts in it: an idle supervisor costs the host what a small C program
// does, not a Go heap.
//
// It copies the workload's output pipes (or its terminal's master) into a
// log in the CRI format (sandbox/logs.go), reads PID 1's status pipe
// ("X <code>" or "S <signal>"), reaps PID 1, writes how the workload ended
// to a JSON file, and then execs the program it was given, which reclaims
// the sandbox (sandbox.Recover) once this program has let go of the owner
// lock.
//
// Settings come in the environment, which the host wrote:
//   _BERTH_SUPERVISE       "pid status out err lock logdir exitdir then max tty":
//                          PID 1's pid, descriptors (-1 for none) and the
//                          log's bound in bytes, 1 if out is a terminal
//   _BERTH_SUPERVISE_LOG   the log's name in logdir
//   _BERTH_SUPERVISE_EXIT  the exit file's name in exitdir
// and argv[1:] is the program to exec at the end (argv[1] its path, opened
// as "then"), or nothing to exit.
//
// Whatever the workload writes, the supervisor's memory stays the same: one
// entry's buffer per stream. A workload that writes faster than the disk
// takes it is held back by its pipe; the log is bounded on disk by
// rotation to one older file. The log and exit files are opened in
// directories the host opened, never through a path, and never through a
// symbolic link.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "supervise.h"

#define ENTRY_MAX SUPERVISE_ENTRY_MAX
// DRAIN_MS bounds how long output is still copied once PID 1 has been
// reaped. Its end kills every process of its PID namespace, so the pipes
// reach EOF at once, unless something outside the sandbox holds a write
// end: that must not keep the supervisor, or the exit's record, waiting.
#define DRAIN_MS 2000

struct stream {
	int fd; // -1 once at its end
	const char *name;
	int tty; // a terminal's master: lines end "\r\n", its end reads EIO
	size_t len;
	char buf[ENTRY_MAX];
};

static struct {
	pid_t pid1;
	int pid1_reaped; // its pid may be another process's now
	int status_fd, lock_fd, logdir, exitdir, then_fd, log_fd;
	const char *log_name, *exit_name;
	char log_old[NAME_MAX + 1]; // log_name + ".1"
	long long log_max, log_size;
	struct stream out, err;
	// How the workload ended, from the status pipe; status_seen is 0
	// until a final line arrives.
	int status_seen, code, sig;
} sv;

// fail ends a supervisor that cannot do its work. The sandbox must not run
// on unsupervised: PID 1 is killed, and the owner lock, dropped with this
// process, leaves the rest to Recover.
__attribute__((noreturn)) static void fail(void) {
	if (sv.pid1 > 0 && !sv.pid1_reaped)
		kill(sv.pid1, SIGKILL);
	_exit(125);
}

static long long now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long monotonic_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

// timestamp writes t (ns since the epoch) as RFC 3339 in UTC with nine
// digits of fraction, a fixed width that sorts as text does.
static int timestamp(char *buf, size_t n, long long t) {
	time_t sec = (time_t)(t / 1000000000LL);
	struct tm tm;
	gmtime_r(&sec, &tm);
	return snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
	                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, t % 1000000000LL);
}

// open_log opens (creating) the log in its directory, for appending. Only
// a regular file will do: O_NOFOLLOW refuses a symbolic link, O_NONBLOCK
// keeps a FIFO from holding the open up, and fstat tells the rest.
static void open_log(void) {
	sv.log_fd = -1;
	sv.log_size = 0;
	int fd = openat(sv.logdir, sv.log_name, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return;
	}
	sv.log_fd = fd;
	sv.log_size = st.st_size;
}

// rotate makes the log the older file, replacing the one before, and
// starts a new one. If the rename fails the log is emptied instead: the
// bound on disk holds either way.
static void rotate(void) {
	if (sv.log_fd >= 0)
		close(sv.log_fd);
	if (renameat(sv.logdir, sv.log_name, sv.logdir, sv.log_old) < 0) {
		int fd = openat(sv.logdir, sv.log_name, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd >= 0)
			close(fd);
	}
	open_log();
}

// The entries of one read are gathered in out and written together: a
// workload writing many short lines must not cost the host a system call
// for each (the supervisor's CPU time is the host's, not the sandbox's).
// It holds at least one entry of the longest.
#define OUT_MAX (2 * ENTRY_MAX)
static char out[OUT_MAX];
static size_t out_len;

// flush writes what out holds to the log, appended (O_APPEND) in one
// write as a rule. What the disk refuses (full, failing) is dropped, and
// the log cut back to its last whole entry, so that a later entry never
// continues a broken one: output keeps being read, and the workload is
// not held up by the host's disk.
static void flush(void) {
	if (out_len == 0)
		return;
	if (sv.log_fd < 0)
		rotate();
	size_t done = 0;
	while (sv.log_fd >= 0 && done < out_len) {
		ssize_t w = write(sv.log_fd, out + done, out_len - done);
		if (w < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (w <= 0) {
			if (done > 0 && ftruncate(sv.log_fd, sv.log_size) < 0) {
				// The end of the log is not an entry's: start
				// afresh rather than append to it.
				close(sv.log_fd);
				sv.log_fd = -1;
			}
			out_len = 0;
			return;
		}
		done += (size_t)w;
	}
	if (sv.log_fd >= 0)
		sv.log_size += (long long)out_len;
	out_len = 0;
}

// entry adds one log entry, stamped with the time its text was read (ts,
// the header's start). The log is rotated before an entry that would take
// it past its bound.
static void entry(const struct stream *s, const char *ts, int partial, const char *text, size_t n) {
	char hdr[64];
	int h = snprintf(hdr, sizeof hdr, "%s %s %c ", ts, s->name, partial ? 'P' : 'F');
	size_t total = (size_t)h + n + 1;
	if (sv.log_size + (long long)(out_len + total) > sv.log_max) {
		flush();
		if (sv.log_size > 0)
			rotate();
	}
	if (out_len + total > sizeof out)
		flush();
	memcpy(out + out_len, hdr, (size_t)h);
	memcpy(out + out_len + h, text, n);
	out[out_len + total - 1] = '\n';
	out_len += total;
}

// flush_lines writes the buffer's complete lines as entries, and, if the
// buffer is full with no line end (or the stream has ended), what is
// left as a partial one.
static void flush_lines(struct stream *s, int ended) {
	char ts[48];
	timestamp(ts, sizeof ts, now_ns());
	size_t start = 0;
	for (;;) {
		char *nl = memchr(s->buf + start, '\n', s->len - start);
		if (!nl)
			break;
		size_t end = (size_t)(nl - s->buf), n = end - start;
		if (s->tty && n > 0 && s->buf[end - 1] == '\r')
			n--;
		entry(s, ts, 0, s->buf + start, n);
		start = end + 1;
	}
	if (start > 0) {
		memmove(s->buf, s->buf + start, s->len - start);
		s->len -= start;
	}
	if (s->len > 0 && (s->len == sizeof s->buf || ended)) {
		entry(s, ts, 1, s->buf, s->len);
		s->len = 0;
	}
	flush();
}

static void end_stream(struct stream *s) {
	flush_lines(s, 1);
	close(s->fd);
	s->fd = -1;
}

// pump reads what the stream has, once.
static void pump(struct stream *s) {
	ssize_t n = read(s->fd, s->buf + s->len, sizeof s->buf - s->len);
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return;
		// A terminal's master reads EIO once no process holds its
		// other side: its end.
		end_stream(s);
		return;
	}
	if (n == 0) {
		end_stream(s);
		return;
	}
	s->len += (size_t)n;
	flush_lines(s, 0);
}

// read_status reads PID 1's reports: the last "X" or "S" line says how the
// workload ended. The pipe carries nothing else once the workload runs.
// It returns 0 when there is nothing to read now.
static int read_status(void) {
	char buf[128];
	ssize_t n = read(sv.status_fd, buf, sizeof buf - 1);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n <= 0) {
		close(sv.status_fd);
		sv.status_fd = -1;
		return 0;
	}
	buf[n] = '\0';
	// Reports are short lines, each written whole: one read holds one.
	for (char *line = buf, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		int v;
		if (sscanf(line, "X %d", &v) == 1) {
			sv.status_seen = 1;
			sv.code = v & 0xff;
			sv.sig = 0;
		} else if (sscanf(line, "S %d", &v) == 1 && v > 0 && v < 128) {
			sv.status_seen = 1;
			sv.code = 128 + v;
			sv.sig = v;
		}
	}
	return 1;
}

// write_exit records how the workload ended: a temporary file, renamed
// over the exit file, so that a reader finds it whole or not at all.
static void write_exit(int wstatus) {
	int code = sv.code, sig = sv.sig;
	if (!sv.status_seen) {
		// PID 1 itself was killed (or died) before it could say.
		if (WIFSIGNALED(wstatus)) {
			sig = WTERMSIG(wstatus);
			code = 128 + sig;
		} else {
			code = WEXITSTATUS(wstatus);
			sig = 0;
		}
	}
	char ts[48], json[160], tmp[NAME_MAX + 16];
	timestamp(ts, sizeof ts, now_ns());
	int n;
	if (sig)
		n = snprintf(json, sizeof json, "{\"exitCode\":%d,\"signal\":%d,\"exited\":\"%s\"}\n", code, sig, ts);
	else
		n = snprintf(json, sizeof json, "{\"exitCode\":%d,\"exited\":\"%s\"}\n", code, ts);
	snprintf(tmp, sizeof tmp, ".%s.tmp", sv.exit_name);
	int fd = openat(sv.exitdir, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	ssize_t w = write(fd, json, (size_t)n);
	if (close(fd) < 0 || w != n) {
		unlinkat(sv.exitdir, tmp, 0);
		return;
	}
	if (renameat(sv.exitdir, tmp, sv.exitdir, sv.exit_name) < 0)
		unlinkat(sv.exitdir, tmp, 0);
}

static int parse_settings(void) {
	const char *set = getenv("_BERTH_SUPERVISE");
	sv.log_name = getenv("_BERTH_SUPERVISE_LOG");
	sv.exit_name = getenv("_BERTH_SUPERVISE_EXIT");
	if (!set || !sv.log_name || !sv.exit_name)
		return -1;
	int pid, tty;
	if (sscanf(set, "%d %d %d %d %d %d %d %d %lld %d", &pid, &sv.status_fd, &sv.out.fd, &sv.err.fd, &sv.lock_fd,
	           &sv.logdir, &sv.exitdir, &sv.then_fd, &sv.log_max, &tty) != 10)
		return -1;
	sv.pid1 = pid;
	if (pid <= 1 || sv.log_max < 2 * ENTRY_MAX)
		return -1;
	for (const char *name = sv.log_name; name; name = name == sv.log_name ? sv.exit_name : NULL)
		if (!*name || strchr(name, '/') || strlen(name) > NAME_MAX - 2 || !strcmp(name, ".") || !strcmp(name, ".."))
			return -1;
	snprintf(sv.log_old, sizeof sv.log_old, "%s.1", sv.log_name);
	int fds[] = {sv.status_fd, sv.out.fd, sv.err.fd, sv.lock_fd, sv.logdir, sv.exitdir, sv.then_fd};
	for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
		if (fds[i] >= 0 && fds[i] <= 2)
			return -1;
	if (sv.status_fd < 0 || sv.out.fd < 0 || sv.logdir < 0 || sv.exitdir < 0)
		return -1;
	sv.out.name = "stdout";
	sv.err.name = "stderr";
	sv.out.tty = tty;
	return 0;
}

// keep_only closes every descriptor but stdio and the settings' own: the
// host process had whatever else open, none of it this program's.
static void keep_only(void) {
	int keep[] = {sv.status_fd, sv.out.fd, sv.err.fd, sv.lock_fd, sv.logdir, sv.exitdir, sv.then_fd};
	int n = sizeof keep / sizeof keep[0], max = 2;
	for (int i = 0; i < n; i++)
		if (keep[i] > max)
			max = keep[i];
	for (int fd = 3; fd < max; fd++) {
		int kept = 0;
		for (int i = 0; i < n; i++)
			kept |= keep[i] == fd;
		if (!kept)
			close(fd);
	}
	syscall(SYS_close_range, (unsigned)max + 1, ~0U, 0);
	// Standard streams are /dev/null: a supervisor started from a
	// terminal must not hold it, and nothing reads what this writes.
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0)
		fail();
	for (int fd = 0; fd <= 2; fd++)
		if (dup2(null, fd) < 0)
			fail();
	if (null > 2)
		close(null);
	int nonblock[] = {sv.status_fd, sv.out.fd, sv.err.fd};
	for (int i = 0; i < 3; i++) {
		if (nonblock[i] < 0)
			continue;
		int fl = fcntl(nonblock[i], F_GETFL);
		if (fl < 0 || fcntl(nonblock[i], F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(nonblock[i], F_SETFD, FD_CLOEXEC) < 0)
			fail();
	}
	int cloexec[] = {sv.lock_fd, sv.logdir, sv.exitdir, sv.then_fd};
	for (int i = 0; i < 4; i++)
		if (cloexec[i] >= 0 && fcntl(cloexec[i], F_SETFD, FD_CLOEXEC) < 0)
			fail();
}

// then_exec becomes the program argv names, with the environment less
// berth's own variables (one of them would make it a supervisor again),
// the signal mask cleared and no descriptor but its stdio. The owner lock
// is closed first: the program reclaims the sandbox, which Recover does
// only for one whose owner has gone.
__attribute__((noreturn)) static void then_exec(char **argv) {
	if (!argv[0])
		_exit(0);
	extern char **environ;
	size_t n = 0;
	for (char **e = environ; *e; e++)
		n++;
	char **envp = calloc(n + 1, sizeof *envp);
	if (!envp)
		_exit(126);
	size_t k = 0;
	for (char **e = environ; *e; e++)
		if (strncmp(*e, "_BERTH_", 7) != 0)
			envp[k++] = *e;
	envp[k] = NULL;
	// A signal sent since the loop last read the signalfd is pending:
	// unblocked, with its default action, a late SIGTERM or SIGHUP would
	// end this process before Then runs. Ignoring a pending signal
	// discards it.
	sigset_t pending;
	if (sigpending(&pending) == 0)
		for (int sig = 1; sig < NSIG; sig++)
			if (sig != SIGKILL && sig != SIGSTOP && sigismember(&pending, sig) == 1) {
				signal(sig, SIG_IGN);
				signal(sig, SIG_DFL);
			}
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	// Everything but the program's own descriptor, itself close-on-exec.
	if (sv.then_fd > 3)
		syscall(SYS_close_range, 3U, (unsigned)sv.then_fd - 1, 0);
	syscall(SYS_close_range, (unsigned)sv.then_fd + 1, ~0U, 0);
	if (sv.then_fd >= 0) {
		syscall(SYS_execveat, sv.then_fd, "", argv, envp, AT_EMPTY_PATH);
		// A script cannot run from a close-on-exec descriptor (its
		// interpreter would find it closed): by its path then.
		close(sv.then_fd);
	}
	execve(argv[0], argv, envp);
	_exit(127);
}

// default_action gives sig its default action, through the system call:
// glibc's signal() refuses the two real-time signals it keeps for itself
// (32 and 33), and a starter may have ignored those too. A zeroed
// kernel sigaction is SIG_DFL, no flags and an empty mask on every
// architecture.
static void default_action(int sig) {
	unsigned long act[8] = {0};
	syscall(SYS_rt_sigaction, sig, act, NULL, (size_t)8);
}

__attribute__((noreturn)) void berth_supervise(char **argv) {
	prctl(PR_SET_NAME, "berth-supervise", 0, 0, 0);
	sv.log_fd = -1;
	if (parse_settings() < 0) {
		const char *set = getenv("_BERTH_SUPERVISE");
		int pid;
		if (set && sscanf(set, "%d", &pid) == 1 && pid > 1)
			sv.pid1 = pid;
		fail();
	}
	keep_only();

	// Every signal is taken through a signalfd: SIGCHLD to reap; SIGTERM,
	// SIGINT and SIGQUIT passed on to PID 1, which passes them to the
	// workload, so that stopping the supervisor stops the workload
	// gracefully and its end is still recorded; the rest ignored,
	// SIGHUP above all: the terminal a detached sandbox was started from
	// may go away. Only SIGKILL ends the supervisor, and Recover then
	// reclaims the sandbox as for any owner that died.
	// Signals the starter ignored (a shell's background job ignores
	// SIGINT and SIGQUIT) go back to their defaults, which Then and the
	// programs it starts inherit. (Blocked, they reach the signalfd
	// either way.)
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			default_action(sig);
	sigset_t all;
	sigfillset(&all);
	if (sigprocmask(SIG_BLOCK, &all, NULL) < 0)
		fail();
	int sfd = signalfd(-1, &all, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		fail();
	open_log();

	int reaped = 0, wstatus = 0;
	long long deadline = 0;
	for (;;) {
		// PID 1 may have ended before this program started, its
		// SIGCHLD gone to the Go runtime: look before every wait.
		// Other children of the host process are reaped as well.
		for (;;) {
			int st;
			pid_t p = waitpid(-1, &st, WNOHANG);
			if (p <= 0)
				break;
			if (p == sv.pid1 && !reaped) {
				reaped = sv.pid1_reaped = 1;
				wstatus = st;
				deadline = monotonic_ms() + DRAIN_MS;
			}
		}
		if (reaped) {
			// Its last report is in the pipe, whose end is PID 1's
			// end: read it whole (unless the write end is held
			// elsewhere, which the drain's bound covers).
			while (sv.status_fd >= 0 && read_status())
				;
			if ((sv.out.fd < 0 && sv.err.fd < 0) || monotonic_ms() >= deadline)
				break;
		}
		struct pollfd pfd[4];
		int n = 0;
		pfd[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
		int is = -1, io = -1, ie = -1;
		if (sv.status_fd >= 0)
			is = n, pfd[n++] = (struct pollfd){.fd = sv.status_fd, .events = POLLIN};
		if (sv.out.fd >= 0)
			io = n, pfd[n++] = (struct pollfd){.fd = sv.out.fd, .events = POLLIN};
		if (sv.err.fd >= 0)
			ie = n, pfd[n++] = (struct pollfd){.fd = sv.err.fd, .events = POLLIN};
		int timeout = -1;
		if (reaped) {
			long long left = deadline - monotonic_ms();
			timeout = left < 0 ? 0 : (int)left;
		}
		if (poll(pfd, (nfds_t)n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			fail();
		}
		if (pfd[0].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) == sizeof si) {
				int sig = (int)si.ssi_signo;
				if (!reaped && (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT))
					kill(sv.pid1, sig);
			}
		}
		if (is >= 0 && pfd[is].revents)
			read_status();
		if (io >= 0 && pfd[io].revents)
			pump(&sv.out);
		if (ie >= 0 && pfd[ie].revents)
			pump(&sv.err);
	}
	// What is still buffered of a stream held open from outside.
	if (sv.out.fd >= 0)
		end_stream(&sv.out);
	if (sv.err.fd >= 0)
		end_stream(&sv.err);
	if (sv.log_fd >= 0)
		close(sv.log_fd);
	write_exit(wstatus);
	close(sfd);
	close(sv.logdir);
	close(sv.exitdir);
	if (sv.lock_fd >= 0)
		close(sv.lock_fd);
	then_exec(argv + 1);
}
