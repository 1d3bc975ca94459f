package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox"
)

// cmdsEnv is an e2eEnv with the busybox image imported, for the commands
// that look at detached sandboxes: logs, ps, inspect, port, top, stats.
func cmdsEnv(t *testing.T) (*e2eEnv, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("must run as root: it runs sandboxes")
	}
	e := &e2eEnv{t: t, bin: buildBerth(t), env: os.Environ()}
	root := t.TempDir()
	e.flags = []string{"--state", filepath.Join(root, "state"), "--cgroup-parent", fmt.Sprintf("berth-clicmds-%d", os.Getpid())}
	busybox, _ := filepath.Abs("../../../shared/images/busybox-1.38-musl-oci")
	e.must(root, "image", "import", busybox, "--name", "busybox:demo")
	t.Cleanup(func() {
		// Whatever a failed test left running goes, then its leftovers.
		out, _, _ := e.run(root, "ps", "-a", "-q", "--no-trunc")
		for _, id := range strings.Fields(out) {
			e.run(root, "rm", "-f", id)
		}
		if out, errOut, err := e.run(root, "gc"); err != nil {
			t.Errorf("gc: %v\n%s%s", err, out, errOut)
		}
	})
	return e, root
}

// A detached httpd seen through every command that looks at it: logs
// (and logs -f, which shows lines while the sandbox runs and ends when it
// exits), ps and ps -a, port (and the port answers), inspect, top, stats.
func TestDetachedSandboxCommands(t *testing.T) {
	e, root := cmdsEnv(t)
	script := `echo started; echo warning >&2; mkdir /www; echo hello > /www/index.html; httpd -p 80 -h /www
trap 'echo bye; exit 3' TERM
i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done`
	id := strings.TrimSpace(e.must(root, "run", "-d", "--name", "web", "-l", "tier=front", "-l", "team=a b", "--net", "bridge", "-p", "127.0.0.1::80", "-m", "48m", "busybox:demo", "sh", "-c", script))
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) {
		t.Fatalf("run -d printed %q, not an ID", id)
	}

	// logs -f, started now, prints the lines as they come.
	follow := exec.Command(e.bin, append(append([]string{"--root", root}, e.flags...), "logs", "-f", "web")...)
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var followErr bytes.Buffer
	follow.Stderr = &followErr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	followed := bufio.NewScanner(stdout)
	for want := 0; want < 5; {
		if !followed.Scan() {
			t.Fatalf("logs -f ended early: %v %s", followed.Err(), followErr.String())
		}
		if followed.Text() == fmt.Sprintf("tick %d", want) {
			want++
		}
	}
	// Seen while the sandbox runs: ps says so.
	ps := e.must(root, "ps")
	if !strings.Contains(ps, id[:12]) || !strings.Contains(ps, " Up ") || !strings.Contains(ps, " web") {
		t.Errorf("ps while running:\n%s", ps)
	}

	out := e.must(root, "port", "web")
	m := regexp.MustCompile(`^80/tcp -> 127\.0\.0\.1:(\d+)\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("port web: %q", out)
	}
	hostPort := m[1]
	if out := e.must(root, "port", "web", "80/tcp"); out != "127.0.0.1:"+hostPort+"\n" {
		t.Errorf("port web 80/tcp: %q", out)
	}
	if _, _, err := e.run(root, "port", "web", "81"); err == nil {
		t.Error("port web 81: no error for a port not published")
	}
	var body string
	eventually(t, "httpd to answer on the published port", func() bool {
		resp, err := http.Get("http://127.0.0.1:" + hostPort + "/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200
	})
	if body != "hello\n" {
		t.Errorf("GET on the published port: %q", body)
	}
	if ps := e.must(root, "ps"); !strings.Contains(ps, "127.0.0.1:"+hostPort+"->80/tcp") {
		t.Errorf("ps shows no PORTS:\n%s", ps)
	}
	if out := e.must(root, "ps", "-q", "--filter", "name=web"); out != id[:12]+"\n" {
		t.Errorf("ps -q --filter name=web: %q", out)
	}
	if out := e.must(root, "ps", "-q", "--filter", "name=other"); out != "" {
		t.Errorf("ps -q --filter name=other: %q", out)
	}
	if out := e.must(root, "ps", "--format", "{{.Names}} {{.State}} {{.Label \"team\"}}"); out != "web running a b\n" {
		t.Errorf("ps --format: %q", out)
	}
	for filter, want := range map[string]string{"label=tier": id[:12] + "\n", "label=tier=front": id[:12] + "\n", "label=tier=back": "", "label=other": ""} {
		if out := e.must(root, "ps", "-q", "--filter", filter); out != want {
			t.Errorf("ps --filter %s: %q", filter, out)
		}
	}

	var infos []inspectInfo
	if err := json.Unmarshal([]byte(e.must(root, "inspect", "web")), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("inspect: %v %d", err, len(infos))
	}
	in := infos[0]
	if in.ID != id || in.Name != "web" || !in.State.Running || in.State.Status != "running" || in.State.Pid <= 0 ||
		in.Config.Image != "busybox:demo" || in.Resources.Memory != 48<<20 || in.LogPath == "" {
		t.Errorf("inspect: %+v", in)
	}
	if b := in.NetworkSettings.Ports["80/tcp"]; len(b) != 1 || b[0].HostPort != hostPort || b[0].HostIP != "127.0.0.1" {
		t.Errorf("inspect's ports: %+v", in.NetworkSettings.Ports)
	}
	if len(in.NetworkSettings.Networks) != 1 || !strings.HasPrefix(in.NetworkSettings.SandboxKey, "/proc/") {
		t.Errorf("inspect's network: %+v", in.NetworkSettings)
	}
	for _, ep := range in.NetworkSettings.Networks {
		if ep.IPAddress == "" || ep.Interface != "eth0" {
			t.Errorf("inspect's network: %+v", ep)
		}
	}
	if out := e.must(root, "inspect", "--format", "{{.State.Status}}", id[:8]); out != "running\n" {
		t.Errorf("inspect --format by ID prefix: %q", out)
	}

	top := e.must(root, "top", "web")
	if !strings.HasPrefix(top, "UID ") || !strings.Contains(top, "httpd -p 80 -h /www") || !strings.Contains(top, "berth-init") {
		t.Errorf("top:\n%s", top)
	}
	top = e.must(root, "top", "web", "-o", "nspid,comm")
	if !regexp.MustCompile(`(?m)^1 +berth-init$`).MatchString(top) || !regexp.MustCompile(`(?m)^\d+ +httpd$`).MatchString(top) {
		t.Errorf("top -o nspid,comm:\n%s", top)
	}
	stats := e.must(root, "stats", "--no-stream", "web")
	if lines := strings.Split(strings.TrimSpace(stats), "\n"); len(lines) != 2 || !strings.Contains(lines[1], id[:12]+"   web ") || !strings.Contains(lines[1], "/ 48.0 MiB") {
		t.Errorf("stats --no-stream:\n%s", stats)
	}
	if out := e.must(root, "stats", "--no-stream", "--format", "{{.Container}} {{.ID}} {{.PIDs}}", "web"); !regexp.MustCompile(`^web ` + id[:12] + ` \d+\n$`).MatchString(out) {
		t.Errorf("stats --format: %q", out)
	}
	if out := e.must(root, "stats", "--no-stream", "--format", "json", "web"); !strings.HasPrefix(out, `{"ID":"`+id[:12]+`","Container":"web","Name":"web","CPUPerc":"`) || strings.Count(out, "\n") != 1 {
		t.Errorf("stats --format json: %q", out)
	}

	// Without --no-stream, stats refreshes until interrupted.
	streaming := exec.Command(e.bin, append(append([]string{"--root", root}, e.flags...), "stats")...)
	statsOut, err := streaming.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := streaming.Start(); err != nil {
		t.Fatal(err)
	}
	refreshes := bufio.NewScanner(statsOut)
	for n := 0; n < 2; {
		if !refreshes.Scan() {
			t.Fatalf("stats ended: %v", refreshes.Err())
		}
		if strings.HasPrefix(refreshes.Text(), "\x1b[H\x1b[2JID ") {
			n++
		} else if !strings.HasPrefix(refreshes.Text(), id[:12]+"   web ") {
			t.Errorf("stats printed %q", refreshes.Text())
		}
	}
	streaming.Process.Signal(os.Interrupt)
	if err := streaming.Wait(); err != nil {
		t.Errorf("stats, interrupted: %v", err)
	}

	// It ends: its trap runs, logs -f prints its last line and ends.
	e.must(root, "kill", "-s", "TERM", "web")
	var rest []string
	for followed.Scan() {
		rest = append(rest, followed.Text())
	}
	if err := follow.Wait(); err != nil {
		t.Errorf("logs -f: %v %s", err, followErr.String())
	}
	if len(rest) == 0 || rest[len(rest)-1] != "bye" {
		t.Errorf("logs -f ended with %q", rest[max(0, len(rest)-3):])
	}
	if out := e.must(root, "wait", "web"); out != "3\n" {
		t.Errorf("wait: %q", out)
	}
	eventually(t, "ps -a to say it exited", func() bool {
		out, _, _ := e.run(root, "ps", "-a", "--format", "{{.Names}} {{.Status}}")
		return strings.HasPrefix(out, "web Exited (3) ")
	})
	if out := e.must(root, "ps", "-q"); out != "" {
		t.Errorf("ps without -a lists an exited sandbox: %q", out)
	}
	if out := e.must(root, "ps", "-a", "--format", "[{{.Ports}}]"); out != "[]\n" {
		t.Errorf("ps -a shows ports of an exited sandbox: %q", out)
	}
	if out := e.must(root, "port", "web"); out != "" {
		t.Errorf("port of an exited sandbox: %q", out)
	}
	if out := e.must(root, "ps", "-q", "--filter", "status=exited"); out != id[:12]+"\n" {
		t.Errorf("ps --filter status=exited: %q", out)
	}
	if out := e.must(root, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} {{.State.Running}}", "web"); out != "exited 3 false\n" {
		t.Errorf("inspect after the end: %q", out)
	}

	// The log, read afterwards: each stream to its own.
	out, errOut, err := e.run(root, "logs", "web")
	if err != nil || !strings.HasPrefix(out, "started\ntick 0\n") || !strings.HasSuffix(out, "bye\n") || errOut != "warning\n" {
		t.Errorf("logs: %v\nstdout:\n%.200s\nstderr:\n%s", err, out, errOut)
	}
	if out := e.must(root, "logs", "--tail", "2", "web"); !regexp.MustCompile(`^tick \d+\nbye\n$`).MatchString(out) {
		t.Errorf("logs --tail 2: %q", out)
	}
	out = e.must(root, "logs", "-t", "--tail", "1", "web")
	if f := strings.Fields(out); len(f) != 2 || f[1] != "bye" {
		t.Errorf("logs -t: %q", out)
	} else if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
		t.Errorf("logs -t: %v", err)
	}
	if out := e.must(root, "logs", "--since", "1h", "--until", "2000-01-01T00:00:00Z", "web"); out != "" {
		t.Errorf("logs --until 2000: %q", out)
	}
	if _, _, err := e.run(root, "logs", "--since", "yesterday", "web"); exitStatus(err) != exitSetup {
		t.Errorf("logs --since yesterday: %v", err)
	}
	e.must(root, "rm", "web")
	if _, _, err := e.run(root, "inspect", "web"); err == nil {
		t.Error("inspect of a removed container succeeded")
	}
}

func exitStatus(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// A foreground sandbox has no log, and says so; but ps, inspect, top and
// stats show it as they do a detached one.
func TestForegroundSandboxCommands(t *testing.T) {
	e, root := cmdsEnv(t)
	fg := exec.Command(e.bin, append(append([]string{"--root", root}, e.flags...), "run", "busybox:demo", "sleep", "1000")...)
	if err := fg.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		fg.Process.Kill()
		fg.Wait()
	}()
	var id string
	eventually(t, "ps to show the sandbox running", func() bool {
		out, _, _ := e.run(root, "ps", "-q", "--filter", "status=running")
		id = strings.TrimSpace(out)
		return id != ""
	})
	if out := e.must(root, "inspect", "--format", "{{.Detached}} {{.State.Status}} {{index .Config.Cmd 0}}", id); out != "false running sleep\n" {
		t.Errorf("inspect: %q", out)
	}
	if out := e.must(root, "top", id, "-o", "comm"); !strings.Contains(out, "\nsleep\n") {
		t.Errorf("top:\n%s", out)
	}
	// top reads /proc only for processes still in the sandbox's cgroup:
	// a PID the cgroup listed may name another process by the time it is
	// read.
	var full string
	fmt.Sscan(e.must(root, "inspect", "--format", "{{.Id}}", id), &full)
	var pid int
	fmt.Sscan(e.must(root, "inspect", "--format", "{{.State.Pid}}", id), &pid)
	if p, err := readProc(pid, full); err != nil || p.comm != "berth-init" {
		t.Errorf("readProc of the sandbox's PID 1: %+v %v", p, err)
	}
	if p, err := readProc(os.Getpid(), full); err == nil {
		t.Errorf("readProc of a process outside the sandbox: %+v", p)
	}
	if _, errOut, err := e.run(root, "logs", id); exitStatus(err) != exitFailure || !strings.Contains(errOut, "not a detached sandbox") {
		t.Errorf("logs of a foreground sandbox: %v %s", err, errOut)
	}
	if _, errOut, err := e.run(root, "top", id, "--sort", "x"); exitStatus(err) != exitSetup || !strings.Contains(errOut, "takes only") {
		t.Errorf("top with ps options it does not know: %v %s", err, errOut)
	}
	e.must(root, "kill", id)
}

// berth exec -t gives the process a terminal: its own, sized as berth's.
func TestExecTTY(t *testing.T) {
	e, root := cmdsEnv(t)
	id := strings.TrimSpace(e.must(root, "run", "-d", "busybox:demo", "sleep", "1000"))
	out := runOnTerminal(t, e, root, 33, 101, "", "exec", "-t", id, "sh", "-c", "tty; stty size; test -t 0 && test -t 2 && echo all-terminal")
	if !regexp.MustCompile(`^/dev/pts/\d+\r\n33 101\r\nall-terminal\r\n$`).MatchString(out) {
		t.Errorf("exec -t printed %q", out)
	}
	// With -i, what is typed reaches the process (and its terminal
	// echoes it).
	if out := runOnTerminal(t, e, root, 24, 80, "typed\r", "exec", "-it", id, "sh", "-c", "read x; echo got $x"); !strings.HasSuffix(out, "got typed\r\n") {
		t.Errorf("exec -it printed %q", out)
	}
	// Without -t, the process's streams are pipes, as before.
	if out := e.must(root, "exec", id, "sh", "-c", "tty || true"); out != "not a tty\n" {
		t.Errorf("exec without -t: %q", out)
	}
	if _, errOut, err := e.run(root, "exec", "-t", id, "true"); exitStatus(err) != exitSetup || !strings.Contains(errOut, "not a terminal") {
		t.Errorf("exec -t without a terminal: %v %s", err, errOut)
	}
	e.must(root, "rm", "-f", id)

	// A workload that may mount puts a FIFO where the terminal's
	// multiplexer should be: exec -t refuses it, at once, saying why.
	id = strings.TrimSpace(e.must(root, "run", "-d", "--cap-add", "SYS_ADMIN", "--seccomp", "unconfined", "--userns", "host", "busybox:demo",
		"sh", "-c", "mount -t tmpfs none /dev/pts && mkfifo /dev/pts/ptmx && touch /tampered && exec sleep 1000"))
	eventually(t, "the workload to tamper with /dev/pts", func() bool {
		_, _, err := e.run(root, "exec", id, "test", "-e", "/tampered")
		return err == nil
	})
	if out := runOnTerminal(t, e, root, 24, 80, "", "exec", "-t", id, "echo", "hi"); !strings.Contains(out, "/dev/pts/ptmx is not a devpts ptmx") || strings.Contains(out, "hi\r\n") {
		t.Errorf("exec -t into a tampered /dev/pts printed %q", out)
	}
	e.must(root, "rm", "-f", id)
}

// runOnTerminal runs berth with a new terminal of rows×cols as its
// standard streams, and returns what it wrote there.
func runOnTerminal(t *testing.T, e *e2eEnv, root string, rows, cols uint16, input string, args ...string) string {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(e.bin, append(append([]string{"--root", root}, e.flags...), args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	if input != "" {
		master.WriteString(input)
	}
	var out bytes.Buffer
	io.Copy(&out, master) // EIO once berth, the last holder, is gone
	cmd.Wait()            // its status is for the caller to judge from the output
	return out.String()
}

// What callers and images chose (names, labels, commands) is printed one
// sandbox to a line: a newline or an escape sequence in one cannot make a
// line that looks like another sandbox's, or reach the terminal.
func TestPsCellsAreOneLine(t *testing.T) {
	g := &globals{}
	l := &listed{
		ID: "0123456789abcdef", SandboxID: "0123456789abcdef", Name: "n\x1b[31m",
		Image: "img\nfedcba987654 evil:latest   sh   1 second ago   Up 1 second", Command: []string{"sh", "-c", "a\rb\tc"},
		Labels: map[string]string{"k": "v\n0000"}, Created: time.Now(), State: "running", Started: time.Now(),
	}
	tmpl, table, err := psTemplate(defaultPsTable+`\t{{.Labels}}\t{{.Label "k"}}`, false)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := printRows(&b, []*psRow{g.psRow(t.Context(), l, true)}, psHeader, tmpl, table, false); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n"); len(lines) != 2 || strings.ContainsAny(b.String(), "\x1b\r") {
		t.Errorf("ps printed %d lines:\n%q", len(lines), b.String())
	}
	var j bytes.Buffer
	if err := printRows(&j, []*psRow{g.psRow(t.Context(), l, true)}, psHeader, nil, false, true); err != nil || strings.Count(j.String(), "\n") != 1 {
		t.Errorf("ps --format json: %v %q", err, j.String())
	}
}

func TestParseWhenAndFilters(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
	}{
		{"10m", now.Add(-10 * time.Minute)},
		{"2026-12-06T11:00:00Z", now.Add(-time.Hour)},
		{"1796554800", time.Unix(1796554800, 0)},
		{"1796554800.5", time.Unix(1796554800, 5e8)},
	} {
		if got, err := parseWhen(c.in, now); err != nil || !got.Equal(c.want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"-5m", "yesterday", "12:00"} {
		if _, err := parseWhen(bad, now); err == nil {
			t.Errorf("parseWhen(%q): no error", bad)
		}
	}
	match, err := parseFilters([]string{"label=a", "label=b=2", "status=running", "name=x", "name=y"})
	if err != nil {
		t.Fatal(err)
	}
	yes := &listed{Name: "y", State: "running", Labels: map[string]string{"a": "", "b": "2"}}
	for _, no := range []*listed{
		{Name: "z", State: "running", Labels: yes.Labels},
		{Name: "x", State: "exited", Labels: yes.Labels},
		{Name: "x", State: "running", Labels: map[string]string{"a": "1", "b": "3"}},
		{Name: "x", State: "running", Labels: map[string]string{"b": "2"}},
	} {
		if match(no) {
			t.Errorf("filters match %+v", no)
		}
	}
	if !match(yes) {
		t.Errorf("filters do not match %+v", yes)
	}
	for _, bad := range []string{"status=gone", "colour=red", "label"} {
		if _, err := parseFilters([]string{bad}); err == nil {
			t.Errorf("--filter %s: no error", bad)
		}
	}
}

// inspect --format prints what a caller or an image chose (labels, the
// command, the environment) with its control characters escaped: an
// escape sequence reaches no terminal, and a newline makes no line.
func TestInspectFormatEscapes(t *testing.T) {
	info := (&globals{}).inspect(t.Context(), &listed{
		ID: "0123456789abcdef", Name: "n\x1b[2J", State: "exited",
		Command: []string{"sh", "-c", "a\rb"}, Labels: map[string]string{"k\n": "v\nfake 0 exited"},
		Sandbox: &sandbox.State{Env: []string{"A=\x1b]0;title\x07"}},
	})
	tmpl, _, err := psTemplate(`{{.Name}} {{.Config.Cmd}} {{.Config.Labels}} {{.Config.Env}} {{json .Config.Labels}}`, false)
	if err != nil {
		t.Fatal(err)
	}
	out, err := formatInspect(tmpl, info)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(out, "\x1b\r\n\x07") || !strings.Contains(out, `n\x1b[2J`) || !strings.Contains(out, `v\nfake`) {
		t.Errorf("inspect --format printed %q", out)
	}
	// The JSON, too: DEL and the C1 controls (a CSI among them), which
	// encoding/json leaves raw, are escaped as well.
	info.Name = "n\u009b2J\x7f"
	b, err := inspectJSON([]*inspectInfo{info})
	if err != nil {
		t.Fatal(err)
	}
	var back []inspectInfo
	if bytes.ContainsFunc(b, func(r rune) bool { return r < ' ' && r != '\n' || r >= 0x7f && r <= 0x9f }) || json.Unmarshal(b, &back) != nil || back[0].Name != info.Name {
		t.Errorf("inspect's JSON: %q", b)
	}
}

func TestFormatPort(t *testing.T) {
	for p, want := range map[netplug.PortMapping]string{
		{HostPort: 32768, ContainerPort: 80}:                                  "0.0.0.0:32768->80/tcp",
		{HostIP: "::1", HostPort: 8080, ContainerPort: 53, Protocol: "udp"}:   "[::1]:8080->53/udp",
		{HostIP: "127.0.0.1", HostPort: 1, ContainerPort: 2, Protocol: "tcp"}: "127.0.0.1:1->2/tcp",
	} {
		if got := formatPort(p); got != want {
			t.Errorf("formatPort(%+v) = %q, want %q", p, got, want)
		}
	}
}

// ps shows the command line PID 1 runs, the entrypoint included, both
// while the container runs and after it exited; inspect splits it into
// Path and Args as Docker does, and Config.Cmd stays the arguments given
// after the image.
func TestPsCommandLine(t *testing.T) {
	e := newDetachEnv(t)
	e.must("run", "-d", "--name", "ep", "-e", "MARK=kept", "--memory", "64m", "--entrypoint", "/bin/sleep", "busybox:demo", "100")
	t.Cleanup(func() { e.berth("rm", "-f", "ep") })
	check := func(when string) {
		t.Helper()
		if out := e.must("ps", "-a", "--filter", "name=ep", "--format", "{{.Command}}"); out != "/bin/sleep 100\n" {
			t.Errorf("ps, %s: %q", when, out)
		}
		if out := e.must("inspect", "--format", "{{.Path}} {{.Args}} {{.Config.Cmd}}", "ep"); out != "/bin/sleep [100] [100]\n" {
			t.Errorf("inspect, %s: %q", when, out)
		}
		// The settings it ran with, after it has gone too.
		if out := e.must("inspect", "--format", "{{.Config.Env}} {{.Resources.Memory}}", "ep"); !strings.Contains(out, "MARK=kept") || !strings.HasSuffix(out, " 67108864\n") {
			t.Errorf("inspect, %s: %q", when, out)
		}
	}
	check("running")
	e.must("stop", "-t", "0", "ep")
	check("exited")
}
