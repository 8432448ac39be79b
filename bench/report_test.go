package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

func TestReportLatency(t *testing.T) {
	tests := []struct {
		name               string
		samples            []time.Duration
		p50, p90, p99, max float64
	}{
		{name: "empty"},
		{name: "one", samples: ms(7), p50: 7, p90: 7, p99: 7, max: 7},
		{name: "ten", samples: ms(10, 1, 9, 2, 8, 3, 7, 4, 6, 5), p50: 5, p90: 9, p99: 10, max: 10},
		{name: "hundred", samples: msRange(1, 100), p50: 50, p90: 90, p99: 99, max: 100},
		{name: "two hundred", samples: msRange(1, 200), p50: 100, p90: 180, p99: 198, max: 200},
		{name: "beyond the last bound", samples: ms(0.5, 15000, 20000), p50: 15000, p90: 20000, p99: 20000, max: 20000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLatency(tc.samples)
			if l.Count != len(tc.samples) {
				t.Errorf("Count = %d, want %d", l.Count, len(tc.samples))
			}
			got := []float64{l.P50, l.P90, l.P99, l.Max}
			want := []float64{tc.p50, tc.p90, tc.p99, tc.max}
			for i, name := range []string{"p50", "p90", "p99", "max"} {
				if got[i] != want[i] {
					t.Errorf("%s = %v, want %v", name, got[i], want[i])
				}
			}
			if len(l.Buckets) != len(l.BucketBounds) {
				t.Fatalf("%d buckets for %d bounds", len(l.Buckets), len(l.BucketBounds))
			}
			if l.BucketBounds[len(l.BucketBounds)-1] != -1 {
				t.Errorf("last bound = %v, want -1 (+Inf)", l.BucketBounds[len(l.BucketBounds)-1])
			}
			sum := 0
			for _, n := range l.Buckets {
				sum += n
			}
			if sum != l.Count {
				t.Errorf("buckets sum to %d, want Count %d", sum, l.Count)
			}
		})
	}
}

func TestReportLatencyBuckets(t *testing.T) {
	l := NewLatency(ms(0.5, 1, 1.5, 2, 3, 12000))
	want := map[float64]int{1: 2, 2: 2, 5: 1, -1: 1}
	for i, b := range l.BucketBounds {
		if l.Buckets[i] != want[b] {
			t.Errorf("bucket <= %v holds %d, want %d", b, l.Buckets[i], want[b])
		}
	}
}

// ms turns milliseconds into durations.
func ms(v ...float64) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x * float64(time.Millisecond))
	}
	return out
}

// msRange is from..to milliseconds, one apart, shuffled by reversal.
func msRange(from, to int) []time.Duration {
	var out []time.Duration
	for v := to; v >= from; v-- {
		out = append(out, time.Duration(v)*time.Millisecond)
	}
	return out
}

// fixture is a standard run: every part of Result filled, one target
// missed, and names that need escaping.
func fixture(scenario string) *Result {
	yes, no := true, false
	started := time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)
	return &Result{
		Scenario: scenario,
		Started:  started,
		Finished: started.Add(95 * time.Second),
		Config:   RunConfig{Agents: 10000, Relays: 2, Pushes: 3, Storms: 1, TLSResumption: true, Database: "sqlite"},
		Machine:  Machine{Hostname: "bench-1", OS: "linux", Arch: "amd64", CPUs: 8, CPUModel: "AMD EPYC 7B13", MemoryMiB: 32000, GoVersion: "go1.26.8", Version: "v0.9.0", NoFile: 1048576},
		Figures: []Figure{
			{Name: "handshakes", Value: 2345.6, Unit: "agents/s", Target: ">= 1000 agents/s", Met: &yes},
			{Name: "push p99", Value: 1234.4, Unit: "ms", Target: "<= 1000 ms", Met: &no},
			{Name: "hub RSS per agent", Value: 14336, Unit: "bytes/agent"},
			{Name: "connect p50", Value: 3.25, Unit: "ms"},
		},
		Connect: &ConnectResult{Agents: 10000, Connected: 10000, DurationMs: 4263, HandshakesPerS: 2345.6, Processes: []ProcessStats{
			{Name: "hub", RSSBytes: 180 << 20, CPUSeconds: 12.5, Agents: 10000, RSSPerAgentByte: 18874},
			{Name: "relay-1", RSSBytes: 90 << 20, CPUSeconds: 7.25, Agents: 5000, RSSPerAgentByte: 18874},
		}},
		Pushes: []PushResult{
			{Round: 1, Revision: 2, Hash: "abc", Acked: 10000, Agents: 10000, LastAckMs: 812, Latency: NewLatency(msRange(1, 800))},
			{Round: 2, Revision: 3, Hash: "def", Acked: 9998, Agents: 10000, LastAckMs: 1900, Latency: NewLatency(msRange(30, 1900))},
		},
		Storms: []StormResult{{Round: 1, TLSResumption: true, Agents: 5000, BackMs: 2100, ConvergedMs: 2600, Reconnects: 5003}},
		Heartbeat: &HeartbeatResult{Agents: 10000, IntervalMs: 30000, DurationMs: 60000, MessagesPerS: 333.3, DBWritesPerS: 12.5,
			CPUCoresByProcs: []ProcessStats{{Name: "hub", CPUSeconds: 27, Agents: 10000}}},
		Series: []Sample{
			{AtMs: 0, Connected: 0, RSS: map[string]int64{"hub": 40 << 20, "relay-1": 20 << 20, "relay-2": 20 << 20, "<b>relay-x</b>": 1 << 20}, CPU: map[string]float64{"hub": 0.1}},
			{AtMs: 1000, Connected: 4000, RSS: map[string]int64{"hub": 120 << 20, "relay-1": 60 << 20}, CPU: map[string]float64{"hub": 1.5, "relay-1": 0.8}},
			{AtMs: 2000, Connected: 10000, RSS: map[string]int64{"hub": 180 << 20, "relay-1": 90 << 20, "relay-2": 90 << 20}, CPU: map[string]float64{"hub": 0.9, "relay-1": 0.4, "relay-2": 0.4}},
		},
		Notes: []string{"raised RLIMIT_NOFILE from 1024 to 1048576", "relay-2 restarted <during> the storm"},
	}
}

func TestReportTable(t *testing.T) {
	var b strings.Builder
	if err := WriteTable(&b, fixture("push")); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	lines := strings.Split(out, "\n")
	if want := "nxmesh bench push: 10,000 agents, 2 relays | AMD EPYC 7B13, 8 cores, 31.2 GiB, go1.26.8"; lines[0] != want {
		t.Errorf("header = %q, want %q", lines[0], want)
	}
	for _, want := range []string{
		"MISSED", "yes", "2,346 agents/s", "1,234 ms", "3.2 ms", "14.0 KiB/agent",
		"9,998/10,000", "1,900 ms", "2,600 ms", "5,003",
		"note: raised RLIMIT_NOFILE from 1024 to 1048576",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	for i, l := range lines[1:] {
		if strings.HasSuffix(l, " ") {
			t.Errorf("line %d ends in blanks: %q", i+2, l)
		}
		if len(l) > 100 {
			t.Errorf("line %d is %d columns wide: %q", i+2, len(l), l)
		}
	}
}

func TestReportTableEmpty(t *testing.T) {
	for name, r := range map[string]*Result{"empty": {}, "nil": nil, "connect only": {Scenario: "connect", Figures: fixture("").Figures[:1]}} {
		t.Run(name, func(t *testing.T) {
			var b strings.Builder
			if err := WriteTable(&b, r); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(b.String(), "nxmesh bench ") {
				t.Errorf("no header line:\n%s", b.String())
			}
			if strings.Contains(b.String(), "PUSH") {
				t.Errorf("push table without pushes:\n%s", b.String())
			}
		})
	}
}

func TestReportFormatValue(t *testing.T) {
	tests := []struct {
		v    float64
		unit string
		want string
	}{
		{3.14159, "ms", "3.1 ms"},
		{9.94, "ms", "9.9 ms"},
		{9.96, "ms", "10 ms"},
		{10.4, "ms", "10 ms"},
		{1234.5, "ms", "1,235 ms"},
		{512, "bytes", "512 B"},
		{1536, "bytes", "1.5 KiB"},
		{5 << 20, "B", "5.0 MiB"},
		{4096, "bytes/agent", "4.0 KiB/agent"},
		{12345.6, "agents/s", "12,346 agents/s"},
		{1234567, "", "1,234,567"},
		{-1234, "", "-1,234"},
		{0.25, "cores", "0.25 cores"},
		{42.42, "%", "42.4 %"},
		{math.NaN(), "ms", "NaN ms"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := formatValue(tc.v, tc.unit); got != tc.want {
				t.Errorf("formatValue(%v, %q) = %q, want %q", tc.v, tc.unit, got, tc.want)
			}
		})
	}
}

func TestReportHTML(t *testing.T) {
	var b bytes.Buffer
	if err := WriteHTML(&b, fixture("push <script>alert(1)</script>")); err != nil {
		t.Fatal(err)
	}
	raw := b.String()
	doc, err := html.Parse(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(elements(doc, "svg")); got != 4 {
		t.Errorf("%d <svg> charts, want 4", got)
	}
	assertOffline(t, doc)
	if strings.Contains(raw, "<script>alert") || strings.Contains(raw, "<b>relay") || strings.Contains(raw, "<during>") {
		t.Error("a name from the run reached the page unescaped")
	}
	if h1 := elements(doc, "h1"); len(h1) != 1 || !strings.Contains(text(h1[0]), "push <script>alert(1)</script>") {
		t.Error("the escaped scenario name does not read back as written in <h1>")
	}
	for _, want := range []string{"MISSED", "9,998/10,000", "AMD EPYC 7B13", "relay-2 restarted &lt;during&gt; the storm", "&lt;b&gt;relay-x&lt;/b&gt;", `class="missed"`,
		"<td>0.45</td>", "<td>333</td>", "<td>4,263 ms</td>"} {
		if !strings.Contains(raw, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(raw, "no data") {
		t.Error(`a chart says "no data" for a full run`)
	}
}

func TestReportHTMLEmpty(t *testing.T) {
	for name, r := range map[string]*Result{"empty": {}, "nil": nil, "connect only": {Scenario: "connect", Connect: &ConnectResult{}}} {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteHTML(&b, r); err != nil {
				t.Fatal(err)
			}
			doc, err := html.Parse(&b)
			if err != nil {
				t.Fatal(err)
			}
			svgs := elements(doc, "svg")
			if len(svgs) != 4 {
				t.Fatalf("%d <svg> charts, want 4", len(svgs))
			}
			for _, s := range svgs {
				if !strings.Contains(text(s), "no data") {
					t.Errorf("chart %q without data does not say so", text(s))
				}
			}
		})
	}
}

// TestReportChartsWellFormed: each chart is XML on its own, so it survives
// being cut out of the page into an .svg file.
func TestReportChartsWellFormed(t *testing.T) {
	for _, r := range []*Result{fixture("push"), {}} {
		for i, chart := range newPage(r).Charts {
			dec := xml.NewDecoder(strings.NewReader(string(chart)))
			for {
				_, err := dec.Token()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Errorf("chart %d (%q) is not well-formed: %v", i, r.Scenario, err)
					break
				}
			}
		}
	}
}

// TestReportPooledPercentile: with several rounds the marked percentile is
// an estimate, but it lies in the bucket of the true pooled percentile and
// between the rounds' own.
func TestReportPooledPercentile(t *testing.T) {
	rounds := [][]time.Duration{msRange(1, 800), msRange(30, 1900), ms(3, 3, 4, 5000)}
	var pushes []PushResult
	var all []time.Duration
	for _, s := range rounds {
		pushes = append(pushes, PushResult{Latency: NewLatency(s)})
		all = append(all, s...)
	}
	pooled := NewLatency(all)
	h := combinePushes(pushes)
	for _, tc := range []struct {
		p    float64
		of   func(Latency) float64
		want float64
	}{
		{50, func(l Latency) float64 { return l.P50 }, pooled.P50},
		{90, func(l Latency) float64 { return l.P90 }, pooled.P90},
		{99, func(l Latency) float64 { return l.P99 }, pooled.P99},
	} {
		got, exact := h.percentile(tc.p, tc.of)
		if exact {
			t.Errorf("p%v: rounds disagree, yet the pooled value is called exact", tc.p)
		}
		if bucketOf(h.bounds, got) != bucketOf(h.bounds, tc.want) {
			t.Errorf("p%v = %v, not in the bucket of the true %v", tc.p, got, tc.want)
		}
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, p := range pushes {
			lo, hi = min(lo, tc.of(p.Latency)), max(hi, tc.of(p.Latency))
		}
		if got < lo || got > hi {
			t.Errorf("p%v = %v, outside the rounds' [%v, %v]", tc.p, got, lo, hi)
		}
	}
	one := combinePushes(pushes[:1])
	if got, exact := one.percentile(99, func(l Latency) float64 { return l.P99 }); !exact || got != pushes[0].Latency.P99 {
		t.Errorf("one round: p99 = %v (exact %v), want its own %v", got, exact, pushes[0].Latency.P99)
	}
}

func TestReportJSON(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "runs", "2025-03-14")
	path := filepath.Join(dir, "push.json")
	want := fixture("push")
	for range 2 { // the second write replaces the first
		if err := WriteJSON(path, want); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got Result
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, want) {
		t.Errorf("round trip changed the result:\n got %+v\nwant %+v", got, *want)
	}
	assertOnlyFile(t, dir, "push.json")
}

func TestReportJSONUnencodable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.json")
	r := &Result{Figures: []Figure{{Name: "rate", Value: math.NaN()}}}
	if err := WriteJSON(path, r); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("WriteJSON with NaN: err = %v, want an error naming %s", err, path)
	}
	assertOnlyFile(t, dir, "")
}

func assertOnlyFile(t *testing.T, dir, name string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{}
	if name != "" {
		want = []string{name}
	}
	if !slices.Equal(names, want) {
		t.Errorf("%s holds %v, want %v (no temporary file left behind)", dir, names, want)
	}
}

// assertOffline fails when the page would load anything: a script, a
// stylesheet, an image or a font from a src or href, or a url() in CSS.
func assertOffline(t *testing.T, doc *html.Node) {
	t.Helper()
	walk(doc, func(n *html.Node) {
		if n.Type != html.ElementNode {
			return
		}
		for _, a := range n.Attr {
			key := strings.ToLower(a.Key)
			if key == "src" || key == "href" || strings.HasSuffix(key, ":href") {
				if v := strings.ToLower(a.Val); strings.Contains(v, "http://") || strings.Contains(v, "https://") || n.Data == "script" {
					t.Errorf("<%s %s=%q> loads from outside the file", n.Data, a.Key, a.Val)
				}
			}
		}
		if n.Data == "style" && strings.Contains(text(n), "url(") {
			t.Error("the CSS loads a url()")
		}
	})
}

func elements(doc *html.Node, tag string) []*html.Node {
	var found []*html.Node
	walk(doc, func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == tag {
			found = append(found, n)
		}
	})
	return found
}

func text(n *html.Node) string {
	var b strings.Builder
	walk(n, func(c *html.Node) {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	})
	return b.String()
}

func walk(n *html.Node, visit func(*html.Node)) {
	visit(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, visit)
	}
}

// TestPushTargets checks that each push target judges the figure the issue
// names: the p99 of every ack at 10,000 agents, the last ack of any push at
// 50,000. A run whose p99 is under 3 s but whose last ack is over it misses
// the 50,000-agent target.
func TestPushTargets(t *testing.T) {
	lat := NewLatency(append(msRange(1, 990), 3500*time.Millisecond))
	tests := []struct {
		agents int
		met    map[string]bool // figures that carry a judged target
	}{
		{agents: 200, met: map[string]bool{"acks of the pushed hash": true}},
		{agents: 10000, met: map[string]bool{"acks of the pushed hash": true, "push p99": true}},
		{agents: 50000, met: map[string]bool{"acks of the pushed hash": true, "push max (last ack)": false}},
	}
	for _, tc := range tests {
		e := &env{cfg: &Config{Agents: tc.agents, Pushes: 2}, res: &Result{}}
		e.pushFigures(lat, 2*tc.agents, 0)
		got := map[string]bool{}
		for _, f := range e.res.Figures {
			if f.Met != nil {
				got[f.Name] = *f.Met
			}
		}
		if !reflect.DeepEqual(got, tc.met) {
			t.Errorf("%d agents: judged figures %v, want %v", tc.agents, got, tc.met)
		}
	}
}
