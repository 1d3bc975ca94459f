package security

import (
	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// newSyscalls are system calls a libseccomp older than the kernel may not
// know, with their numbers. From pidfd_send_signal (424, Linux 5.1) on,
// Linux gives a new call the same number on every architecture (MIPS adds
// its ABI's base, which is why abis leaves MIPS out), so one number serves
// them all. A profile may name these whatever libseccomp is installed, and
// Compile enforces them itself where libseccomp cannot.
var newSyscalls = [...]struct {
	name string
	nr   uint32
}{
	{"pidfd_send_signal", 424},
	{"io_uring_setup", 425},
	{"io_uring_enter", 426},
	{"io_uring_register", 427},
	{"open_tree", 428},
	{"move_mount", 429},
	{"fsopen", 430},
	{"fsconfig", 431},
	{"fsmount", 432},
	{"fspick", 433},
	{"pidfd_open", 434},
	{"clone3", 435},
	{"close_range", 436},
	{"openat2", 437},
	{"pidfd_getfd", 438},
	{"faccessat2", 439},
	{"process_madvise", 440},
	{"epoll_pwait2", 441},
	{"mount_setattr", 442},
	{"quotactl_fd", 443},
	{"landlock_create_ruleset", 444},
	{"landlock_add_rule", 445},
	{"landlock_restrict_self", 446},
	{"memfd_secret", 447},
	{"process_mrelease", 448},
	{"futex_waitv", 449},
	{"set_mempolicy_home_node", 450},
	{"cachestat", 451},
	{"fchmodat2", 452},
	{"map_shadow_stack", 453},
	{"futex_wake", 454},
	{"futex_wait", 455},
	{"futex_requeue", 456},
	{"statmount", 457},
	{"listmount", 458},
	{"lsm_get_self_attr", 459},
	{"lsm_set_self_attr", 460},
	{"lsm_list_modules", 461},
	{"mseal", 462},
	{"setxattrat", 463},
	{"getxattrat", 464},
	{"listxattrat", 465},
	{"removexattrat", 466},
	{"open_tree_attr", 467},
	{"file_getattr", 468},
	{"file_setattr", 469},
}

// newestSyscall is the highest number in newSyscalls. A filter whose
// default denies answers ENOSYS above it (see Compile).
const newestSyscall = 469

// uretprobe (Linux 6.11) is x86-64's alone, numbered in its own table.
const (
	uretprobeName = "uretprobe"
	uretprobeNr   = 335
)

// x32Bit marks the system call numbers of the x32 ABI, which shares the
// audit architecture of x86-64.
const x32Bit = 0x40000000

// abi is what Compile needs to know of an architecture to filter calls
// libseccomp cannot name.
type abi struct {
	arch  seccomp.ScmpArch
	audit uint32 // seccomp_data.arch
	x32   bool   // numbers carry x32Bit
	// private is where the architecture's own calls start above the
	// shared table (ARM's cacheflush, set_tls...), 0 if it has none: a
	// number there is not a future call.
	private uint32
}

var abis = [...]abi{
	{arch: seccomp.ArchAMD64, audit: unix.AUDIT_ARCH_X86_64},
	{arch: seccomp.ArchX32, audit: unix.AUDIT_ARCH_X86_64, x32: true, private: x32Bit | 512},
	{arch: seccomp.ArchX86, audit: unix.AUDIT_ARCH_I386},
	{arch: seccomp.ArchARM64, audit: unix.AUDIT_ARCH_AARCH64},
	{arch: seccomp.ArchARM, audit: unix.AUDIT_ARCH_ARM, private: 0x0f0000},
	{arch: seccomp.ArchRISCV64, audit: unix.AUDIT_ARCH_RISCV64},
	{arch: seccomp.ArchPPC64LE, audit: unix.AUDIT_ARCH_PPC64LE},
	{arch: seccomp.ArchPPC64, audit: unix.AUDIT_ARCH_PPC64},
	{arch: seccomp.ArchPPC, audit: unix.AUDIT_ARCH_PPC},
	{arch: seccomp.ArchS390X, audit: unix.AUDIT_ARCH_S390X},
	{arch: seccomp.ArchS390, audit: unix.AUDIT_ARCH_S390},
}

// abiOf returns what berth knows of architecture a.
func abiOf(a seccomp.ScmpArch) (abi, bool) {
	for _, b := range abis {
		if b.arch == a {
			return b, true
		}
	}
	return abi{}, false
}

// lookupNewSyscall reports whether name is in berth's own table.
func lookupNewSyscall(name string) (uint32, bool) {
	if name == uretprobeName {
		return uretprobeNr, true
	}
	for _, s := range newSyscalls {
		if s.name == name {
			return s.nr, true
		}
	}
	return 0, false
}

// newSyscallNumber returns the number of the call name of berth's table on
// architecture b, with x32's bit where it applies.
func newSyscallNumber(name string, b abi) (uint32, bool) {
	if name == uretprobeName {
		return uretprobeNr, b.arch == seccomp.ArchAMD64
	}
	nr, ok := lookupNewSyscall(name)
	if ok && b.x32 {
		nr |= x32Bit
	}
	return nr, ok
}

// compatArches returns the architectures other than its own whose system
// calls a kernel for native can take.
func compatArches(native seccomp.ScmpArch) []seccomp.ScmpArch {
	switch native {
	case seccomp.ArchAMD64:
		return []seccomp.ScmpArch{seccomp.ArchX86, seccomp.ArchX32}
	case seccomp.ArchARM64:
		return []seccomp.ScmpArch{seccomp.ArchARM}
	case seccomp.ArchS390X:
		return []seccomp.ScmpArch{seccomp.ArchS390}
	case seccomp.ArchPPC64:
		return []seccomp.ScmpArch{seccomp.ArchPPC}
	case seccomp.ArchMIPS64:
		return []seccomp.ScmpArch{seccomp.ArchMIPS, seccomp.ArchMIPS64N32}
	case seccomp.ArchMIPS64N32:
		return []seccomp.ScmpArch{seccomp.ArchMIPS, seccomp.ArchMIPS64}
	case seccomp.ArchMIPSEL64:
		return []seccomp.ScmpArch{seccomp.ArchMIPSEL, seccomp.ArchMIPSEL64N32}
	case seccomp.ArchMIPSEL64N32:
		return []seccomp.ScmpArch{seccomp.ArchMIPSEL, seccomp.ArchMIPSEL64}
	case seccomp.ArchPARISC64:
		return []seccomp.ScmpArch{seccomp.ArchPARISC}
	}
	return nil
}
