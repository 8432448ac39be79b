package bench

import (
	"fmt"
	"html/template"
	"math"
	"slices"
	"strconv"
	"strings"
)

// The charts are SVG written here rather than drawn by a script library, so
// that the report needs nothing but the file. Every string that comes from
// the run (process names) is escaped with esc before it is written; numbers
// are formatted by this code.

// Chart geometry in SVG user units: the plot area, and the legend right of it.
const (
	svgW, svgH   = 640, 300
	plotL, plotR = 64, 510
	plotT, plotB = 48, 256
)

// palette colors the lines of one chart, in order.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

func esc(s string) string { return template.HTMLEscapeString(s) }

// canvas is one SVG chart being written.
type canvas struct {
	b strings.Builder
}

func newCanvas(title, subtitle string) *canvas {
	c := &canvas{}
	c.printf(`<svg viewBox="0 0 %d %d" role="img" aria-label="%s">`, svgW, svgH, esc(title))
	c.printf(`<title>%s</title>`, esc(title))
	c.printf(`<text class="title" x="%d" y="20">%s</text>`, plotL, esc(title))
	if subtitle != "" {
		c.printf(`<text class="sub" x="%d" y="36">%s</text>`, plotL, esc(subtitle))
	}
	return c
}

func (c *canvas) printf(format string, args ...any) {
	fmt.Fprintf(&c.b, format, args...)
}

func (c *canvas) done() template.HTML {
	c.b.WriteString("</svg>")
	return template.HTML(c.b.String()) // text escaped by esc as it was written
}

func (c *canvas) noData() template.HTML {
	c.printf(`<text class="nodata" x="%d" y="%d" text-anchor="middle">no data</text>`, (plotL+plotR)/2, (plotT+plotB)/2)
	return c.done()
}

// yAxis draws a grid line and a label for each tick, from 0 to the last
// tick, which is the top of the plot.
func (c *canvas) yAxis(ticks []float64, unit string) {
	top, step := ticks[len(ticks)-1], ticks[1]-ticks[0]
	for _, v := range ticks {
		y := yPix(v, top)
		c.printf(`<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`, plotL, y, plotR, y)
		c.printf(`<text class="tick" x="%d" y="%.1f" dy="0.32em" text-anchor="end">%s</text>`, plotL-6, y, tickLabel(v, step))
	}
	c.printf(`<text class="label" transform="translate(14 %d) rotate(-90)" text-anchor="middle">%s</text>`, (plotT+plotB)/2, esc(unit))
}

// xTick is a labelled position on the x axis, in SVG units.
type xTick struct {
	x     float64
	label string
}

func (c *canvas) xAxis(ticks []xTick, label string) {
	c.printf(`<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>`, plotL, plotB, plotR, plotB)
	for _, t := range ticks {
		c.printf(`<line class="axis" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>`, t.x, plotB, t.x, plotB+4)
		c.printf(`<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>`, t.x, plotB+16, esc(t.label))
	}
	c.printf(`<text class="label" x="%d" y="%d" text-anchor="middle">%s</text>`, (plotL+plotR)/2, plotB+36, esc(label))
}

func xPix(v, right float64) float64 { return plotL + v/right*(plotR-plotL) }
func yPix(v, top float64) float64   { return plotB - v/top*(plotB-plotT) }

// niceTicks are 0 and multiples of a round step (1, 2 or 5 times a power of
// ten) up to the first one at or above top, about n of them.
func niceTicks(top float64, n int) []float64 {
	if !(top > 0) || math.IsInf(top, 0) {
		top = 1
	}
	raw := top / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := 10 * mag
	for _, m := range []float64{1, 2, 5} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	ticks := []float64{0}
	for i := 1; ticks[len(ticks)-1] < top*(1-1e-9); i++ {
		ticks = append(ticks, float64(i)*step)
	}
	return ticks
}

// tickLabel shows v with as many decimals as the step between ticks needs.
func tickLabel(v, step float64) string {
	if step >= 1 {
		return group(v)
	}
	return strconv.FormatFloat(v, 'f', int(math.Ceil(-math.Log10(step))), 64)
}

// point is one sample of a line; Y is NaN where the process had no sample
// (a relay killed by a storm), which breaks the line there.
type point struct{ X, Y float64 }

// line is one series of a line chart.
type line struct {
	name string
	pts  []point
}

// lineChart draws lines over time (X in seconds) with Y from 0.
func lineChart(title, unit string, lines []line) template.HTML {
	c := newCanvas(title, "")
	xMax, yMax, ok := extent(lines)
	if !ok {
		return c.noData()
	}
	xs, ys := niceTicks(xMax, 6), niceTicks(yMax, 5)
	xRight, yTop := xs[len(xs)-1], ys[len(ys)-1]
	c.yAxis(ys, unit)
	var ticks []xTick
	for _, v := range xs {
		ticks = append(ticks, xTick{xPix(v, xRight), tickLabel(v, xs[1]-xs[0])})
	}
	c.xAxis(ticks, "time (s)")
	for i, l := range lines {
		c.path(l, xRight, yTop, palette[i%len(palette)])
	}
	if len(lines) > 1 {
		c.legend(lines)
	}
	return c.done()
}

// extent is the largest X and Y of the lines' finite points; ok is false
// when there is none.
func extent(lines []line) (xMax, yMax float64, ok bool) {
	for _, l := range lines {
		for _, p := range l.pts {
			if finite(p.X) && finite(p.Y) {
				xMax, yMax, ok = max(xMax, p.X), max(yMax, p.Y), true
			}
		}
	}
	return xMax, yMax, ok
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func (c *canvas) path(l line, xRight, yTop float64, color string) {
	var d strings.Builder
	pen := "M"
	for _, p := range l.pts {
		if !finite(p.X) || !finite(p.Y) {
			pen = "M"
			continue
		}
		fmt.Fprintf(&d, "%s%.1f %.1f ", pen, xPix(p.X, xRight), yPix(p.Y, yTop))
		pen = "L"
	}
	if d.Len() == 0 {
		return
	}
	c.printf(`<path class="series" stroke="%s" d="%s"><title>%s</title></path>`, color, strings.TrimSpace(d.String()), esc(l.name))
}

// legend names the lines right of the plot, squeezed to fit when there are
// many relays.
func (c *canvas) legend(lines []line) {
	gap := min(18, float64(plotB-plotT)/float64(len(lines)))
	for i, l := range lines {
		y := plotT + 6 + float64(i)*gap
		c.printf(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="2"/>`, plotR+12, y, plotR+30, y, palette[i%len(palette)])
		c.printf(`<text x="%d" y="%.1f" dy="0.32em">%s</text>`, plotR+36, y, esc(l.name))
	}
}

func connectedLines(series []Sample) []line {
	l := line{name: "connected"}
	for _, s := range series {
		l.pts = append(l.pts, point{s.AtMs / 1000, float64(s.Connected)})
	}
	return []line{l}
}

// processLines is one line per process named in any sample, its values
// divided by scale (bytes to MiB).
func processLines[V int64 | float64](series []Sample, values func(Sample) map[string]V, scale float64) []line {
	var names []string
	for _, s := range series {
		for name := range values(s) {
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	slices.SortFunc(names, byProcessName)
	lines := make([]line, 0, len(names))
	for _, name := range names {
		l := line{name: name}
		for _, s := range series {
			y := math.NaN()
			if v, ok := values(s)[name]; ok {
				y = float64(v) / scale
			}
			l.pts = append(l.pts, point{s.AtMs / 1000, y})
		}
		lines = append(lines, l)
	}
	return lines
}

// byProcessName orders the hub first, then relays by number: "relay-2"
// before "relay-10".
func byProcessName(a, b string) int {
	if (a == "hub") != (b == "hub") {
		if a == "hub" {
			return -1
		}
		return 1
	}
	ap, an := splitNumber(a)
	bp, bn := splitNumber(b)
	if ap != bp {
		return strings.Compare(ap, bp)
	}
	return an - bn
}

// splitNumber splits "relay-12" into "relay-" and 12.
func splitNumber(s string) (string, int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	n, _ := strconv.Atoi(s[i:])
	return s[:i], n
}

// pushHistogram is every push round's latency histogram added together.
type pushHistogram struct {
	bounds []float64
	counts []int
	total  int
	rounds []Latency // the rounds added
	// skipped counts rounds left out because their bucket bounds differ
	// from the first round's.
	skipped int
}

func combinePushes(pushes []PushResult) pushHistogram {
	var h pushHistogram
	for _, p := range pushes {
		l := p.Latency
		n := sum(l.Buckets)
		if n == 0 {
			continue
		}
		if h.bounds == nil {
			h.bounds, h.counts = l.BucketBounds, make([]int, len(l.BucketBounds))
		}
		if !slices.Equal(l.BucketBounds, h.bounds) || len(l.Buckets) != len(h.bounds) {
			h.skipped++
			continue
		}
		for i, b := range l.Buckets {
			h.counts[i] += b
		}
		h.total += n
		h.rounds = append(h.rounds, l)
	}
	return h
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

func (h pushHistogram) subtitle() string {
	if h.total == 0 {
		return ""
	}
	s := fmt.Sprintf("%s acks over %d push rounds", group(float64(h.total)), len(h.rounds))
	if h.skipped > 0 {
		s += fmt.Sprintf("; %d rounds with other buckets left out", h.skipped)
	}
	return s
}

// percentile is the p-th percentile of all rounds together. Rounds keep
// only their own percentiles and a histogram, so it is estimated: the
// histogram gives the bucket, the value is interpolated inside it on the log
// scale, then clamped between the smallest and the largest of the rounds'
// own p-th percentiles, where the pooled nearest-rank percentile always
// lies. With one round, or rounds that agree, that range is one point and
// the value is exact, which exact reports.
func (h pushHistogram) percentile(p float64, of func(Latency) float64) (v float64, exact bool) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, l := range h.rounds {
		lo, hi = min(lo, of(l)), max(hi, of(l))
	}
	if lo == hi {
		return lo, true
	}
	return min(max(h.estimate(p), lo), hi), false
}

// estimate is the p-th percentile read from the histogram alone.
func (h pushHistogram) estimate(p float64) float64 {
	rank := max(1, int(math.Ceil(p/100*float64(h.total))))
	seen := 0
	for i, n := range h.counts {
		if seen+n >= rank {
			return h.within(i, (float64(rank-seen)-0.5)/float64(n))
		}
		seen += n
	}
	return 0 // not reached: rank <= total
}

// within is the value a fraction f into bucket i: linear in the first
// bucket (from 0), logarithmic after, the lower bound in the last (+Inf).
func (h pushHistogram) within(i int, f float64) float64 {
	lo, hi := h.lower(i), h.bounds[i]
	switch {
	case hi < 0:
		return lo
	case lo <= 0:
		return lo + (hi-lo)*f
	}
	return lo * math.Pow(hi/lo, f)
}

// slot is where v falls on the x axis, in buckets from the left; the
// inverse of within.
func (h pushHistogram) slot(v float64) float64 {
	i := bucketOf(h.bounds, v)
	lo, hi := h.lower(i), h.bounds[i]
	var f float64
	switch {
	case hi < 0:
		f = 0.5
	case hi <= lo:
		f = 1
	case lo <= 0:
		f = (v - lo) / (hi - lo)
	default:
		f = math.Log(v/lo) / math.Log(hi/lo)
	}
	return float64(i) + min(max(f, 0), 1)
}

// lower is bucket i's lower bound.
func (h pushHistogram) lower(i int) float64 {
	if i == 0 {
		return 0
	}
	return h.bounds[i-1]
}

// bucketName says which latencies bucket i holds.
func (h pushHistogram) bucketName(i int) string {
	lo, hi := h.lower(i), h.bounds[i]
	switch {
	case hi < 0:
		return "over " + formatMs(lo)
	case i == 0:
		return "up to " + formatMs(hi)
	}
	return strings.TrimSuffix(formatMs(lo), " ms") + " to " + formatMs(hi)
}

// boundLabel is a bucket bound as a short axis label: 500, then 1s, 2s.
func boundLabel(ms float64) string {
	if ms >= 1000 {
		return strconv.FormatFloat(ms/1000, 'f', -1, 64) + "s"
	}
	return strconv.FormatFloat(ms, 'f', -1, 64)
}

// latencyChart is the histogram of every push's ack latency with the
// pooled p50, p90 and p99 marked.
func latencyChart(pushes []PushResult) template.HTML {
	h := combinePushes(pushes)
	c := newCanvas("Push latency", h.subtitle())
	if h.total == 0 {
		return c.noData()
	}
	bw := float64(plotR-plotL) / float64(len(h.bounds))
	ys := niceTicks(float64(slices.Max(h.counts)), 5)
	c.yAxis(ys, "acks")
	ticks := []xTick{{plotL, "0"}}
	for i, b := range h.bounds {
		if b >= 0 {
			ticks = append(ticks, xTick{plotL + float64(i+1)*bw, boundLabel(b)})
		}
	}
	c.xAxis(ticks, "ack latency (ms, log-spaced buckets)")
	top := ys[len(ys)-1]
	for i, n := range h.counts {
		x, y := plotL+float64(i)*bw, yPix(float64(n), top)
		c.printf(`<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %s acks</title></rect>`,
			x+1, y, bw-2, plotB-y, esc(h.bucketName(i)), group(float64(n)))
	}
	c.percentiles(h, bw)
	return c.done()
}

// percentiles marks p50, p90 and p99 on the histogram: a dashed line with
// its short name, and the values listed right of the plot where they never
// cover a bar or each other.
func (c *canvas) percentiles(h pushHistogram, bw float64) {
	marks := []struct {
		name string
		p    float64
		of   func(Latency) float64
	}{
		{"p50", 50, func(l Latency) float64 { return l.P50 }},
		{"p90", 90, func(l Latency) float64 { return l.P90 }},
		{"p99", 99, func(l Latency) float64 { return l.P99 }},
	}
	for k, m := range marks {
		v, exact := h.percentile(m.p, m.of)
		value := m.name + " " + formatMs(v)
		if !exact {
			value = m.name + " ≈ " + formatMs(v)
		}
		x := plotL + h.slot(v)*bw
		c.printf(`<line class="pct" x1="%.1f" y1="%d" x2="%.1f" y2="%d"><title>%s</title></line>`, x, plotT, x, plotB, esc(value))
		c.printf(`<text class="pct-label" x="%.1f" y="%d">%s</text>`, x+3, plotT+10+12*k, m.name)
		c.printf(`<text class="pct-label" x="%d" y="%d">%s</text>`, plotR+12, plotT+10+18*k, esc(value))
	}
}
