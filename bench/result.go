package bench

import "time"

// Result is everything one bench run measured: what --json writes and what
// the HTML report draws. Durations are in milliseconds, sizes in bytes,
// rates per second. Fields are only added, never renamed.
type Result struct {
	// Scenario is connect, push, storm, heartbeat or standard.
	Scenario string `json:"scenario"`
	// Started and Finished bound the run.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Config is what the run was asked to do.
	Config RunConfig `json:"config"`
	// Machine is what it ran on.
	Machine Machine `json:"machine"`
	// Figures are the summary: one row per measured figure, with the
	// target it is judged against when there is one.
	Figures []Figure `json:"figures"`
	// Connect is the connect phase (every scenario has one).
	Connect *ConnectResult `json:"connect,omitempty"`
	// Pushes are the push rounds, in order.
	Pushes []PushResult `json:"pushes,omitempty"`
	// Storms are the storm rounds, in order.
	Storms []StormResult `json:"storms,omitempty"`
	// Heartbeat is the heartbeat phase.
	Heartbeat *HeartbeatResult `json:"heartbeat,omitempty"`
	// Series are samples over time for the charts: agents connected and
	// the memory and CPU of the hub and each relay.
	Series []Sample `json:"series"`
	// Notes are things the run wants the reader to know (a raised file
	// limit, a target that could not be measured, ...).
	Notes []string `json:"notes,omitempty"`
}

// RunConfig is the run's parameters.
type RunConfig struct {
	Agents            int     `json:"agents"`
	Relays            int     `json:"relays"`
	Pushes            int     `json:"pushes"`
	Storms            int     `json:"storms"`
	HeartbeatInterval float64 `json:"heartbeatIntervalMs"`
	HeartbeatDuration float64 `json:"heartbeatDurationMs"`
	TLSResumption     bool    `json:"tlsResumption"`
	SourceAddrs       int     `json:"sourceAddrs"`
	// AgentProcs is how many agent processes ran the agents beside the
	// bench.
	AgentProcs int    `json:"agentProcs"`
	Database   string `json:"database"` // "sqlite" or "postgres"
}

// Machine describes the host.
type Machine struct {
	Hostname  string `json:"hostname"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpuModel"`
	MemoryMiB int64  `json:"memoryMiB"`
	GoVersion string `json:"goVersion"`
	Version   string `json:"version"` // nxmesh version
	NoFile    uint64 `json:"noFile"`  // RLIMIT_NOFILE in effect
}

// Figure is one summary number.
type Figure struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Target string  `json:"target,omitempty"` // e.g. "<= 1000 ms"
	// Met is nil when the figure has no target.
	Met *bool `json:"met,omitempty"`
}

// Latency is a distribution in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
	// Histogram has Buckets[i] samples at most BucketBounds[i] ms (the
	// last bound is +Inf, written as -1).
	BucketBounds []float64 `json:"bucketBounds"`
	Buckets      []int     `json:"buckets"`
}

// ConnectResult is N agents connecting.
type ConnectResult struct {
	Agents         int     `json:"agents"`
	Connected      int     `json:"connected"`
	DurationMs     float64 `json:"durationMs"` // until all connected
	HandshakesPerS float64 `json:"handshakesPerSecond"`
	// Per process at the end of the phase, idle.
	Processes []ProcessStats `json:"processes"`
}

// ProcessStats is one hub or relay process.
type ProcessStats struct {
	Name            string  `json:"name"` // "hub", "relay-1", ...
	RSSBytes        int64   `json:"rssBytes"`
	CPUSeconds      float64 `json:"cpuSeconds"`
	Agents          int     `json:"agents"`
	RSSPerAgentByte float64 `json:"rssPerAgentBytes,omitempty"`
}

// PushResult is one change committed through the API and acked by every
// agent.
type PushResult struct {
	Round    int    `json:"round"`
	Revision int64  `json:"revision"`
	Hash     string `json:"hash"`
	Acked    int    `json:"acked"` // agents that acked Hash
	Agents   int    `json:"agents"`
	// AnsweredMs is when the API answered the commit, in ms since the run
	// started: the clock of the series' samples, so a push can be found
	// in them (and in a profile).
	AnsweredMs float64 `json:"answeredMs"`
	LastAckMs  float64 `json:"lastAckMs"`
	Latency    Latency `json:"latency"` // API answer to each agent's ack
	// HubConvergedMs is from the API's answer until the hub's convergence
	// endpoint counted every agent applied (polled: an upper bound).
	HubConvergedMs float64 `json:"hubConvergedMs"`
	// Deltas counts the agents that built the pushed bundle from a delta
	// (only the files that changed) instead of receiving it whole;
	// WholeAsked those whose delta did not apply and who asked for the
	// whole bundle.
	Deltas     int `json:"deltas"`
	WholeAsked int `json:"wholeAsked"`
	// CPUPerAgentUs is the CPU time that the hub, the relays, the bench
	// and its agent processes used from the API's answer until every
	// agent had reported, per agent, in microseconds; BusyCores is that
	// CPU time over the same wall time.
	CPUPerAgentUs float64 `json:"cpuPerAgentUs"`
	BusyCores     float64 `json:"busyCores"`
}

// StormResult is a relay killed and restarted (or agents moved).
type StormResult struct {
	Round         int     `json:"round"`
	TLSResumption bool    `json:"tlsResumption"`
	Agents        int     `json:"agents"`
	BackMs        float64 `json:"backMs"`      // until all reconnected
	ConvergedMs   float64 `json:"convergedMs"` // until all on the desired hash
	Reconnects    int     `json:"reconnects"`
	// Converged is false when the hub did not count every agent applied
	// within the run's timeout; ConvergedMs is then the time waited.
	Converged bool `json:"converged"`
	// Resumed counts the reconnects whose TLS handshake resumed a session
	// (only possible with TLSResumption, and only when the restarted
	// relay accepts tickets issued before its restart).
	Resumed int `json:"resumed"`
}

// HeartbeatResult is N agents heartbeating for a while.
type HeartbeatResult struct {
	Agents          int            `json:"agents"`
	IntervalMs      float64        `json:"intervalMs"`
	DurationMs      float64        `json:"durationMs"`
	MessagesPerS    float64        `json:"messagesPerSecond"`
	DBWritesPerS    float64        `json:"dbWritesPerSecond"`
	CPUCoresByProcs []ProcessStats `json:"processes"` // CPUSeconds over the phase
}

// Sample is one point of the time series.
type Sample struct {
	AtMs      float64            `json:"atMs"` // since Started
	Connected int                `json:"connected"`
	RSS       map[string]int64   `json:"rss"` // process name -> bytes
	CPU       map[string]float64 `json:"cpu"` // process name -> cores over the last interval
}
