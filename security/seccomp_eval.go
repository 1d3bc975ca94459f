package security

import (
	"encoding/binary"
	"fmt"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// A Syscall is a system call as a seccomp filter sees it: struct
// seccomp_data without the instruction pointer, which berth's filters do
// not look at.
type Syscall struct {
	Nr   uint32
	Arch uint32 // AUDIT_ARCH_*
	Args [6]uint64
}

// Evaluate runs a compiled seccomp program on c as the kernel would and
// returns its action, a SECCOMP_RET_* value. It knows the instructions
// libseccomp and Compile's preamble use, and reads 64-bit arguments as a
// little-endian machine lays them out.
func Evaluate(prog []byte, c Syscall) (uint32, error) {
	if len(prog) == 0 || len(prog)%8 != 0 {
		return 0, fmt.Errorf("seccomp: program of %d bytes", len(prog))
	}
	// Each instruction is decoded as it is reached: a call runs a few
	// dozen of a program's thousand or more, and a sandbox's start checks
	// a dozen calls (see Allows).
	n := len(prog) / 8
	at := func(pc int) unix.SockFilter {
		b := prog[8*pc:]
		return unix.SockFilter{
			Code: binary.NativeEndian.Uint16(b),
			Jt:   b[2],
			Jf:   b[3],
			K:    binary.NativeEndian.Uint32(b[4:]),
		}
	}
	var (
		a, x uint32
		mem  [16]uint32
	)
	load := func(off uint32) (uint32, error) {
		switch {
		case off == 0:
			return c.Nr, nil
		case off == 4:
			return c.Arch, nil
		case off == 8 || off == 12:
			return 0, nil // the instruction pointer
		case off >= 16 && off < 64 && off%4 == 0:
			arg := c.Args[(off-16)/8]
			if (off-16)%8 == 0 {
				return uint32(arg), nil
			}
			return uint32(arg >> 32), nil
		}
		return 0, fmt.Errorf("load from offset %d", off)
	}
	for pc := 0; pc < n; pc++ {
		in := at(pc)
		var err error
		branch := func(cond bool) {
			if cond {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		}
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			a, err = load(in.K)
		case unix.BPF_LD | unix.BPF_IMM:
			a = in.K
		case unix.BPF_LDX | unix.BPF_IMM:
			x = in.K
		case unix.BPF_LD | unix.BPF_MEM, unix.BPF_LDX | unix.BPF_MEM, unix.BPF_ST, unix.BPF_STX:
			// The kernel's checker refuses a program that reaches past
			// the scratch memory.
			if in.K >= uint32(len(mem)) {
				err = fmt.Errorf("instruction %d: scratch memory M[%d]", pc, in.K)
				break
			}
			switch in.Code {
			case unix.BPF_LD | unix.BPF_MEM:
				a = mem[in.K]
			case unix.BPF_LDX | unix.BPF_MEM:
				x = mem[in.K]
			case unix.BPF_ST:
				mem[in.K] = a
			case unix.BPF_STX:
				mem[in.K] = x
			}
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			a &= in.K
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_X:
			a &= x
		case unix.BPF_ALU | unix.BPF_OR | unix.BPF_K:
			a |= in.K
		case unix.BPF_MISC | unix.BPF_TAX:
			x = a
		case unix.BPF_MISC | unix.BPF_TXA:
			a = x
		case unix.BPF_JMP | unix.BPF_JA:
			pc += int(in.K)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			branch(a == in.K)
		case unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K:
			branch(a > in.K)
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			branch(a >= in.K)
		case unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			branch(a&in.K != 0)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_X:
			branch(a == x)
		case unix.BPF_JMP | unix.BPF_JGT | unix.BPF_X:
			branch(a > x)
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_X:
			branch(a >= x)
		case unix.BPF_JMP | unix.BPF_JSET | unix.BPF_X:
			branch(a&x != 0)
		case unix.BPF_RET | unix.BPF_K:
			return in.K, nil
		case unix.BPF_RET | unix.BPF_A:
			return a, nil
		default:
			err = fmt.Errorf("instruction %d: opcode %#x", pc, in.Code)
		}
		if err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("ran off the end of a %d-instruction program", n)
}

// Allows reports whether prog lets every one of calls through: returns
// SECCOMP_RET_ALLOW, or SECCOMP_RET_LOG, which allows and logs.
func Allows(prog []byte, calls []Syscall) (bool, error) {
	for _, c := range calls {
		v, err := Evaluate(prog, c)
		if err != nil {
			return false, err
		}
		if act := v & unix.SECCOMP_RET_ACTION_FULL; act != unix.SECCOMP_RET_ALLOW && act != unix.SECCOMP_RET_LOG {
			return false, nil
		}
	}
	return true, nil
}

// SyscallName returns the name of system call nr of the machine's own
// architecture, or "system call NR" for a number libseccomp does not know.
func SyscallName(nr uint32) string {
	if name, err := seccomp.ScmpSyscall(nr).GetName(); err == nil {
		return name
	}
	return fmt.Sprintf("system call %d", nr)
}
