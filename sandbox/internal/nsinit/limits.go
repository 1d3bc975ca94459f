package nsinit

// #include "spec.h"
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// MaxSpecBytes is the most the init reads of a spec, or of each of a
// standby init's two messages: see SPEC_MAX_BYTES in spec.h.
const MaxSpecBytes = C.SPEC_MAX_BYTES

// The limits execve(2) puts on arguments and environment, which a sandbox's
// workload is started with. They are the kernel's own (fs/exec.c): the
// host checks them ahead so that a caller learns which string or which
// total is too large before anything is built, and the init explains an
// E2BIG that gets past this check all the same.
const (
	// maxArgPages is MAX_ARG_STRLEN, the most one string may take with its
	// NUL, in pages; it is also ARG_MAX, the least the total may be.
	maxArgPages = 32
	// maxArgTotal is the most the total may be, whatever the stack limit:
	// three quarters of _STK_LIM (8 MiB).
	maxArgTotal = 8 << 20 / 4 * 3
)

// MaxArgLen is the longest argument or environment string Linux takes
// (MAX_ARG_STRLEN less its NUL): 128 KiB - 1 with 4 KiB pages.
func MaxArgLen() int { return maxArgPages*os.Getpagesize() - 1 }

// ArgLimit is how many bytes of strings (each with its NUL) and pointers
// execve(2) takes from a process whose stack limit is stack: a quarter of
// it, but at least 128 KiB (ARG_MAX) and at most 6 MiB. With the usual
// 8 MiB stack limit it is 2 MiB.
func ArgLimit(stack uint64) uint64 {
	limit := min(uint64(maxArgTotal), stack/4)
	return max(limit, uint64(maxArgPages*os.Getpagesize()))
}

// CheckExec reports whether execve(2) would take the spec's arguments and
// environment, as far as the host can tell: no string with a NUL in it or
// longer than MaxArgLen, and all of them within the ArgLimit of the stack
// limit the workload will have (the spec's, or else this process's, which
// the init inherits). An error wraps syscall.E2BIG (syscall.EINVAL for a
// NUL) and names the string or the limit.
//
// The kernel also counts the path of the program, which the init looks up
// in the sandbox's PATH unless Args[0] has a slash: the check counts
// Args[0] for it, which is exact in that case and short by the directory
// otherwise. An exec that gets past the check by those few bytes fails in
// the init with E2BIG, and the init's error names the limit likewise.
func (s *Spec) CheckExec() error {
	maxLen := MaxArgLen()
	total := uint64(max(len(s.Args), 1)+len(s.Env)) * 8 // a pointer each
	if len(s.Args) > 0 {
		total += uint64(len(s.Args[0])) + 1 // the path, at least
	}
	for i, a := range s.Args {
		if err := checkArg(a, maxLen, func() string { return "argument " + strconv.Itoa(i) }); err != nil {
			return err
		}
		total += uint64(len(a)) + 1
	}
	for _, e := range s.Env {
		if err := checkArg(e, maxLen, func() string { return "environment variable " + envName(e) }); err != nil {
			return err
		}
		total += uint64(len(e)) + 1
	}
	if total <= ArgLimit(0) {
		return nil // within any stack limit: spare the system call
	}
	stack, err := s.stackLimit()
	if err != nil {
		return err
	}
	if limit := ArgLimit(stack); total > limit {
		return fmt.Errorf("arguments and environment take %d bytes, more than the %d Linux takes "+
			"with a stack limit of %s (ARG_MAX, a quarter of it, at most %d): %w",
			total, limit, stackString(stack), maxArgTotal, syscall.E2BIG)
	}
	return nil
}

// checkArg checks one string of the arguments or environment; name says
// which, for the error.
func checkArg(a string, maxLen int, name func() string) error {
	if len(a) > maxLen {
		return fmt.Errorf("%s is %d bytes, more than the %d Linux takes in one string (MAX_ARG_STRLEN): %w",
			name(), len(a), maxLen, syscall.E2BIG)
	}
	if strings.IndexByte(a, 0) >= 0 {
		return fmt.Errorf("%s contains a NUL byte: %w", name(), syscall.EINVAL)
	}
	return nil
}

// envName is an environment string's name, cut short for an error
// message, as the string itself may be a megabyte.
func envName(e string) string {
	name, _, _ := strings.Cut(e, "=")
	if len(name) > 64 {
		name = name[:64] + "..."
	}
	return strconv.Quote(name)
}

// stackLimit is the soft stack limit the workload will exec with.
func (s *Spec) stackLimit() (uint64, error) {
	for _, r := range s.Rlimits {
		if r.Resource == unix.RLIMIT_STACK {
			return r.Soft, nil
		}
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_STACK, &rl); err != nil {
		return 0, fmt.Errorf("nsinit: stack limit: %w", err)
	}
	return rl.Cur, nil
}

func stackString(stack uint64) string {
	if stack == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return strconv.FormatUint(stack, 10) + " bytes"
}

// Marshal checks the spec's arguments and environment (CheckExec) and
// encodes it (Encode), refusing a spec larger than the init reads.
func (s *Spec) Marshal() ([]byte, error) {
	if err := s.CheckExec(); err != nil {
		return nil, err
	}
	b := s.Encode()
	if len(b) > MaxSpecBytes {
		return nil, fmt.Errorf("nsinit: a spec of %d bytes, more than the %d the init reads: %w", len(b), MaxSpecBytes, syscall.E2BIG)
	}
	return b, nil
}
