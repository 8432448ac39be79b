package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/schema"
)

type validateCmd struct {
	inputFlags `embed:""`

	NoNginx bool `help:"Skip the nginx -t check."`
}

func (c *validateCmd) Help() string {
	return `Checks the resource files against the schema, compiles them and, unless --no-nginx, runs nginx -t on the result (as the user nobody when run as root).

Without --labels, one bundle is compiled for each distinct selector found in the files, so that every virtual host is checked together with the others an agent with exactly those labels would serve.

If nginx is not installed the nginx -t check is skipped with a warning on stderr and the exit status is 0, so that CI jobs without nginx still check the schema; pass --no-nginx to skip it silently.

Exit status: 0 when all is well, 1 when the input is invalid (every problem is printed, each naming file, document and field, or quoting nginx's own message), 2 for usage errors.`
}

func (c *validateCmd) Run(ctx context.Context, g *Globals) error {
	set, err := c.load(g.stderr)
	if err != nil {
		return err
	}
	var bin *nginx.Binary
	if !c.NoNginx {
		bin, err = nginx.FindBinary()
		if err != nil {
			fmt.Fprintf(g.stderr, "warning: nginx was not found, so the nginx -t check was skipped (install nginx, or pass --no-nginx to silence this)\n")
			bin = nil
		}
	}
	labelSets := []map[string]string{c.Labels}
	if c.Labels == nil {
		labelSets = selectorLabels(set)
	}
	var problems []string
	seen := map[string]bool{}
	report := func(p string) {
		if !seen[p] {
			seen[p] = true
			problems = append(problems, p)
		}
	}
	bundles := map[string]bool{}
	for _, labels := range labelSets {
		b, err := nginx.Compile(set, nginx.Options{Labels: labels, StaticRoots: c.StaticRoot})
		if err != nil {
			var ce *nginx.CompileError
			if errors.As(err, &ce) && ce.Kind == "" {
				return &exitError{code: 2, msg: err.Error()} // a bad flag value
			}
			report(compileError(set, err))
			continue
		}
		if bundles[b.Hash] || bin == nil {
			bundles[b.Hash] = true
			continue
		}
		bundles[b.Hash] = true
		if err := nginx.Check(ctx, bin, b); err != nil {
			var ce *nginx.CheckError
			if !errors.As(err, &ce) {
				return err // could not run nginx at all
			}
			report(where(set, ce.Kind, ce.Name, err.Error()))
		}
	}
	if len(problems) > 0 {
		return invalid(g.stderr, problems)
	}
	checked := "nginx -t passed"
	switch {
	case c.NoNginx:
		checked = "nginx -t skipped (--no-nginx)"
	case bin == nil:
		checked = "nginx -t skipped (nginx not found)"
	}
	_, err = fmt.Fprintf(g.stdout, "valid: %d resources, %s, %s\n", len(set), plural(len(bundles), "bundle"), checked)
	return err
}

// selectorLabels returns the distinct label sets of the virtual hosts'
// selectors, in a stable order; just the empty set when there are none.
func selectorLabels(set []schema.Resource) []map[string]string {
	byKey := map[string]map[string]string{}
	for _, r := range set {
		vh, ok := r.Spec.(*schema.VirtualHostSpec)
		if !ok || vh.Selector == nil {
			continue
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(vh.Selector.MatchLabels)) {
			parts = append(parts, k+"="+vh.Selector.MatchLabels[k])
		}
		byKey[strings.Join(parts, ",")] = vh.Selector.MatchLabels
	}
	if len(byKey) == 0 {
		return []map[string]string{{}}
	}
	var out []map[string]string
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		out = append(out, byKey[k])
	}
	return out
}

// plural returns "1 bundle", "2 bundles".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
