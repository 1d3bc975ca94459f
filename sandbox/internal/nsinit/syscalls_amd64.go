package nsinit

import (
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/security"
)

// StandbySyscalls are the system calls a standby init's workload process
// makes after loading its seccomp filter early, while it waits: reading
// the workload's message, placing its descriptors, making its terminal,
// and everything exec_workload does up to the exec. A filter that allows
// them all can be loaded ahead of the workload. With landlock, the calls
// that confine the process are added.
func StandbySyscalls(landlock bool) []security.Syscall {
	arch := uint32(unix.AUDIT_ARCH_X86_64)
	nrs := []int{
		unix.SYS_RECVMSG, unix.SYS_READ, unix.SYS_WRITE, unix.SYS_CLOSE, unix.SYS_DUP2,
		unix.SYS_BRK, unix.SYS_MMAP, unix.SYS_MUNMAP, unix.SYS_MREMAP,
		unix.SYS_OPENAT, unix.SYS_FCHOWN, unix.SYS_SENDMSG,
		unix.SYS_RT_SIGACTION, unix.SYS_RT_SIGPROCMASK, unix.SYS_SETSID, unix.SYS_PRLIMIT64,
		unix.SYS_ACCESS, unix.SYS_SETGROUPS, unix.SYS_SETRESGID, unix.SYS_SETRESUID, unix.SYS_CAPSET,
		unix.SYS_CHDIR, unix.SYS_CLOSE_RANGE, unix.SYS_EXECVE, unix.SYS_EXIT_GROUP,
	}
	if landlock {
		nrs = append(nrs, unix.SYS_LANDLOCK_CREATE_RULESET, unix.SYS_LANDLOCK_ADD_RULE, unix.SYS_LANDLOCK_RESTRICT_SELF)
	}
	var calls []security.Syscall
	for _, nr := range nrs {
		calls = append(calls, security.Syscall{Nr: uint32(nr), Arch: arch})
	}
	// The calls whose arguments a profile may look at, with the ones
	// the init passes.
	withArgs := [][7]uint64{
		{unix.SYS_FCNTL, 0, unix.F_DUPFD_CLOEXEC},
		{unix.SYS_IOCTL, 0, unix.TIOCSCTTY},
		{unix.SYS_IOCTL, 0, unix.TIOCSPTLCK},
		{unix.SYS_IOCTL, 0, unix.TIOCGPTN},
		{unix.SYS_PRCTL, unix.PR_CAPBSET_READ},
		{unix.SYS_PRCTL, unix.PR_CAPBSET_DROP},
		{unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1},
		{unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0},
		{unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL},
		{unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE},
		{unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1},
	}
	for _, w := range withArgs {
		c := security.Syscall{Nr: uint32(w[0]), Arch: arch}
		copy(c.Args[:], w[1:])
		calls = append(calls, c)
	}
	return calls
}

// ExecSyscalls are the system calls a workload's process makes once its
// seccomp filter is loaded, up to and including the exec, and those it
// needs to report a failed exec: a filter that refuses one can never start
// a program, and the process would die of it, or fail, before saying why.
// With noNewPrivs the filter is loaded just before the exec; without, it
// is loaded while the process may still do so (it takes CAP_SYS_ADMIN
// then), before the privileges are dropped, which it must also allow.
func ExecSyscalls(noNewPrivs bool) []security.Syscall {
	arch := uint32(unix.AUDIT_ARCH_X86_64)
	// Pointers are never 0; a rule may look at them all the same.
	const ptr = 0x7ffd_0000_1000
	calls := [][7]uint64{
		{unix.SYS_EXECVE, ptr, ptr, ptr},
		{unix.SYS_WRITE, 2, ptr, 64},
		{unix.SYS_EXIT_GROUP, 126},
		{unix.SYS_EXIT_GROUP, 127},
	}
	if !noNewPrivs {
		calls = append(calls, [][7]uint64{
			{unix.SYS_PRCTL, unix.PR_CAPBSET_READ},
			{unix.SYS_PRCTL, unix.PR_CAPBSET_DROP},
			{unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1},
			{unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0},
			{unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL},
			{unix.SYS_SETGROUPS}, {unix.SYS_SETRESGID}, {unix.SYS_SETRESUID},
			{unix.SYS_CAPSET, ptr, ptr},
			{unix.SYS_CHDIR, ptr},
			{unix.SYS_CLOSE_RANGE},
		}...)
	}
	out := make([]security.Syscall, len(calls))
	for i, c := range calls {
		out[i] = security.Syscall{Nr: uint32(c[0]), Arch: arch}
		copy(out[i].Args[:], c[1:])
	}
	return out
}
