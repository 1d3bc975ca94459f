package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/registry"
)

// A transferView shows how a pull or a push goes, one blob a row. The
// registry package calls update from one goroutine at a time; finish is
// called once the transfer has ended, well or not.
type transferView interface {
	update(registry.Progress)
	finish()
}

// newTransferView returns the view of a transfer for w: bars on a
// terminal, one line per blob that is done otherwise, nothing when quiet
// (nil, which callers pass on as no Progress callback at all). complete
// is what a finished blob's row says, "Pull complete" or "Pushed".
func newTransferView(w io.Writer, quiet bool, complete string) transferView {
	switch {
	case quiet:
		return nil
	case isTerminal(w):
		return newBarView(w, complete)
	default:
		return &lineView{w: w, complete: complete, said: map[v1.Hash]bool{}}
	}
}

// progressFunc is the Registry callback that feeds v, or nil for none.
func progressFunc(v transferView) func(registry.Progress) {
	if v == nil {
		return nil
	}
	return v.update
}

// finishView ends v, if there is one.
func finishView(v transferView) {
	if v != nil {
		v.finish()
	}
}

// isTerminal tells whether w is a terminal: only then may berth draw on
// it with escape codes.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// alreadyExists is what the row of a blob that needed no transfer says,
// as Docker's does.
const alreadyExists = "Already exists"

// shortBlob is the name of a blob's row: 12 hex digits, as Docker shows.
// The digest comes from the registry; v1.Hash admits only hex digits, and
// anything else is quoted, never sent to the terminal as it is.
func shortBlob(h v1.Hash) string {
	if len(h.Hex) >= 12 && strings.Trim(h.Hex, "0123456789abcdef") == "" {
		return h.Hex[:12]
	}
	return clip.Quote(h.String())
}

// lineView writes one line for each blob once it is done (moved and
// checked, or found there already), and no escape codes: it is for logs
// and pipes.
type lineView struct {
	w        io.Writer
	complete string
	mu       sync.Mutex
	said     map[v1.Hash]bool
}

func (v *lineView) update(p registry.Progress) {
	if !p.Skipped && !p.Finished {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.said[p.Blob] {
		return
	}
	v.said[p.Blob] = true
	if p.Skipped {
		fmt.Fprintf(v.w, "%s: %s\n", shortBlob(p.Blob), alreadyExists)
		return
	}
	fmt.Fprintf(v.w, "%s: %s (%s)\n", shortBlob(p.Blob), v.complete, humanSize(max(p.Done, p.Total)))
}

func (v *lineView) finish() {}

// barView draws a bar for each blob on a terminal with mpb, which keeps
// the rows in place as they redraw: the digest, the bar, bytes moved of
// the blob's size, and the speed so far.
type barView struct {
	p        *mpb.Progress
	complete string
	mu       sync.Mutex
	rows     map[v1.Hash]*blobRow
	order    []*blobRow
}

// blobRow is one blob's bar and what its text decorator shows. skipped
// is atomic because mpb reads it while drawing, on a goroutine of its own
// that update may be waiting for: a lock there could deadlock.
type blobRow struct {
	bar     *mpb.Bar
	started time.Time
	skipped atomic.Bool
	total   int64
}

// newBarView starts the bars on w; opts are for tests, which draw on a
// terminal of their own making.
func newBarView(w io.Writer, complete string, opts ...mpb.ContainerOption) *barView {
	opts = append([]mpb.ContainerOption{mpb.WithOutput(w), mpb.WithWidth(40)}, opts...)
	return &barView{p: mpb.New(opts...), complete: complete, rows: map[v1.Hash]*blobRow{}}
}

func (v *barView) update(p registry.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	row := v.rows[p.Blob]
	if row == nil {
		row = &blobRow{started: time.Now()}
		row.skipped.Store(p.Skipped)
		var style mpb.BarFillerBuilder = mpb.BarStyle()
		if p.Skipped {
			// A blob that moves no bytes needs no bar, only its word.
			style = mpb.NopStyle()
		}
		row.bar = v.p.New(max(p.Total, 0), style,
			mpb.PrependDecorators(decor.Name(shortBlob(p.Blob), decor.WC{C: decor.DindentRight | decor.DextraSpace})),
			mpb.AppendDecorators(decor.Any(func(s decor.Statistics) string {
				return rowStatus(row.skipped.Load(), v.complete, s.Current, s.Total, s.Completed, s.Aborted, time.Since(row.started))
			})),
		)
		v.rows[p.Blob] = row
		v.order = append(v.order, row)
	}
	if p.Skipped {
		row.skipped.Store(true)
		row.bar.SetTotal(-1, true)
		return
	}
	if p.Total > 0 && p.Total != row.total {
		row.total = p.Total
		row.bar.SetTotal(p.Total, false)
	}
	row.bar.SetCurrent(p.Done)
	if p.Finished {
		row.bar.SetTotal(-1, true)
	}
}

// rowStatus is the text after a blob's bar: its word once it is done,
// else bytes moved of the total, and the speed so far.
func rowStatus(skipped bool, complete string, done, total int64, completed, aborted bool, elapsed time.Duration) string {
	switch {
	case skipped:
		return alreadyExists
	case completed:
		return fmt.Sprintf("%s (%s)", complete, humanSize(done))
	case aborted:
		return fmt.Sprintf("stopped at %s", humanSize(done))
	}
	speed := ""
	if secs := elapsed.Seconds(); secs > 0 && done > 0 {
		speed = fmt.Sprintf("  %s/s", humanSize(int64(float64(done)/secs)))
	}
	if total > 0 {
		return fmt.Sprintf("%s / %s%s", humanSize(done), humanSize(total), speed)
	}
	return humanSize(done) + speed
}

// finish stops the rows still moving, so that what the terminal keeps
// says where each blob stopped, and waits for the last redraw.
func (v *barView) finish() {
	v.mu.Lock()
	rows := v.order
	v.mu.Unlock()
	for _, row := range rows {
		row.bar.Abort(false)
	}
	v.p.Wait()
}
