package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/security"
)

// probe builds security/testdata/probe.c statically, once, into a
// directory a sandbox can bind: it makes system calls with harmless
// arguments and prints what each returned.
var probe = sync.OnceValues(func() (string, error) {
	dir := filepath.Join(testEnv.dir, "probe")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	out, err := exec.Command("gcc", "-static", "-O2", "-o", filepath.Join(dir, "probe"), "../security/testdata/probe.c").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build the probe: %v: %s", err, out)
	}
	return dir, nil
})

func runProbe(t *testing.T, sec *security.Config, calls ...string) map[string]string {
	t.Helper()
	dir, err := probe()
	if err != nil {
		t.Fatal(err)
	}
	_, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
		o.Security = sec
		o.Mounts = []Mount{{Source: dir, Destination: "/probe", ReadOnly: true}}
		o.Args = append([]string{"/probe/probe"}, calls...)
	}))
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if name, result, ok := strings.Cut(l, " "); ok {
			got[name] = result
		}
	}
	if len(got) != len(calls) {
		t.Fatalf("probe printed %q (stderr %q)", out, errOut)
	}
	return got
}

// The calls issue 4 lists as refused under Default, and a few ordinary
// ones that must still work.
var refusedByDefault = []string{"mount", "unshare", "keyctl", "add_key", "bpf", "perf_event_open", "open_by_handle_at",
	"kexec_load", "init_module", "reboot", "swapon", "settimeofday", "setns", "umount2", "pivot_root", "acct"}

func TestSeccompDefault(t *testing.T) {
	got := runProbe(t, nil, append(append([]string(nil), refusedByDefault...), "ptrace=1", "getpid", "open", "mkdir", "socket-inet")...)
	for _, c := range refusedByDefault {
		// The kernel here lacks kexec and modules, so with no filter those
		// would say ENOSYS; the filter answers first.
		if got[c] != "EPERM" {
			t.Errorf("%s: %s, want EPERM", c, got[c])
		}
	}
	// A host pid is not in the sandbox's PID namespace at all.
	if got["ptrace=1"] == "OK" {
		t.Errorf("ptrace of pid 1 outside: %s", got["ptrace=1"])
	}
	for _, c := range []string{"getpid", "open", "mkdir", "socket-inet"} {
		if got[c] != "OK" {
			t.Errorf("%s: %s, want OK", c, got[c])
		}
	}
	res, out, _ := run(t, "alpine:test", opts(sh("grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")))
	if !res.Success() || out != "NoNewPrivs:\t1\nSeccomp:\t2\n" {
		t.Errorf("status: %q", out)
	}
}

func TestSeccompCustomProfile(t *testing.T) {
	p, err := security.ParseSeccompProfile([]byte(`{
		"defaultAction": "SCMP_ACT_ALLOW",
		"syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
	}`))
	if err != nil {
		t.Fatal(err)
	}
	sec := security.Default()
	sec.Seccomp = p
	got := runProbe(t, sec, "mkdir", "getpid")
	if got["mkdir"] != "EACCES" || got["getpid"] != "OK" {
		t.Errorf("custom profile: %v", got)
	}
	_, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
		o.Security = sec
		o.Args = []string{"mkdir", "/tmp/d"}
	}))
	if !strings.Contains(errOut, "Permission denied") {
		t.Errorf("mkdir under the profile: %q %q", out, errOut)
	}
}

func TestSeccompStrict(t *testing.T) {
	got := runProbe(t, security.Strict(), "ptrace=1", "socket-packet", "clone-newuser", "userfaultfd", "getpid", "socket-inet")
	for _, c := range []string{"ptrace=1", "socket-packet", "clone-newuser", "userfaultfd"} {
		if got[c] == "OK" {
			t.Errorf("%s allowed under Strict", c)
		}
	}
	if got["getpid"] != "OK" || got["socket-inet"] != "OK" {
		t.Errorf("ordinary calls under Strict: %v", got)
	}
}
