package security

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// ErrInvalidSeccompProfile means a seccomp profile cannot be enforced as
// written: it is malformed, or names an action, operator, architecture,
// capability or system call that does not exist.
var ErrInvalidSeccompProfile = errors.New("invalid seccomp profile")

// SeccompProfile is a seccomp policy in the JSON format Docker and the OCI
// runtime spec use. ParseSeccompProfile reads one; Compile turns it into the
// program the kernel runs.
type SeccompProfile struct {
	// DefaultAction is taken for every system call no rule matches.
	DefaultAction SeccompAction `json:"defaultAction"`
	// DefaultErrnoRet is the errno DefaultAction returns when it is
	// SCMP_ACT_ERRNO or SCMP_ACT_TRACE; EPERM if nil.
	DefaultErrnoRet *uint `json:"defaultErrnoRet,omitempty"`
	// Architectures the filter also accepts besides the machine's own,
	// as SCMP_ARCH_X86 and the like. Only those the machine can run are
	// kept; system calls of any other architecture kill the process.
	Architectures []string `json:"architectures,omitempty"`
	// ArchMap is Docker's form of Architectures: the entry whose
	// Architecture is the machine's own gives the others. A profile has
	// one or the other, not both.
	ArchMap []SeccompArchMap `json:"archMap,omitempty"`
	// Flags are passed to seccomp(2) when the filter is loaded; see
	// FilterFlags.
	Flags []string `json:"flags,omitempty"`
	// Syscalls are the rules, each giving an action for some system
	// calls, possibly only for some arguments, capabilities,
	// architectures or kernels.
	Syscalls []SeccompRule `json:"syscalls"`
}

// SeccompArchMap lists the architectures a filter accepts on a machine of
// one architecture.
type SeccompArchMap struct {
	Architecture     string   `json:"architecture"`
	SubArchitectures []string `json:"subArchitectures"`
}

// SeccompRule gives an action for the system calls it names.
type SeccompRule struct {
	Names []string `json:"names,omitempty"`
	// Name is the older single-call form of Names; a rule has one or the
	// other.
	Name   string        `json:"name,omitempty"`
	Action SeccompAction `json:"action"`
	// ErrnoRet is the errno returned by SCMP_ACT_ERRNO (EPERM if nil), or
	// the value a tracer sees for SCMP_ACT_TRACE.
	ErrnoRet *uint `json:"errnoRet,omitempty"`
	// Args must all hold for the rule to match. At most one may test a
	// given argument: libseccomp cannot join two tests of one argument.
	Args    []SeccompArg `json:"args,omitempty"`
	Comment string       `json:"comment,omitempty"`
	// Includes and Excludes make the rule conditional on the capabilities
	// the process holds, the machine's architecture and the kernel.
	Includes *SeccompFilter `json:"includes,omitempty"`
	Excludes *SeccompFilter `json:"excludes,omitempty"`
}

// SeccompFilter is a condition on where a rule applies. In Includes, every
// field given must hold; in Excludes, any field that holds drops the rule.
type SeccompFilter struct {
	// Caps are capability names. Includes needs all of them, Excludes
	// drops the rule if any is held.
	Caps []string `json:"caps,omitempty"`
	// Arches are architecture names (amd64, arm64, x86, ... or the
	// SCMP_ARCH_ forms), compared with the machine's own.
	Arches []string `json:"arches,omitempty"`
	// MinKernel is a kernel version such as "4.8": Includes needs at
	// least that kernel, Excludes drops the rule from that kernel on.
	MinKernel string `json:"minKernel,omitempty"`
}

// SeccompArg is a test of one argument of a system call.
type SeccompArg struct {
	// Index is the argument's position, 0 to 5.
	Index uint `json:"index"`
	// Value is compared with the argument; for SCMP_CMP_MASKED_EQ it is
	// the mask, and ValueTwo the value the masked argument must equal.
	Value    uint64    `json:"value"`
	ValueTwo uint64    `json:"valueTwo,omitempty"`
	Op       SeccompOp `json:"op"`
}

// SeccompAction is what the kernel does with a system call.
type SeccompAction string

// The actions a profile may use. SCMP_ACT_NOTIFY, which hands the call to a
// supervisor process, is recognized but not supported.
const (
	ActKill        SeccompAction = "SCMP_ACT_KILL" // the thread, as SCMP_ACT_KILL_THREAD
	ActKillProcess SeccompAction = "SCMP_ACT_KILL_PROCESS"
	ActKillThread  SeccompAction = "SCMP_ACT_KILL_THREAD"
	ActTrap        SeccompAction = "SCMP_ACT_TRAP"
	ActErrno       SeccompAction = "SCMP_ACT_ERRNO"
	ActTrace       SeccompAction = "SCMP_ACT_TRACE"
	ActAllow       SeccompAction = "SCMP_ACT_ALLOW"
	ActLog         SeccompAction = "SCMP_ACT_LOG"
	ActNotify      SeccompAction = "SCMP_ACT_NOTIFY"
)

// SeccompOp compares a system call argument with a rule's value.
type SeccompOp string

// The comparisons.
const (
	OpNotEqual     SeccompOp = "SCMP_CMP_NE"
	OpLessThan     SeccompOp = "SCMP_CMP_LT"
	OpLessEqual    SeccompOp = "SCMP_CMP_LE"
	OpEqualTo      SeccompOp = "SCMP_CMP_EQ"
	OpGreaterEqual SeccompOp = "SCMP_CMP_GE"
	OpGreaterThan  SeccompOp = "SCMP_CMP_GT"
	OpMaskedEqual  SeccompOp = "SCMP_CMP_MASKED_EQ"
)

// maxErrno is the largest errno the kernel returns as such; larger values
// would read as successful results.
const maxErrno = 4095

// ParseSeccompProfile reads a profile in Docker's JSON format and checks
// that it can be enforced: every action, operator, architecture and
// capability exists, every system call is one Linux has, and no field is
// unknown (Docker ignores unknown fields; a misspelt one here is an error,
// not a rule silently lost). Every error wraps ErrInvalidSeccompProfile.
//
// A system call libseccomp does not know is accepted if it is in berth's
// own table of newer calls, and enforced through that table; any other
// unknown name is an error.
func ParseSeccompProfile(data []byte) (*SeccompProfile, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p SeccompProfile
	if err := dec.Decode(&p); err != nil {
		return nil, jsonError(data, dec, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		line, col := position(data, dec.InputOffset())
		return nil, fmt.Errorf("%w: line %d, column %d: data after the profile", ErrInvalidSeccompProfile, line, col)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// LoadSeccompProfile reads and parses the profile in the named file.
func LoadSeccompProfile(path string) (*SeccompProfile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := ParseSeccompProfile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// JSON returns the profile as indented JSON that ParseSeccompProfile reads
// back.
func (p *SeccompProfile) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(p, "", "\t")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// FilterFlags returns the profile's Flags as the flags argument of
// seccomp(SECCOMP_SET_MODE_FILTER, ...). The profile must be valid.
func (p *SeccompProfile) FilterFlags() uint {
	var f uint
	for _, name := range p.Flags {
		flag, _ := filterFlag(name)
		f |= flag
	}
	return f
}

// filterFlag returns the seccomp(2) flag a profile names. The flags not
// here need a supervisor (NEW_LISTENER, WAIT_KILLABLE_RECV) or change how
// loading fails (TSYNC_ESRCH), which is the loader's business.
func filterFlag(name string) (uint, bool) {
	switch name {
	case "SECCOMP_FILTER_FLAG_TSYNC":
		return unix.SECCOMP_FILTER_FLAG_TSYNC, true
	case "SECCOMP_FILTER_FLAG_LOG":
		return unix.SECCOMP_FILTER_FLAG_LOG, true
	case "SECCOMP_FILTER_FLAG_SPEC_ALLOW":
		return unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW, true
	}
	return 0, false
}

// jsonError turns a decoding error into one that says where in data it is.
func jsonError(data []byte, dec *json.Decoder, err error) error {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
		off    = dec.InputOffset()
	)
	switch {
	case errors.As(err, &syntax):
		off = syntax.Offset - 1 // the offending byte, which Offset is past
	case errors.As(err, &typ):
		off = typ.Offset
		err = fmt.Errorf("%s: cannot use JSON %s as %s", typ.Field, typ.Value, typ.Type)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		off = int64(len(data))
		err = errors.New("unexpected end of data")
	}
	line, col := position(data, off)
	return fmt.Errorf("%w: line %d, column %d: %w", ErrInvalidSeccompProfile, line, col, err)
}

// position returns the 1-based line and column of byte offset off in data.
func position(data []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

// validate reports the first thing in p that cannot be enforced.
func (p *SeccompProfile) validate() error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidSeccompProfile}, args...)...)
	}
	if p.DefaultAction == "" {
		return invalid("defaultAction is missing")
	}
	if err := p.DefaultAction.check(p.DefaultErrnoRet); err != nil {
		return invalid("defaultAction: %w", err)
	}
	if len(p.Architectures) > 0 && len(p.ArchMap) > 0 {
		return invalid("architectures and archMap are both given; use one")
	}
	for i, a := range p.Architectures {
		if _, err := parseArch(a); err != nil {
			return invalid("architectures[%d]: %w", i, err)
		}
	}
	for i, m := range p.ArchMap {
		if _, err := parseArch(m.Architecture); err != nil {
			return invalid("archMap[%d].architecture: %w", i, err)
		}
		for j, a := range m.SubArchitectures {
			if _, err := parseArch(a); err != nil {
				return invalid("archMap[%d].subArchitectures[%d]: %w", i, j, err)
			}
		}
	}
	for i, f := range p.Flags {
		if _, ok := filterFlag(f); !ok {
			return invalid("flags[%d]: unknown or unsupported flag %q", i, f)
		}
	}
	for i := range p.Syscalls {
		r := &p.Syscalls[i]
		if err := r.validate(); err != nil {
			return invalid("syscalls[%d]%s: %w", i, r.label(), err)
		}
	}
	// Rules with includes or excludes may never meet; compiling checks
	// those for the capabilities and machine at hand.
	return p.checkConflicts(func(r *SeccompRule) bool {
		return r.Includes == nil && r.Excludes == nil
	})
}

func (r *SeccompRule) validate() error {
	names := r.names()
	switch {
	case r.Name != "" && len(r.Names) > 0:
		return errors.New("name and names are both given; use names")
	case len(names) == 0:
		return errors.New("no system call named")
	}
	for _, n := range names {
		if n == "" {
			return errors.New("empty system call name")
		}
		if !knownSyscall(n) {
			return fmt.Errorf("unknown system call %q", n)
		}
	}
	if r.Action == "" {
		return errors.New("action is missing")
	}
	if err := r.Action.check(r.ErrnoRet); err != nil {
		return err
	}
	var seen [6]bool
	for i, a := range r.Args {
		if a.Index > 5 {
			return fmt.Errorf("args[%d]: index %d: system calls have 6 arguments, 0 to 5", i, a.Index)
		}
		if seen[a.Index] {
			// runc quietly turns such tests into alternatives, one
			// rule each; neither reading is safe to guess.
			return fmt.Errorf("args[%d]: argument %d is tested twice, which libseccomp cannot do in one rule", i, a.Index)
		}
		seen[a.Index] = true
		if _, err := a.Op.scmp(); err != nil {
			return fmt.Errorf("args[%d]: %w", i, err)
		}
		if a.Op != OpMaskedEqual && a.ValueTwo != 0 {
			return fmt.Errorf("args[%d]: valueTwo is only for %s", i, OpMaskedEqual)
		}
	}
	for _, f := range []struct {
		name string
		f    *SeccompFilter
	}{{"includes", r.Includes}, {"excludes", r.Excludes}} {
		if f.f == nil {
			continue
		}
		if _, err := CapabilityMask(f.f.Caps); err != nil {
			return fmt.Errorf("%s.caps: %w", f.name, err)
		}
		for i, a := range f.f.Arches {
			if _, err := parseArch(a); err != nil {
				return fmt.Errorf("%s.arches[%d]: %w", f.name, i, err)
			}
		}
		if f.f.MinKernel != "" {
			if _, err := parseKernelVersion(f.f.MinKernel); err != nil {
				return fmt.Errorf("%s.minKernel: %w", f.name, err)
			}
		}
	}
	return nil
}

// checkConflicts reports two rules of those selected that give one system
// call different actions when one of them tests no argument. libseccomp
// would silently keep one, so a rule added to deny a call the profile
// already allows would do nothing.
func (p *SeccompProfile) checkConflicts(selected func(*SeccompRule) bool) error {
	type use struct {
		rule   int
		action seccomp.ScmpAction
		always bool
	}
	uses := make(map[string][]use)
	for i := range p.Syscalls {
		r := &p.Syscalls[i]
		if !selected(r) {
			continue
		}
		u := use{rule: i, action: r.Action.scmp(r.ErrnoRet), always: len(r.Args) == 0}
		for _, n := range r.names() {
			for _, v := range uses[n] {
				if v.action != u.action && (v.always || u.always) {
					return fmt.Errorf("%w: syscalls[%d] and syscalls[%d] give %s different actions",
						ErrInvalidSeccompProfile, v.rule, i, n)
				}
			}
			uses[n] = append(uses[n], u)
		}
	}
	return nil
}

// names returns the system calls r is about.
func (r *SeccompRule) names() []string {
	if r.Name != "" {
		return []string{r.Name}
	}
	return r.Names
}

// label names r's system calls for an error message, briefly.
func (r *SeccompRule) label() string {
	names := r.names()
	switch {
	case len(names) == 0:
		return ""
	case len(names) == 1:
		return " (" + names[0] + ")"
	default:
		return fmt.Sprintf(" (%s and %d more)", names[0], len(names)-1)
	}
}

// check reports whether a can be used with errnoRet.
func (a SeccompAction) check(errnoRet *uint) error {
	switch a {
	case ActKill, ActKillProcess, ActKillThread, ActTrap, ActAllow, ActLog:
		if errnoRet != nil {
			return fmt.Errorf("an errno is only for %s and %s, not %s", ActErrno, ActTrace, a)
		}
	case ActErrno:
		if errnoRet != nil && *errnoRet > maxErrno {
			return fmt.Errorf("errno %d is out of range (0 to %d)", *errnoRet, maxErrno)
		}
	case ActTrace:
		if errnoRet != nil && *errnoRet > unix.SECCOMP_RET_DATA {
			return fmt.Errorf("trace value %d is out of range (0 to %d)", *errnoRet, unix.SECCOMP_RET_DATA)
		}
	case ActNotify:
		return fmt.Errorf("%s is not supported: berth runs no seccomp supervisor", a)
	default:
		return fmt.Errorf("unknown action %q", a)
	}
	return nil
}

// scmp returns a with its errno as libseccomp's action. An errno defaults
// to EPERM, as Docker's does. a must have passed check.
func (a SeccompAction) scmp(errnoRet *uint) seccomp.ScmpAction {
	code := int16(unix.EPERM)
	if errnoRet != nil {
		code = int16(*errnoRet)
	}
	switch a {
	case ActKill, ActKillThread:
		return seccomp.ActKillThread
	case ActKillProcess:
		return seccomp.ActKillProcess
	case ActTrap:
		return seccomp.ActTrap
	case ActErrno:
		return seccomp.ActErrno.SetReturnCode(code)
	case ActTrace:
		return seccomp.ActTrace.SetReturnCode(code)
	case ActLog:
		return seccomp.ActLog
	}
	return seccomp.ActAllow
}

// ret returns a with its errno as the value a filter returns to the
// kernel. a must have passed check.
func (a SeccompAction) ret(errnoRet *uint) uint32 {
	data := uint32(unix.EPERM)
	if errnoRet != nil {
		data = uint32(*errnoRet)
	}
	switch a {
	case ActKill, ActKillThread:
		return unix.SECCOMP_RET_KILL_THREAD
	case ActKillProcess:
		return unix.SECCOMP_RET_KILL_PROCESS
	case ActTrap:
		return unix.SECCOMP_RET_TRAP
	case ActErrno:
		return unix.SECCOMP_RET_ERRNO | data
	case ActTrace:
		return unix.SECCOMP_RET_TRACE | data
	case ActLog:
		return unix.SECCOMP_RET_LOG
	}
	return unix.SECCOMP_RET_ALLOW
}

// permissive reports whether a lets the call run.
func (a SeccompAction) permissive() bool {
	return a == ActAllow || a == ActLog
}

func (o SeccompOp) scmp() (seccomp.ScmpCompareOp, error) {
	switch o {
	case OpNotEqual:
		return seccomp.CompareNotEqual, nil
	case OpLessThan:
		return seccomp.CompareLess, nil
	case OpLessEqual:
		return seccomp.CompareLessOrEqual, nil
	case OpEqualTo:
		return seccomp.CompareEqual, nil
	case OpGreaterEqual:
		return seccomp.CompareGreaterEqual, nil
	case OpGreaterThan:
		return seccomp.CompareGreater, nil
	case OpMaskedEqual:
		return seccomp.CompareMaskedEqual, nil
	case "":
		return 0, errors.New("op is missing")
	}
	return 0, fmt.Errorf("unknown op %q", o)
}

// parseArch reads an architecture name in either of the forms profiles
// use: SCMP_ARCH_X86_64 or Go's amd64.
func parseArch(name string) (seccomp.ScmpArch, error) {
	s := strings.ToLower(strings.TrimPrefix(name, "SCMP_ARCH_"))
	if s == "" {
		return seccomp.ArchInvalid, errors.New("empty architecture name")
	}
	if s == "native" {
		return seccomp.ArchInvalid, fmt.Errorf("unknown architecture %q", name)
	}
	a, err := seccomp.GetArchFromString(s)
	if err != nil {
		return seccomp.ArchInvalid, fmt.Errorf("unknown architecture %q", name)
	}
	return a, nil
}

// knownSyscall reports whether name is a Linux system call, on any
// architecture, that libseccomp or berth's own table knows.
func knownSyscall(name string) bool {
	if _, err := seccomp.GetSyscallFromName(name); err == nil {
		return true
	}
	_, ok := lookupNewSyscall(name)
	return ok
}

// kernelVersion is a kernel release's major, minor and patch numbers.
type kernelVersion [3]int

// parseKernelVersion reads "4.8", "4.8.1" or a release such as
// "6.1.0-18-amd64", ignoring anything after the numbers.
func parseKernelVersion(s string) (kernelVersion, error) {
	var v kernelVersion
	end := strings.IndexFunc(s, func(r rune) bool { return r != '.' && (r < '0' || r > '9') })
	if end < 0 {
		end = len(s)
	}
	parts := strings.Split(s[:end], ".")
	if len(parts) < 2 {
		return v, fmt.Errorf("kernel version %q is not of the form 4.8", s)
	}
	for i, p := range parts[:min(len(parts), len(v))] {
		n, err := strconv.Atoi(p)
		if err != nil {
			return v, fmt.Errorf("kernel version %q is not of the form 4.8", s)
		}
		v[i] = n
	}
	return v, nil
}

func (v kernelVersion) less(w kernelVersion) bool {
	for i := range v {
		if v[i] != w[i] {
			return v[i] < w[i]
		}
	}
	return false
}

func (v kernelVersion) String() string {
	return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2])
}

// runningKernel returns the version of the kernel this process runs on.
func runningKernel() (kernelVersion, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return kernelVersion{}, fmt.Errorf("uname: %w", err)
	}
	return parseKernelVersion(unix.ByteSliceToString(u.Release[:]))
}
