//go:build linux

package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A DeviceType is the kind of device node a DeviceRule applies to.
type DeviceType byte

// Device types, as the first letter of a v1 devices.allow line.
const (
	CharDevice  DeviceType = 'c'
	BlockDevice DeviceType = 'b'
)

// AnyDeviceNumber, as a DeviceRule's Major or Minor, matches every number.
const AnyDeviceNumber = -1

// The largest device numbers Linux has: a dev_t holds a 12-bit major and
// a 20-bit minor.
const (
	maxMajor = 1<<12 - 1
	maxMinor = 1<<20 - 1
)

// A DeviceRule lets a cgroup's processes use device nodes of one type and
// number: open them for reading or writing, or make them with mknod(2).
// Rules only ever allow; what no rule allows is refused with EPERM,
// whatever the process's capabilities.
type DeviceRule struct {
	Type DeviceType
	// Major and Minor are the device's numbers, or AnyDeviceNumber.
	Major, Minor int64
	// Access is what the rule allows, some of "r" (open for reading),
	// "w" (open for writing) and "m" (mknod), each at most once.
	Access string
}

// String returns the rule as cgroup v1's devices.allow takes it, for
// example "c 1:3 rwm" or "c 136:* rw".
func (d DeviceRule) String() string {
	num := func(n int64) string {
		if n == AnyDeviceNumber {
			return "*"
		}
		return strconv.FormatInt(n, 10)
	}
	return string(d.Type) + " " + num(d.Major) + ":" + num(d.Minor) + " " + d.Access
}

func (d DeviceRule) validate() error {
	bad := func(why string) error {
		return fmt.Errorf("%w: device rule %q: %s", ErrInvalidResources, d.String(), why)
	}
	if d.Type != CharDevice && d.Type != BlockDevice {
		return bad("type must be CharDevice (c) or BlockDevice (b)")
	}
	if d.Major != AnyDeviceNumber && (d.Major < 0 || d.Major > maxMajor) {
		return bad(fmt.Sprintf("major %d is not within 0..%d", d.Major, maxMajor))
	}
	if d.Minor != AnyDeviceNumber && (d.Minor < 0 || d.Minor > maxMinor) {
		return bad(fmt.Sprintf("minor %d is not within 0..%d", d.Minor, maxMinor))
	}
	if _, err := parseAccess(d.Access); err != nil {
		return bad(err.Error())
	}
	return nil
}

// deviceAccess is a set of the BPF_DEVCG_ACC_* bits.
type deviceAccess uint8

const (
	accessMknod deviceAccess = 1 // BPF_DEVCG_ACC_MKNOD
	accessRead  deviceAccess = 2 // BPF_DEVCG_ACC_READ
	accessWrite deviceAccess = 4 // BPF_DEVCG_ACC_WRITE
	accessAll                = accessMknod | accessRead | accessWrite
)

// parseAccess reads a non-empty subset of "rwm", each letter at most once.
func parseAccess(s string) (deviceAccess, error) {
	if s == "" {
		return 0, errors.New("access is empty (want some of r, w and m)")
	}
	var a deviceAccess
	for _, c := range s {
		var bit deviceAccess
		switch c {
		case 'r':
			bit = accessRead
		case 'w':
			bit = accessWrite
		case 'm':
			bit = accessMknod
		default:
			return 0, fmt.Errorf("access %q: %q is not r, w or m", s, c)
		}
		if a&bit != 0 {
			return 0, fmt.Errorf("access %q: %q twice", s, c)
		}
		a |= bit
	}
	return a, nil
}

// applyDevicesV1 replaces what the v1 devices controller lets the cgroup
// use with rules: it denies every device, then allows each rule. Between
// the two, processes already in the cgroup can open no device; at Create
// there are none.
func (c *Cgroup) applyDevicesV1(rules []DeviceRule) error {
	dir := c.v1["devices"]
	if err := checkDir(dir); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "devices.deny"), "a"); err != nil {
		return err
	}
	if len(rules) == 0 {
		return nil
	}
	// One open for all the rules: cgroupfs takes each write(2) as one
	// line, and a sandbox's start pays for every system call here.
	file := filepath.Join(dir, "devices.allow")
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	defer f.Close()
	for _, r := range rules {
		line := r.String()
		if _, err := f.Write([]byte(line)); err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			// The kernel refuses to allow what the parent does not (a
			// host that runs berth in a container of its own may not
			// allow every pty major). The device is out of reach either
			// way, so the rest of the list still applies.
			if errors.Is(err, unix.EPERM) {
				c.log.Debug("cgroup: device rule refused by the parent cgroup", "rule", line)
				continue
			}
			return fmt.Errorf("cgroup: write %q to %s: %w", line, file, err)
		}
	}
	return nil
}

// deviceKey identifies a rule set: sets with the same key behave alike
// and share one BPF program.
func deviceKey(rules []DeviceRule) string {
	var b strings.Builder
	for _, r := range rules {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}
