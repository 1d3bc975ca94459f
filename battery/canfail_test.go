package battery

import (
	"testing"

	"github.com/berth-dev/berth/netplug"
)

// A weakening takes one protection away from a preset, so that the cases
// that rely on it can be seen to fail without it.
type weakening struct {
	name    string // what is taken away
	base    variant
	weaken  func(a *attempt)
	cases   []string
	comment string
}

// weakenings pair the battery's cases with the protection each names.
// Cases that fail on a branch without their protection show it there;
// these are the cases whose protection is in place everywhere.
var weakenings = []weakening{
	{name: "no seccomp filter", base: presetDefault, weaken: func(a *attempt) { a.sec.Seccomp = nil },
		cases: []string{"seccomp-unshare-userns", "seccomp-clone-newuser", "seccomp-keyctl", "seccomp-add_key", "seccomp-setns",
			"seccomp-perf_event_open", "seccomp-userfaultfd", "seccomp-io_uring_setup", "seccomp-personality", "seccomp-kexec_load", "seccomp-init_module"}},
	{name: "no seccomp filter, and the capability the call needs", base: presetDefault,
		weaken: func(a *attempt) {
			a.sec.Seccomp = nil
			a.sec.Capabilities = append(a.sec.Capabilities, "CAP_SYS_ADMIN", "CAP_BPF", "CAP_DAC_READ_SEARCH", "CAP_SYSLOG")
		},
		cases: []string{"seccomp-bpf", "seccomp-mount", "seccomp-pivot_root", "seccomp-open_by_handle_at", "seccomp-syslog", "cgroup-release-agent"}},
	{name: "no masked paths", base: presetDefault, weaken: func(a *attempt) { a.sec.MaskedPaths = nil },
		cases: []string{"masked-kcore", "masked-keys", "masked-timer-list", "masked-interrupts", "masked-sys-firmware", "masked-powercap"}},
	{name: "no read-only paths", base: presetDefault, weaken: func(a *attempt) { a.sec.ReadonlyPaths = nil },
		cases: []string{"ro-proc-sys", "ro-sysrq-trigger", "ro-core-pattern"}},
	{name: "no no_new_privs", base: presetDefault, weaken: func(a *attempt) { a.sec.NoNewPrivileges = false },
		cases: []string{"no-new-privs"}},
	{name: "CAP_SYS_ADMIN", base: presetStrict, weaken: func(a *attempt) { a.sec.Capabilities = []string{"CAP_SYS_ADMIN"} },
		cases: []string{"caps-held"}},
	{name: "CAP_SYS_PTRACE, past the init's non-dumpable flag", base: presetDefault,
		weaken: func(a *attempt) { a.sec.Capabilities = append(a.sec.Capabilities, "CAP_SYS_PTRACE") },
		cases:  []string{"ptrace-init", "pid1-cwd", "pid1-root", "pid1-environ", "pid1-fd"}},
	{name: "the pids limit", base: presetStrict, weaken: func(a *attempt) { a.sec.PidsMax = 0 },
		cases: []string{"limit-fork-bomb"}},
	{name: "the memory limit", base: presetStrict, weaken: func(a *attempt) { a.sec.MemoryMax = 0 },
		cases: []string{"limit-memory-bomb"}},
	{name: "the network namespace", base: presetDefault, weaken: func(a *attempt) { a.opts.Network = netplug.Host() },
		cases: []string{"ns-host-interfaces"}},
	{name: "Landlock", base: presetStrict, weaken: func(a *attempt) { a.sec.Landlock = false },
		cases: []string{"stdio-reopen-read"}},
	{name: "Strict's rlimits", base: presetStrict, weaken: func(a *attempt) { a.sec.Rlimits = nil },
		cases: []string{"rlimits-held"}},
	{name: "the user namespace", base: presetStrict, weaken: func(a *attempt) { a.sec.UserNamespace = nil },
		cases: []string{"vol-setuid"}},
}

// TestBatteryCanFail takes away, one at a time, the protections that are
// in place on every branch, and checks that the cases naming them fail:
// a case that passes without its protection tests nothing.
func TestBatteryCanFail(t *testing.T) {
	byName := map[string]hostile{}
	for _, c := range cases() {
		byName[c.name] = c
	}
	for _, w := range weakenings {
		t.Run(w.name, func(t *testing.T) {
			for _, name := range w.cases {
				c, ok := byName[name]
				if !ok {
					t.Fatalf("no case %s", name)
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					parallelSandboxes <- struct{}{}
					defer func() { <-parallelSandboxes }()
					if len(attemptCase(t, c, w.base, w.weaken)) == 0 {
						t.Errorf("%s passes under %s without %s: it does not test it", name, w.base.name, w.name)
					}
				})
			}
		})
	}
}
