package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

type getCmd struct {
	workspaceFlags `embed:""`

	Kind   string            `arg:"" help:"What to show: agents, relays, vhosts (or virtualhosts), upstreams, certificates or revisions; the singular works too."`
	Name   string            `arg:"" optional:"" help:"Show only this one: an agent or relay ID, a resource name or a revision number."`
	Output string            `short:"o" enum:"table,json,yaml" default:"table" help:"Output format: table, or json/yaml for the API objects as the hub returns them (a list as {\"items\": [...]})."`
	Label  map[string]string `short:"l" mapsep:"," placeholder:"K=V" help:"Agents only: show agents that have this label (repeatable; all must match)."`
	Status string            `help:"Agents only: show agents with this status: online, offline, applied, rejected, rolledBack, failed or pending."`
	Limit  int               `help:"Revisions only: how many to show, newest first (at most 500)." default:"50"`
}

func (c *getCmd) Help() string {
	return "Lists the workspace's agents, virtual hosts, upstreams, certificates or revisions, or the installation's relays, as an aligned table or as the API's JSON or YAML. Agents are fetched page by page until the last. With a revision number, shows that revision and the resources it holds."
}

// getKinds maps every accepted spelling to the kind's canonical plural.
var getKinds = map[string]string{
	"agent": "agents", "agents": "agents",
	"relay": "relays", "relays": "relays",
	"vhost": "virtualhosts", "vhosts": "virtualhosts", "virtualhost": "virtualhosts", "virtualhosts": "virtualhosts",
	"upstream": "upstreams", "upstreams": "upstreams",
	"certificate": "certificates", "certificates": "certificates", "cert": "certificates", "certs": "certificates",
	"revision": "revisions", "revisions": "revisions", "rev": "revisions", "revs": "revisions",
}

func (c *getCmd) Run(ctx context.Context, g *Globals) error {
	return loginHint(c.run(ctx, g))
}

func (c *getCmd) run(ctx context.Context, g *Globals) error {
	kind, err := c.validate()
	if err != nil {
		return err
	}
	api, err := newAPIClient(c.hubFlags, true)
	if err != nil {
		return err
	}
	items, err := c.fetch(ctx, api, kind)
	if err != nil {
		return err
	}
	switch {
	case c.Output != formatTable && c.Name != "":
		return printObject(g.stdout, c.Output, items[0])
	case c.Output != formatTable:
		return printList(g.stdout, c.Output, items)
	}
	if len(items) == 0 {
		_, err := fmt.Fprintf(g.stderr, "no %s found\n", kind)
		return err
	}
	return printTable(g.stdout, kind, items, time.Now())
}

// validate resolves the kind and refuses flags that do not apply to it.
func (c *getCmd) validate() (string, error) {
	kind, ok := getKinds[strings.ToLower(c.Kind)]
	if !ok {
		return "", &exitError{code: 2, msg: fmt.Sprintf("cannot get %q: use agents, relays, vhosts, upstreams, certificates or revisions", c.Kind)}
	}
	if kind != "agents" && (len(c.Label) > 0 || c.Status != "") {
		return "", &exitError{code: 2, msg: "--label and --status apply only to agents"}
	}
	if kind == "revisions" && c.Name != "" {
		if _, err := strconv.ParseInt(c.Name, 10, 64); err != nil {
			return "", &exitError{code: 2, msg: fmt.Sprintf("revision %q is not a number", c.Name)}
		}
	}
	return kind, nil
}

// fetch returns the objects to show, as the hub's JSON: all of them, or
// the one named.
func (c *getCmd) fetch(ctx context.Context, api *apiClient, kind string) ([]json.RawMessage, error) {
	switch {
	case kind == "relays":
		return c.relays(ctx, api)
	case c.Name != "":
		var one json.RawMessage
		err := api.do(ctx, "GET", c.objectPath(kind)+"/"+url.PathEscape(c.Name), nil, &one)
		return []json.RawMessage{one}, err
	case kind == "agents":
		return c.agents(ctx, api)
	}
	q := url.Values{}
	if kind == "revisions" {
		q.Set("limit", strconv.Itoa(c.Limit))
	}
	return listPage(ctx, api, c.objectPath(kind), q)
}

// objectPath is the API path of the workspace's objects of kind.
func (c *getCmd) objectPath(kind string) string {
	switch kind {
	case "agents", "revisions":
		return c.path() + "/" + kind
	}
	return c.path() + "/resources/" + kind
}

// agents fetches every page of the agent list.
func (c *getCmd) agents(ctx context.Context, api *apiClient) ([]json.RawMessage, error) {
	q := url.Values{}
	for _, k := range slices.Sorted(maps.Keys(c.Label)) {
		q.Add("label", k+"="+c.Label[k])
	}
	if c.Status != "" {
		q.Set("status", c.Status)
	}
	var all []json.RawMessage
	for {
		var page struct {
			Items []json.RawMessage `json:"items"`
			Next  string            `json:"next"`
		}
		if err := api.do(ctx, "GET", c.objectPath("agents")+"?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if page.Next == "" || page.Next == q.Get("after") {
			return all, nil
		}
		q.Set("after", page.Next)
	}
}

// relays lists the relays; the API has no route for one, so a name
// filters the list.
func (c *getCmd) relays(ctx context.Context, api *apiClient) ([]json.RawMessage, error) {
	items, err := listPage(ctx, api, "/api/v1/relays", nil)
	if err != nil || c.Name == "" {
		return items, err
	}
	for _, raw := range items {
		var r relayInfo
		if json.Unmarshal(raw, &r) == nil && r.ID == c.Name {
			return []json.RawMessage{raw}, nil
		}
	}
	return nil, fmt.Errorf("relay %q is not connected to any hub", c.Name)
}

// listPage fetches one page of a list.
func listPage(ctx context.Context, api *apiClient, path string, q url.Values) ([]json.RawMessage, error) {
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var page struct {
		Items []json.RawMessage `json:"items"`
	}
	err := api.do(ctx, "GET", path, nil, &page)
	return page.Items, err
}

// apiTime is a time from the hub; an empty string or null is the zero time.
type apiTime struct{ time.Time }

func (t *apiTime) UnmarshalJSON(data []byte) error {
	if s := string(data); s == `""` || s == "null" {
		return nil
	}
	return t.Time.UnmarshalJSON(data)
}

type agentInfo struct {
	ID          string            `json:"id"`
	Labels      map[string]string `json:"labels"`
	Online      bool              `json:"online"`
	Relay       string            `json:"relay"`
	LastSeen    apiTime           `json:"lastSeen"`
	AppliedHash string            `json:"appliedHash"`
	Status      string            `json:"status"`
}

type relayInfo struct {
	ID          string  `json:"id"`
	Hub         string  `json:"hub"`
	ConnectedAt apiTime `json:"connectedAt"`
	Agents      int     `json:"agents"`
}

type resource struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string  `json:"name"`
		Version   int64   `json:"version"`
		UpdatedAt apiTime `json:"updatedAt"`
	} `json:"metadata"`
	Spec json.RawMessage `json:"spec"`
}

type revision struct {
	Number    int64      `json:"number"`
	Author    string     `json:"author"`
	Message   string     `json:"message"`
	CreatedAt apiTime    `json:"createdAt"`
	Resources []resource `json:"resources"`
}

// printTable prints items of kind as a table, ages relative to now.
func printTable(w io.Writer, kind string, items []json.RawMessage, now time.Time) error {
	rows := map[string]func(*table, json.RawMessage, time.Time) error{
		"agents": agentRow, "relays": relayRow, "virtualhosts": vhostRow,
		"upstreams": upstreamRow, "certificates": certificateRow, "revisions": revisionRow,
	}
	t := newTable(w, tableHeaders[kind]...)
	for _, raw := range items {
		if err := rows[kind](t, raw, now); err != nil {
			return fmt.Errorf("read the hub's answer: %w", err)
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	if kind == "revisions" && len(items) == 1 {
		return revisionResources(w, items[0], now)
	}
	return nil
}

var tableHeaders = map[string][]string{
	"agents":       {"ID", "STATUS", "ONLINE", "RELAY", "LABELS", "LAST SEEN", "APPLIED"},
	"relays":       {"ID", "HUB", "AGENTS", "CONNECTED"},
	"virtualhosts": {"NAME", "SERVER NAMES", "VERSION", "UPDATED"},
	"upstreams":    {"NAME", "SERVERS", "VERSION", "UPDATED"},
	"certificates": {"NAME", "DNS NAMES", "EXPIRES", "VERSION", "UPDATED"},
	"revisions":    {"NUMBER", "AUTHOR", "MESSAGE", "CREATED"},
}

func agentRow(t *table, raw json.RawMessage, now time.Time) error {
	var a agentInfo
	if err := json.Unmarshal(raw, &a); err != nil {
		return err
	}
	online := "no"
	if a.Online {
		online = "yes"
	}
	t.row(a.ID, a.Status, online, a.Relay, labelList(a.Labels), age(now, a.LastSeen.Time), shortHash(a.AppliedHash))
	return nil
}

// shortHash is enough of a bundle hash to tell bundles apart by eye.
func shortHash(h string) string {
	h = strings.TrimPrefix(h, "sha256:")
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func relayRow(t *table, raw json.RawMessage, now time.Time) error {
	var r relayInfo
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	t.row(r.ID, r.Hub, strconv.Itoa(r.Agents), age(now, r.ConnectedAt.Time))
	return nil
}

func vhostRow(t *table, raw json.RawMessage, now time.Time) error {
	var r resource
	var spec struct {
		ServerNames []string `json:"serverNames"`
	}
	if err := decodeResource(raw, &r, &spec); err != nil {
		return err
	}
	t.row(r.Metadata.Name, firstFew(spec.ServerNames, 3), strconv.FormatInt(r.Metadata.Version, 10), age(now, r.Metadata.UpdatedAt.Time))
	return nil
}

func upstreamRow(t *table, raw json.RawMessage, now time.Time) error {
	var r resource
	var spec struct {
		Servers []struct {
			Address string `json:"address"`
		} `json:"servers"`
	}
	if err := decodeResource(raw, &r, &spec); err != nil {
		return err
	}
	addrs := make([]string, len(spec.Servers))
	for i, s := range spec.Servers {
		addrs[i] = s.Address
	}
	t.row(r.Metadata.Name, firstFew(addrs, 3), strconv.FormatInt(r.Metadata.Version, 10), age(now, r.Metadata.UpdatedAt.Time))
	return nil
}

// certificateRow reads the names and expiry from the leaf certificate, the
// first PEM block; a chain that does not parse shows as "-".
func certificateRow(t *table, raw json.RawMessage, now time.Time) error {
	var r resource
	var spec struct {
		Certificate string `json:"certificate"`
	}
	if err := decodeResource(raw, &r, &spec); err != nil {
		return err
	}
	names, expires := "", ""
	if block, _ := pem.Decode([]byte(spec.Certificate)); block != nil {
		if leaf, err := x509.ParseCertificate(block.Bytes); err == nil {
			names = firstFew(leaf.DNSNames, 3)
			expires = leaf.NotAfter.UTC().Format(time.DateOnly)
		}
	}
	t.row(r.Metadata.Name, names, expires, strconv.FormatInt(r.Metadata.Version, 10), age(now, r.Metadata.UpdatedAt.Time))
	return nil
}

func revisionRow(t *table, raw json.RawMessage, now time.Time) error {
	var r revision
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	t.row(strconv.FormatInt(r.Number, 10), r.Author, firstLine(r.Message), age(now, r.CreatedAt.Time))
	return nil
}

// revisionResources lists the resources a revision holds, under its row.
func revisionResources(w io.Writer, raw json.RawMessage, now time.Time) error {
	var r revision
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("read the hub's answer: %w", err)
	}
	if len(r.Resources) == 0 {
		_, err := fmt.Fprintln(w, "\nno resources")
		return err
	}
	fmt.Fprintln(w)
	t := newTable(w, "KIND", "NAME", "VERSION", "UPDATED")
	for _, res := range r.Resources {
		t.row(res.Kind, res.Metadata.Name, strconv.FormatInt(res.Metadata.Version, 10), age(now, res.Metadata.UpdatedAt.Time))
	}
	return t.flush()
}

// decodeResource decodes a resource and its spec into the fields a row needs.
func decodeResource(raw json.RawMessage, r *resource, spec any) error {
	if err := json.Unmarshal(raw, r); err != nil {
		return err
	}
	if len(r.Spec) == 0 {
		return nil
	}
	return json.Unmarshal(r.Spec, spec)
}

// firstLine is a message's first line, marked when there is more.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}
