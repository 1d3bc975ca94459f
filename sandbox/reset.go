package sandbox

import (
	"context"
	"errors"
)

// Reset throws away what the sandbox's workload wrote to its rootfs and
// starts its command again from the image as it was, keeping the sandbox's
// ID, cgroup and network attachment (its addresses and published ports):
// a clean sandbox for the next test without paying for a full start.
func (s *Sandbox) Reset(ctx context.Context) error {
	return errors.ErrUnsupported // day-0 contract
}
