package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nxmesh/nxmesh/hub/store"
	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/pki/ca"
	"github.com/nxmesh/nxmesh/schema"
)

// route is one route of the REST API. apiRoutes registers exactly the
// routes of apiRouteTable, and the tests walk the same table (every
// private route refuses a request without a token; every route is in the
// OpenAPI document and nothing else is), so a route cannot be added
// without being checked.
type route struct {
	method  string
	pattern string // http.ServeMux path pattern, also the OpenAPI path
	handle  handlerFunc
	// public routes are served without a bearer token; docs/api.md lists
	// them, and so does TestRoutesNeedToken.
	public bool
}

// apiRouteTable is every route of the REST API (docs/api.md).
func (s *Server) apiRouteTable() []route {
	return []route{
		{"GET", "/healthz", func(w http.ResponseWriter, _ *http.Request) error {
			return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		}, true},
		{"GET", "/metrics", func(w http.ResponseWriter, r *http.Request) error {
			s.metrics.ServeHTTP(w, r)
			return nil
		}, false},
		{"GET", "/api/v1/openapi.json", handleOpenAPI, true},
		{"GET", "/api/v1/ca/root.pem", func(w http.ResponseWriter, r *http.Request) error {
			s.handleRoot(w, r)
			return nil
		}, true},
		{"POST", "/api/v1/login", s.handleLogin, true},
		{"POST", "/api/v1/enroll", s.handleEnroll, true},

		{"GET", "/api/v1/api-tokens", s.handleListAPITokens, false},
		{"POST", "/api/v1/api-tokens", s.handleCreateAPIToken, false},
		{"DELETE", "/api/v1/api-tokens/{id}", s.handleDeleteAPIToken, false},

		{"GET", "/api/v1/organizations", s.handleListOrganizations, false},
		{"POST", "/api/v1/organizations", s.handleCreateOrganization, false},
		{"GET", "/api/v1/workspaces", s.handleListWorkspaces, false},
		{"POST", "/api/v1/workspaces", s.handleCreateWorkspace, false},
		{"GET", "/api/v1/workspaces/{ws}", s.handleGetWorkspace, false},

		{"GET", "/api/v1/workspaces/{ws}/resources/{kind}", s.handleListResources, false},
		{"POST", "/api/v1/workspaces/{ws}/resources/{kind}", s.handleCreateResource, false},
		{"GET", "/api/v1/workspaces/{ws}/resources/{kind}/{name}", s.handleGetResource, false},
		{"PUT", "/api/v1/workspaces/{ws}/resources/{kind}/{name}", s.handlePutResource, false},
		{"DELETE", "/api/v1/workspaces/{ws}/resources/{kind}/{name}", s.handleDeleteResource, false},
		{"POST", "/api/v1/workspaces/{ws}/apply", s.handleApply, false},

		{"GET", "/api/v1/workspaces/{ws}/revisions", s.handleListRevisions, false},
		{"GET", "/api/v1/workspaces/{ws}/revisions/{rev}", s.handleGetRevision, false},
		{"GET", "/api/v1/workspaces/{ws}/revisions/{rev}/diff", s.handleRevisionDiff, false},
		{"POST", "/api/v1/workspaces/{ws}/revisions/{rev}/rollback", s.handleRollback, false},
		{"GET", "/api/v1/workspaces/{ws}/revisions/{rev}/status", s.handleRevisionStatus, false},

		{"GET", "/api/v1/workspaces/{ws}/agents", s.handleListAgents, false},
		{"GET", "/api/v1/workspaces/{ws}/agents/{id}", s.handleGetAgent, false},
		{"DELETE", "/api/v1/workspaces/{ws}/agents/{id}", s.handleDeleteAgent, false},
		{"GET", "/api/v1/relays", s.handleListRelays, false},
		{"POST", "/api/v1/workspaces/{ws}/enrollment-tokens", s.handleCreateEnrollmentToken, false},
	}
}

// apiRoutes is the REST API on the HTTPS listener: the routes of
// apiRouteTable, every one but the public ones behind a bearer token.
func (s *Server) apiRoutes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.apiRouteTable() {
		h := rt.handle
		if !rt.public {
			h = s.authenticated(h)
		}
		mux.Handle(rt.method+" "+rt.pattern, serveAPI(s.log, mapError, h))
	}
	mux.Handle("/", serveAPI(s.log, mapError, func(_ http.ResponseWriter, r *http.Request) error {
		return Errorf(http.StatusNotFound, "not_found", "", "no route %s %s", r.Method, r.URL.Path)
	}))
	return mux
}

// agentRoutes is served on the mTLS listener: the peer's certificate,
// already verified by the handshake, is its credential.
func (s *Server) agentRoutes() http.Handler {
	mux := http.NewServeMux()
	h := func(f handlerFunc) http.Handler { return serveAPI(s.log, mapError, f) }
	mux.Handle("POST /v1/renew", h(s.handleRenew))
	mux.HandleFunc("GET /v1/relay", s.fleet.ServeRelay)
	mux.Handle("GET /v1/agent", s.relay.Handler())
	mux.Handle("/", h(func(_ http.ResponseWriter, r *http.Request) error {
		return Errorf(http.StatusNotFound, "not_found", "", "no route %s %s", r.Method, r.URL.Path)
	}))
	return mux
}

// mapError is the API's one mapping from package errors to statuses and
// codes. Token refusals get one code per reason so that a client (and the
// operator reading its output) knows whether to ask for a new token, copy it
// again, or check which hub it talks to.
func mapError(err error) *APIError {
	msg := err.Error()
	var conflict *store.ConflictError
	switch {
	case errors.Is(err, ca.ErrTokenExpired):
		return Errorf(http.StatusUnauthorized, "token_expired", "token", "%s", msg)
	case errors.Is(err, ca.ErrTokenUsed):
		return Errorf(http.StatusUnauthorized, "token_used", "token", "%s", msg)
	case errors.Is(err, ca.ErrTokenMalformed):
		return Errorf(http.StatusBadRequest, "token_malformed", "token", "%s", msg)
	case errors.Is(err, ca.ErrTokenForeign):
		return Errorf(http.StatusUnauthorized, "token_foreign", "token", "%s", msg)
	case errors.Is(err, ca.ErrTokenUnknown):
		return Errorf(http.StatusUnauthorized, "token_unknown", "token", "%s", msg)
	case errors.Is(err, ca.ErrCSRInvalid):
		return Errorf(http.StatusBadRequest, "csr_invalid", "csr", "%s", msg)
	case errors.Is(err, ca.ErrRevoked):
		return Errorf(http.StatusForbidden, "certificate_revoked", "", "%s", msg)
	case errors.Is(err, pki.ErrExpired):
		return Errorf(http.StatusUnauthorized, "certificate_expired", "", "%s", msg)
	case errors.Is(err, ca.ErrNotOurs):
		return Errorf(http.StatusForbidden, "certificate_foreign", "", "%s", msg)
	case errors.Is(err, pki.ErrInvalidIdentity):
		return Errorf(http.StatusBadRequest, "invalid", "", "%s", msg)
	case errors.Is(err, store.ErrNotFound):
		return Errorf(http.StatusNotFound, "not_found", "", "%s", msg)
	case errors.As(err, &conflict):
		// The version a write was based on is stale, or a create names a
		// resource that exists.
		field := "metadata.version"
		if conflict.Expected == 0 {
			field = "metadata.name"
		}
		return Errorf(http.StatusConflict, "conflict", field, "%s", msg)
	case errors.Is(err, store.ErrConflict):
		return Errorf(http.StatusConflict, "conflict", "", "%s", msg)
	case errors.Is(err, store.ErrInvalid), len(fieldErrors(err, 1)) > 0:
		return invalidError(err)
	}
	return nil
}

// maxErrorDetails bounds the details of one error response; schema caps
// each document's errors, but an apply has many documents.
const maxErrorDetails = 100

// invalidError is the 400 answer to documents that do not validate: the
// first problem in field and message, every problem in details.
func invalidError(err error) *APIError {
	fes := fieldErrors(err, maxErrorDetails)
	if len(fes) == 0 {
		return Errorf(http.StatusBadRequest, "invalid", "", "%s", err.Error())
	}
	ae := Errorf(http.StatusBadRequest, "invalid", fes[0].Field, "%s", fes[0].Error())
	if len(fes) > 1 {
		ae.Message += fmt.Sprintf(" (and %d more: see details)", len(fes)-1)
	}
	for _, fe := range fes {
		ae.Details = append(ae.Details, ErrorDetail{File: fe.File, Document: fe.Document, Field: fe.Field, Message: fe.Message})
	}
	return ae
}

// fieldErrors returns up to max of the schema.FieldErrors in err's tree,
// in order: the store joins the errors of several documents, and
// schema.Errors unwraps to its field errors.
func fieldErrors(err error, max int) []*schema.FieldError {
	var out []*schema.FieldError
	var walk func(error)
	walk = func(err error) {
		if err == nil || len(out) == max {
			return
		}
		if fe, ok := err.(*schema.FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// handleRoot serves the root certificate. It is public: a client that
// has only a fingerprint (from an enrollment token) fetches it over an
// unverified connection, checks the fingerprint, and from then on verifies
// the hub against it.
func (s *Server) handleRoot(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(s.ca.RootPEM())
}

type enrollmentTokenRequest struct {
	Role   pki.Role          `json:"role"`
	Labels map[string]string `json:"labels,omitempty"`
	TTL    string            `json:"ttl,omitempty"` // Go duration, default 1h
	Uses   int               `json:"uses,omitempty"`
}

type enrollmentTokenResponse struct {
	Token         string    `json:"token"`
	ExpiresAt     time.Time `json:"expiresAt"`
	CAFingerprint string    `json:"caFingerprint"`
}

// toCA validates the request and turns it into a ca.TokenRequest for ws.
// Relay tokens are not bound to the workspace they are created in: relays
// serve the whole installation.
func (req *enrollmentTokenRequest) toCA(ws string) (ca.TokenRequest, error) {
	tr := ca.TokenRequest{Role: req.Role, Labels: req.Labels, Uses: req.Uses, TTL: time.Hour}
	if req.Role == "" {
		tr.Role = pki.RoleAgent
	}
	if tr.Role == pki.RoleAgent {
		tr.Workspace = ws
	}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return tr, Errorf(http.StatusBadRequest, "invalid", "ttl", "ttl %q must be a positive duration such as 10m or 24h", req.TTL)
		}
		tr.TTL = d
	}
	if tr.Uses == 0 {
		tr.Uses = 1
	}
	if err := tr.Validate(); err != nil {
		field := "role"
		switch {
		case tr.TTL > 30*24*time.Hour:
			field = "ttl"
		case tr.Uses < 1 || tr.Uses > 100000:
			field = "uses"
		case len(tr.Labels) > 0 && (tr.Role == pki.RoleAgent || tr.Role == pki.RoleRelay):
			field = "labels"
		}
		return tr, Errorf(http.StatusBadRequest, "invalid", field, "%v", err)
	}
	return tr, nil
}

func (s *Server) handleCreateEnrollmentToken(w http.ResponseWriter, r *http.Request) error {
	ws := r.PathValue("ws")
	var req enrollmentTokenRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	tr, err := req.toCA(ws)
	if err != nil {
		return err
	}
	if _, err := s.db.GetWorkspace(r.Context(), ws); err != nil {
		return err
	}
	now := s.cfg.Clock()
	tok, err := s.ca.NewEnrollmentToken(r.Context(), tr)
	if err != nil {
		return err
	}
	s.audit(r.Context(), ws, r, "enrollment-token.create", string(tr.Role), map[string]any{
		"role": tr.Role, "labels": tr.Labels, "ttl": tr.TTL.String(), "uses": tr.Uses})
	return writeJSON(w, http.StatusCreated, enrollmentTokenResponse{
		Token: tok, ExpiresAt: now.Add(tr.TTL).UTC(), CAFingerprint: s.ca.Fingerprint(),
	})
}

type enrollRequest struct {
	Token string `json:"token"`
	CSR   string `json:"csr"`
}

type enrollResponse struct {
	Certificate string `json:"certificate"` // PEM chain: leaf then intermediate
	Root        string `json:"root"`        // PEM
	Identity    string `json:"identity"`
}

// handleEnroll redeems an enrollment token: the token is the credential, so
// this route needs no bearer token. An agent is recorded in its workspace
// with the token's labels.
func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) error {
	var req enrollRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Token == "" {
		return Errorf(http.StatusBadRequest, "invalid", "token", "an enrollment token is required")
	}
	if req.CSR == "" {
		return Errorf(http.StatusBadRequest, "invalid", "csr", "a PEM certificate request is required")
	}
	iss, err := s.ca.Enroll(r.Context(), req.Token, []byte(req.CSR))
	if err != nil {
		return err
	}
	if iss.Identity.Role == pki.RoleAgent {
		if _, err := s.db.PutAgent(r.Context(), store.Agent{ID: iss.Identity.ID, Workspace: iss.Identity.Workspace, Labels: iss.Labels}); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, enrollResponse{
		Certificate: string(iss.ChainPEM), Root: string(s.ca.RootPEM()), Identity: iss.Identity.String(),
	})
}

type renewResponse struct {
	Certificate string `json:"certificate"` // PEM chain: leaf then intermediate
}

// handleRenew issues a new certificate for the key and identity of the
// client certificate of this mTLS connection.
func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) error {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return Errorf(http.StatusUnauthorized, "no_certificate", "", "renewal needs a client certificate")
	}
	iss, err := s.ca.Renew(r.Context(), r.TLS.PeerCertificates[0])
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, renewResponse{Certificate: string(iss.ChainPEM)})
}

// handleDeleteAgent removes an agent and revokes every certificate issued
// to its identity, so it can neither renew nor complete another handshake.
func (s *Server) handleDeleteAgent(w http.ResponseWriter, r *http.Request) error {
	ws, id := r.PathValue("ws"), r.PathValue("id")
	a, err := s.db.GetAgent(r.Context(), id)
	if err != nil {
		return err
	}
	if a.Workspace != ws {
		return Errorf(http.StatusNotFound, "not_found", "", "agent %q: not found in workspace %q", id, ws)
	}
	ident := pki.Identity{TrustDomain: s.cfg.TrustDomain, Role: pki.RoleAgent, Workspace: ws, ID: id}
	n, err := s.db.RevokeIdentity(r.Context(), ident.String(), "agent deleted", s.cfg.Clock())
	if err != nil {
		return err
	}
	if err := s.db.DeleteAgent(r.Context(), id); err != nil {
		return err
	}
	s.fleet.Revoke([]string{id}, "agent deleted")
	s.audit(r.Context(), ws, r, "agent.delete", id, map[string]any{"identity": ident.String(), "revoked": n})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// audit records an event; a failure is logged, not returned, because the
// change it describes has already happened.
func (s *Server) audit(ctx context.Context, ws string, r *http.Request, action, target string, detail map[string]any) {
	d, _ := json.Marshal(detail)
	actor := ""
	if u, ok := userFrom(r.Context()); ok {
		actor = u
	}
	if _, err := s.db.AppendAudit(ctx, store.AuditEvent{Workspace: ws, Actor: actor, Action: action, Target: target, Detail: d}); err != nil {
		s.log.Error("append audit event", "action", action, "err", err)
	}
}
