package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/security"
)

// httpdScript serves /www/index.html on port after a pause: without a
// readiness wait, a request right after Start finds nothing listening.
func httpdScript(port int) string {
	return fmt.Sprintf("sleep 1; mkdir -p /www && echo served-when-ready > /www/index.html && exec httpd -f -p %d -h /www", port)
}

// Start with an HTTP readiness wait returns once the path answers: the
// first request, through the published port, and one through the
// sandbox's own loopback, succeed without a retry.
func TestWaitForHTTPFirstRequest(t *testing.T) {
	ctx := context.Background()
	sb := New("busybox:test", opts(func(o *Options) {
		o.Network = defaultNetwork(t)
		o.Ports = []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 80, Protocol: "tcp"}}
		o.Args = []string{"/bin/sh", "-c", httpdScript(80)}
		o.WaitFor = []ReadyCheck{HTTPCheck{Port: 80, Path: "/index.html", Body: regexp.MustCompile("served")}}
	}))
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	url := fmt.Sprintf("http://127.0.0.1:%d/index.html", sb.Attachment().Ports[0].HostPort)
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("first request after Start: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "served-when-ready\n" {
		t.Errorf("GET %s: %d %q", url, resp.StatusCode, body)
	}

	// The same server through the sandbox's loopback.
	conn, err := sb.DialContext(ctx, "tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /index.html HTTP/1.0\r\n\r\n")
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		t.Errorf("GET through the sandbox's loopback: %q, %v", status, err)
	}
}

// WaitReady on a sandbox with no network at all: the check reaches its
// loopback. A wrong expected status or body is not ready.
func TestWaitReadyNoNetwork(t *testing.T) {
	ctx := context.Background()
	sb := New("busybox:test", opts(func(o *Options) {
		o.Args = []string{"/bin/sh", "-c", httpdScript(8080)}
	}))
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if err := sb.WaitReady(ctx, HTTPCheck{Port: 8080, Path: "/index.html"}, TCPCheck{Port: 8080}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []HTTPCheck{
		{Port: 8080, Path: "/index.html", Status: 404},
		{Port: 8080, Path: "/index.html", Body: regexp.MustCompile("nothing like it")},
		{Port: 8080, Path: "/missing"},
	} {
		wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := sb.WaitReady(wctx, c)
		cancel()
		if !errors.Is(err, ErrNotReady) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%v: %v, want ErrNotReady and DeadlineExceeded", c, err)
		}
	}
}

// A TCP wait on a port that never opens times out with an error naming
// the check, and the failed Start leaves nothing behind: no rootfs,
// cgroup, state, mount, veth or rule.
func TestWaitForTCPTimesOut(t *testing.T) {
	ctx := context.Background()
	sb := New("alpine:test", opts(func(o *Options) {
		o.Network = defaultNetwork(t)
		o.Ports = []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 80, Protocol: "tcp"}}
		o.Args = []string{"sleep", "1000"}
		o.WaitFor = []ReadyCheck{TCPCheck{Port: 81}}
		o.ReadyTimeout = time.Second
	}))
	defer sb.Close() // in case Start left it running
	err := sb.Start(ctx)
	if !errors.Is(err, ErrNotReady) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start: %v, want ErrNotReady and DeadlineExceeded", err)
	}
	t.Log(err)
	for _, want := range []string{"TCP check of port 81", "gave up after 1s", "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// Torn down by the time Start returns.
	if left := leftBehind(t); len(left) > 0 {
		t.Fatalf("left behind: %q", left)
	}
	tr := netTraces{ids: []string{sb.ID()}}
	if left := tr.left(t, testEnv.dir+"/run-networks"); len(left) > 0 {
		t.Fatalf("network left behind: %q", left)
	}
	res, werr := sb.Wait()
	if res == nil || res.Signal == 0 {
		t.Errorf("Wait after a failed readiness: %+v, %v; want the killed workload's result", res, werr)
	}
}

// A log-line wait passes once the line is printed, whatever came before,
// and Logs keeps the output. A workload that ends before its line fails
// Start with its exit status, and Run returns its Result too.
func TestWaitForLogLine(t *testing.T) {
	ctx := context.Background()
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "echo starting; echo warming up >&2; sleep 1; echo ready to serve; sleep 1000"}
		o.Stdout = &out
		o.LogBytes = 4096
		o.WaitFor = []ReadyCheck{LogCheck{Match: regexp.MustCompile(`^ready to`), Stream: "stdout"}}
	}))
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	var got []string
	for _, e := range sb.Logs() {
		got = append(got, e.Stream+" "+string(e.Text))
	}
	// Two pipes, copied side by side: the order across them is not
	// the workload's.
	slices.Sort(got)
	want := []string{"stderr warming up", "stdout ready to serve", "stdout starting"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Logs after the wait: %q, want %q", got, want)
	}
	if !strings.Contains(out.String(), "ready to serve") {
		t.Errorf("Stdout got %q: the tee must pass the output on", out.String())
	}

	res, err := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "echo bye; exit 3"}
		o.WaitFor = []ReadyCheck{LogCheck{Match: regexp.MustCompile("never printed")}}
	})).Run(ctx)
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Run of a workload that ends first: %v", err)
	}
	t.Log(err)
	if res == nil || res.ExitCode != 3 {
		t.Errorf("Run's Result: %+v, want exit code 3", res)
	}
}

// Logs keeps only about LogBytes of a flood, the newest, and cuts a line
// longer than an entry's bound into parts.
func TestLogsBounded(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x; echo; seq 1 5000"}
		o.LogBytes = 8192
	}))
	if _, err := sb.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	logs := sb.Logs()
	size := 0
	for _, e := range logs {
		size += len(e.Text) + entryOverhead
	}
	if size > 8192 || len(logs) == 0 || string(logs[len(logs)-1].Text) != "5000" {
		t.Errorf("kept %d entries, %d bytes, last %q", len(logs), size, logs[len(logs)-1].Text)
	}

	// The long line alone, kept whole in parts.
	sb = New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "head -c 40000 /dev/zero | tr '\\0' x; echo"}
		o.LogBytes = 1 << 20
	}))
	if _, err := sb.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, e := range sb.Logs() {
		parts = append(parts, fmt.Sprintf("%d/%v", len(e.Text), e.Partial))
	}
	if want := "16384/true 16384/true 7232/false"; strings.Join(parts, " ") != want {
		t.Errorf("a 40000-byte line kept as %q, want %q", parts, want)
	}
}

// healthImage stores an image of busybox:test's layers with healthcheck
// and exposed ports in its config.
func healthImage(t *testing.T, name string, hc *v1.HealthConfig, exposed ...string) {
	t.Helper()
	ctx := context.Background()
	base, err := testEnv.store.Image(ctx, "busybox:test")
	if err != nil {
		t.Fatal(err)
	}
	cfg := base.Config.Config.DeepCopy()
	cfg.Healthcheck = hc
	cfg.ExposedPorts = map[string]struct{}{}
	for _, p := range exposed {
		cfg.ExposedPorts[p] = struct{}{}
	}
	if _, err := testEnv.store.CommitConfig(ctx, base, &layerfs.CommitOptions{Config: cfg, Name: name}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testEnv.store.Remove(context.Background(), name) })
}

// An image whose HEALTHCHECK fails until the service is up: failures in
// its start period do not count, and Start returns once it passes.
func TestWaitForHealthcheckHealthy(t *testing.T) {
	healthImage(t, "health:up", &v1.HealthConfig{
		Test:     []string{"CMD-SHELL", "test -f /tmp/up"},
		Interval: 200 * time.Millisecond, Retries: 2, StartPeriod: 5 * time.Second,
	})
	sb := New("health:up", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "sleep 1.5; touch /tmp/up; exec sleep 1000"}
		o.WaitFor = []ReadyCheck{HealthCheck{}}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	res, err := sb.Exec(context.Background(), &ExecOptions{Args: []string{"test", "-f", "/tmp/up"}})
	if err != nil || res.ExitCode != 0 {
		t.Errorf("ready before the service was up: %+v, %v", res, err)
	}
}

// An image whose HEALTHCHECK never passes, or never returns, fails Start
// once its retries are spent, with the check's output; HEALTHCHECK NONE
// fails at once.
func TestWaitForHealthcheckUnhealthy(t *testing.T) {
	for _, tc := range []struct {
		name string
		hc   *v1.HealthConfig
		want []string
		is   error
	}{
		{"failing", &v1.HealthConfig{Test: []string{"CMD-SHELL", "echo 'db down'; exit 1"}, Interval: 100 * time.Millisecond, Retries: 2},
			[]string{"failed 2 times in a row", `"db down"`}, ErrNotReady},
		{"hanging", &v1.HealthConfig{Test: []string{"CMD", "sleep", "1000"}, Interval: 100 * time.Millisecond, Timeout: 300 * time.Millisecond, Retries: 1},
			[]string{"timed out after 300ms"}, ErrNotReady},
		{"none", &v1.HealthConfig{Test: []string{"NONE"}}, nil, ErrNoHealthcheck},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "health:" + tc.name
			healthImage(t, name, tc.hc)
			sb := New(name, opts(func(o *Options) {
				o.Args = []string{"sleep", "1000"}
				o.WaitFor = []ReadyCheck{HealthCheck{}}
			}))
			err := sb.Start(context.Background())
			if !errors.Is(err, tc.is) {
				t.Fatalf("Start: %v, want %v", err, tc.is)
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if left := leftBehind(t); len(left) > 0 {
				t.Errorf("left behind: %q", left)
			}
		})
	}
}

// A check with no port uses the image's lowest exposed TCP port; ports
// that are not ports are left out.
func TestExposedPortCheck(t *testing.T) {
	healthImage(t, "expose:test", nil, "8081/tcp", "53/udp", "9000/sctp", "bogus/tcp", "70000/tcp", "0080", "8080")
	sb := New("expose:test", opts(func(o *Options) {
		o.Args = []string{"/bin/sh", "-c", httpdScript(8080)}
		o.WaitFor = []ReadyCheck{TCPCheck{}}
		o.ReadyTimeout = 10 * time.Second
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	var got []string
	for _, p := range sb.ExposedPorts() {
		got = append(got, fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol))
	}
	if want := "53/udp 8080/tcp 8081/tcp 9000/sctp"; strings.Join(got, " ") != want {
		t.Errorf("ExposedPorts: %q, want %q", got, want)
	}
	if err := sb.WaitReady(context.Background(), HTTPCheck{Path: "/index.html"}); err != nil {
		t.Error(err)
	}
}

// Checks that can never work are refused before anything is built.
func TestReadyCheckValidation(t *testing.T) {
	for _, c := range []ReadyCheck{
		TCPCheck{Port: 70000},
		HTTPCheck{Path: "http://example.com/"},
		HTTPCheck{Path: "/a\nHost: evil"},
		LogCheck{},
		LogCheck{Match: regexp.MustCompile("x"), Stream: "stdin"},
		HealthCheck{Test: []string{"CMD"}},
		nil,
	} {
		err := New("alpine:test", opts(func(o *Options) { o.WaitFor = []ReadyCheck{c} })).Start(context.Background())
		if !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%v: %v, want ErrInvalidOptions", c, err)
		}
		t.Log(err)
	}
	err := New("alpine:test", opts(func(o *Options) {
		o.Detachable = true
		o.WaitFor = []ReadyCheck{TCPCheck{Port: 80}}
	})).Start(context.Background())
	if !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("WaitFor on a Detachable sandbox: %v, want ErrInvalidOptions", err)
	}
	err = New("alpine:test", opts(func(o *Options) {
		o.Detachable = true
		o.LogBytes = 100
	})).Start(context.Background())
	if !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("LogBytes on a Detachable sandbox: %v, want ErrInvalidOptions", err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %q", left)
	}
}

// A probe never reaches the host: a port open on the host's loopback is
// not the sandbox's, so a check of it does not pass, and the host's
// listener sees no connection.
func TestProbeNeverDialsHost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
			accepted <- struct{}{}
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	ctx := context.Background()
	sb := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "1000"} }))
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := sb.WaitReady(wctx, TCPCheck{Port: port}, HTTPCheck{Port: port}); !errors.Is(err, ErrNotReady) {
		t.Errorf("a check of the host's port %d: %v, want ErrNotReady", port, err)
	}
	ln.Close()
	select {
	case <-accepted:
		t.Error("the host's listener was connected to")
	default:
	}
}

// WaitReady on a handle from Open of a supervised sandbox: its log line
// is read from the supervisor's log, its port through its namespace; a
// workload that ends first ends the wait.
func TestWaitReadyOpened(t *testing.T) {
	ctx := context.Background()
	sv := startSupervised(t, "echo warming up; sleep 1; echo listening; nc -lk -p 7000 -e echo hi & while [ ! -e /x/go ]; do sleep 0.1; done; exit 7")
	sb, err := Open(ctx, sv.id, opts(func(o *Options) { o.StateDir, o.Cgroups = sv.stateDir, sv.cgm }))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if err := sb.WaitReady(ctx, LogCheck{Match: regexp.MustCompile("^listening$")}, TCPCheck{Port: 7000}); err != nil {
		t.Fatal(err)
	}
	conn, err := sb.DialContext(ctx, "tcp", "127.0.0.1:7000")
	if err != nil {
		t.Fatal(err)
	}
	reply, _ := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if reply != "hi\n" {
		t.Errorf("reply through the handle's DialContext: %q", reply)
	}

	// The workload ends while a check waits in vain.
	sv.release(t)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = sb.WaitReady(wctx, LogCheck{Match: regexp.MustCompile("never")})
	if !errors.Is(err, ErrNotReady) || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "ended") {
		t.Errorf("WaitReady as the workload ends: %v", err)
	}
	sv.wait(t)
}

// A terminal's output is kept too, as stdout, and so is a last line that
// never ended.
func TestLogsTerminalAndUnendedLine(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "echo on a terminal; printf no-newline"}
		o.TTY = true
		o.LogBytes = 1024
	}))
	if _, err := sb.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range sb.Logs() {
		got = append(got, fmt.Sprintf("%s %q %v", e.Stream, e.Text, e.Partial))
	}
	if want := []string{`stdout "on a terminal\r" false`, `stdout "no-newline" true`}; !slices.Equal(got, want) {
		t.Errorf("Logs: %q, want %q", got, want)
	}
}

// Options.Validate reports readiness options that cannot work, so that a
// command line can say so before anything starts.
func TestValidateReadiness(t *testing.T) {
	for _, o := range []*Options{
		{WaitFor: []ReadyCheck{TCPCheck{Port: -1}}},
		{ReadyTimeout: -time.Second},
		{LogBytes: -1},
		{Detachable: true, WaitFor: []ReadyCheck{TCPCheck{}}},
		{Detachable: true, LogBytes: 1},
		{HandOverStdio: true, Stdout: os.Stdout, LogBytes: 1},
	} {
		if err := o.Validate(); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%+v: %v, want ErrInvalidOptions", o, err)
		}
	}
	if err := (&Options{HandOverStdio: true, Stdout: os.Stdout, WaitFor: []ReadyCheck{TCPCheck{}}}).Validate(); err != nil {
		t.Errorf("a TCP check needs no output: %v", err)
	}
}

// Under Strict, in a user namespace of its own, the checks reach the
// sandbox as well: its network namespace is entered by a pidfd, and its
// healthcheck is an Exec with its settings.
func TestWaitForStrict(t *testing.T) {
	ctx := context.Background()
	sb := New("alpine:test", opts(func(o *Options) {
		o.Security = security.Strict()
		o.Args = []string{"sh", "-c", "sleep 1; exec nc -lk -p 7000 -e echo hi"}
		o.WaitFor = []ReadyCheck{TCPCheck{Port: 7000}, HealthCheck{Test: []string{"CMD", "id", "-u"}}}
	}))
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	conn, err := sb.DialContext(ctx, "tcp", "127.0.0.1:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if reply, _ := bufio.NewReader(conn).ReadString('\n'); reply != "hi\n" {
		t.Errorf("reply: %q", reply)
	}
}

// BenchmarkDialContext measures one TCP probe of a port nothing listens
// on, as most probes of a service still starting are: a thread that
// enters the sandbox's network namespace, is refused on its loopback, and
// is thrown away.
func BenchmarkDialContext(b *testing.B) {
	ctx := context.Background()
	sb := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "1000"} }))
	if err := sb.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer sb.Close()
	for b.Loop() {
		if _, err := sb.DialContext(ctx, "tcp", "127.0.0.1:9"); !errors.Is(err, syscall.ECONNREFUSED) {
			b.Fatal(err)
		}
	}
}

// Options.Timeout running out during the readiness wait fails Start as
// ReadyTimeout would: ErrNotReady, wrapping DeadlineExceeded, and the
// Result says TimedOut.
func TestWaitForTimeoutDuringWait(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sleep", "1000"}
		o.WaitFor = []ReadyCheck{TCPCheck{Port: 81}}
		o.Timeout = 700 * time.Millisecond
	}))
	defer sb.Close()
	err := sb.Start(context.Background())
	if !errors.Is(err, ErrNotReady) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "signal 9 (killed)") {
		t.Errorf("Start: %v, want ErrNotReady and DeadlineExceeded, saying signal 9", err)
	}
	if res, _ := sb.Wait(); res == nil || !res.TimedOut {
		t.Errorf("Wait: %+v, want TimedOut", res)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %q", left)
	}
}
