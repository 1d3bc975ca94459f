package sandbox

import (
	"io"
	"regexp"
	"sync"
	"time"
)

// An in-process sandbox's output goes to its caller's writers; berth keeps
// none of it unless asked. Options.LogBytes keeps its last bytes in memory,
// readable with Logs, and a LogCheck watches it line by line. Both see the
// output as it is copied to Stdout and Stderr: a tee in the copy, cut into
// entries the way the supervisor's log is (at most maxEntryText bytes, so
// that a line of a gigabyte costs no more than one of 16 KiB).

// maxEntryText bounds an entry's text, as the supervisor's log does.
const maxEntryText = LogEntryMax

// entryOverhead is what an entry counts for against LogBytes besides its
// text, so that a flood of empty lines cannot keep millions of entries.
const entryOverhead = 64

// outputLog keeps the last entries of a workload's output and tells
// watchers of the lines that match them. It is safe for concurrent use:
// stdout and stderr are copied by goroutines of their own.
type outputLog struct {
	mu       sync.Mutex
	max      int        // bytes kept, entryOverhead each entry included; 0 keeps none
	entries  []LogEntry // entries[head:] are kept, oldest first
	head     int
	size     int // what the kept entries count for against max
	watchers map[*logWatch]struct{}
	writers  []*teeWriter // whose lines not yet ended Logs shows too
}

func newOutputLog(max int) *outputLog {
	return &outputLog{max: max, watchers: map[*logWatch]struct{}{}}
}

// A logWatch waits for lines of the output that match re.
type logWatch struct {
	re     *regexp.Regexp
	stream string // "stdout", "stderr", or "" for both
	want   int
	seen   int
	done   chan struct{} // closed once want lines have matched
}

// add records e (its text is the log's to keep) and tells the watchers.
func (l *outputLog) add(e LogEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for w := range l.watchers {
		if w.match(e) {
			delete(l.watchers, w)
		}
	}
	if l.max <= 0 {
		return
	}
	cost := len(e.Text) + entryOverhead
	if cost > l.max {
		return
	}
	l.entries = append(l.entries, e)
	l.size += cost
	for l.size > l.max {
		l.size -= len(l.entries[l.head].Text) + entryOverhead
		l.entries[l.head] = LogEntry{}
		l.head++
	}
	if l.head > len(l.entries)/2 {
		// Moved down once half is dropped: amortized, a flood costs
		// each entry one copy, and the array stays bounded.
		n := copy(l.entries, l.entries[l.head:])
		clear(l.entries[n:])
		l.entries, l.head = l.entries[:n], 0
	}
}

// match counts e if it matches, and reports whether the watch is done.
func (w *logWatch) match(e LogEntry) bool {
	if w.stream != "" && w.stream != e.Stream {
		return false
	}
	if !w.re.Match(e.Text) {
		return false
	}
	w.seen++
	if w.seen >= w.want {
		close(w.done)
		return true
	}
	return false
}

// watch starts a watch for want lines matching re. Lines still kept count
// first: a line already printed and kept is not waited for again.
func (l *outputLog) watch(re *regexp.Regexp, stream string, want int) *logWatch {
	w := &logWatch{re: re, stream: stream, want: max(want, 1), done: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.entries[l.head:] {
		if w.match(e) {
			return w
		}
	}
	l.watchers[w] = struct{}{}
	return w
}

// unwatch ends a watch that is no longer waited for.
func (l *outputLog) unwatch(w *logWatch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.watchers, w)
}

// snapshot returns a copy of the kept entries, and the lines begun and
// not yet ended, as partial entries.
func (l *outputLog) snapshot() []LogEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []LogEntry
	for _, e := range l.entries[l.head:] {
		e.Text = append([]byte(nil), e.Text...)
		out = append(out, e)
	}
	for _, w := range l.writers {
		if len(w.pending) > 0 {
			out = append(out, LogEntry{Time: w.pendingSince, Stream: w.stream, Partial: true, Text: append([]byte(nil), w.pending...)})
		}
	}
	return out
}

// writer returns a writer that passes what it is given on to dst (nil
// for none) and cuts it into the log's entries of stream.
func (l *outputLog) writer(dst io.Writer, stream string) io.Writer {
	w := &teeWriter{log: l, dst: dst, stream: stream}
	l.mu.Lock()
	l.writers = append(l.writers, w)
	l.mu.Unlock()
	return w
}

// A teeWriter is one stream's tee. Only the goroutine copying the stream
// writes to it.
type teeWriter struct {
	log          *outputLog
	dst          io.Writer
	stream       string
	pending      []byte    // the start of a line not yet ended; under log.mu
	pendingSince time.Time // when it was written
}

func (t *teeWriter) Write(p []byte) (int, error) {
	now := time.Now().UTC()
	l := t.log
	for rest := p; len(rest) > 0; {
		l.mu.Lock()
		i := indexNewline(rest, maxEntryText-len(t.pending))
		if i < 0 {
			if len(t.pending) == 0 {
				t.pendingSince = now
			}
			t.pending = append(t.pending, rest...)
			l.mu.Unlock()
			break
		}
		full := i < len(rest) && rest[i] == '\n'
		text := append(t.pending, rest[:i]...)
		t.pending = nil
		l.mu.Unlock()
		l.add(LogEntry{Time: now, Stream: t.stream, Partial: !full, Text: text})
		if full {
			i++
		}
		rest = rest[i:]
	}
	if t.dst == nil {
		return len(p), nil
	}
	return t.dst.Write(p)
}

// indexNewline returns the index of the first newline of b within limit
// bytes, limit itself if b has that many bytes and no newline before, or
// -1 if b is shorter than limit and has no newline.
func indexNewline(b []byte, limit int) int {
	for i, c := range b {
		if i == limit {
			return limit
		}
		if c == '\n' {
			return i
		}
	}
	if len(b) == limit {
		return limit
	}
	return -1
}

// Logs returns the last of the workload's output that Options.LogBytes
// keeps, oldest first: stdout and stderr as they were copied, cut into
// lines, a line longer than 16 KiB into parts (Partial), and, last, the
// start of any line not ended yet (Partial too). Logs returns nil
// when LogBytes is 0, and for a handle from Open, whose sandbox's output
// is its supervisor's: read that with ReadLog. Stdout and Stderr that are
// one writer give one stream, kept as "stdout"; so does a terminal.
//
// LogBytes is off by default because the caller's own Stdout already
// sees every byte: keeping a copy costs memory per sandbox, and a pipe
// for an output that would otherwise be /dev/null.
func (s *Sandbox) Logs() []LogEntry {
	s.mu.Lock()
	l := s.output
	s.mu.Unlock()
	if l == nil || l.max == 0 {
		return nil
	}
	return l.snapshot()
}
