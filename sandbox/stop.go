package sandbox

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Stop ends the sandbox's workload gracefully: SIGTERM to its PID 1's
// workload, then, if it has not ended within grace, SIGKILL to every
// process in the sandbox. It returns once the workload has ended, or
// with ctx's error (the sandbox then still gets its SIGKILL when grace
// runs out). It works on a handle from Open too. Stopping a sandbox that
// has already ended is not an error.
func (s *Sandbox) Stop(ctx context.Context, grace time.Duration) error {
	return fmt.Errorf("Stop: %w", errors.ErrUnsupported) // issue 14: goapi branch
}

// An ExitError is returned by Output and CombinedOutput when the workload
// ran but did not succeed: its Result says how it ended.
type ExitError struct {
	*Result
	// Stderr holds what the workload wrote to its standard error, if
	// Output collected it (at most 64 KiB, the end kept), as
	// os/exec.ExitError.Stderr does.
	Stderr []byte
}

func (e *ExitError) Error() string {
	if e.Signal != 0 {
		return fmt.Sprintf("sandbox workload killed by %v", e.Signal)
	}
	return fmt.Sprintf("sandbox workload exited with status %d", e.ExitCode)
}

// Output runs the sandbox and returns its standard output. Options.Stdout
// must be nil. If the workload ran and failed, the error is an *ExitError
// with the Result; a sandbox that could not start returns Run's error.
func (s *Sandbox) Output(ctx context.Context) ([]byte, error) {
	return nil, fmt.Errorf("Output: %w", errors.ErrUnsupported) // issue 14: goapi branch
}

// CombinedOutput is Output with standard error interleaved, as os/exec's
// is. Options.Stdout and Options.Stderr must be nil.
func (s *Sandbox) CombinedOutput(ctx context.Context) ([]byte, error) {
	return nil, fmt.Errorf("CombinedOutput: %w", errors.ErrUnsupported) // issue 14: goapi branch
}
