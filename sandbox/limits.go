package sandbox

import (
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/security"
)

// createCgroup makes the sandbox's cgroup with the limits its options ask
// for and, where they set none, the security configuration's defaults,
// and the sandbox's device allowlist. On a host whose cgroups cannot
// enforce a default (its pids or memory controller is not delegated to
// berth, as in some containers), the sandbox goes without that default,
// with a warning: such hosts ran sandboxes before the presets had limits.
// A limit the options ask for is never dropped: Create fails on it.
func (s *Sandbox) createCgroup(cgm *cgroup.Manager, sec *security.Config) (*cgroup.Cgroup, error) {
	defaults := security.Config{PidsMax: sec.PidsMax, MemoryMax: sec.MemoryMax}
	for _, d := range []struct {
		controller string
		limit      *int64
	}{{"pids", &defaults.PidsMax}, {"memory", &defaults.MemoryMax}} {
		if *d.limit == 0 {
			continue
		}
		ok, err := cgm.Enforces(d.controller)
		if err != nil {
			return nil, err
		}
		if !ok {
			s.log.Warn("the host's cgroups cannot enforce the security configuration's default limits; going without",
				"id", s.id, "controller", d.controller, "limit", *d.limit)
			*d.limit = 0
		}
	}
	r := cgroup.Resources{}
	if full := resources(s.opts.Resources, &defaults); full != nil {
		r = *full
	}
	r.Devices = deviceAllowlist(s.devices, r.Devices)
	return cgm.Create(s.id, &r)
}
