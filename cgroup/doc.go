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
// Every cgroup a Manager creates lives in one parent directory,
// Options.Parent: "berth" by default, directly under the root of each
// hierarchy, or a nested path such as "system.slice/ci.service/berth"
// ("/a/b" and "a/b" are the same path, always taken from the root of each
// hierarchy). On a V2 host that is /sys/fs/cgroup/berth/NAME; on a Hybrid
// one /sys/fs/cgroup/memory/berth/NAME, /sys/fs/cgroup/pids/berth/NAME,
// ... and /sys/fs/cgroup/unified/berth/NAME. Every element of the path
// must match [A-Za-z0-9][A-Za-z0-9_.@-]*: "..", "." and empty elements
// are refused, so the path cannot leave the hierarchy. A path has at most
// 32 levels.
//
// The directories of the path that are missing are made, and marked as
// berth's with the trusted.berth.made extended attribute; RemoveParent
// removes only marked directories, deepest first, once they are empty,
// and so never one that an administrator or another program made. The
// sandbox cgroups Create makes are marked too, and List reports only
// those: whatever else lives in the parent is never taken for a leftover
// sandbox. An older berth marked nothing; what it left in a one-level
// parent (cgroups named by a sandbox ID, and an empty default "berth")
// is still reclaimed. The package writes to cgroups outside those it made in only
// two ways, both because the kernel leaves no way around them: on v1 it
// gives a new cpuset its parent's CPUs and memory nodes, and on V2 it
// enables the controllers sandboxes need in cgroup.subtree_control at
// every level of the path, from the top down. It never writes to the
// hierarchy root; a controller the root does not delegate is reported as
// unsupported. A level of the path that holds processes is an error
// (ErrParentHasProcesses): cgroup v2 gives no controllers to the children
// of a cgroup with processes.
//
// berth makes plain directories; it does not talk to systemd and does not
// make units. A path through systemd's units (elements ending in .slice,
// .service or .scope) is accepted only when the deepest such unit exists
// and systemd has delegated it (Delegate=yes, which systemd 251 and later
// mark with the trusted.delegate or user.delegate attribute); otherwise
// Create fails with ErrNotDelegated, because systemd owns the inside of
// its units and would fight what berth does there. Controllers are then
// enabled only from that unit down. To run sandboxes from a systemd
// service, give it Delegate=yes and DelegateSubgroup= (so that its own
// processes live in a leaf) and use a parent inside it, such as
// system.slice/ci.service/berth.
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
// ErrInvalidResources, ErrNotDelegated, ErrParentHasProcesses) or errors.ErrUnsupported when the host lacks the
// controller or interface file a request needs, so callers can test them
// with errors.Is.
//
// A Manager and its Cgroups are safe for concurrent use. State changes on
// one Cgroup value (Update, Freeze, Thaw, Kill, Remove) are serialised;
// two values for the same cgroup, such as one from Create and one from
// Open, are not serialised against each other.
package cgroup
