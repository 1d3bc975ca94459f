// Package security decides what a sandboxed process may do: which
// capabilities it keeps, which system calls its seccomp filter allows,
// which paths of /proc and /sys it may not see or write, whether it runs
// in a user namespace, whether Landlock confines it to its own tree, which
// SELinux or AppArmor labels it gets, and whether it may gain privileges.
// Package sandbox applies it.
//
// Default is what a careful container runtime gives a workload it trusts
// somewhat (Docker's capabilities less MKNOD and NET_RAW, Docker's seccomp
// profile, limits on processes, memory and message queues); Strict is for
// untrusted code. Seccomp profiles use the JSON format Docker and the OCI
// runtime spec share, and compile with libseccomp.
package security
