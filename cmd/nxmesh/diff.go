package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

type diffCmd struct {
	workspaceFlags `embed:""`

	From int64 `arg:"" name:"REV1" help:"The older revision."`
	To   int64 `arg:"" name:"REV2" help:"The newer revision."`
}

func (c *diffCmd) Help() string {
	return "Prints what changed between two revisions of the workspace, resource by resource, in the format of the apply plan: + created, ~ changed (with a line diff of the YAML), - removed. Private keys are shown only as a fingerprint."
}

func (c *diffCmd) Run(ctx context.Context, g *Globals) error {
	return loginHint(c.run(ctx, g))
}

func (c *diffCmd) run(ctx context.Context, g *Globals) error {
	api, err := newAPIClient(c.hubFlags, true)
	if err != nil {
		return err
	}
	var out struct {
		From    int64       `json:"from"`
		To      int64       `json:"to"`
		Entries []diffEntry `json:"entries"`
	}
	path := fmt.Sprintf("%s/revisions/%d/diff?from=%d", c.path(), c.To, c.From)
	if err := api.do(ctx, "GET", path, nil, &out); err != nil {
		return err
	}
	if len(out.Entries) == 0 {
		_, err := fmt.Fprintf(g.stdout, "no differences between revisions %d and %d\n", out.From, out.To)
		return err
	}
	fmt.Fprintf(g.stdout, "revision %d -> %d:\n\n", out.From, out.To)
	if err := printChanges(g.stdout, out.Entries); err != nil {
		return err
	}
	_, err = fmt.Fprintf(g.stdout, "\n%s\n", changeSummary(out.Entries, "", "created", "changed", "removed"))
	return err
}

// diffEntry is one resource's change, as the apply, rollback and diff
// routes describe it. Old is null for an added resource, New for a removed
// one.
type diffEntry struct {
	Kind string          `json:"kind"`
	Name string          `json:"name"`
	Op   string          `json:"op"`
	Old  json.RawMessage `json:"old"`
	New  json.RawMessage `json:"new"`
}

// Ops of a diffEntry.
const (
	opAdded   = "added"
	opChanged = "changed"
	opRemoved = "removed"
)

// printChanges prints each entry as a header line (+ created, ~ changed,
// - removed) and the line diff of its YAML, indented under it.
func printChanges(w io.Writer, entries []diffEntry) error {
	for i, e := range entries {
		if i > 0 {
			fmt.Fprintln(w)
		}
		before, err := diffText(e.Old)
		if err != nil {
			return fmt.Errorf("%s %s: %w", e.Kind, e.Name, err)
		}
		after, err := diffText(e.New)
		if err != nil {
			return fmt.Errorf("%s %s: %w", e.Kind, e.Name, err)
		}
		fmt.Fprintf(w, "%s %s %s (%s)\n", opSign(e.Op), e.Kind, e.Name, opWord(e.Op))
		for _, l := range unifiedDiff(before, after, 3) {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
	return nil
}

func opSign(op string) string {
	switch op {
	case opAdded:
		return "+"
	case opRemoved:
		return "-"
	}
	return "~"
}

func opWord(op string) string {
	if op == opAdded {
		return "created"
	}
	return op
}

// changeSummary counts the entries by op: "3 changes: 1 created, 1 changed,
// 1 removed". prefix goes before the counts, as in "Plan: ".
func changeSummary(entries []diffEntry, prefix, added, changed, removed string) string {
	var n [3]int
	for _, e := range entries {
		switch e.Op {
		case opAdded:
			n[0]++
		case opRemoved:
			n[2]++
		default:
			n[1]++
		}
	}
	return fmt.Sprintf("%s%d %s, %d %s, %d %s.", prefix, n[0], added, n[1], changed, n[2], removed)
}

// diffText renders a resource for diffing: YAML lines in the hub's field
// order, without the bookkeeping fields every change touches (version and
// timestamps) and with private keys replaced by a fingerprint, so that a
// plan can be pasted into a ticket or kept in a CI log. null is no lines.
func diffText(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	n, err := yamlNode(raw)
	if err != nil {
		return nil, err
	}
	if meta := mapValue(n, "metadata"); meta != nil {
		for _, k := range []string{"version", "createdAt", "updatedAt"} {
			deleteKey(meta, k)
		}
	}
	if spec := mapValue(n, "spec"); spec != nil {
		if key := mapValue(spec, "privateKey"); key != nil && key.Kind == yaml.ScalarNode && key.Value != "" {
			sum := sha256.Sum256([]byte(key.Value))
			key.Value, key.Style = "(redacted, sha256 "+hex.EncodeToString(sum[:6])+")", 0
		}
	}
	out, err := encodeYAML(n)
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(string(out), "\n"), "\n"), nil
}

// mapValue returns the value of key in mapping n, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// deleteKey removes key and its value from mapping n.
func deleteKey(n *yaml.Node, key string) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			n.Content = append(n.Content[:i], n.Content[i+2:]...)
			return
		}
	}
}

// maxDiffCells bounds the LCS table (int32 cells): past it, the changed
// middle of the two texts is shown as all removed, then all added.
const maxDiffCells = 4 << 20

// lineDiff returns the edit script from a to b: each line prefixed with
// ' ' (kept), '-' (only in a) or '+' (only in b). It trims the common head
// and tail, then takes a longest common subsequence of the rest.
func lineDiff(a, b []string) []string {
	head := 0
	for head < len(a) && head < len(b) && a[head] == b[head] {
		head++
	}
	tail := 0
	for tail < len(a)-head && tail < len(b)-head && a[len(a)-1-tail] == b[len(b)-1-tail] {
		tail++
	}
	out := make([]string, 0, len(a)+len(b))
	for _, l := range a[:head] {
		out = append(out, " "+l)
	}
	out = append(out, lcsDiff(a[head:len(a)-tail], b[head:len(b)-tail])...)
	for _, l := range a[len(a)-tail:] {
		out = append(out, " "+l)
	}
	return out
}

// lcsDiff is lineDiff's middle part, by dynamic programming.
func lcsDiff(a, b []string) []string {
	var out []string
	if (len(a)+1)*(len(b)+1) > maxDiffCells {
		for _, l := range a {
			out = append(out, "-"+l)
		}
		for _, l := range b {
			out = append(out, "+"+l)
		}
		return out
	}
	// lcs[i][j] is the LCS length of a[i:] and b[j:].
	w := len(b) + 1
	lcs := make([]int32, (len(a)+1)*w)
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i*w+j] = lcs[(i+1)*w+j+1] + 1
			} else {
				lcs[i*w+j] = max(lcs[(i+1)*w+j], lcs[i*w+j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			out = append(out, " "+a[i])
			i, j = i+1, j+1
		case j == len(b) || (i < len(a) && lcs[(i+1)*w+j] >= lcs[i*w+j+1]):
			out = append(out, "-"+a[i])
			i++
		default:
			out = append(out, "+"+b[j])
			j++
		}
	}
	return out
}

// unifiedDiff returns lineDiff's script in hunks with context lines of
// context around each change, under "@@ -l,n +l,n @@" headers. A text that
// is wholly added or removed is one block without a header.
func unifiedDiff(a, b []string, context int) []string {
	script := lineDiff(a, b)
	if len(a) == 0 || len(b) == 0 {
		return script
	}
	var out []string
	for start := 0; start < len(script); {
		first := nextChange(script, start)
		if first == len(script) {
			break
		}
		lo := max(first-context, start)
		hi := hunkEnd(script, first, context)
		out = append(out, hunkHeader(script, lo, hi))
		out = append(out, script[lo:hi]...)
		start = hi
	}
	return out
}

// nextChange returns the index of the first changed line at or after i.
func nextChange(script []string, i int) int {
	for i < len(script) && script[i][0] == ' ' {
		i++
	}
	return i
}

// hunkEnd returns the end of the hunk that starts changing at first: it
// extends while the next change is within 2*context kept lines.
func hunkEnd(script []string, first, context int) int {
	end := first
	for {
		for end < len(script) && script[end][0] != ' ' {
			end++
		}
		next := nextChange(script, end)
		if next == len(script) || next-end > 2*context {
			return min(end+context, len(script))
		}
		end = next
	}
}

// hunkHeader numbers the lines of script[lo:hi] in the old and new texts.
func hunkHeader(script []string, lo, hi int) string {
	oldLine, newLine := 1, 1
	for _, l := range script[:lo] {
		if l[0] != '+' {
			oldLine++
		}
		if l[0] != '-' {
			newLine++
		}
	}
	oldN, newN := 0, 0
	for _, l := range script[lo:hi] {
		if l[0] != '+' {
			oldN++
		}
		if l[0] != '-' {
			newN++
		}
	}
	return fmt.Sprintf("@@ -%s +%s @@", lineRange(oldLine, oldN), lineRange(newLine, newN))
}

// lineRange is "l,n" as diff -u writes it: "l" alone when n is 1, and the
// line before when n is 0.
func lineRange(l, n int) string {
	switch n {
	case 0:
		return strconv.Itoa(l-1) + ",0"
	case 1:
		return strconv.Itoa(l)
	}
	return strconv.Itoa(l) + "," + strconv.Itoa(n)
}
