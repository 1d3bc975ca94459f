package sandbox

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/sandbox/internal/nsinit"
)

// A Device is a host device node given to the sandbox, as `docker run
// --device` gives one: the node appears in the sandbox's /dev and its
// cgroup lets the workload use that one device, as Access says.
type Device struct {
	// Source is the host path of a character or block device node, such
	// as /dev/fuse. Symbolic links are followed.
	Source string
	// Destination is where the node appears in the sandbox: a path under
	// /dev. Empty means Source.
	Destination string
	// Access is what the workload may do with the device: some of "r"
	// (read), "w" (write) and "m" (mknod another node for it). Empty
	// means "rwm". The cgroup allows by device number, not by node: two
	// nodes of one device both get what either is allowed. Without "m"
	// the node is bound from Source rather than made.
	Access string
}

// ErrInvalidDevice wraps every problem with Options.Devices.
var ErrInvalidDevice = errors.New("invalid device")

// A sandbox's /dev holds these nodes (the init makes them, or binds them
// from the host's /dev in a user namespace) and its own devpts, whose
// ptmx is 5:2 and whose terminals are Unix98 pty slaves, majors 136 to
// 143. They are all its cgroup lets it use, with Options.Devices.
var (
	baseDevices = []cgroup.DeviceRule{
		{Type: cgroup.CharDevice, Major: 1, Minor: 3, Access: "rwm"}, // null
		{Type: cgroup.CharDevice, Major: 1, Minor: 5, Access: "rwm"}, // zero
		{Type: cgroup.CharDevice, Major: 1, Minor: 7, Access: "rwm"}, // full
		{Type: cgroup.CharDevice, Major: 1, Minor: 8, Access: "rwm"}, // random
		{Type: cgroup.CharDevice, Major: 1, Minor: 9, Access: "rwm"}, // urandom
		{Type: cgroup.CharDevice, Major: 5, Minor: 0, Access: "rwm"}, // tty
		{Type: cgroup.CharDevice, Major: 5, Minor: 2, Access: "rwm"}, // ptmx
	}
	ptyMajors = [2]int64{136, 143}
	// baseAllowlist is what every sandbox's cgroup allows before its own
	// devices: baseDevices and its terminals. Built once, not per start.
	baseAllowlist = func() []cgroup.DeviceRule {
		rules := slices.Clone(baseDevices)
		for major := ptyMajors[0]; major <= ptyMajors[1]; major++ {
			rules = append(rules, cgroup.DeviceRule{Type: cgroup.CharDevice, Major: major, Minor: cgroup.AnyDeviceNumber, Access: "rwm"})
		}
		return slices.Clip(rules)
	}()
)

// reservedDev are the names the init puts directly in every sandbox's
// /dev: a device may not take their place, nor go under them.
var reservedDev = []string{
	"null", "zero", "full", "random", "urandom", "tty", "ptmx",
	"fd", "stdin", "stdout", "stderr", "pts", "shm", "mqueue",
}

// deviceAllowlist is the cgroup rule set of a sandbox with devs: its
// /dev's nodes, each device given to it, and then extra, the caller's own
// Resources.Devices.
func deviceAllowlist(devs []hostDevice, extra []cgroup.DeviceRule) []cgroup.DeviceRule {
	rules := make([]cgroup.DeviceRule, 0, len(baseAllowlist)+len(devs)+len(extra))
	rules = append(rules, baseAllowlist...)
	for _, d := range devs {
		n := d.node
		rules = append(rules, cgroup.DeviceRule{Type: cgroup.DeviceType(n.Type), Major: int64(n.Major), Minor: int64(n.Minor), Access: d.access})
	}
	return append(rules, extra...)
}

// A hostDevice is a Device checked and resolved: the node the init makes
// for it and what the sandbox may do with it.
type hostDevice struct {
	node   nsinit.Device
	access string
}

// resolveDevices checks devs and reads each one's host node: type,
// numbers, mode and owner, which the init gives the node it makes.
func resolveDevices(devs []Device) ([]hostDevice, error) {
	var out []hostDevice
	seen := make(map[string]bool)
	for _, d := range devs {
		n, err := resolveDevice(d)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidDevice, err)
		}
		if seen[n.node.Path] {
			return nil, fmt.Errorf("%w: two devices at %s", ErrInvalidDevice, n.node.Path)
		}
		seen[n.node.Path] = true
		out = append(out, n)
	}
	return out, nil
}

func resolveDevice(d Device) (hostDevice, error) {
	if d.Source == "" {
		return hostDevice{}, errors.New("device with no source path")
	}
	if !path.IsAbs(d.Source) {
		return hostDevice{}, fmt.Errorf("device %s: source is not an absolute path", d.Source)
	}
	dst := d.Destination
	if dst == "" {
		dst = d.Source
	}
	if err := checkDeviceDestination(dst); err != nil {
		return hostDevice{}, fmt.Errorf("device %s: %w", d.Source, err)
	}
	access := d.Access
	if access == "" {
		access = "rwm"
	}
	if err := checkDeviceAccess(access); err != nil {
		return hostDevice{}, fmt.Errorf("device %s: %w", d.Source, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(d.Source, &st); err != nil {
		return hostDevice{}, fmt.Errorf("device %s: %w", d.Source, err)
	}
	n := nsinit.Device{
		Path:   path.Clean(dst),
		Source: d.Source,
		Major:  unix.Major(st.Rdev),
		Minor:  unix.Minor(st.Rdev),
		Mode:   st.Mode & 0o777,
		UID:    st.Uid,
		GID:    st.Gid,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		n.Type = 'c'
	case unix.S_IFBLK:
		n.Type = 'b'
	default:
		return hostDevice{}, fmt.Errorf("device %s: not a character or block device", d.Source)
	}
	return hostDevice{node: n, access: access}, nil
}

// checkDeviceDestination accepts an absolute path under /dev that none of
// the sandbox's own nodes, links and mounts in /dev takes or hides.
func checkDeviceDestination(dst string) error {
	if !path.IsAbs(dst) {
		return fmt.Errorf("destination %q is not an absolute path", dst)
	}
	rel, ok := strings.CutPrefix(path.Clean(dst), "/dev/")
	if !ok {
		return fmt.Errorf("destination %s is not under /dev", dst)
	}
	first, _, _ := strings.Cut(rel, "/")
	for _, r := range reservedDev {
		if first == r {
			return fmt.Errorf("destination %s: every sandbox's /dev has its own /dev/%s", dst, r)
		}
	}
	return nil
}

// checkDeviceAccess accepts a non-empty subset of "rwm", each letter at
// most once.
func checkDeviceAccess(access string) error {
	seen := ""
	for _, c := range access {
		if !strings.ContainsRune("rwm", c) {
			return fmt.Errorf("access %q: %q is not r, w or m", access, c)
		}
		if strings.ContainsRune(seen, c) {
			return fmt.Errorf("access %q: %q twice", access, c)
		}
		seen += string(c)
	}
	if seen == "" {
		return errors.New("access is empty")
	}
	return nil
}

// deviceSpecs are the nodes the init adds to /dev. It makes each with
// mknod, except where mknod is not the sandbox's to use: in a user
// namespace, which forbids it, and for a device the sandbox may not mknod
// (no "m" in its access), whose node is bound from the host's instead.
func deviceSpecs(devs []hostDevice, userNS bool) []nsinit.Device {
	out := make([]nsinit.Device, len(devs))
	for i, d := range devs {
		out[i] = d.node
		out[i].Bind = userNS || !strings.Contains(d.access, "m")
	}
	return out
}
