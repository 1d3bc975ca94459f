package bench

import (
	"slices"
	"strings"
	"testing"
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
