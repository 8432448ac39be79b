package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// pollInterval is how often a waiting command asks the hub how far a
// revision has reached: often enough that a small fleet's rollout feels
// immediate, rarely enough that a thousand CI jobs do not load the hub.
const pollInterval = 300 * time.Millisecond

// waitFlags are the flags of the commands that create a revision and then
// follow it to the agents.
type waitFlags struct {
	Timeout time.Duration `help:"How long to wait for the agents to apply the revision; past it the command fails and lists the agents still pending." default:"2m"`
	NoWait  bool          `help:"Exit as soon as the hub has stored the revision, without waiting for the agents."`
}

// convergence is how far a revision has reached the workspace's agents.
type convergence struct {
	Workspace string            `json:"workspace"`
	Revision  int64             `json:"revision"`
	Head      int64             `json:"head"`
	Total     int               `json:"total"`
	Done      bool              `json:"done"`
	Counts    convergenceCounts `json:"counts"`
	Failing   []failingAgent    `json:"failing"`
}

type convergenceCounts struct {
	Applied    int `json:"applied"`
	Rejected   int `json:"rejected"`
	RolledBack int `json:"rolledBack"`
	// Failed counts agents whose apply failed otherwise, or that no bundle
	// can be compiled for.
	Failed  int `json:"failed"`
	Pending int `json:"pending"`
	Offline int `json:"offline"`
}

// failingAgent is an agent that refused the revision's bundle, rolled it
// back or failed to apply it, with nginx's own words.
type failingAgent struct {
	Agent  string `json:"agent"`
	Relay  string `json:"relay"`
	State  string `json:"state"`
	Reason string `json:"reason"`
	Output string `json:"output"`
}

// formatProgress is the one-line summary of a rollout.
func formatProgress(c convergence) string {
	n := c.Counts
	var b strings.Builder
	fmt.Fprintf(&b, "revision %d: %d/%d applied, %d rejected, ", c.Revision, n.Applied, c.Total, n.Rejected)
	if n.RolledBack > 0 {
		fmt.Fprintf(&b, "%d rolled back, ", n.RolledBack)
	}
	if n.Failed > 0 {
		fmt.Fprintf(&b, "%d failed, ", n.Failed)
	}
	fmt.Fprintf(&b, "%d pending, %d offline", n.Pending, n.Offline)
	return b.String()
}

// progress shows a rollout's progress line. On a terminal it rewrites one
// line in place; anywhere else (a CI log) it prints a line only when the
// line changes, so a long wait does not flood the log.
type progress struct {
	w     io.Writer
	tty   bool
	last  string
	width int // of the line on screen, on a terminal
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, tty: isTerminal(w)}
}

// show displays line, with the time waited so far on a terminal.
func (p *progress) show(line string, waited time.Duration) {
	if p.tty {
		line += fmt.Sprintf(" (%s)", waited.Truncate(time.Second))
	}
	if line == p.last {
		return
	}
	p.last = line
	if !p.tty {
		fmt.Fprintln(p.w, line)
		return
	}
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", max(p.width-len(line), 0)))
	p.width = len(line)
}

// end finishes the line on a terminal, so what follows starts on its own.
func (p *progress) end() {
	if p.tty && p.width > 0 {
		fmt.Fprintln(p.w)
	}
	p.width = 0
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// rollout follows one revision of one workspace to its agents.
type rollout struct {
	api *apiClient
	ws  workspaceFlags
	rev int64
	g   *Globals
}

// wait polls the revision's status until no online agent is pending or
// timeout passes, showing progress on stderr, then judges the result.
func (r *rollout) wait(ctx context.Context, timeout time.Duration) error {
	start := time.Now()
	p := newProgress(r.g.stderr)
	defer p.end()
	for {
		c, err := r.status(ctx)
		if err != nil {
			return err
		}
		waited := time.Since(start)
		p.show(formatProgress(c), waited)
		if c.Done || c.Head > r.rev {
			p.end()
			return r.verdict(ctx, c, "")
		}
		if waited >= timeout {
			p.end()
			return r.verdict(ctx, c, fmt.Sprintf("timed out after %s", timeout))
		}
		select {
		case <-ctx.Done():
			p.end()
			return fmt.Errorf("stopped waiting; revision %d stays stored on the hub (follow it with nxmesh get agents): %w", r.rev, ctx.Err())
		case <-time.After(min(pollInterval, timeout-waited)):
		}
	}
}

// check judges the revision's status once, without waiting.
func (r *rollout) check(ctx context.Context) error {
	c, err := r.status(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(r.g.stderr, formatProgress(c))
	return r.verdict(ctx, c, "")
}

func (r *rollout) status(ctx context.Context) (convergence, error) {
	var c convergence
	err := r.api.do(ctx, "GET", fmt.Sprintf("%s/revisions/%d/status", r.ws.path(), r.rev), nil, &c)
	var re *remoteError
	if errors.As(err, &re) && re.Status == http.StatusNotFound {
		return c, fmt.Errorf("ask the hub how far revision %d has reached the agents (pass --no-wait to skip this; the hub may predate rollout status): %w", r.rev, err)
	}
	return c, err
}

// verdict prints what the agents made of the revision and returns nil only
// when every online agent applied it. Offline agents do not count against
// it: they get the revision when they reconnect, and are listed as a
// warning. why says why waiting stopped early, such as a timeout.
func (r *rollout) verdict(ctx context.Context, c convergence, why string) error {
	n := c.Counts
	online := c.Total - n.Offline
	failed := n.Rejected + n.RolledBack + n.Failed
	r.printFailing(c.Failing)
	if n.Pending > 0 {
		fmt.Fprintf(r.g.stderr, "pending: %s\n", r.agentList(ctx, "pending"))
	}
	if n.Offline > 0 {
		fmt.Fprintf(r.g.stderr, "warning: %s offline, to get revision %d when they reconnect: %s\n",
			plural(n.Offline, "agent"), r.rev, r.agentList(ctx, "offline"))
	}
	switch {
	case failed > 0:
		return &exitError{code: 1, msg: fmt.Sprintf("revision %d failed on %d of %s", r.rev, failed, plural(online, "online agent"))}
	case n.Pending > 0 && c.Head > r.rev:
		why = fmt.Sprintf("revision %d was superseded by revision %d", r.rev, c.Head)
	case n.Pending > 0 && why == "":
		why = "not done yet"
	}
	if n.Pending > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%s: revision %d is still pending on %d of %s", why, r.rev, n.Pending, plural(online, "online agent"))}
	}
	return r.success(c)
}

// success says how the revision reached the agents when none failed and
// none is pending.
func (r *rollout) success(c convergence) error {
	var err error
	switch online := c.Total - c.Counts.Offline; {
	case c.Total == 0:
		_, err = fmt.Fprintf(r.g.stdout, "revision %d: workspace %s has no agents yet; they get it when they enroll\n", r.rev, r.ws.Workspace)
	case online == 0:
		_, err = fmt.Fprintf(r.g.stdout, "revision %d: no agent is online to apply it yet\n", r.rev)
	default:
		_, err = fmt.Fprintf(r.g.stdout, "revision %d applied by %d of %s\n", r.rev, c.Counts.Applied, plural(online, "online agent"))
	}
	return err
}

// printFailing names each failing agent with its state, reason and nginx's
// output, indented.
func (r *rollout) printFailing(failing []failingAgent) {
	for _, f := range failing {
		relay := ""
		if f.Relay != "" {
			relay = " (relay " + f.Relay + ")"
		}
		fmt.Fprintf(r.g.stderr, "agent %s%s: %s: %s\n", f.Agent, relay, f.State, f.Reason)
		for _, l := range strings.Split(strings.TrimRight(f.Output, "\n"), "\n") {
			if l != "" {
				fmt.Fprintf(r.g.stderr, "    %s\n", l)
			}
		}
	}
}

// maxListed is how many agents a warning names before it just counts.
const maxListed = 20

// agentList names the first agents with a status, for a message. It is
// best effort: when the list cannot be fetched, the message says why.
func (r *rollout) agentList(ctx context.Context, status string) string {
	var out struct {
		Items []agentInfo `json:"items"`
		Next  string      `json:"next"`
	}
	q := url.Values{"status": {status}, "limit": {fmt.Sprint(maxListed)}}
	if err := r.api.do(ctx, "GET", r.ws.path()+"/agents?"+q.Encode(), nil, &out); err != nil {
		return fmt.Sprintf("(could not list them: %v)", err)
	}
	ids := make([]string, len(out.Items))
	for i, a := range out.Items {
		ids[i] = a.ID
	}
	s := strings.Join(ids, ", ")
	if out.Next != "" {
		s += ", and more"
	}
	return s
}
