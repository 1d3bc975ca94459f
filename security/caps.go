package security

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnknownCapability means a capability name is not one Linux defines.
var ErrUnknownCapability = errors.New("unknown capability")

// capNames are Linux's capabilities, by number (linux/capability.h).
var capNames = [...]string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
	"CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
	"CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
	"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// CapabilityMask returns the bit mask of the named capabilities. Names are
// case-insensitive and may omit the CAP_ prefix; "ALL" means every one.
func CapabilityMask(names []string) (uint64, error) {
	var m uint64
	for _, n := range names {
		u := strings.ToUpper(n)
		if u == "ALL" {
			m |= 1<<len(capNames) - 1
			continue
		}
		if !strings.HasPrefix(u, "CAP_") {
			u = "CAP_" + u
		}
		found := false
		for i, c := range capNames {
			if c == u {
				m |= 1 << i
				found = true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("%w %q", ErrUnknownCapability, n)
		}
	}
	return m, nil
}

// CapabilityNames returns the names of the capabilities in mask.
func CapabilityNames(mask uint64) []string {
	var out []string
	for i, c := range capNames {
		if mask&(1<<i) != 0 {
			out = append(out, c)
		}
	}
	return out
}

// WithCapabilities returns the configuration's capability list with add
// granted and drop taken away, as Docker's --cap-add and --cap-drop do:
// dropping "ALL" starts from nothing, so that what is added is all there
// is; otherwise a capability both added and dropped is dropped.
func (c *Config) WithCapabilities(add, drop []string) ([]string, error) {
	have, err := CapabilityMask(c.Capabilities)
	if err != nil {
		return nil, err
	}
	plus, err := CapabilityMask(add)
	if err != nil {
		return nil, err
	}
	minus, err := CapabilityMask(drop)
	if err != nil {
		return nil, err
	}
	for _, d := range drop {
		if strings.EqualFold(d, "ALL") {
			have, minus = 0, 0
		}
	}
	return CapabilityNames((have | plus) &^ minus), nil
}
