package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/registrytest"
	"github.com/berth-dev/berth/layerfs"
)

// The shared busybox OCI layout and the name its index gives the image.
const (
	busyboxLayout = "../../../shared/images/busybox-1.38-musl-oci"
	busyboxTag    = "busybox:1.38.0-musl"
)

// shipEnv is a registry of the test's, with Docker's configuration in a
// directory of the test's so that the host's is never read or written.
type shipEnv struct {
	*cliEnv
	reg       *registrytest.Registry
	dockerCfg string
}

func newShipEnv(t *testing.T, opts *registrytest.Options) *shipEnv {
	t.Helper()
	e := &shipEnv{cliEnv: newCLIEnv(t), dockerCfg: t.TempDir()}
	t.Setenv("DOCKER_CONFIG", e.dockerCfg)
	e.reg = registrytest.Start(t, opts)
	return e
}

// ref is an image reference in the test's registry.
func (e *shipEnv) ref(repo string) string { return e.reg.Host + "/" + repo }

// copyBusybox puts the shared busybox layout into the registry as repo
// and returns the digest of the manifest the registry holds.
func (e *shipEnv) copyBusybox(t *testing.T, repo string) string {
	t.Helper()
	layout, _ := filepath.Abs(busyboxLayout)
	return e.reg.Copy(t, layout, busyboxTag, repo)
}

// berthIn runs the command line in-process as main does, with stdin as
// its standard input.
func berthIn(t *testing.T, root, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = execute(context.Background(), append([]string{"--root", root}, args...), strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), code
}

// escapeCode matches what a terminal takes as a control sequence.
var escapeCode = regexp.MustCompile("\x1b|\r")

// An image goes in from a registry, runs, and goes out to another
// repository with the same digest; what berth prints off a terminal is
// plain lines.
func TestPullRunPush(t *testing.T) {
	e := newShipEnv(t, nil)
	want := e.copyBusybox(t, "src/busybox:1")
	src := e.ref("src/busybox:1")

	stdout, stderr, code := berthExit(t, e.root, e.args("image", "pull", src)...)
	if code != 0 || stdout != want+" ("+src+")\n" {
		t.Fatalf("berth image pull %s: exit %d, stdout %q, stderr %q; want %s (%s)", src, code, stdout, stderr, want, src)
	}
	// No terminal: a line for each blob once it is in, no escape codes.
	if escapeCode.MatchString(stderr) || !strings.Contains(stderr, "5c3b447848a9: Pull complete") {
		t.Errorf("pull's progress off a terminal:\n%q\nwant plain lines, the layer's among them", stderr)
	}

	stdout, stderr, code = berthExit(t, e.root, e.args("run", src, "echo", "hello from the registry")...)
	if code != 0 || stdout != "hello from the registry\n" {
		t.Errorf("berth run %s: exit %d, %q %q", src, code, stdout, stderr)
	}

	dest := e.ref("dst/busybox:2")
	stdout, stderr, code = berthExit(t, e.root, e.args("push", src, dest)...)
	if code != 0 || stdout != want+" ("+dest+")\n" || escapeCode.MatchString(stderr) {
		t.Errorf("berth push %s %s: exit %d, stdout %q, stderr %q; want %s (%s)", src, dest, code, stdout, stderr, want, dest)
	}
	var inspect struct{ Digest string }
	if err := json.Unmarshal([]byte(registrytest.Skopeo(t, "inspect", "--tls-verify=false", "docker://"+dest)), &inspect); err != nil || inspect.Digest != want {
		t.Errorf("skopeo inspect %s: digest %q (%v), want %s", dest, inspect.Digest, err, want)
	}

	// A layer the store has is not fetched again, and the line says so.
	stdout, stderr, code = berthExit(t, e.root, "pull", dest)
	if code != 0 || stdout != want+" ("+dest+")\n" || !strings.Contains(stderr, "5c3b447848a9: Already exists") {
		t.Errorf("berth pull %s of a layer the store has: exit %d, stdout %q, stderr %q; want it Already exists", dest, code, stdout, stderr)
	}

	// -q: the digest alone, and no progress at all.
	for _, args := range [][]string{{"pull", "-q", dest}, {"image", "push", "-q", src, e.ref("dst/busybox:3")}} {
		stdout, stderr, code = berthExit(t, e.root, e.args(args...)...)
		if code != 0 || stdout != want+"\n" || stderr != "" {
			t.Errorf("berth %s: exit %d, stdout %q, stderr %q; want only %s", strings.Join(args, " "), code, stdout, stderr, want)
		}
	}
}

func TestPullErrors(t *testing.T) {
	e := newShipEnv(t, nil)
	e.copyBusybox(t, "x/busybox:1")
	missing := e.ref("x/busybox:nope")
	_, stderr, code := berthExit(t, e.root, e.args("image", "pull", missing)...)
	if code != exitFailure || !strings.Contains(stderr, missing) || !strings.Contains(stderr, "not found") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("pull of a missing tag: exit %d, %q; want %d and one line naming %s, not found", code, stderr, exitFailure, missing)
	}
	if stdout, _, _ := berthExit(t, e.root, "image", "ls"); strings.Count(stdout, "\n") != 2 {
		t.Errorf("after a failed pull the store holds:\n%s", stdout)
	}

	// The store's import limits bound a pull, and its flags lift them.
	_, stderr, code = berthExit(t, e.root, "pull", "--max-size", "256k", e.ref("x/busybox:1"))
	if code != exitFailure || !strings.Contains(stderr, "--max-size") {
		t.Errorf("pull of busybox (1.9 MiB unpacked) with --max-size 256k: exit %d, %q; want %d naming --max-size", code, stderr, exitFailure)
	}
	if _, err := berth(t, e.root, "image", "inspect", e.ref("x/busybox:1")); err == nil {
		t.Error("a pull past --max-size left the image in the store")
	}
	_, stderr, code = berthExit(t, e.root, "pull", "--max-files", "0", e.ref("x/busybox:1"))
	if code != exitSetup || !strings.Contains(stderr, "--max-files") {
		t.Errorf("pull --max-files 0: exit %d, %q; want %d naming --max-files", code, stderr, exitSetup)
	}

	for _, p := range []string{"linux", "linux/", "/amd64", "Linux/AMD64", "linux/arm/v7/x", "linux/amd64:10"} {
		_, stderr, code := berthExit(t, e.root, "pull", "--platform", p, e.ref("x/busybox:1"))
		if code != exitSetup || !strings.Contains(stderr, "--platform") {
			t.Errorf("pull --platform %q: exit %d, %q; want %d naming --platform", p, code, stderr, exitSetup)
		}
	}
	stdout, stderr, code := berthExit(t, e.root, "pull", "-q", "--platform", "linux/amd64", e.ref("x/busybox:1"))
	if code != 0 || !strings.HasPrefix(stdout, "sha256:") {
		t.Errorf("pull --platform linux/amd64: exit %d, %q %q", code, stdout, stderr)
	}
}

// run pulls only when told to, and a missing image says how to get it.
func TestRunPull(t *testing.T) {
	e := newShipEnv(t, nil)
	want := e.copyBusybox(t, "x/busybox:1")
	ref := e.ref("x/busybox:1")

	_, stderr, code := berthExit(t, e.root, e.args("run", ref, "true")...)
	if code != exitSetup || !strings.Contains(stderr, "berth pull "+ref) || !strings.Contains(stderr, "image "+strconv.Quote(ref)+" not found") {
		t.Errorf("run of an image the store lacks: exit %d, %q; want %d naming it and saying berth pull %s", code, stderr, exitSetup, ref)
	}
	_, stderr, code = berthExit(t, e.root, e.args("run", "--pull", "sometimes", ref, "true")...)
	if code != exitSetup || !strings.Contains(stderr, "--pull") {
		t.Errorf("run --pull sometimes: exit %d, %q; want %d naming --pull", code, stderr, exitSetup)
	}
	stdout, stderr, code := berthExit(t, e.root, e.args("run", "--pull", "missing", ref, "echo", "pulled")...)
	if code != 0 || stdout != "pulled\n" || stderr != "" {
		t.Errorf("run --pull missing: exit %d, %q %q; want the workload's output alone", code, stdout, stderr)
	}
	if out, err := berth(t, e.root, "image", "inspect", ref); err != nil || !strings.Contains(out, want) {
		t.Errorf("after run --pull missing, the store has %s as: %v\n%s", ref, err, out)
	}
	// always: pulls what the tag names now.
	if _, err := berth(t, e.root, "image", "rm", ref); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code = berthExit(t, e.root, e.args("run", "--pull", "always", ref, "echo", "again")...)
	if code != 0 || stdout != "again\n" {
		t.Errorf("run --pull always: exit %d, %q %q", code, stdout, stderr)
	}
	// A pull that fails names the reference, and nothing runs.
	missing := e.ref("x/busybox:nope")
	stdout, stderr, code = berthExit(t, e.root, e.args("run", "--pull", "missing", missing, "echo", "ran")...)
	if code != exitSetup || stdout != "" || !strings.Contains(stderr, missing) {
		t.Errorf("run --pull missing %s: exit %d, %q %q; want %d naming it", missing, code, stdout, stderr, exitSetup)
	}
}

// dockerAuths reads the registries config.json in dir keeps credentials
// for, failing t if the file is there but not private.
func dockerAuths(t *testing.T, dir string) map[string]json.RawMessage {
	t.Helper()
	p := filepath.Join(dir, "config.json")
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600: it holds passwords", p, fi.Mode().Perm())
	}
	var cfg struct{ Auths map[string]json.RawMessage }
	b, err := os.ReadFile(p)
	if err != nil || json.Unmarshal(b, &cfg) != nil {
		t.Fatalf("%s: %v\n%s", p, err, b)
	}
	return cfg.Auths
}

func TestLoginLogout(t *testing.T) {
	const user, password = "ci", "s3cret-Pa55"
	e := newShipEnv(t, &registrytest.Options{Htpasswd: registrytest.HtpasswdEntry(t, user, password)})
	layout, _ := filepath.Abs(busyboxLayout)
	if _, err := berth(t, e.root, "image", "import", layout); err != nil {
		t.Fatal(err)
	}
	host := e.reg.Host
	push := func(tag string) (string, int) {
		_, stderr, code := berthExit(t, e.root, "push", "-q", busyboxTag, e.ref("auth/busybox:"+tag))
		return stderr, code
	}
	if stderr, code := push("1"); code != exitFailure || !strings.Contains(stderr, "unauthorized") {
		t.Errorf("push before login: exit %d, %q; want %d, unauthorized", code, stderr, exitFailure)
	}

	for _, c := range []struct {
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"wrong\n", []string{"-u", user, "--password-stdin"}, exitFailure, "unauthorized"},
		{"", []string{"-u", user, "-p", password}, exitSetup, "-p/--password: refused"},
		{password, []string{"--password-stdin"}, exitSetup, "--username"},
		{password, []string{"-u", user}, exitSetup, "--password-stdin"},
		{"\n", []string{"-u", user, "--password-stdin"}, exitSetup, "no password"},
	} {
		_, stderr, code := berthIn(t, e.root, c.stdin, append(append([]string{"login"}, c.args...), host)...)
		if code != c.code || !strings.Contains(stderr, c.want) || strings.Contains(stderr, password) {
			t.Errorf("login %s: exit %d, %q; want %d saying %s, without the password", strings.Join(c.args, " "), code, stderr, c.code, c.want)
		}
		if auths := dockerAuths(t, e.dockerCfg); len(auths) != 0 {
			t.Errorf("login %s, which failed, kept credentials: %v", strings.Join(c.args, " "), auths)
		}
	}

	stdout, stderr, code := berthIn(t, e.root, password+"\n", "login", "-u", user, "--password-stdin", host)
	if code != 0 || stdout != "logged in to "+host+"\n" {
		t.Fatalf("login: exit %d, %q %q", code, stdout, stderr)
	}
	if auths := dockerAuths(t, e.dockerCfg); auths[host] == nil {
		t.Errorf("after login, config.json keeps credentials for %v, not %s", auths, host)
	}
	if stderr, code := push("1"); code != 0 {
		t.Errorf("push after login: exit %d, %q", code, stderr)
	}

	for range 2 {
		stdout, stderr, code = berthExit(t, e.root, "logout", host)
		if code != 0 {
			t.Errorf("logout: exit %d, %q %q", code, stdout, stderr)
		}
	}
	if stdout != "not logged in to "+host+"\n" {
		t.Errorf("the second logout says %q", stdout)
	}
	if auths := dockerAuths(t, e.dockerCfg); auths[host] != nil {
		t.Errorf("after logout, config.json still keeps credentials for %s", host)
	}
	if stderr, code := push("2"); code != exitFailure || !strings.Contains(stderr, "unauthorized") {
		t.Errorf("push after logout: exit %d, %q; want %d, unauthorized", code, stderr, exitFailure)
	}
}

func TestPulledName(t *testing.T) {
	img := &layerfs.Image{Names: []string{"busybox:latest", "127.0.0.1:5000/x/busybox:1", "team/app:2"}}
	for ref, want := range map[string]string{
		"busybox":                                   "busybox:latest",
		"docker.io/library/busybox:latest":          "busybox:latest",
		"127.0.0.1:5000/x/busybox:1":                "127.0.0.1:5000/x/busybox:1",
		"docker.io/team/app:2":                      "team/app:2",
		"busybox@sha256:" + strings.Repeat("a", 64): "busybox:latest, 127.0.0.1:5000/x/busybox:1, team/app:2",
	} {
		if got := pulledName(ref, img); got != want {
			t.Errorf("pulledName(%q) = %q, want %q", ref, got, want)
		}
	}
	if got := pulledName("busybox@sha256:"+strings.Repeat("a", 64), &layerfs.Image{}); got != "untagged" {
		t.Errorf("pulledName of an image with no name = %q", got)
	}
}
