package sandbox

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The supervisor's log (SuperviseConfig.Log) is the CRI container log
// format, one entry per line:
//
//	2026-12-06T13:45:00.123456789Z stdout F the line's text
//
// a timestamp (RFC 3339, UTC, nanoseconds), the stream ("stdout" or
// "stderr"), "F" for a full line or "P" for part of a longer line (or
// one cut short when the stream ended or a bound was reached), a space,
// and the text without its newline. Entries are at most 16 KiB of text.

// A LogEntry is one entry of a supervisor's log.
type LogEntry struct {
	Time    time.Time
	Stream  string // "stdout" or "stderr"
	Partial bool   // the text does not end the line
	Text    []byte // without the newline
}

// LogOptions select what ReadLog returns.
type LogOptions struct {
	Since time.Time // entries at or after; zero for all
	Until time.Time // entries before; zero for no end
	Tail  int       // only the last Tail entries before following; 0 for all, -1 for none
	// Follow keeps reading as the log grows (and across its rotation)
	// until ctx is done, or, if Exit is set, until that file (the
	// supervisor's SuperviseConfig.Exit) exists and the log has been read
	// to its end.
	Follow bool
	Exit   string
}

// ReadLog calls fn with the entries of the log at path, oldest first,
// reading the rotated file (path+".1") before it. It stops at fn's first
// error, which it returns. A damaged line is skipped, not fatal: the log
// is written by berth, but its text is the workload's.
func ReadLog(ctx context.Context, path string, opts *LogOptions, fn func(LogEntry) error) error {
	return fmt.Errorf("ReadLog: %w", errors.ErrUnsupported) // issue 14: supervise branch
}
