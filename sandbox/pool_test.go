package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/security"
)

func newPool(t *testing.T, o *Options, size int) *Pool {
	t.Helper()
	p, err := NewPool(context.Background(), "alpine:test", o, size)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A pooled sandbox is a whole sandbox: its own workload, stdio,
// environment, user, hostname, limits and hardening, and nothing of it or
// of the pool is left once both are closed.
func TestPool(t *testing.T) {
	p := newPool(t, opts(func(o *Options) {
		o.Hostname = "pooled"
		o.Env = []string{"FROM_POOL=1"}
		o.Resources = &cgroup.Resources{PidsMax: 50}
	}), 2)
	// The limit is the pool's: a fork bomb stops at it. The bomb is a
	// shell of its own, since a shell that cannot fork exits; the sleeps
	// it started stay, and the first shell counts the sandbox's processes
	// with its builtins, as it too can fork nothing more at the limit.
	var bomb bytes.Buffer
	res, err := p.New(&Options{Args: []string{"/bin/sh", "-c", "sh -c 'for i in $(seq 80); do sleep 5 & done' 2>/dev/null; set -- /proc/[0-9]*; echo $#"}, Stdout: &bomb}).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Besides the sleeps, the init and the shell.
	if n, err := strconv.Atoi(strings.TrimSpace(bomb.String())); err != nil || n > 50 || n < 10 {
		t.Errorf("pids limit 50: %q processes ran (%+v)", bomb.String(), res)
	}
	// The bounding set, dropped to while the sandbox waited, is the
	// configuration's.
	mask, err := security.CapabilityMask(defaultSecurity().Capabilities)
	if err != nil {
		t.Fatal(err)
	}
	bounding := fmt.Sprintf("CapBnd:\t%016x", mask)
	for i := range 4 {
		var stdout, stderr bytes.Buffer
		sb := p.New(&Options{
			Args:   []string{"/bin/sh", "-c", `read x; echo "$x $FROM_POOL $HOSTNAME $(id -u) $(pwd)"; echo err >&2; echo quiet >/dev/null; grep CapEff /proc/self/status; grep CapBnd /proc/self/status; exit 7`},
			Stdin:  strings.NewReader("in\n"),
			Stdout: &stdout, Stderr: &stderr,
			User: "nobody", Dir: "/tmp",
		})
		res, err := sb.Run(context.Background())
		if err != nil {
			t.Fatal(i, err)
		}
		if res.ExitCode != 7 {
			t.Errorf("run %d: %+v", i, res)
		}
		lines := strings.Split(stdout.String(), "\n")
		if len(lines) < 3 || lines[0] != "in 1 pooled 65534 /tmp" || lines[1] != "CapEff:\t0000000000000000" || lines[2] != bounding {
			t.Errorf("run %d: stdout %q", i, stdout.String())
		}
		if stderr.String() != "err\n" {
			t.Errorf("run %d: stderr %q", i, stderr.String())
		}
		if sb.ID() == "" {
			t.Error("no ID after Start")
		}
		if res.PeakMemory == 0 {
			t.Errorf("run %d: no memory accounted: %+v", i, res)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Ready(ctx); err != nil || len(p.ready) != 2 || p.busy.Load() != 0 {
		t.Errorf("Ready: %v, %d waiting, %d teardowns", err, len(p.ready), p.busy.Load())
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(ctx); !errors.Is(err, ErrPoolClosed) {
		t.Errorf("Ready after Close: %v", err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// Sandboxes of one pool are apart from each other: one's files are not
// another's, and each has its own PID namespace.
func TestPoolSandboxesApart(t *testing.T) {
	p := newPool(t, opts(nil), 2)
	defer p.Close()
	a := p.New(&Options{Args: []string{"/bin/sh", "-c", "echo secret > /root/mine; sleep 30"}})
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var out bytes.Buffer
	res, err := p.New(&Options{Args: []string{"/bin/sh", "-c", "ls /root; echo pid=$$"}, Stdout: &out}).Run(context.Background())
	if err != nil || !res.Success() {
		t.Fatal(res, err)
	}
	// PID 1 is the init; the shell comes next in a namespace of its own.
	if strings.Contains(out.String(), "mine") || !strings.HasSuffix(out.String(), "pid=2\n") {
		t.Errorf("a sandbox sees another's files or PIDs: %q", out.String())
	}
}

// The pool's sandboxes take what the API offers a sandbox: a terminal,
// extra files, Exec, Kill, a timeout, and errors that say what went
// wrong.
func TestPoolFeatures(t *testing.T) {
	p := newPool(t, opts(nil), 1)
	defer p.Close()
	ctx := context.Background()

	var term syncBuffer
	res, err := p.New(&Options{TTY: true, Stdout: &term, Args: []string{"tty"}}).Run(ctx)
	if err != nil || !res.Success() || strings.TrimSpace(strings.ReplaceAll(term.String(), "\r", "")) != "/dev/pts/0" {
		t.Errorf("terminal: %+v %v %q", res, err, term.String())
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	res, err = p.New(&Options{ExtraFiles: []*os.File{w}, Args: []string{"/bin/sh", "-c", "echo extra >&3"}}).Run(ctx)
	w.Close()
	buf := make([]byte, 64)
	n, _ := r.Read(buf)
	r.Close()
	if err != nil || !res.Success() || string(buf[:n]) != "extra\n" {
		t.Errorf("extra file: %+v %v %q", res, err, buf[:n])
	}

	sb := p.New(&Options{Args: []string{"sleep", "30"}})
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	er, err := sb.Exec(ctx, &ExecOptions{Args: []string{"hostname"}, Stdout: &out})
	if err != nil || !er.Success() || strings.TrimSpace(out.String()) != sb.ID()[:12] {
		t.Errorf("exec: %+v %v %q (id %s)", er, err, out.String(), sb.ID())
	}
	if err := sb.Kill(); err != nil {
		t.Fatal(err)
	}
	if res, _ := sb.Wait(); res.Signal != syscall.SIGKILL {
		t.Errorf("killed: %+v", res)
	}

	res, err = p.New(&Options{Args: []string{"sleep", "30"}, Timeout: 2 * time.Second}).Run(ctx)
	if err != nil || !res.TimedOut {
		t.Errorf("timeout: %+v %v", res, err)
	}

	_, err = p.New(&Options{Args: []string{"/no/such/program"}}).Run(ctx)
	if !errors.Is(err, ErrExec) || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("missing program: %v", err)
	}
	_, err = p.New(&Options{Args: []string{"true"}, ReadonlyRootfs: true, Hostname: "h"}).Run(ctx)
	if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "Hostname, ReadonlyRootfs") {
		t.Errorf("options the pool fixes: %v", err)
	}
	_, err = p.New(&Options{Args: []string{"true"}, User: "nosuchuser"}).Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "nosuchuser") {
		t.Errorf("unknown user: %v", err)
	}
}

// Many goroutines take from one small pool at once: those that find it
// empty build their own sandboxes; every one runs, and closing leaves
// nothing behind.
func TestPoolConcurrent(t *testing.T) {
	p := newPool(t, opts(nil), 2)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			res, err := p.New(&Options{Args: []string{"echo", strings.Repeat("x", i)}, Stdout: &out}).Run(context.Background())
			if err == nil && (!res.Success() || out.String() != strings.Repeat("x", i)+"\n") {
				err = errors.New("wrong output " + out.String())
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.New(nil).Run(context.Background()); !errors.Is(err, ErrPoolClosed) {
		t.Errorf("start from a closed pool: %v", err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// A configuration that cannot work is reported by NewPool, which leaves
// nothing behind; so is a bad size.
func TestPoolBadConfig(t *testing.T) {
	_, err := NewPool(context.Background(), "alpine:test", opts(func(o *Options) {
		o.Mounts = []Mount{{Source: "/nonexistent/source", Destination: "/x"}}
	}), 2)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/source") {
		t.Errorf("bad mount: %v", err)
	}
	// A configuration that stops working later: Ready says why the pool
	// cannot fill up, and Start reports it too.
	src := t.TempDir()
	p, err := NewPool(context.Background(), "alpine:test", opts(func(o *Options) {
		o.Mounts = []Mount{{Source: src, Destination: "/x"}}
	}), 1)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(src)
	if res, err := p.New(&Options{Args: []string{"true"}}).Run(context.Background()); err != nil || !res.Success() {
		t.Errorf("the sandbox built before the source went: %+v %v", res, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Ready(ctx); err == nil || !strings.Contains(err.Error(), src) {
		t.Errorf("Ready with a mount source gone: %v", err)
	}
	if _, err := p.New(&Options{Args: []string{"true"}}).Run(context.Background()); err == nil || !strings.Contains(err.Error(), src) {
		t.Errorf("start with a mount source gone: %v", err)
	}
	p.Close()
	if _, err := NewPool(context.Background(), "alpine:test", opts(nil), 0); err == nil {
		t.Error("size 0 accepted")
	}
	if _, err := NewPool(context.Background(), "alpine:nope", opts(nil), 1); err == nil {
		t.Error("missing image accepted")
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// A sandbox waiting in the pool whose PID 1 was killed from outside is not
// handed out: Start drops it, leaves nothing of it behind, and starts the
// workload in another.
func TestPoolStandbyKilled(t *testing.T) {
	p := newPool(t, opts(nil), 1)
	e := <-p.ready
	e.standby.cmd.Process.Kill()
	// Dead, as one that died while it waited would be.
	for i := 0; !e.standby.gone(); i++ {
		if i == 100 {
			t.Fatal("the killed standby still looks alive")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Back in the pool, first in line: the filler may have refilled it
	// meanwhile, and what it built is dropped to make room.
	for put := false; !put; {
		select {
		case p.ready <- e:
			put = true
		case other := <-p.ready:
			other.dropStandby()
		}
	}
	sb := p.New(&Options{Args: []string{"true"}})
	res, err := sb.Run(context.Background())
	if err != nil || !res.Success() {
		t.Errorf("a dead standby in the pool: %+v %v", res, err)
	}
	if sb.ID() == e.ID() {
		t.Error("the workload ran in the dead sandbox")
	}
	if _, err := os.Stat(e.stateDir()); !os.IsNotExist(err) {
		t.Errorf("the dead sandbox's record is left: %v", err)
	}
	p.Close()
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// A pool's sandboxes are under the same filter as New's, loaded once: while
// they wait when the filter lets the rest of their set-up through, just
// before the exec when it does not.
func TestPoolSeccomp(t *testing.T) {
	dir, err := probe()
	if err != nil {
		t.Fatal(err)
	}
	setsidRefused, err := security.ParseSeccompProfile([]byte(`{
		"defaultAction": "SCMP_ACT_ALLOW",
		"syscalls": [{"names": ["setsid", "mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
	}`))
	if err != nil {
		t.Fatal(err)
	}
	custom := security.Default()
	custom.Seccomp = setsidRefused
	for _, c := range []struct {
		name  string
		sec   *security.Config
		early bool
		calls []string
		want  map[string]string
	}{
		// Calls only the filter refuses (TestSeccompDefault shows it).
		{"default", nil, true, refusedByDefaultFilter, nil},
		{"refuses setsid", custom, false, []string{"mkdir", "getpid"}, map[string]string{"mkdir": "EACCES", "getpid": "OK"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPool(t, opts(func(o *Options) {
				o.Security = c.sec
				o.Mounts = []Mount{{Source: dir, Destination: "/probe", ReadOnly: true}}
			}), 1)
			defer p.Close()
			if early := p.earlyProg != nil; early != c.early {
				t.Errorf("filter loaded while waiting: %v, want %v", early, c.early)
			}
			var out bytes.Buffer
			res, err := p.New(&Options{Args: append([]string{"/probe/probe"}, c.calls...), Stdout: &out}).Run(context.Background())
			if err != nil || !res.Success() {
				t.Fatal(res, err)
			}
			for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				name, result, _ := strings.Cut(l, " ")
				want := "EPERM"
				if c.want != nil {
					want = c.want[name]
				}
				if result != want {
					t.Errorf("%s: %s, want %s", name, result, want)
				}
			}
			out.Reset()
			res, err = p.New(&Options{Args: []string{"grep", "-E", "^(Seccomp|Seccomp_filters|NoNewPrivs):", "/proc/self/status"}, Stdout: &out}).Run(context.Background())
			if err != nil || !res.Success() || out.String() != "NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n" {
				t.Errorf("status: %q %v", out.String(), err)
			}
		})
	}
}

// Strict's user namespace, Landlock and read-only root hold in a pooled
// sandbox as in New's; the filter allows the set-up under Landlock, so it
// is loaded while the sandbox waits.
func TestPoolStrict(t *testing.T) {
	p := newPool(t, opts(func(o *Options) { o.Security = security.Strict() }), 1)
	defer p.Close()
	if p.earlyProg == nil {
		t.Error("Strict's filter is not loaded while waiting")
	}
	var out, errOut bytes.Buffer
	res, err := p.New(&Options{Args: []string{"/bin/sh", "-c", "cat /proc/self/uid_map; touch /etc/x 2>&1; grep -E '^(Seccomp_filters|CapEff):' /proc/self/status; ls /proc/1/root/ 2>&1 | head -1"},
		Stdout: &out, Stderr: &errOut}).Run(context.Background())
	if err != nil || !res.Success() {
		t.Fatal(res, err, errOut.String())
	}
	got := strings.Fields(out.String())
	want := []string{"0", "100000", "65536", "touch:", "/etc/x:", "Read-only", "file", "system", "CapEff:", "0000000000000000", "Seccomp_filters:", "1"}
	if len(got) < len(want) || strings.Join(got[:len(want)], " ") != strings.Join(want, " ") {
		t.Errorf("under Strict from a pool: %q, want it to start with %q", out.String(), strings.Join(want, " "))
	}
}
