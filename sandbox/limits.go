package sandbox

import (
	"fmt"

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

// ErrInitOOM means the sandbox's init was killed for lack of memory before
// its workload started: its memory limit, or that of a cgroup above it,
// leaves too little. It is also an ErrSetup.
var ErrInitOOM error = initOOM{}

type initOOM struct{}

func (initOOM) Error() string {
	return "the sandbox's init was killed for lack of memory before its workload started"
}
func (initOOM) Is(target error) bool { return target == ErrSetup }

// startFailure explains err, a failure of the sandbox's init to start its
// workload: if the OOM killer struck in the sandbox's cgroup meanwhile,
// that is the reason, which the init could not report, and err, which
// says only that it ended, is replaced. Otherwise err is returned as it
// is.
func (s *Sandbox) startFailure(err error) error {
	if s.cg == nil {
		return err
	}
	killed, cgErr := s.cg.OOMKilled()
	if cgErr != nil || !killed {
		return err
	}
	limit := "none of its own"
	if r := resources(s.opts.Resources, s.security(&s.opts)); r != nil && r.MemoryMax > 0 {
		limit = fmt.Sprintf("%d bytes", r.MemoryMax)
	}
	return fmt.Errorf("%w (memory limit: %s, and those of the cgroups above it; a sandbox needs at least %d bytes to start)",
		ErrInitOOM, limit, MinMemory)
}
