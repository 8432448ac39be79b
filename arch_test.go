// Tests that keep the architecture DESIGN.md describes: every package says
// what it owns, and imports point one way.
package nxmesh_test

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/nxmesh/nxmesh"

// allowedImports lists, for each package of the module, the module packages
// it may import directly (DESIGN.md "Layout and dependency direction").
// A new package must be added here, which is the moment to decide its arrows.
var allowedImports = map[string][]string{
	"cmd/nxmesh":       {"hub", "hub/store", "hub/fleet", "relay", "agent", "bench", "nginx", "schema", "wire", "pki"},
	"hub":              {"hub/store", "hub/fleet", "relay", "schema", "wire", "pki", "pki/ca", "nginx"},
	"hub/fleet":        {"hub/store", "schema", "wire", "pki", "nginx"},
	"hub/store":        {"schema"},
	"relay":            {"wire", "pki"},
	"agent":            {"wire", "pki", "nginx"},
	"bench":            {"wire", "pki", "agent", "internal/ports"},
	"nginx":            {"schema"},
	"wire":             {},
	"pki":              {},
	"pki/ca":           {"pki"},
	"schema":           {},
	"internal/testenv": {"nginx", "schema", "internal/ports"},
	"internal/ports":   {},
	"e2e":              {},
}

// agentForbidden are dependencies the agent binary must never link: database
// drivers, the store and the CA server (DESIGN.md: keep the agent small).
var agentForbidden = []string{
	"github.com/jackc/pgx",
	"modernc.org/sqlite",
	"github.com/smallstep/certificates/authority",
	module + "/hub",
	module + "/pki/ca",
}

type goPackage struct {
	ImportPath string
	Dir        string
	Name       string
	GoFiles    []string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []goPackage {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps=false", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p goPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		if len(p.GoFiles) > 0 {
			pkgs = append(pkgs, p)
		}
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

func rel(importPath string) string {
	return strings.TrimPrefix(strings.TrimPrefix(importPath, module), "/")
}

// TestPackageComments: every package has exactly one package comment, and it
// starts the way godoc expects.
func TestPackageComments(t *testing.T) {
	for _, p := range listPackages(t) {
		var docs []string
		for _, f := range p.GoFiles {
			file, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.Dir, f), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if file.Doc != nil {
				docs = append(docs, f)
				text := file.Doc.Text()
				want := "Package " + p.Name + " "
				if p.Name == "main" {
					want = "Command "
				}
				if !strings.HasPrefix(text, want) {
					t.Errorf("%s: package comment in %s starts %q, want %q", rel(p.ImportPath), f, firstWords(text), want)
				}
			}
		}
		switch len(docs) {
		case 0:
			t.Errorf("%s has no package comment: say what it owns and what it must not import", rel(p.ImportPath))
		case 1:
		default:
			t.Errorf("%s has %d package comments (%s), want one", rel(p.ImportPath), len(docs), strings.Join(docs, ", "))
		}
	}
}

// TestImportDirection enforces DESIGN.md's arrows on direct imports.
func TestImportDirection(t *testing.T) {
	for _, p := range listPackages(t) {
		name := rel(p.ImportPath)
		allowed, ok := allowedImports[name]
		if !ok {
			t.Errorf("package %s is not in allowedImports (arch_test.go): add it with the arrows DESIGN.md gives it", name)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			if target := rel(imp); !slices.Contains(allowed, target) {
				t.Errorf("%s imports %s, which DESIGN.md does not allow (allowed: %v)", name, target, allowed)
			}
		}
	}
}

// TestAgentStaysSmall: the agent must not link database drivers or the CA.
func TestAgentStaysSmall(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./agent/...", "./nginx/...").CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "matched no packages") {
			t.Fatalf("go list -deps: %s", out)
		}
		t.Fatalf("go list -deps: %v: %s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range agentForbidden {
			if dep == bad || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("the agent links %s; it must not link database drivers, the store or the CA", dep)
			}
		}
	}
}

func firstWords(s string) string {
	if len(s) > 30 {
		return s[:30]
	}
	return s
}
