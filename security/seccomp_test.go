package security

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// dockerCapNames is the capability set Docker gives a container.
var dockerCapNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

func capMask(t testing.TB, names ...string) uint64 {
	t.Helper()
	m, err := CapabilityMask(names)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// compileFor compiles p as Compile would on a machine of architecture
// native running kernel.
func compileFor(t testing.TB, p *SeccompProfile, caps uint64, native seccomp.ScmpArch, kernel string) []byte {
	t.Helper()
	v, err := parseKernelVersion(kernel)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := p.compile(target{caps: caps, kernel: v, native: native})
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

// decide returns what prog does with the call name on architecture a, or
// "absent" if a has no such call.
func decide(t testing.TB, prog []byte, a seccomp.ScmpArch, name string, args ...uint64) string {
	t.Helper()
	b, ok := abiOf(a)
	if !ok {
		t.Fatalf("no audit architecture for %s", a)
	}
	var nr uint32
	if n, err := seccomp.GetSyscallFromNameByArch(name, a); err == nil {
		if n < 0 {
			return "absent"
		}
		nr = uint32(n)
	} else if nr, ok = newSyscallNumber(name, b); !ok {
		return "absent"
	}
	return decideNr(t, prog, b.audit, nr, args...)
}

func decideNr(t testing.TB, prog []byte, audit, nr uint32, args ...uint64) string {
	t.Helper()
	c := Syscall{Nr: nr, Arch: audit}
	copy(c.Args[:], args)
	v, err := Evaluate(prog, c)
	if err != nil {
		t.Fatal(err)
	}
	return actionName(v)
}

const (
	allow   = "ALLOW"
	eperm   = "ERRNO(EPERM)"
	enosys  = "ERRNO(ENOSYS)"
	killAll = "KILL_PROCESS"
)

// escapes are calls that reach past a container: Docker's default refuses
// them to a process with Docker's capabilities.
var escapes = []string{
	"acct", "add_key", "bpf", "clock_settime", "clock_settime64", "delete_module",
	"fanotify_init", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "init_module",
	"io_uring_enter", "io_uring_register", "io_uring_setup", "ioperm", "iopl", "kcmp",
	"kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount",
	"mount_setattr", "move_mount", "open_by_handle_at", "open_tree", "perf_event_open",
	"pidfd_getfd", "pivot_root", "quotactl", "quotactl_fd", "reboot", "request_key",
	"setdomainname", "sethostname", "setns", "settimeofday", "stime", "swapoff", "swapon",
	"syslog", "umount", "umount2", "unshare", "userfaultfd", "vhangup",
	"listmount", "statmount", "mseal",
}

func TestDefaultProfileDecisions(t *testing.T) {
	docker := compileFor(t, DefaultSeccompProfile(), capMask(t, dockerCapNames...), seccomp.ArchAMD64, "6.1")
	all := compileFor(t, DefaultSeccompProfile(), capMask(t, "ALL"), seccomp.ArchAMD64, "6.1")
	for _, a := range []seccomp.ScmpArch{seccomp.ArchAMD64, seccomp.ArchX86, seccomp.ArchX32} {
		t.Run(a.String(), func(t *testing.T) {
			check := func(prog []byte, want, name string, args ...uint64) {
				t.Helper()
				if got := decide(t, prog, a, name, args...); got != want && got != "absent" {
					t.Errorf("%s%v: %s, want %s", name, args, got, want)
				}
			}
			for _, name := range allowedSyscalls {
				check(docker, allow, name)
			}
			for _, name := range escapes {
				check(docker, eperm, name)
			}
			check(docker, allow, "chroot") // Docker grants CAP_SYS_CHROOT
			check(docker, allow, "ptrace")
			check(docker, allow, "socket", unix.AF_INET)
			check(docker, allow, "socket", unix.AF_PACKET)
			check(docker, eperm, "socket", unix.AF_VSOCK)
			for _, v := range dockerPersonalities {
				check(docker, allow, "personality", v)
			}
			check(docker, eperm, "personality", 0x0040000) // ADDR_NO_RANDOMIZE
			check(docker, allow, "clone", unix.CLONE_VM|unix.CLONE_FS|unix.CLONE_FILES|unix.CLONE_SIGHAND|unix.CLONE_THREAD)
			for _, flag := range []uint64{unix.CLONE_NEWNS, unix.CLONE_NEWUSER, unix.CLONE_NEWNET, unix.CLONE_NEWPID, unix.CLONE_NEWCGROUP} {
				check(docker, eperm, "clone", flag|uint64(unix.SIGCHLD))
				check(all, allow, "clone", flag|uint64(unix.SIGCHLD))
			}
			check(docker, enosys, "clone3")
			check(all, allow, "clone3")
			for _, name := range []string{"mount", "unshare", "setns", "bpf", "perf_event_open", "reboot", "init_module", "open_by_handle_at", "settimeofday", "acct", "syslog"} {
				check(all, allow, name)
			}
			for _, name := range []string{"keyctl", "add_key", "kexec_load", "swapon", "pivot_root", "userfaultfd", "io_uring_setup"} {
				check(all, eperm, name) // not even with every capability
			}
		})
	}

	// Calls newer than the profile fail as a kernel without them would.
	for nr := uint32(newestSyscall + 1); nr < 1024; nr++ {
		if got := decideNr(t, docker, unix.AUDIT_ARCH_X86_64, nr); got != enosys {
			t.Fatalf("x86-64 call %d: %s, want %s", nr, got, enosys)
		}
		if got := decideNr(t, docker, unix.AUDIT_ARCH_I386, nr); got != enosys {
			t.Fatalf("x86 call %d: %s, want %s", nr, got, enosys)
		}
		if got := decideNr(t, docker, unix.AUDIT_ARCH_X86_64, nr|x32Bit); nr < 512 && got != enosys {
			t.Fatalf("x32 call %d: %s, want %s", nr, got, enosys)
		}
	}
	// uretprobe is in berth's table only, and x86-64's alone.
	if got := decideNr(t, docker, unix.AUDIT_ARCH_X86_64, uretprobeNr); got != allow {
		t.Errorf("uretprobe: %s, want %s", got, allow)
	}
	if got := decideNr(t, docker, unix.AUDIT_ARCH_AARCH64, 0); got != killAll {
		t.Errorf("a call from aarch64: %s, want %s", got, killAll)
	}
}

func TestStrictProfileDecisions(t *testing.T) {
	for _, caps := range []uint64{0, capMask(t, "ALL")} {
		prog := compileFor(t, StrictSeccompProfile(), caps, seccomp.ArchAMD64, "6.1")
		for _, a := range []seccomp.ScmpArch{seccomp.ArchAMD64, seccomp.ArchX86} {
			check := func(want, name string, args ...uint64) {
				t.Helper()
				if got := decide(t, prog, a, name, args...); got != want && got != "absent" {
					t.Errorf("%s, caps %#x: %s%v: %s, want %s", a, caps, name, args, got, want)
				}
			}
			for _, name := range append(slices.Clone(escapes), "chroot", "ptrace", "process_vm_readv",
				"process_vm_writev", "modify_ldt", "vmsplice", "name_to_handle_at") {
				check(eperm, name)
			}
			check(enosys, "socketcall", 1) // SYS_SOCKET
			for _, name := range []string{"read", "openat", "execve", "mmap", "futex", "arch_prctl", "rt_sigreturn", "wait4", "exit_group"} {
				check(allow, name)
			}
			for _, family := range []uint64{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6, unix.AF_NETLINK} {
				check(allow, "socket", family)
			}
			for _, family := range []uint64{unix.AF_PACKET, unix.AF_VSOCK, unix.AF_ALG, unix.AF_TIPC} {
				check(eperm, "socket", family)
			}
			check(allow, "personality", 0)
			check(allow, "personality", 0xffffffff)
			check(eperm, "personality", 8)
			check(allow, "clone", uint64(unix.SIGCHLD))
			check(eperm, "clone", unix.CLONE_NEWUSER|uint64(unix.SIGCHLD))
			check(enosys, "clone3")
		}
	}
}

func TestCompileOnOtherArchitectures(t *testing.T) {
	prog := compileFor(t, DefaultSeccompProfile(), capMask(t, dockerCapNames...), seccomp.ArchARM64, "6.1")
	for _, tc := range []struct {
		a    seccomp.ScmpArch
		name string
		want string
	}{
		{seccomp.ArchARM64, "getpid", allow},
		{seccomp.ArchARM64, "mount", eperm},
		{seccomp.ArchARM64, "clone3", enosys},
		{seccomp.ArchARM, "getpid", allow},
		{seccomp.ArchARM, "cacheflush", allow},
		{seccomp.ArchARM, "set_tls", allow},
		{seccomp.ArchARM, "mount", eperm},
	} {
		if got := decide(t, prog, tc.a, tc.name); got != tc.want {
			t.Errorf("%s %s: %s, want %s", tc.a, tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		audit, nr uint32
		want      string
	}{
		{unix.AUDIT_ARCH_AARCH64, newestSyscall + 1, enosys},
		{unix.AUDIT_ARCH_AARCH64, uretprobeNr, eperm}, // x86-64's number, not arm64's
		{unix.AUDIT_ARCH_ARM, newestSyscall + 1, enosys},
		{unix.AUDIT_ARCH_ARM, 0x0f0000 - 1, enosys},
		{unix.AUDIT_ARCH_ARM, 0x0f0010, eperm}, // ARM's own calls are not future ones
		{unix.AUDIT_ARCH_X86_64, 39, killAll},
	} {
		if got := decideNr(t, prog, tc.audit, tc.nr); got != tc.want {
			t.Errorf("audit %#x call %#x: %s, want %s", tc.audit, tc.nr, got, tc.want)
		}
	}
}

// TestNewSyscallsFromTable checks calls libseccomp may not know, which
// berth's preamble filters.
func TestNewSyscallsFromTable(t *testing.T) {
	p, err := ParseSeccompProfile([]byte(`{
		"defaultAction": "SCMP_ACT_ERRNO",
		"architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
		"syscalls": [
			{"names": ["listmount", "getpid"], "action": "SCMP_ACT_ALLOW"},
			{"names": ["statmount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
			{"names": ["mseal"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}
		]
	}`))
	if err != nil {
		t.Fatal(err)
	}
	prog := compileFor(t, p, 0, seccomp.ArchAMD64, "6.1")
	for _, tc := range []struct {
		audit, nr uint32
		want      string
	}{
		{unix.AUDIT_ARCH_X86_64, 458, allow},
		{unix.AUDIT_ARCH_X86_64, 457, "ERRNO(EACCES)"},
		{unix.AUDIT_ARCH_X86_64, 462, eperm}, // its rule tests arguments: left out
		{unix.AUDIT_ARCH_X86_64, 459, eperm},
		{unix.AUDIT_ARCH_X86_64, 39, allow},
		{unix.AUDIT_ARCH_X86_64, newestSyscall + 1, enosys},
		{unix.AUDIT_ARCH_I386, 458, allow},
		{unix.AUDIT_ARCH_I386, 20, allow},
		{unix.AUDIT_ARCH_X86_64, x32Bit | 458, allow},
		{unix.AUDIT_ARCH_X86_64, x32Bit | 457, "ERRNO(EACCES)"},
		{unix.AUDIT_ARCH_X86_64, x32Bit | 39, allow},
		{unix.AUDIT_ARCH_X86_64, x32Bit | (newestSyscall + 1), enosys},
		{unix.AUDIT_ARCH_X86_64, x32Bit | 520, eperm}, // x32's own execve, not a future call
		{unix.AUDIT_ARCH_AARCH64, 458, killAll},       // not an architecture x86-64 runs
	} {
		if got := decideNr(t, prog, tc.audit, tc.nr); got != tc.want {
			t.Errorf("audit %#x call %#x: %s, want %s", tc.audit, tc.nr, got, tc.want)
		}
	}

	// Denying by default's opposite: a rule that tests arguments of a call
	// the preamble filters applies to every call, and nothing is ENOSYS.
	p, err = ParseSeccompProfile([]byte(`{
		"defaultAction": "SCMP_ACT_ALLOW",
		"syscalls": [{"names": ["listmount"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 3, "value": 0, "op": "SCMP_CMP_NE"}]}]
	}`))
	if err != nil {
		t.Fatal(err)
	}
	prog = compileFor(t, p, 0, seccomp.ArchAMD64, "6.1")
	if got := decideNr(t, prog, unix.AUDIT_ARCH_X86_64, 458); got != eperm {
		t.Errorf("listmount: %s, want %s", got, eperm)
	}
	if got := decideNr(t, prog, unix.AUDIT_ARCH_X86_64, newestSyscall+1); got != allow {
		t.Errorf("call %d: %s, want %s", newestSyscall+1, got, allow)
	}
}

// On 32-bit x86, socket is also made through socketcall, where a filter
// cannot see its arguments.
func TestMultiplexedCalls(t *testing.T) {
	const (
		x86Socket     = 359
		x86Connect    = 362
		x86Socketcall = 102
		sysSocket     = 1 // socketcall's numbers
		sysConnect    = 3
	)
	for _, tc := range []struct {
		name string
		nr   uint32
		args []uint64
		want string
	}{
		// Docker's profile allows socketcall, and so whatever it does.
		{"default", x86Socketcall, []uint64{sysSocket}, allow},
		{"default", x86Socket, []uint64{unix.AF_VSOCK}, eperm},
		{"default", x86Socket, []uint64{unix.AF_INET}, allow},
		{"strict", x86Socketcall, []uint64{sysSocket}, enosys},
		{"strict", x86Socket, []uint64{unix.AF_PACKET}, eperm},
		{"strict", x86Socket, []uint64{unix.AF_INET}, allow},
		// A profile that does not name socketcall has it closed rather
		// than let socket's test be skipped through it.
		{"custom", x86Socketcall, []uint64{sysSocket}, enosys},
		{"custom", x86Socketcall, []uint64{sysConnect}, enosys},
		{"custom", x86Socket, []uint64{unix.AF_UNIX}, allow},
		{"custom", x86Socket, []uint64{unix.AF_INET}, eperm},
		{"custom", x86Connect, nil, allow},
	} {
		var p *SeccompProfile
		switch tc.name {
		case "default":
			p = DefaultSeccompProfile()
		case "strict":
			p = StrictSeccompProfile()
		default:
			var err error
			p, err = ParseSeccompProfile([]byte(`{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86"], "syscalls": [
				{"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
				{"names": ["connect"], "action": "SCMP_ACT_ALLOW"}]}`))
			if err != nil {
				t.Fatal(err)
			}
		}
		prog := compileFor(t, p, capMask(t, dockerCapNames...), seccomp.ArchAMD64, "6.1")
		if got := decideNr(t, prog, unix.AUDIT_ARCH_I386, tc.nr, tc.args...); got != tc.want {
			t.Errorf("%s: x86 call %d%v: %s, want %s", tc.name, tc.nr, tc.args, got, tc.want)
		}
	}
}

// TestOptimizedFilterAgrees checks libseccomp's binary tree against its
// plain list of comparisons, call by call.
func TestOptimizedFilterAgrees(t *testing.T) {
	kernel, _ := parseKernelVersion("6.1")
	argSets := [][]uint64{
		{0}, {0xffffffff}, {8}, {unix.AF_VSOCK}, {unix.CLONE_NEWUSER | uint64(unix.SIGCHLD)},
	}
	for _, tc := range []struct {
		name string
		p    *SeccompProfile
		caps uint64
	}{
		{"default", DefaultSeccompProfile(), capMask(t, dockerCapNames...)},
		{"default-all", DefaultSeccompProfile(), capMask(t, "ALL")},
		{"strict", StrictSeccompProfile(), 0},
	} {
		tree, err := tc.p.compile(target{caps: tc.caps, kernel: kernel, native: seccomp.ArchAMD64})
		if err != nil {
			t.Fatal(err)
		}
		list, err := tc.p.compile(target{caps: tc.caps, kernel: kernel, native: seccomp.ArchAMD64, optimize: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, audit := range []uint32{unix.AUDIT_ARCH_X86_64, unix.AUDIT_ARCH_I386, unix.AUDIT_ARCH_AARCH64} {
			for _, base := range []uint32{0, x32Bit} {
				for nr := base; nr < base+560; nr++ {
					for _, args := range argSets {
						c := Syscall{Nr: nr, Arch: audit}
						copy(c.Args[:], args)
						a, err1 := Evaluate(tree, c)
						b, err2 := Evaluate(list, c)
						if err := errors.Join(err1, err2); err != nil {
							t.Fatal(err)
						}
						if a != b {
							t.Fatalf("%s: audit %#x call %#x%v: tree says %s, list %s",
								tc.name, audit, nr, args, actionName(a), actionName(b))
						}
					}
				}
			}
		}
	}
}

// TestAuditArchitectures checks berth's table against the architecture
// tests libseccomp generates.
func TestAuditArchitectures(t *testing.T) {
	for _, b := range abis {
		f, err := newFilter(seccomp.ActAllow, []seccomp.ScmpArch{b.arch}, 0)
		if err != nil {
			// libseccomp builds no filter of the other byte order.
			t.Logf("%s: %v", b.arch, err)
			continue
		}
		prog, err := export(f)
		f.Release()
		if err != nil {
			t.Fatal(err)
		}
		nr := uint32(1)
		if b.x32 {
			nr |= x32Bit
		}
		if v, err := Evaluate(prog, Syscall{Arch: b.audit, Nr: nr}); err != nil || v != unix.SECCOMP_RET_ALLOW {
			t.Errorf("%s: audit architecture %#x is not libseccomp's (%s, %v)", b.arch, b.audit, actionName(v), err)
		}
	}
}

func TestMinKernel(t *testing.T) {
	caps := capMask(t, dockerCapNames...)
	for _, tc := range []struct {
		kernel, want string
	}{{"4.7", eperm}, {"4.8", allow}, {"6.18.44-fc", allow}} {
		prog := compileFor(t, DefaultSeccompProfile(), caps, seccomp.ArchAMD64, tc.kernel)
		if got := decide(t, prog, seccomp.ArchAMD64, "ptrace"); got != tc.want {
			t.Errorf("ptrace on %s: %s, want %s", tc.kernel, got, tc.want)
		}
	}

	p, err := ParseSeccompProfile([]byte(`{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
		{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "excludes": {"minKernel": "5.10"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		kernel, want string
	}{{"5.4.0", eperm}, {"5.10", allow}, {"6.1", allow}} {
		prog := compileFor(t, p, 0, seccomp.ArchAMD64, tc.kernel)
		if got := decide(t, prog, seccomp.ArchAMD64, "getpid"); got != tc.want {
			t.Errorf("getpid on %s: %s, want %s", tc.kernel, got, tc.want)
		}
	}
}

func TestParseKernelVersion(t *testing.T) {
	for in, want := range map[string]kernelVersion{
		"4.8":             {4, 8, 0},
		"4.8.1":           {4, 8, 1},
		"6.18.44-fc-v669": {6, 18, 44},
		"6.1.0-18-amd64":  {6, 1, 0},
		"5.15.0.1":        {5, 15, 0},
	} {
		if got, err := parseKernelVersion(in); err != nil || got != want {
			t.Errorf("parseKernelVersion(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "4", "four.eight", "4..8", "-4.8"} {
		if v, err := parseKernelVersion(in); err == nil {
			t.Errorf("parseKernelVersion(%q) = %v, want an error", in, v)
		}
	}
	if !(kernelVersion{4, 7, 9}).less(kernelVersion{4, 8, 0}) || (kernelVersion{4, 8, 0}).less(kernelVersion{4, 8, 0}) {
		t.Error("less is wrong")
	}
}

func TestCompile(t *testing.T) {
	caps := capMask(t, dockerCapNames...)
	for name, p := range map[string]*SeccompProfile{
		"default": DefaultSeccompProfile(),
		"strict":  StrictSeccompProfile(),
	} {
		prog, err := p.Compile(caps)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(prog) == 0 || len(prog)%8 != 0 || len(prog)/8 > unix.BPF_MAXINSNS {
			t.Fatalf("%s: a program of %d bytes", name, len(prog))
		}
		again, err := p.Compile(caps)
		if err != nil || !slices.Equal(prog, again) {
			t.Errorf("%s: compiling twice gives different programs (%v)", name, err)
		}
		t.Logf("%s: %d instructions", name, len(prog)/8)
	}
}

func BenchmarkCompileDefault(b *testing.B) {
	p := DefaultSeccompProfile()
	caps := capMask(b, dockerCapNames...)
	for b.Loop() {
		if _, err := p.Compile(caps); err != nil {
			b.Fatal(err)
		}
	}
}

// A profile as Docker writes them, with the legacy single name, archMap,
// includes and excludes, a call only berth's table may know and one of
// another architecture.
const dockerStyleProfile = `{
	"defaultAction": "SCMP_ACT_ERRNO",
	"defaultErrnoRet": 1,
	"archMap": [
		{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
		{"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": null}
	],
	"syscalls": [
		{"names": ["read", "write", "exit_group", "listmount", "s390_runtime_instr"], "action": "SCMP_ACT_ALLOW", "comment": "basics"},
		{"name": "getpid", "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "includes": {}, "excludes": {}},
		{"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["amd64", "arm64"], "minKernel": "4.8"}},
		{"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}], "excludes": {"caps": ["SYS_ADMIN"]}}
	]
}`

func TestParseSeccompProfile(t *testing.T) {
	p, err := ParseSeccompProfile([]byte(dockerStyleProfile))
	if err != nil {
		t.Fatal(err)
	}
	if p.DefaultAction != ActErrno || *p.DefaultErrnoRet != 1 || len(p.ArchMap) != 2 || len(p.Syscalls) != 4 {
		t.Errorf("parsed wrongly: %+v", p)
	}
	if r := p.Syscalls[1]; r.Name != "getpid" || *r.ErrnoRet != 38 || r.Includes == nil {
		t.Errorf("parsed rule 1 wrongly: %+v", r)
	}
	if _, err := p.Compile(0); err != nil {
		t.Fatal(err)
	}
	for _, caps := range []uint64{0, capMask(t, "CAP_SYS_ADMIN")} {
		prog := compileFor(t, p, caps, seccomp.ArchAMD64, "6.1")
		want := eperm
		if caps != 0 {
			want = allow
		}
		if got := decide(t, prog, seccomp.ArchAMD64, "mount"); got != want {
			t.Errorf("mount with caps %#x: %s, want %s", caps, got, want)
		}
		if got := decide(t, prog, seccomp.ArchAMD64, "getpid"); got != enosys {
			t.Errorf("getpid: %s, want %s", got, enosys)
		}
	}
}

func TestLoadSeccompProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "profile.json")
	if err := os.WriteFile(path, []byte(dockerStyleProfile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSeccompProfile(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(`{"defaultAction": "SCMP_ACT_NOPE"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSeccompProfile(path); !errors.Is(err, ErrInvalidSeccompProfile) || !strings.Contains(err.Error(), path) {
		t.Errorf("got %v, want an error naming %s", err, path)
	}
	if _, err := LoadSeccompProfile(filepath.Join(t.TempDir(), "none.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want %v", err, os.ErrNotExist)
	}
}

func TestParseSeccompProfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, json string
		culprit    []string // each must be in the message
	}{
		{"syntax", "{\n\t\"defaultAction\": \"SCMP_ACT_ALLOW\",\n\t\"syscalls\": [}", []string{"line 3, column 15"}},
		{"truncated", `{"defaultAction": "SCMP_ACT_ALLOW"`, []string{"line 1", "end of data"}},
		{"type", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "read", "action": "SCMP_ACT_ALLOW"}]}`, []string{"syscalls.names", "string"}},
		{"unknown field", "{\"defaultAction\": \"SCMP_ACT_ALLOW\",\n\"syscals\": []}", []string{"line 2", `"syscals"`}},
		{"unknown rule field", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "actoin": "SCMP_ACT_ALLOW"}]}`, []string{`"actoin"`}},
		{"trailing data", `{"defaultAction": "SCMP_ACT_ALLOW"} {}`, []string{"data after the profile"}},
		{"no default", `{"syscalls": []}`, []string{"defaultAction is missing"}},
		{"unknown default", `{"defaultAction": "SCMP_ACT_PERMIT"}`, []string{"defaultAction", "SCMP_ACT_PERMIT"}},
		{"default errno", `{"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}`, []string{"defaultAction", "SCMP_ACT_ALLOW"}},
		{"notify", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}`, []string{"syscalls[0] (read)", "SCMP_ACT_NOTIFY", "not supported"}},
		{"unknown action", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_DENY"}]}`, []string{"syscalls[0]", "SCMP_ACT_DENY"}},
		{"no action", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"]}]}`, []string{"syscalls[0]", "action is missing"}},
		{"errno range", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5000}]}`, []string{"syscalls[0]", "5000"}},
		{"errno on allow", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}]}`, []string{"syscalls[0]", "SCMP_ACT_ALLOW"}},
		{"unknown syscall", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read", "mkdri"], "action": "SCMP_ACT_ERRNO"}]}`, []string{"syscalls[0] (read and 1 more)", `"mkdri"`}},
		{"empty name", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read", ""], "action": "SCMP_ACT_ERRNO"}]}`, []string{"syscalls[0]", "empty system call name"}},
		{"no names", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}`, []string{"syscalls[0]", "no system call"}},
		{"name and names", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "read", "names": ["write"], "action": "SCMP_ACT_ERRNO"}]}`, []string{"syscalls[0]", "both"}},
		{"arg index", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}`, []string{"syscalls[0] (read)", "args[0]", "index 6"}},
		{"unknown op", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQUAL"}]}]}`, []string{"syscalls[0]", "SCMP_CMP_EQUAL"}},
		{"no op", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1}]}]}`, []string{"syscalls[0]", "op is missing"}},
		{"valueTwo", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "valueTwo": 2, "op": "SCMP_CMP_EQ"}]}]}`, []string{"syscalls[0]", "valueTwo"}},
		{"same argument twice", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_GE"}, {"index": 0, "value": 5, "op": "SCMP_CMP_LE"}]}]}`, []string{"syscalls[0]", "args[1]", "argument 0"}},
		{"unknown arch", `{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]}`, []string{"architectures[1]", "SCMP_ARCH_Z80"}},
		{"unknown archMap arch", `{"defaultAction": "SCMP_ACT_ALLOW", "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_I386"]}]}`, []string{"archMap[0].subArchitectures[0]", "SCMP_ARCH_I386"}},
		{"both arch forms", `{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"], "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}`, []string{"architectures and archMap"}},
		{"unknown flag", `{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]}`, []string{"flags[0]", "SECCOMP_FILTER_FLAG_NEW_LISTENER"}},
		{"unknown capability", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMN"]}}]}`, []string{"syscalls[0]", "includes.caps", "CAP_SYS_ADMN"}},
		{"unknown includes arch", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "excludes": {"arches": ["amd46"]}}]}`, []string{"syscalls[0]", "excludes.arches[0]", "amd46"}},
		{"bad minKernel", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "four"}}]}`, []string{"syscalls[0]", "includes.minKernel", `"four"`}},
		{"conflict", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
			{"names": ["read", "mkdir"], "action": "SCMP_ACT_ALLOW"},
			{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}`, []string{"syscalls[0]", "syscalls[1]", "mkdir"}},
		{"conditional conflict", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
			{"names": ["socket"], "action": "SCMP_ACT_ERRNO"},
			{"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}`, []string{"syscalls[0]", "syscalls[1]", "socket"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseSeccompProfile([]byte(tc.json))
			if err == nil {
				t.Fatalf("parsed: %+v", p)
			}
			if !errors.Is(err, ErrInvalidSeccompProfile) {
				t.Errorf("%v is not ErrInvalidSeccompProfile", err)
			}
			for _, c := range tc.culprit {
				if !strings.Contains(err.Error(), c) {
					t.Errorf("%q does not say %q", err, c)
				}
			}
		})
	}

	_, err := ParseSeccompProfile([]byte(`{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_NOPE"]}}]}`))
	if !errors.Is(err, ErrUnknownCapability) {
		t.Errorf("%v is not ErrUnknownCapability", err)
	}
}

// A conflict that only some capabilities bring out is found when compiling
// for them.
func TestCompileConflict(t *testing.T) {
	p, err := ParseSeccompProfile([]byte(`{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
		{"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
		{"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Compile(0); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Compile(capMask(t, "CAP_SYS_ADMIN")); !errors.Is(err, ErrInvalidSeccompProfile) || !strings.Contains(err.Error(), "mount") {
		t.Errorf("got %v, want a conflict over mount", err)
	}
	// A profile built in Go is checked too.
	bad := &SeccompProfile{DefaultAction: ActAllow, Syscalls: []SeccompRule{{Names: []string{"mkdri"}, Action: ActErrno}}}
	if _, err := bad.Compile(0); !errors.Is(err, ErrInvalidSeccompProfile) {
		t.Errorf("got %v, want ErrInvalidSeccompProfile", err)
	}
}

func TestSeccompProfileJSON(t *testing.T) {
	for name, p := range map[string]*SeccompProfile{
		"default": DefaultSeccompProfile(),
		"strict":  StrictSeccompProfile(),
	} {
		data, err := p.JSON()
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseSeccompProfile(data)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, data)
		}
		if diff := cmp.Diff(p, back); diff != "" {
			t.Errorf("%s: round trip changed the profile (-before +after):\n%s", name, diff)
		}
		for _, key := range []string{`"defaultAction": "SCMP_ACT_ERRNO"`, `"defaultErrnoRet": 1`, `"archMap"`, `"syscalls"`} {
			if !strings.Contains(string(data), key) {
				t.Errorf("%s: no %s in\n%s", name, key, data)
			}
		}
	}
}

func TestFilterFlags(t *testing.T) {
	p, err := ParseSeccompProfile([]byte(`{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.FilterFlags(), uint(unix.SECCOMP_FILTER_FLAG_LOG|unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW); got != want {
		t.Errorf("FilterFlags() = %#x, want %#x", got, want)
	}
}

// The profiles must not be shared: a caller may change its copy.
func TestProfilesAreFresh(t *testing.T) {
	p := DefaultSeccompProfile()
	p.Syscalls[0].Names[0] = "changed"
	if DefaultSeccompProfile().Syscalls[0].Names[0] == "changed" {
		t.Error("DefaultSeccompProfile shares its rules")
	}
	s := StrictSeccompProfile()
	s.Syscalls[0].Names[0] = "changed"
	if StrictSeccompProfile().Syscalls[0].Names[0] == "changed" {
		t.Error("StrictSeccompProfile shares its rules")
	}
}

func TestCompileLeavesNoDescriptors(t *testing.T) {
	count := func() int {
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	p := DefaultSeccompProfile()
	before := count()
	for range 5 {
		if _, err := p.Compile(0); err != nil {
			t.Fatal(err)
		}
	}
	if after := count(); after != before {
		t.Errorf("%d descriptors open before compiling, %d after", before, after)
	}
}

// Separate filters may be built at once.
func TestCompileConcurrently(t *testing.T) {
	caps := capMask(t, dockerCapNames...)
	want, err := DefaultSeccompProfile().Compile(caps)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			got, err := DefaultSeccompProfile().Compile(caps)
			if err == nil && !slices.Equal(got, want) {
				err = errors.New("a different program")
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// Allows says whether a program lets a list of calls through, as the
// kernel would decide each of them.
func TestAllows(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skipf("the calls below are x86-64's; this machine is %s", runtime.GOARCH)
	}
	arch := uint32(unix.AUDIT_ARCH_X86_64)
	caps, err := CapabilityMask(Default().Capabilities)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := Default().Seccomp.Compile(caps)
	if err != nil {
		t.Fatal(err)
	}
	ordinary := []Syscall{{Nr: unix.SYS_READ, Arch: arch}, {Nr: unix.SYS_SETRESUID, Arch: arch}, {Nr: unix.SYS_EXECVE, Arch: arch},
		{Nr: unix.SYS_PRCTL, Arch: arch, Args: [6]uint64{unix.PR_SET_NO_NEW_PRIVS, 1}}}
	if ok, err := Allows(prog, ordinary); !ok || err != nil {
		t.Errorf("the default profile refuses ordinary calls: %v", err)
	}
	// Without CAP_SYS_ADMIN, no mount; the list fails on its one refusal.
	if ok, err := Allows(prog, append(ordinary, Syscall{Nr: unix.SYS_MOUNT, Arch: arch})); ok || err != nil {
		t.Errorf("mount allowed without CAP_SYS_ADMIN (%v)", err)
	}
	// The calls of another architecture than the program's are refused.
	if ok, _ := Allows(prog, []Syscall{{Nr: unix.SYS_READ, Arch: unix.AUDIT_ARCH_S390X}}); ok {
		t.Error("a call of s390x allowed")
	}
	if _, err := Allows(prog[:12], ordinary); err == nil {
		t.Error("a program cut mid-instruction was run")
	}
}

// ProgramIn keeps compiled programs in files that a later process reads
// instead of compiling, and trusts a file only if no one else may write it.
func TestProgramInFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "seccomp")
	p := DefaultSeccompProfile()
	caps := capMask(t, dockerCapNames...)
	var first SeccompCache
	prog, err := first.ProgramIn(dir, p, caps)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.bpf"))
	if len(files) != 1 {
		t.Fatalf("program files: %v", files)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the directory: %v %v", fi.Mode(), err)
	}
	// A later process finds the file: what it holds is what it gets, so
	// a sentinel shows it was read rather than compiled.
	sentinel := []byte{6, 0, 0, 0, 0, 0, 0xff, 0x7f}
	if err := os.WriteFile(files[0], sentinel, 0o600); err != nil {
		t.Fatal(err)
	}
	var later SeccompCache
	if got, err := later.ProgramIn(dir, p, caps); err != nil || !bytes.Equal(got, sentinel) {
		t.Errorf("from the file: %x %v", got, err)
	}
	// Writable by others: not trusted, compiled again.
	os.Chmod(files[0], 0o666)
	var third SeccompCache
	if got, err := third.ProgramIn(dir, p, caps); err != nil || !bytes.Equal(got, prog) {
		t.Errorf("from a file others may write: %d bytes, %v", len(got), err)
	}
	// Nor in a directory others may write.
	os.Chmod(files[0], 0o600)
	os.WriteFile(files[0], sentinel, 0o600)
	os.Chmod(dir, 0o777)
	var fourth SeccompCache
	if got, err := fourth.ProgramIn(dir, p, caps); err != nil || !bytes.Equal(got, prog) {
		t.Errorf("from a directory others may write: %d bytes, %v", len(got), err)
	}
}
