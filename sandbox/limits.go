package sandbox

import (
	"errors"

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
	full := resources(asked, sec)
	cg, err := cgm.Create(s.id, withDevices(full, s.devices))
	if err == nil || full == asked || !errors.Is(err, errors.ErrUnsupported) {
		return cg, err
	}
	// Each default alone, then none.
	for _, r := range []*cgroup.Resources{
		resources(asked, &security.Config{PidsMax: sec.PidsMax}),
		resources(asked, &security.Config{MemoryMax: sec.MemoryMax}),
		asked,
	} {
		cg, err2 := cgm.Create(s.id, withDevices(r, s.devices))
		if err2 == nil {
			s.log.Warn("the host's cgroups cannot enforce the security configuration's default limits; going without",
				"id", s.id, "err", err, "pids", limitOf(r, func(r *cgroup.Resources) int64 { return r.PidsMax }),
				"memory", limitOf(r, func(r *cgroup.Resources) int64 { return r.MemoryMax }))
			return cg, nil
		}
		if !errors.Is(err2, errors.ErrUnsupported) {
			return nil, err2
		}
	}
	return nil, err
}

// limitOf returns the limit field picks of r, 0 (none) for nil.
func limitOf(r *cgroup.Resources, field func(*cgroup.Resources) int64) int64 {
	if r == nil {
		return 0
	}
	return field(r)
}
