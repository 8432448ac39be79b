package bench

import (
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

// Scenarios `nxmesh bench` runs.
const (
	ScenarioConnect   = "connect"
	ScenarioPush      = "push"
	ScenarioStorm     = "storm"
	ScenarioHeartbeat = "heartbeat"
	ScenarioStandard  = "standard"
)

// Scenarios lists every scenario, in the order --help shows them.
var Scenarios = []string{ScenarioConnect, ScenarioPush, ScenarioStorm, ScenarioHeartbeat, ScenarioStandard}

// maxAgentsPerSource is how many agents share one loopback source address
// at most: each connection takes an ephemeral port of its source address,
// and Linux gives about 28,000 of them (32768-60999) per address.
const maxAgentsPerSource = 25000

// defaultAgentsPerSource is how many share one by default, far fewer: the
// kernel's search for a free port grows costly as an address's range
// fills (at 25,000 agents per address, bind took most of the agent
// processes' CPU while 50,000 agents connected).
const defaultAgentsPerSource = 5000

// Config is one bench run. Zero values take the scenario's defaults
// (Validate fills them in).
type Config struct {
	// Scenario is one of Scenarios.
	Scenario string
	// Binary is the nxmesh executable started as hub and relays; default
	// the running executable.
	Binary string
	// Agents is how many simulated agents connect (default 1,000; 10,000
	// for standard).
	Agents int
	// Relays is how many relay processes hold them (default 1; 2 for
	// standard). Agent i connects to relay i mod Relays.
	Relays int
	// Pushes is how many changes the push scenario commits (default 5; 10
	// for standard).
	Pushes int
	// StormResumption is which storms run: "off", "on" (agents offer their
	// TLS session tickets) or "both" (default both; on for standard).
	StormResumption string
	// StormRelays is how many relays a storm kills and restarts at once
	// (default all of them).
	StormRelays int
	// HeartbeatInterval is what relays tell agents (default 15 s), and
	// HeartbeatDuration how long the heartbeat scenario measures (default
	// four intervals).
	HeartbeatInterval, HeartbeatDuration time.Duration
	// SourceAddrs is how many loopback source addresses (127.0.0.2, ...)
	// the agents are spread over (default: one per 5,000 agents; at most
	// 25,000 per address).
	SourceAddrs int
	// ConnectRate starts at most this many agents per second (default 0:
	// all at once, the worst case a relay must survive).
	ConnectRate int
	// AgentProcs is how many `nxmesh bench-agents` child processes run
	// the agents, each with an equal share; the bench itself runs none, so
	// that what it does to measure stays out of the agents' way. Default
	// 0: as few as the open files limit allows, one when they fit.
	AgentProcs int
	// Enrollers is how many enrollments run at once when minting agent
	// certificates (default 4).
	Enrollers int
	// WorkDir keeps the hub's data, the relays' state, the agents' keys
	// and certificates and the daemons' logs between runs (default .bench).
	WorkDir string
	// ProfileDir, when set, receives CPU profiles of the hub, the relays
	// and the bench, taken back to back through the run (see profiler).
	ProfileDir string
	// Fresh discards what WorkDir holds and starts from nothing.
	Fresh bool
	// DatabaseURL is given to the hub (postgres:// ...); default SQLite in
	// WorkDir.
	DatabaseURL string
	// Timeout bounds every wait of the run: all agents connected, a push
	// acked, a storm back (default 2 minutes, plus 1 s per 500 agents).
	Timeout time.Duration
	// Version is the nxmesh version, for the report.
	Version string
	// Progress receives the live progress line (default os.Stderr).
	Progress io.Writer

	// beforeStop, when set, runs after the scenario, while the hub and the
	// relays still run (tests look at the hub through its API).
	beforeStop func(e *env) error
}

// Validate checks c and fills in the scenario's defaults.
func (c *Config) Validate() error {
	if !slices.Contains(Scenarios, c.Scenario) {
		return fmt.Errorf("bench: unknown scenario %q: want one of %v", c.Scenario, Scenarios)
	}
	std := c.Scenario == ScenarioStandard
	def := func(v *int, normal, standard int) {
		if *v == 0 {
			*v = normal
			if std {
				*v = standard
			}
		}
	}
	def(&c.Agents, 1000, 10000)
	def(&c.Relays, 1, 2)
	def(&c.Pushes, 5, 10)
	def(&c.Enrollers, 4, 4)
	if c.StormResumption == "" {
		c.StormResumption = "both"
		if std {
			c.StormResumption = "on"
		}
	}
	if c.Agents < 1 || c.Relays < 1 || c.Pushes < 1 || c.Enrollers < 1 {
		return fmt.Errorf("bench: agents (%d), relays (%d), pushes (%d) and enrollers (%d) must be positive", c.Agents, c.Relays, c.Pushes, c.Enrollers)
	}
	if !slices.Contains([]string{"on", "off", "both"}, c.StormResumption) {
		return fmt.Errorf("bench: storm resumption %q: want on, off or both", c.StormResumption)
	}
	if c.StormRelays <= 0 || c.StormRelays > c.Relays {
		c.StormRelays = c.Relays
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 15 * time.Second
	}
	if c.HeartbeatInterval < 100*time.Millisecond {
		return fmt.Errorf("bench: heartbeat interval %s is below 100ms, which agents ignore", c.HeartbeatInterval)
	}
	if c.HeartbeatDuration <= 0 {
		c.HeartbeatDuration = 4 * c.HeartbeatInterval
	}
	need := ceilDiv(c.Agents, maxAgentsPerSource)
	if c.SourceAddrs == 0 {
		c.SourceAddrs = min(ceilDiv(c.Agents, defaultAgentsPerSource), 250)
	}
	if c.SourceAddrs < need || c.SourceAddrs > 250 {
		return fmt.Errorf("bench: %d source addresses for %d agents: want %d to 250 (at most %d agents per address)", c.SourceAddrs, c.Agents, need, maxAgentsPerSource)
	}
	if c.ConnectRate < 0 {
		return fmt.Errorf("bench: connect rate %d is negative", c.ConnectRate)
	}
	if c.AgentProcs < 0 || c.AgentProcs > c.Agents {
		return fmt.Errorf("bench: %d agent processes for %d agents: want 0 (the bench chooses) to one per agent", c.AgentProcs, c.Agents)
	}
	if c.WorkDir == "" {
		c.WorkDir = ".bench"
	}
	if c.Timeout <= 0 {
		c.Timeout = 2*time.Minute + time.Duration(c.Agents/500)*time.Second
	}
	if c.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: find the nxmesh executable to start hub and relays: %w", err)
		}
		c.Binary = exe
	}
	if c.Progress == nil {
		c.Progress = os.Stderr
	}
	return nil
}

// stormModes is the TLS resumption setting of each storm round.
func (c *Config) stormModes() []bool {
	switch c.StormResumption {
	case "on":
		return []bool{true}
	case "off":
		return []bool{false}
	}
	return []bool{false, true}
}

// database names the hub's store for the report.
func (c *Config) database() string {
	if c.DatabaseURL == "" {
		return "sqlite"
	}
	return "postgres"
}
