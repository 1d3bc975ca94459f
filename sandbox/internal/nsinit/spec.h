// Records of the spec the host sends the sandbox's init on fd 3. Shared by
// nsinit.c and, through cgo, by the Go code that writes them.
#ifndef BERTH_SPEC_H
#define BERTH_SPEC_H

enum {
	TAG_ROOTFS = 1,
	TAG_HOSTNAME,
	TAG_CWD,
	TAG_PATH,
	TAG_ARG,
	TAG_ENV,
	TAG_UID,
	TAG_GID,
	TAG_GROUP,
	TAG_MOUNT,
	TAG_MASK,
	TAG_READONLY_PATH,
	TAG_READONLY_ROOT,
	TAG_NO_NEW_PRIVS,
	TAG_TTY,
	TAG_LOOPBACK,
	TAG_BIND_DEVICES,
	TAG_UNSHARE_CGROUP,
	TAG_CAPS,
	TAG_RLIMIT,
	TAG_SECCOMP,
	TAG_OOM_SCORE_ADJ,
	TAG_PIDFD,
	TAG_NAMESPACES,
	TAG_LANDLOCK,
	TAG_EXTRA_FILES,
	TAG_EXEC_WRITE,
	TAG_SECCOMP_FLAGS,
	TAG_NETNS_FD,
	TAG_BOUNDING,
	TAG_CGROUP_FD,
	TAG_SYSCTL,          // a /proc/sys file to write inside the sandbox
	TAG_DEVICE,          // an extra device node for /dev
	TAG_MOUNT_SOURCE_FD, // a bind mount's source, as a descriptor
	TAG_LATE_MOUNTS,     // standby: a message of mounts follows the workload's
	TAG_TTY_SIZE,        // the terminal's rows and columns, set before the workload runs
};

// A standby init's messages are framed: a 4-byte length, then records.
// The workload's message carries its descriptors, in this order: stdin,
// stdout, stderr, the extra files, then the console socket if TTY is set.
enum { STANDBY_MAX_FDS = 200 };

// A pooled sandbox's request may add mounts: with TAG_LATE_MOUNTS in the
// workload's message, a third message follows, of TAG_MOUNT records only,
// carrying the sources of its bind mounts as descriptors, one per bind
// mount and in their order (no TAG_MOUNT_SOURCE_FD). It is at most
// LATE_MOUNTS_MAX_BYTES.
enum { LATE_MOUNTS_MAX_BYTES = 64 << 10 };

// SPEC_MAX_BYTES bounds what the init reads of a spec (each message, for a
// standby init), so that a broken or hostile host side cannot make it
// allocate without limit. Arguments and environment, the bulk of a large
// spec, are themselves bounded by execve(2): at most 6 MiB, three quarters
// of the kernel's 8 MiB stack-limit ceiling (_STK_LIM), whatever the
// stack limit. The rest is room for everything else a spec holds.
enum { SPEC_MAX_BYTES = 8 << 20 };

enum {
	MOUNT_BIND = 1, // source is a host path, bound recursively; or, with a
	                // TAG_MOUNT_SOURCE_FD record after it, a detached mount
	                // tree of it, and source only names it in errors
	MOUNT_FS,       // a filesystem: proc, sysfs, tmpfs, devpts, mqueue
	MOUNT_DEV,      // the tmpfs for /dev, then filled with device nodes
};

#endif
