package security

import (
	"fmt"
	"slices"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	rlimitCore   = unix.RLIMIT_CORE
	rlimitNofile = unix.RLIMIT_NOFILE
	rlimitFsize  = unix.RLIMIT_FSIZE
	// RLIMIT_MSGQUEUE bounds the POSIX message-queue bytes of the
	// process's user, all its processes together (see Default).
	rlimitMsgqueue = unix.RLIMIT_MSGQUEUE
)

// Config is what a sandboxed process may do.
type Config struct {
	// Capabilities the workload keeps (bounding, permitted and effective
	// sets); all others are dropped.
	Capabilities []string
	// NoNewPrivileges stops setuid binaries and file capabilities from
	// granting anything at exec.
	NoNewPrivileges bool
	// MaskedPaths are hidden: an empty read-only tmpfs over directories,
	// /dev/null over files.
	MaskedPaths []string
	// ReadonlyPaths are mounted read-only.
	ReadonlyPaths []string

	// Seccomp filters the workload's system calls; nil means no filter.
	Seccomp *SeccompProfile

	// LSM asks for SELinux and AppArmor labels, applied where the host
	// has those modules (see PlanLSM).
	LSM LSMOptions

	// UserNamespace, if set, runs the sandbox in a user namespace with
	// these mappings: root inside is an unprivileged id outside.
	UserNamespace *UserNamespace
	// Landlock confines file access to the sandbox's own tree (its root
	// and what is mounted under it): a descriptor to anything else, passed
	// in or leaked, opens nothing. Applied at the best ABI the kernel has.
	Landlock bool
	// ReadonlyRootfs makes the root filesystem read-only, with a private
	// tmpfs at /tmp.
	ReadonlyRootfs bool
	// Rlimits apply unless the sandbox's options set the same resource.
	Rlimits []Rlimit
	// MemoryMax and PidsMax are limits the sandbox gets when its options
	// set none; zero means no default.
	MemoryMax int64
	PidsMax   int64
	// Sysctls are kernel parameters written inside the sandbox before its
	// workload starts, by key ("net.ipv4.ip_unprivileged_port_start") or
	// path under /proc/sys. Only keys of namespaces the sandbox has of its
	// own are allowed (see SysctlNamespace); a sandbox's own options win
	// key by key. user.* keys, limits of the user namespace, are skipped
	// when UserNamespace is nil.
	Sysctls map[string]string
}

// UserNamespace maps ids inside a sandbox to ids on the host.
type UserNamespace struct {
	UIDMap, GIDMap []IDMap
}

// IDMap maps Size ids from ContainerID inside to HostID outside.
type IDMap struct {
	ContainerID, HostID, Size uint32
}

// DefaultUserNamespace maps ids 0-65535 inside to 100000-165535 outside,
// the range Debian gives the first user in /etc/subuid.
func DefaultUserNamespace() *UserNamespace {
	m := []IDMap{{ContainerID: 0, HostID: 100000, Size: 65536}}
	return &UserNamespace{UIDMap: m, GIDMap: append([]IDMap(nil), m...)}
}

// Rlimit is a resource limit, as setrlimit(2) takes.
type Rlimit struct {
	Resource   int // unix.RLIMIT_*
	Soft, Hard uint64
}

// dockerCaps is the set Docker grants a container by default.
var dockerCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// defaultCaps is Docker's set less CAP_MKNOD and CAP_NET_RAW, as podman's
// is. MKNOD makes device nodes, which the device cgroup refuses to open
// anyway, and which a sandbox could leave in a host directory mounted
// into it. NET_RAW forges packets: a neighbour's source address, ARP
// replies that poison the host's cache. What ordinary programs use it
// for, ping, works without it: a sandbox's own network namespace lets
// every group open ICMP echo sockets (net.ipv4.ping_group_range).
var defaultCaps = slices.DeleteFunc(slices.Clone(dockerCaps), func(c string) bool {
	return c == "CAP_MKNOD" || c == "CAP_NET_RAW"
})

// Default limits. A fork bomb or a memory bomb in a sandbox without
// limits takes the host down with it.
const (
	// defaultPidsMax is twice podman's default: more processes and
	// threads than real programs start, far fewer than the host has.
	defaultPidsMax = 4096
	// defaultMsgqueueBytes is a quarter of the kernel's default
	// RLIMIT_MSGQUEUE, room for two queues of the default size (10
	// messages of 8 KiB). The kernel checks the bytes all of a user's
	// queues hold against the creating process's own limit, so this
	// bounds what all Default sandboxes together can take from the
	// allowance of the host's root, whose user they share.
	defaultMsgqueueBytes = 200 << 10
	// strictMsgqueueBytes fits one queue of the default size.
	strictMsgqueueBytes = 100 << 10
	// Strict's user namespace counts inotify instances and watches apart
	// from the host's (user.max_inotify_*, written inside it), bounding
	// what one sandbox takes of the host root's allowance, which the
	// kernel also charges: 128 instances by default.
	strictInotifyInstances = 16
	strictInotifyWatches   = 8192
)

// memoryShare is the share of the host's RAM a Default sandbox may use.
const memoryShare = 0.75

// defaultMemoryMax is memoryShare of the host's RAM, in whole MiB, or 0
// (no default) if the kernel does not say how much there is. It is asked
// once: Default is called for every sandbox that sets no Security.
var defaultMemoryMax = sync.OnceValue(func() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil || si.Totalram == 0 {
		return 0
	}
	total := float64(si.Totalram) * float64(si.Unit)
	return int64(total*memoryShare) &^ (1<<20 - 1)
})

// Paths of /proc and /sys that leak host information or let a container
// reach the host's hardware or kernel; container runtimes hide them.
var (
	defaultMasked = []string{
		"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
		"/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
	}
	defaultReadonly = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// Default returns what a careful container runtime grants a workload it
// trusts somewhat: Docker's capabilities less MKNOD and NET_RAW (12),
// Docker's seccomp profile, no new privileges, the usual masked and
// read-only paths, and limits no real program meets but that keep a
// fork bomb or a memory bomb from taking the host: 4096 processes, three
// quarters of the host's RAM, 200 KiB of POSIX message queues.
func Default() *Config {
	return &Config{
		Capabilities:    append([]string(nil), defaultCaps...),
		NoNewPrivileges: true,
		Seccomp:         DefaultSeccompProfile(),
		MaskedPaths:     append([]string(nil), defaultMasked...),
		ReadonlyPaths:   append([]string(nil), defaultReadonly...),
		Rlimits: []Rlimit{
			{Resource: rlimitMsgqueue, Soft: defaultMsgqueueBytes, Hard: defaultMsgqueueBytes},
		},
		MemoryMax: defaultMemoryMax(),
		PidsMax:   defaultPidsMax,
	}
}

// Strict returns what a sandbox running untrusted code gets: no
// capabilities at all, a tighter seccomp filter, a user namespace so that
// its root is nobody on the host, a read-only root with a tmpfs /tmp,
// Landlock, tight resource limits (512 MiB, 256 processes, 1024 files,
// no core dumps, 16 inotify instances), and everything else Default has.
func Strict() *Config {
	c := Default()
	c.Capabilities = nil
	c.Seccomp = StrictSeccompProfile()
	c.UserNamespace = DefaultUserNamespace()
	c.Landlock = true
	c.ReadonlyRootfs = true
	c.Rlimits = []Rlimit{
		{Resource: rlimitCore, Soft: 0, Hard: 0},
		{Resource: rlimitNofile, Soft: 1024, Hard: 1024},
		{Resource: rlimitFsize, Soft: 1 << 30, Hard: 1 << 30},
		{Resource: rlimitMsgqueue, Soft: strictMsgqueueBytes, Hard: strictMsgqueueBytes},
	}
	c.MemoryMax = 512 << 20
	c.PidsMax = 256
	c.Sysctls = map[string]string{
		"user.max_inotify_instances": strconv.Itoa(strictInotifyInstances),
		"user.max_inotify_watches":   strconv.Itoa(strictInotifyWatches),
	}
	return c
}

// Unconfined returns a configuration that keeps Docker's capabilities,
// MKNOD and NET_RAW among them, but applies none of the other
// restrictions and sets no limits. It is for trusted tools that need to
// see the host's /proc and /sys as they are.
func Unconfined() *Config {
	return &Config{Capabilities: append([]string(nil), dockerCaps...)}
}

// Preset returns the named configuration: "default", "strict" or
// "unconfined".
func Preset(name string) (*Config, error) {
	switch name {
	case "", "default":
		return Default(), nil
	case "strict":
		return Strict(), nil
	case "unconfined":
		return Unconfined(), nil
	}
	return nil, fmt.Errorf("security preset %q: want default, strict or unconfined", name)
}
