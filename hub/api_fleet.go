package hub

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nxmesh/nxmesh/hub/fleet"
)

// agentJSON is an agent as the API shows it (docs/api.md).
type agentJSON struct {
	ID          string            `json:"id"`
	Workspace   string            `json:"workspace"`
	Labels      map[string]string `json:"labels"`
	Online      bool              `json:"online"`
	Relay       string            `json:"relay,omitempty"`
	LastSeen    *time.Time        `json:"lastSeen,omitempty"`
	CreatedAt   time.Time         `json:"createdAt"`
	AppliedHash string            `json:"appliedHash,omitempty"`
	DesiredHash string            `json:"desiredHash,omitempty"`
	Status      string            `json:"status"`
	Reason      string            `json:"reason,omitempty"`
	LastResult  *resultJSON       `json:"lastResult,omitempty"`
}

type resultJSON struct {
	Hash   string    `json:"hash"`
	State  string    `json:"state"`
	Reason string    `json:"reason,omitempty"`
	Output string    `json:"output,omitempty"`
	At     time.Time `json:"at"`
}

func toAgentJSON(v fleet.AgentView) agentJSON {
	a := agentJSON{
		ID: v.ID, Workspace: v.Workspace, Labels: v.Labels, Online: v.Online, Relay: v.Relay,
		CreatedAt: v.CreatedAt, AppliedHash: v.AppliedHash, DesiredHash: v.DesiredHash, Status: v.State, Reason: v.Reason,
	}
	if a.Labels == nil {
		a.Labels = map[string]string{}
	}
	if !v.LastSeen.IsZero() {
		t := v.LastSeen
		a.LastSeen = &t
	}
	if v.LastResult != "" {
		a.LastResult = &resultJSON{Hash: v.ResultHash, State: v.LastResult, Reason: v.LastError, Output: v.ResultOutput, At: v.ResultAt}
	}
	return a
}

// agentFilter is the query of GET .../agents.
type agentFilter struct {
	labels map[string]string
	status string
	limit  int
	after  string
}

var agentStatuses = []string{"online", "offline", fleet.StateApplied, fleet.StateRejected, fleet.StateRolledBack,
	fleet.StateFailed, fleet.StatePending}

func parseAgentFilter(r *http.Request) (agentFilter, error) {
	q := r.URL.Query()
	f := agentFilter{labels: map[string]string{}, status: q.Get("status"), limit: 100, after: q.Get("after")}
	for _, l := range q["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return f, Errorf(http.StatusBadRequest, "invalid", "label", "label filter %q must look like key=value", l)
		}
		f.labels[k] = v
	}
	if f.status != "" && !slices.Contains(agentStatuses, f.status) {
		return f, Errorf(http.StatusBadRequest, "invalid", "status", "status %q is not one of %s", f.status, strings.Join(agentStatuses, ", "))
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return f, Errorf(http.StatusBadRequest, "invalid", "limit", "limit %q must be a number from 1 to 1000", s)
		}
		f.limit = n
	}
	return f, nil
}

func (f agentFilter) matches(v fleet.AgentView) bool {
	if v.ID <= f.after && f.after != "" {
		return false
	}
	for k, want := range f.labels {
		if got, ok := v.Labels[k]; !ok || got != want {
			return false
		}
	}
	switch f.status {
	case "":
		return true
	case "online":
		return v.Online
	case "offline":
		return !v.Online
	}
	return v.State == f.status
}

func (s *Server) handleListAgents(w http.ResponseWriter, r *http.Request) error {
	filter, err := parseAgentFilter(r)
	if err != nil {
		return err
	}
	page, more, err := s.fleet.AgentsPage(r.Context(), r.PathValue("ws"), filter.after, filter.limit, filter.matches)
	if err != nil {
		return err
	}
	out := struct {
		Items []agentJSON `json:"items"`
		Next  string      `json:"next,omitempty"`
	}{Items: make([]agentJSON, 0, len(page))}
	for _, v := range page { // by id
		out.Items = append(out.Items, toAgentJSON(v))
	}
	if more {
		out.Next = out.Items[len(out.Items)-1].ID
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetAgent(w http.ResponseWriter, r *http.Request) error {
	ws, id := r.PathValue("ws"), r.PathValue("id")
	v, err := s.fleet.Agent(r.Context(), ws, id)
	if errors.Is(err, fleet.ErrNoAgent) {
		return Errorf(http.StatusNotFound, "not_found", "", "agent %q: not found in workspace %q", id, ws)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toAgentJSON(v))
}

type relayJSON struct {
	ID          string    `json:"id"`
	Hub         string    `json:"hub"`
	Agents      int       `json:"agents"`
	ConnectedAt time.Time `json:"connectedAt"`
}

func (s *Server) handleListRelays(w http.ResponseWriter, r *http.Request) error {
	relays, err := s.fleet.Relays(r.Context())
	if err != nil {
		return err
	}
	out := struct {
		Items []relayJSON `json:"items"`
	}{Items: []relayJSON{}}
	for _, rl := range relays {
		out.Items = append(out.Items, relayJSON{ID: rl.ID, Hub: rl.Hub, Agents: rl.Agents, ConnectedAt: rl.ConnectedAt})
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleRevisionStatus(w http.ResponseWriter, r *http.Request) error {
	ws := r.PathValue("ws")
	rev, err := strconv.ParseInt(r.PathValue("rev"), 10, 64)
	if err != nil || rev < 0 {
		return Errorf(http.StatusBadRequest, "invalid", "rev", "revision %q must be a number", r.PathValue("rev"))
	}
	c, err := s.fleet.Convergence(r.Context(), ws, rev)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, c)
}
