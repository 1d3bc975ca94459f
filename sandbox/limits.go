package sandbox

import (
	"errors"
	"slices"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/security"
)

// createCgroup makes the sandbox's cgroup with the limits its options ask
// for and, where they set none, the security configuration's defaults.
// On a host whose cgroups cannot enforce a default (its pids or memory
// controller is not delegated to berth, as in some containers), the
// sandbox goes without that default, with a warning: such hosts ran
// sandboxes before the presets had limits, and a limit the options ask
// for is never dropped.
func (s *Sandbox) createCgroup(cgm *cgroup.Manager, sec *security.Config) (*cgroup.Cgroup, error) {
	asked := s.opts.Resources
	var own []cgroup.DeviceRule
	if asked != nil {
		own = asked.Devices
	}
	// The device rules are the same whatever limits go: built once.
	devices := deviceAllowlist(s.devices, own)
	create := func(r *cgroup.Resources) (*cgroup.Cgroup, error) {
		var with cgroup.Resources
		if r != nil {
			with = *r
		}
		with.Devices = devices
		return cgm.Create(s.id, &with)
	}
	full := resources(asked, sec)
	cg, err := create(full)
	if err == nil || !errors.Is(err, errors.ErrUnsupported) {
		return cg, err
	}
	// Each default alone, then none; a set of limits already tried (the
	// options set that limit themselves) is not tried again.
	tried := [][2]int64{limits(full)}
	for _, r := range []*cgroup.Resources{
		resources(asked, &security.Config{PidsMax: sec.PidsMax}),
		resources(asked, &security.Config{MemoryMax: sec.MemoryMax}),
		asked,
	} {
		if slices.Contains(tried, limits(r)) {
			continue
		}
		tried = append(tried, limits(r))
		cg, err2 := create(r)
		if err2 == nil {
			s.log.Warn("the host's cgroups cannot enforce the security configuration's default limits; going without",
				"id", s.id, "err", err, "pids", limits(r)[0], "memory", limits(r)[1])
			return cg, nil
		}
		if !errors.Is(err2, errors.ErrUnsupported) {
			return nil, err2
		}
	}
	return nil, err
}

// limits returns r's pids and memory limits, 0 (none) for nil.
func limits(r *cgroup.Resources) [2]int64 {
	if r == nil {
		return [2]int64{}
	}
	return [2]int64{r.PidsMax, r.MemoryMax}
}
