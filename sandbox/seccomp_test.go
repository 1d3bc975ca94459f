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

// staticProgram returns a function that builds the C program src
// statically, once, into testEnv.dir/name/name, a directory a sandbox can
// bind, and returns that directory.
func staticProgram(name, src string) func() (string, error) {
	return sync.OnceValues(func() (string, error) {
		dir := filepath.Join(testEnv.dir, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return "", err
		}
		out, err := exec.Command("gcc", "-static", "-O2", "-o", filepath.Join(dir, name), src).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("build %s: %v: %s", src, err, out)
		}
		return dir, nil
	})
}

// probe builds security/testdata/probe.c: it makes system calls with
// harmless arguments and prints what each returned.
var probe = staticProgram("probe", "../security/testdata/probe.c")

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
// ones that must still work. Most of them the dropped capabilities refuse
// as well: refusedByFilterOnly are those that prove the filter.
var refusedByDefault = []string{"mount", "unshare", "keyctl", "add_key", "bpf", "perf_event_open", "open_by_handle_at",
	"kexec_load", "init_module", "reboot", "swapon", "settimeofday", "setns", "umount2", "pivot_root", "acct"}

// Calls that Default's capabilities allow and its seccomp filter alone
// refuses: unshare without flags or of a user namespace, a child in a new
// user namespace, the keyrings, setns, perf events, a user-mode-only
// userfaultfd, io_uring, and a personality that turns off address space
// randomization. TestSeccompDefault checks each is allowed, or fails for
// another reason than EPERM, with the filter taken away.
//
// unshare of a user namespace comes last: once it is let through, the
// probe is in that namespace for the calls after it.
var refusedByDefaultFilter = []string{"unshare=0", "clone-newuser", "keyctl", "add_key", "request_key", "setns",
	"perf_event_open", "userfaultfd=1", "io_uring_setup", "personality=0x40000", "unshare=0x10000000"}

// Calls that Strict's empty capability set and user namespace allow and
// its filter alone refuses: tracing (of no process, so ESRCH without the
// filter), a nested user namespace, and the above.
var refusedByStrictFilter = []string{"ptrace", "process_vm_readv", "clone-newuser", "unshare=0", "userfaultfd=1",
	"personality=0x40000", "keyctl", "modify_ldt", "io_uring_setup"}

// filterRefuses checks that sec's seccomp filter, and not its
// capabilities, refuses each call with EPERM: the same calls are run again
// with the filter taken away, and must then not fail with EPERM.
func filterRefuses(t *testing.T, sec *security.Config, calls []string) {
	t.Helper()
	got := runProbe(t, sec, calls...)
	unfiltered := *sec
	// Without the filter: nothing else may change.
	unfiltered.Seccomp = nil
	control := runProbe(t, &unfiltered, calls...)
	for _, c := range calls {
		if got[c] != "EPERM" {
			t.Errorf("%s: %s, want EPERM", c, got[c])
		}
		if control[c] == "EPERM" || control[c] == "" {
			t.Errorf("%s: %q without the filter: it does not test the filter", c, control[c])
		}
	}
}

func TestSeccompDefault(t *testing.T) {
	filterRefuses(t, security.Default(), refusedByDefaultFilter)
	got := runProbe(t, nil, append(append([]string(nil), refusedByDefault...), "ptrace=1", "getpid", "open", "mkdir", "socket-inet")...)
	for _, c := range refusedByDefault {
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
	filterRefuses(t, security.Strict(), refusedByStrictFilter)
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
