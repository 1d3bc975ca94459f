package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/sandbox"
)

// waitFlags are run's readiness flags: run returns (with -d) or the
// workload's output flows (without) only once the checks pass.
type waitFlags struct {
	specs   []string
	timeout time.Duration
	checks  []sandbox.ReadyCheck
}

func (f *waitFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.specs, "wait-for", nil, "wait until the sandbox is ready before returning (with -d): healthy (the image's HEALTHCHECK passes), tcp[:PORT] (a port answers; default the image's first EXPOSEd), http[:PORT][/PATH] (GET answers 2xx), log:REGEXP (an output line matches); repeat for several")
	cmd.Flags().DurationVar(&f.timeout, "wait-timeout", sandbox.DefaultReadyTimeout, "give up --wait-for after this long")
}

// parse checks the flags and makes their checks.
func (f *waitFlags) parse() error {
	if f.timeout <= 0 {
		return invalidFlag("--wait-timeout %v: want a positive duration", f.timeout)
	}
	for _, spec := range f.specs {
		c, err := parseReadyCheck(spec)
		if err != nil {
			return invalidFlag("--wait-for %s: %w", clip.Quote(spec), err)
		}
		f.checks = append(f.checks, c)
	}
	return nil
}

// parseReadyCheck reads one --wait-for value.
func parseReadyCheck(spec string) (sandbox.ReadyCheck, error) {
	kind, arg, hasArg := strings.Cut(spec, ":")
	var c sandbox.ReadyCheck
	switch kind {
	case "healthy":
		if hasArg {
			return nil, fmt.Errorf("healthy takes nothing after it")
		}
		c = sandbox.HealthCheck{}
	case "tcp":
		port, err := parsePort(arg, hasArg)
		if err != nil {
			return nil, err
		}
		c = sandbox.TCPCheck{Port: port}
	case "http":
		num, path, _ := strings.Cut(arg, "/")
		port, err := parsePort(num, num != "")
		if err != nil {
			return nil, err
		}
		c = sandbox.HTTPCheck{Port: port, Path: "/" + path}
	case "log":
		re, err := regexp.Compile(arg)
		if err != nil || !hasArg || arg == "" {
			return nil, fmt.Errorf("log:REGEXP wants a regular expression (%v)", err)
		}
		c = sandbox.LogCheck{Match: re}
	default:
		return nil, fmt.Errorf("want healthy, tcp[:PORT], http[:PORT][/PATH] or log:REGEXP")
	}
	// The rest of its checks, at once rather than in the child.
	if err := (&sandbox.Options{WaitFor: []sandbox.ReadyCheck{c}}).Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func parsePort(s string, given bool) (int, error) {
	if !given {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %s: want 1 to 65535", clip.Quote(s))
	}
	return n, nil
}

// waitDetached waits for a detached sandbox, which runs under its
// supervisor by now, to be ready, through a handle from Open: its output
// is in the supervisor's log already, so no pipe fills while it starts.
// A sandbox that does not become ready is left running, for logs and
// inspect to explain, and berth rm -f to remove.
func (f *waitFlags) waitDetached(ctx context.Context, id string, opts *sandbox.Options) error {
	if len(f.checks) == 0 {
		return nil
	}
	o := &sandbox.Options{Storage: opts.Storage, Cgroups: opts.Cgroups, StateDir: opts.StateDir, Logger: opts.Logger}
	sb, err := sandbox.Open(ctx, id, o)
	if err != nil {
		return err
	}
	defer sb.Close()
	ctx, cancel := context.WithTimeoutCause(ctx, f.timeout,
		fmt.Errorf("gave up after %v (--wait-timeout): %w", f.timeout, context.DeadlineExceeded))
	defer cancel()
	return sb.WaitReady(ctx, f.checks...)
}
