package security

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// Compile returns the profile as a seccomp filter: an array of struct
// sock_filter in the machine's byte order, for
// seccomp(SECCOMP_SET_MODE_FILTER). The filter accepts the machine's
// architecture and the compatible ones the profile lists, and kills the
// process on any other. caps is the capability set of the process it will
// confine (bit N is capability N; see CapabilityMask), against which the
// rules' includes and excludes are decided, as they are against the
// running kernel's version.
//
// libseccomp builds the filter. A system call it does not know but berth's
// table does is filtered by a few instructions put in front of
// libseccomp's. And when the default action denies, a call numbered above
// every call berth or the profile knows fails with ENOSYS instead: it is
// newer than the profile, and C libraries fall back to older calls on
// ENOSYS but give up on EPERM (runc does the same).
//
// Compiling Docker's default profile takes libseccomp some 10 to 15
// milliseconds; callers that start many sandboxes should keep the result,
// which depends only on the profile, caps and the machine.
func (p *SeccompProfile) Compile(caps uint64) ([]byte, error) {
	kernel, err := runningKernel()
	if err != nil {
		return nil, err
	}
	native, err := seccomp.GetNativeArch()
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	return p.compile(target{caps: caps, kernel: kernel, native: native})
}

// target is what a filter is compiled for. Tests vary native and kernel.
type target struct {
	caps   uint64
	kernel kernelVersion
	native seccomp.ScmpArch
	// optimize is libseccomp's SCMP_FLTATR_CTL_OPTIMIZE, 0 for the
	// binary tree Compile uses.
	optimize int
}

func (p *SeccompProfile) compile(t target) ([]byte, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	if err := p.checkConflicts(func(r *SeccompRule) bool { return r.applies(t) }); err != nil {
		return nil, err
	}
	arches := p.arches(t.native)
	def := p.DefaultAction.scmp(p.DefaultErrnoRet)
	f, err := newFilter(def, arches, t.optimize)
	if err != nil {
		return nil, err
	}
	defer f.Release()

	pre := newPreamble(arches, p.DefaultAction.ret(p.DefaultErrnoRet))
	// Multiplexers the profile names, and those through which libseccomp
	// would let calls by without the arguments a rule tests.
	var named, widened []string
	for i := range p.Syscalls {
		r := &p.Syscalls[i]
		if !r.applies(t) {
			continue
		}
		action := r.Action.scmp(r.ErrnoRet)
		conds, err := r.conditions()
		if err != nil {
			return nil, fmt.Errorf("%w: syscalls[%d]%s: %w", ErrInvalidSeccompProfile, i, r.label(), err)
		}
		for _, name := range r.names() {
			if name == "socketcall" || name == "ipc" {
				named = append(named, name)
			}
			nr, err := seccomp.GetSyscallFromName(name)
			if err != nil {
				pre.add(name, r)
				continue
			}
			if len(conds) > 0 && r.Action.permissive() {
				widened = append(widened, multiplexers(name, arches)...)
			}
			if !pre.note(name) || action == def {
				// Not a call of any of the filter's architectures, or
				// nothing to add: libseccomp refuses rules that repeat
				// the default.
				continue
			}
			if err := f.AddRuleConditional(nr, action, conds); err != nil {
				return nil, fmt.Errorf("seccomp: syscalls[%d]: %s: %w", i, name, err)
			}
		}
	}
	if err := closeMultiplexers(f, def, widened, named); err != nil {
		return nil, err
	}
	prog, err := export(f)
	if err != nil {
		return nil, err
	}
	head, err := pre.program(!p.DefaultAction.permissive())
	if err != nil {
		return nil, err
	}
	if n := len(head) + len(prog)/8; n > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp: the filter has %d instructions; the kernel takes at most %d", n, unix.BPF_MAXINSNS)
	}
	out := make([]byte, 0, 8*len(head)+len(prog))
	for _, ins := range head {
		out = binary.NativeEndian.AppendUint16(out, ins.Code)
		out = append(out, ins.Jt, ins.Jf)
		out = binary.NativeEndian.AppendUint32(out, ins.K)
	}
	return append(out, prog...), nil
}

// On some architectures (32-bit x86, s390, PowerPC) a program may make the
// socket and System V IPC calls through a multiplexer, socketcall or ipc,
// whose first argument says which call is meant and whose others point to
// the real arguments in memory, where a filter cannot read them.
// libseccomp filters such a call both as itself and through its
// multiplexer, and gives it pseudo numbers in these ranges
// (__PNR_socket is -101, __PNR_semop -201).
func multiplexer(nr seccomp.ScmpSyscall) string {
	switch {
	case nr <= -100 && nr > -200:
		return "socketcall"
	case nr <= -200 && nr > -300:
		return "ipc"
	}
	return ""
}

// multiplexers returns the multiplexers through which some of arches can
// make the call name.
func multiplexers(name string, arches []seccomp.ScmpArch) []string {
	var out []string
	for _, a := range arches {
		if nr, err := seccomp.GetSyscallFromNameByArch(name, a); err == nil {
			if m := multiplexer(nr); m != "" {
				out = append(out, m)
			}
		}
	}
	return out
}

// closeMultiplexers refuses outright the multiplexers in widened that the
// profile does not name. Through a multiplexer, libseccomp allows a call
// whatever its arguments: a rule allowing socket only for some families
// would allow socketcall(SYS_SOCKET) for all of them. A rule with no
// arguments to test overrides those it made; ENOSYS sends C libraries to
// the direct calls, which the profile's tests do reach.
func closeMultiplexers(f *seccomp.ScmpFilter, def seccomp.ScmpAction, widened, named []string) error {
	action := seccomp.ActErrno.SetReturnCode(int16(unix.ENOSYS))
	if action == def {
		action = seccomp.ActErrno.SetReturnCode(int16(unix.EPERM))
	}
	for _, m := range []string{"socketcall", "ipc"} {
		if !slices.Contains(widened, m) || slices.Contains(named, m) {
			continue
		}
		nr, err := seccomp.GetSyscallFromName(m)
		if err != nil {
			return fmt.Errorf("seccomp: %s: %w", m, err)
		}
		if err := f.AddRule(nr, action); err != nil {
			return fmt.Errorf("seccomp: %s: %w", m, err)
		}
	}
	return nil
}

// newFilter returns an empty libseccomp filter for arches, the first of
// which is the one the filter is for.
func newFilter(def seccomp.ScmpAction, arches []seccomp.ScmpArch, optimize int) (*seccomp.ScmpFilter, error) {
	f, err := seccomp.NewFilter(def)
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	if err := configure(f, arches, optimize); err != nil {
		f.Release()
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	return f, nil
}

func configure(f *seccomp.ScmpFilter, arches []seccomp.ScmpArch, optimize int) error {
	// A call from an architecture the filter was not written for could
	// mean anything; end the process rather than one thread of it.
	if err := f.SetBadArchAction(seccomp.ActKillProcess); err != nil {
		return err
	}
	// The loader sets no_new_privs itself (or holds CAP_SYS_ADMIN); the
	// exported program does not carry the attribute anyway.
	if err := f.SetNoNewPrivsBit(false); err != nil {
		return err
	}
	// A binary tree finds a call in a few comparisons instead of walking
	// the whole allowlist on every system call.
	if optimize == 0 {
		optimize = 2
	}
	if err := f.SetOptimize(optimize); err != nil {
		return fmt.Errorf("optimize level %d: %w", optimize, err)
	}
	native, err := seccomp.GetNativeArch()
	if err != nil {
		return err
	}
	for _, a := range arches {
		if a != native {
			if err := f.AddArch(a); err != nil {
				return fmt.Errorf("architecture %s: %w", a, err)
			}
		}
	}
	if !slices.Contains(arches, native) {
		return f.RemoveArch(native)
	}
	return nil
}

// export returns f's program. libseccomp before 2.6 writes it only to a
// file descriptor.
func export(f *seccomp.ScmpFilter) ([]byte, error) {
	fd, err := unix.MemfdCreate("berth-seccomp", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("seccomp: memfd_create: %w", err)
	}
	file := os.NewFile(uintptr(fd), "berth-seccomp")
	defer file.Close()
	if err := f.ExportBPF(file); err != nil {
		return nil, fmt.Errorf("seccomp: export: %w", err)
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("seccomp: export: %w", err)
	}
	prog, err := io.ReadAll(file)
	if err != nil {
		return nil, fmt.Errorf("seccomp: export: %w", err)
	}
	if len(prog) == 0 || len(prog)%8 != 0 {
		return nil, fmt.Errorf("seccomp: export: libseccomp wrote %d bytes, not a program", len(prog))
	}
	return prog, nil
}

// arches returns the architectures the filter is for: native, then the
// compatible ones the profile lists.
func (p *SeccompProfile) arches(native seccomp.ScmpArch) []seccomp.ScmpArch {
	listed := p.Architectures
	for _, m := range p.ArchMap {
		if a, _ := parseArch(m.Architecture); a == native {
			listed = m.SubArchitectures
			break
		}
	}
	out := []seccomp.ScmpArch{native}
	compat := compatArches(native)
	for _, name := range listed {
		a, _ := parseArch(name)
		if slices.Contains(compat, a) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// applies reports whether r is part of the filter for t. r must be valid.
func (r *SeccompRule) applies(t target) bool {
	if f := r.Includes; f != nil {
		if m, _ := CapabilityMask(f.Caps); t.caps&m != m {
			return false
		}
		if len(f.Arches) > 0 && !archListed(f.Arches, t.native) {
			return false
		}
		if v, err := parseKernelVersion(f.MinKernel); err == nil && t.kernel.less(v) {
			return false
		}
	}
	if f := r.Excludes; f != nil {
		if m, _ := CapabilityMask(f.Caps); t.caps&m != 0 {
			return false
		}
		if archListed(f.Arches, t.native) {
			return false
		}
		if v, err := parseKernelVersion(f.MinKernel); err == nil && !t.kernel.less(v) {
			return false
		}
	}
	return true
}

func archListed(names []string, a seccomp.ScmpArch) bool {
	for _, n := range names {
		if b, _ := parseArch(n); b == a {
			return true
		}
	}
	return false
}

// conditions returns r's argument tests for libseccomp.
func (r *SeccompRule) conditions() ([]seccomp.ScmpCondition, error) {
	var conds []seccomp.ScmpCondition
	for i, a := range r.Args {
		op, err := a.Op.scmp()
		if err != nil {
			return nil, fmt.Errorf("args[%d]: %w", i, err)
		}
		values := []uint64{a.Value}
		if a.Op == OpMaskedEqual {
			values = append(values, a.ValueTwo)
		}
		c, err := seccomp.MakeCondition(a.Index, op, values...)
		if err != nil {
			return nil, fmt.Errorf("args[%d]: %w", i, err)
		}
		conds = append(conds, c)
	}
	return conds, nil
}

// A preamble is the part of the filter berth writes itself, run before
// libseccomp's: it filters the calls of berth's table that libseccomp could
// not name, and answers ENOSYS for calls newer than the profile. Anything
// else falls through to libseccomp's program, which is unchanged (jumps in
// classic BPF are relative, so putting instructions in front of it moves
// nothing).
type preamble struct {
	def    uint32 // the default action's return value
	arches []seccomp.ScmpArch
	parts  []prePart
}

// prePart is the preamble's part for one architecture.
type prePart struct {
	abi
	calls  []preCall
	newest uint32 // the highest number the profile or berth's table knows
}

type preCall struct {
	nr, ret uint32
}

// newPreamble returns an empty preamble for a filter for arches. It has a
// part for each architecture berth knows the numbering of; libseccomp
// alone filters the others.
func newPreamble(arches []seccomp.ScmpArch, def uint32) *preamble {
	p := &preamble{def: def, arches: arches}
	for _, a := range arches {
		if b, ok := abiOf(a); ok {
			nr := uint32(newestSyscall)
			if b.x32 {
				nr |= x32Bit
			}
			p.parts = append(p.parts, prePart{abi: b, newest: nr})
		}
	}
	return p
}

// note records a call libseccomp knows, so that ENOSYS starts above it,
// and reports whether it is a call of any of the filter's architectures at
// all (libseccomp knows the calls of every architecture by name).
func (p *preamble) note(name string) bool {
	found := false
	for _, a := range p.arches {
		nr, err := seccomp.GetSyscallFromNameByArch(name, a)
		if err != nil || nr < 0 && multiplexer(nr) == "" {
			continue
		}
		found = true
		if nr < 0 {
			continue
		}
		for i := range p.parts {
			part := &p.parts[i]
			if n := uint32(nr); part.arch == a && (part.private == 0 || n < part.private) && n > part.newest {
				part.newest = n
			}
		}
	}
	return found
}

// add filters the call name of berth's table as r says, on every
// architecture that has it. The preamble cannot test arguments: a rule that
// tests some is left out if it would let the call through, and applies to
// every call otherwise, so that what cannot be enforced as written fails
// closed.
func (p *preamble) add(name string, r *SeccompRule) {
	if len(r.Args) > 0 && r.Action.permissive() {
		return
	}
	ret := r.Action.ret(r.ErrnoRet)
	if ret == p.def {
		return
	}
	for i := range p.parts {
		a := &p.parts[i]
		nr, ok := newSyscallNumber(name, a.abi)
		if !ok || slices.ContainsFunc(a.calls, func(c preCall) bool { return c.nr == nr }) {
			continue
		}
		a.calls = append(a.calls, preCall{nr: nr, ret: ret})
	}
}

// Offsets in struct seccomp_data.
const (
	dataNr   = 0
	dataArch = 4
)

// program returns the preamble's instructions, none if it has nothing to
// do. With enosys, calls above the newest known return ENOSYS.
//
// For each architecture it has a part for, it is
//
//	jeq #audit, 1, 0       (the architecture is loaded)
//	ja next
//	ld [nr]
//	jset #x32Bit, x32      (x86-64's audit architecture only)
//	jeq #nr, 0, 1; ret #action    (for each call of berth's table)
//	jge #newest+1, 0, 1; ret #ENOSYS
//	ja end
//	x32: the same for x32, or ja end
//	next: ...
//	end: libseccomp's program
func (p *preamble) program(enosys bool) ([]unix.SockFilter, error) {
	var b builder
	b.emit(load(dataArch))
	done := make([]bool, len(p.parts))
	for i := range p.parts {
		if done[i] {
			continue
		}
		audit := p.parts[i].audit
		// x86-64 and x32 share an audit architecture; x32's bit tells
		// their calls apart.
		var main, x32 []unix.SockFilter
		for j := i; j < len(p.parts); j++ {
			if a := &p.parts[j]; a.audit == audit {
				done[j] = true
				if a.x32 {
					x32 = a.instructions(enosys)
				} else {
					main = a.instructions(enosys)
				}
			}
		}
		if main == nil && x32 == nil {
			continue
		}
		b.emit(jump(unix.BPF_JEQ, audit, 1, 0))
		skip := b.emit(jump(unix.BPF_JA, 0, 0, 0))
		b.emit(load(dataNr))
		if audit == unix.AUDIT_ARCH_X86_64 {
			if len(main)+1 > 255 {
				return nil, errors.New("seccomp: too many calls for berth's preamble")
			}
			b.emit(jump(unix.BPF_JSET, x32Bit, uint8(len(main)+1), 0))
			b.emit(main...)
			b.exit()
			b.emit(x32...)
			b.exit()
		} else {
			b.emit(main...)
			b.exit()
		}
		b.prog[skip].K = uint32(len(b.prog) - skip - 1)
	}
	if len(b.prog) == 1 {
		return nil, nil
	}
	for _, i := range b.exits {
		b.prog[i].K = uint32(len(b.prog) - i - 1)
	}
	return b.prog, nil
}

// instructions returns a's part of the preamble, run with the call's
// number loaded; nil if it has nothing to do.
func (a *prePart) instructions(enosys bool) []unix.SockFilter {
	var prog []unix.SockFilter
	for _, c := range a.calls {
		prog = append(prog, jump(unix.BPF_JEQ, c.nr, 0, 1), ret(c.ret))
	}
	if enosys {
		// newest < nr < private: ENOSYS.
		if a.private != 0 {
			prog = append(prog, jump(unix.BPF_JGE, a.newest+1, 0, 2), jump(unix.BPF_JGE, a.private, 1, 0))
		} else {
			prog = append(prog, jump(unix.BPF_JGE, a.newest+1, 0, 1))
		}
		prog = append(prog, ret(unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS)))
	}
	return prog
}

// A builder assembles a program whose exits jump to its end.
type builder struct {
	prog  []unix.SockFilter
	exits []int
}

// emit appends ins and returns the index of the first.
func (b *builder) emit(ins ...unix.SockFilter) int {
	b.prog = append(b.prog, ins...)
	return len(b.prog) - len(ins)
}

// exit appends a jump to the end of the program.
func (b *builder) exit() {
	b.exits = append(b.exits, b.emit(jump(unix.BPF_JA, 0, 0, 0)))
}

func load(off uint32) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off}
}

func jump(op uint16, k uint32, jt, jf uint8) unix.SockFilter {
	if op == unix.BPF_JA {
		return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA, K: k}
	}
	return unix.SockFilter{Code: unix.BPF_JMP | op | unix.BPF_K, Jt: jt, Jf: jf, K: k}
}

func ret(v uint32) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: v}
}
