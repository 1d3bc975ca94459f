package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// OutputLimit bounds what Output and CombinedOutput keep of a workload's
// output in this process's memory: a workload may write without end, and
// it is the host that would run out of memory. What comes past it is read
// and dropped, so that the workload is never blocked on a full pipe.
const OutputLimit = 64 << 20

// stderrTail is how much of the workload's standard error an ExitError
// keeps: its end, where the reason for a failure usually is.
const stderrTail = 64 << 10

// ErrOutputLimit means Output or CombinedOutput kept only the first
// OutputLimit bytes of what the workload wrote.
var ErrOutputLimit = errors.New("sandbox output larger than OutputLimit")

// Output runs the sandbox and returns its standard output. Options.Stdout
// must be nil. If the workload ran and failed, the error is an *ExitError
// with the Result; a sandbox that could not start returns Run's error.
// Output keeps at most OutputLimit bytes: past it, the rest is dropped,
// and the error wraps ErrOutputLimit.
//
// A workload that ran but did not succeed — it exited with a status other
// than 0, a signal ended it, or Timeout or ctx ended it (TimedOut,
// Canceled), even if it then exited with 0 — gives an *ExitError, found
// with errors.As: its Result is Run's, its Stderr the end of what the
// workload wrote to its standard error if Options.Stderr was nil. An
// error of the teardown after the workload (see Wait) is joined to it; on
// its own, it comes with the output, as the only error.
func (s *Sandbox) Output(ctx context.Context) ([]byte, error) {
	stdout, stderr := &limitedBuffer{max: OutputLimit}, &tailBuffer{max: stderrTail}
	if err := s.collect("Output", stdout, stderr, false); err != nil {
		return nil, err
	}
	res, err := s.Run(ctx)
	return collected(res, err, stdout, stderr)
}

// CombinedOutput is Output with standard error interleaved, as os/exec's
// is. Options.Stdout and Options.Stderr must be nil. Both go through one
// pipe, so that their order is the workload's.
func (s *Sandbox) CombinedOutput(ctx context.Context) ([]byte, error) {
	out := &limitedBuffer{max: OutputLimit}
	if err := s.collect("CombinedOutput", out, out, true); err != nil {
		return nil, err
	}
	res, err := s.Run(ctx)
	return collected(res, err, out, nil)
}

// collect makes stdout the workload's standard output, and stderr its
// standard error unless the caller gave one and need not be refused
// (mustSetStderr false).
func (s *Sandbox) collect(op string, stdout, stderr io.Writer, mustSetStderr bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.started:
		return fmt.Errorf("sandbox %s: %s: %w", s.id, op, ErrAlreadyStarted)
	case s.opts.Stdout != nil:
		return fmt.Errorf("sandbox %s: %s: Options.Stdout is set already", s.id, op)
	case s.opts.Stderr != nil && mustSetStderr:
		return fmt.Errorf("sandbox %s: %s: Options.Stderr is set already", s.id, op)
	}
	s.opts.Stdout = stdout
	if s.opts.Stderr == nil {
		s.opts.Stderr = stderr
	}
	return nil
}

// collected is what Output and CombinedOutput return once Run has.
func collected(res *Result, err error, out *limitedBuffer, stderr *tailBuffer) ([]byte, error) {
	if res == nil {
		return nil, err
	}
	var errs []error
	if !res.Success() || res.TimedOut || res.Canceled {
		ee := &ExitError{Result: res}
		if stderr != nil {
			ee.Stderr = stderr.bytes()
		}
		errs = append(errs, ee)
	}
	if out.dropped > 0 {
		errs = append(errs, fmt.Errorf("%w: kept the first %d bytes, dropped %d", ErrOutputLimit, OutputLimit, out.dropped))
	}
	if err != nil {
		errs = append(errs, err)
	}
	switch len(errs) {
	case 0:
		return out.buf, nil
	case 1:
		// As os/exec's, so that err.(*ExitError) works too.
		return out.buf, errs[0]
	}
	return out.buf, errors.Join(errs...)
}

// A limitedBuffer keeps the first max bytes written to it and counts the
// rest. Only one goroutine writes to it: the one copying its pipe.
type limitedBuffer struct {
	buf     []byte
	max     int
	dropped int64
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	keep := min(len(p), b.max-len(b.buf))
	b.buf = append(b.buf, p[:keep]...)
	b.dropped += int64(len(p) - keep)
	return len(p), nil
}

// A tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > b.max {
		p = p[len(p)-b.max:]
	}
	b.buf = append(b.buf, p...)
	// Trimmed once it holds twice what it keeps: a copy per max bytes
	// written, however small the writes.
	if len(b.buf) > 2*b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	return n, nil
}

func (b *tailBuffer) bytes() []byte {
	if len(b.buf) > b.max {
		return b.buf[len(b.buf)-b.max:]
	}
	return b.buf
}
