package hub

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/hub/store"
)

func TestOrganizationsAndWorkspaces(t *testing.T) {
	s, c := loggedIn(t)
	var orgs listJSON[organizationJSON]
	c.ok("GET", "/api/v1/organizations", "", nil, http.StatusOK, &orgs)
	if len(orgs.Items) != 1 || orgs.Items[0].Name != "default" {
		t.Fatalf("organizations = %+v", orgs)
	}
	var acme organizationJSON
	c.ok("POST", "/api/v1/organizations", jsonType, []byte(`{"name":"acme"}`), http.StatusCreated, &acme)
	if acme.Name != "acme" || acme.CreatedAt.IsZero() {
		t.Errorf("created %+v", acme)
	}

	var prod, stage workspaceJSON
	c.ok("POST", "/api/v1/workspaces", jsonType, []byte(`{"name":"prod","organization":"acme"}`), http.StatusCreated, &prod)
	c.ok("POST", "/api/v1/workspaces", jsonType, []byte(`{"name":"stage"}`), http.StatusCreated, &stage)
	if prod.Organization != "acme" || prod.Revision != 0 || stage.Organization != "default" {
		t.Errorf("created %+v and %+v", prod, stage)
	}
	var got workspaceJSON
	c.ok("GET", "/api/v1/workspaces/prod", "", nil, http.StatusOK, &got)
	if got != prod {
		t.Errorf("GET = %+v, want %+v", got, prod)
	}
	var wss listJSON[workspaceJSON]
	c.ok("GET", "/api/v1/workspaces?organization=acme", "", nil, http.StatusOK, &wss)
	if len(wss.Items) != 1 || wss.Items[0].Name != "prod" {
		t.Errorf("acme's workspaces = %+v", wss)
	}
	c.ok("GET", "/api/v1/workspaces", "", nil, http.StatusOK, &wss)
	if len(wss.Items) != 3 {
		t.Errorf("all workspaces = %+v", wss)
	}
	// A new workspace takes resources and counts its own revisions.
	c.ok("POST", "/api/v1/workspaces/prod/apply", yamlType, []byte(upstreamDoc("web", "10.0.0.1:80")), http.StatusOK, nil)
	c.ok("GET", "/api/v1/workspaces/prod", "", nil, http.StatusOK, &got)
	if got.Revision != 1 {
		t.Errorf("prod revision %d after one apply", got.Revision)
	}

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code, field              string
	}{
		{"organization exists", "POST", "/api/v1/organizations", `{"name":"acme"}`, 409, "conflict", "name"},
		{"organization name", "POST", "/api/v1/organizations", `{"name":"a/b"}`, 400, "invalid", "name"},
		{"organization without name", "POST", "/api/v1/organizations", `{}`, 400, "invalid", "name"},
		{"unknown field", "POST", "/api/v1/organizations", `{"name":"x","owner":"me"}`, 400, "unknown_field", "owner"},
		{"workspace exists", "POST", "/api/v1/workspaces", `{"name":"prod"}`, 409, "conflict", "name"},
		{"workspace name", "POST", "/api/v1/workspaces", `{"name":"-x"}`, 400, "invalid", "name"},
		{"missing organization", "POST", "/api/v1/workspaces", `{"name":"x","organization":"nope"}`, 404, "not_found", "organization"},
		{"list of a missing organization", "GET", "/api/v1/workspaces?organization=nope", "", 404, "not_found", ""},
		{"missing workspace", "GET", "/api/v1/workspaces/nope", "", 404, "not_found", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := c.fails(tc.method, tc.path, jsonType, []byte(tc.body), tc.status)
			if e.Error.Code != tc.code || e.Error.Field != tc.field {
				t.Errorf("got %+v; want %s on %q", e.Error, tc.code, tc.field)
			}
		})
	}

	evs, err := s.Store().ListAudit(context.Background(), "", time.Time{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(evs, func(e store.AuditEvent) bool {
		return e.Action == "organization.create" && e.Target == "acme" && e.Actor == "admin"
	}) {
		t.Errorf("no audit event for the new organization: %+v", evs)
	}
}
