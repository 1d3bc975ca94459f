package security

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// call is a system call as a filter sees it, struct seccomp_data.
type call struct {
	nr   uint32
	arch uint32
	args [6]uint64
}

// runFilter runs a compiled filter on c as the kernel would and returns
// the action. It knows the instructions libseccomp and the preamble use,
// and reads arguments as a little-endian machine lays them out.
func runFilter(prog []byte, c call) (uint32, error) {
	ins := make([]unix.SockFilter, len(prog)/8)
	for i := range ins {
		b := prog[8*i:]
		ins[i] = unix.SockFilter{
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
			return c.nr, nil
		case off == 4:
			return c.arch, nil
		case off == 8 || off == 12:
			return 0, nil // the instruction pointer
		case off >= 16 && off < 64 && off%4 == 0:
			arg := c.args[(off-16)/8]
			if (off-16)%8 == 0 {
				return uint32(arg), nil
			}
			return uint32(arg >> 32), nil
		}
		return 0, fmt.Errorf("load from offset %d", off)
	}
	for pc := 0; pc < len(ins); pc++ {
		in := ins[pc]
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
		case unix.BPF_LD | unix.BPF_MEM:
			a = mem[in.K]
		case unix.BPF_LDX | unix.BPF_MEM:
			x = mem[in.K]
		case unix.BPF_ST:
			mem[in.K] = a
		case unix.BPF_STX:
			mem[in.K] = x
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
	return 0, fmt.Errorf("ran off the end of a %d-instruction program", len(ins))
}

// actionName names a filter's return value for test failures.
func actionName(v uint32) string {
	switch v & unix.SECCOMP_RET_ACTION_FULL {
	case unix.SECCOMP_RET_ALLOW:
		return "ALLOW"
	case unix.SECCOMP_RET_ERRNO:
		return fmt.Sprintf("ERRNO(%s)", unix.ErrnoName(unix.Errno(v&unix.SECCOMP_RET_DATA)))
	case unix.SECCOMP_RET_KILL_PROCESS:
		return "KILL_PROCESS"
	case unix.SECCOMP_RET_KILL_THREAD:
		return "KILL_THREAD"
	case unix.SECCOMP_RET_TRAP:
		return "TRAP"
	case unix.SECCOMP_RET_TRACE:
		return fmt.Sprintf("TRACE(%d)", v&unix.SECCOMP_RET_DATA)
	case unix.SECCOMP_RET_LOG:
		return "LOG"
	}
	return fmt.Sprintf("%#x", v)
}
