package battery

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/security"
)

// classicCases are the escapes every container runtime has had to close:
// the runtime's binary, leaked descriptors, seccomp, masked and read-only
// paths, namespaces, capabilities.
func classicCases() []hostile {
	simple := func(name, attacks, errno string, attack string, kv ...any) hostile {
		return hostile{name: name, attacks: attacks, errno: errno,
			prepare: func(t *testing.T, a *attempt) { a.attack(attack, kv...) }}
	}
	seccomp := func(call, attacks string) hostile {
		return simple("seccomp-"+call, attacks+" (the filter must answer EPERM: the call is one the capabilities allow, or the kernel would answer otherwise)", "EPERM", "syscall", "name", call)
	}
	masked := func(name, path string) hostile {
		return hostile{name: name, attacks: "reads " + path + ", which is masked",
			prepare: func(t *testing.T, a *attempt) {
				if !fileExists(path) {
					t.Skipf("the host has no %s", path)
				}
				a.attack("read-masked", "path", path)
			}}
	}
	readOnly := func(name, attacks string, paths ...string) hostile {
		return hostile{name: name, attacks: attacks,
			prepare: func(t *testing.T, a *attempt) {
				var there []string
				for _, p := range paths {
					if fileExists(p) {
						there = append(there, p)
					}
				}
				if len(there) == 0 {
					t.Skipf("the host has none of %v", paths)
				}
				a.attack("open-write", "paths", strings.Join(there, ","))
			}}
	}
	return []hostile{
		simple("cve-2019-5736-init-exe", "opens the sandbox init's executable, the host's runtime binary, for writing", "", "open-path", "path", "/proc/1/exe", "mode", "w"),
		{
			name: "cve-2024-21626-leaked-fd", attacks: "inherits a host directory the embedding program left open",
			prepare: func(t *testing.T, a *attempt) {
				// Not close-on-exec, as a careless embedding program
				// leaves one.
				fd, err := unix.Open(searchableTempDir(t), unix.O_RDONLY|unix.O_DIRECTORY, 0)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { unix.Close(fd) })
				a.attack("leaked-fds")
			},
		},
		{
			name: "cve-2024-21626-cwd", attacks: "walks up from its working directory to the host's root",
			prepare: func(t *testing.T, a *attempt) { a.attack("cwd-escape", "marker", hostMarker(t)) },
		},
		simple("pid1-fd", "opens what the sandbox init's descriptors lead to, through /proc/1/fd", "", "pid1-fds"),
		simple("pid1-cwd", "lists the working directory of the sandbox's init", "", "open-path", "path", "/proc/1/cwd", "mode", "dir"),
		simple("pid1-root", "lists the root of the sandbox's init", "", "open-path", "path", "/proc/1/root", "mode", "dir"),
		simple("pid1-environ", "reads the environment the host gave the sandbox's init", "", "open-path", "path", "/proc/1/environ", "mode", "r"),
		simple("ptrace-init", "attaches to the sandbox's init with ptrace", "", "ptrace", "pid", 1),
		{
			name: "chroot-escape", attacks: "escapes a chroot of its own to the host's root",
			prepare: func(t *testing.T, a *attempt) { a.attack("chroot-escape", "marker", hostMarker(t)) },
		},
		seccomp("unshare-userns", "makes a user namespace with unshare(CLONE_NEWUSER)"),
		seccomp("clone-newuser", "makes a user namespace with clone(CLONE_NEWUSER)"),
		seccomp("keyctl", "joins a new session keyring (keyctl)"),
		seccomp("add_key", "adds a key to the kernel's keyring (add_key)"),
		seccomp("setns", "calls setns"),
		seccomp("perf_event_open", "opens a perf event on itself"),
		seccomp("bpf", "creates a BPF map"),
		seccomp("userfaultfd", "gets a user-mode-only userfaultfd"),
		seccomp("io_uring_setup", "sets up an io_uring"),
		seccomp("kexec_load", "loads a new kernel"),
		seccomp("init_module", "loads a kernel module"),
		seccomp("personality", "turns off address randomisation (personality)"),
		seccomp("mount", "mounts a filesystem"),
		seccomp("pivot_root", "calls pivot_root"),
		seccomp("open_by_handle_at", "opens a host file by handle (Shocker)"),
		seccomp("syslog", "reads the host's kernel log (syslog)"),
		masked("masked-kcore", "/proc/kcore"),
		masked("masked-keys", "/proc/keys"),
		masked("masked-timer-list", "/proc/timer_list"),
		masked("masked-interrupts", "/proc/interrupts"),
		masked("masked-sys-firmware", "/sys/firmware"),
		masked("masked-powercap", "/sys/devices/virtual/powercap"),
		readOnly("ro-proc-sys", "opens a host-wide sysctl for writing", "/proc/sys/vm/overcommit_ratio"),
		readOnly("ro-sysrq-trigger", "opens /proc/sysrq-trigger for writing", "/proc/sysrq-trigger"),
		readOnly("ro-core-pattern", "opens core_pattern, which the host runs as root, for writing", "/proc/sys/kernel/core_pattern"),
		readOnly("ro-sys", "opens a host setting in /sys for writing", "/sys/kernel/uevent_helper", "/sys/kernel/mm/ksm/run", "/sys/power/state"),
		simple("cgroup-release-agent", "mounts a cgroup hierarchy, reaches a release_agent, or makes a cgroup (CVE-2022-0492)", "", "mount-cgroup"),
		simple("ns-host-pids", "sees processes outside the sandbox", "", "host-pids"),
		{
			name: "ns-host-mounts", attacks: "sees the host's mounts",
			prepare: func(t *testing.T, a *attempt) {
				dir := searchableTempDir(t)
				if err := unix.Mount(a.marker, dir, "tmpfs", 0, "size=64k"); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
				a.attack("mountinfo-grep", "marker", a.marker)
			},
		},
		{
			name: "ns-hostname", attacks: "changes the host's hostname",
			prepare: func(t *testing.T, a *attempt) {
				before, err := os.Hostname()
				if err != nil {
					t.Fatal(err)
				}
				a.attack("sethostname", "name", "battery-"+a.marker[len(a.marker)-8:])
				a.check(func() string {
					if now, _ := os.Hostname(); now != before {
						return fmt.Sprintf("the host's hostname is now %q", now)
					}
					return ""
				})
			},
			judge: madeJudgement,
		},
		{
			name: "caps-held", attacks: "holds capabilities that reach the host (MKNOD, NET_RAW, SYS_ADMIN...) or more than its preset's",
			prepare: func(t *testing.T, a *attempt) {
				allowed, err := security.CapabilityMask(a.sec.Capabilities)
				if err != nil {
					t.Fatal(err)
				}
				dangerous, _ := security.CapabilityMask([]string{"CAP_MKNOD", "CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
					"CAP_SYS_PTRACE", "CAP_NET_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_SYS_BOOT", "CAP_BPF", "CAP_PERFMON", "CAP_SYSLOG", "CAP_SYS_TIME"})
				a.attack("caps", "allowed", fmt.Sprintf("%#x", allowed&^dangerous))
			},
		},
		simple("no-new-privs", "runs without no_new_privs or without a seccomp filter", "", "no-new-privs"),
		{
			name: "rlimits-held", attacks: "runs with resource limits above its preset's",
			prepare: func(t *testing.T, a *attempt) {
				want := map[int]int64{unix.RLIMIT_CORE: -1, unix.RLIMIT_NOFILE: -1, unix.RLIMIT_FSIZE: -1}
				for _, r := range a.sec.Rlimits {
					if _, ok := want[r.Resource]; ok {
						want[r.Resource] = int64(r.Hard)
					}
				}
				a.attack("rlimits", "core", want[unix.RLIMIT_CORE], "nofile", want[unix.RLIMIT_NOFILE], "fsize", want[unix.RLIMIT_FSIZE])
			},
		},
		{
			name: "mount-propagation-in", attacks: "sees a mount the host makes later under a volume's source",
			run: runMountPropagation, judge: func(a *attempt) string { return ordinaryJudgement(a, "") },
		},
	}
}

// runMountPropagation starts a sandbox with a volume, then mounts a tmpfs
// under the volume's source on the host and tells the sandbox, which
// looks for it: with private propagation it must not show.
func runMountPropagation(t *testing.T, a *attempt) {
	dir := volumeDir(t)
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	// A shared mount of its own, whatever the host's root is: a copy of
	// it in the sandbox's mount namespace would receive what the host
	// mounts under it, unless the sandbox made its mounts private.
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	if !sharedPropagation(dir) {
		t.Fatalf("%s is not a shared mount", dir)
	}
	a.mount(dir, "/vol", false)
	a.attack("await-mount", "ready", "/vol/ready", "marker", a.marker, "seen", "/vol/sub/host-mounted")
	ctx, sb, stop := a.start(t)
	defer stop()
	if err := unix.Mount(a.marker, sub, "tmpfs", 0, "size=64k,mode=0755"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(sub, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(sub, "host-mounted"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a.verdict = a.awaitVerdict(ctx)
	a.res, _ = sb.Wait()
}

// sharedPropagation reports whether the mount holding path is shared, so
// that a mount under it would reach a copy that is not made private.
func sharedPropagation(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	best, shared := "", false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 7 {
			continue
		}
		mp := f[4]
		if (path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, shared = mp, false
			for _, opt := range f[6:] {
				if opt == "-" {
					break
				}
				if strings.HasPrefix(opt, "shared:") {
					shared = true
				}
			}
		}
	}
	return shared
}

// hostMarker is a file on the host, outside every sandbox, whose path
// (absolute, from the host's root) an escape looks for.
func hostMarker(t *testing.T) string {
	t.Helper()
	p := filepath.Join(searchableTempDir(t), "host-marker")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
