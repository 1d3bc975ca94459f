package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/berth-dev/berth/internal/clip"
)

// How berth reads a plugin's stderr. A plugin writes one JSON object a
// line, as hclog's JSON format does: "@level", "@message", "@timestamp"
// and the record's attributes as further keys. Other lines are logged at
// Debug (or at the level of a "[WARN]"-style prefix).
//
// berth parses the lines itself, not through go-plugin, whose parser
// panics (in a goroutine of berth's, so berth dies) on a line such as
// {"@message": 1}. The bounds below are what a plugin that floods stderr
// costs the host: a line is cut at maxLogLine bytes and keeps at most
// maxLogAttrs attributes, and past a burst of logBurst lines at most
// logRate lines a second are logged; the rest are counted and the count
// reported.
const (
	maxLogLine  = 16 << 10
	maxLogAttrs = 32
	maxLogValue = 1024
	logBurst    = 200
	logRate     = 100 // lines a second
)

// reservedLogKeys are attribute names a plugin's line may not set as they
// are: the plugin attribute says which plugin wrote the line (a plugin
// must not pose as another), the rest are slog's own.
var reservedLogKeys = map[string]bool{
	"plugin": true, "pid": true,
	slog.TimeKey: true, slog.LevelKey: true, slog.MessageKey: true, slog.SourceKey: true,
}

// levelTrace is hclog's Trace in slog's terms.
const levelTrace = slog.LevelDebug - 4

// stderrLog turns a plugin's stderr into records on a slog.Logger. It is
// an io.Writer (go-plugin's ClientConfig.Stderr) that may be given lines
// in pieces; it is used from one goroutine at a time.
type stderrLog struct {
	log *slog.Logger // with the plugin and pid attributes

	mu       sync.Mutex
	line     []byte
	overflow bool      // the current line was longer than maxLogLine
	tokens   float64   // rate limiter: lines that may still be logged
	last     time.Time // when tokens was refilled
	dropped  int       // lines not logged since the last report
	lastLine string    // the last non-empty line, for "exited" errors
}

func newStderrLog(l *slog.Logger) *stderrLog {
	return &stderrLog{log: l, tokens: logBurst, last: time.Now()}
}

func (s *stderrLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := maxLogLine - len(s.line); len(chunk) > room {
			s.line = append(s.line, chunk[:room]...)
			s.overflow = true
		} else {
			s.line = append(s.line, chunk...)
		}
		if i < 0 {
			break
		}
		s.emit()
		p = p[i+1:]
	}
	return n, nil
}

// flush logs a last line that had no newline.
func (s *stderrLog) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.line) > 0 {
		s.emit()
	}
	if s.dropped > 0 {
		s.log.Warn("plugin log lines dropped", "count", s.dropped)
		s.dropped = 0
	}
}

// lastLineText is the last non-empty line the plugin wrote, clipped.
func (s *stderrLog) lastLineText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastLine
}

func (s *stderrLog) emit() {
	line, overflow := s.line, s.overflow
	s.line, s.overflow = s.line[:0], false
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	s.lastLine = clip.Cut(clip.Text(string(bytes.TrimSpace(line[:min(len(line), 1024)]))), 200)
	// The rate limit comes before the parse: a plugin that floods
	// stderr must not make berth decode every line.
	if !s.allow() {
		return
	}
	level, msg, attrs := parseLogLine(line, overflow)
	if !s.log.Enabled(context.Background(), level) {
		return
	}
	if s.dropped > 0 {
		attrs = append(attrs, slog.Int("dropped_before", s.dropped))
		s.dropped = 0
	}
	s.log.LogAttrs(context.Background(), level, msg, attrs...)
}

// allow takes a token from the rate limiter, or counts the line dropped.
func (s *stderrLog) allow() bool {
	now := time.Now()
	s.tokens = min(logBurst, s.tokens+now.Sub(s.last).Seconds()*logRate)
	s.last = now
	if s.tokens < 1 {
		s.dropped++
		return false
	}
	s.tokens--
	return true
}

// parseLogLine reads one line of a plugin's stderr.
func parseLogLine(line []byte, cut bool) (slog.Level, string, []slog.Attr) {
	if !cut && len(line) > 0 && line[0] == '{' {
		if level, msg, attrs, ok := parseJSONLine(line); ok {
			return level, msg, attrs
		}
	}
	text := clip.Text(string(line))
	if cut {
		text += " …(cut)"
	}
	level := slog.LevelDebug
	for _, p := range []struct {
		prefix string
		level  slog.Level
	}{{"[TRACE]", levelTrace}, {"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERROR]", slog.LevelError}, {"panic: ", slog.LevelError}, {"fatal error: ", slog.LevelError}} {
		if strings.HasPrefix(text, p.prefix) {
			level = p.level
			break
		}
	}
	return level, text, nil
}

// parseJSONLine reads an hclog JSON line; ok is false if line is not one.
func parseJSONLine(line []byte) (level slog.Level, msg string, attrs []slog.Attr, ok bool) {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	if d.Decode(&m) != nil {
		return 0, "", nil, false
	}
	msg, ok = m["@message"].(string)
	if !ok {
		return 0, "", nil, false
	}
	lv, _ := m["@level"].(string)
	level = parseLevel(lv)
	keys := make([]string, 0, len(m))
	for k := range m {
		if !strings.HasPrefix(k, "@") || k == "@module" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i == maxLogAttrs {
			attrs = append(attrs, slog.Int("attrs_dropped", len(keys)-i))
			break
		}
		name := clip.Cut(clip.Text(strings.TrimPrefix(k, "@")), 64)
		if reservedLogKeys[name] {
			name = "plugin_" + name
		}
		attrs = append(attrs, slog.Any(name, logValue(m[k])))
	}
	return level, clip.Text(msg), attrs, true
}

// logValue keeps a JSON value as it came when it is small and plain, and
// as clipped JSON text otherwise.
func logValue(v any) any {
	switch v := v.(type) {
	case string:
		return clip.Cut(clip.Text(v), maxLogValue)
	case json.Number, bool, nil:
		return v
	}
	b, _ := json.Marshal(v)
	return clip.Cut(clip.Text(string(b)), maxLogValue)
}

// parseLevel reads an hclog level name; an unknown one is Info.
func parseLevel(s string) slog.Level {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "trace":
		return levelTrace
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// levelName is how envLogLevel names the lowest level l keeps.
func levelName(l *slog.Logger) string {
	ctx := context.Background()
	for _, lv := range []struct {
		name  string
		level slog.Level
	}{{"trace", levelTrace}, {"debug", slog.LevelDebug}, {"info", slog.LevelInfo}, {"warn", slog.LevelWarn}, {"error", slog.LevelError}} {
		if l.Enabled(ctx, lv.level) {
			return lv.name
		}
	}
	return "off"
}

// hclogShim is the hclog.Logger go-plugin is given: its own messages go to
// berth's slog logger at Debug (and Trace), whatever level go-plugin
// meant: they are about the machinery ("plugin process exited" at Error
// whenever berth kills a plugin it is done with), and berth logs what
// matters about a plugin's life itself.
//
// GetLevel says Off, so that go-plugin does not parse the plugin's
// stderr: stderrLog does, safely. go-plugin still logs, raw and at Debug,
// the pieces of a stderr line longer than its 64 KiB buffer, on a logger
// Named after the plugin's binary: stderr names it, and what is logged
// on that logger is dropped (stderrLog has the line, cut and escaped,
// within its rate limit).
type hclogShim struct {
	log    *slog.Logger
	name   string
	args   []any
	stderr string
}

var _ hclog.Logger = (*hclogShim)(nil)

func (h *hclogShim) Log(level hclog.Level, msg string, args ...any) {
	lv := slog.LevelDebug
	if level <= hclog.Trace {
		lv = levelTrace
	}
	ctx := context.Background()
	if !h.log.Enabled(ctx, lv) {
		return
	}
	h.log.Log(ctx, lv, "go-plugin: "+msg, args...)
}

func (h *hclogShim) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogShim) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogShim) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogShim) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogShim) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }
func (h *hclogShim) IsTrace() bool                 { return h.log.Enabled(context.Background(), levelTrace) }
func (h *hclogShim) IsDebug() bool                 { return h.log.Enabled(context.Background(), slog.LevelDebug) }
func (h *hclogShim) IsInfo() bool                  { return false }
func (h *hclogShim) IsWarn() bool                  { return false }
func (h *hclogShim) IsError() bool                 { return false }
func (h *hclogShim) ImpliedArgs() []any            { return h.args }
func (h *hclogShim) Name() string                  { return h.name }
func (h *hclogShim) SetLevel(hclog.Level)          {}
func (h *hclogShim) GetLevel() hclog.Level         { return hclog.Off }

func (h *hclogShim) With(args ...any) hclog.Logger {
	return &hclogShim{log: h.log.With(args...), name: h.name, args: append(append([]any(nil), h.args...), args...), stderr: h.stderr}
}

func (h *hclogShim) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.ResetNamed(name)
}

func (h *hclogShim) ResetNamed(name string) hclog.Logger {
	l := h.log
	if name == h.stderr {
		l = discardLogger
	}
	return &hclogShim{log: l, name: name, args: h.args, stderr: h.stderr}
}

func (h *hclogShim) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)
}

func (h *hclogShim) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return h.StandardLogger(nil).Writer()
}

// discardLogger is the logger of a client given none.
var discardLogger = slog.New(slog.DiscardHandler)

// processStderr is the plugin process's real stderr, which berth reads
// its log lines from. It is taken when the package is initialised because
// go-plugin's Serve points os.Stderr elsewhere (at a stream berth
// discards) once serving.
var processStderr = os.Stderr

// Logger returns a logger for a plugin's own use: its records reach the
// host's slog logger with their level and attributes (and an attribute
// naming the plugin). It writes hclog's JSON lines to the process's
// stderr, and keeps only the levels the host keeps. Plugins call it once
// in main and give the logger to their implementation.
func Logger() *slog.Logger {
	return slog.New(newLogHandler(processStderr, os.Getenv(envLogLevel)))
}

// newLogHandler is a slog JSON handler writing what the host parses.
func newLogHandler(w io.Writer, level string) slog.Handler {
	lv := parseLevel(level)
	switch strings.ToLower(level) {
	case "":
		lv = slog.LevelInfo
	case "off":
		lv = slog.LevelError + 100
	}
	return slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: lv,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				return slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
			case slog.LevelKey:
				return slog.String("@level", hclogLevel(a.Value.Any().(slog.Level)))
			case slog.MessageKey:
				return slog.Attr{Key: "@message", Value: a.Value}
			}
			return a
		},
	})
}

// hclogLevel names l as hclog does.
func hclogLevel(l slog.Level) string {
	switch {
	case l < slog.LevelDebug:
		return "trace"
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	}
	return "error"
}
