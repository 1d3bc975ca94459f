// Package nsinit is the sandbox's first process and the host's side of
// talking to it.
//
// The C half (nsinit.c) is a constructor linked into every program that
// imports this package. When the host re-executes its own binary with
// _BERTH_INIT set, the constructor runs before the Go runtime starts: it
// reads a Spec from fd 3, builds the sandbox's mounts, starts the workload
// and stays as PID 1, reporting on fd 4. A program that imports berth needs
// no call in main for this to work.
package nsinit

// #include "spec.h"
// #include "supervise.h"
import "C"

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// EnvMode names the environment variable that switches the constructor on;
// its value is ModeInit or ModeExec.
const (
	EnvMode  = "_BERTH_INIT"
	ModeInit = "init"
	ModeExec = "exec"
	ModeNoop = "noop" // exit at once: for measuring the re-exec itself
	ModeHold = "hold" // stay until stdin closes: to hold namespaces open
	// ModeStandby is an init built ahead of its workload: it sets the
	// sandbox up from a first message on its spec socket, reports Ready,
	// and starts the workload that a second message names (SendMessage).
	ModeStandby = "standby"
	// ModeSupervise is a detached sandbox's supervisor (supervise.c),
	// which the host process becomes by execve: see the Supervise*
	// variables for its settings.
	ModeSupervise = "supervise"
)

// SuperviseEntryMax is the most text one entry of the supervisor's log
// holds.
const SuperviseEntryMax = C.SUPERVISE_ENTRY_MAX

// The supervisor's settings (supervise.c says what they hold).
const (
	EnvSupervise     = "_BERTH_SUPERVISE"
	EnvSuperviseLog  = "_BERTH_SUPERVISE_LOG"
	EnvSuperviseExit = "_BERTH_SUPERVISE_EXIT"
)

// MaxStandbyFiles is the most descriptors a standby init's workload
// message may carry: stdio, extra files and console together.
const MaxStandbyFiles = C.STANDBY_MAX_FDS

// MountKind says how the init makes a Mount.
type MountKind int

// Mount kinds.
const (
	MountBind MountKind = C.MOUNT_BIND // Source is a host path, bound recursively
	MountFS   MountKind = C.MOUNT_FS   // a filesystem of type FSType
	MountDev  MountKind = C.MOUNT_DEV  // a tmpfs at /dev, filled with device nodes
)

// A Mount is made inside the rootfs before the pivot. Target is resolved
// inside the rootfs, so that symlinks in the image cannot redirect it.
type Mount struct {
	Kind   MountKind
	Source string
	Target string
	FSType string
	Flags  uintptr // MS_* flags
	Data   string
	// SourceFD, if nonzero, is the init's descriptor of a detached mount
	// tree (open_tree(2) with OPEN_TREE_CLONE) that a MountBind attaches
	// instead of looking Source up, which then only names it in errors.
	// Its Flags, of MS_RDONLY, MS_NOSUID, MS_NODEV and MS_NOEXEC, go on
	// every mount of the tree, and the tree is made private.
	SourceFD int
}

// Caps are the five capability sets, as bit masks.
type Caps struct {
	Bounding, Effective, Permitted, Inheritable, Ambient uint64
}

// Rlimit is one resource limit.
type Rlimit struct {
	Resource   int
	Soft, Hard uint64
}

// A Spec is everything the init needs to set a sandbox up and start its
// workload, or (in exec mode) to join one.
type Spec struct {
	Rootfs        string // host path of the root filesystem; empty in exec mode
	Hostname      string
	Dir           string // working directory inside the sandbox
	Path          string // the PATH to look the command up in
	Args          []string
	Env           []string
	UID, GID      uint32
	Groups        []uint32
	UnshareCgroup bool // make a cgroup namespace (the host has moved the process into its cgroup)
	Mounts        []Mount
	Masked        []string
	ReadonlyPaths []string
	ReadonlyRoot  bool
	NoNewPrivs    bool
	TTY           bool
	// TTYRows and TTYCols, if not zero, are the terminal's size, set
	// before the workload runs, so that it never sees the terminal
	// without one.
	TTYRows, TTYCols uint16
	Loopback         bool // bring lo up in a new network namespace
	BindDevices      bool // bind device nodes from the host (no mknod in a user namespace)
	Caps             *Caps
	Rlimits          []Rlimit
	Seccomp          []byte // a compiled BPF program (struct sock_filter array)
	SeccompFlags     uint   // SECCOMP_FILTER_FLAG_* for seccomp(2)
	OOMScoreAdj      *int
	PidFD            int // exec mode: descriptor number of a pidfd on the sandbox's PID 1
	Namespaces       int // exec mode: CLONE_NEW* flags to join
	// Landlock, if nonzero, is the set of Landlock file access rights to
	// confine to the sandbox's own tree.
	Landlock uint64
	// ExtraFiles is how many descriptors, from fd 6 of the init, the
	// workload gets as fds 3, 4, ...
	ExtraFiles int
	// NetnsFD, if nonzero, is the init's descriptor of a network
	// namespace to join instead of having one of its own.
	NetnsFD int
	// ExecWrites are written, in order, by the workload's process just
	// before it execs: LSM labels through /proc/thread-self/attr.
	ExecWrites []FileWrite
	// CgroupFDs are the process's descriptors of its cgroups' files
	// (cgroup.Cgroup.JoinFiles), which it writes "0" to first thing.
	CgroupFDs []int
	// Bounding, in a standby init's first message, is the bounding set
	// the workload's process drops to while it waits for its workload.
	Bounding *uint64
	// Sysctls are written, in order, once the sandbox's /proc is mounted
	// and before /proc/sys is made read-only: only files of the
	// sandbox's own namespaces, which the caller has checked.
	Sysctls []Sysctl
	// Devices are nodes the init adds to the sandbox's /dev, after its
	// usual ones (TAG_DEVICE).
	Devices []Device
	// LateMounts, in a standby init's workload message, says that a
	// message of mounts follows it (EncodeLateMounts), which PID 1 makes
	// before the workload runs.
	LateMounts bool
}

// A Device is a device node the init makes in the sandbox's /dev.
type Device struct {
	Path         string // under /dev, such as /dev/fuse or /dev/net/tun
	Source       string // the host's node, bound from when Bind is set
	Type         byte   // 'c' (character) or 'b' (block)
	Major, Minor uint32
	Mode         uint32 // permission bits
	UID, GID     uint32
	// Bind makes the node a bind mount of Source rather than a new node:
	// for a user namespace, where mknod is refused.
	Bind bool
}

// FileWrite is a file and what to write to it.
type FileWrite struct{ Path, Data string }

// A Sysctl is a kernel parameter: its file, relative to /proc/sys, and
// the value to write there.
type Sysctl struct{ Path, Value string }

// Encode serialises the spec in the records nsinit.c reads.
func (s *Spec) Encode() []byte {
	var b []byte
	rec := func(tag int, fields ...string) {
		n := 0
		for _, f := range fields {
			n += len(f) + 1
		}
		b = binary.NativeEndian.AppendUint16(b, uint16(tag))
		b = binary.NativeEndian.AppendUint32(b, uint32(n))
		for _, f := range fields {
			b = append(b, f...)
			b = append(b, 0)
		}
	}
	str := func(tag int, v string) {
		if v != "" {
			rec(tag, v)
		}
	}
	flag := func(tag int, v bool) {
		if v {
			rec(tag, "1")
		}
	}
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }

	str(C.TAG_ROOTFS, s.Rootfs)
	str(C.TAG_HOSTNAME, s.Hostname)
	str(C.TAG_CWD, s.Dir)
	str(C.TAG_PATH, s.Path)
	for _, a := range s.Args {
		rec(C.TAG_ARG, a)
	}
	for _, e := range s.Env {
		rec(C.TAG_ENV, e)
	}
	rec(C.TAG_UID, u(uint64(s.UID)))
	rec(C.TAG_GID, u(uint64(s.GID)))
	for _, g := range s.Groups {
		rec(C.TAG_GROUP, u(uint64(g)))
	}
	flag(C.TAG_UNSHARE_CGROUP, s.UnshareCgroup)
	flag(C.TAG_LATE_MOUNTS, s.LateMounts)
	for _, m := range s.Mounts {
		rec(C.TAG_MOUNT, u(uint64(m.Kind)), m.Source, m.Target, m.FSType, u(uint64(m.Flags)), m.Data)
		if m.SourceFD != 0 {
			rec(C.TAG_MOUNT_SOURCE_FD, strconv.Itoa(m.SourceFD))
		}
	}
	for _, p := range s.Masked {
		rec(C.TAG_MASK, p)
	}
	for _, p := range s.ReadonlyPaths {
		rec(C.TAG_READONLY_PATH, p)
	}
	flag(C.TAG_READONLY_ROOT, s.ReadonlyRoot)
	flag(C.TAG_NO_NEW_PRIVS, s.NoNewPrivs)
	flag(C.TAG_TTY, s.TTY)
	if s.TTYRows != 0 || s.TTYCols != 0 {
		rec(C.TAG_TTY_SIZE, u(uint64(s.TTYRows)), u(uint64(s.TTYCols)))
	}
	flag(C.TAG_LOOPBACK, s.Loopback)
	flag(C.TAG_BIND_DEVICES, s.BindDevices)
	if c := s.Caps; c != nil {
		rec(C.TAG_CAPS, u(c.Bounding), u(c.Effective), u(c.Permitted), u(c.Inheritable), u(c.Ambient))
	}
	for _, r := range s.Rlimits {
		rec(C.TAG_RLIMIT, u(uint64(r.Resource)), u(r.Soft), u(r.Hard))
	}
	if len(s.Seccomp) > 0 {
		b = binary.NativeEndian.AppendUint16(b, C.TAG_SECCOMP)
		b = binary.NativeEndian.AppendUint32(b, uint32(len(s.Seccomp)))
		b = append(b, s.Seccomp...)
	}
	if s.SeccompFlags != 0 {
		rec(C.TAG_SECCOMP_FLAGS, u(uint64(s.SeccompFlags)))
	}
	if s.OOMScoreAdj != nil {
		rec(C.TAG_OOM_SCORE_ADJ, strconv.Itoa(*s.OOMScoreAdj))
	}
	if s.Landlock != 0 {
		rec(C.TAG_LANDLOCK, u(s.Landlock))
	}
	if s.ExtraFiles > 0 {
		rec(C.TAG_EXTRA_FILES, strconv.Itoa(s.ExtraFiles))
	}
	if s.NetnsFD != 0 {
		rec(C.TAG_NETNS_FD, strconv.Itoa(s.NetnsFD))
	}
	if s.Bounding != nil {
		rec(C.TAG_BOUNDING, u(*s.Bounding))
	}
	for _, fd := range s.CgroupFDs {
		rec(C.TAG_CGROUP_FD, strconv.Itoa(fd))
	}
	for _, d := range s.Devices {
		bind := "0"
		if d.Bind {
			bind = "1"
		}
		rec(C.TAG_DEVICE, d.Path, d.Source, string(d.Type), u(uint64(d.Major)), u(uint64(d.Minor)),
			u(uint64(d.Mode)), u(uint64(d.UID)), u(uint64(d.GID)), bind)
	}
	for _, w := range s.ExecWrites {
		rec(C.TAG_EXEC_WRITE, w.Path, w.Data)
	}
	for _, c := range s.Sysctls {
		rec(C.TAG_SYSCTL, c.Path, c.Value)
	}
	if s.Namespaces != 0 {
		rec(C.TAG_PIDFD, strconv.Itoa(s.PidFD))
		rec(C.TAG_NAMESPACES, strconv.Itoa(s.Namespaces))
	}
	return b
}

// MaxLateMountsBytes bounds the message EncodeLateMounts makes.
const MaxLateMountsBytes = C.LATE_MOUNTS_MAX_BYTES

// EncodeLateMounts encodes the mounts a pooled sandbox's request adds, the
// message that follows a workload message whose Spec sets LateMounts. Each
// MountBind's source goes with the message as a descriptor, one per bind
// mount and in their order, so SourceFD must be 0; only binds and tmpfs
// are taken. PID 1 makes them inside the built sandbox, each target
// resolved in its root without leaving the image's own filesystem.
func EncodeLateMounts(mounts []Mount) ([]byte, error) {
	var b []byte
	for _, m := range mounts {
		if m.SourceFD != 0 || (m.Kind != MountBind && (m.Kind != MountFS || m.FSType != "tmpfs")) {
			return nil, fmt.Errorf("nsinit: a late mount on %s: kind %d, type %q, source descriptor %d", m.Target, m.Kind, m.FSType, m.SourceFD)
		}
		fields := []string{strconv.Itoa(int(m.Kind)), m.Source, m.Target, m.FSType, strconv.FormatUint(uint64(m.Flags), 10), m.Data}
		n := 0
		for _, f := range fields {
			n += len(f) + 1
		}
		b = binary.NativeEndian.AppendUint16(b, C.TAG_MOUNT)
		b = binary.NativeEndian.AppendUint32(b, uint32(n))
		for _, f := range fields {
			b = append(append(b, f...), 0)
		}
	}
	if len(b) > MaxLateMountsBytes {
		return nil, fmt.Errorf("nsinit: late mounts of %d bytes, at most %d", len(b), MaxLateMountsBytes)
	}
	return b, nil
}

// SendMessage sends a standby init one framed part of its spec over the
// stream socket conn, with fds, which the init receives as its own.
func SendMessage(conn int, spec []byte, fds []int) error {
	if len(fds) > MaxStandbyFiles {
		return fmt.Errorf("nsinit: %d descriptors, at most %d", len(fds), MaxStandbyFiles)
	}
	if uint64(len(spec)) > 1<<31 {
		return fmt.Errorf("nsinit: spec of %d bytes", len(spec))
	}
	msg := binary.NativeEndian.AppendUint32(make([]byte, 0, 4+len(spec)), uint32(len(spec)))
	msg = append(msg, spec...)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// The descriptors go with the first bytes; a short write leaves the
	// rest to plain writes.
	n, err := unix.SendmsgN(conn, msg, oob, nil, unix.MSG_NOSIGNAL)
	for err == nil && n < len(msg) {
		var w int
		w, err = unix.SendmsgN(conn, msg[n:], nil, nil, unix.MSG_NOSIGNAL)
		n += w
	}
	if err != nil {
		return fmt.Errorf("nsinit: send spec: %w", err)
	}
	return nil
}

// Status is what the init reports about the workload.
type Status struct {
	Ready    bool // a standby init has built the sandbox and waits for its workload
	Started  bool
	Exited   bool
	ExitCode int
	Signal   syscall.Signal // nonzero if a signal ended it
}

// SetupError is a failure the init reported while setting the sandbox up:
// nothing of the workload ran.
type SetupError struct {
	Msg   string
	Errno syscall.Errno
	// Exec is set when the sandbox was built but its program could not be
	// run: not found, not executable.
	Exec bool
}

func (e *SetupError) Error() string {
	if e.Errno != 0 {
		return e.Msg + ": " + e.Errno.Error()
	}
	return e.Msg
}

func (e *SetupError) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// A StatusReader reads the init's reports from fd 4's other end.
type StatusReader struct {
	r *bufio.Reader
}

// NewStatusReader reads status lines from r.
func NewStatusReader(r io.Reader) *StatusReader {
	return &StatusReader{r: bufio.NewReaderSize(r, 512)}
}

// Next returns the next report. It returns io.EOF when the init has gone
// without a word, which means it was killed.
func (sr *StatusReader) Next() (Status, error) {
	line, err := sr.r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) && line == "" {
			return Status{}, io.EOF
		}
		if !errors.Is(err, io.EOF) {
			return Status{}, err
		}
	}
	line = strings.TrimSuffix(line, "\n")
	kind, rest, _ := strings.Cut(line, " ")
	switch kind {
	case "P":
		return Status{Ready: true}, nil
	case "R":
		return Status{Started: true}, nil
	case "X":
		code, err := strconv.Atoi(rest)
		if err != nil {
			break
		}
		return Status{Exited: true, ExitCode: code}, nil
	case "S":
		sig, err := strconv.Atoi(rest)
		if err != nil {
			break
		}
		return Status{Exited: true, ExitCode: 128 + sig, Signal: syscall.Signal(sig)}, nil
	case "E", "C":
		errnoStr, msg, _ := strings.Cut(rest, " ")
		n, _ := strconv.Atoi(errnoStr)
		return Status{}, &SetupError{Msg: msg, Errno: syscall.Errno(n), Exec: kind == "C"}
	}
	return Status{}, fmt.Errorf("nsinit: garbled status %q", line)
}

// SelfExe returns this program's executable, opened through a read-only,
// detached bind mount of it and held for the life of the process. A
// sandbox's PID 1 is this program, and runc's CVE-2019-5736 showed a
// container overwriting its runtime through /proc/<pid>/exe; a read-only
// mount refuses that without runc's remedy of copying the binary into
// memory for every container.
//
// A helper gets the file as one of its descriptors and executes it through
// that descriptor (ExecPath). A descriptor of the host's own that is not
// among the child's files is not safe to name: os/exec's child, when it
// shuffles its files into place, first moves its error pipe to one above
// the highest of them, then on up, over whatever was there. With a file
// numbered just below the host's, the exec opened that pipe and failed
// with EACCES (1 start in 160, 16 in user namespaces at once).
var SelfExe = sync.OnceValues(func() (*os.File, error) {
	return ReadOnlyView("/proc/self/exe")
})

// ExecPath returns the path through which a child executes the file it was
// given as descriptor fd.
func ExecPath(fd int) string {
	return "/proc/self/fd/" + strconv.Itoa(fd)
}

// ReadOnlyView returns file opened through a detached read-only bind mount
// of it that only this process holds: nothing can write to the file
// through it, nor remount it.
func ReadOnlyView(file string) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, file, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("nsinit: detached mount of %s: %w", file, err)
	}
	err = unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NODEV})
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nsinit: make the mount of %s read-only: %w", file, err)
	}
	return os.NewFile(uintptr(fd), file), nil
}

// SigKillWorkload, sent to an exec helper, makes it SIGKILL the process it
// started and then report and exit like any other end. Killing the helper
// itself would orphan that process to the host's init.
const SigKillWorkload = syscall.Signal(64) // SIGRTMAX
