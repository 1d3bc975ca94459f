package security

import (
	"fmt"

	"golang.org/x/sys/unix"
)

const (
	rlimitCore   = unix.RLIMIT_CORE
	rlimitNofile = unix.RLIMIT_NOFILE
	rlimitFsize  = unix.RLIMIT_FSIZE
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
// trusts somewhat: Docker's 14 capabilities, Docker's seccomp profile, no
// new privileges, and the usual masked and read-only paths.
func Default() *Config {
	return &Config{
		Capabilities:    append([]string(nil), dockerCaps...),
		NoNewPrivileges: true,
		Seccomp:         DefaultSeccompProfile(),
		MaskedPaths:     append([]string(nil), defaultMasked...),
		ReadonlyPaths:   append([]string(nil), defaultReadonly...),
	}
}

// Strict returns what a sandbox running untrusted code gets: no
// capabilities at all, a tighter seccomp filter, a user namespace so that
// its root is nobody on the host, a read-only root with a tmpfs /tmp,
// Landlock, tight resource limits, and everything else Default has.
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
	}
	c.MemoryMax = 512 << 20
	c.PidsMax = 256
	return c
}

// Unconfined returns a configuration that keeps Docker's capabilities but
// applies none of the other restrictions. It is for trusted tools that
// need to see the host's /proc and /sys as they are.
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
