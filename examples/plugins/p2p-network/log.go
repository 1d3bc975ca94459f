package main

import (
	"io"
	"log/slog"
	"strings"
)

// newHCLogHandler writes log records as the JSON lines go-plugin reads
// from a plugin's stderr (hclog's format: @level, @message, @timestamp
// and the attributes), so that they arrive in berth's own logger with
// their level and attributes.
func newHCLogHandler(w io.Writer, level slog.Leveler) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				a.Key = "@timestamp"
			case slog.MessageKey:
				a.Key = "@message"
			case slog.LevelKey:
				a.Key = "@level"
				a.Value = slog.StringValue(strings.ToLower(a.Value.String()))
			}
			return a
		},
	})
}
