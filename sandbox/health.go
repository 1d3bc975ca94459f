package sandbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/clip"
)

// ErrNoHealthcheck means a HealthCheck found no command to run: the image
// has no HEALTHCHECK, or disables it with HEALTHCHECK NONE.
var ErrNoHealthcheck = errors.New("no healthcheck")

// Docker's defaults for what a HEALTHCHECK leaves out.
const (
	defaultHealthInterval = 30 * time.Second
	defaultHealthTimeout  = 30 * time.Second
	defaultHealthRetries  = 3
	// minHealthInterval bounds how often an image may have its command
	// run: an interval of a nanosecond would be a busy loop of Execs.
	minHealthInterval = 100 * time.Millisecond
	// maxHealthOutput is how much of a failed check's output its error
	// quotes.
	maxHealthOutput = 4 << 10
)

// A HealthCheck passes once the image's HEALTHCHECK (Dockerfile
// HEALTHCHECK CMD ...) succeeds: its command, run with Exec in the
// sandbox as its user and with its environment, exits 0. Each field set
// here replaces the image's; what neither sets takes Docker's defaults
// (interval and timeout 30s, start period 0, 3 retries).
//
// The first run is at once, then one every Interval. A run that fails or
// outlasts Timeout (it is then killed) counts towards Retries, except
// during StartPeriod; Retries failures in a row make the check fail, as
// they make Docker's container unhealthy. An image without HEALTHCHECK,
// or with HEALTHCHECK NONE, fails the check at once with ErrNoHealthcheck.
type HealthCheck struct {
	// Test is the command: ["CMD", program, args...] or ["CMD-SHELL",
	// "shell command"], as in an image's config.
	Test                           []string
	Interval, Timeout, StartPeriod time.Duration
	Retries                        int
}

func (c HealthCheck) String() string { return "HEALTHCHECK" }

func (c HealthCheck) validate() error {
	if c.Interval < 0 || c.Timeout < 0 || c.StartPeriod < 0 || c.Retries < 0 {
		return errors.New("negative Interval, Timeout, StartPeriod or Retries")
	}
	if len(c.Test) > 0 {
		if _, err := healthArgs(c.Test); err != nil {
			return err
		}
	}
	return nil
}

// healthArgs returns the command a HEALTHCHECK's test runs.
func healthArgs(test []string) ([]string, error) {
	if len(test) == 0 {
		return nil, fmt.Errorf("%w: the image has no HEALTHCHECK", ErrNoHealthcheck)
	}
	if test[0] == "NONE" {
		return nil, fmt.Errorf("%w: the image disables it (HEALTHCHECK NONE)", ErrNoHealthcheck)
	}
	switch test[0] {
	case "CMD":
		if len(test) > 1 {
			return test[1:], nil
		}
	case "CMD-SHELL":
		if len(test) == 2 {
			return []string{"/bin/sh", "-c", test[1]}, nil
		}
	}
	return nil, fmt.Errorf("healthcheck test %s: want NONE, CMD with a program, or CMD-SHELL with one command", clip.Quote(strings.Join(test, " ")))
}

// healthConfig is c over the image's HEALTHCHECK over Docker's defaults.
func (c HealthCheck) config(img *v1.HealthConfig) (args []string, hc v1.HealthConfig, err error) {
	if img != nil {
		hc = *img
	}
	if len(c.Test) > 0 {
		hc.Test = c.Test
	}
	if c.Interval > 0 {
		hc.Interval = c.Interval
	}
	if c.Timeout > 0 {
		hc.Timeout = c.Timeout
	}
	if c.StartPeriod > 0 {
		hc.StartPeriod = c.StartPeriod
	}
	if c.Retries > 0 {
		hc.Retries = c.Retries
	}
	// An image's values below zero mean nothing; take the defaults.
	if hc.Interval <= 0 {
		hc.Interval = defaultHealthInterval
	}
	hc.Interval = max(hc.Interval, minHealthInterval)
	if hc.Timeout <= 0 {
		hc.Timeout = defaultHealthTimeout
	}
	if hc.Retries <= 0 {
		hc.Retries = defaultHealthRetries
	}
	hc.StartPeriod = max(hc.StartPeriod, 0)
	args, err = healthArgs(hc.Test)
	return args, hc, err
}

func (c HealthCheck) wait(ctx context.Context, s *Sandbox, _ *logWatch) error {
	var img *v1.HealthConfig
	if i := s.Image(); i != nil && i.Config != nil {
		img = i.Config.Config.Healthcheck
	}
	args, hc, err := c.config(img)
	if err != nil {
		return err
	}
	started := time.Now()
	failures := 0
	var last error // the last run's failure
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
		case <-t.C:
			err := s.runHealthcheck(ctx, args, hc.Timeout)
			if err == nil {
				return nil
			}
			if errors.Is(err, ErrNotRunning) {
				return err
			}
			if ctx.Err() != nil {
				break // a run cut short by the wait's end says nothing
			}
			last = err
			if time.Since(started) >= hc.StartPeriod {
				if failures++; failures >= hc.Retries {
					return fmt.Errorf("unhealthy: failed %d times in a row, last: %w", failures, last)
				}
			}
			t.Reset(hc.Interval)
			continue
		}
		if last == nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("%w; last run: %w", context.Cause(ctx), last)
	}
}

// runHealthcheck runs a healthcheck's command once.
func (s *Sandbox) runHealthcheck(ctx context.Context, args []string, timeout time.Duration) error {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out capped
	out.max = maxHealthOutput
	res, err := s.Exec(actx, &ExecOptions{Args: args, Stdout: &out, Stderr: &out})
	if err != nil {
		return err
	}
	switch {
	case res.Canceled && ctx.Err() == nil:
		return fmt.Errorf("timed out after %v", timeout)
	case res.Canceled:
		return context.Cause(ctx)
	case res.ExitCode != 0:
		// The output is the workload's: quoted, so that it cannot pass
		// for more lines of a log the error ends up in.
		return fmt.Errorf("exit status %d, output %s", res.ExitCode, strconv.Quote(out.text(256)))
	}
	return nil
}

// capped keeps the first max bytes written to it and drops the rest,
// accepting everything, so that a command flooding its output is neither
// kept whole nor blocked.
type capped struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - len(c.b); room > 0 {
		c.b = append(c.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// text returns the first n bytes kept, spaces trimmed.
func (c *capped) text(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.TrimSpace(string(c.b[:min(n, len(c.b))]))
}
