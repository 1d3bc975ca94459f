// Package cgroup puts sandboxes into Linux control groups: it limits what
// they may use (memory, swap, CPU, process count, I/O weight, device
// nodes), reports what they used, and freezes, kills and removes them as a
// unit.
//
// A Manager finds the host's cgroup layout once, at NewManager, by reading
// /proc/self/mountinfo:
//
//   - V2: a single unified (cgroup2) hierarchy, normally at /sys/fs/cgroup,
//     that carries every controller. This is what most hosts run.
//   - V1: one cgroup v1 hierarchy per controller (or per group of
//     co-mounted controllers, such as cpu,cpuacct), and no cgroup2 mount.
//   - Hybrid: v1 hierarchies carry the controllers, and a cgroup2 hierarchy
//     (normally at /sys/fs/cgroup/unified) carries none. Limits and usage
//     come from v1; the unified hierarchy is still used for what needs no
//     controller: cgroup.kill, cgroup.freeze, cgroup.events,
//     CLONE_INTO_CGROUP and BPF device programs.
//
// Options can force a mode or name the mount points to use instead.
//
// Every cgroup a Manager creates lives in one directory that berth owns,
// Options.Parent ("berth" by default), directly under the root of each
// hierarchy; for example /sys/fs/cgroup/berth/NAME on a V2 host and
// /sys/fs/cgroup/memory/berth/NAME, /sys/fs/cgroup/pids/berth/NAME, ... and
// /sys/fs/cgroup/unified/berth/NAME on a Hybrid one. The package never
// writes to a cgroup outside that directory, with one exception the kernel
// leaves no way around: on V2 it enables the controllers it needs in the
// parent's own cgroup.subtree_control. It never writes to the hierarchy
// root; a controller the root does not delegate to the parent is reported
// as unsupported. The parent must hold no processes itself (on V2 the
// kernel would refuse to enable controllers for its children otherwise).
//
// A process joins a cgroup in every hierarchy: Cgroup.Add moves a running
// process by PID, and a single-threaded process can move itself through
// the files Cgroup.JoinFiles opens, which is much cheaper on v1. On V2 and
// Hybrid a child can also be started directly inside the unified cgroup
// with CLONE_INTO_CGROUP (syscall.SysProcAttr.UseCgroupFD) on a descriptor
// of Cgroup.V2Dir; on Hybrid it must still join the v1 hierarchies.
//
// Kill and Remove end every process in a cgroup without racing against
// forks or PID reuse: with cgroup.kill where the kernel has it (5.14 and
// later), otherwise by freezing the cgroup and signalling each member
// through a pidfd after checking, through /proc, that the PID still names a
// member. Remove only ever rmdirs: cgroupfs directories hold interface
// files, not data, and must never be removed recursively.
//
// Errors name the cgroup file or directory involved and wrap the sentinel
// errors of this package (ErrExists, ErrNotFound, ErrInvalidName,
// ErrInvalidResources) or errors.ErrUnsupported when the host lacks the
// controller or interface file a request needs, so callers can test them
// with errors.Is.
//
// A Manager and its Cgroups are safe for concurrent use. State changes on
// one Cgroup value (Update, Freeze, Thaw, Kill, Remove) are serialised;
// two values for the same cgroup, such as one from Create and one from
// Open, are not serialised against each other.
package cgroup
