package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	yamlType = "application/yaml"
	jsonType = "application/json"
)

func upstreamDoc(name, addr string) string {
	return "apiVersion: nxmesh/v1\nkind: Upstream\nmetadata:\n  name: " + name + "\nspec:\n  servers:\n    - address: " + addr + "\n"
}

func vhostDoc(name, host, upstream string) string {
	return "apiVersion: nxmesh/v1\nkind: VirtualHost\nmetadata:\n  name: " + name + "\nspec:\n  serverNames: [" + host + "]\n" +
		"  locations:\n    - path: /\n      upstream: " + upstream + "\n"
}

// resourceAnswer is resourceJSON as a client reads it, with a generic spec.
type resourceAnswer struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Labels    map[string]string `json:"labels"`
		Version   int64             `json:"version"`
		CreatedAt time.Time         `json:"createdAt"`
		UpdatedAt time.Time         `json:"updatedAt"`
	} `json:"metadata"`
	Spec map[string]any `json:"spec"`
}

type writeAnswer struct {
	Resource resourceAnswer `json:"resource"`
	Revision int64          `json:"revision"`
}

func serverAddress(r resourceAnswer) string {
	return r.Spec["servers"].([]any)[0].(map[string]any)["address"].(string)
}

func TestResourceCRUD(t *testing.T) {
	s, c := loggedIn(t)
	const base = "/api/v1/workspaces/default/resources/upstreams"

	var created writeAnswer
	c.ok("POST", base, yamlType, []byte(upstreamDoc("web", "10.0.0.1:80")), http.StatusCreated, &created)
	if created.Revision != 1 || created.Resource.Metadata.Version != 1 || created.Resource.Metadata.Name != "web" ||
		created.Resource.Metadata.Labels == nil || created.Resource.Metadata.CreatedAt.IsZero() {
		t.Fatalf("create = %+v", created)
	}
	if e := c.fails("POST", base, yamlType, []byte(upstreamDoc("web", "10.0.0.2:80")), http.StatusConflict); e.Error.Field != "metadata.name" ||
		!strings.Contains(e.Error.Message, "already exists") {
		t.Errorf("create of an existing resource: %+v", e.Error)
	}

	var got resourceAnswer
	c.ok("GET", base+"/web", "", nil, http.StatusOK, &got)
	if !reflect.DeepEqual(got, created.Resource) {
		t.Errorf("GET = %+v, want %+v", got, created.Resource)
	}
	var list struct{ Items []resourceAnswer }
	c.ok("GET", base, "", nil, http.StatusOK, &list)
	if len(list.Items) != 1 || list.Items[0].Metadata.Name != "web" {
		t.Errorf("list = %+v", list)
	}

	// What GET returns goes back as it is: the read-only fields are
	// accepted, and the same content writes nothing.
	raw := c.raw("GET", base+"/web", "", nil).body
	var same writeAnswer
	c.ok("PUT", base+"/web", jsonType, raw, http.StatusOK, &same)
	if same.Revision != 1 || same.Resource.Metadata.Version != 1 {
		t.Errorf("PUT of the unchanged resource = %+v", same)
	}

	got.Spec["servers"] = []any{map[string]any{"address": "10.0.0.2:80"}}
	var updated writeAnswer
	c.ok("PUT", base+"/web", jsonType, jsonBody(t, got), http.StatusOK, &updated)
	if updated.Revision != 2 || updated.Resource.Metadata.Version != 2 || serverAddress(updated.Resource) != "10.0.0.2:80" {
		t.Fatalf("update = %+v", updated)
	}
	// got still says version 1: a second writer with the same base loses.
	got.Spec["servers"] = []any{map[string]any{"address": "10.0.0.3:80"}}
	e := c.fails("PUT", base+"/web", jsonType, jsonBody(t, got), http.StatusConflict)
	if e.Error.Code != "conflict" || e.Error.Field != "metadata.version" ||
		!strings.Contains(e.Error.Message, "expected version 1") || !strings.Contains(e.Error.Message, "current version is 2") {
		t.Errorf("stale PUT: %+v", e.Error)
	}
	if e := c.fails("PUT", base+"/web", yamlType, []byte(upstreamDoc("web", "10.0.0.4:80")), http.StatusConflict); e.Error.Field != "metadata.version" {
		t.Errorf("PUT without a version of an existing resource: %+v", e.Error)
	}
	var viaPut writeAnswer
	c.ok("PUT", base+"/api", yamlType, []byte(upstreamDoc("api", "10.0.0.5:80")), http.StatusOK, &viaPut)
	if viaPut.Resource.Metadata.Version != 1 || viaPut.Revision != 3 {
		t.Errorf("PUT creating a resource = %+v", viaPut)
	}

	for _, tc := range []struct {
		name, method, path, ctype, body string
		status                          int
		code, field                     string
	}{
		{"name differs from the path", "PUT", base + "/other", yamlType, upstreamDoc("web", "10.0.0.1:80"), 400, "invalid", "metadata.name"},
		{"kind differs from the path", "POST", base, yamlType, vhostDoc("site", "example.com", "web"), 400, "invalid", "kind"},
		{"unknown kind", "GET", "/api/v1/workspaces/default/resources/widgets", "", "", 404, "not_found", "kind"},
		{"invalid field", "POST", base, yamlType, upstreamDoc("bad", "not-an-address"), 400, "invalid", "spec.servers[0].address"},
		{"unknown field", "POST", base, yamlType, upstreamDoc("bad", "10.0.0.1:80") + "extra: 1\n", 400, "invalid", "extra"},
		{"version in a create", "POST", base, yamlType, strings.Replace(upstreamDoc("new", "10.0.0.1:80"), "metadata:\n", "metadata:\n  version: 3\n", 1), 400, "invalid", "metadata.version"},
		{"dangling reference", "POST", "/api/v1/workspaces/default/resources/virtualhosts", yamlType, vhostDoc("site", "example.com", "nope"), 400, "invalid", "spec.locations[0].upstream"},
		{"two documents", "POST", base, yamlType, upstreamDoc("a", "10.0.0.1:80") + "---\n" + upstreamDoc("b", "10.0.0.1:80"), 400, "invalid", ""},
		{"media type", "POST", base, "text/plain", upstreamDoc("x", "10.0.0.1:80"), 415, "unsupported_media_type", ""},
		{"missing resource", "GET", base + "/nope", "", "", 404, "not_found", ""},
		{"missing workspace", "GET", "/api/v1/workspaces/nope/resources/upstreams", "", "", 404, "not_found", ""},
		{"stale delete", "DELETE", base + "/web?version=1", "", "", 409, "conflict", "version"},
		{"bad version", "DELETE", base + "/web?version=x", "", "", 400, "invalid", "version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := c.fails(tc.method, tc.path, tc.ctype, []byte(tc.body), tc.status)
			if e.Error.Code != tc.code || e.Error.Field != tc.field {
				t.Errorf("got %+v; want %s on %q", e.Error, tc.code, tc.field)
			}
		})
	}
	if e := c.fails("GET", "/api/v1/workspaces/default/resources/widgets", "", nil, 404); !strings.Contains(e.Error.Message, "certificates, upstreams, virtualhosts") {
		t.Errorf("unknown kind message %q does not list the kinds", e.Error.Message)
	}

	var del struct{ Revision int64 }
	c.ok("DELETE", base+"/web?version=2", "", nil, http.StatusOK, &del)
	if del.Revision != 4 {
		t.Errorf("delete: revision %d, want 4", del.Revision)
	}
	c.fails("GET", base+"/web", "", nil, http.StatusNotFound)
	c.ok("DELETE", base+"/api", "", nil, http.StatusOK, &del)

	evs, err := s.Store().ListAudit(context.Background(), "default", time.Time{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range evs {
		actions = append(actions, ev.Action+" "+ev.Target+" by "+ev.Actor)
	}
	want := []string{
		"resource.delete Upstream/api by admin", "resource.delete Upstream/web by admin", "resource.create Upstream/api by admin",
		"resource.update Upstream/web by admin", "resource.create Upstream/web by admin",
	}
	if !reflect.DeepEqual(actions, want) {
		t.Errorf("audit events %q, want %q", actions, want)
	}
}

type applyAnswer struct {
	Revision  int64 `json:"revision"`
	Changed   bool  `json:"changed"`
	DryRun    bool  `json:"dryRun"`
	Resources []struct {
		Kind, Name, Op string
		Version        int64
	} `json:"resources"`
	Diff []struct {
		Kind, Name, Op string
		Old, New       map[string]any
	} `json:"diff"`
}

func (a applyAnswer) ops() (res, diff []string) {
	for _, r := range a.Resources {
		res = append(res, r.Op+" "+r.Kind+"/"+r.Name)
	}
	for _, d := range a.Diff {
		diff = append(diff, d.Op+" "+d.Kind+"/"+d.Name)
	}
	return res, diff
}

func TestApply(t *testing.T) {
	_, c := loggedIn(t)
	const apply = "/api/v1/workspaces/default/apply"
	body := upstreamDoc("web", "10.0.0.1:80") + "---\n" + vhostDoc("site", "example.com", "web")

	var first applyAnswer
	c.ok("POST", apply+"?message=first+rollout", yamlType, []byte(body), http.StatusOK, &first)
	res, diff := first.ops()
	if first.Revision != 1 || !first.Changed || first.DryRun ||
		!reflect.DeepEqual(res, []string{"created Upstream/web", "created VirtualHost/site"}) ||
		!reflect.DeepEqual(diff, []string{"added Upstream/web", "added VirtualHost/site"}) || first.Diff[0].Old != nil || first.Diff[0].New == nil {
		t.Fatalf("first apply = %+v", first)
	}
	var rev revisionJSON
	c.ok("GET", "/api/v1/workspaces/default/revisions/1", "", nil, http.StatusOK, &rev)
	if rev.Author != "admin" || rev.Message != "first rollout" {
		t.Errorf("revision 1 = %+v", rev)
	}

	// The same documents again: no change, no revision.
	var again applyAnswer
	c.ok("POST", apply, yamlType, []byte(body), http.StatusOK, &again)
	if res, _ := again.ops(); again.Changed || again.Revision != 1 || len(again.Diff) != 0 ||
		!reflect.DeepEqual(res, []string{"unchanged Upstream/web", "unchanged VirtualHost/site"}) {
		t.Errorf("no-op apply = %+v", again)
	}

	// A dry run answers as the apply will, and writes nothing.
	changed := upstreamDoc("web", "10.0.0.2:80") + "---\n" + upstreamDoc("api", "10.0.0.3:80")
	var dry applyAnswer
	c.ok("POST", apply+"?dryRun=true", yamlType, []byte(changed), http.StatusOK, &dry)
	if res, diff := dry.ops(); !dry.DryRun || !dry.Changed || dry.Revision != 2 ||
		!reflect.DeepEqual(res, []string{"updated Upstream/web", "created Upstream/api"}) ||
		!reflect.DeepEqual(diff, []string{"added Upstream/api", "changed Upstream/web"}) {
		t.Fatalf("dry run = %+v", dry)
	}
	var ws workspaceJSON
	c.ok("GET", "/api/v1/workspaces/default", "", nil, http.StatusOK, &ws)
	var web resourceAnswer
	c.ok("GET", "/api/v1/workspaces/default/resources/upstreams/web", "", nil, http.StatusOK, &web)
	c.fails("GET", "/api/v1/workspaces/default/resources/upstreams/api", "", nil, http.StatusNotFound)
	if ws.Revision != 1 || web.Metadata.Version != 1 || serverAddress(web) != "10.0.0.1:80" {
		t.Fatalf("the dry run wrote: workspace %+v, web %+v", ws, web)
	}
	var real applyAnswer
	c.ok("POST", apply, yamlType, []byte(changed), http.StatusOK, &real)
	dry.DryRun = false
	if !reflect.DeepEqual(real, dry) {
		t.Errorf("apply answered\n %+v\nthe dry run\n %+v", real, dry)
	}

	// A JSON array of documents, as well as the GET form of a resource.
	c.ok("GET", "/api/v1/workspaces/default/resources/upstreams/web", "", nil, http.StatusOK, &web)
	web.Metadata.Labels = map[string]string{"tier": "front"}
	arr := "[" + string(jsonBody(t, web)) + "," + string(jsonBody(t, map[string]any{
		"apiVersion": "nxmesh/v1", "kind": "Upstream", "metadata": map[string]any{"name": "img"},
		"spec": map[string]any{"servers": []any{map[string]any{"address": "10.0.0.4:80"}}},
	})) + "]"
	var fromJSON applyAnswer
	c.ok("POST", apply, jsonType, []byte(arr), http.StatusOK, &fromJSON)
	if res, _ := fromJSON.ops(); fromJSON.Revision != 3 || !reflect.DeepEqual(res, []string{"updated Upstream/web", "created Upstream/img"}) {
		t.Errorf("JSON array apply = %+v", fromJSON)
	}

	bad := upstreamDoc("x", "nope") + "---\n" + vhostDoc("Bad_Name", "example.com", "web")
	e := c.fails("POST", apply, yamlType, []byte(bad), http.StatusBadRequest)
	if e.Error.Code != "invalid" || e.Error.Field != "spec.servers[0].address" || len(e.Error.Details) < 2 {
		t.Fatalf("invalid documents: %+v", e.Error)
	}
	if d := e.Error.Details[0]; d.Document != 1 || d.Field != "spec.servers[0].address" || d.Message == "" {
		t.Errorf("first detail = %+v", d)
	}
	if d := e.Error.Details[1]; d.Document != 2 || d.Field != "metadata.name" {
		t.Errorf("second detail = %+v", d)
	}
	// A problem between documents (a dangling reference) too.
	e = c.fails("POST", apply+"?dryRun=true", yamlType, []byte(vhostDoc("shop", "shop.example.com", "nope")), http.StatusBadRequest)
	if e.Error.Field != "spec.locations[0].upstream" || len(e.Error.Details) != 1 {
		t.Errorf("dangling reference in a dry run: %+v", e.Error)
	}

	for _, tc := range []struct {
		name, query, ctype string
		body               []byte
		status             int
		field              string
	}{
		{"empty body", "", yamlType, nil, 400, ""},
		{"bad dryRun", "?dryRun=maybe", yamlType, []byte(body), 400, "dryRun"},
		{"long message", "?message=" + strings.Repeat("m", maxMessage+1), yamlType, []byte(body), 400, "message"},
		{"YAML syntax", "", yamlType, []byte("a: [\n"), 400, ""},
		{"too large", "", yamlType, bytes.Repeat([]byte("#"), maxBodyBytes+1), 413, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if e := c.fails("POST", apply+tc.query, tc.ctype, tc.body, tc.status); e.Error.Field != tc.field {
				t.Errorf("got %+v; want the field %q", e.Error, tc.field)
			}
		})
	}
	c.ok("GET", "/api/v1/workspaces/default", "", nil, http.StatusOK, &ws)
	if ws.Revision != 3 {
		t.Errorf("revision %d after refused applies, want 3", ws.Revision)
	}
	if e := c.fails("POST", "/api/v1/workspaces/nope/apply", yamlType, []byte(body), 404); e.Error.Code != "not_found" {
		t.Errorf("apply to a missing workspace: %+v", e.Error)
	}
}

// TestApplyRoundTripsGet: what GET returns for every resource, applied
// back as one YAML file, changes nothing.
func TestApplyRoundTripsGet(t *testing.T) {
	_, c := loggedIn(t)
	c.ok("POST", "/api/v1/workspaces/default/apply", yamlType,
		[]byte(upstreamDoc("web", "10.0.0.1:80")+"---\n"+vhostDoc("site", "example.com", "web")), http.StatusOK, nil)
	var docs []string
	for _, kind := range []string{"upstreams", "virtualhosts"} {
		var list struct{ Items []json.RawMessage }
		c.ok("GET", "/api/v1/workspaces/default/resources/"+kind, "", nil, http.StatusOK, &list)
		for _, item := range list.Items {
			docs = append(docs, string(item))
		}
	}
	var res applyAnswer
	c.ok("POST", "/api/v1/workspaces/default/apply", yamlType, []byte(strings.Join(docs, "\n---\n")), http.StatusOK, &res)
	if res.Changed || res.Revision != 1 || len(res.Resources) != 2 {
		t.Errorf("apply of the GET form = %+v", res)
	}
}
