package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/sandbox/internal/nsinit"
	"github.com/berth-dev/berth/security"
)

func run(t *testing.T, image string, o *Options) (*Result, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if o.Stdout == nil {
		o.Stdout = &stdout
	}
	if o.Stderr == nil {
		o.Stderr = &stderr
	}
	res, err := New(image, o).Run(context.Background())
	if err != nil {
		t.Fatalf("run %v: %v", o.Args, err)
	}
	return res, stdout.String(), stderr.String()
}

func sh(script string) func(*Options) {
	return func(o *Options) { o.Args = []string{"/bin/sh", "-c", script} }
}

func TestEcho(t *testing.T) {
	res, out, errOut := run(t, "alpine:test", opts(func(o *Options) { o.Args = []string{"echo", "hello"} }))
	if !res.Success() || out != "hello\n" || errOut != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", res.ExitCode, out, errOut)
	}
	if res.Started.IsZero() || res.Exited.Before(res.Started) {
		t.Errorf("times: %v → %v", res.Started, res.Exited)
	}
}

func TestExitCodesAndSignals(t *testing.T) {
	res, _, _ := run(t, "alpine:test", opts(sh("exit 3")))
	if res.ExitCode != 3 || res.Signal != 0 {
		t.Errorf("exit 3: got %+v", res)
	}
	res, _, _ = run(t, "alpine:test", opts(sh("kill -TERM $$")))
	if res.Signal != syscall.SIGTERM || res.ExitCode != 128+15 {
		t.Errorf("killed by TERM: got code %d signal %v", res.ExitCode, res.Signal)
	}
	// A command that does not exist is a setup error, not an exit code.
	_, err := New("alpine:test", opts(func(o *Options) { o.Args = []string{"/no/such/program"} })).Run(context.Background())
	if !errors.Is(err, ErrExec) || !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), "/no/such/program") {
		t.Errorf("missing program: %v", err)
	}
	_, err = New("alpine:nope", opts(nil)).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing image: %v", err)
	}
}

func TestStdio(t *testing.T) {
	res, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
		o.Args = []string{"/bin/sh", "-c", "tr a-z A-Z; echo oops >&2"}
		o.Stdin = strings.NewReader("quiet please\n")
	}))
	if !res.Success() || out != "QUIET PLEASE\n" || errOut != "oops\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", res.ExitCode, out, errOut)
	}
}

func TestEnvDirUser(t *testing.T) {
	res, out, _ := run(t, "alpine:test", opts(func(o *Options) {
		o.Args = []string{"/bin/sh", "-c", `echo "$FOO $PATH $HOME"; pwd; id -u; id -g; id -G`}
		o.Env = []string{"FOO=bar"}
		o.Dir = "/var/new/dir"
		o.User = "nobody"
	}))
	want := "bar /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /\n/var/new/dir\n65534\n65534\n65534\n"
	if !res.Success() || out != want {
		t.Errorf("got %q, want %q", out, want)
	}
	// Supplementary groups come from the image's /etc/group.
	res, out, _ = run(t, "alpine:test", opts(func(o *Options) {
		o.Args = []string{"id"}
		o.User = "daemon:kmem"
	}))
	if !res.Success() || !strings.HasPrefix(out, "uid=2(daemon) gid=9(kmem)") {
		t.Errorf("id: %q", out)
	}
	_, err := New("alpine:test", opts(func(o *Options) { o.User = "nosuchuser" })).Run(context.Background())
	if !errors.Is(err, ErrUnknownUser) {
		t.Errorf("unknown user: %v", err)
	}
}

// Device nodes are usable by every user, whatever the host's umask.
func TestDevNodesForEveryUser(t *testing.T) {
	res, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
		o.User = "nobody"
		o.Args = []string{"/bin/sh", "-c", "echo x >/dev/null && head -c 4 /dev/zero | wc -c && ls -l /dev/null"}
	}))
	if !res.Success() || !strings.HasPrefix(out, "4\ncrw-rw-rw-") {
		t.Errorf("exit %d, stdout %q, stderr %q", res.ExitCode, out, errOut)
	}
}

func TestHostnameAndPIDIsolation(t *testing.T) {
	res, out, _ := run(t, "alpine:test", opts(func(o *Options) {
		o.Hostname = "box"
		o.Args = []string{"/bin/sh", "-c", "hostname; cat /etc/hostname; echo $$; ls /proc | grep -c '^[0-9]'; ip -o link | wc -l"}
	}))
	lines := strings.Fields(out)
	// The shell is PID 2 (PID 1 is the init); /proc shows the init, the
	// shell, ls and grep; only lo exists.
	if !res.Success() || len(lines) != 5 || lines[0] != "box" || lines[1] != "box" || lines[2] != "2" || lines[4] != "1" {
		t.Fatalf("got %q", out)
	}
	if n, err := strconv.Atoi(lines[3]); err != nil || n > 4 || n < 2 {
		t.Errorf("%q processes visible", lines[3])
	}
}

func TestMemoryLimitOOM(t *testing.T) {
	res, _, _ := run(t, "alpine:test", opts(func(o *Options) {
		o.Args = []string{"tail", "/dev/zero"}
		o.Resources = &cgroup.Resources{MemoryMax: 32 << 20}
		o.Timeout = time.Minute
	}))
	if !res.OOMKilled || res.Signal != syscall.SIGKILL {
		t.Errorf("memory bomb under 32m: %+v", res)
	}
	if res.PeakMemory < 16<<20 || res.PeakMemory > 34<<20 {
		t.Errorf("peak memory %d", res.PeakMemory)
	}
}

func TestPidsLimit(t *testing.T) {
	var stderr syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		// A fork bomb that keeps trying: each failed fork ends one loop.
		o.Args = []string{"/bin/sh", "-c", "while :; do (while :; do sleep 5 & done) ; done"}
		o.Resources = &cgroup.Resources{PidsMax: 20}
		o.Stderr = &stderr
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	waitFor(t, func() bool { return strings.Contains(stderr.String(), "can't fork") })
	st, err := sb.Stats()
	if err != nil || st.Pids > 20 || st.Pids < 10 {
		t.Errorf("fork bomb under pids 20: %+v %v", st, err)
	}
	if err := sb.Kill(); err != nil {
		t.Fatal(err)
	}
	if res, err := sb.Wait(); err != nil || res.Signal != syscall.SIGKILL {
		t.Errorf("kill: %+v %v", res, err)
	}
}

func TestCPUQuota(t *testing.T) {
	res, _, _ := run(t, "alpine:test", opts(func(o *Options) {
		o.Args = []string{"timeout", "1", "sh", "-c", "while :; do :; done"}
		o.Resources = &cgroup.Resources{CPUQuota: 20 * time.Millisecond, CPUPeriod: 100 * time.Millisecond}
	}))
	// One second at 20% of a CPU.
	if res.CPUTime < 100*time.Millisecond || res.CPUTime > 400*time.Millisecond {
		t.Errorf("CPU time under a 0.2 CPU quota over 1 s: %v", res.CPUTime)
	}
}

func TestTimeoutKillsTree(t *testing.T) {
	start := time.Now()
	res, _, _ := run(t, "alpine:test", opts(func(o *Options) {
		o.Args = []string{"/bin/sh", "-c", "sleep 100 & sleep 100 & wait"}
		// The start counts against the timeout: enough for a busy
		// machine's start.
		o.Timeout = 3 * time.Second
	}))
	if !res.TimedOut || res.Signal != syscall.SIGKILL || time.Since(start) > 30*time.Second {
		t.Errorf("timeout: %+v after %v", res, time.Since(start))
	}
}

func TestCancelKills(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	sb := New("alpine:test", opts(sh("sleep 100")))
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	res, err := sb.Wait()
	if err != nil || !res.Canceled || res.Signal != syscall.SIGKILL {
		t.Errorf("cancel: %+v %v", res, err)
	}
	if err := sb.Close(); err != nil {
		t.Error(err)
	}
}

func TestSignalAndPauseResume(t *testing.T) {
	dir := t.TempDir()
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"/bin/sh", "-c", "trap 'echo got-usr1 >> /out/log; exit 7' USR1; while :; do echo tick >> /out/log; sleep 0.02; done"}
		o.Mounts = []Mount{{Source: dir, Destination: "/out"}}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	lines := func() int {
		b, _ := os.ReadFile(filepath.Join(dir, "log"))
		return strings.Count(string(b), "\n")
	}
	waitFor(t, func() bool { return lines() > 2 })
	if err := sb.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	frozen := lines()
	time.Sleep(200 * time.Millisecond)
	if n := lines(); n != frozen {
		t.Errorf("log grew from %d to %d lines while paused", frozen, n)
	}
	if err := sb.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return lines() > frozen+2 })
	st, err := sb.Stats()
	if err != nil || st.Pids < 2 || st.Memory == 0 {
		t.Errorf("stats: %+v %v", st, err)
	}
	if err := sb.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	res, err := sb.Wait()
	if err != nil || res.ExitCode != 7 {
		t.Errorf("after USR1: %+v %v", res, err)
	}
	if !strings.Contains(readFile(t, filepath.Join(dir, "log")), "got-usr1") {
		t.Error("the trap did not run")
	}
}

func TestConcurrentSandboxes(t *testing.T) {
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			res, err := New("busybox:test", opts(func(o *Options) {
				o.Args = []string{"echo", strconv.Itoa(i)}
				o.Stdout = &out
			})).Run(context.Background())
			switch {
			case err != nil:
				errs <- err
			case !res.Success() || out.String() != fmt.Sprintf("%d\n", i):
				errs <- fmt.Errorf("sandbox %d: %+v %q", i, res, out.String())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestExec(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"/bin/sh", "-c", "echo ready > /tmp/marker; sleep 100"}
		o.Hostname = "execbox"
		o.Env = []string{"FROM_SANDBOX=1"}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	var out bytes.Buffer
	var res *Result
	var err error
	waitFor(t, func() bool {
		out.Reset()
		res, err = sb.Exec(context.Background(), &ExecOptions{
			Args:   []string{"/bin/sh", "-c", "cat /tmp/marker; hostname; echo $FROM_SANDBOX $EXTRA; id -u; ls /proc | grep -c '^[0-9]'; cat /proc/self/cgroup"},
			Env:    []string{"EXTRA=2"},
			User:   "nobody",
			Stdout: &out,
		})
		return err != nil || strings.HasPrefix(out.String(), "ready")
	})
	if err != nil || !res.Success() {
		t.Fatalf("exec: %+v %v", res, err)
	}
	lines := strings.Split(out.String(), "\n")
	if len(lines) < 5 || lines[0] != "ready" || lines[1] != "execbox" || lines[2] != "1 2" || lines[3] != "65534" {
		t.Fatalf("exec saw %q", out.String())
	}
	// Only the sandbox's processes: init, its sh and sleep, and ours.
	if n, err := strconv.Atoi(lines[4]); err != nil || n > 6 || n < 4 {
		t.Errorf("exec sees %q processes", lines[4])
	}
	// In the sandbox's cgroup namespace, at its root.
	if !strings.Contains(out.String(), "::/\n") && !strings.Contains(out.String(), ":/\n") {
		t.Errorf("cgroup: %q", out.String())
	}
	res, err = sb.Exec(context.Background(), &ExecOptions{Args: []string{"sh", "-c", "exit 5"}})
	if err != nil || res.ExitCode != 5 {
		t.Errorf("exec exit 5: %+v %v", res, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res, err = sb.Exec(ctx, &ExecOptions{Args: []string{"sleep", "100"}})
	if err != nil || !res.Canceled {
		t.Errorf("cancelled exec: %+v %v", res, err)
	}
	// The sleep of the cancelled exec dies with it (and is reaped by the
	// sandbox's init, since its parent was outside).
	waitFor(t, func() bool {
		out.Reset()
		sb.Exec(context.Background(), &ExecOptions{Args: []string{"sh", "-c", "ps -o stat,comm | grep -c sleep"}, Stdout: &out})
		return strings.TrimSpace(out.String()) == "1"
	})
}

func TestKillPaused(t *testing.T) {
	for _, how := range []string{"Kill", "Close"} {
		sb := New("alpine:test", opts(sh("sleep 100 & sleep 100")))
		if err := sb.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := sb.Pause(context.Background()); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			if how == "Kill" {
				sb.Kill()
			}
			sb.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s of a paused sandbox hangs", how)
		}
		if res, err := sb.Wait(); err != nil || res.Signal != syscall.SIGKILL {
			t.Errorf("%s: %+v %v", how, res, err)
		}
	}
}

func TestInitReapsZombies(t *testing.T) {
	// The subshell's child is orphaned to PID 1, which must reap it: the
	// child says who it is and exits, and the shell waits for its /proc
	// entry to go, or gives up after some 10 s and says what is left.
	res, out, _ := run(t, "alpine:test", opts(sh(`
		(sh -c 'echo $$ > /tmp/orphan' &)
		for i in $(seq 1000); do [ -s /tmp/orphan ] && break; sleep 0.01; done
		pid=$(cat /tmp/orphan)
		for i in $(seq 1000); do
			[ -e /proc/$pid ] || { echo reaped; exit 0; }
			sleep 0.01
		done
		echo "left: $(grep State /proc/$pid/status)"`)))
	if out != "reaped\n" || !res.Success() {
		t.Errorf("orphan: %q (exit %d)", out, res.ExitCode)
	}
}

// A sandbox outlives the OS thread its Start ran on. Linux sends a
// child's parent-death signal when the thread that forked it ends, and the
// Go runtime ends a thread whose locked goroutine returns; the sandboxes
// here, New's and a pool's, are started from such goroutines.
func TestSurvivesStartingThreadExit(t *testing.T) {
	p := newPool(t, opts(nil), 1)
	defer p.Close()
	for _, sb := range []*Sandbox{
		New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "30"} })),
		p.New(&Options{Args: []string{"sleep", "30"}}),
	} {
		started := make(chan error)
		go func() {
			runtime.LockOSThread()
			started <- sb.Start(context.Background())
			// Returns locked: the runtime ends this thread.
		}()
		if err := <-started; err != nil {
			t.Fatal(err)
		}
		// The pool's next sandbox is built by its filler, whose thread
		// may go the same way; and the standby waiting in it must live.
		go func() {
			runtime.LockOSThread()
		}()
		time.Sleep(200 * time.Millisecond)
		if _, err := sb.Stats(); err != nil {
			t.Errorf("the sandbox died with the thread that started it: %v", err)
		}
		sb.Close()
	}
	res, err := p.New(&Options{Args: []string{"true"}}).Run(context.Background())
	if err != nil || !res.Success() {
		t.Errorf("the pool's waiting sandbox after threads ended: %+v %v", res, err)
	}
}

// A sandbox starts whatever numbers the host's descriptors have. os/exec's
// child moves its error pipe to one above the highest descriptor it is
// given, over whatever was there: when that was the runtime's own
// executable, which the child then ran through /proc/self/fd, the start
// failed with EACCES. A host process of the test's arranges exactly that,
// with the sandbox in a user namespace.
func TestRuntimeDescriptorNumber(t *testing.T) {
	dir, err := os.MkdirTemp(testEnv.dir, "fdlayout-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BERTH_TEST_HOST=fdlayout", "BERTH_TEST_STORE="+testEnv.store.Root(),
		"BERTH_TEST_STATE="+dir, fmt.Sprintf("BERTH_TEST_CGROUP_PARENT=berth-test-%d-fdlayout", os.Getpid()))
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Equal(out, []byte("ok\n")) {
		t.Fatalf("host process: %v\n%s", err, out)
	}
}

// fdLayoutProcess places the runtime's executable at descriptor 199 and a
// file at 198, leaves lower numbers free for the start's own pipes, and
// runs a Strict sandbox that gets the file at 198.
func fdLayoutProcess() int {
	fail := func(err error) int {
		fmt.Println(err)
		return 1
	}
	store, err := layerfs.Open(os.Getenv("BERTH_TEST_STORE"), nil)
	if err != nil {
		return fail(err)
	}
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: os.Getenv("BERTH_TEST_CGROUP_PARENT")})
	if err != nil {
		return fail(err)
	}
	defer cgm.RemoveParent()
	var fill []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			return fail(err)
		}
		if f.Fd() > 199 {
			return fail(fmt.Errorf("descriptor %d: the layout needs 199 free", f.Fd()))
		}
		fill = append(fill, f)
		if f.Fd() == 199 {
			break
		}
	}
	fill[len(fill)-1].Close()
	self, err := nsinit.SelfExe()
	if err != nil {
		return fail(err)
	}
	if self.Fd() != 199 {
		return fail(fmt.Errorf("the runtime's executable is at %d, not 199", self.Fd()))
	}
	var below *os.File
	for _, f := range fill[:len(fill)-1] {
		switch {
		case f.Fd() == 198:
			below = f
		case f.Fd() >= 100:
			f.Close()
		}
	}
	sec := security.Strict()
	res, err := New("alpine:test", &Options{Storage: store, Cgroups: cgm, StateDir: os.Getenv("BERTH_TEST_STATE"),
		Security: sec, Args: []string{"true"}, ExtraFiles: []*os.File{below}}).Run(context.Background())
	if err != nil {
		return fail(err)
	}
	if !res.Success() {
		return fail(fmt.Errorf("true: %+v", res))
	}
	fmt.Println("ok")
	return 0
}

// Sixteen goroutines start sandboxes at once, again and again, every other
// one in a user namespace: every start works. (While the init was executed
// through a host descriptor, about 1 start in 160 in a user namespace
// failed so; see TestRuntimeDescriptorNumber.)
func TestManyConcurrentStarts(t *testing.T) {
	for range 10 {
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := New("alpine:test", opts(func(o *Options) {
					o.Args = []string{"true"}
					if i%2 == 1 {
						o.Security = security.Strict()
					}
				})).Run(context.Background())
				if err != nil || !res.Success() {
					t.Error(res, err)
				}
			}()
		}
		wg.Wait()
	}
}
