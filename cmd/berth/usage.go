package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/sandbox"
)

// A usageError is a flag or argument berth cannot take. It is a
// sandbox.ErrInvalidOptions, and so an ErrSetup: the command exits 125, as
// Docker's does for its own errors, never with a status a workload could
// have given.
type usageError struct{ err error }

func (e usageError) Error() string   { return e.err.Error() }
func (e usageError) Unwrap() []error { return []error{e.err, sandbox.ErrInvalidOptions} }

// invalidFlag returns a usageError with the message fmt.Errorf makes.
func invalidFlag(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// flagError is a command's cobra.FlagErrorFunc: a flag that cannot be
// parsed (--cpus x, --timeout 5) is a usageError too.
func flagError(_ *cobra.Command, err error) error { return usageError{err} }

// quoteArg quotes a user's value for a message, cut to its first 64
// bytes: a mistaken one may be kilobytes long.
func quoteArg(s string) string {
	const max = 64
	if len(s) <= max {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:max], len(s))
}
