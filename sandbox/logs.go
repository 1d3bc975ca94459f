package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/berth-dev/berth/sandbox/internal/nsinit"
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
//
// A workload's text cannot forge an entry: it is written after the
// header of its own entry, and a newline in it ends that entry and starts
// the next one with a header of the supervisor's. A terminal's output
// (Options.TTY) is all "stdout", with the "\r" before each newline left
// out.

// LogEntryMax is the most text one entry of a supervisor's log holds.
const LogEntryMax = nsinit.SuperviseEntryMax

// maxLogLine is the longest well-formed line: the header (a timestamp of
// 30 bytes, a stream, a tag, three spaces) and the most text.
const maxLogLine = 48 + LogEntryMax

// followPoll is how often ReadLog looks for more of a followed log.
const followPoll = 100 * time.Millisecond

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
	// Ended, if set, is asked at each look while following. Once it
	// reports true, the log is read to its end and following stops, as
	// when Exit appears: for a writer that can end without leaving Exit
	// behind, such as a supervisor killed with SIGKILL.
	Ended func() bool
}

// ReadLog calls fn with the entries of the log at path, oldest first,
// reading the rotated file (path+".1") before it. It stops at fn's first
// error, which it returns. A damaged line is skipped, not fatal: the log
// is written by berth, but its text is the workload's. A log that does
// not exist (yet) has no entries.
//
// Following ends without an error once an entry at or after Until has
// been seen, or once the Exit file exists (or Ended reports true) and the
// log is read to its end; with ctx's error when ctx is done. A rotation
// while following is followed into the new file; entries of a file that
// was rotated twice between two looks (every 100 ms) are missed. Memory stays bounded
// whatever the log holds: Tail keeps only the last Tail entries.
func ReadLog(ctx context.Context, path string, opts *LogOptions, fn func(LogEntry) error) error {
	var o LogOptions
	if opts != nil {
		o = *opts
	}
	if o.Tail < -1 {
		return fmt.Errorf("%w: LogOptions.Tail %d (0 for all, -1 for none)", ErrInvalidOptions, o.Tail)
	}
	lr := &logRead{opts: &o, fn: fn}
	if o.Tail > 0 {
		lr.ring = make([]LogEntry, 0, min(o.Tail, 1024))
	}
	lr.collecting = o.Tail != 0

	// The current file first: if it is rotated before the older one is
	// opened, the older one is then the same file, read once.
	cur, err := openLog(path)
	if err != nil {
		return err
	}
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	old, err := openLog(path + ".1")
	if err != nil {
		return err
	}
	if old != nil {
		if cur == nil || !old.sameFile(cur.f) {
			err = lr.drain(ctx, old)
		}
		old.Close()
		if err != nil {
			return lr.end(err)
		}
	}
	if cur != nil {
		if err := lr.drain(ctx, cur); err != nil {
			return lr.end(err)
		}
	}
	if err := lr.flushTail(); err != nil {
		return lr.end(err)
	}
	if !o.Follow {
		return nil
	}

	for {
		// The exit file comes after the last entry: once it is seen,
		// one more read to the end finds everything.
		exited := o.Exit != "" && fileExists(o.Exit) || o.Ended != nil && o.Ended()
		if next, err := openLog(path); err != nil {
			return err
		} else if next != nil && (cur == nil || !next.sameFile(cur.f)) {
			// Rotated (or created): the rest of the old file, then
			// the new one.
			if cur != nil {
				if err := lr.drain(ctx, cur); err != nil {
					next.Close()
					return lr.end(err)
				}
				cur.Close()
			}
			cur = next
		} else if next != nil {
			next.Close()
		}
		if cur != nil {
			if err := lr.drain(ctx, cur); err != nil {
				return lr.end(err)
			}
		}
		if exited {
			return nil
		}
		t := time.NewTimer(followPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// errPastUntil ends the reading of a log at its first entry at or after
// LogOptions.Until.
var errPastUntil = errors.New("past Until")

// logRead is one ReadLog's progress.
type logRead struct {
	opts       *LogOptions
	fn         func(LogEntry) error
	collecting bool       // the first pass of a Tail: entries go to ring
	ring       []LogEntry // the last Tail entries, from next on
	next       int        // the oldest entry of a full ring
}

// end turns the reading's end into ReadLog's error.
func (lr *logRead) end(err error) error {
	if errors.Is(err, errPastUntil) {
		if lr.collecting {
			return lr.flushTail()
		}
		return nil
	}
	return err
}

// drain reads f's complete lines as entries, to its current end.
func (lr *logRead) drain(ctx context.Context, f *logFile) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		line, err := f.line()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		e, ok := parseLogLine(line)
		if !ok {
			continue
		}
		if !lr.opts.Until.IsZero() && !e.Time.Before(lr.opts.Until) {
			return errPastUntil
		}
		if e.Time.Before(lr.opts.Since) {
			continue
		}
		if err := lr.take(e); err != nil {
			return err
		}
	}
}

// take passes e on, or keeps it for the tail.
func (lr *logRead) take(e LogEntry) error {
	if !lr.collecting {
		return lr.fn(e)
	}
	if lr.opts.Tail < 0 {
		return nil
	}
	if len(lr.ring) < lr.opts.Tail {
		lr.ring = append(lr.ring, e)
		return nil
	}
	lr.ring[lr.next] = e
	lr.next = (lr.next + 1) % len(lr.ring)
	return nil
}

// flushTail passes the kept tail on, oldest first, and ends collecting.
func (lr *logRead) flushTail() error {
	if !lr.collecting {
		return nil
	}
	lr.collecting = false
	ring, next := lr.ring, lr.next
	lr.ring = nil
	for i := range ring {
		if err := lr.fn(ring[(next+i)%len(ring)]); err != nil {
			return err
		}
	}
	return nil
}

// parseLogLine parses one line of a log, without its newline.
func parseLogLine(line []byte) (LogEntry, bool) {
	var e LogEntry
	ts, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(ts) > 40 {
		return e, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return e, false
	}
	stream, rest, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		return e, false
	}
	switch string(stream) {
	case "stdout":
		e.Stream = "stdout"
	case "stderr":
		e.Stream = "stderr"
	default:
		return e, false
	}
	tag, text, ok := bytes.Cut(rest, []byte(" "))
	if !ok || len(text) > LogEntryMax {
		return e, false
	}
	switch string(tag) {
	case "F":
	case "P":
		e.Partial = true
	default:
		return e, false
	}
	e.Time, e.Text = t, bytes.Clone(text)
	if e.Text == nil {
		e.Text = []byte{}
	}
	return e, true
}

// A logFile reads a log's lines, one complete line at a time, with a
// buffer of fixed size: a line too long to be an entry is skipped.
type logFile struct {
	f          *os.File
	buf        []byte
	start, end int
	skipping   bool // within a line too long to keep
}

// openLog opens a log file for reading; nil, nil if there is none.
func openLog(path string) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file", path)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &logFile{f: f, buf: make([]byte, 2*maxLogLine)}, nil
}

func (l *logFile) Close() error { return l.f.Close() }

// sameFile reports whether l reads the file f is.
func (l *logFile) sameFile(f *os.File) bool {
	a, err1 := l.f.Stat()
	b, err2 := f.Stat()
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// line returns the next complete line, without its newline, valid until
// the next call; io.EOF if the file has no complete line more for now.
func (l *logFile) line() ([]byte, error) {
	for {
		if i := bytes.IndexByte(l.buf[l.start:l.end], '\n'); i >= 0 {
			line := l.buf[l.start : l.start+i]
			l.start += i + 1
			if l.skipping {
				l.skipping = false
				continue
			}
			return line, nil
		}
		if l.end-l.start > maxLogLine {
			// No entry is this long: drop it up to its newline.
			l.skipping = true
			l.start, l.end = 0, 0
		}
		if l.start > 0 {
			l.end = copy(l.buf, l.buf[l.start:l.end])
			l.start = 0
		}
		n, err := l.f.Read(l.buf[l.end:])
		l.end += n
		if n == 0 {
			if err == nil {
				err = io.EOF
			}
			return nil, err
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
