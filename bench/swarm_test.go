package bench

import (
	"os"
	"strings"
	"testing"
)

func TestPlanAgentProcs(t *testing.T) {
	tests := []struct {
		name                  string
		agents, relays, asked int
		limit                 uint64
		want                  int
		wantErrNaming         string
	}{
		{name: "fits the bench", agents: 10000, relays: 1, limit: 20000, want: 1},
		{name: "just fits the bench", agents: 20000 - agentProcReserve, relays: 2, limit: 20000, want: 1},
		{name: "one over", agents: 20000 - agentProcReserve + 1, relays: 2, limit: 20000, want: 2},
		{name: "50k under 20k files", agents: 50000, relays: 3, limit: 20000, want: 3},
		{name: "asked for more", agents: 200, relays: 2, asked: 2, limit: 20000, want: 2},
		{name: "asked for the bench", agents: 200, relays: 1, asked: 1, limit: 20000, want: 1},
		{name: "too many per relay", agents: 50000, relays: 2, limit: 20000, wantErrNaming: "--relays 3"},
		{name: "too many per asked process", agents: 50000, relays: 3, asked: 2, limit: 20000, wantErrNaming: "--agent-procs 3"},
		{name: "no room", agents: 10, relays: 1, limit: 600, wantErrNaming: "no room"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := planAgentProcs(tc.agents, tc.relays, tc.asked, tc.limit)
			if tc.wantErrNaming != "" {
				// The message is the user's only guide to a run that fits.
				if err == nil || !strings.Contains(err.Error(), tc.wantErrNaming) {
					t.Fatalf("planAgentProcs = %d, %v; want an error naming %q", got, err, tc.wantErrNaming)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("planAgentProcs = %d, %v; want %d", got, err, tc.want)
			}
			if per := ceilDiv(tc.agents, got); uint64(per+agentProcReserve) > tc.limit {
				t.Errorf("%d agents per process do not fit a limit of %d", per, tc.limit)
			}
		})
	}
}

// TestSamplerCountsAgentProcesses checks that the bench's memory and CPU
// in the samples include its agent processes'.
func TestSamplerCountsAgentProcesses(t *testing.T) {
	self, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// This process stands in for an agent process beside itself.
	s := &sampler{procs: func() []*proc { return nil }, agents: func() []int { return []int{os.Getpid()} }, conn: func() int { return 0 }}
	s.sample()
	got := s.samples()[0].RSS[benchProc]
	if float64(got) < 1.5*float64(self.RSS) {
		t.Errorf("bench RSS %d with an agent process of %d, want about twice", got, self.RSS)
	}
}
