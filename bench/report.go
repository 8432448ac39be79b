package bench

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// latencyBounds are the histogram's upper bounds in milliseconds, log-spaced
// so that one chart reads both a loopback push (a few ms) and a stalled one
// (seconds). The last bound, -1, is +Inf.
var latencyBounds = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, -1}

// NewLatency summarizes samples: nearest-rank percentiles (a reported p99 is
// a latency some agent really saw, not an interpolation) and a histogram over
// fixed bounds, so that rounds and runs can be added and compared bucket by
// bucket.
func NewLatency(samples []time.Duration) Latency {
	ms := make([]float64, len(samples))
	for i, d := range samples {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	slices.Sort(ms)
	l := Latency{
		Count:        len(ms),
		BucketBounds: slices.Clone(latencyBounds),
		Buckets:      make([]int, len(latencyBounds)),
	}
	if len(ms) == 0 {
		return l
	}
	l.P50 = nearestRank(ms, 50)
	l.P90 = nearestRank(ms, 90)
	l.P99 = nearestRank(ms, 99)
	l.Max = ms[len(ms)-1]
	for _, v := range ms {
		l.Buckets[bucketOf(l.BucketBounds, v)]++
	}
	return l
}

// nearestRank is the p-th percentile of sorted (not empty): the smallest
// sample with at least p percent of the samples at or below it.
func nearestRank(sorted []float64, p float64) float64 {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(rank, 1)
	return sorted[rank-1]
}

// bucketOf is the index of the first bound v fits under; -1 is +Inf.
func bucketOf(bounds []float64, v float64) int {
	for i, b := range bounds {
		if b < 0 || v <= b {
			return i
		}
	}
	return len(bounds) - 1
}

// WriteTable writes the summary `nxmesh bench` prints when it ends: one
// line saying what ran where, the figures against their targets, then the
// push and storm rounds and the run's notes.
func WriteTable(w io.Writer, r *Result) error {
	if r == nil {
		r = &Result{}
	}
	ew := &errWriter{w: w}
	fmt.Fprintln(ew, headerLine(r))
	for _, t := range []table{figureTable(r), pushTable(r), stormTable(r)} {
		if len(t.Rows) > 0 {
			fmt.Fprintln(ew)
			writeTextTable(ew, t)
		}
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(ew)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(ew, "note:", n)
	}
	return ew.err
}

// errWriter keeps the first write error so that a report is written
// without an error check per line.
type errWriter struct {
	w   io.Writer
	err error
}

func (ew *errWriter) Write(p []byte) (int, error) {
	if ew.err != nil {
		return 0, ew.err
	}
	n, err := ew.w.Write(p)
	if err != nil {
		ew.err = fmt.Errorf("write bench report: %w", err)
	}
	return n, ew.err
}

// writeTextTable aligns t's columns, without the trailing blanks a
// row with no target would otherwise end in.
func writeTextTable(w io.Writer, t table) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.Head, "\t"))
	for _, row := range t.Rows {
		fmt.Fprintln(tw, strings.Join(row.Cells, "\t"))
	}
	_ = tw.Flush() // a strings.Builder does not fail
	for line := range strings.Lines(b.String()) {
		fmt.Fprintln(w, strings.TrimRight(line, " \n"))
	}
}

// headerLine says in one line what ran on what: the scenario and its size,
// then the machine.
func headerLine(r *Result) string {
	scenario := r.Scenario
	if scenario == "" {
		scenario = "(no scenario)"
	}
	run := fmt.Sprintf("nxmesh bench %s: %s agents, %s relays",
		scenario, group(float64(r.Config.Agents)), group(float64(r.Config.Relays)))
	return run + " | " + machineLine(r.Machine)
}

func machineLine(m Machine) string {
	var parts []string
	if m.CPUModel != "" {
		parts = append(parts, m.CPUModel)
	}
	parts = append(parts, fmt.Sprintf("%d cores", m.CPUs))
	if m.MemoryMiB > 0 {
		parts = append(parts, formatBytes(float64(m.MemoryMiB)*(1<<20)))
	}
	if m.GoVersion != "" {
		parts = append(parts, m.GoVersion)
	}
	return strings.Join(parts, ", ")
}

// table is a report table as text cells, so that the terminal and the HTML
// page show the same numbers in the same words.
type table struct {
	Title string
	Head  []string
	Rows  []row
}

// row is one table row; Class is "met" or "missed" for a figure judged
// against its target, else empty.
type row struct {
	Cells []string
	Class string
}

func figureTable(r *Result) table {
	t := table{Title: "Figures", Head: []string{"NAME", "VALUE", "TARGET", "MET"}}
	for _, f := range r.Figures {
		met, class := "", ""
		if f.Met != nil && *f.Met {
			met, class = "yes", "met"
		} else if f.Met != nil {
			met, class = "MISSED", "missed"
		}
		t.Rows = append(t.Rows, row{
			Cells: []string{f.Name, formatValue(f.Value, f.Unit), f.Target, met},
			Class: class,
		})
	}
	return t
}

func pushTable(r *Result) table {
	t := table{Title: "Pushes", Head: []string{"PUSH", "ACKED", "P50", "P90", "P99", "MAX", "LAST ACK", "CPU/AGENT", "BUSY"}}
	for _, p := range r.Pushes {
		l := p.Latency
		t.Rows = append(t.Rows, row{Cells: []string{
			strconv.Itoa(p.Round),
			group(float64(p.Acked)) + "/" + group(float64(p.Agents)),
			formatMs(l.P50), formatMs(l.P90), formatMs(l.P99), formatMs(l.Max),
			formatMs(p.LastAckMs),
			formatNumber(p.CPUPerAgentUs) + " us",
			formatNumber(p.BusyCores) + " cores",
		}})
	}
	return t
}

func stormTable(r *Result) table {
	t := table{Title: "Storms", Head: []string{"STORM", "TLS RESUMPTION", "AGENTS", "BACK", "CONVERGED", "RECONNECTS"}}
	for _, s := range r.Storms {
		t.Rows = append(t.Rows, row{Cells: []string{
			strconv.Itoa(s.Round),
			yesNo(s.TLSResumption),
			group(float64(s.Agents)),
			formatMs(s.BackMs),
			formatMs(s.ConvergedMs),
			group(float64(s.Reconnects)),
		}})
	}
	return t
}

// connectTable is the connect phase in one row.
func connectTable(r *Result) table {
	t := table{Title: "Connect", Head: []string{"AGENTS", "CONNECTED", "DURATION", "HANDSHAKES/S"}}
	if c := r.Connect; c != nil {
		t.Rows = []row{{Cells: []string{
			group(float64(c.Agents)), group(float64(c.Connected)),
			formatMs(c.DurationMs), formatNumber(c.HandshakesPerS),
		}}}
	}
	return t
}

// heartbeatTable is the heartbeat phase's load in one row.
func heartbeatTable(r *Result) table {
	t := table{Title: "Heartbeat", Head: []string{"AGENTS", "INTERVAL", "DURATION", "MESSAGES/S", "DB WRITES/S"}}
	if hb := r.Heartbeat; hb != nil {
		t.Rows = []row{{Cells: []string{
			group(float64(hb.Agents)), formatMs(hb.IntervalMs), formatMs(hb.DurationMs),
			formatNumber(hb.MessagesPerS), formatNumber(hb.DBWritesPerS),
		}}}
	}
	return t
}

// heartbeatCPUTable is the CPU each process spent on heartbeats, also in
// cores kept busy over the phase.
func heartbeatCPUTable(r *Result) table {
	t := table{Title: "CPU during heartbeat", Head: []string{"PROCESS", "AGENTS", "CPU", "CORES"}}
	hb := r.Heartbeat
	if hb == nil {
		return t
	}
	for _, p := range hb.CPUCoresByProcs {
		cores := "unknown"
		if hb.DurationMs > 0 {
			cores = formatNumber(p.CPUSeconds / (hb.DurationMs / 1000))
		}
		t.Rows = append(t.Rows, row{Cells: []string{p.Name, group(float64(p.Agents)), formatValue(p.CPUSeconds, "s"), cores}})
	}
	return t
}

// processTable is the hub and relays at the end of the connect phase.
func processTable(r *Result) table {
	t := table{Title: "Processes after connect", Head: []string{"PROCESS", "AGENTS", "RSS", "RSS/AGENT", "CPU"}}
	if r.Connect == nil {
		return t
	}
	for _, p := range r.Connect.Processes {
		t.Rows = append(t.Rows, row{Cells: []string{
			p.Name,
			group(float64(p.Agents)),
			formatBytes(float64(p.RSSBytes)),
			formatBytes(p.RSSPerAgentByte),
			formatValue(p.CPUSeconds, "s"),
		}})
	}
	return t
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// formatValue renders v in unit for a reader: milliseconds with one decimal
// under 10, bytes (and "bytes/agent") in KiB, MiB or GiB, everything else
// with thousands separators.
func formatValue(v float64, unit string) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return strings.TrimSpace(strconv.FormatFloat(v, 'f', -1, 64) + " " + unit)
	case unit == "ms":
		return formatMs(v)
	case unit == "B":
		return formatBytes(v)
	case strings.HasPrefix(unit, "bytes"):
		return formatBytes(v) + strings.TrimPrefix(unit, "bytes")
	case unit == "":
		return formatNumber(v)
	}
	return formatNumber(v) + " " + unit
}

func formatMs(v float64) string {
	if math.Abs(v) < 9.95 { // 9.96 would round to "10.0"
		return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
	}
	return group(v) + " ms"
}

// formatNumber keeps the digits that matter: none from 100 up, and for
// smaller values one or two decimals.
func formatNumber(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100 || v == math.Trunc(v):
		return group(v)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func formatBytes(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for math.Abs(v) >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return group(v) + " B"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i]
}

// group is v rounded to an integer, with thousands separators.
func group(v float64) string {
	s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	sign := ""
	if s[0] == '-' {
		sign, s = "-", s[1:]
	}
	if s == "0" {
		sign = ""
	}
	var b strings.Builder
	b.WriteString(sign)
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// WriteJSON writes r to path as indented JSON. The file appears whole or
// not at all (a temporary file renamed over it), so that a run stopped
// while writing never leaves half a result for a comparison script to read.
func WriteJSON(path string, r *Result) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode bench result for %s: %w", path, err)
	}
	data = append(data, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create directory for bench result: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write bench result %s: %w", path, err)
	}
	if err := writeAndClose(f, data); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write bench result %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write bench result %s: %w", path, err)
	}
	return nil
}

// writeAndClose writes data to f, readable by all like any report, and
// syncs it so that the rename never publishes an empty file after a crash.
func writeAndClose(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteHTML writes the run as one HTML page that opens anywhere, offline:
// CSS inline, charts as SVG drawn here, no script and no external reference,
// so that the file can be attached to an issue or archived beside the JSON
// and still show the same thing years later.
func WriteHTML(w io.Writer, r *Result) error {
	if r == nil {
		r = &Result{}
	}
	if err := pageTemplate.Execute(w, newPage(r)); err != nil {
		return fmt.Errorf("write bench html report: %w", err)
	}
	return nil
}

// page is what the HTML template shows; every string in it is escaped by
// html/template, and Charts are SVG whose text was escaped when drawn.
type page struct {
	Scenario string
	Summary  string
	Figures  table
	Charts   []template.HTML
	Rounds   []table
	Machine  []fact
	Run      []fact
	Notes    []string
}

// fact is one labelled value of the machine or the run.
type fact struct {
	Name, Value string
}

func newPage(r *Result) page {
	scenario := r.Scenario
	if scenario == "" {
		scenario = "(no scenario)"
	}
	return page{
		Scenario: scenario,
		Summary:  fmt.Sprintf("%s agents, %s relays", group(float64(r.Config.Agents)), group(float64(r.Config.Relays))),
		Figures:  figureTable(r),
		Charts: []template.HTML{
			latencyChart(r.Pushes),
			lineChart("Agents connected", "agents", connectedLines(r.Series)),
			lineChart("Memory (RSS)", "MiB", processLines(r.Series, func(s Sample) map[string]int64 { return s.RSS }, 1<<20)),
			lineChart("CPU", "cores", processLines(r.Series, func(s Sample) map[string]float64 { return s.CPU }, 1)),
		},
		Rounds:  []table{connectTable(r), processTable(r), pushTable(r), stormTable(r), heartbeatTable(r), heartbeatCPUTable(r)},
		Machine: machineFacts(r.Machine),
		Run:     runFacts(r),
		Notes:   r.Notes,
	}
}

func machineFacts(m Machine) []fact {
	return []fact{
		{"Host", orUnknown(m.Hostname)},
		{"System", orUnknown(strings.Trim(m.OS+"/"+m.Arch, "/"))},
		{"CPU", orUnknown(m.CPUModel)},
		{"Cores", strconv.Itoa(m.CPUs)},
		{"Memory", orUnknown(formatMiB(m.MemoryMiB))},
		{"Go", orUnknown(m.GoVersion)},
		{"nxmesh", orUnknown(m.Version)},
		{"Open files limit", group(float64(m.NoFile))},
	}
}

func runFacts(r *Result) []fact {
	c := r.Config
	facts := []fact{
		{"Started", formatTime(r.Started)},
		{"Took", formatTook(r.Started, r.Finished)},
		{"Agents", group(float64(c.Agents))},
		{"Relays", group(float64(c.Relays))},
		{"Push rounds", strconv.Itoa(c.Pushes)},
		{"Storm rounds", strconv.Itoa(c.Storms)},
		{"TLS resumption", yesNo(c.TLSResumption)},
		{"Source addresses", strconv.Itoa(c.SourceAddrs)},
		{"Agent processes", agentProcsFact(c.AgentProcs)},
		{"Database", orUnknown(c.Database)},
	}
	if c.HeartbeatDuration > 0 {
		facts = append(facts, fact{"Heartbeat", formatMs(c.HeartbeatInterval) + " interval for " + formatMs(c.HeartbeatDuration)})
	}
	return facts
}

func formatMiB(mib int64) string {
	if mib <= 0 {
		return ""
	}
	return formatBytes(float64(mib) * (1 << 20))
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.Format("2006-01-02 15:04:05 MST")
}

func formatTook(started, finished time.Time) string {
	if started.IsZero() || finished.IsZero() {
		return "unknown"
	}
	return finished.Sub(started).Round(time.Millisecond).String()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// pageTemplate is the report page. Its CSS is part of the template text, not
// data, so html/template leaves it as written.
var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nxmesh bench {{.Scenario}}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 2rem auto; max-width: 1340px; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.1rem; margin-top: 2rem; }
.summary { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .25rem .8rem; border-bottom: 1px solid #e4e4e4; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { font-size: .8rem; color: #555; border-bottom: 2px solid #ccc; }
table.facts th { text-align: left; font-weight: normal; color: #555; }
table.facts td { text-align: left; }
tr.met td:last-child { color: #1b7f3b; }
tr.missed td:last-child { color: #b00020; font-weight: 700; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 1.5rem; margin-top: 1.5rem; }
.charts figure { margin: 0; border: 1px solid #e4e4e4; border-radius: 6px; padding: .5rem; }
svg { width: 100%; height: auto; display: block; font-size: 11px; }
svg .title { font-size: 14px; font-weight: 600; fill: #222; }
svg .sub, svg .tick, svg .label { fill: #555; }
svg .nodata { font-size: 16px; fill: #999; }
svg .axis { stroke: #888; }
svg .grid { stroke: #eee; }
svg .series { fill: none; stroke-width: 2; stroke-linejoin: round; }
svg .bar { fill: #4a78c2; }
svg .bar:hover { fill: #2c5aa0; }
svg .pct { stroke: #c0392b; stroke-dasharray: 4 3; }
svg .pct-label { fill: #c0392b; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
.notes li { margin: .3rem 0; }
</style>
</head>
<body>
<h1>nxmesh bench: {{.Scenario}}</h1>
<p class="summary">{{.Summary}}</p>
{{template "table" .Figures}}
<section class="charts">
{{range .Charts}}<figure>{{.}}</figure>
{{end}}</section>
{{range .Rounds}}{{template "table" .}}{{end}}
<h2>Machine</h2>
{{template "facts" .Machine}}
<h2>Run</h2>
{{template "facts" .Run}}
{{with .Notes}}<h2>Notes</h2>
<ul class="notes">{{range .}}<li>{{.}}</li>{{end}}</ul>{{end}}
</body>
</html>
{{define "table"}}{{if .Rows}}<h2>{{.Title}}</h2>
<table>
<thead><tr>{{range .Head}}<th>{{.}}</th>{{end}}</tr></thead>
<tbody>
{{range .Rows}}<tr{{with .Class}} class="{{.}}"{{end}}>{{range .Cells}}<td>{{.}}</td>{{end}}</tr>
{{end}}</tbody>
</table>
{{end}}{{end}}
{{define "facts"}}<table class="facts">
{{range .}}<tr><th>{{.Name}}</th><td>{{.Value}}</td></tr>
{{end}}</table>{{end}}
`))

// agentProcsFact says which processes ran the agents.
func agentProcsFact(n int) string {
	switch n {
	case 0:
		return "unknown"
	}
	return strconv.Itoa(n) + " beside the bench"
}
