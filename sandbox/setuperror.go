package sandbox

import "errors"

// setupError wraps err, a reason a sandbox or an Exec'd process did not
// start, so that it is ErrSetup as well, unless it says ErrSetup or
// ErrExec already. Every failure of Start is one: callers (berth run's
// exit status 125) tell it from the workload's own failure by errors.Is,
// whichever step found it — an image that is not in the store, a user
// the image does not have, a mount source that does not exist, a full
// disk. The message stays err's own: "sandbox setup failed" would add
// nothing to "image "x": not found".
func setupError(err error) error {
	if err == nil || errors.Is(err, ErrSetup) || errors.Is(err, ErrExec) {
		return err
	}
	return &setupFailure{err}
}

type setupFailure struct{ err error }

func (e *setupFailure) Error() string   { return e.err.Error() }
func (e *setupFailure) Unwrap() []error { return []error{ErrSetup, e.err} }
