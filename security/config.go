package security

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
// trusts somewhat: Docker's 14 capabilities, no new privileges, and the
// usual masked and read-only paths.
func Default() *Config {
	return &Config{
		Capabilities:    append([]string(nil), dockerCaps...),
		NoNewPrivileges: true,
		MaskedPaths:     append([]string(nil), defaultMasked...),
		ReadonlyPaths:   append([]string(nil), defaultReadonly...),
	}
}
