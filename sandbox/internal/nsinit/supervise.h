// The supervisor of a detached sandbox (supervise.c), which the
// constructor in nsinit.c runs for _BERTH_INIT=supervise.
#ifndef BERTH_SUPERVISE_H
#define BERTH_SUPERVISE_H

// berth_supervise runs the supervisor; argv is the process's, whose
// argv[1:] is the program to exec once the workload has ended.
__attribute__((noreturn)) void berth_supervise(char **argv);

#endif
