package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// hubAPI is the hub's REST API (docs/api.md) as the bench uses it: the
// bench may not import the hub, so it talks to it like any client.
type hubAPI struct {
	base  string // https://127.0.0.1:P
	http  *http.Client
	token string // bearer token from login
}

// newHubAPI returns a client for the API at base that trusts rootPEM. It
// keeps up to conns connections alive, one per concurrent caller, so that
// thousands of enrollments do not each pay a TLS handshake.
func newHubAPI(base string, rootPEM []byte, conns int) (*hubAPI, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootPEM) {
		return nil, errors.New("hub root: no certificate in PEM")
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     time.Minute,
	}
	return &hubAPI{base: base, http: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}, nil
}

// apiError is an answer of the API outside 2xx.
type apiError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("hub API %s %s: %d %s", e.Method, e.Path, e.Status, strings.TrimSpace(e.Body))
}

// do calls the API. body is sent as JSON, or as YAML when it is a string;
// a 2xx answer is decoded into out when out is not nil.
func (a *hubAPI) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd, ct = strings.NewReader(b), "application/yaml"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("hub API %s %s: encode body: %w", method, path, err)
		}
		rd, ct = bytes.NewReader(data), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("hub API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("hub API %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return &apiError{Method: method, Path: path, Status: resp.StatusCode, Body: string(data)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("hub API %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// login takes a session token for user.
func (a *hubAPI) login(ctx context.Context, user, password string) error {
	var res struct {
		Token string `json:"token"`
	}
	if err := a.do(ctx, "POST", "/api/v1/login", map[string]string{"user": user, "password": password}, &res); err != nil {
		return err
	}
	a.token = res.Token
	return nil
}

// enrollmentToken makes a token of role for uses enrollments in the default
// workspace.
func (a *hubAPI) enrollmentToken(ctx context.Context, role string, uses int, labels map[string]string) (string, error) {
	var res struct {
		Token string `json:"token"`
	}
	req := map[string]any{"role": role, "uses": uses, "ttl": "2h"}
	if len(labels) > 0 {
		req["labels"] = labels
	}
	err := a.do(ctx, "POST", "/api/v1/workspaces/default/enrollment-tokens", req, &res)
	return res.Token, err
}

// enroll redeems token for csrPEM and returns the PEM chain (leaf first).
func (a *hubAPI) enroll(ctx context.Context, token string, csrPEM []byte) ([]byte, error) {
	var res struct {
		Certificate string `json:"certificate"`
	}
	if err := a.do(ctx, "POST", "/api/v1/enroll", map[string]string{"token": token, "csr": string(csrPEM)}, &res); err != nil {
		return nil, err
	}
	return []byte(res.Certificate), nil
}

// applyAnswer is the API's answer to apply.
type applyAnswer struct {
	Revision int64 `json:"revision"`
	Changed  bool  `json:"changed"`
}

// apply stores YAML documents in the default workspace as one revision.
func (a *hubAPI) apply(ctx context.Context, yaml, message string) (applyAnswer, error) {
	var res applyAnswer
	err := a.do(ctx, "POST", "/api/v1/workspaces/default/apply?message="+url.QueryEscape(message), yaml, &res)
	return res, err
}

// convergence is how far a revision has reached the workspace's agents.
type convergence struct {
	Revision int64 `json:"revision"`
	Head     int64 `json:"head"`
	Total    int   `json:"total"`
	Done     bool  `json:"done"`
	Counts   struct {
		Applied    int `json:"applied"`
		Rejected   int `json:"rejected"`
		RolledBack int `json:"rolledBack"`
		Failed     int `json:"failed"`
		Pending    int `json:"pending"`
		Offline    int `json:"offline"`
	} `json:"counts"`
}

func (a *hubAPI) convergence(ctx context.Context, rev int64) (convergence, error) {
	var c convergence
	err := a.do(ctx, "GET", fmt.Sprintf("/api/v1/workspaces/default/revisions/%d/status", rev), nil, &c)
	return c, err
}

// hubAgent is an agent as the API shows it.
type hubAgent struct {
	ID          string `json:"id"`
	Online      bool   `json:"online"`
	Relay       string `json:"relay"`
	AppliedHash string `json:"appliedHash"`
	DesiredHash string `json:"desiredHash"`
	Status      string `json:"status"`
}

// agents lists every agent of the default workspace, a page of 1000 at a
// time.
func (a *hubAPI) agents(ctx context.Context) ([]hubAgent, error) {
	var all []hubAgent
	after := ""
	for {
		var page struct {
			Items []hubAgent `json:"items"`
			Next  string     `json:"next"`
		}
		path := "/api/v1/workspaces/default/agents?limit=1000"
		if after != "" {
			path += "&after=" + url.QueryEscape(after)
		}
		if err := a.do(ctx, "GET", path, nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if page.Next == "" || len(page.Items) == 0 {
			return all, nil
		}
		after = page.Next
	}
}

// metric reads one unlabelled sample from the hub's /metrics.
func (a *hubAPI) metric(ctx context.Context, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", a.base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("hub /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("hub /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == name {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("hub /metrics: %s: %w", name, err)
			}
			return f, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("hub /metrics: %w", err)
	}
	return 0, fmt.Errorf("hub /metrics has no %s", name)
}

// hubRelay is a relay with a live session to some hub.
type hubRelay struct {
	ID          string    `json:"id"`
	ConnectedAt time.Time `json:"connectedAt"`
	Agents      int       `json:"agents"`
}

// relays lists the relays with a live session.
func (a *hubAPI) relays(ctx context.Context) ([]hubRelay, error) {
	var res struct {
		Items []hubRelay `json:"items"`
	}
	err := a.do(ctx, "GET", "/api/v1/relays", nil, &res)
	return res.Items, err
}
