package hub

import (
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/nxmesh/nxmesh/hub/store"
)

// apiTokenPrefix starts every API token, so that leaked ones are
// recognizable to secret scanners (and told apart from sessions).
const apiTokenPrefix = "nxa_"

// tokenID is the public id of a token: the first 64 bits of the SHA-256 the
// store keeps. It names the token in lists and in DELETE without being
// usable as a credential; the secret itself is shown only once.
func tokenID(hash string) string { return hash[:16] }

type apiTokenJSON struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	User       string     `json:"user"`
	CreatedAt  time.Time  `json:"createdAt"`
	ExpiresAt  *time.Time `json:"expiresAt"`  // null: never expires
	LastUsedAt *time.Time `json:"lastUsedAt"` // null: never used
}

type apiTokenRequest struct {
	Name string `json:"name"`
	TTL  string `json:"ttl,omitempty"` // Go duration; empty: never expires
}

type apiTokenResponse struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Token     string     `json:"token"`
	ExpiresAt *time.Time `json:"expiresAt"`
}

// maxTokenName bounds a token's name, which is only a reminder of its use.
const maxTokenName = 100

// Validate checks the request and returns the token's lifetime (0: no
// expiry).
func (req apiTokenRequest) Validate() (time.Duration, error) {
	if req.Name == "" || len(req.Name) > maxTokenName || strings.IndexFunc(req.Name, unicode.IsControl) >= 0 {
		return 0, Errorf(http.StatusBadRequest, "invalid", "name", "a token needs a name of 1 to %d printable characters that says what uses it", maxTokenName)
	}
	if req.TTL == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(req.TTL)
	if err != nil || d <= 0 {
		return 0, Errorf(http.StatusBadRequest, "invalid", "ttl", "ttl %q must be a positive duration such as 720h, or empty for a token that never expires", req.TTL)
	}
	return d, nil
}

func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// handleListAPITokens lists the caller's own API tokens, never the
// secrets and never login sessions.
func (s *Server) handleListAPITokens(w http.ResponseWriter, r *http.Request) error {
	user, _ := userFrom(r.Context())
	list, err := s.db.ListAPITokens(r.Context(), user, store.TokenKindAPI)
	if err != nil {
		return err
	}
	out := listJSON[apiTokenJSON]{Items: make([]apiTokenJSON, 0, len(list))}
	for _, t := range list {
		out.Items = append(out.Items, apiTokenJSON{
			ID: tokenID(t.Hash), Name: t.Name, User: t.User, CreatedAt: t.CreatedAt,
			ExpiresAt: optionalTime(t.ExpiresAt), LastUsedAt: optionalTime(t.LastUsedAt),
		})
	}
	return writeJSON(w, http.StatusOK, out)
}

// handleCreateAPIToken creates a long-lived token for the caller, for
// automation; the answer is the only place the token appears.
func (s *Server) handleCreateAPIToken(w http.ResponseWriter, r *http.Request) error {
	var req apiTokenRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	ttl, err := req.Validate()
	if err != nil {
		return err
	}
	user, _ := userFrom(r.Context())
	tok, hash, err := newSecretToken(apiTokenPrefix)
	if err != nil {
		return err
	}
	var exp time.Time
	if ttl > 0 {
		exp = s.cfg.Clock().Add(ttl).UTC()
	}
	t, err := s.db.CreateAPIToken(r.Context(), store.APIToken{Hash: hash, User: user, Kind: store.TokenKindAPI, Name: req.Name, ExpiresAt: exp})
	if err != nil {
		return err
	}
	id := tokenID(hash)
	s.audit(r.Context(), "", r, "api-token.create", id, map[string]any{"name": req.Name, "ttl": req.TTL})
	return writeJSON(w, http.StatusCreated, apiTokenResponse{ID: id, Name: t.Name, Token: tok, ExpiresAt: optionalTime(t.ExpiresAt)})
}

// handleDeleteAPIToken revokes one of the caller's API tokens: the next
// request that presents it gets 401.
func (s *Server) handleDeleteAPIToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	user, _ := userFrom(r.Context())
	list, err := s.db.ListAPITokens(r.Context(), user, store.TokenKindAPI)
	if err != nil {
		return err
	}
	for _, t := range list {
		if tokenID(t.Hash) != id {
			continue
		}
		if err := s.db.DeleteAPIToken(r.Context(), t.Hash); err != nil {
			return err
		}
		s.audit(r.Context(), "", r, "api-token.delete", id, map[string]any{"name": t.Name})
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return Errorf(http.StatusNotFound, "not_found", "id", "you have no API token with id %q", id)
}
