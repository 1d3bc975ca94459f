package nsinit

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The init's process is this test binary, which links the constructor: it
// starts with _BERTH_INIT set, reads its spec from fd 3 and reports on fd 4.

// startInit starts an init in mode, in namespaces of its own so that
// nothing it might do reaches the host, with spec as its fd 3.
func startInit(t *testing.T, mode string, spec *os.File) (*exec.Cmd, *StatusReader) {
	t.Helper()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { statusR.Close() })
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{EnvMode + "=" + mode}
	cmd.ExtraFiles = []*os.File{spec, statusW}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC,
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	statusW.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, NewStatusReader(statusR)
}

// wantSetupError reads the init's report, which must be a setup error of
// errno that says says.
func wantSetupError(t *testing.T, sr *StatusReader, errno syscall.Errno, says string) {
	t.Helper()
	st, err := sr.Next()
	var se *SetupError
	if !errors.As(err, &se) {
		t.Fatalf("report %+v, %v; want a setup error", st, err)
	}
	if se.Errno != errno || !strings.Contains(se.Msg, says) {
		t.Errorf("setup error %q (%v), want %q (%v)", se.Msg, se.Errno, says, errno)
	}
}

// A spec larger than the host ever sends is refused once the init has
// read that much, not read on into memory.
func TestInitRefusesHugeSpec(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	_, sr := startInit(t, ModeInit, r)
	r.Close()
	// Endless zeros: as a record, tag 0 of length 0, but the init must
	// stop reading before it parses anything.
	go func() {
		io.Copy(w, io.LimitReader(zeros{}, 64<<20))
		w.Close()
	}()
	defer w.Close()
	wantSetupError(t, sr, syscall.E2BIG, "read spec: more than 8388608 bytes")
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// A standby init's message whose length says 4 GiB is refused before
// anything is allocated for it.
func TestStandbyRefusesHugeMessage(t *testing.T) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(pair[0]), "spec"), os.NewFile(uintptr(pair[1]), "spec")
	_, sr := startInit(t, ModeStandby, theirs)
	theirs.Close()
	if _, err := mine.Write(binary.NativeEndian.AppendUint32(nil, 0xffffffff)); err != nil {
		t.Fatal(err)
	}
	mine.Close() // whatever the init makes of it, the message ends here
	wantSetupError(t, sr, syscall.E2BIG, "a message of 4294967295 bytes, more than 8388608")
}

// Numbers in the spec are read with their bounds: a uid of (uid_t)-1,
// which setresuid takes as "unchanged", a negative descriptor, a seccomp
// program longer than the kernel takes, whose length would wrap.
func TestInitRefusesOutOfRangeNumbers(t *testing.T) {
	cases := []struct {
		name string
		spec Spec
		says string
	}{
		{"uid -1", Spec{Args: []string{"true"}, UID: 0xffffffff}, "spec: bad uid '4294967295'"},
		{"gid -1", Spec{Args: []string{"true"}, GID: 0xffffffff}, "spec: bad gid '4294967295'"},
		{"group -1", Spec{Args: []string{"true"}, Groups: []uint32{0xffffffff}}, "spec: bad group"},
		{"negative netns fd", Spec{Args: []string{"true"}, NetnsFD: -1}, "spec: bad netns fd '-1'"},
		{"negative cgroup fd", Spec{Args: []string{"true"}, CgroupFDs: []int{-5}}, "spec: bad cgroup fd '-5'"},
		{"oom_score_adj 1001", Spec{Args: []string{"true"}, OOMScoreAdj: ptr(1001)}, "spec: bad oom_score_adj"},
		// 65537 instructions: as an unsigned short, 1.
		{"seccomp of 65537 instructions", Spec{Args: []string{"true"}, Seccomp: make([]byte, 8*65537)}, "spec: seccomp program of 524296 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			_, sr := startInit(t, ModeInit, r)
			r.Close()
			go func() {
				w.Write(c.spec.Encode())
				w.Close()
			}()
			wantSetupError(t, sr, syscall.EINVAL, c.says)
		})
	}
}

func ptr[T any](v T) *T { return &v }

// The host's check of arguments and environment agrees with the kernel's
// limits as ArgLimit and MaxArgLen state them.
func TestCheckExec(t *testing.T) {
	stack := []Rlimit{{Resource: unix.RLIMIT_STACK, Soft: 8 << 20, Hard: 8 << 20}}
	long := strings.Repeat("x", MaxArgLen())
	// args are 2 MiB and extra bytes as the kernel counts them: strings,
	// pointers and the path "/x", twice then, as argument and as path.
	args := func(extra int) []string {
		a := append([]string{"/x"}, slices.Repeat([]string{long}, 15)...)
		rest := 2<<20 + extra - 8*17 - 2*3 - 15*(len(long)+1) - 1
		return append(a, strings.Repeat("y", rest))
	}
	cases := []struct {
		name string
		spec Spec
		err  error
	}{
		{"longest string", Spec{Args: []string{long}}, nil},
		{"a byte longer", Spec{Args: []string{long + "x"}}, syscall.E2BIG},
		{"a NUL", Spec{Env: []string{"A=\x00"}}, syscall.EINVAL},
		{"2 MiB", Spec{Args: args(0), Rlimits: stack}, nil},
		{"a byte more", Spec{Args: args(1), Rlimits: stack}, syscall.E2BIG},
		{"a byte more, with 12 MiB of stack", Spec{Args: args(1), Rlimits: []Rlimit{{Resource: unix.RLIMIT_STACK, Soft: 12 << 20}}}, nil},
	}
	for _, c := range cases {
		if err := c.spec.CheckExec(); !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
		}
	}
	if got := ArgLimit(unix.RLIM_INFINITY); got != 6<<20 {
		t.Errorf("ArgLimit(unlimited) = %d, want 6 MiB", got)
	}
	if got := ArgLimit(64 << 10); got != uint64(32*os.Getpagesize()) {
		t.Errorf("ArgLimit(64 KiB) = %d, want 32 pages", got)
	}
}

// BenchmarkMarshal measures what checking a usual workload's spec adds to
// encoding it, which every start does.
func BenchmarkMarshal(b *testing.B) {
	spec := &Spec{
		Rootfs: "/var/lib/berth/rootfs/sandbox-0123456789abcdef/state/merged", Hostname: "0123456789ab", Dir: "/",
		Path: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		Args: []string{"python3", "-c", "print('hello')"},
		Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=0123456789ab", "HOME=/root", "LANG=C.UTF-8"},
		Caps: &Caps{Bounding: 0xa80425fb, Effective: 0xa80425fb, Permitted: 0xa80425fb},
	}
	b.Run("Encode", func(b *testing.B) {
		for b.Loop() {
			spec.Encode()
		}
	})
	b.Run("Marshal", func(b *testing.B) {
		for b.Loop() {
			if _, err := spec.Marshal(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
