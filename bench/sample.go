package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// sampleInterval is how often the hub's and relays' memory and CPU and the
// connected agents are sampled for the charts.
const sampleInterval = 500 * time.Millisecond

// sampler samples the daemons and the fleet every sampleInterval into the
// result's Series, and draws the progress line from the latest sample.
type sampler struct {
	start time.Time
	procs func() []*proc // the daemons now (relays restart with new pids)
	// agents are the agent processes other than the bench (none when the
	// agents run in it): their memory and CPU count as the bench's.
	agents func() []int
	conn   func() int // agents connected now

	mu     sync.Mutex // guards the fields below
	series []Sample
	prev   map[string]procSample // last reading per process, for CPU rates
	prevAt time.Time
	phase  string // what the run does now, for the progress line
	detail func() string
}

// benchProc is the name of the bench in the samples: this process and its
// agent processes, whose memory and CPU are the simulated agents' cost on
// the machine the daemons share.
const benchProc = "bench"

// run samples until ctx ends.
func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(sampleInterval)
	defer t.Stop()
	for {
		s.sample()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sample takes one sample.
func (s *sampler) sample() {
	now := time.Now()
	readings := map[string]procSample{}
	for _, p := range s.procs() {
		if r, err := readProc(p.pid()); err == nil {
			readings[p.name] = r
		}
	}
	if r, err := readProc(os.Getpid()); err == nil {
		for _, pid := range s.agents() {
			// An agent process that cannot be read has exited, which
			// fails the run.
			if a, err := readProc(pid); err == nil {
				r.RSS += a.RSS
				r.CPU += a.CPU
			}
		}
		readings[benchProc] = r
	}
	smp := Sample{
		AtMs:      millis(now.Sub(s.start)),
		Connected: s.conn(),
		RSS:       map[string]int64{},
		CPU:       map[string]float64{},
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, r := range readings {
		smp.RSS[name] = r.RSS
		// A restarted relay's CPU starts over: no rate across a restart.
		if p, ok := s.prev[name]; ok && r.CPU >= p.CPU && now.After(s.prevAt) {
			smp.CPU[name] = float64(r.CPU-p.CPU) / float64(now.Sub(s.prevAt))
		}
	}
	s.prev, s.prevAt = readings, now
	s.series = append(s.series, smp)
}

// setPhase names what the run does now; detail, when set, adds to the
// progress line.
func (s *sampler) setPhase(phase string, detail func() string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phase, s.detail = phase, detail
}

// phaseNow is what the run does now.
func (s *sampler) phaseNow() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phase
}

// samples is a copy of the series so far.
func (s *sampler) samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.series)
}

// line is the progress line: the phase, connected agents, and the memory
// and CPU of every process in the latest sample.
func (s *sampler) line() string {
	s.mu.Lock()
	phase, detail := s.phase, s.detail
	var last Sample
	if len(s.series) > 0 {
		last = s.series[len(s.series)-1]
	}
	s.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "[%s] %s", time.Since(s.start).Truncate(time.Second), phase)
	if detail != nil {
		if d := detail(); d != "" {
			b.WriteString(": " + d)
		}
	}
	fmt.Fprintf(&b, " | connected %d", s.conn())
	names := make([]string, 0, len(last.RSS))
	for name := range last.RSS {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(&b, " | %s %d MiB %.2f cores", name, last.RSS[name]>>20, last.CPU[name])
	}
	return b.String()
}

// progress writes the sampler's line to w: rewritten in place every half
// second on a terminal, a new line every five seconds elsewhere (a CI log
// should not get a line per half second).
func (s *sampler) progress(ctx context.Context, w io.Writer) {
	tty := isTerminal(w)
	every := 5 * time.Second
	if tty {
		every = sampleInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	width := 0
	for {
		select {
		case <-ctx.Done():
			if tty && width > 0 {
				fmt.Fprintf(w, "\r%s\r", strings.Repeat(" ", width))
			}
			return
		case <-t.C:
		}
		line := s.line()
		if !tty {
			fmt.Fprintln(w, line)
			continue
		}
		fmt.Fprintf(w, "\r%s%s", line, strings.Repeat(" ", max(width-len(line), 0)))
		width = len(line)
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// millis is d in milliseconds.
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
