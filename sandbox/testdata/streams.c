// streams tries, from inside a sandbox, what a workload could do to the
// host's files behind its standard streams, and reports each result on
// stderr as "NAME RESULT"; then it writes numbered lines to stdout.
//
//	streams LINES
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

static void report(const char *name, long r) {
	if (r < 0)
		fprintf(stderr, "%s %s\n", name, strerrorname_np(errno) ? strerrorname_np(errno) : "E?");
	else
		fprintf(stderr, "%s OK\n", name);
}

static const char *kind(int fd) {
	struct stat st;
	if (fstat(fd, &st) < 0)
		return "closed";
	switch (st.st_mode & S_IFMT) {
	case S_IFIFO: return "fifo";
	case S_IFREG: return "file";
	case S_IFCHR: return "chardev";
	case S_IFSOCK: return "socket";
	}
	return "other";
}

int main(int argc, char **argv) {
	int lines = argc > 1 ? atoi(argv[1]) : 10;
	setvbuf(stderr, NULL, _IONBF, 0);
	fprintf(stderr, "kind %s %s %s\n", kind(0), kind(1), kind(2));

	// What the host wrote to the file before: reopened for reading.
	int fd = open("/proc/self/fd/1", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		report("reread", -1);
	} else {
		char buf[4096];
		ssize_t n = read(fd, buf, sizeof buf - 1);
		if (n < 0) {
			report("reread", -1);
		} else {
			buf[n] = 0;
			fprintf(stderr, "reread %s\n", strstr(buf, "host secret") ? "SECRET" : "nothing");
		}
		close(fd);
	}
	// Overwriting it: at its start, through a reopened descriptor.
	fd = open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		report("overwrite", -1);
	else {
		report("overwrite", pwrite(fd, "HOST", 4, 0));
		close(fd);
	}
	report("seek", lseek(1, 0, SEEK_SET));
	report("truncate", ftruncate(1, 0));
	// The input: reopened for writing.
	fd = open("/proc/self/fd/0", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		report("stdin-write", -1);
	else {
		report("stdin-write", pwrite(fd, "HOST", 4, 0));
		close(fd);
	}
	char c = ' ';
	report("tiocsti", ioctl(0, TIOCSTI, &c));

	for (int i = 1; i <= lines; i++) {
		printf("line %d\n", i);
	}
	return 0;
}
