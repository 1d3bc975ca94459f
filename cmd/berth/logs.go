package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/sandbox"
)

func newLogsCommand(g *globals) *cobra.Command {
	var (
		follow, timestamps bool
		tail, since, until string
	)
	cmd := &cobra.Command{
		Use:   "logs [-f] [--tail N] [--since WHEN] [--until WHEN] [-t] NAME",
		Short: "Print what a detached sandbox wrote to its standard output and error",
		Long: `Print what a detached sandbox (berth run -d) wrote: its standard output
to standard output and its standard error to standard error, as Docker
does. The supervisor keeps the last two log files of about 16 MiB each;
older output is gone.

WHEN is a duration before now (10m, 1h30m) or a time (RFC 3339, e.g.
2026-12-06T13:45:00Z, or seconds since 1970). With -f, logs keeps
printing what the sandbox writes, and ends once it has exited (or its
supervisor has died, as berth ps -a then shows).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := &sandbox.LogOptions{Follow: follow}
			var err error
			if opts.Tail, err = parseTail(tail); err != nil {
				return err
			}
			now := time.Now()
			if opts.Since, err = parseWhen(since, now); err != nil {
				return invalidFlag("--since: %w", err)
			}
			if opts.Until, err = parseWhen(until, now); err != nil {
				return invalidFlag("--until: %w", err)
			}
			l, err := g.find(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if l.Log == "" {
				return fmt.Errorf("%s: %w", clip.Quote(args[0]), errNoLog)
			}
			if follow {
				opts.Exit = l.Exit
				if l.Detached {
					// A supervisor killed with SIGKILL writes no exit
					// record: without this, -f would follow for ever.
					id := l.ID
					opts.Ended = func() bool { return g.orphaned(id) != "" }
				}
				if l.State == "exited" || l.State == "dead" {
					// It has ended: there is nothing to wait for.
					opts.Follow = false
				}
			}
			return printLog(cmd.Context(), l.Log, opts, timestamps, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what the sandbox writes, until it exits")
	cmd.Flags().BoolVarP(&timestamps, "timestamps", "t", false, "begin each line with the time it was written (RFC 3339)")
	cmd.Flags().StringVarP(&tail, "tail", "n", "all", "print only the last N lines (or all)")
	cmd.Flags().StringVar(&since, "since", "", "print only what was written since WHEN")
	cmd.Flags().StringVar(&until, "until", "", "print only what was written before WHEN")
	return cmd
}

// errNoLog is logs' error for a sandbox whose output went elsewhere.
var errNoLog = errors.New("not a detached sandbox: its output went to the berth run that started it (berth run -d keeps a log)")

// printLog copies the entries of the log at path to stdout and stderr,
// by their stream. Each entry is written with one call, so that a reader
// of both streams merged sees whole lines.
func printLog(ctx context.Context, path string, opts *sandbox.LogOptions, timestamps bool, stdout, stderr io.Writer) error {
	var buf []byte
	err := sandbox.ReadLog(ctx, path, opts, func(e sandbox.LogEntry) error {
		buf = buf[:0]
		if timestamps {
			buf = e.Time.UTC().AppendFormat(buf, time.RFC3339Nano)
			buf = append(buf, ' ')
		}
		buf = append(buf, e.Text...)
		if !e.Partial {
			buf = append(buf, '\n')
		}
		w := stdout
		if e.Stream == "stderr" {
			w = stderr
		}
		_, err := w.Write(buf)
		return err
	})
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		// Ctrl-C ends a follow: that is how it is meant to end.
		return nil
	}
	return err
}

// parseTail reads --tail: a count of lines, or "all".
func parseTail(s string) (int, error) {
	if s == "all" || s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, invalidFlag("--tail %s: want a number of lines, or all", clip.Quote(s))
	}
	if n == 0 {
		return -1, nil // none: ReadLog's -1
	}
	return n, nil
}

// parseWhen reads --since and --until: empty for no bound, a duration
// before now, an RFC 3339 time (with or without fractions and zone), or
// seconds since 1970 as Docker takes them.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%s: a duration before now must not be negative", clip.Quote(s))
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	if secs, frac, _ := strings.Cut(s, "."); secs != "" {
		if n, err := strconv.ParseInt(secs, 10, 64); err == nil && n >= 0 {
			var ns int64
			if frac != "" {
				f, err := strconv.ParseFloat("0."+frac, 64)
				if err != nil {
					return time.Time{}, fmt.Errorf("%s: want a duration (10m), an RFC 3339 time or seconds since 1970", clip.Quote(s))
				}
				ns = int64(f * 1e9)
			}
			return time.Unix(n, ns), nil
		}
	}
	return time.Time{}, fmt.Errorf("%s: want a duration (10m), an RFC 3339 time or seconds since 1970", clip.Quote(s))
}
