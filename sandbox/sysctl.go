package sandbox

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/sandbox/internal/nsinit"
	"github.com/berth-dev/berth/security"
)

// pingGroupRange names the groups that may open ICMP echo sockets
// (SOCK_DGRAM, IPPROTO_ICMP): how ping works without CAP_NET_RAW.
const pingGroupRange = "net.ipv4.ping_group_range"

// sysctls returns the kernel parameters the init writes inside the
// sandbox: the security configuration's, then the options' (which win key
// by key), and, in a network namespace the sandbox makes itself, every
// group's right to ping, unless one of those sets it. Each must belong to
// a namespace of the sandbox's own; anything else would change the host.
func (s *Sandbox) sysctls(sec *security.Config) ([]nsinit.Sysctl, error) {
	type entry struct{ key, value string }
	byPath := map[string]entry{}
	for i, m := range []map[string]string{sec.Sysctls, s.opts.Sysctls} {
		for k, v := range m {
			ns, err := security.SysctlNamespace(k)
			if err != nil {
				return nil, err
			}
			// A configuration's limits of its user namespace (Strict's)
			// go with the namespace, if a caller takes that away.
			if i == 0 && ns == unix.CLONE_NEWUSER && sec.UserNamespace == nil {
				continue
			}
			if err := s.checkSysctl(sec, k, v, ns); err != nil {
				return nil, err
			}
			byPath[security.SysctlPath(k)] = entry{k, v}
		}
	}
	ping := security.SysctlPath(pingGroupRange)
	if _, set := byPath[ping]; !set && s.ownsNetwork() {
		if groups, ok := allGroups(sec.UserNamespace); ok {
			byPath[ping] = entry{pingGroupRange, groups}
		}
	}
	out := make([]nsinit.Sysctl, 0, len(byPath))
	for p, e := range byPath {
		out = append(out, nsinit.Sysctl{Path: p, Value: e.value})
	}
	slices.SortFunc(out, func(a, b nsinit.Sysctl) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// checkSysctl refuses a sysctl, held by the namespace ns
// (security.SysctlNamespace), that is not the sandbox's own, or that the
// sandbox's root could not write.
func (s *Sandbox) checkSysctl(sec *security.Config, key, value string, ns int) error {
	if err := security.CheckSysctlValue(key, value); err != nil {
		return err
	}
	switch ns {
	case unix.CLONE_NEWNET:
		switch {
		case s.hostNetwork():
			return fmt.Errorf("%w: %s: the sandbox shares the host's network namespace", security.ErrSysctl, key)
		case s.opts.JoinNetwork != "":
			return fmt.Errorf("%w: %s: the sandbox joins another's network namespace (JoinNetwork)", security.ErrSysctl, key)
		}
	case unix.CLONE_NEWUSER:
		if sec.UserNamespace == nil {
			return fmt.Errorf("%w: %s: the sandbox has no user namespace of its own (security.Config.UserNamespace)", security.ErrSysctl, key)
		}
	}
	return nil
}

// ownsNetwork reports whether the sandbox's init makes the sandbox's
// network namespace. A pooled one is the sandbox's own too, but made by
// the pool, which sets it up (netplug.Pool lets every group ping).
func (s *Sandbox) ownsNetwork() bool {
	return !s.hostNetwork() && s.opts.JoinNetwork == "" && s.opts.NetworkPool == nil
}

// allGroups is net.ipv4.ping_group_range's value for every group the
// sandbox's processes can have: all of them, or in a user namespace the
// ones it maps, as the kernel reads the range in the writer's namespace.
func allGroups(u *security.UserNamespace) (string, bool) {
	if u == nil {
		return "0 " + strconv.Itoa(math.MaxInt32), true
	}
	if len(u.GIDMap) == 0 {
		return "", false
	}
	lo, hi := uint32(math.MaxUint32), uint32(0)
	for _, m := range u.GIDMap {
		if m.Size == 0 {
			continue
		}
		lo, hi = min(lo, m.ContainerID), max(hi, m.ContainerID+m.Size-1)
	}
	if lo > hi {
		return "", false
	}
	return strconv.FormatUint(uint64(lo), 10) + " " + strconv.FormatUint(uint64(hi), 10), true
}
