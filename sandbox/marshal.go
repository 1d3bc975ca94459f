package sandbox

import (
	"fmt"

	"github.com/berth-dev/berth/sandbox/internal/nsinit"
)

// marshalSpec encodes spec for the init, and classes what is wrong with
// one it cannot send. Arguments and environment execve(2) would refuse are
// the program's to fix (ErrExec, berth's 126, as the kernel's E2BIG would
// be); a spec too large for the init for any other reason, so many or so
// large mounts, devices or sysctls, is a sandbox that cannot be made
// (ErrSetup, 125).
func marshalSpec(spec *nsinit.Spec) ([]byte, error) {
	if err := spec.CheckExec(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrExec, err)
	}
	enc, err := spec.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	return enc, nil
}
