package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/build"
	"github.com/berth-dev/berth/internal/registrytest"
)

// e2eEnv runs the berth binary as a user does, against stores, a state
// directory and a cgroup parent of the test's, with a Docker
// configuration of its own (no credentials).
type e2eEnv struct {
	t     *testing.T
	bin   string
	flags []string // --state and --cgroup-parent
	env   []string
}

// run runs berth with --root root and args, and returns its standard
// output and standard error apart.
func (e *e2eEnv) run(root string, args ...string) (stdout, stderr string, err error) {
	e.t.Helper()
	cmd := exec.Command(e.bin, append(append([]string{"--root", root}, e.flags...), args...)...)
	cmd.Env = e.env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// must is run, failing the test if berth fails.
func (e *e2eEnv) must(root string, args ...string) string {
	e.t.Helper()
	out, errOut, err := e.run(root, args...)
	if err != nil {
		e.t.Fatalf("berth %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// digest is the digest `berth image inspect` gives ref in root.
func (e *e2eEnv) digest(root, ref string) string {
	e.t.Helper()
	var v struct{ Digest string }
	if err := json.Unmarshal([]byte(e.must(root, "image", "inspect", ref)), &v); err != nil || v.Digest == "" {
		e.t.Fatalf("image inspect %s: %v", ref, err)
	}
	return v.Digest
}

// The Dockerfile of the end-to-end test: every kind of step a small
// image needs, over the shared Alpine image, nothing fetched. greet.sh is
// copied and run before data.txt is copied, so that changing data.txt
// leaves the steps before it, that RUN included, in the cache.
const e2eDockerfile = `FROM alpine:test
ARG GREETING=hello
ENV APP_HOME=/app
WORKDIR /app
COPY greet.sh ./
RUN sh ./greet.sh "$GREETING" | tee built.txt
COPY data.txt ./
RUN cat data.txt >> built.txt && echo data step ran
CMD ["sh", "-c", "cat /app/built.txt; sh /app/greet.sh runtime"]
`

const e2eGreet = `#!/bin/sh
echo "greeting=${1-} home=$APP_HOME pwd=$(pwd)"
`

// e2eSteps is the number of steps of e2eDockerfile; a rebuild finds all
// but FROM and ARG, which make no image of their own, in the cache.
const e2eSteps = 9

var stepLine = regexp.MustCompile(`(?m)^Step (\d+)/(\d+) : (\S+)`)

// ranGreet and ranData match the output of the first and the second RUN
// step: whole lines, not the step's own "Step 8/9 : RUN ..." line.
var (
	ranGreet = regexp.MustCompile(`(?m)^greeting=`)
	ranData  = regexp.MustCompile(`(?m)^data step ran$`)
)

// usingCache counts the steps a build's output says came from the cache.
func usingCache(out string) int { return strings.Count(out, "---> Using cache") }

// Build, run, rebuild from the cache, change a file, push, pull into an
// empty store, run again: issue 13 end to end through the berth command,
// with the reference registry on 127.0.0.1.
func TestBuildShipRunEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("must run as root: it runs sandboxes")
	}
	reg := registrytest.Start(t, nil)
	e := &e2eEnv{t: t, bin: buildBerth(t)}
	root, pulled := t.TempDir(), t.TempDir()
	e.flags = []string{"--state", filepath.Join(root, "state"), "--cgroup-parent", fmt.Sprintf("berth-clitest-%d", os.Getpid())}
	e.env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir())
	for _, r := range []string{root, pulled} {
		t.Cleanup(func() {
			if out, errOut, err := e.run(r, "gc"); err != nil {
				t.Errorf("gc: %v\n%s%s", err, out, errOut)
			}
		})
	}
	alpine, _ := filepath.Abs("../../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz")
	e.must(root, "image", "import", alpine, "--name", "alpine:test")

	ctxDir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(ctxDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Dockerfile", e2eDockerfile)
	write("greet.sh", e2eGreet)
	write("data.txt", "data v1\n")

	// The first build runs every step and streams the RUN steps' output.
	out := e.must(root, "build", "-t", "e2e:1", "--build-arg", "GREETING=bonjour", ctxDir)
	steps := stepLine.FindAllStringSubmatch(out, -1)
	if len(steps) != e2eSteps || steps[0][1] != "1" || steps[0][2] != fmt.Sprint(e2eSteps) || steps[0][3] != "FROM" || steps[5][3] != "RUN" {
		t.Errorf("build: want %d steps, FROM first and RUN sixth; got %q in:\n%s", e2eSteps, steps, out)
	}
	for _, want := range []string{"greeting=bonjour home=/app pwd=/app\n", "Successfully tagged e2e:1\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("build output lacks %q:\n%s", want, out)
		}
	}
	if !ranData.MatchString(out) {
		t.Errorf("build output lacks the second RUN's:\n%s", out)
	}
	if n := usingCache(out); n != 0 {
		t.Errorf("first build: %d steps from the cache, want none:\n%s", n, out)
	}
	built := e.digest(root, "e2e:1")
	if !strings.Contains(out, built) {
		t.Errorf("build output does not name the image's digest %s:\n%s", built, out)
	}

	// The image runs: its CMD, in its WORKDIR, with its ENV; the ARG's
	// value was the --build-arg's.
	const wantRun = "greeting=bonjour home=/app pwd=/app\ndata v1\ngreeting=runtime home=/app pwd=/app\n"
	if got := e.must(root, "run", "e2e:1"); got != wantRun {
		t.Errorf("run e2e:1: %q, want %q", got, wantRun)
	}

	// The same build again: every step from the cache, nothing run, the
	// same image.
	out = e.must(root, "build", "-t", "e2e:1", "--build-arg", "GREETING=bonjour", ctxDir)
	if n := usingCache(out); n != e2eSteps-2 || ranGreet.MatchString(out) || ranData.MatchString(out) {
		t.Errorf("rebuild: %d steps from the cache, want %d, and no step run:\n%s", n, e2eSteps-2, out)
	}
	if d := e.digest(root, "e2e:1"); d != built {
		t.Errorf("rebuild made %s, want %s", d, built)
	}

	// -q prints the digest alone.
	out = e.must(root, "build", "-q", "--build-arg", "GREETING=bonjour", ctxDir)
	if out != built+"\n" {
		t.Errorf("build -q: %q, want the digest %s alone", out, built)
	}

	// A changed file: the steps before its COPY come from the cache, that
	// COPY and every step after it run again.
	write("data.txt", "data v2\n")
	out = e.must(root, "build", "-t", "e2e:2", "--build-arg", "GREETING=bonjour", ctxDir)
	if n := usingCache(out); n != 4 || ranGreet.MatchString(out) || !ranData.MatchString(out) {
		t.Errorf("build after data.txt changed: %d steps from the cache, want 4 (ENV to the first RUN), and only the last RUN run:\n%s", n, out)
	}
	changed := e.digest(root, "e2e:2")
	if changed == built {
		t.Errorf("build after data.txt changed made the same image %s", built)
	}
	if got, want := e.must(root, "run", "e2e:2"), strings.ReplaceAll(wantRun, "v1", "v2"); got != want {
		t.Errorf("run e2e:2: %q, want %q", got, want)
	}

	// Ship: push to the registry, pull into an empty store, the same
	// digest, and it runs there.
	ref := reg.Host + "/e2e/greet:1"
	e.must(root, "image", "push", "e2e:2", ref)
	out = e.must(pulled, "image", "pull", ref)
	if got := e.digest(pulled, ref); got != changed {
		t.Errorf("pulled %s, pushed %s (pull said %q)", got, changed, out)
	}
	if got, want := e.must(pulled, "run", ref), strings.ReplaceAll(wantRun, "v1", "v2"); got != want {
		t.Errorf("run of the pulled image: %q, want %q", got, want)
	}
}

// A build whose RUN step fails stops there, exits 1 naming the step and
// its status, and tags nothing.
func TestBuildFailingStep(t *testing.T) {
	e := newCLIEnv(t)
	dir := t.TempDir()
	df := "FROM alpine:test\nRUN echo before\nRUN exit 3\nRUN echo after\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := berthExit(t, e.root, e.args("build", "-t", "fails:1", dir)...)
	if code != 1 || !strings.Contains(stderr, "Dockerfile:3") || !strings.Contains(stderr, "exit status 3") || !strings.Contains(stdout, "\nbefore\n") || strings.Contains(stdout, "\nafter\n") {
		t.Errorf("build with a failing RUN: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if _, err := berth(t, e.root, "image", "inspect", "fails:1"); err == nil {
		t.Error("a failed build tagged its image")
	}
	if out, _ := berth(t, e.root, e.args("ps")...); strings.Count(out, "\n") != 1 {
		t.Errorf("a failed build left sandboxes:\n%s", out)
	}
}

// Flags and arguments that make no sense are usage errors, exit 125,
// naming what is wrong, before any step runs.
func TestBuildRefusesNonsense(t *testing.T) {
	root := t.TempDir()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM alpine:test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "Dockerfile")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"build"}, "accepts 1 arg"},
		{[]string{"build", dir, dir}, "accepts 1 arg"},
		{[]string{"build", file}, "not a directory"},
		{[]string{"build", "-f", dir, dir}, "not a regular file"},
		{[]string{"build", "-t", "Bad:Name", dir}, "-t: invalid image reference"},
		{[]string{"build", "-t", "x@sha256:" + strings.Repeat("a", 64), dir}, "not by digest"},
		{[]string{"build", "--build-arg", "=v", dir}, "--build-arg"},
		{[]string{"build", "--build-arg", "A B=v", dir}, "--build-arg"},
		{[]string{"build", "--network", "host", dir}, "--network host"},
		{[]string{"build", "--network", "container:abc", dir}, "--network"},
		{[]string{"build", "--network", "no-such-net", dir}, "--network no-such-net"},
		{[]string{"build", "--bogus", dir}, "unknown flag"},
	} {
		stdout, stderr, code := berthExit(t, root, c.args...)
		if code != 125 || !strings.Contains(stderr, c.want) || strings.Count(stderr, "\n") != 1 || stdout != "" {
			t.Errorf("berth %s: exit %d, stdout %q, stderr %q; want 125 and one line naming %q", strings.Join(c.args, " "), code, stdout, stderr, c.want)
		}
	}
	// A missing context or Dockerfile is not a usage error but says what
	// is missing.
	for _, args := range [][]string{{"build", filepath.Join(dir, "nope")}, {"build", "-f", filepath.Join(dir, "nope"), dir}} {
		_, stderr, code := berthExit(t, root, args...)
		if code != 1 || !strings.Contains(stderr, "nope: no such file or directory") {
			t.Errorf("berth %s: exit %d, %q; want 1 naming the missing file", strings.Join(args, " "), code, stderr)
		}
	}
}

// --network none leaves the RUN steps without a network; a named one is
// the network run's --net of that name is.
func TestBuildNetworkFlag(t *testing.T) {
	g := &globals{}
	cmd := newBuildCommand(g)
	cmd.SetContext(context.Background())
	for _, c := range []struct {
		network string
		want    bool // a network is set
	}{{"none", false}, {"bridge", true}} {
		f := &buildFlags{network: c.network}
		opts := &build.Options{}
		if err := f.applyNetwork(g, cmd, opts); err != nil {
			t.Fatalf("--network %s: %v", c.network, err)
		}
		if got := opts.Network != nil; got != c.want {
			t.Errorf("--network %s: network set %v, want %v", c.network, got, c.want)
		}
	}
}

// A context's Dockerfile that is a link to a host file is read inside
// the context, where the link leads nowhere: berth build never shows, or
// builds from, the host file it names.
func TestBuildDockerfileLinkStaysInContext(t *testing.T) {
	e := newCLIEnv(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("FROM alpine:test\nRUN echo host-file-was-read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(secret, filepath.Join(dir, "Dockerfile")); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := berthExit(t, e.root, e.args("build", dir)...)
	if code == 0 || strings.Contains(stdout+stderr, "host-file-was-read") {
		t.Errorf("build of a context whose Dockerfile links to a host file: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}
