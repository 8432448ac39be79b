package hub

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nxmesh/nxmesh/hub/store"
)

// sessionLifetime is how long a login's bearer token lasts.
const sessionLifetime = 12 * time.Hour

// Token prefixes, so leaked tokens are recognizable to secret scanners.
const sessionTokenPrefix = "nxs_"

type userKey struct{}

func userFrom(ctx context.Context) (string, bool) {
	u, ok := ctx.Value(userKey{}).(string)
	return u, ok
}

// dummyHash is checked against when a login names an unknown user, so
// that the answer takes as long as for a known one.
// It is made on first use, not at init: hashing costs 64 MiB.
var dummyHash = sync.OnceValue(func() string {
	h, _ := hashPassword("nxmesh timing equalizer")
	return h
})

type loginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

type loginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

var errBadLogin = Errorf(http.StatusUnauthorized, "invalid_credentials", "", "user name or password is wrong")

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.User == "" || req.Password == "" {
		return Errorf(http.StatusBadRequest, "invalid", "user", "user and password are required")
	}
	u, err := s.db.GetUser(r.Context(), req.User)
	switch {
	case errors.Is(err, store.ErrNotFound):
		checkPassword(dummyHash(), req.Password)
		return errBadLogin
	case err != nil:
		return err
	}
	ok, err := checkPassword(u.PasswordHash, req.Password)
	if err != nil {
		return err
	}
	if !ok {
		return errBadLogin
	}
	tok, hash, err := newSecretToken(sessionTokenPrefix)
	if err != nil {
		return err
	}
	exp := s.cfg.Clock().Add(sessionLifetime).UTC()
	if _, err := s.db.CreateAPIToken(r.Context(), store.APIToken{Hash: hash, User: u.Name, Kind: store.TokenKindSession, Name: "login", ExpiresAt: exp}); err != nil {
		return err
	}
	s.log.Info("user logged in", "user", u.Name)
	return writeJSON(w, http.StatusOK, loginResponse{Token: tok, ExpiresAt: exp})
}

var errUnauthenticated = Errorf(http.StatusUnauthorized, "unauthenticated", "", "this request needs a bearer token: run nxmesh login, or pass an API token")

// authenticated requires a valid bearer token and passes its user to h in
// the request context.
func (s *Server) authenticated(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="nxmesh"`)
			return errUnauthenticated
		}
		now := s.cfg.Clock()
		t, err := s.db.UseAPIToken(r.Context(), hashSecretToken(tok), now)
		if errors.Is(err, store.ErrNotFound) || err == nil && t.IsExpired(now) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="nxmesh", error="invalid_token"`)
			return Errorf(http.StatusUnauthorized, "unauthenticated", "", "bearer token is unknown or expired: run nxmesh login again")
		}
		if err != nil {
			return err
		}
		return h(w, r.WithContext(context.WithValue(r.Context(), userKey{}, t.User)))
	}
}
