//go:build linux

package cgroup

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Resources are limits for a cgroup. A zero field leaves the setting as it
// is: at Create, the kernel's default, which is no limit. A field set to
// -1 (any negative duration for CPUQuota) removes its limit, which is what
// Update needs to lift one.
//
// In Hybrid mode limits are set through the v1 controllers, which is where
// the host binds them.
type Resources struct {
	// MemoryMax is the most memory, in bytes, the cgroup may use; beyond
	// it the kernel reclaims, then OOM-kills inside the cgroup.
	// (memory.max; v1 memory.limit_in_bytes)
	MemoryMax int64

	// MemorySwapMax limits memory plus swap, in bytes, as Docker's
	// --memory-swap does: equal to MemoryMax it forbids swap, -1 allows
	// unlimited swap. A positive value needs a positive MemoryMax in the
	// same Resources, since v2 limits swap alone (memory.swap.max is set
	// to MemorySwapMax-MemoryMax) and v1 needs both, written in the order
	// that keeps memory ≤ memory+swap at every step.
	// (memory.swap.max; v1 memory.memsw.limit_in_bytes)
	//
	// On v1, raising MemoryMax above a MemorySwapMax set earlier needs a
	// new MemorySwapMax in the same Update.
	MemorySwapMax int64

	// CPUQuota is how much CPU time the cgroup may use per CPUPeriod,
	// added up over all CPUs; at least 1ms. (cpu.max; v1 cpu.cfs_quota_us)
	CPUQuota time.Duration

	// CPUPeriod is the accounting period of CPUQuota, from 1ms to 1s.
	// When CPUQuota is set and CPUPeriod is not, the period is 100ms.
	// (cpu.max; v1 cpu.cfs_period_us)
	CPUPeriod time.Duration

	// CPUWeight is the cgroup's share of contended CPU, from 1 to 10000;
	// the kernel's default is 100. (cpu.weight; v1 cpu.shares, converted)
	CPUWeight uint64

	// PidsMax is the most tasks (processes and threads) the cgroup may
	// hold; forks beyond it fail with EAGAIN. (pids.max)
	PidsMax int64

	// IOWeight is the cgroup's share of contended block I/O, from 1 to
	// 10000; the kernel's default is 100. (io.weight, or io.bfq.weight;
	// v1 blkio.weight or blkio.bfq.weight, converted to 10..1000)
	//
	// Unlike the other fields it is advisory: a weight only matters to
	// an I/O scheduler that honours weights (BFQ, or io.cost), and many
	// hosts run none. Where no weight file exists, the weight is skipped
	// with a warning in the Manager's log instead of failing.
	IOWeight uint16

	// Devices, if not nil, are the only device nodes the cgroup's
	// processes may open or make: anything no rule allows is refused with
	// EPERM, whatever their capabilities. An empty, non-nil list allows
	// none. Update replaces the whole list (on v1 by denying everything
	// and then allowing each rule, so that for a moment members can open
	// no device at all).
	//
	// Every mechanism of the layout enforces them: the v1 devices
	// controller (devices.deny, devices.allow) where it is mounted, and a
	// BPF_PROG_TYPE_CGROUP_DEVICE program on the cgroup2 hierarchy where
	// there is one, so on a Hybrid host both, and the kernel checks both.
	// On v1 a rule the parent cgroup does not allow is left out: the
	// kernel would refuse it, and the device is out of reach anyway.
	// The program is attached with BPF_PROG_ATTACH and goes with the
	// cgroup; the Manager loads one per distinct list and shares it
	// between its cgroups.
	Devices []DeviceRule
}

// maxPids is the most tasks pids.max takes: the kernel's PID_MAX_LIMIT on
// 64-bit machines. A larger limit would fail as EINVAL on write.
const maxPids = 1 << 22

// Validate reports the first field of r that no cgroup could be given, as
// an error wrapping ErrInvalidResources; Create and Update check the same.
// It lets a caller find a mistake before making anything.
func (r *Resources) Validate() error { return r.validate() }

func (r *Resources) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidResources}, args...)...)
	}
	switch {
	case r.MemoryMax < -1:
		return bad("MemoryMax %d (want bytes, or -1 for no limit)", r.MemoryMax)
	case r.MemorySwapMax < -1:
		return bad("MemorySwapMax %d (want bytes, or -1 for no limit)", r.MemorySwapMax)
	case r.MemorySwapMax > 0 && r.MemoryMax <= 0:
		return bad("MemorySwapMax %d needs a positive MemoryMax", r.MemorySwapMax)
	case r.MemorySwapMax > 0 && r.MemorySwapMax < r.MemoryMax:
		return bad("MemorySwapMax %d is less than MemoryMax %d", r.MemorySwapMax, r.MemoryMax)
	case r.CPUQuota > 0 && r.CPUQuota < time.Millisecond:
		return bad("CPUQuota %v is less than 1ms", r.CPUQuota)
	case r.CPUPeriod < 0 || r.CPUPeriod > 0 && (r.CPUPeriod < time.Millisecond || r.CPUPeriod > time.Second):
		return bad("CPUPeriod %v is not within 1ms..1s", r.CPUPeriod)
	case r.CPUWeight > 10000:
		return bad("CPUWeight %d is not within 1..10000", r.CPUWeight)
	case r.PidsMax < -1:
		return bad("PidsMax %d (want a number of tasks, or -1 for no limit)", r.PidsMax)
	case r.PidsMax > maxPids:
		return bad("PidsMax %d is above the kernel's most, %d (-1 means no limit)", r.PidsMax, maxPids)
	case r.IOWeight > 10000:
		return bad("IOWeight %d is not within 1..10000", r.IOWeight)
	}
	for _, d := range r.Devices {
		if err := d.validate(); err != nil {
			return err
		}
	}
	return nil
}

// defaultCPUPeriod is the kernel's default CFS period.
const defaultCPUPeriod = 100 * time.Millisecond

// cpuSharesFromWeight maps a v2 cpu.weight (1..10000, default 100) onto
// v1 cpu.shares (2..262144, default 1024), linearly, as the inverse of
// the mapping runc and systemd use the other way.
func cpuSharesFromWeight(w uint64) uint64 {
	return 2 + (w-1)*262142/9999
}

// blkioWeightFromIOWeight maps io.weight (1..10000) onto v1 blkio.weight
// (10..1000).
func blkioWeightFromIOWeight(w uint16) uint64 {
	return 10 + (uint64(w)-1)*990/9999
}

// bfqWeightFromIOWeight maps io.weight (1..10000) onto BFQ's weight
// (1..1000).
func bfqWeightFromIOWeight(w uint16) uint64 {
	return 1 + (uint64(w)-1)*999/9999
}

// v2SwapMax returns memory.swap.max for r (MemorySwapMax set): the swap
// alone, where Resources counts memory plus swap.
func v2SwapMax(r *Resources) string {
	if r.MemorySwapMax < 0 {
		return "max"
	}
	return strconv.FormatInt(r.MemorySwapMax-r.MemoryMax, 10)
}

// usec formats a duration in whole microseconds, the unit of every CPU
// bandwidth file.
func usec(d time.Duration) string {
	return strconv.FormatInt(d.Microseconds(), 10)
}

// v2CPUMax returns cpu.max ("$QUOTA $PERIOD") for r (CPUQuota or
// CPUPeriod set). current is the file's present content, needed to keep
// the quota when only the period changes.
func v2CPUMax(r *Resources, current string) string {
	switch {
	case r.CPUQuota > 0:
		return usec(r.CPUQuota) + " " + usec(cmp.Or(r.CPUPeriod, defaultCPUPeriod))
	case r.CPUQuota < 0 && r.CPUPeriod == 0:
		return "max" // the kernel keeps the current period
	case r.CPUQuota < 0:
		return "max " + usec(r.CPUPeriod)
	}
	quota, _, _ := strings.Cut(current, " ")
	return cmp.Or(quota, "max") + " " + usec(r.CPUPeriod)
}

// A setting is one value to write to one interface file.
type setting struct {
	file, value string
}

// Update changes the cgroup's limits; zero fields keep their current
// setting. Every needed controller is checked before anything is written,
// but the writes themselves are not atomic: if one fails, those before it
// stay applied.
func (c *Cgroup) Update(r *Resources) error {
	if err := r.validate(); err != nil {
		return fmt.Errorf("cgroup: update %s: %w", c.name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.apply(r)
}

func (c *Cgroup) apply(r *Resources) error {
	var plan []setting
	var err error
	if len(c.v1) > 0 {
		plan, err = c.planV1(r)
	} else {
		plan, err = c.planV2(r)
	}
	if err != nil {
		return err
	}
	for _, s := range plan {
		if err := writeFile(s.file, s.value); err != nil {
			return err
		}
	}
	if r.Devices != nil {
		return c.applyDevices(r.Devices)
	}
	return nil
}

// applyDevices makes rules the cgroup's device allowlist in every
// hierarchy that can enforce one.
func (c *Cgroup) applyDevices(rules []DeviceRule) error {
	enforced := false
	if _, ok := c.v1["devices"]; ok {
		if err := c.applyDevicesV1(rules); err != nil {
			return err
		}
		enforced = true
	}
	if c.unified != "" {
		if err := c.devs.attach(c.unified, rules); err != nil {
			return err
		}
		enforced = true
	}
	if !enforced {
		return unsupported("device rules", `no cgroup v1 "devices" hierarchy is mounted`)
	}
	return nil
}

func unsupported(what, why string) error {
	return fmt.Errorf("cgroup: %s: %s: %w", what, why, errors.ErrUnsupported)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// checkDir returns ErrNotFound if dir, a directory of the cgroup, is gone.
func checkDir(dir string) error {
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cgroup: %s: %w", dir, ErrNotFound)
		}
		return fmt.Errorf("cgroup: %w", err)
	}
	return nil
}

func (c *Cgroup) planV2(r *Resources) ([]setting, error) {
	dir := c.unified
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	avail, err := readFields(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	need := func(ctrl, what string) error {
		if slices.Contains(avail, ctrl) {
			return nil
		}
		return unsupported(what, fmt.Sprintf("controller %q is not enabled for %s (it must be in %s)",
			ctrl, dir, filepath.Join(filepath.Dir(dir), "cgroup.subtree_control")))
	}
	file := func(name string) string { return filepath.Join(dir, name) }

	var plan []setting
	if r.MemoryMax != 0 || r.MemorySwapMax != 0 {
		if err := need("memory", "memory limit"); err != nil {
			return nil, err
		}
	}
	if r.MemoryMax != 0 {
		plan = append(plan, setting{file("memory.max"), maxString(r.MemoryMax)})
	}
	if r.MemorySwapMax != 0 {
		if !exists(file("memory.swap.max")) {
			if r.MemorySwapMax > 0 {
				return nil, unsupported("swap limit", "no "+file("memory.swap.max")+" (kernel without swap accounting)")
			}
		} else {
			plan = append(plan, setting{file("memory.swap.max"), v2SwapMax(r)})
		}
	}
	if r.CPUQuota != 0 || r.CPUPeriod != 0 {
		if err := need("cpu", "CPU quota"); err != nil {
			return nil, err
		}
		current := ""
		if r.CPUQuota == 0 {
			if current, err = readString(file("cpu.max")); err != nil {
				return nil, err
			}
		}
		plan = append(plan, setting{file("cpu.max"), v2CPUMax(r, current)})
	}
	if r.CPUWeight != 0 {
		if err := need("cpu", "CPU weight"); err != nil {
			return nil, err
		}
		plan = append(plan, setting{file("cpu.weight"), strconv.FormatUint(r.CPUWeight, 10)})
	}
	if r.PidsMax != 0 {
		if err := need("pids", "pids limit"); err != nil {
			return nil, err
		}
		plan = append(plan, setting{file("pids.max"), maxString(r.PidsMax)})
	}
	if r.IOWeight != 0 {
		plan = c.appendIOWeight(plan, r.IOWeight,
			setting{file("io.weight"), "default " + strconv.FormatUint(uint64(r.IOWeight), 10)},
			setting{file("io.bfq.weight"), strconv.FormatUint(bfqWeightFromIOWeight(r.IOWeight), 10)})
	}
	return plan, nil
}

func (c *Cgroup) planV1(r *Resources) ([]setting, error) {
	dirOf := func(ctrl, what string) (string, error) {
		dir := c.v1[ctrl]
		if dir == "" {
			return "", unsupported(what, fmt.Sprintf("no cgroup v1 %q hierarchy is mounted", ctrl))
		}
		return dir, checkDir(dir)
	}

	var plan []setting
	if r.MemoryMax != 0 || r.MemorySwapMax != 0 {
		dir, err := dirOf("memory", "memory limit")
		if err != nil {
			return nil, err
		}
		mem := setting{filepath.Join(dir, "memory.limit_in_bytes"), strconv.FormatInt(r.MemoryMax, 10)}
		swap := setting{filepath.Join(dir, "memory.memsw.limit_in_bytes"), strconv.FormatInt(r.MemorySwapMax, 10)}
		swapMax := r.MemorySwapMax
		if swapMax != 0 && !exists(swap.file) {
			// Without swap accounting nothing limits swap, which
			// satisfies -1 and nothing else.
			if swapMax > 0 {
				return nil, unsupported("swap limit", "no "+swap.file+" (kernel booted without swap accounting)")
			}
			swapMax = 0
		}
		switch {
		case swapMax == 0:
			plan = append(plan, mem)
		case r.MemoryMax == 0:
			plan = append(plan, swap)
		default:
			// The kernel keeps limit_in_bytes ≤ memsw.limit_in_bytes
			// after every write, so whichever limit makes room for
			// the other goes first.
			cur, err := readString(swap.file)
			if err != nil {
				return nil, err
			}
			curSwap, err := strconv.ParseInt(cur, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("cgroup: %s: %w", swap.file, err)
			}
			newMem := r.MemoryMax
			if newMem < 0 {
				newMem = math.MaxInt64
			}
			if swapMax < 0 || newMem > curSwap {
				plan = append(plan, swap, mem)
			} else {
				plan = append(plan, mem, swap)
			}
		}
	}
	if r.CPUQuota != 0 || r.CPUPeriod != 0 || r.CPUWeight != 0 {
		dir, err := dirOf("cpu", "CPU limit")
		if err != nil {
			return nil, err
		}
		period := r.CPUPeriod
		if r.CPUQuota > 0 {
			period = cmp.Or(period, defaultCPUPeriod)
		}
		if period != 0 {
			plan = append(plan, setting{filepath.Join(dir, "cpu.cfs_period_us"), usec(period)})
		}
		switch {
		case r.CPUQuota > 0:
			plan = append(plan, setting{filepath.Join(dir, "cpu.cfs_quota_us"), usec(r.CPUQuota)})
		case r.CPUQuota < 0:
			plan = append(plan, setting{filepath.Join(dir, "cpu.cfs_quota_us"), "-1"})
		}
		if r.CPUWeight != 0 {
			plan = append(plan, setting{filepath.Join(dir, "cpu.shares"), strconv.FormatUint(cpuSharesFromWeight(r.CPUWeight), 10)})
		}
	}
	if r.PidsMax != 0 {
		dir, err := dirOf("pids", "pids limit")
		if err != nil {
			return nil, err
		}
		plan = append(plan, setting{filepath.Join(dir, "pids.max"), maxString(r.PidsMax)})
	}
	if r.IOWeight != 0 {
		if dir := c.v1["blkio"]; dir != "" {
			plan = c.appendIOWeight(plan, r.IOWeight,
				setting{filepath.Join(dir, "blkio.weight"), strconv.FormatUint(blkioWeightFromIOWeight(r.IOWeight), 10)},
				setting{filepath.Join(dir, "blkio.bfq.weight"), strconv.FormatUint(bfqWeightFromIOWeight(r.IOWeight), 10)})
		} else {
			c.log.Warn("cgroup: no blkio hierarchy; IOWeight ignored", "io_weight", r.IOWeight)
		}
	}
	return plan, nil
}

// appendIOWeight adds the first candidate whose file exists. An I/O weight
// is advisory (see Resources.IOWeight), so having none is only logged.
func (c *Cgroup) appendIOWeight(plan []setting, weight uint16, candidates ...setting) []setting {
	var tried []string
	for _, s := range candidates {
		if exists(s.file) {
			return append(plan, s)
		}
		tried = append(tried, s.file)
	}
	c.log.Warn("cgroup: no I/O weight file (no weight-aware I/O scheduler); IOWeight ignored",
		"io_weight", weight, "tried", tried)
	return plan
}

// maxString formats a limit for files where "max" means none.
func maxString(n int64) string {
	if n < 0 {
		return "max"
	}
	return strconv.FormatInt(n, 10)
}
