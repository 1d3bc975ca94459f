// The supervisor of a detached sandbox (supervise.c), which the
// constructor in nsinit.c runs for _BERTH_INIT=supervise.
#ifndef BERTH_SUPERVISE_H
#define BERTH_SUPERVISE_H

// SUPERVISE_ENTRY_MAX is the most text one entry of the log holds; a
// longer line is split into "P" entries of this size.
#define SUPERVISE_ENTRY_MAX 16384

// berth_supervise runs the supervisor; argv is the process's, whose
// argv[1:] is the program to exec once the workload has ended.
__attribute__((noreturn)) void berth_supervise(char **argv);

#endif
