package security

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// buildProbe compiles testdata/probe.c, static, into a temporary
// directory.
func buildProbe(t *testing.T) string {
	t.Helper()
	src, err := filepath.Abs(filepath.Join("testdata", "probe.c"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "probe")
	out, err := exec.Command("gcc", "-static", "-O2", "-Wall", "-o", bin, src).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	if len(out) > 0 {
		t.Logf("gcc: %s", out)
	}
	return bin
}

// prober runs the probe with filters.
type prober struct {
	t   *testing.T
	bin string
	dir string
}

// run makes the probes' calls under prog (none if nil) and returns each
// probe's result.
func (p *prober) run(prog []byte, probes ...string) map[string]string {
	p.t.Helper()
	var args []string
	if prog != nil {
		f, err := os.CreateTemp(p.dir, "filter")
		if err != nil {
			p.t.Fatal(err)
		}
		if _, err := f.Write(prog); err != nil {
			p.t.Fatal(err)
		}
		f.Close()
		args = append(args, "-f", f.Name())
	}
	cmd := exec.Command(p.bin, append(args, probes...)...)
	cmd.Dir = p.dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		p.t.Fatalf("probe %v: %v\n%s%s", probes, err, out, stderr.Bytes())
	}
	results := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		name, result, _ := strings.Cut(sc.Text(), " ")
		results[name] = result
	}
	for _, name := range probes {
		if results[name] == "" {
			p.t.Fatalf("probe %s: no result in\n%s", name, out)
		}
	}
	return results
}

// exec runs a program under prog and returns its output.
func (p *prober) exec(prog []byte, argv ...string) string {
	p.t.Helper()
	path := filepath.Join(p.dir, "filter")
	if err := os.WriteFile(path, prog, 0o600); err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.bin, append([]string{"-f", path, "-e"}, argv...)...)
	cmd.Dir = p.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		p.t.Errorf("%v under the filter: %v\n%s", argv, err, out)
	}
	return string(out)
}

func (p *prober) compile(profile *SeccompProfile, caps uint64) []byte {
	p.t.Helper()
	prog, err := profile.Compile(caps)
	if err != nil {
		p.t.Fatal(err)
	}
	return prog
}

// expect checks that every probe gave want; a want of "" means what the
// probe gave with no filter.
func expect(t *testing.T, got, baseline map[string]string, want string, probes ...string) {
	t.Helper()
	for _, name := range probes {
		w := want
		if w == "" {
			w = baseline[name]
		}
		if got[name] != w {
			t.Errorf("%s: %s, want %s (%s with no filter)", name, got[name], w, baseline[name])
		}
	}
}

// TestSeccompEnforcement loads the compiled filters into a real process,
// the probe, and checks what the kernel makes of its calls.
func TestSeccompEnforcement(t *testing.T) {
	p := &prober{t: t, bin: buildProbe(t), dir: t.TempDir()}

	escapes := []string{
		"mount", "umount2", "unshare", "setns", "pivot_root", "keyctl", "add_key",
		"request_key", "bpf", "perf_event_open", "open_by_handle_at", "kexec_load",
		"kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
		"swapon", "swapoff", "settimeofday", "clock_settime", "acct", "sethostname", "syslog",
		"iopl", "ioperm", "userfaultfd", "io_uring_setup", "clone-newuts", "clone-newuser",
		"personality=0x40000", "socket-vsock",
		"nr=458", // listmount, which libseccomp 2.5 does not know
	}
	ordinary := []string{
		"getpid", "open", "mkdir", "socket-unix", "socket-inet", "socket-inet6",
		"socket-netlink", "clone", "personality", "personality=0",
	}
	allProbes := slices.Concat(escapes, ordinary, []string{
		"clone3", "fchmodat2", "chroot", "ptrace", "process_vm_readv", "modify_ldt",
		"socket-packet", "personality=8", "nr=999",
	})
	baseline := p.run(nil, allProbes...)
	if os.Geteuid() == 0 {
		for _, name := range escapes {
			if baseline[name] == "EPERM" {
				t.Logf("%s fails with EPERM even with no filter: its test proves less", name)
			}
		}
	}
	dockerCaps := capMask(t, dockerCapNames...)

	t.Run("default", func(t *testing.T) {
		got := p.run(p.compile(DefaultSeccompProfile(), dockerCaps), allProbes...)
		expect(t, got, baseline, "EPERM", escapes...)
		expect(t, got, baseline, "OK", ordinary...)
		expect(t, got, baseline, "ENOSYS", "clone3", "nr=999")
		// Allowed by Docker's profile to a process with Docker's capabilities.
		expect(t, got, baseline, "", "fchmodat2", "chroot", "ptrace", "process_vm_readv",
			"modify_ldt", "socket-packet", "personality=8")
	})

	t.Run("sys-admin", func(t *testing.T) {
		// The filter lets these through; whether they then succeed is
		// the kernel's business, as it is with no filter.
		got := p.run(p.compile(DefaultSeccompProfile(), dockerCaps|capMask(t, "CAP_SYS_ADMIN")), allProbes...)
		expect(t, got, baseline, "", "unshare", "mount", "umount2", "setns", "sethostname",
			"syslog", "clone-newuts", "clone-newuser", "clone3", "bpf", "perf_event_open")
		expect(t, got, baseline, "EPERM", "keyctl", "kexec_load", "init_module", "reboot", "swapon", "pivot_root")
	})

	t.Run("strict", func(t *testing.T) {
		got := p.run(p.compile(StrictSeccompProfile(), dockerCaps), allProbes...)
		expect(t, got, baseline, "EPERM", escapes...)
		expect(t, got, baseline, "OK", ordinary...)
		expect(t, got, baseline, "ENOSYS", "clone3", "nr=999")
		expect(t, got, baseline, "EPERM", "chroot", "ptrace", "process_vm_readv", "modify_ldt",
			"socket-packet", "personality=8")
		expect(t, got, baseline, "", "fchmodat2")
	})

	t.Run("custom-errno", func(t *testing.T) {
		// Docker's profile with mkdir refused EACCES instead.
		d := DefaultSeccompProfile()
		d.Syscalls[0].Names = slices.DeleteFunc(d.Syscalls[0].Names, func(n string) bool { return n == "mkdir" || n == "mkdirat" })
		d.Syscalls = append(d.Syscalls, SeccompRule{Names: []string{"mkdir", "mkdirat"}, Action: ActErrno, ErrnoRet: errno(13)})
		data, err := d.JSON()
		if err != nil {
			t.Fatal(err)
		}
		custom, err := ParseSeccompProfile(data)
		if err != nil {
			t.Fatal(err)
		}
		got := p.run(p.compile(custom, dockerCaps), "mkdir", "getpid", "open")
		expect(t, got, baseline, "EACCES", "mkdir")
		expect(t, got, baseline, "OK", "getpid", "open")
	})

	t.Run("table-call", func(t *testing.T) {
		d := DefaultSeccompProfile()
		d.Syscalls = append(d.Syscalls, SeccompRule{Names: []string{"listmount"}, Action: ActAllow})
		got := p.run(p.compile(d, dockerCaps), "nr=458", "getpid")
		expect(t, got, baseline, "", "nr=458", "getpid")
	})

	t.Run("programs", func(t *testing.T) {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		for name, profile := range map[string]*SeccompProfile{
			"default": DefaultSeccompProfile(),
			"strict":  StrictSeccompProfile(),
		} {
			prog := p.compile(profile, dockerCaps)
			// glibc, dynamically linked, and its tools.
			if out := p.exec(prog, "/bin/sh", "-c", "ls -la / >/dev/null && id >/dev/null && date >/dev/null && cat /proc/self/status >/dev/null && echo ok"); strings.TrimSpace(out) != "ok" {
				t.Errorf("%s: sh said %q", name, out)
			}
			// A Go program: this test binary, running no test.
			if out := p.exec(prog, self, "-test.run=^$"); !strings.Contains(out, "ok") && !strings.Contains(out, "PASS") {
				t.Errorf("%s: a Go program said %q", name, out)
			}
			if _, err := os.Stat("/usr/bin/busybox"); err == nil {
				script := "ls / >/dev/null && ps >/dev/null && mkdir d && rmdir d && echo hi | sed s/hi/ok/"
				if out := p.exec(prog, "/usr/bin/busybox", "sh", "-c", script); strings.TrimSpace(out) != "ok" {
					t.Errorf("%s: busybox said %q", name, out)
				}
			}
		}
	})
}
