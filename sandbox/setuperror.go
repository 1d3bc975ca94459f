package sandbox

import (
	"errors"
	"fmt"
)

// setupError wraps err, a reason a sandbox or an Exec'd process did not
// start, with ErrSetup, unless it already says ErrSetup or ErrExec. Every
// failure of Start is one: callers (berth run's exit status 125) tell it
// from the workload's own failure by errors.Is, whichever step found it —
// an image that is not in the store, a user the image does not have, a
// mount source that does not exist, a network, a full disk.
func setupError(err error) error {
	if err == nil || errors.Is(err, ErrSetup) || errors.Is(err, ErrExec) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrSetup, err)
}
