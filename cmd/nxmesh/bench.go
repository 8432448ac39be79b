package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nxmesh/nxmesh/bench"
)

type benchCmd struct {
	Scenario string `arg:"" enum:"connect,push,storm,heartbeat,standard" help:"connect, push, storm, heartbeat or standard."`

	Agents            int           `help:"Simulated agents (default 1000; 10000 for standard)."`
	Relays            int           `help:"Relay processes; agent i connects to relay i mod N (default 1; 2 for standard)."`
	Pushes            int           `help:"Changes the push scenario commits, one after the other (default 5; 10 for standard)."`
	StormResumption   string        `help:"Storms to run: off, on (agents offer TLS session tickets) or both (default both; on for standard)." enum:",off,on,both" default:""`
	StormRelays       int           `help:"Relays a storm kills and restarts at once (default all)."`
	HeartbeatInterval time.Duration `help:"Heartbeat interval the relays tell agents." default:"15s"`
	HeartbeatDuration time.Duration `help:"How long the heartbeat scenario measures (default four intervals)."`
	SourceAddrs       int           `help:"Loopback source addresses (127.0.0.2, ...) the agents dial from (default one per 5000 agents; at most 25000 per address)."`
	ConnectRate       int           `help:"Agents started per second (default 0: all at once)."`
	AgentProcs        int           `help:"Agent processes (children of this one) that run the simulated agents, each with an equal share (default 0: one when the agents fit the open files limit, else as few as it allows)."`
	Enrollers         int           `help:"Enrollments at once while minting agent certificates." default:"4"`
	WorkDir           string        `help:"Keeps hub data, relay state, agent keys and certificates, and daemon logs between runs." default:".bench" type:"path"`
	Fresh             bool          `help:"Discard the hub data, relay state and agent certificates in --work-dir and start over."`
	DatabaseURL       string        `help:"postgres:// URL for the hub's store (default SQLite in --work-dir)."`
	Timeout           time.Duration `help:"Bound on every wait: all agents connected, a push acked, a storm back (default 2m plus 1s per 500 agents)."`
	JSON              string        `name:"json" help:"Write every figure, sample and the machine's facts to this file as JSON." type:"path"`
	HTML              string        `name:"html" help:"Write a self-contained HTML report with charts to this file." type:"path"`
	ProfileDir        string        `help:"Write CPU profiles of the hub, the relays, the bench and its agent processes here, in 2-second windows named PROCESS-PHASE-N.pprof (go tool pprof DIR/relay-1-push-*.pprof merges a phase)." type:"path"`
	Binary            string        `help:"nxmesh executable to run as hub and relays (default this one)." type:"path"`
}

func (c *benchCmd) Help() string {
	return `Starts a hub (SQLite in --work-dir unless --database-url) and relays as child processes of this binary, connects thousands of simulated agents from agent processes it starts (hidden "nxmesh bench-agents" children of this binary; the real agent session code over mTLS WebSockets, each agent with its own certificate, an in-memory apply instead of nginx), runs the scenario, stops everything and prints a summary table.

Scenarios (each starts by connecting every agent):
  connect    time to all connected, handshake rate, relay and hub memory and CPU per agent
  push       commit --pushes changes through the API; latency from the API's answer to each agent's ack
  storm      SIGKILL and restart relays under their agents, TLS resumption off and/or on; time until all are back and the hub counts them applied
  heartbeat  heartbeat for --heartbeat-duration; relay and hub CPU, heartbeats/s, hub database writes/s
  standard   the reference run behind make bench: 10000 agents, 2 relays, 10 pushes, one storm

The work directory keeps the hub's data and the agents' keys and certificates (valid for a day), so a second run enrolls nothing; the output says what was reused. --fresh starts over. The daemons' logs are in WORK_DIR/logs.

The bench raises its open-files limit (and its children's) to what --agents needs. Where the hard limit stops it (a process holds one open file per agent connection), it spreads the agents over more agent processes (see --agent-procs), whose memory and CPU count as the bench's; each relay must hold its agents under the same limit, so a run refuses agents/--relays above it and names the --relays that would fit. The result says how many agent processes ran.`
}

func (c *benchCmd) Run(ctx context.Context, g *Globals) error {
	res, err := bench.Run(ctx, bench.Config{
		Scenario:          c.Scenario,
		Binary:            c.Binary,
		Agents:            c.Agents,
		Relays:            c.Relays,
		Pushes:            c.Pushes,
		StormResumption:   c.StormResumption,
		StormRelays:       c.StormRelays,
		HeartbeatInterval: c.HeartbeatInterval,
		HeartbeatDuration: c.HeartbeatDuration,
		SourceAddrs:       c.SourceAddrs,
		ConnectRate:       c.ConnectRate,
		AgentProcs:        c.AgentProcs,
		Enrollers:         c.Enrollers,
		WorkDir:           c.WorkDir,
		ProfileDir:        c.ProfileDir,
		Fresh:             c.Fresh,
		DatabaseURL:       c.DatabaseURL,
		Timeout:           c.Timeout,
		Version:           version,
		Progress:          g.stderr,
	})
	if res == nil || res.Connect == nil {
		return err // failed before measuring anything
	}
	// What was measured is written even when the run failed midway.
	errs := []error{err}
	fmt.Fprintln(g.stdout)
	errs = append(errs, bench.WriteTable(g.stdout, res))
	if c.JSON != "" {
		errs = append(errs, bench.WriteJSON(c.JSON, res))
	}
	if c.HTML != "" {
		errs = append(errs, writeHTMLReport(c.HTML, res))
	}
	return errors.Join(errs...)
}

func writeHTMLReport(path string, res *bench.Result) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("bench html report: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench html report: %w", err)
	}
	if err := bench.WriteHTML(f, res); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
