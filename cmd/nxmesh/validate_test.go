package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFile writes a test input into dir and returns its path.
func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodYAML = `apiVersion: nxmesh/v1
kind: Upstream
metadata:
  name: api
spec:
  servers:
    - address: 127.0.0.1:9000
---
apiVersion: nxmesh/v1
kind: VirtualHost
metadata:
  name: web
spec:
  serverNames: [web.example.com]
  listen: [{port: 8080}]
  locations:
    - path: /
      upstream: api
    - path: /healthz
      match: exact
      return: {status: 200, body: "ok"}
`

const badYAML = `apiVersion: nxmesh/v1
kind: Upstream
metadata:
  name: api
spec:
  servers:
    - address: 10.0.0.1
---
apiVersion: nxmesh/v1
kind: VirtualHost
metadata:
  name: Web
spec:
  serverNames: [example.com]
  locations:
    - path: /
      upstream: api
`

// Two default servers on one port: the schema accepts it, nginx does not.
const nginxRejectsYAML = `apiVersion: nxmesh/v1
kind: VirtualHost
metadata:
  name: alpha
spec:
  serverNames: [alpha.example.com]
  listen: [{port: 8080, defaultServer: true}]
  locations: [{path: /, return: {status: 204}}]
---
apiVersion: nxmesh/v1
kind: VirtualHost
metadata:
  name: beta
spec:
  serverNames: [beta.example.com]
  listen: [{port: 8080, defaultServer: true}]
  locations: [{path: /, return: {status: 204}}]
`

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", goodYAML)
	bad := writeFile(t, dir, "bad.yaml", badYAML)
	rejected := writeFile(t, dir, "rejected.yaml", nginxRejectsYAML)
	outside := writeFile(t, dir, "outside.yaml", `apiVersion: nxmesh/v1
kind: VirtualHost
metadata:
  name: files
spec:
  serverNames: [files.example.com]
  locations: [{path: /, static: {root: /etc}}]
`)

	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string
		stderr     string // exact, when set
		stderrPart string
	}{
		{name: "valid", args: []string{"validate", "-f", good},
			code: 0, stdout: "valid: 2 resources, 1 bundle, nginx -t passed\n", stderr: ""},
		{name: "valid without nginx", args: []string{"validate", "--no-nginx", "-f", good},
			code: 0, stdout: "valid: 2 resources, 1 bundle, nginx -t skipped (--no-nginx)\n", stderr: ""},
		{name: "schema errors", args: []string{"validate", "-f", bad}, code: 1,
			stderr: bad + `: document 1: spec.servers[0].address: "10.0.0.1" has no port; use host:port, [ipv6]:port or unix:/absolute/path` + "\n" +
				bad + `: document 2: metadata.name: "Web" is not a valid name; use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit` + "\n" +
				"nxmesh: the input is invalid (2 problems)\n"},
		{name: "nginx rejects", args: []string{"validate", "-f", rejected}, code: 1,
			stderr: rejected + `: document 2: nginx -t: VirtualHost "beta" (vhosts/beta.conf:4): a duplicate default server for 0.0.0.0:8080` + "\n" +
				"nxmesh: the input is invalid (1 problem)\n"},
		{name: "nginx rejects but not asked", args: []string{"validate", "--no-nginx", "-f", rejected}, code: 0},
		{name: "compile error", args: []string{"validate", "-f", outside}, code: 1,
			stderr: outside + `: document 1: compile VirtualHost "files": spec.locations[0].static.root: "/etc" is outside the allowed static roots /var/www, /srv/www` + "\n" +
				"nxmesh: the input is invalid (1 problem)\n"},
		{name: "static root flag", args: []string{"validate", "--no-nginx", "--static-root", "/etc", "-f", outside}, code: 0},
		{name: "no files", args: []string{"validate"}, code: 2, stderrPart: "--file"},
		{name: "missing file", args: []string{"validate", "-f", filepath.Join(dir, "nope.yaml")}, code: 2, stderrPart: "nope.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			if tc.stdout != "" && stdout != tc.stdout {
				t.Errorf("stdout %q, want %q", stdout, tc.stdout)
			}
			if tc.stderr != "" && stderr != tc.stderr {
				t.Errorf("stderr\n%s\nwant\n%s", stderr, tc.stderr)
			}
			if !strings.Contains(stderr, tc.stderrPart) {
				t.Errorf("stderr %q lacks %q", stderr, tc.stderrPart)
			}
		})
	}
}
