package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/vbauerster/mpb/v8"

	"github.com/berth-dev/berth/registry"
)

// fakeTerminal is a terminal 100 columns wide for mpb to draw on, which
// keeps all it was sent. Like mpb's own writer, it sends each frame
// after the escape codes that go back up over the one before.
type fakeTerminal struct {
	bytes.Buffer // the frame being drawn
	out          bytes.Buffer
}

func (f *fakeTerminal) IsTerminal() bool               { return true }
func (f *fakeTerminal) GetTermSize() (int, int, error) { return 100, 24, nil }
func (f *fakeTerminal) Flush(lines int) error {
	f.Buffer.WriteTo(&f.out)
	fmt.Fprintf(&f.Buffer, "\x1b[%dA\x1b[J", lines)
	return nil
}

func blobHash(c byte) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(c), 64)}
}

// On a terminal each blob gets a row that ends saying what became of it:
// moved (with its size), already there, or stopped where it was.
func TestBarViewRows(t *testing.T) {
	term := &fakeTerminal{}
	v := newBarView(nil, "Pull complete", mpb.WithConsoleWriter(term))
	moved, there, stopped := blobHash('a'), blobHash('b'), blobHash('c')
	v.update(registry.Progress{Blob: there, Skipped: true})
	v.update(registry.Progress{Blob: moved, Total: 3 << 20})
	v.update(registry.Progress{Blob: stopped, Total: 1 << 20})
	v.update(registry.Progress{Blob: moved, Done: 1 << 20, Total: 3 << 20})
	v.update(registry.Progress{Blob: stopped, Done: 512 << 10, Total: 1 << 20})
	v.update(registry.Progress{Blob: moved, Done: 3 << 20, Total: 3 << 20, Finished: true})
	v.finish()

	// The last frame is what the terminal keeps.
	frames := strings.Split(term.out.String(), "\x1b[J")
	out := frames[len(frames)-1]
	for _, want := range []string{
		"aaaaaaaaaaaa", "Pull complete (3.0 MiB)",
		"bbbbbbbbbbbb", "Already exists",
		"cccccccccccc", "stopped at 512.0 KiB",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the bars never show %q:\n%q", want, out)
		}
	}
}

func TestRowStatus(t *testing.T) {
	for _, c := range []struct {
		skipped, completed, aborted bool
		done, total                 int64
		elapsed                     time.Duration
		want                        string
	}{
		{done: 1 << 20, total: 4 << 20, elapsed: time.Second, want: "1.0 MiB / 4.0 MiB  1.0 MiB/s"},
		{done: 0, total: 4 << 20, want: "0 B / 4.0 MiB"},
		{done: 2 << 20, elapsed: 2 * time.Second, want: "2.0 MiB  1.0 MiB/s"},
		{done: 4 << 20, total: 4 << 20, completed: true, want: "Pushed (4.0 MiB)"},
		{skipped: true, completed: true, want: "Already exists"},
		{done: 100, total: 4 << 20, aborted: true, want: "stopped at 100 B"},
	} {
		if got := rowStatus(c.skipped, "Pushed", c.done, c.total, c.completed, c.aborted, c.elapsed); got != c.want {
			t.Errorf("rowStatus(%+v) = %q, want %q", c, got, c.want)
		}
	}
}

// Off a terminal: one line per blob once it is done, never a partial one,
// and no escape codes for a log to keep.
func TestLineView(t *testing.T) {
	var log bytes.Buffer
	v := newTransferView(&log, false, "Pushed")
	moved, there, stopped := blobHash('a'), blobHash('b'), blobHash('c')
	v.update(registry.Progress{Blob: moved, Total: 2048})
	v.update(registry.Progress{Blob: stopped, Total: 2048})
	v.update(registry.Progress{Blob: moved, Done: 1024, Total: 2048})
	v.update(registry.Progress{Blob: there, Skipped: true})
	v.update(registry.Progress{Blob: stopped, Done: 1024, Total: 2048})
	v.update(registry.Progress{Blob: moved, Done: 2048, Total: 2048, Finished: true})
	v.update(registry.Progress{Blob: moved, Done: 2048, Total: 2048, Finished: true})
	v.finish()
	want := "bbbbbbbbbbbb: Already exists\naaaaaaaaaaaa: Pushed (2.0 KiB)\n"
	if log.String() != want {
		t.Errorf("log:\n%q\nwant\n%q", log.String(), want)
	}
	if v := newTransferView(&log, true, "Pushed"); v != nil || progressFunc(v) != nil {
		t.Error("-q still shows progress")
	}
}

// A digest is all the registry puts on the terminal's rows; one that is
// not hex (v1.Hash parses only hex, but a Progress can be made by hand)
// is quoted, its control characters escaped.
func TestShortBlob(t *testing.T) {
	if got := shortBlob(blobHash('a')); got != "aaaaaaaaaaaa" {
		t.Errorf("shortBlob = %q", got)
	}
	evil := v1.Hash{Algorithm: "sha256", Hex: "\x1b]0;pwned\x07" + strings.Repeat("a", 60)}
	if got := shortBlob(evil); strings.ContainsAny(got, "\x1b\x07") {
		t.Errorf("shortBlob(%q) = %q: control characters reach the terminal", evil.Hex, got)
	}
}
