// Command nxmesh is the single NxMesh binary: the hub, relay and agent
// daemons, and the operator's CLI. It only parses flags (kong, with every flag
// also readable from an NXMESH_* environment variable) and calls into the
// package that does the work; only main exits the process.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
)

// cli is the whole command tree. A command appears here only once it works.
type cli struct {
	Globals

	Version  versionCmd  `cmd:"" help:"Print the version, commit and Go version."`
	Render   renderCmd   `cmd:"" help:"Compile resource files into the bundle of nginx files for one agent."`
	Validate validateCmd `cmd:"" help:"Check resource files: schema, compile, and nginx -t when nginx is installed."`
	Hub      hubCmd      `cmd:"" help:"Run a hub: the REST API, the certificate authority and the agent listener."`
	Login    loginCmd    `cmd:"" help:"Log in to a hub and save its address, CA and a session token."`
	Token    tokenCmd    `cmd:"" help:"Manage enrollment tokens."`
	Apply    applyCmd    `cmd:"" help:"Apply resource files to a workspace: show the plan, store a revision, wait for the agents."`
	Get      getCmd      `cmd:"" help:"Show agents, relays, virtual hosts, upstreams, certificates or revisions."`
	Diff     diffCmd     `cmd:"" help:"Show the changes between two revisions."`
	Rollback rollbackCmd `cmd:"" help:"Return the workspace to the resources of an earlier revision, as a new revision."`
	Delete   deleteCmd   `cmd:"" help:"Delete an agent."`
	Agent    agentCmd    `cmd:"" help:"The nginx sidecar: enroll with a hub."`
	Relay    relayCmd    `cmd:"" help:"The regional relay: enroll with a hub."`
	Demo     demoCmd     `cmd:"" help:"Run a hub, a relay and an agent with a real nginx on this machine, and a sample site."`
	Bench    benchCmd    `cmd:"" help:"Drive a hub and relays with thousands of simulated agents and measure connect, push, storm and heartbeat."`

	BenchAgents benchAgentsCmd `cmd:"" name:"bench-agents" hidden:"" help:"An agent process of nxmesh bench: runs a share of its simulated agents, driven over stdin and stdout."`
}

// Globals are flags shared by every command.
type Globals struct {
	LogLevel  slog.Level `help:"Log level: debug, info, warn or error." default:"info"`
	LogFormat string     `help:"Log format: text or json." enum:"text,json" default:"text"`

	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// Logger returns the process logger, writing to stderr.
func (g *Globals) Logger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: g.LogLevel}
	if g.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(g.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(g.stderr, opts))
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args and runs the chosen command, returning the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	return runWithInput(args, os.Stdin, stdout, stderr)
}

// runWithInput is run with the standard input given, for commands that read
// a secret from it (login --password-stdin).
func runWithInput(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var c cli
	c.stdin, c.stdout, c.stderr = stdin, stdout, stderr
	exit := -1
	parser, err := kong.New(&c,
		kong.Name("nxmesh"),
		kong.Description("NxMesh: a control plane for fleets of nginx servers.\n\nEvery flag can also be set with an environment variable: --log-level is NXMESH_LOG_LEVEL."),
		kong.UsageOnError(),
		kong.DefaultEnvars("NXMESH"),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exit = code }),
	)
	if err != nil {
		fmt.Fprintf(stderr, "nxmesh: %v\n", err)
		return 2
	}
	kctx, err := parser.Parse(args)
	if exit >= 0 {
		return exit // --help and friends
	}
	if err != nil {
		fmt.Fprintf(stderr, "nxmesh: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	if err := kctx.Run(&c.Globals); err != nil {
		var ec exitCoder
		if asExitCoder(err, &ec) {
			if msg := err.Error(); msg != "" {
				fmt.Fprintf(stderr, "nxmesh: %s\n", msg)
			}
			return ec.ExitCode()
		}
		fmt.Fprintf(stderr, "nxmesh: %v\n", err)
		return 1
	}
	return 0
}
