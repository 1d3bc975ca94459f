package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// A Series is one line of a Chart.
type Series struct {
	Name string
	X, Y []float64
}

// A Chart is a line chart with linear or base-10 logarithmic axes.
type Chart struct {
	Title, XLabel, YLabel string
	LogX                  bool
	Series                []Series
}

const (
	chartW, chartH = 720, 440
	padL, padR     = 70, 190 // the right margin holds the legend
	padT, padB     = 40, 55
)

// palette is distinguishable in colour and, mostly, in greyscale.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// WriteSVG draws c as a standalone SVG document. Series without points
// still get a legend entry, so a tool that failed is visibly absent.
func (c *Chart) WriteSVG(w io.Writer) error {
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), 0.0, math.Inf(-1)
	for _, s := range c.Series {
		for i := range s.X {
			x := s.X[i]
			if c.LogX {
				if x <= 0 {
					continue
				}
				x = math.Log10(x)
			}
			xmin, xmax = min(xmin, x), max(xmax, x)
			ymin, ymax = min(ymin, s.Y[i]), max(ymax, s.Y[i])
		}
	}
	if math.IsInf(xmin, 0) { // no data at all
		xmin, xmax, ymax = 0, 1, 1
	}
	var xt []float64
	if c.LogX {
		xmin, xmax = math.Floor(xmin), math.Ceil(xmax)
		if xmax == xmin {
			xmax++
		}
		for e := xmin; e <= xmax; e++ {
			xt = append(xt, e)
		}
	} else {
		xt = NiceTicks(xmin, xmax, 6)
		xmin, xmax = xt[0], xt[len(xt)-1]
	}
	yt := NiceTicks(ymin, ymax, 6)
	ymin, ymax = yt[0], yt[len(yt)-1]

	pw, ph := float64(chartW-padL-padR), float64(chartH-padT-padB)
	px := func(x float64) float64 { return padL + (x-xmin)/(xmax-xmin)*pw }
	py := func(y float64) float64 { return padT + ph - (y-ymin)/(ymax-ymin)*ph }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", padL, esc(c.Title))
	for _, t := range xt {
		x := px(t)
		label := fmtTick(t)
		if c.LogX {
			label = fmtTick(math.Pow(10, t))
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x, padT, x, padT+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, padT+ph+18, label)
	}
	for _, t := range yt {
		y := py(t)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", padL, y, padL+pw, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, y+4, fmtTick(t))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="black"/>`+"\n", padL, padT, pw, ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", padL+pw/2, chartH-12, esc(c.XLabel))
	fmt.Fprintf(&b, `<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", padT+ph/2, esc(c.YLabel))

	for i, s := range c.Series {
		col := palette[i%len(palette)]
		var pts []string
		for j := range s.X {
			x := s.X[j]
			if c.LogX {
				if x <= 0 {
					continue
				}
				x = math.Log10(x)
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(x), py(s.Y[j])))
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", col, strings.Join(pts, " "))
		}
		if len(pts) > 0 && len(pts) <= 12 { // mark sparse series' points
			for _, p := range pts {
				xy := strings.Split(p, ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], col)
			}
		}
		ly := padT + 10 + 20*i
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%d" x2="%.0f" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", padL+pw+12, ly, padL+pw+32, ly, col)
		name := s.Name
		if len(pts) == 0 {
			name += " (no data)"
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%d">%s</text>`+"\n", padL+pw+38, ly+4, esc(name))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func esc(s string) string { return html.EscapeString(s) }

func fmtTick(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e9 {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}

// NiceTicks returns about n evenly spaced round tick values (steps of 1, 2
// or 5 times a power of ten) covering [lo, hi].
func NiceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(max(n-1, 1))
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag * 10
	for _, m := range []float64{1, 2, 5} {
		if raw <= m*mag {
			step = m * mag
			break
		}
	}
	var ticks []float64
	for t := math.Floor(lo/step) * step; t < hi+step*0.999; t += step {
		ticks = append(ticks, math.Round(t/step)*step)
	}
	return ticks
}
