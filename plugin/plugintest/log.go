package plugintest

import (
	"io"
	"log/slog"
	"sync"
	"testing"
)

// testLogger returns a logger that writes to t's output until t ends, and
// drops what comes later: a plugin's last log lines may arrive after the
// test that started it has finished, and testing panics on a write then.
func testLogger(t *testing.T) *slog.Logger {
	w := &untilDone{w: t.Output()}
	t.Cleanup(w.done)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type untilDone struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (u *untilDone) Write(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return len(p), nil
	}
	return u.w.Write(p)
}

func (u *untilDone) done() {
	u.mu.Lock()
	u.closed = true
	u.mu.Unlock()
}
