package bench

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	s := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, c := range []struct{ p, want float64 }{{0.5, 5}, {0.9, 9}, {0.99, 10}, {1, 10}, {0.01, 1}} {
		if got := Percentile(s, c.p); got != c.want {
			t.Errorf("Percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if s[0] != 5 {
		t.Error("Percentile sorted its argument")
	}
	if Percentile(nil, 0.5) != 0 {
		t.Error("Percentile of nothing is not 0")
	}
}

func TestNiceTicks(t *testing.T) {
	if got, want := NiceTicks(0, 9.3, 6), []float64{0, 2, 4, 6, 8, 10}; !slices.Equal(got, want) {
		t.Errorf("NiceTicks(0, 9.3) = %v, want %v", got, want)
	}
}

func TestWriteSVG(t *testing.T) {
	var b strings.Builder
	c := Chart{Title: "a<b", LogX: true, Series: []Series{{Name: "x", X: []float64{1, 10, 100}, Y: []float64{3, 2, 1}}, {Name: "failed"}}}
	if err := c.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"<svg", "a&lt;b", "<polyline", "failed (no data)", ">100<"} {
		if !strings.Contains(out, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
}

func TestTimeCalls(t *testing.T) {
	const n, g = 200, 16
	var seen [n]atomic.Int32
	var inFlight, most atomic.Int32
	c, err := TimeCalls(context.Background(), n, g, func(_ context.Context, i int) error {
		seen[i].Add(1)
		now := inFlight.Add(1)
		for {
			m := most.Load()
			if now <= m || most.CompareAndSwap(m, now) {
				break
			}
		}
		time.Sleep(time.Millisecond)
		inFlight.Add(-1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Samples) != n {
		t.Errorf("%d samples, want %d", len(c.Samples), n)
	}
	for i := range seen {
		if k := seen[i].Load(); k != 1 {
			t.Errorf("index %d called %d times, want once", i, k)
		}
	}
	// Every goroutine sleeps in its call, so all of them overlap.
	if m := most.Load(); m < 2 || m > g {
		t.Errorf("at most %d calls in flight, want 2..%d", m, g)
	}
	for _, s := range c.Samples {
		if s < 1000 {
			t.Errorf("a call that slept 1 ms was timed at %v µs", s)
			break
		}
	}
}

func TestTimeCallsStopsAtError(t *testing.T) {
	boom := errors.New("boom")
	var calls atomic.Int32
	c, err := TimeCalls(context.Background(), 1000, 4, func(ctx context.Context, i int) error {
		calls.Add(1)
		if i == 10 {
			return boom
		}
		// The others wait for the error, as a slow call would.
		select {
		case <-ctx.Done():
		case <-time.After(time.Millisecond):
		}
		return nil
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "call 10") {
		t.Errorf("err = %v, want call 10's boom", err)
	}
	// Four goroutines: at most three calls were under way besides the
	// failing one, and none started after it.
	if n := calls.Load(); n > 14 || len(c.Samples) != int(n)-1 {
		t.Errorf("%d calls, %d samples after an error at call 10 of 1000, want ≤ 14 and one fewer samples", n, len(c.Samples))
	}
}
