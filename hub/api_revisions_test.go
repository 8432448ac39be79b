package hub

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

type revisionList struct {
	Items []revisionJSON `json:"items"`
	Next  int64          `json:"next"`
}

func numbers(l revisionList) []int64 {
	var out []int64
	for _, r := range l.Items {
		out = append(out, r.Number)
	}
	return out
}

func TestRevisionsPaging(t *testing.T) {
	_, c := loggedIn(t)
	for i := range 5 {
		c.ok("POST", "/api/v1/workspaces/default/apply", yamlType, []byte(upstreamDoc("web", fmt.Sprintf("10.0.0.%d:80", i+1))), http.StatusOK, nil)
	}
	const revs = "/api/v1/workspaces/default/revisions"
	var pages [][]int64
	path := revs + "?limit=2"
	for {
		var l revisionList
		c.ok("GET", path, "", nil, http.StatusOK, &l)
		pages = append(pages, numbers(l))
		if l.Next == 0 {
			break
		}
		path = fmt.Sprintf("%s?limit=2&before=%d", revs, l.Next)
	}
	if want := [][]int64{{5, 4}, {3, 2}, {1}}; !reflect.DeepEqual(pages, want) {
		t.Errorf("pages %v, want %v", pages, want)
	}
	var all revisionList
	c.ok("GET", revs, "", nil, http.StatusOK, &all)
	if !reflect.DeepEqual(numbers(all), []int64{5, 4, 3, 2, 1}) || all.Next != 0 || all.Items[0].Author != "admin" {
		t.Errorf("default page = %+v", all)
	}
	// A page that ends exactly at revision 1 has no next.
	var exact revisionList
	c.ok("GET", revs+"?limit=5", "", nil, http.StatusOK, &exact)
	if len(exact.Items) != 5 || exact.Next != 0 {
		t.Errorf("exact page = %v next %d", numbers(exact), exact.Next)
	}
	for _, tc := range []struct{ query, field string }{
		{"?limit=0", "limit"}, {"?limit=501", "limit"}, {"?limit=x", "limit"}, {"?before=0", "before"}, {"?before=x", "before"},
	} {
		if e := c.fails("GET", revs+tc.query, "", nil, http.StatusBadRequest); e.Error.Field != tc.field {
			t.Errorf("%s: %+v", tc.query, e.Error)
		}
	}
	c.fails("GET", "/api/v1/workspaces/nope/revisions", "", nil, http.StatusNotFound)
}

// TestRevisionDiffAndRollback: a revision shows its resources as they
// were; diff compares any two; a rollback restores exactly, deleting what
// was created since.
func TestRevisionDiffAndRollback(t *testing.T) {
	_, c := loggedIn(t)
	const ws = "/api/v1/workspaces/default"
	c.ok("POST", ws+"/apply", yamlType, []byte(upstreamDoc("web", "10.0.0.1:80")+"---\n"+vhostDoc("site", "example.com", "web")), http.StatusOK, nil) // 1
	c.ok("POST", ws+"/apply", yamlType, []byte(upstreamDoc("web", "10.0.0.2:80")), http.StatusOK, nil)                                                // 2
	c.ok("POST", ws+"/apply", yamlType, []byte(upstreamDoc("api", "10.0.0.3:80")), http.StatusOK, nil)                                                // 3

	var rev1 struct {
		revisionJSON
		Resources []resourceAnswer `json:"resources"`
	}
	c.ok("GET", ws+"/revisions/1", "", nil, http.StatusOK, &rev1)
	if rev1.Number != 1 || len(rev1.Resources) != 2 || rev1.Resources[0].Metadata.Name != "web" ||
		rev1.Resources[0].Metadata.Version != 1 || serverAddress(rev1.Resources[0]) != "10.0.0.1:80" {
		t.Fatalf("revision 1 = %+v", rev1)
	}

	type diffAnswer struct {
		From, To int64
		Entries  []struct{ Kind, Name, Op string }
	}
	entries := func(d diffAnswer) []string {
		var out []string
		for _, e := range d.Entries {
			out = append(out, e.Op+" "+e.Kind+"/"+e.Name)
		}
		return out
	}
	var d diffAnswer
	c.ok("GET", ws+"/revisions/3/diff", "", nil, http.StatusOK, &d)
	if d.From != 2 || d.To != 3 || !reflect.DeepEqual(entries(d), []string{"added Upstream/api"}) {
		t.Errorf("diff 2..3 = %+v", d)
	}
	c.ok("GET", ws+"/revisions/3/diff?from=1", "", nil, http.StatusOK, &d)
	if d.From != 1 || !reflect.DeepEqual(entries(d), []string{"added Upstream/api", "changed Upstream/web"}) {
		t.Errorf("diff 1..3 = %+v", d)
	}
	c.ok("GET", ws+"/revisions/1/diff", "", nil, http.StatusOK, &d)
	if d.From != 0 || len(d.Entries) != 2 {
		t.Errorf("diff of the first revision = %+v", d)
	}

	var rb applyAnswer
	c.ok("POST", ws+"/revisions/1/rollback", "", nil, http.StatusOK, &rb)
	res, diff := rb.ops()
	if !rb.Changed || rb.Revision != 4 || rb.DryRun ||
		!reflect.DeepEqual(res, []string{"updated Upstream/web", "unchanged VirtualHost/site"}) ||
		!reflect.DeepEqual(diff, []string{"removed Upstream/api", "changed Upstream/web"}) {
		t.Fatalf("rollback = %+v", rb)
	}
	var ups struct{ Items []resourceAnswer }
	c.ok("GET", ws+"/resources/upstreams", "", nil, http.StatusOK, &ups)
	if len(ups.Items) != 1 || ups.Items[0].Metadata.Name != "web" || serverAddress(ups.Items[0]) != "10.0.0.1:80" || ups.Items[0].Metadata.Version != 3 {
		t.Errorf("upstreams after the rollback = %+v", ups.Items)
	}
	c.ok("GET", ws+"/revisions/4/diff?from=1", "", nil, http.StatusOK, &d)
	if len(d.Entries) != 0 {
		t.Errorf("revision 4 differs from revision 1: %+v", d)
	}
	var rev4 revisionJSON
	c.ok("GET", ws+"/revisions/4", "", nil, http.StatusOK, &rev4)
	if rev4.Author != "admin" || !strings.Contains(rev4.Message, "rollback to revision 1") {
		t.Errorf("revision 4 = %+v", rev4)
	}
	// Rolling back to where the workspace is: nothing to do.
	c.ok("POST", ws+"/revisions/1/rollback", "", nil, http.StatusOK, &rb)
	if rb.Changed || rb.Revision != 4 || len(rb.Diff) != 0 {
		t.Errorf("second rollback = %+v", rb)
	}

	for _, tc := range []struct {
		method, path string
		status       int
		field        string
	}{
		{"GET", ws + "/revisions/9", 404, ""},
		{"GET", ws + "/revisions/0", 400, "rev"},
		{"GET", ws + "/revisions/x", 400, "rev"},
		{"GET", ws + "/revisions/3/diff?from=9", 404, ""},
		{"GET", ws + "/revisions/3/diff?from=-1", 400, "from"},
		{"POST", ws + "/revisions/9/rollback", 404, ""},
		{"POST", ws + "/revisions/x/rollback", 400, "rev"},
	} {
		if e := c.fails(tc.method, tc.path, "", nil, tc.status); e.Error.Field != tc.field {
			t.Errorf("%s %s: %+v", tc.method, tc.path, e.Error)
		}
	}
}
