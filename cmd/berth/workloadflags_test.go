package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/sandbox"
)

// --env-file and --label-file read Docker's format, and refuse what is not
// in it with the file and line.
func TestReadKeyValueFile(t *testing.T) {
	dir := t.TempDir()
	for i, c := range []struct {
		name, content string
		want          []keyValue
		err           string
	}{
		{"format", "# a comment\n\nA=1\n  B=spaced value \nC\nD=\nE=a=b\r\n\t# indented comment\nF=\"quoted\"\n",
			[]keyValue{{"A", "1", true}, {"B", "spaced value ", true}, {"C", "", false}, {"D", "", true}, {"E", "a=b", true}, {"F", `"quoted"`, true}}, ""},
		{"space before =", "A=1\nB =1\n", nil, `line 2: name "B " has white space`},
		{"no name", "A=1\n=value\n", nil, "line 2: no name before the ="},
		{"space in a name", "A B=1\n", nil, `line 1: name "A B" has white space`},
		{"NUL", "A=1\nB=x\x00y\n", nil, "line 2: a NUL byte"},
		{"not UTF-8", "A=1\n\nB=\xff\n", nil, "line 3: not UTF-8 text"},
		{"control character in a name", "A\x1bB=1\n", nil, "line 1: name"},
		{"too large", strings.Repeat("A=1234567\n", maxKeyValueFile/10+1), nil, "larger than 1024 KiB"},
	} {
		t.Run(c.name, func(t *testing.T) {
			name := filepath.Join(dir, "f"+strconv.Itoa(i))
			if err := os.WriteFile(name, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readKeyValueFile("--env-file", name)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), name) {
					t.Errorf("%v; want an error naming %s and saying %q", err, name, c.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Errorf("%+v, %v; want %+v", got, err, c.want)
			}
		})
	}
	if _, err := readKeyValueFile("--env-file", filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
	// /dev/zero is read no further than the bound.
	if _, err := readKeyValueFile("--env-file", "/dev/zero"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("/dev/zero: %v", err)
	}
}

// entrypointImage adds to e's store alpine:test with an entrypoint and a
// cmd of its own, `echo ep` and `echo cmd`.
func (e *cliEnv) entrypointImage(t *testing.T) string {
	t.Helper()
	s, err := layerfs.Open(e.root, nil)
	if err != nil {
		t.Fatal(err)
	}
	base, err := s.Image(context.Background(), "alpine:test")
	if err != nil {
		t.Fatal(err)
	}
	cfg := base.Config.Config.DeepCopy()
	cfg.Entrypoint, cfg.Cmd = []string{"echo", "ep"}, []string{"echo", "cmd"}
	if _, err := s.CommitConfig(context.Background(), base, &layerfs.CommitOptions{Name: "alpine:ep", Config: cfg}); err != nil {
		t.Fatal(err)
	}
	return "alpine:ep"
}

// berth run IMAGE ARGS keeps the image's entrypoint, as docker run does;
// --entrypoint replaces it, and --entrypoint "" clears it.
func TestRunEntrypoint(t *testing.T) {
	e := newCLIEnv(t)
	img := e.entrypointImage(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{img}, "ep echo cmd\n"},
		{[]string{img, "a", "b"}, "ep a b\n"},
		{[]string{"--entrypoint", "echo", img}, "\n"},
		{[]string{"--entrypoint", "echo", img, "x"}, "x\n"},
		{[]string{"--entrypoint", "", img}, "cmd\n"},
		{[]string{"--entrypoint", "", img, "echo", "y"}, "y\n"},
		{[]string{"--entrypoint", "/bin/echo", "alpine:test", "z"}, "z\n"},
	} {
		stdout, stderr, code := berthExit(t, e.root, e.args(append([]string{"run"}, c.args...)...)...)
		if code != 0 || stdout != c.want {
			t.Errorf("berth run %q: exit %d, %q %q; want %q", c.args, code, stdout, stderr, c.want)
		}
	}
}

// --env-file's variables come first, -e's win over them, and KEY alone
// takes the host's value; a bad line is a usage error naming it.
func TestRunEnvFile(t *testing.T) {
	e := newCLIEnv(t)
	t.Setenv("BERTH_TEST_FROM_HOST", "host value")
	dir := t.TempDir()
	f1, f2, bad := filepath.Join(dir, "one.env"), filepath.Join(dir, "two.env"), filepath.Join(dir, "bad.env")
	os.WriteFile(f1, []byte("# settings\nA=from file\nB=file b\nBERTH_TEST_FROM_HOST\nBERTH_TEST_UNSET_ANYWHERE\nS=$HOME 'q'\n"), 0o600)
	os.WriteFile(f2, []byte("B=second file\r\n"), 0o600)
	os.WriteFile(bad, []byte("A=1\n# fine\nnot a name=1\n"), 0o600)
	stdout, stderr, code := berthExit(t, e.root, e.args("run", "--env-file", f1, "--env-file", f2, "-e", "A=from -e", "alpine:test",
		"sh", "-c", `echo "$A|$B|$BERTH_TEST_FROM_HOST|${BERTH_TEST_UNSET_ANYWHERE-unset}|$S"`)...)
	if want := "from -e|second file|host value|unset|$HOME 'q'\n"; code != 0 || stdout != want {
		t.Errorf("run --env-file: exit %d, %q %q; want %q", code, stdout, stderr, want)
	}
	stdout, stderr, code = berthExit(t, e.root, e.args("run", "--env-file", bad, "alpine:test", "true")...)
	if code != exitSetup || stdout != "" || !strings.Contains(stderr, bad+`", line 3: name "not a name"`) {
		t.Errorf("run with a bad --env-file: exit %d, %q %q; want 125 naming line 3", code, stdout, stderr)
	}
}

// -l and --label-file label the sandbox, as its record says; a label
// that could pass for two lines of a listing is refused before anything
// runs.
func TestRunLabels(t *testing.T) {
	e := newCLIEnv(t)
	dir := t.TempDir()
	lf := filepath.Join(dir, "labels")
	os.WriteFile(lf, []byte("# team labels\nteam=core\ntier=low\nempty\n"), 0o600)
	done := make(chan int, 1)
	go func() {
		_, _, code := berthExit(t, e.root, e.args("run", "--label-file", lf, "-l", "tier=high", "--label", "flag", "alpine:test", "sleep", "1000")...)
		done <- code
	}()
	var st sandbox.State
	for deadline := time.Now().Add(time.Minute); ; {
		states, _ := sandbox.ReadStates(e.state)
		if len(states) == 1 && !states[0].Pending {
			st = states[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sandbox never showed up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, stderr, code := berthExit(t, e.root, e.args("kill", st.ID)...); code != 0 {
		t.Errorf("kill: %s", stderr)
	}
	<-done
	want := map[string]string{"team": "core", "tier": "high", "empty": "", "flag": ""}
	if len(st.Labels) != len(want) {
		t.Errorf("labels %q; want %q", st.Labels, want)
	}
	for k, v := range want {
		if got, ok := st.Labels[k]; !ok || got != v {
			t.Errorf("labels %q; want %q", st.Labels, want)
			break
		}
	}

	for _, args := range [][]string{
		{"-l", "=x"},
		{"-l", "a\nb=c"},
		{"-l", "a=line\nfake=entry"},
	} {
		stdout, stderr, code := berthExit(t, e.root, e.args(append(append([]string{"run"}, args...), "alpine:test", "true")...)...)
		if code != exitSetup || stdout != "" || !regexp.MustCompile(`label|Labels`).MatchString(stderr) {
			t.Errorf("run %q: exit %d, %q %q; want 125 naming the label", args, code, stdout, stderr)
		}
	}
}

// --stop-timeout gives a workload whose --timeout ran out SIGTERM first:
// its trap runs; berth exits 124 all the same, and says it timed out.
func TestRunStopTimeout(t *testing.T) {
	e := newCLIEnv(t)
	trap := []string{"alpine:test", "sh", "-c", "trap 'echo bye; exit 0' TERM; sleep 1000 & wait"}
	stdout, stderr, code := berthExit(t, e.root, e.args(append([]string{"run", "--timeout", "2s", "--stop-timeout", "300"}, trap...)...)...)
	if code != exitTimedOut || stdout != "bye\n" || !strings.Contains(stderr, "timed out") {
		t.Errorf("run --stop-timeout: exit %d, %q %q; want 124, the trap's bye, and timed out", code, stdout, stderr)
	}
	stdout, stderr, code = berthExit(t, e.root, e.args(append([]string{"run", "--timeout", "2s"}, trap...)...)...)
	if code != exitTimedOut || stdout != "" {
		t.Errorf("run --timeout without --stop-timeout: exit %d, %q %q; want 124, killed before any bye", code, stdout, stderr)
	}
	if _, stderr, code := berthExit(t, e.root, e.args("run", "--stop-timeout", "-1", "alpine:test", "true")...); code != exitSetup || !strings.Contains(stderr, "--stop-timeout") {
		t.Errorf("run --stop-timeout -1: exit %d, %q; want 125", code, stderr)
	}
}

// exec takes --env-file as run does: the file's variables first, -e's
// winning over them; a bad line names it, and nothing runs.
func TestExecEnvFile(t *testing.T) {
	e := newDetachEnv(t)
	e.must("run", "-d", "--name", "envs", "busybox:demo", "sleep", "100")
	t.Cleanup(func() { e.berth("rm", "-f", "envs") })
	dir := t.TempDir()
	f, bad := filepath.Join(dir, "exec.env"), filepath.Join(dir, "bad.env")
	os.WriteFile(f, []byte("A=from file\nB=file b\n"), 0o600)
	os.WriteFile(bad, []byte("A=1\nnot a name=1\n"), 0o600)
	if got := e.must("exec", "--env-file", f, "-e", "A=from -e", "envs", "sh", "-c", `echo "$A|$B"`); got != "from -e|file b\n" {
		t.Errorf("exec --env-file: %q", got)
	}
	stdout, stderr, code := e.berth("exec", "--env-file", bad, "envs", "sh", "-c", "echo ran")
	if code == 0 || stdout != "" || !strings.Contains(stderr, bad+`", line 2: name "not a name"`) {
		t.Errorf("exec with a bad --env-file: exit %d, %q %q; want a refusal naming line 2", code, stdout, stderr)
	}
}

// A grace in seconds that a time.Duration cannot hold is refused, for
// stop -t and restart -t as for --stop-timeout, never wrapped round.
func TestGraceSeconds(t *testing.T) {
	for _, c := range []struct {
		seconds int
		ok      bool
	}{{0, true}, {10, true}, {9223372036, true}, {9223372037, false}, {-1, false}, {1 << 62, false}} {
		got, err := graceSeconds("-t", c.seconds)
		if (err == nil) != c.ok || c.ok && got != time.Duration(c.seconds)*time.Second || c.ok && got < 0 {
			t.Errorf("graceSeconds(%d) = %v, %v", c.seconds, got, err)
		}
	}
}
