package battery

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/security"
)

// A weakening takes one protection away from a preset, so that the cases
// that rely on it can be seen to fail without it.
type weakening struct {
	name string // what is taken away
	base variant
	// weaken, if set, takes it away once the case has prepared its
	// attempt.
	weaken func(t *testing.T, a *attempt)
	cases  []string
}

// weakenings pair the battery's cases with the protection each names.
//
// Some protections have no switch a caller could turn off, and so no
// weakening here: the filters on berth's bridges (host loopback, forged
// IP and MAC addresses; net-host-loopback, net-ip-spoof, net-arp-poison,
// net-mac-forge) and the refusal to follow a symlink a sandbox planted in
// a volume's source (vol-symlink-dir, vol-symlink-file). Their cases
// were seen to fail with the code taken out by hand (installPortFilter
// returning at once; openBindSource without RESOLVE_NO_SYMLINKS).
// dev-own-rootfs-loop has none either: the loop device under a quota's
// filesystem is only made as the sandbox starts, too late to pass it in
// Options.Devices. It was seen to fail under DefaultWithMknod with a
// "b 7:* rwm" rule added to the allowlist by hand.
var weakenings = []weakening{
	{name: "no seccomp filter", base: presetDefault, weaken: func(_ *testing.T, a *attempt) { a.sec.Seccomp = nil },
		cases: []string{"seccomp-unshare-userns", "seccomp-clone-newuser", "seccomp-keyctl", "seccomp-add_key", "seccomp-setns",
			"seccomp-perf_event_open", "seccomp-userfaultfd", "seccomp-io_uring_setup", "seccomp-personality", "seccomp-kexec_load", "seccomp-init_module"}},
	{name: "no seccomp filter, and the capability the call needs", base: presetDefault,
		weaken: func(_ *testing.T, a *attempt) {
			a.sec.Seccomp = nil
			a.sec.Capabilities = append(a.sec.Capabilities, "CAP_SYS_ADMIN", "CAP_BPF", "CAP_DAC_READ_SEARCH", "CAP_SYSLOG")
		},
		cases: []string{"seccomp-bpf", "seccomp-mount", "seccomp-pivot_root", "seccomp-open_by_handle_at", "seccomp-syslog", "cgroup-release-agent"}},
	{name: "no masked paths", base: presetDefault, weaken: func(_ *testing.T, a *attempt) { a.sec.MaskedPaths = nil },
		cases: []string{"masked-kcore", "masked-keys", "masked-timer-list", "masked-interrupts", "masked-sys-firmware", "masked-powercap"}},
	{name: "no read-only paths", base: presetDefault, weaken: func(_ *testing.T, a *attempt) { a.sec.ReadonlyPaths = nil },
		cases: []string{"ro-proc-sys", "ro-sysrq-trigger", "ro-core-pattern"}},
	{name: "no no_new_privs", base: presetDefault, weaken: func(_ *testing.T, a *attempt) { a.sec.NoNewPrivileges = false },
		cases: []string{"no-new-privs"}},
	{name: "CAP_SYS_ADMIN", base: presetStrict, weaken: func(_ *testing.T, a *attempt) { a.sec.Capabilities = []string{"CAP_SYS_ADMIN"} },
		cases: []string{"caps-held"}},
	{name: "CAP_SYS_PTRACE, past the init's non-dumpable flag", base: presetDefault,
		weaken: func(_ *testing.T, a *attempt) { a.sec.Capabilities = append(a.sec.Capabilities, "CAP_SYS_PTRACE") },
		cases:  []string{"ptrace-init", "pid1-cwd", "pid1-root", "pid1-environ", "pid1-fd"}},
	{name: "CAP_MKNOD, which Default drops", base: presetDefault, weaken: func(_ *testing.T, a *attempt) { a.sec = withCapability(a.sec, "CAP_MKNOD") },
		cases: []string{"caps-held"}},
	{name: "CAP_NET_RAW, which Default drops", base: presetDefault, weaken: func(_ *testing.T, a *attempt) { a.sec = withCapability(a.sec, "CAP_NET_RAW") },
		cases: []string{"caps-held", "net-raw-socket"}},
	{name: "the device allowlist: the attacked device passed in Options.Devices", base: defaultWithMknod, weaken: passAttackedDevice,
		cases: []string{"dev-loop-read", "dev-loop-write", "dev-kvm", "dev-userfaultfd", "dev-console", "dev-tty1", "dev-ttyS0",
			// Not dev-cpu-dma-latency: once allowed, its attack holds a
			// host-wide power setting, which a test must not change.
			"dev-kmsg-forge", "dev-beyond-passed", "vol-devnode-mknod"}},
	{name: "nosuid and nodev on volumes", base: presetDefault, weaken: volumesSuidDev,
		cases: []string{"vol-mount-flags"}},
	{name: "nodev on volumes, and the device allowlist", base: presetDefault,
		weaken: func(t *testing.T, a *attempt) {
			volumesSuidDev(t, a)
			passDevice(a.opts, loop(t).path)
		},
		cases: []string{"vol-devnode-open"}},
	{name: "pipes for standard streams", base: presetDefault, weaken: func(_ *testing.T, a *attempt) { a.opts.HandOverStdio = true },
		cases: []string{"stdio-reopen-read", "stdio-overwrite", "stdio-truncate", "stdio-host-path"}},
	{name: "pipes for standard streams, and Landlock", base: presetStrict,
		weaken: func(_ *testing.T, a *attempt) {
			a.opts.HandOverStdio = true
			a.sec.Landlock = false
		},
		cases: []string{"stdio-reopen-read"}},
	{name: "the disk quota", base: presetDefault, weaken: func(_ *testing.T, a *attempt) { a.opts.DiskQuota = 0 },
		cases: []string{"limit-disk-filler"}},
	{name: "Default's pids limit", base: without(presetDefault, func(c *security.Config) { c.PidsMax = 0 }),
		cases: []string{"limit-fork-bomb"}},
	{name: "Default's memory limit", base: without(presetDefault, func(c *security.Config) { c.MemoryMax = 0 }),
		cases: []string{"limit-memory-bomb"}},
	{name: "Default's message-queue limit", base: without(presetDefault, func(c *security.Config) { c.Rlimits = nil }),
		cases: []string{"limit-mqueue"}},
	{name: "Strict's pids limit", base: without(presetStrict, func(c *security.Config) { c.PidsMax = 0 }),
		cases: []string{"limit-fork-bomb"}},
	{name: "Strict's memory limit", base: without(presetStrict, func(c *security.Config) { c.MemoryMax = 0 }),
		cases: []string{"limit-memory-bomb"}},
	{name: "the network namespace", base: presetDefault, weaken: func(_ *testing.T, a *attempt) { a.opts.Network = netplug.Host() },
		cases: []string{"ns-host-interfaces"}},
	{name: "Strict's rlimits", base: presetStrict, weaken: func(_ *testing.T, a *attempt) { a.sec.Rlimits = nil },
		cases: []string{"rlimits-held"}},
	{name: "the user namespace", base: presetStrict, weaken: func(_ *testing.T, a *attempt) { a.sec.UserNamespace = nil },
		cases: []string{"vol-setuid"}},
}

// without is base with a limit taken away from the start, for the limit
// cases, which size their attack by the limit they find: taken away only
// after them, it would leave the attack sized for a limit that is gone.
func without(base variant, take func(*security.Config)) variant {
	return variant{base.name + "Weakened", func() *security.Config {
		c := base.config()
		take(c)
		return c
	}}
}

// passAttackedDevice gives the sandbox, in Options.Devices, the device
// the case attacks (its type=, major= and minor= arguments, or the
// battery's loop device for a case that names none). The weakening's
// base keeps CAP_MKNOD, so that the allowlist is all that is taken away.
func passAttackedDevice(t *testing.T, a *attempt) {
	t.Helper()
	kv := map[string]string{}
	for _, arg := range a.args[1:] {
		k, v, _ := strings.Cut(arg, "=")
		kv[k] = v
	}
	if kv["major"] == "" {
		passDevice(a.opts, loop(t).path)
		return
	}
	major, err1 := strconv.ParseUint(kv["major"], 10, 32)
	minor, err2 := strconv.ParseUint(kv["minor"], 10, 32)
	if err1 != nil || err2 != nil || (kv["type"] != "b" && kv["type"] != "c") {
		t.Fatalf("case arguments %q name no device", a.args)
	}
	node := filepath.Join(t.TempDir(), "attacked")
	if err := mknod(node, kv["type"][0], uint32(major), uint32(minor)); err != nil {
		t.Fatal(err)
	}
	a.opts.Devices = append(a.opts.Devices, sandbox.Device{Source: node, Destination: "/dev/battery-passed", Access: "rwm"})
}

// volumesSuidDev mounts every volume of the attempt with "suid,dev".
func volumesSuidDev(_ *testing.T, a *attempt) {
	for i := range a.opts.Mounts {
		a.opts.Mounts[i].Options = "suid,dev"
	}
}

// TestBatteryCanFail takes away, one at a time, the protections that have
// a switch, and checks that the cases naming them fail: a case that
// passes without its protection tests nothing.
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
