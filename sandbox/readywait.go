package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Start builds the sandbox and starts its workload, returning once the
// workload's program is running, and, with Options.WaitFor, once its
// service is ready. Cancelling ctx afterwards ends the sandbox, as
// exec.CommandContext does (with Options.Grace: SIGTERM first, SIGKILL
// once it has passed), and the Result says Canceled; cancelling it
// before, or Options.Timeout running out before, stops the start at once,
// and the error wraps ctx's cause (context.Canceled,
// context.DeadlineExceeded). Options.Timeout counts from the call of
// Start, not from the workload's start. An error from Start means that no
// workload ran (it is ErrSetup or ErrExec, with the reason), and that the
// sandbox holds nothing any more: there is no Result to wait for.
//
// The one exception is a readiness wait that fails (a check fails,
// Options.ReadyTimeout runs out, the workload ends first): the workload
// ran, and Start has ended it (SIGTERM first, with a Grace, as Stop
// does; SIGKILL at once if ctx is done) and waited until the sandbox was
// torn down. The error wraps ErrNotReady, names the check and says why
// (wrapping context.DeadlineExceeded when time ran out), and Wait returns
// how the workload ended.
func (s *Sandbox) Start(ctx context.Context) error {
	watches, err := s.prepareOutput()
	if err != nil {
		return fmt.Errorf("sandbox %s: %w", s.id, err)
	}
	if err := s.start(ctx); err != nil {
		return err
	}
	if len(s.opts.WaitFor) == 0 {
		return nil
	}
	timeout := s.opts.ReadyTimeout
	if timeout == 0 {
		timeout = DefaultReadyTimeout
	}
	rctx, cancel := context.WithTimeoutCause(ctx, timeout,
		fmt.Errorf("gave up after %v (ReadyTimeout): %w", timeout, context.DeadlineExceeded))
	defer cancel()
	if err := s.waitReady(rctx, s.opts.WaitFor, watches); err != nil {
		// A service that never became ready may still have something
		// to flush: it gets the Grace a timeout would give it, unless
		// the caller has given up on the start altogether.
		if s.opts.Grace == 0 || ctx.Err() != nil || s.Stop(ctx, s.opts.Grace) != nil {
			s.Kill()
		}
		<-s.done
		return fmt.Errorf("sandbox %s: %w", s.id, err)
	}
	return nil
}

// WaitReady waits until every check passes, or one fails, or ctx ends,
// or the workload ends; it works on a handle from Open too. It leaves the
// sandbox running whatever happens: unlike a failed Options.WaitFor, a
// failure here is the caller's to act on. The error wraps ErrNotReady,
// names the check that failed and says why, and wraps ctx's cause if ctx
// ended first.
func (s *Sandbox) WaitReady(ctx context.Context, checks ...ReadyCheck) error {
	if err := validateChecks(checks); err != nil {
		return fmt.Errorf("sandbox %s: %w", s.id, err)
	}
	s.mu.Lock()
	started := s.proc != nil && s.result != nil
	s.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	if err := s.waitReady(ctx, checks, nil); err != nil {
		return fmt.Errorf("sandbox %s: %w", s.id, err)
	}
	return nil
}

func validateChecks(checks []ReadyCheck) error {
	if err := checkReadyChecks(checks); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	return nil
}

func checkReadyChecks(checks []ReadyCheck) error {
	for i, c := range checks {
		if c == nil {
			return fmt.Errorf("ready check %d is nil", i)
		}
		if err := c.validate(); err != nil {
			return fmt.Errorf("%s: %w", c, err)
		}
	}
	return nil
}

// checkReadiness checks WaitFor, ReadyTimeout and LogBytes, for
// Options.Validate.
func checkReadiness(o *Options) error {
	if err := checkReadyChecks(o.WaitFor); err != nil {
		return fmt.Errorf("WaitFor: %w", err)
	}
	if o.ReadyTimeout < 0 {
		return fmt.Errorf("ReadyTimeout %v is negative (0 means %v)", o.ReadyTimeout, DefaultReadyTimeout)
	}
	if o.LogBytes < 0 {
		return fmt.Errorf("LogBytes %d is negative (0 keeps none)", o.LogBytes)
	}
	if o.Detachable && len(o.WaitFor) > 0 {
		// Its output waits in pipes until Supervise: a workload that
		// printed more than they hold while starting would block, and
		// never be ready.
		return errors.New("WaitFor on a Detachable sandbox: wait with WaitReady on a handle from Open once it is supervised")
	}
	if !o.keepsOutput() {
		return nil
	}
	// The output must pass through this process to be kept.
	_, outFile := o.Stdout.(*os.File)
	_, errFile := o.Stderr.(*os.File)
	switch {
	case o.Detachable:
		return errors.New("LogBytes and log checks on a Detachable sandbox, whose output is its supervisor's: read its log with ReadLog")
	case o.HandOverStdio && (outFile || errFile):
		return errors.New("LogBytes and log checks need the workload's output copied by this process, and HandOverStdio gives it Stdout and Stderr as they are")
	}
	return nil
}

// keepsOutput reports whether the sandbox's output goes through an
// outputLog: for Logs, or for log checks.
func (o *Options) keepsOutput() bool {
	if o.LogBytes > 0 {
		return true
	}
	for _, c := range o.WaitFor {
		if _, ok := c.(LogCheck); ok {
			return true
		}
	}
	return false
}

// waitReady runs the checks side by side; watches, if not nil, are the
// LogChecks' watches that Start set before the workload started, by index.
func (s *Sandbox) waitReady(ctx context.Context, checks []ReadyCheck, watches []*logWatch) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ended := s.ended(ctx)
	type outcome struct {
		check ReadyCheck
		err   error
	}
	results := make(chan outcome, len(checks))
	for i, c := range checks {
		var w *logWatch
		if watches != nil {
			w = watches[i]
		}
		go func() { results <- outcome{c, c.wait(ctx, s, w)} }()
	}
	var first error
	for pending := len(checks); pending > 0; {
		select {
		case o := <-results:
			pending--
			if o.err == nil || first != nil {
				continue
			}
			if errors.Is(o.err, ErrNotRunning) || ctx.Err() == nil && !s.initAlive() {
				first = s.endedFirst()
			} else {
				first = fmt.Errorf("%w: %s: %w", ErrNotReady, o.check, o.err)
			}
			cancel(first)
		case <-ended:
			ended = nil
			if first == nil {
				first = s.endedFirst()
				cancel(first)
			}
		}
	}
	return first
}

// endedFirst is the error of a readiness wait that the workload's end
// cut short.
func (s *Sandbox) endedFirst() error {
	s.mu.Lock()
	owned, done := s.cmd != nil, s.done
	s.mu.Unlock()
	if owned {
		// Its teardown follows its end closely; the Result says how.
		<-done
		s.mu.Lock()
		r := *s.result
		s.mu.Unlock()
		how := fmt.Sprintf("exit status %d", r.ExitCode)
		if r.Signal != 0 {
			how = fmt.Sprintf("signal %d (%v)", int(r.Signal), r.Signal)
		}
		if r.TimedOut {
			// Options.Timeout ran out during the wait: time ran out, as
			// Start says of ReadyTimeout.
			return fmt.Errorf("%w: the workload ended (%s) before it was ready: its Timeout ran out: %w", ErrNotReady, how, context.DeadlineExceeded)
		}
		return fmt.Errorf("%w: the workload ended (%s) before it was ready", ErrNotReady, how)
	}
	return fmt.Errorf("%w: the workload ended before it was ready", ErrNotReady)
}

// ended returns a channel closed once the sandbox's workload has ended,
// or nil if that cannot be known.
func (s *Sandbox) ended(ctx context.Context) <-chan struct{} {
	s.mu.Lock()
	owned, done := s.cmd != nil, s.done
	s.mu.Unlock()
	if owned {
		return done
	}
	// A handle from Open: the init is the supervisor's child, whose end
	// only it is told of. Polled, for as long as the wait lasts.
	c := make(chan struct{})
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for s.initAlive() {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		close(c)
	}()
	return c
}

// prepareOutput sets up what keeps the workload's output (Options.LogBytes
// and the LogChecks of Options.WaitFor), before the workload starts so
// that no line is missed, and returns the LogChecks' watches by index.
func (s *Sandbox) prepareOutput() ([]*logWatch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return nil, nil // start says so
	}
	o := &s.opts
	if err := checkReadiness(o); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	if !o.keepsOutput() {
		return nil, nil
	}
	if s.pool != nil {
		return nil, fmt.Errorf("%w: LogBytes and log checks: a pooled sandbox's output is not kept", ErrInvalidOptions)
	}
	s.output = newOutputLog(o.LogBytes)
	watches := make([]*logWatch, len(o.WaitFor))
	for i, c := range o.WaitFor {
		if lc, ok := c.(LogCheck); ok {
			watches[i] = s.output.watch(lc.Match, lc.Stream, lc.Times)
		}
	}
	return watches, nil
}

// teeOutputs returns the workload's stdout and stderr writers with the
// output log's tee in front, if it keeps one. One writer for both (one
// pipe, whose order matters) stays one, as stdout.
func (s *Sandbox) teeOutputs(out, errw io.Writer) (io.Writer, io.Writer) {
	if s.output == nil {
		return out, errw
	}
	if out != nil && sameWriter(out, errw) {
		w := s.output.writer(out, "stdout")
		return w, w
	}
	return s.output.writer(out, "stdout"), s.output.writer(errw, "stderr")
}

// teeTerminal is teeOutputs for a terminal's one stream.
func (s *Sandbox) teeTerminal(out io.Writer) io.Writer {
	if s.output == nil {
		return out
	}
	return s.output.writer(out, "stdout")
}

// resultOfFailedStart is what Run returns when Start failed: the Result
// too, if the workload ran (its readiness wait failed).
func (s *Sandbox) resultOfFailedStart(err error) (*Result, error) {
	if errors.Is(err, ErrNotReady) {
		if r, werr := s.Wait(); r != nil {
			return r, errors.Join(err, werr)
		}
	}
	return nil, err
}
