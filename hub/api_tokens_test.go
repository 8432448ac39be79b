package hub

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAPITokens: a token works as a bearer token until it is deleted or
// expires; lists never show secrets or sessions.
func TestAPITokens(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{}
	cfg := testConfig(t, dir)
	cfg.Clock = clk.Now
	s := startHub(t, cfg)
	admin := newClient(t, s)
	admin.login(dir)

	var ci apiTokenResponse
	admin.ok("POST", "/api/v1/api-tokens", jsonType, []byte(`{"name":"ci","ttl":"24h"}`), http.StatusCreated, &ci)
	if !strings.HasPrefix(ci.Token, apiTokenPrefix) || !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(ci.ID) ||
		ci.Name != "ci" || ci.ExpiresAt == nil || ci.ExpiresAt.Sub(clk.Now()) < 23*time.Hour {
		t.Fatalf("created %+v", ci)
	}
	var forever apiTokenResponse
	admin.ok("POST", "/api/v1/api-tokens", jsonType, []byte(`{"name":"terraform"}`), http.StatusCreated, &forever)
	if forever.ExpiresAt != nil {
		t.Errorf("a token without ttl expires at %v", forever.ExpiresAt)
	}

	bot := newClient(t, s)
	bot.token = ci.Token
	var list listJSON[apiTokenJSON]
	bot.ok("GET", "/api/v1/api-tokens", "", nil, http.StatusOK, &list)
	if len(list.Items) != 2 || list.Items[0].ID != ci.ID || list.Items[0].User != "admin" ||
		list.Items[0].LastUsedAt == nil || list.Items[1].LastUsedAt != nil || list.Items[1].ExpiresAt != nil {
		t.Fatalf("list = %+v", list.Items)
	}
	if raw := bot.raw("GET", "/api/v1/api-tokens", "", nil).body; strings.Contains(string(raw), apiTokenPrefix) || strings.Contains(string(raw), "login") {
		t.Errorf("the list shows a secret or a session: %s", raw)
	}
	// Writes made with the token are the user's.
	var w writeAnswer
	bot.ok("POST", "/api/v1/workspaces/default/resources/upstreams", yamlType, []byte(upstreamDoc("web", "10.0.0.1:80")), http.StatusCreated, &w)
	var rev revisionJSON
	admin.ok("GET", "/api/v1/workspaces/default/revisions/1", "", nil, http.StatusOK, &rev)
	if rev.Author != "admin" {
		t.Errorf("author %q, want admin", rev.Author)
	}

	for _, tc := range []struct{ body, field string }{
		{`{"name":""}`, "name"},
		{`{"name":"x","ttl":"soon"}`, "ttl"},
		{`{"name":"x","ttl":"-1h"}`, "ttl"},
		{`{"name":"a\nb"}`, "name"},
		{`{"name":"x","role":"admin"}`, "role"},
	} {
		if e := admin.fails("POST", "/api/v1/api-tokens", jsonType, []byte(tc.body), http.StatusBadRequest); e.Error.Field != tc.field {
			t.Errorf("%s: %+v", tc.body, e.Error)
		}
	}
	if e := admin.fails("DELETE", "/api/v1/api-tokens/0123456789abcdef", "", nil, http.StatusNotFound); e.Error.Field != "id" {
		t.Errorf("delete of an unknown id: %+v", e.Error)
	}

	admin.ok("DELETE", "/api/v1/api-tokens/"+ci.ID, "", nil, http.StatusNoContent, nil)
	if e := bot.fails("GET", "/api/v1/api-tokens", "", nil, http.StatusUnauthorized); e.Error.Code != "unauthenticated" {
		t.Errorf("deleted token: %+v", e.Error)
	}
	admin.ok("GET", "/api/v1/api-tokens", "", nil, http.StatusOK, &list)
	if len(list.Items) != 1 || list.Items[0].ID != forever.ID {
		t.Errorf("list after delete = %+v", list.Items)
	}

	var short apiTokenResponse
	admin.ok("POST", "/api/v1/api-tokens", jsonType, []byte(`{"name":"short","ttl":"1m"}`), http.StatusCreated, &short)
	bot.token = short.Token
	bot.ok("GET", "/api/v1/workspaces/default", "", nil, http.StatusOK, nil)
	clk.Advance(2 * time.Minute)
	bot.fails("GET", "/api/v1/workspaces/default", "", nil, http.StatusUnauthorized)
}
