//go:build !amd64

package nsinit

import "github.com/berth-dev/berth/security"

// StandbySyscalls is not worked out for this architecture: nil, and
// seccomp filters are loaded just before the workload's exec.
func StandbySyscalls(landlock bool) []security.Syscall { return nil }

// ExecSyscalls is not worked out for this architecture: nil, and filters
// are not checked for what the start of a workload needs.
func ExecSyscalls(noNewPrivs bool) []security.Syscall { return nil }
