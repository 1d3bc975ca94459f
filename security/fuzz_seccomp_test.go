package security

import (
	"errors"
	"reflect"
	"testing"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// FuzzSeccompProfile feeds Docker seccomp JSON to the parser. A profile it
// accepts must print as JSON that parses back to the same profile, and
// must compile, for a process with no capabilities and with all of them,
// or fail with an error; a compiled filter must fit the kernel, run on any
// call without faulting, and give each call that a rule names
// unconditionally that rule's action.
func FuzzSeccompProfile(f *testing.F) {
	for _, p := range []*SeccompProfile{DefaultSeccompProfile(), StrictSeccompProfile()} {
		b, err := p.JSON()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"}]}`,
		`{"defaultAction":"SCMP_ACT_ALLOW","defaultErrnoRet":1,"syscalls":[]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"architectures":["SCMP_ARCH_X86","SCMP_ARCH_X32"],"flags":["SECCOMP_FILTER_FLAG_LOG"],"syscalls":[{"name":"personality","action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}`,
		`{"defaultAction":"SCMP_ACT_KILL_PROCESS","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],"syscalls":[{"names":["socketcall","ipc"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_LE"}]}]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}],"excludes":{"caps":["CAP_SYS_ADMIN"],"arches":["s390x"]}}]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["bpf"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_BPF"],"minKernel":"5.8"}}]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["mseal","listmount","uretprobe"],"action":"SCMP_ACT_TRACE","errnoRet":65535}]}`,
		// Hostile: conflicts, out-of-range values, unknown names, odd JSON.
		`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["ptrace"],"action":"SCMP_ACT_ERRNO"},{"names":["ptrace"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]}]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":4096,"syscalls":[]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":-1,"syscalls":[]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":18446744073709551616,"syscalls":[]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"value":0,"op":"SCMP_CMP_EQ"}]}]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]}]}`,
		`{"defaultAction":"SCMP_ACT_NOTIFY","syscalls":[]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["nosuchcall",""],"action":"SCMP_ACT_ALLOW"}]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"99999999999999999999.1"}}]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4"}}]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_NATIVE","SCMP_ARCH_"],"syscalls":[]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_\u00e9"]}}]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[]} {"defaultAction":"SCMP_ACT_ALLOW"}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","DefaultAction":"SCMP_ACT_ALLOW","syscalls":[]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","unknown":1}]}`,
		`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":null}`, `null`, `[]`, `{`, "", "\n\n\t{\"defaultAction\":",
	} {
		f.Add([]byte(s))
	}
	allCaps := uint64(1)<<(unix.CAP_LAST_CAP+1) - 1
	native, err := seccomp.GetNativeArch()
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseSeccompProfile(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidSeccompProfile) {
				t.Fatalf("parse error does not wrap ErrInvalidSeccompProfile: %v", err)
			}
			return
		}
		j, err := p.JSON()
		if err != nil {
			t.Fatalf("JSON of a parsed profile: %v", err)
		}
		again, err := ParseSeccompProfile(j)
		if err != nil {
			t.Fatalf("the profile's own JSON does not parse: %v\n%s", err, j)
		}
		if !reflect.DeepEqual(normalProfile(p), normalProfile(again)) {
			t.Fatalf("profile changed through its JSON:\n%+v\n%+v", p, again)
		}
		_ = p.FilterFlags()

		for _, caps := range []uint64{0, allCaps} {
			prog, err := p.Compile(caps)
			if err != nil {
				continue
			}
			if len(prog) == 0 || len(prog)%8 != 0 || len(prog)/8 > unix.BPF_MAXINSNS {
				t.Fatalf("compiled filter of %d bytes", len(prog))
			}
			for _, c := range []Syscall{
				{Nr: 0, Arch: unix.AUDIT_ARCH_X86_64}, {Nr: 59, Arch: unix.AUDIT_ARCH_X86_64, Args: [6]uint64{1, 1 << 40, ^uint64(0)}},
				{Nr: 0x40000000 | 1, Arch: unix.AUDIT_ARCH_X86_64}, {Nr: ^uint32(0), Arch: unix.AUDIT_ARCH_X86_64},
				{Nr: 102, Arch: unix.AUDIT_ARCH_I386, Args: [6]uint64{1}}, {Nr: 117, Arch: unix.AUDIT_ARCH_I386},
				{Nr: 0, Arch: unix.AUDIT_ARCH_AARCH64}, {Nr: 1, Arch: 0},
			} {
				if _, err := Evaluate(prog, c); err != nil {
					t.Fatalf("compiled filter faults on %+v: %v", c, err)
				}
			}
			if native == seccomp.ArchAMD64 {
				checkUnconditionalRules(t, p, prog, caps)
			}
		}
	})
}

// checkUnconditionalRules checks that each x86-64 system call named by a
// rule without arguments, includes or excludes gets that rule's action.
func checkUnconditionalRules(t *testing.T, p *SeccompProfile, prog []byte, caps uint64) {
	t.Helper()
	for i := range p.Syscalls {
		r := &p.Syscalls[i]
		if len(r.Args) > 0 || r.Includes != nil || r.Excludes != nil {
			continue
		}
		want := r.Action.ret(r.ErrnoRet)
		for _, name := range r.names() {
			nr, ok := amd64Number(name)
			if !ok {
				continue
			}
			got, err := Evaluate(prog, Syscall{Nr: nr, Arch: unix.AUDIT_ARCH_X86_64})
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("caps %#x: syscalls[%d] gives %s %#x, but the filter returns %#x", caps, i, name, want, got)
			}
		}
	}
}

// amd64Number returns the x86-64 number of the system call name, from
// libseccomp or berth's table; false if x86-64 has no such call.
func amd64Number(name string) (uint32, bool) {
	if n, err := seccomp.GetSyscallFromNameByArch(name, seccomp.ArchAMD64); err == nil {
		return uint32(n), n >= 0
	}
	b, _ := abiOf(seccomp.ArchAMD64)
	return newSyscallNumber(name, b)
}

// normalProfile returns p with what JSON leaves out on purpose made
// equal: empty lists and missing ones.
func normalProfile(p *SeccompProfile) *SeccompProfile {
	q := *p
	norm := func(s []string) []string {
		if len(s) == 0 {
			return nil
		}
		return s
	}
	q.Architectures, q.Flags = norm(q.Architectures), norm(q.Flags)
	q.ArchMap = nil
	for _, m := range p.ArchMap {
		m.SubArchitectures = norm(m.SubArchitectures)
		q.ArchMap = append(q.ArchMap, m)
	}
	q.Syscalls = nil
	for _, r := range p.Syscalls {
		r.Names = norm(r.Names)
		if len(r.Args) == 0 {
			r.Args = nil
		}
		for _, f := range []**SeccompFilter{&r.Includes, &r.Excludes} {
			if *f != nil {
				c := **f
				c.Caps, c.Arches = norm(c.Caps), norm(c.Arches)
				*f = &c
			}
		}
		q.Syscalls = append(q.Syscalls, r)
	}
	return &q
}

// FuzzSeccompEvaluate runs arbitrary programs through Evaluate, which must
// return a result or an error for any of them, as the kernel's checker
// would refuse a bad program rather than crash.
func FuzzSeccompEvaluate(f *testing.F) {
	prog, err := DefaultSeccompProfile().Compile(0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(prog[:min(len(prog), 400)], uint32(0), uint32(unix.AUDIT_ARCH_X86_64))
	f.Add([]byte{}, uint32(1), uint32(0))
	f.Add([]byte{0x06, 0, 0, 0, 0, 0, 0xff, 0x7f}, uint32(0), uint32(0))                         // ret allow
	f.Add([]byte{0x60, 0, 0, 0, 0x10, 0, 0, 0, 0x06, 0, 0, 0, 0, 0, 0, 0}, uint32(0), uint32(0)) // ld M[16]
	f.Add([]byte{0x02, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, uint32(0), uint32(0))                   // st M[2^32-1]
	f.Add([]byte{0x05, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, uint32(0), uint32(0))                   // ja far
	f.Add([]byte{0x20, 0, 0, 0, 0x40, 0, 0, 0}, uint32(0), uint32(0))                            // ld beyond seccomp_data
	f.Fuzz(func(t *testing.T, prog []byte, nr, arch uint32) {
		Evaluate(prog, Syscall{Nr: nr, Arch: arch, Args: [6]uint64{1, 2, 3, 4, 5, 6}})
	})
}

// FuzzSeccompRules builds profiles rule by rule from the fuzzer's bytes,
// so that nearly every input is a valid profile and reaches the compiler,
// for x86-64 and arm64 machines: a profile must compile or fail with an
// error, compile the same twice, and on x86-64 give each call a rule names
// without conditions that rule's action.
func FuzzSeccompRules(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 6, 0, 0})
	f.Add([]byte{0, 1, 2, 3, 0, 1, 5, 4, 6, 7, 1, 2, 3, 9, 5, 2, 8, 1, 0, 0, 1, 2, 0, 10})
	f.Add([]byte{3, 20, 0, 0, 0, 6, 1, 21, 0, 0, 0, 6, 1, 22, 4, 2, 1, 5, 0})
	names := []string{
		"read", "write", "openat", "clone", "personality", "socket", "socketcall", "ipc", "ptrace",
		"keyctl", "clone3", "openat2", "mseal", "uretprobe", "listmount", "futex_waitv", "execve",
		"arch_prctl", "modify_ldt", "mmap", "mmap2", "_llseek", "setxattrat", "file_setattr",
	}
	actions := []SeccompAction{ActAllow, ActErrno, ActKillProcess, ActKillThread, ActTrap, ActTrace, ActLog, ActKill}
	ops := []SeccompOp{OpEqualTo, OpNotEqual, OpLessThan, OpLessEqual, OpGreaterThan, OpGreaterEqual, OpMaskedEqual}
	arches := [][]string{nil, {"SCMP_ARCH_X86"}, {"SCMP_ARCH_X86", "SCMP_ARCH_X32"}, {"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"}}
	kernel, err := parseKernelVersion("6.1")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		errno := func(b byte) *uint {
			if b%3 == 0 {
				return nil
			}
			v := uint(b) * 16
			return &v
		}
		p := &SeccompProfile{DefaultAction: actions[data[0]%byte(len(actions))], Architectures: arches[data[1]%4]}
		if p.DefaultAction == ActErrno || p.DefaultAction == ActTrace {
			p.DefaultErrnoRet = errno(data[1] / 4)
		}
		// Each rule takes 6 bytes: name, action with errno, argument
		// index (6 and 7 for none), op, value, and a flag for a second
		// name and an includes on capabilities.
		for rest := data[2:]; len(rest) >= 6; rest = rest[6:] {
			r := SeccompRule{Names: []string{names[int(rest[0])%len(names)]}, Action: actions[rest[1]%byte(len(actions))]}
			if r.Action == ActErrno || r.Action == ActTrace {
				r.ErrnoRet = errno(rest[1] / 8)
			}
			if i := rest[2] % 8; i < 6 {
				a := SeccompArg{Index: uint(i), Op: ops[rest[3]%byte(len(ops))], Value: uint64(rest[4])}
				if a.Op == OpMaskedEqual {
					a.Value, a.ValueTwo = 0xff, uint64(rest[4])
				}
				r.Args = append(r.Args, a)
			}
			if rest[5]&1 != 0 {
				r.Names = append(r.Names, names[int(rest[5]/2)%len(names)])
			}
			if rest[5]&0x80 != 0 {
				r.Includes = &SeccompFilter{Caps: []string{"CAP_SYS_ADMIN"}}
			}
			p.Syscalls = append(p.Syscalls, r)
		}
		if err := p.validate(); err != nil {
			return
		}
		for _, native := range []seccomp.ScmpArch{seccomp.ArchAMD64, seccomp.ArchARM64} {
			tg := target{caps: 0, kernel: kernel, native: native}
			prog, err := p.compile(tg)
			if err != nil {
				continue
			}
			again, err := p.compile(tg)
			if err != nil || string(again) != string(prog) {
				t.Fatalf("compiling twice for %v gave different filters (%v)", native, err)
			}
			if len(prog)%8 != 0 || len(prog)/8 > unix.BPF_MAXINSNS {
				t.Fatalf("compiled filter of %d bytes", len(prog))
			}
			for _, c := range []Syscall{{Nr: 0, Arch: unix.AUDIT_ARCH_X86_64}, {Nr: 102, Arch: unix.AUDIT_ARCH_I386}, {Nr: 56, Arch: unix.AUDIT_ARCH_AARCH64}, {Nr: 500, Arch: unix.AUDIT_ARCH_ARM}} {
				if _, err := Evaluate(prog, c); err != nil {
					t.Fatalf("compiled filter faults on %+v: %v", c, err)
				}
			}
			if native == seccomp.ArchAMD64 {
				checkUnconditionalRules(t, p, prog, 0)
			}
		}
	})
}
