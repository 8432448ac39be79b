package hub

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// publicRoutes are the routes docs/api.md ("Authentication") lists as
// served without a bearer token. Making a route public means changing the
// contract, this list and the route table together.
var publicRoutes = []string{
	"GET /healthz",
	"GET /api/v1/openapi.json",
	"GET /api/v1/ca/root.pem",
	"POST /api/v1/login",
	"POST /api/v1/enroll",
}

// pendingRoutes are routes the OpenAPI document describes before the
// route table has them: written down so the gap is visible, and emptied
// by the change that registers them. TestOpenAPICoverage fails for an
// entry that is registered or undocumented.
var pendingRoutes = []string{}

var pathParam = regexp.MustCompile(`\{([a-zA-Z]+)\}`)

// samplePath fills a route pattern's parameters with plausible values.
func samplePath(pattern string) string {
	values := map[string]string{"ws": "default", "kind": "upstreams", "name": "web", "rev": "1", "id": "x"}
	return pathParam.ReplaceAllStringFunc(pattern, func(m string) string {
		if v, ok := values[m[1:len(m)-1]]; ok {
			return v
		}
		return "x"
	})
}

// TestRoutesNeedToken walks every route of the API and checks that each
// private one refuses a request without a valid token with 401, the
// WWW-Authenticate challenge and the JSON error body, before it reads the
// request; and that the public ones are exactly those of docs/api.md.
func TestRoutesNeedToken(t *testing.T) {
	s := startHub(t, testConfig(t, t.TempDir()))
	c := newClient(t, s)
	mux := s.apiRoutes().(*http.ServeMux)
	var public []string
	for _, rt := range s.apiRouteTable() {
		key := rt.method + " " + rt.pattern
		if rt.public {
			public = append(public, key)
		}
		t.Run(key, func(t *testing.T) {
			path := samplePath(rt.pattern)
			req, _ := http.NewRequest(rt.method, path, nil)
			if _, p := mux.Handler(req); p != key {
				t.Fatalf("the API mux serves %s %s with %q, not this route", rt.method, path, p)
			}
			for _, tok := range []string{"", "nxs_unknown"} {
				c.token = tok
				a := c.raw(rt.method, path, "application/json", []byte(`{}`))
				if rt.public {
					if a.status == http.StatusUnauthorized {
						t.Fatalf("public route answered 401: %s", a.body)
					}
					continue
				}
				var e errorBody
				if err := json.Unmarshal(a.body, &e); a.status != http.StatusUnauthorized || err != nil || e.Error == nil || e.Error.Code != "unauthenticated" {
					t.Fatalf("token %q: %d %s; want 401 unauthenticated", tok, a.status, a.body)
				}
				if ct := a.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
				if wa := a.header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer ") {
					t.Errorf("WWW-Authenticate %q", wa)
				}
			}
		})
	}
	slices.Sort(public)
	want := slices.Sorted(slices.Values(publicRoutes))
	if !slices.Equal(public, want) {
		t.Errorf("public routes %q, docs/api.md lists %q", public, want)
	}
	c.token = ""
	if e := c.fails("GET", "/api/v1/nowhere", "", nil, http.StatusNotFound); e.Error.Code != "not_found" {
		t.Errorf("unknown route: %+v", e.Error)
	}
}

// openAPIDoc is the part of an OpenAPI document the tests read.
type openAPIDoc struct {
	OpenAPI    string                                `json:"openapi"`
	Security   []map[string][]string                 `json:"security"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		SecuritySchemes map[string]struct {
			Type   string `json:"type"`
			Scheme string `json:"scheme"`
		} `json:"securitySchemes"`
		Parameters map[string]openAPIParam `json:"parameters"`
	} `json:"components"`
}

type openAPIOperation struct {
	OperationID string                     `json:"operationId"`
	Security    *[]map[string][]string     `json:"security"`
	Parameters  []openAPIParam             `json:"parameters"`
	Responses   map[string]json.RawMessage `json:"responses"`
	RequestBody json.RawMessage            `json:"requestBody"`
}

type openAPIParam struct {
	Ref  string `json:"$ref"`
	Name string `json:"name"`
	In   string `json:"in"`
}

// fetchOpenAPI gets the document from the hub, as a client would.
func fetchOpenAPI(t *testing.T) (*Server, []byte, openAPIDoc) {
	t.Helper()
	s := startHub(t, testConfig(t, t.TempDir()))
	a := newClient(t, s).raw("GET", "/api/v1/openapi.json", "", nil)
	if a.status != http.StatusOK || a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/v1/openapi.json: %d %s", a.status, a.header.Get("Content-Type"))
	}
	var doc openAPIDoc
	if err := json.Unmarshal(a.body, &doc); err != nil {
		t.Fatal(err)
	}
	return s, a.body, doc
}

// TestOpenAPICoverage: every route of the table is in the OpenAPI document
// with its method, every operation of the document is a route (or a
// pending one), and each operation's security matches the route's.
func TestOpenAPICoverage(t *testing.T) {
	s, _, doc := fetchOpenAPI(t)
	routes := map[string]route{}
	for _, rt := range s.apiRouteTable() {
		routes[rt.method+" "+rt.pattern] = rt
	}
	for key, rt := range routes {
		raw, ok := doc.Paths[rt.pattern][strings.ToLower(rt.method)]
		if !ok {
			t.Errorf("%s is a route but not in openapi.json", key)
			continue
		}
		var op openAPIOperation
		if err := json.Unmarshal(raw, &op); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		public := op.Security != nil && len(*op.Security) == 0
		if public != rt.public {
			t.Errorf("%s: public in openapi.json is %v, in the route table %v", key, public, rt.public)
		}
		if _, ok := op.Responses["401"]; !rt.public && !ok {
			t.Errorf("%s: openapi.json gives no 401 answer", key)
		}
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			key := strings.ToUpper(method) + " " + path
			if _, ok := routes[key]; !ok && !slices.Contains(pendingRoutes, key) {
				t.Errorf("openapi.json describes %s, which is no route", key)
			}
		}
	}
	for _, key := range pendingRoutes {
		method, path, _ := strings.Cut(key, " ")
		if _, ok := routes[key]; ok {
			t.Errorf("pending route %s is registered now: take it out of pendingRoutes", key)
		}
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("pending route %s is not in openapi.json", key)
		}
	}
}

// TestOpenAPIDocument checks what a client generator relies on: OpenAPI
// 3.1, bearer security by default, unique operation ids, every path
// parameter declared and every declared one in the path, every $ref
// resolving, and the error schema.
func TestOpenAPIDocument(t *testing.T) {
	_, raw, doc := fetchOpenAPI(t)
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	if b := doc.Components.SecuritySchemes["bearer"]; b.Type != "http" || b.Scheme != "bearer" {
		t.Errorf("bearer security scheme = %+v", b)
	}
	if len(doc.Security) != 1 || doc.Security[0]["bearer"] == nil {
		t.Errorf("default security = %v, want bearer", doc.Security)
	}
	ids := map[string]string{}
	for path, ops := range doc.Paths {
		inPath := map[string]bool{}
		for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
			inPath[m[1]] = true
		}
		for method, rawOp := range ops {
			where := strings.ToUpper(method) + " " + path
			var op openAPIOperation
			if err := json.Unmarshal(rawOp, &op); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if op.OperationID == "" || ids[op.OperationID] != "" {
				t.Errorf("%s: operationId %q missing or also used by %s", where, op.OperationID, ids[op.OperationID])
			}
			ids[op.OperationID] = where
			if _, ok := op.Responses["default"]; !ok {
				t.Errorf("%s: no default (error) response", where)
			}
			declared := map[string]bool{}
			for _, p := range op.Parameters {
				if p.Ref != "" {
					p = doc.Components.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
				}
				if p.In == "path" {
					declared[p.Name] = true
					if !inPath[p.Name] {
						t.Errorf("%s: declares path parameter %q, which the path lacks", where, p.Name)
					}
				}
			}
			for name := range inPath {
				if !declared[name] {
					t.Errorf("%s: path parameter %q is not declared", where, name)
				}
			}
		}
	}

	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok && resolve(tree, ref) == nil {
				t.Errorf("$ref %q does not resolve", ref)
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(tree)
	errSchema, _ := resolve(tree, "#/components/schemas/Error/properties/error/required").([]any)
	if !slices.Contains(errSchema, any("code")) || !slices.Contains(errSchema, any("message")) {
		t.Errorf("the Error schema does not require code and message: %v", errSchema)
	}
}

// resolve follows a local JSON pointer ("#/a/b") in tree; nil if absent.
func resolve(tree any, ref string) any {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil
	}
	cur := tree
	for _, part := range strings.Split(rest, "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = m[part]; !ok {
			return nil
		}
	}
	return cur
}
