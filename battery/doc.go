// Package battery is berth's hostile battery: workloads that attack the
// host from inside a sandbox, each run under security.Default() and
// security.Strict(), each asserting that the attack is refused.
//
// The attacks are made by one static program, internal/attacker, which the
// tests build and bind read-only into sandboxes made from the shared
// Alpine image. It takes the name of a case, tries the attack with raw
// system calls, and prints its verdict as one JSON line on its standard
// error: whether it attempted the attack, whether the attack worked, and
// the errno that stopped it. A verdict is only half of a case: where the
// attack's effect would land on the host (a loop device's backing file, the
// kernel log, the neighbour table, a listener on the host's loopback, a
// file given as standard output, a host directory behind a planted
// symlink), the test looks at the host itself afterwards.
//
// Cases that need a capability the preset drops (CAP_MKNOD for devices,
// CAP_NET_RAW for forged packets) also run with that capability given
// back, so that what is tested is the device cgroup or the network's
// filter and not only the capability.
//
// TestBatteryCanFail takes each protection that has a switch away (the
// seccomp filter, masked paths, the device allowlist by passing the
// attacked device in Options.Devices, pipes for standard streams by
// Options.HandOverStdio, nosuid and nodev by a volume's "suid,dev", the
// disk quota, dropped capabilities, the presets' limits) and checks that
// the cases naming it then fail: a case that passes without its
// protection tests nothing.
//
// The battery runs in `make test` (go test ./..., as root). Sizes are kept
// small: a quota of a few MiB, a fork bomb capped just above the pids
// limit, and nothing that would exhaust one of the host's shared limits
// even briefly.
package battery
