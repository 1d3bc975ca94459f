package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox/internal/nsinit"
)

// argStack is the stack limit the tests give their workloads, whatever the
// test's own: with it, Linux takes 2 MiB of arguments and environment.
var argStack = []Rlimit{{Resource: unix.RLIMIT_STACK, Soft: 8 << 20, Hard: 8 << 20}}

const argLimit = 2 << 20 // nsinit.ArgLimit(8 MiB)

// execSize is what execve(2) counts of args and env: each string with its
// NUL, and a pointer each.
func execSize(args, env []string) int {
	n := 8 * (len(args) + len(env))
	for _, s := range append(slices.Clone(args), env...) {
		n += len(s) + 1
	}
	return n
}

// filler is n bytes of text that differs from one call to the next.
func filler(seed, n int) string {
	var b strings.Builder
	for b.Len() < n {
		fmt.Fprintf(&b, "%d.%d-", seed, b.Len())
	}
	return b.String()[:n]
}

// bigArgs returns the arguments and environment of a workload that prints
// the SHA-256 of the arguments it got (its /proc/PID/cmdline) and of the
// variables of env it got, sorted: about 1.9 MiB in all as execve counts
// them, in strings as long as Linux takes (128 KiB less one byte) and in
// thousands of short ones.
func bigArgs(t *testing.T) (args, env []string) {
	maxLen := nsinit.MaxArgLen()
	args = []string{"/bin/sh", "-c",
		// The shell's own /proc files, read before it could exec a last
		// command in its place.
		`tr '\000' '\n' < /proc/$$/environ | grep '^BA_' | sort | sha256sum; sha256sum < /proc/$$/cmdline; true`,
		"sh", filler(0, maxLen), filler(1, 50000), "", "last"}
	for i := 0; i < 13; i++ {
		name := "BA_BIG" + strconv.Itoa(i) + "="
		env = append(env, name+filler(i+2, maxLen-len(name)))
	}
	for i := 0; i < 4000; i++ {
		env = append(env, "BA_S"+strconv.Itoa(i)+"="+strconv.Itoa(i*7))
	}
	env = append(env, "BA_EMPTY=")
	if n := execSize(args, env); n < 1850<<10 || n > 1950<<10 {
		t.Fatalf("test data: %d bytes, want about 1.9 MiB", n)
	}
	return args, env
}

// wantHashes is what bigArgs's workload should print for args and env.
func wantHashes(args, env []string) string {
	sorted := slices.Clone(env)
	slices.Sort(sorted)
	e := sha256.Sum256([]byte(strings.Join(sorted, "\n") + "\n"))
	a := sha256.Sum256([]byte(strings.Join(args, "\x00") + "\x00"))
	return hex.EncodeToString(e[:]) + "  -\n" + hex.EncodeToString(a[:]) + "  -\n"
}

// How a test's workload is started: a sandbox of its own, Exec in a
// running one, or a sandbox of a pool.
var startModes = []string{"run", "exec", "pool"}

// startWith runs args and env by mode, and returns what it wrote.
func startWith(t *testing.T, mode string, args, env []string) (*Result, string, error) {
	t.Helper()
	var out syncBuffer
	var res *Result
	var err error
	switch mode {
	case "run":
		res, err = New("alpine:test", opts(func(o *Options) {
			o.Args, o.Env, o.Rlimits, o.Stdout, o.Stderr = args, env, argStack, &out, &out
		})).Run(context.Background())
	case "exec":
		sb := New("alpine:test", opts(func(o *Options) {
			o.Args, o.Rlimits = []string{"sleep", "1000"}, argStack
		}))
		if err := sb.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer sb.Close()
		res, err = sb.Exec(context.Background(), &ExecOptions{Args: args, Env: env, Stdout: &out, Stderr: &out})
	case "pool":
		p := newPool(t, opts(nil), 1)
		defer p.Close()
		res, err = p.New(&Options{Args: args, Env: env, Rlimits: argStack, Stdout: &out, Stderr: &out}).Run(context.Background())
	}
	return res, out.String(), err
}

// Linux takes up to 2 MiB of arguments and environment (with an 8 MiB
// stack), in strings of up to 128 KiB: so does a sandbox, every byte of
// them, however it is started.
func TestLargeArgsAndEnv(t *testing.T) {
	args, env := bigArgs(t)
	want := wantHashes(args, env)
	for _, mode := range startModes {
		t.Run(mode, func(t *testing.T) {
			res, out, err := startWith(t, mode, args, env)
			if err != nil {
				t.Fatalf("%.500s", err)
			}
			if !res.Success() || out != want {
				t.Errorf("exit %d, output:\n%.1000s\nwant:\n%s", res.ExitCode, out, want)
			}
		})
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// What Linux would refuse is refused before anything is started, with an
// error that says which string or which limit, and wraps the errno
// execve(2) would have returned.
func TestArgsBeyondLimits(t *testing.T) {
	maxLen := nsinit.MaxArgLen()
	tooLong := "BA_LONG=" + filler(1, 129<<10)
	var many []string // 2.5 MiB in strings each short enough
	for i := 0; execSize(nil, many) < 2560<<10; i++ {
		many = append(many, "BA_"+strconv.Itoa(i)+"="+filler(i, 100<<10))
	}
	cases := []struct {
		name      string
		args, env []string
		errno     error
		says      []string
	}{
		{"one string of 129 KiB", []string{"true"}, []string{tooLong}, syscall.E2BIG,
			[]string{`environment variable "BA_LONG"`, strconv.Itoa(len(tooLong)), strconv.Itoa(maxLen), "MAX_ARG_STRLEN"}},
		{"an argument of 129 KiB", []string{"echo", "x", filler(2, 129<<10)}, nil, syscall.E2BIG,
			[]string{"argument 2", "MAX_ARG_STRLEN"}},
		{"2.5 MiB in all", []string{"true"}, many, syscall.E2BIG,
			[]string{"arguments and environment take", strconv.Itoa(argLimit), "stack limit of 8388608 bytes", "ARG_MAX"}},
		// Options.Validate finds these before the spec is encoded: the
		// caller's mistake, not the program's (the init's own refusal of
		// a NUL, which wraps EINVAL, is tested in nsinit's bounds_test).
		{"a NUL in an argument", []string{"echo", "a\x00b"}, nil, ErrInvalidOptions, []string{"Args[1]", "contains a NUL"}},
		{"a NUL in a variable", []string{"true"}, []string{"BA_NUL=a\x00b"}, ErrInvalidOptions, []string{`"BA_NUL" contains a NUL`}},
	}
	for _, mode := range startModes {
		for _, c := range cases {
			t.Run(mode+"/"+c.name, func(t *testing.T) {
				_, out, err := startWith(t, mode, c.args, c.env)
				if err == nil {
					t.Fatalf("started; output %.200q", out)
				}
				switch {
				case c.errno == ErrInvalidOptions:
					if !errors.Is(err, ErrInvalidOptions) || !errors.Is(err, ErrSetup) {
						t.Errorf("error %.300q does not wrap ErrInvalidOptions and ErrSetup", err)
					}
				case !errors.Is(err, c.errno) || !errors.Is(err, ErrExec):
					t.Errorf("error %.300q does not wrap %v and ErrExec", err, c.errno)
				}
				if strings.Contains(err.Error(), "sandbox : ") {
					t.Errorf("error %.300q names an empty sandbox ID", err)
				}
				for _, s := range c.says {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %.300q does not say %q", err, s)
					}
				}
				// Not the whole string: a megabyte of error helps no one.
				if len(err.Error()) > 500 {
					t.Errorf("error of %d bytes", len(err.Error()))
				}
			})
		}
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// The host counts arguments and environment as the kernel does, to the
// byte: with the path of the program named by Args[0], exactly at the
// limit starts and a byte more is refused. A program looked up in PATH
// has a longer path than the host counts; the kernel then refuses it
// with E2BIG, and the init says which limit it is.
func TestArgsAtTheKernelsLimit(t *testing.T) {
	const pads = 17
	padded := func(sizes []int) []string {
		env := make([]string, pads)
		for i := range env {
			env[i] = fmt.Sprintf("BA_PAD%02d=%s", i, filler(i, sizes[i]))
		}
		return env
	}
	// What the sandbox adds to the environment is learnt from a first run
	// with the same variables, empty.
	probe := []string{"/bin/sh", "-c", `cat /proc/$$/environ; true`}
	res, out, err := startWith(t, "run", probe, padded(make([]int, pads)))
	if err != nil || !res.Success() {
		t.Fatalf("probe: %v %+v", err, res)
	}
	base := len(out) + 8*strings.Count(out, "\x00") // the environment, as execve counts it
	// run runs args with the variables' values filling all but slack
	// bytes of what Linux takes, with the program's path counted as
	// len(args[0])+1.
	run := func(args []string, slack int) error {
		sizes := make([]int, pads)
		left := argLimit - execSize(args, nil) - len(args[0]) - 1 - base - slack
		for i := range sizes {
			sizes[i] = min(left, nsinit.MaxArgLen()-len("BA_PADnn="))
			left -= sizes[i]
		}
		if left != 0 {
			t.Fatalf("test data: %d bytes left over", left)
		}
		res, _, err := startWith(t, "run", args, padded(sizes))
		if err == nil && !res.Success() {
			err = fmt.Errorf("exit %d", res.ExitCode)
		}
		return err
	}
	if err := run([]string{"/bin/true"}, 0); err != nil {
		t.Errorf("at the limit: %.400v", err)
	}
	err = run([]string{"/bin/true"}, -1)
	if err == nil || strings.Contains(err.Error(), "exec /bin/true") || !errors.Is(err, syscall.E2BIG) {
		t.Errorf("a byte over: %.400v; want the host's E2BIG", err)
	}
	// "true" is /bin/true: 5 bytes more than the host counts.
	err = run([]string{"true"}, 4)
	if err == nil {
		t.Fatal("a path 5 bytes longer than counted, with 4 to spare: started")
	}
	if !errors.Is(err, syscall.E2BIG) || !errors.Is(err, ErrExec) {
		t.Errorf("error %.400q does not wrap E2BIG and ErrExec", err)
	}
	for _, s := range []string{"exec /bin/true: its arguments and environment take", strconv.Itoa(argLimit), "stack limit of 8388608 bytes", "ARG_MAX"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %.400q does not say %q", err, s)
		}
	}
	if err := run([]string{"true"}, 5); err != nil {
		t.Errorf("a path 5 bytes longer than counted, with 5 to spare: %.400v", err)
	}
}

// stoppingNetwork is a Network that stops the sandbox's init (SIGSTOP)
// as it attaches it, as if a step of setting the sandbox up hung: from
// then on only the start's context can end the start. stopped is closed
// once it has.
type stoppingNetwork struct{ stopped chan struct{} }

func (n stoppingNetwork) Attach(_ context.Context, _, netns string, _ *netplug.AttachOptions) (*netplug.Attachment, error) {
	pid, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(netns, "/proc/"), "/ns/net"))
	if err != nil {
		return nil, fmt.Errorf("namespace path %q", netns)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return nil, err
	}
	close(n.stopped)
	return &netplug.Attachment{}, nil
}

func (stoppingNetwork) Detach(context.Context, string, string) error { return nil }

// A start that hangs ends with its context, or with the sandbox's timeout,
// and leaves nothing behind.
func TestHungStartEndsWithContext(t *testing.T) {
	cases := []struct {
		name    string
		ctx     func(stopped <-chan struct{}) (context.Context, context.CancelFunc)
		timeout time.Duration
		want    error
	}{
		{"deadline", func(<-chan struct{}) (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 500*time.Millisecond)
		}, 0, context.DeadlineExceeded},
		{"cancel", func(stopped <-chan struct{}) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				<-stopped
				cancel()
			}()
			return ctx, cancel
		}, 0, context.Canceled},
		{"Options.Timeout", func(<-chan struct{}) (context.Context, context.CancelFunc) {
			return context.Background(), func() {}
		}, 500 * time.Millisecond, context.DeadlineExceeded},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			net := stoppingNetwork{stopped: make(chan struct{})}
			ctx, cancel := c.ctx(net.stopped)
			defer cancel()
			_, err := New("alpine:test", opts(func(o *Options) {
				o.Args, o.Network, o.Timeout = []string{"true"}, net, c.timeout
			})).Run(ctx)
			if !errors.Is(err, c.want) {
				t.Errorf("error %v, want %v", err, c.want)
			}
			select {
			case <-net.stopped:
				// A machine slow enough may have run out of time
				// before: else it was the wait for the init that ended.
				if !strings.Contains(fmt.Sprint(err), "before the workload started") {
					t.Errorf("error %v, want the start stopped", err)
				}
			default:
			}
		})
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// A pooled start whose workload's message is larger than the socket holds
// waits for the init to read it: if the init does not, the start still
// ends with its context.
func TestHungPooledStartEndsWithContext(t *testing.T) {
	p := newPool(t, opts(nil), 1)
	defer p.Close()
	// The pool's filler stopped, the waiting sandbox is the one Run
	// takes; the process of it that reads the message, stopped.
	p.cancel()
	<-p.filled
	e := <-p.ready
	pid := e.standby.cmd.Process.Pid
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	reader, err := strconv.Atoi(strings.TrimSpace(string(children)))
	if err != nil {
		t.Fatalf("children of the standby init: %q", children)
	}
	if err := syscall.Kill(reader, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	p.ready <- e

	_, env := bigArgs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = p.New(&Options{Args: []string{"true"}, Env: env, Rlimits: argStack}).Run(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "before the workload started") {
		t.Errorf("error %.300v, want %v", err, context.DeadlineExceeded)
	}
	p.Close()
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// The sandbox's PID 1 stays for the sandbox's life: once the workload
// runs, it keeps nothing of a large spec (the bulk of which is the
// workload's arguments and environment).
func TestInitForgetsLargeSpec(t *testing.T) {
	_, env := bigArgs(t)
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args, o.Env, o.Rlimits = []string{"sleep", "1000"}, env, argStack
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", sb.proc.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var anon int
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			anon, err = strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatalf("RssAnon %q", v)
			}
		}
	}
	// A spec of 1.9 MiB; an init that has not kept it holds about 250 KiB.
	if anon == 0 || anon > 1024 {
		t.Errorf("PID 1 holds %d KiB of anonymous memory", anon)
	}
}
