// ucounts takes, inside a sandbox, what the kernel counts per user across
// the host, up to a cap the test sets, and says how far it got:
//
//	ucounts mq CAP MSGSIZE  POSIX message queues of one MSGSIZE message,
//	                        until CAP bytes of messages or a refusal
//	ucounts inotify CAP     inotify instances
//	ucounts watches CAP     inotify watches on one instance
//
// It prints "<what> <count> <errno name or cap>", then holds what it took
// until its standard input ends, so that the host can look at it.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

static const char *why(int err) {
	switch (err) {
	case 0: return "cap";
	case EMFILE: return "EMFILE";
	case ENOSPC: return "ENOSPC";
	case ENFILE: return "ENFILE";
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	}
	return strerror(err);
}

static void hold(void) {
	fflush(stdout);
	char c;
	while (read(0, &c, 1) > 0)
		;
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	long cap = atol(argv[2]);
	int n = 0, err = 0;
	if (strcmp(argv[1], "mq") == 0 && argc == 4) {
		long size = atol(argv[3]);
		struct mq_attr attr = {.mq_maxmsg = 1, .mq_msgsize = size};
		char name[32];
		for (; (n + 1) * size <= cap; n++) {
			snprintf(name, sizeof name, "/ucounts-%d", n);
			if (mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, &attr) < 0) {
				err = errno;
				break;
			}
		}
		printf("mq %d %s\n", n, why(err));
		hold();
		for (int i = 0; i < n; i++) {
			snprintf(name, sizeof name, "/ucounts-%d", i);
			mq_unlink(name);
		}
		return 0;
	}
	if (strcmp(argv[1], "inotify") == 0) {
		for (; n < cap; n++)
			if (inotify_init1(IN_CLOEXEC) < 0) {
				err = errno;
				break;
			}
		printf("inotify %d %s\n", n, why(err));
		hold();
		return 0;
	}
	if (strcmp(argv[1], "watches") == 0) {
		int fd = inotify_init1(IN_CLOEXEC);
		if (fd < 0) {
			perror("inotify_init1");
			return 1;
		}
		char path[64];
		for (; n < cap; n++) {
			snprintf(path, sizeof path, "/tmp/ucounts-%d", n);
			int f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
			if (f < 0) {
				perror(path);
				return 1;
			}
			close(f);
			if (inotify_add_watch(fd, path, IN_MODIFY) < 0) {
				err = errno;
				break;
			}
		}
		printf("watches %d %s\n", n, why(err));
		hold();
		return 0;
	}
	return 2;
}
