package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nxmesh/nxmesh/schema"
)

type applyCmd struct {
	workspaceFlags `embed:""`
	waitFlags      `embed:""`

	Files   []string `name:"file" short:"f" required:"" sep:"none" placeholder:"FILE" help:"Resource file (YAML or JSON, documents separated by ---, or a list as nxmesh get -o yaml prints it), a directory (its *.yaml, *.yml and *.json files in name order), or - for standard input; repeat for several."`
	Message string   `short:"m" help:"Message stored with the new revision, shown by nxmesh get revisions."`
	DryRun  bool     `help:"Print the plan and change nothing."`
}

func (c *applyCmd) Help() string {
	return `Creates or updates every resource of the files in one new revision of the workspace, then waits until the workspace's agents run it. Apply never deletes: resources missing from the files stay as they are (roll back, or delete them through the API).

The files are checked locally first (schema and duplicate names); references to resources that are not in the files are checked by the hub against the workspace. The plan is printed as a diff: + created, ~ changed (with a line diff of the YAML), and private keys only as a fingerprint.

Progress goes to standard error: one line rewritten in place on a terminal, a line per change otherwise. Agents that are offline do not hold the command up; they are listed as a warning.

Exit status: 0 when every online agent applied the revision (or with --dry-run, when the plan was computed); 1 when an agent rejected or rolled back the revision (each is named with nginx's output), when --timeout passed with agents still pending (they are listed), or when the input is invalid; 2 for usage errors.`
}

// applyResult is the hub's answer to apply and rollback.
type applyResult struct {
	Revision int64       `json:"revision"`
	Changed  bool        `json:"changed"`
	DryRun   bool        `json:"dryRun"`
	Diff     []diffEntry `json:"diff"`
}

func (c *applyCmd) Run(ctx context.Context, g *Globals) error {
	return loginHint(c.run(ctx, g))
}

func (c *applyCmd) run(ctx context.Context, g *Globals) error {
	set, err := readResources(c.Files, g.stdin, g.stderr)
	if err != nil {
		return err
	}
	api, err := newAPIClient(c.hubFlags, true)
	if err != nil {
		return err
	}
	plan, err := c.post(ctx, api, set, true)
	if err != nil {
		return placeErrors(g.stderr, err, set)
	}
	r := &rollout{api: api, ws: c.workspaceFlags, rev: plan.Revision, g: g}
	if !plan.Changed {
		return c.unchanged(ctx, r)
	}
	if err := printPlan(g.stdout, plan.Diff); err != nil {
		return err
	}
	if c.DryRun {
		_, err := fmt.Fprintln(g.stdout, "dry run: nothing was applied")
		return err
	}
	// The hub applies the files as they are now, which may differ from the
	// plan if someone changed the workspace in between; its answer says
	// what was done.
	done, err := c.post(ctx, api, set, false)
	if err != nil {
		return placeErrors(g.stderr, err, set)
	}
	r.rev = done.Revision
	if err := reportApplied(g.stdout, plan, done); err != nil {
		return err
	}
	if c.NoWait {
		return nil
	}
	return r.wait(ctx, c.Timeout)
}

// unchanged reports that the files match the workspace, and still judges
// the current revision once: a CI job that re-applies the same files
// should fail while agents reject what the workspace holds.
func (c *applyCmd) unchanged(ctx context.Context, r *rollout) error {
	fmt.Fprintf(r.g.stdout, "no changes; workspace is at revision %d\n", r.rev)
	if c.DryRun || c.NoWait {
		return nil
	}
	return r.check(ctx)
}

// post sends the resources to the apply route as a JSON array of the
// documents as decoded here: the hub gets exactly what was checked, and
// one body carries the documents of any number of files.
func (c *applyCmd) post(ctx context.Context, api *apiClient, set []schema.Resource, dryRun bool) (applyResult, error) {
	q := url.Values{}
	if dryRun {
		q.Set("dryRun", "true")
	}
	if c.Message != "" {
		q.Set("message", c.Message)
	}
	var out applyResult
	path := c.path() + "/apply"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	if err := api.do(ctx, "POST", path, set, &out); err != nil {
		return out, err
	}
	return out, nil
}

// placeErrors prints the hub's validation details, which count documents
// in the request body, as problems that name the file and document each
// resource came from, every one of them. Other errors pass through.
func placeErrors(w io.Writer, err error, set []schema.Resource) error {
	var re *remoteError
	if !errors.As(err, &re) || len(re.Details) == 0 {
		return err
	}
	problems := make([]string, len(re.Details))
	for i, d := range re.Details {
		fe := &schema.FieldError{Field: d.Field, Message: d.Message}
		if j := d.Document - 1; j >= 0 && j < len(set) {
			fe.File, fe.Document = set[j].Source.File, set[j].Source.Document
		}
		problems[i] = fe.Error()
	}
	return invalid(w, problems)
}

// reportApplied prints the new revision, and the changes made when they
// differ from the plan because the workspace changed in between.
func reportApplied(w io.Writer, plan, done applyResult) error {
	if !done.Changed {
		_, err := fmt.Fprintf(w, "no changes after all (the workspace changed meanwhile); workspace is at revision %d\n", done.Revision)
		return err
	}
	if !sameChanges(plan.Diff, done.Diff) {
		fmt.Fprintf(w, "\nthe workspace changed after the plan; the hub made these changes instead:\n\n")
		if err := printChanges(w, done.Diff); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(w, "\napplied: revision %d\n", done.Revision)
	return err
}

// sameChanges reports whether two lists of changes read the same.
func sameChanges(a, b []diffEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Kind != b[i].Kind || a[i].Name != b[i].Name || a[i].Op != b[i].Op {
			return false
		}
		for _, pair := range [][2][]byte{{a[i].Old, b[i].Old}, {a[i].New, b[i].New}} {
			x, errX := diffText(pair[0])
			y, errY := diffText(pair[1])
			if errX != nil || errY != nil || !slices.Equal(x, y) {
				return false
			}
		}
	}
	return true
}

// printPlan prints the changes and a summary in the words of a plan.
func printPlan(w io.Writer, entries []diffEntry) error {
	if err := printChanges(w, entries); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%s\n", changeSummary(entries, "Plan: ", "to create", "to change", "to remove"))
	return err
}

// stdinName names standard input in error messages.
const stdinName = "<stdin>"

// readResources reads and decodes the files, directories and standard
// input that -f names, and checks what can be checked without the hub:
// every document on its own, and that no kind and name appears twice.
// References between resources are left to the hub, which sees the rest
// of the workspace. Every problem is printed to w.
func readResources(args []string, stdin io.Reader, w io.Writer) ([]schema.Resource, error) {
	files, err := expandFiles(args)
	if err != nil {
		return nil, &exitError{code: 2, msg: err.Error()}
	}
	var set []schema.Resource
	var problems []string
	for _, f := range files {
		data, err := readInput(f, stdin)
		if err != nil {
			return nil, &exitError{code: 2, msg: err.Error()}
		}
		rs, err := decodeFile(f, data)
		if err != nil {
			problems = append(problems, errorLines(err)...)
			continue
		}
		set = append(set, rs...)
	}
	problems = append(problems, duplicates(set)...)
	if len(problems) > 0 {
		return nil, invalid(w, problems)
	}
	if len(set) == 0 {
		return nil, &exitError{code: 1, msg: fmt.Sprintf("no resources in %s", strings.Join(files, ", "))}
	}
	return set, nil
}

// expandFiles replaces each directory by its resource files in name order.
func expandFiles(args []string) ([]string, error) {
	var files []string
	for _, a := range args {
		if a == "-" {
			files = append(files, stdinName)
			continue
		}
		fi, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			files = append(files, a)
			continue
		}
		entries, err := os.ReadDir(a)
		if err != nil {
			return nil, err
		}
		var found []string
		for _, e := range entries {
			if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
				found = append(found, filepath.Join(a, e.Name()))
			}
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("directory %s holds no *.yaml, *.yml or *.json files", a)
		}
		slices.Sort(found)
		files = append(files, found...)
	}
	if n := slices.Index(files, stdinName); n >= 0 && slices.Index(files[n+1:], stdinName) >= 0 {
		return nil, errors.New("-f - (standard input) can be given only once")
	}
	return files, nil
}

// readInput reads a file, or standard input for stdinName, refusing more
// than the schema accepts.
func readInput(name string, stdin io.Reader) ([]byte, error) {
	var r io.Reader = stdin
	if name != stdinName {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, schema.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return data, nil // Decode reports a file that is too large
}

// duplicates reports each resource whose kind and name an earlier one of
// the set already has: the hub would apply only one of them.
func duplicates(set []schema.Resource) []string {
	type key struct {
		kind schema.Kind
		name string
	}
	first := map[key]schema.Source{}
	var problems []string
	for _, r := range set {
		k := key{r.Kind, r.Metadata.Name}
		prev, dup := first[k]
		if !dup {
			first[k] = r.Source
			continue
		}
		e := &schema.FieldError{File: r.Source.File, Document: r.Source.Document, Field: "metadata.name",
			Message: fmt.Sprintf("duplicate %s %q (first defined in %s document %d)", r.Kind, r.Metadata.Name, prev.File, prev.Document)}
		problems = append(problems, e.Error())
	}
	return problems
}

// decodeFile decodes and validates the documents of one file as the hub
// does: what `get -o yaml` prints carries read-only metadata (version,
// timestamps), which the hub ignores on apply, and so do the CLI's checks.
func decodeFile(file string, data []byte) ([]schema.Resource, error) {
	rs, _, err := schema.DecodeDocuments(file, data)
	return rs, err
}
