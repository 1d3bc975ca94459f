package sandbox

// Pids returns the host's process IDs of every process in the running
// sandbox (its PID 1 and the workload's processes, those Exec started
// included), sorted, as its cgroup lists them: what berth top reads
// /proc for. A process may end, and its PID be reused, as soon as the
// list is read; callers that act on a PID must check that it is still
// in the sandbox (its /proc/PID/cgroup names the sandbox's ID).
func (s *Sandbox) Pids() ([]int, error) {
	cg, err := s.runningCgroup()
	if err != nil {
		return nil, err
	}
	return cg.Pids()
}
