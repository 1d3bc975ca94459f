package sandbox

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/sandbox/internal/nsinit"
)

// streamsProbe builds testdata/streams.c.
var streamsProbe = staticProgram("streams", "testdata/streams.c")

// streamsMount binds the streams probe at /streams.
func streamsMount(t *testing.T) Mount {
	t.Helper()
	dir, err := streamsProbe()
	if err != nil {
		t.Fatal(err)
	}
	return Mount{Source: dir, Destination: "/streams", ReadOnly: true}
}

// A way of running a process with given streams: New's sandbox, a pooled
// one, or Exec in a running sandbox.
type streamsRunner struct {
	name string
	run  func(t *testing.T, o *Options) *Result
}

func streamsRunners(t *testing.T) []streamsRunner {
	mount := streamsMount(t)
	return []streamsRunner{
		{"New", func(t *testing.T, o *Options) *Result {
			o.Mounts = []Mount{mount}
			o.Storage, o.Cgroups, o.StateDir = testEnv.store, testEnv.cgroups, testEnv.stateDir
			res, err := New("alpine:test", o).Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			return res
		}},
		{"Pool", func(t *testing.T, o *Options) *Result {
			p := newPool(t, opts(func(x *Options) { x.Mounts = []Mount{mount} }), 1)
			defer p.Close()
			res, err := p.New(o).Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			return res
		}},
		{"Exec", func(t *testing.T, o *Options) *Result {
			sb := New("alpine:test", opts(func(x *Options) { x.Args = []string{"sleep", "1000"}; x.Mounts = []Mount{mount} }))
			if err := sb.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			res, err := sb.Exec(context.Background(), &ExecOptions{Args: o.Args, Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, HandOverStdio: o.HandOverStdio})
			if err != nil {
				t.Fatal(err)
			}
			return res
		}},
	}
}

// hostFiles are a log the host has written to before the workload runs,
// given as its stdout as `> job.log` would, and an input file as its
// stdin, as `< input` would.
func hostFiles(t *testing.T) (log, input *os.File) {
	t.Helper()
	dir := t.TempDir()
	log, err := os.OpenFile(filepath.Join(dir, "job.log"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	if _, err := log.WriteString("host secret\n"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "input"), []byte("host input\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if input, err = os.Open(filepath.Join(dir, "input")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { input.Close() })
	return log, input
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func parseReport(s string) map[string]string {
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if name, result, ok := strings.Cut(l, " "); ok {
			got[name] = result
		}
	}
	return got
}

func numberedLines(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.String()
}

// A workload given host files as its standard streams gets pipes: it
// cannot read what the host wrote to its log before, overwrite, seek or
// truncate it, write to its input file or type into a terminal, and its
// output reaches the log whole and in order.
func TestStdioFilesArePiped(t *testing.T) {
	const lines = 20000 // more than a pipe holds
	// Made once per process, on the first start: not a leak.
	if _, err := nsinit.SelfExe(); err != nil {
		t.Fatal(err)
	}
	for _, r := range streamsRunners(t) {
		t.Run(r.name, func(t *testing.T) {
			log, input := hostFiles(t)
			var report syncBuffer
			fds := openFDs(t)
			res := r.run(t, &Options{Args: []string{"/streams/streams", fmt.Sprint(lines)}, Stdin: input, Stdout: log, Stderr: &report})
			if !res.Success() {
				t.Fatalf("exit %d: %s", res.ExitCode, report.String())
			}
			if after := openFDs(t); after != fds {
				t.Errorf("%d descriptors open before, %d after", fds, after)
			}
			got := parseReport(report.String())
			if got["kind"] != "fifo fifo fifo" {
				t.Errorf("the workload's streams are %q, want pipes", got["kind"])
			}
			if got["reread"] == "SECRET" {
				t.Error("the workload read what the host wrote to its log before")
			}
			for _, c := range []string{"overwrite", "seek", "truncate", "stdin-write", "tiocsti"} {
				if got[c] == "OK" || got[c] == "" {
					t.Errorf("%s: %q, want refused", c, got[c])
				}
			}
			b, err := os.ReadFile(log.Name())
			if err != nil {
				t.Fatal(err)
			}
			if want := "host secret\n" + numberedLines(lines); string(b) != want {
				t.Errorf("the log holds %d bytes, starting %q; want %d bytes, the host's line then the workload's, in order", len(b), b[:min(len(b), 40)], len(want))
			}
			if b, _ := os.ReadFile(input.Name()); string(b) != "host input\n" {
				t.Errorf("the input file now holds %q", b)
			}
		})
	}
}

// With HandOverStdio the workload gets the host's files themselves, and
// with them all that SECURITY.md says hand-over means.
func TestHandOverStdio(t *testing.T) {
	for _, r := range streamsRunners(t) {
		t.Run(r.name, func(t *testing.T) {
			log, input := hostFiles(t)
			var report syncBuffer
			res := r.run(t, &Options{Args: []string{"/streams/streams", "3"}, Stdin: input, Stdout: log, Stderr: &report, HandOverStdio: true})
			if !res.Success() {
				t.Fatalf("exit %d: %s", res.ExitCode, report.String())
			}
			got := parseReport(report.String())
			if got["kind"] != "file file fifo" || got["reread"] != "SECRET" || got["overwrite"] != "OK" || got["seek"] != "OK" || got["truncate"] != "OK" {
				t.Errorf("handed-over files: %v", got)
			}
			// Sought back to its start, truncated, and written over.
			b, _ := os.ReadFile(log.Name())
			if want := numberedLines(3); string(b) != want {
				t.Errorf("the log holds %q, want %q", b, want)
			}
		})
	}
}

// Stdout and stderr that are one open file (`> log 2>&1`) share one pipe,
// so that what the workload writes to both keeps its order.
func TestStdoutStderrOneFile(t *testing.T) {
	log, _ := hostFiles(t)
	dup, err := dupFile(log)
	if err != nil {
		t.Fatal(err)
	}
	defer dup.Close()
	script := "for i in $(seq 500); do echo out $i; echo err $i >&2; done"
	res, err := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"/bin/sh", "-c", script}
		o.Stdout, o.Stderr = log, dup
	})).Run(context.Background())
	if err != nil || !res.Success() {
		t.Fatal(res, err)
	}
	var want strings.Builder
	want.WriteString("host secret\n")
	for i := 1; i <= 500; i++ {
		fmt.Fprintf(&want, "out %d\nerr %d\n", i, i)
	}
	if b, _ := os.ReadFile(log.Name()); string(b) != want.String() {
		t.Errorf("the log is not the workload's lines in order: %d bytes, want %d", len(b), want.Len())
	}
}

// A caller's stdin that never ends, such as a terminal nobody types into,
// neither holds up the end of a workload that does not read it nor is
// read after it: the sandbox stops reading a file at once, and another
// reader at its next Read.
func TestStdinThatNeverEnds(t *testing.T) {
	for _, r := range streamsRunners(t) {
		t.Run(r.name, func(t *testing.T) {
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer pr.Close()
			defer pw.Close()
			res := r.run(t, &Options{Args: []string{"true"}, Stdin: pr})
			if !res.Success() {
				t.Fatalf("exit %d", res.ExitCode)
			}
			// Only the test's own two ends are left of the pipe: the
			// sandbox no longer reads it.
			if n := pipeRefs(t, pr); n != 2 {
				t.Errorf("the sandbox still holds its caller's stdin after its workload ended: %d descriptors of the pipe", n)
			}

			// A reader that is not a file, blocked for good.
			blocked, blockedW := io.Pipe()
			defer blockedW.Close()
			if res := r.run(t, &Options{Args: []string{"true"}, Stdin: blocked}); !res.Success() {
				t.Fatalf("exit %d", res.ExitCode)
			}
		})
	}
}

// Nil streams are /dev/null: the workload reads EOF at once.
func TestNilStdinIsEOF(t *testing.T) {
	res, out, _ := run(t, "alpine:test", opts(sh("cat; echo done")))
	if !res.Success() || out != "done\n" {
		t.Errorf("exit %d, stdout %q", res.ExitCode, out)
	}
}

// As with os/exec, a caller may close its copy of a file given as Stdout
// once Start has returned, and then reads the pipe behind it to its end,
// which comes once the workload's output has all been copied.
func TestCloseStdoutAfterStart(t *testing.T) {
	p := newPool(t, opts(nil), 1)
	defer p.Close()
	for _, sb := range []func(*Options) *Sandbox{
		func(o *Options) *Sandbox {
			return New("alpine:test", opts(func(x *Options) { x.Args, x.Stdout = o.Args, o.Stdout }))
		},
		p.New,
	} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		s := sb(&Options{Args: []string{"seq", "100000"}, Stdout: w})
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		w.Close()
		b, err := io.ReadAll(r)
		r.Close()
		if res, werr := s.Wait(); err != nil || werr != nil || !res.Success() {
			t.Fatal(res, err, werr)
		}
		var want strings.Builder
		for i := 1; i <= 100000; i++ {
			fmt.Fprintln(&want, i)
		}
		if string(b) != want.String() {
			t.Errorf("read %d bytes, want %d", len(b), want.Len())
		}
	}
}

// With a terminal, Stdin feeds the terminal's input, and a stdin that
// never ends is no longer read once the workload has ended.
func TestTerminalStdin(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.TTY = true
		o.Stdin, o.Stdout = pr, &out
		o.Args = []string{"/bin/sh", "-c", "stty -echo; echo ready; read x; echo got $x"}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	pw.WriteString("hello\n")
	res, err := sb.Wait()
	if err != nil || !res.Success() {
		t.Fatalf("%+v %v", res, err)
	}
	if got := strings.ReplaceAll(out.String(), "\r", ""); !strings.HasSuffix(got, "got hello\n") {
		t.Errorf("terminal output %q", got)
	}
	// The feed of a terminal ends beside the teardown: wait for it, a
	// minute at most.
	deadline := time.Now().Add(time.Minute)
	for pipeRefs(t, pr) != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := pipeRefs(t, pr); n != 2 {
		t.Errorf("the sandbox still holds its caller's stdin after its workload ended: %d descriptors of the pipe", n)
	}
}

// pipeRefs counts this process's descriptors of the pipe f is an end of.
func pipeRefs(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var want string
	rc.Control(func(fd uintptr) { want, err = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)) })
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); l == want {
			n++
		}
	}
	return n
}

// An exec'd command that leaves a process behind holding its output
// (`daemon &`) does not keep Exec waiting for that process: its output
// ends with it, and what it wrote before it ended is all there. A writer
// that is a file and one that is not behave alike.
func TestExecLeavesBackgroundProcesses(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "1000"} }))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	log, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	var buf strings.Builder
	for name, w := range map[string]io.Writer{"file": log, "writer": &buf} {
		done := make(chan error, 1)
		go func() {
			res, err := sb.Exec(context.Background(), &ExecOptions{
				Args:   []string{"sh", "-c", "sleep 1000 & echo before; echo end"},
				Stdout: w, Stderr: w,
			})
			if err == nil && !res.Success() {
				err = fmt.Errorf("%+v", res)
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s: Exec waits for the process its command left behind", name)
		}
	}
	got, _ := os.ReadFile(log.Name())
	for name, out := range map[string]string{"file": string(got), "writer": buf.String()} {
		if out != "before\nend\n" {
			t.Errorf("%s: output %q", name, out)
		}
	}
}
