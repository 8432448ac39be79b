package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"
)

// Output formats of the commands that print API objects.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

// printObject prints one API object, given as the hub's JSON, as indented
// JSON or as YAML with the hub's field order.
func printObject(w io.Writer, format string, raw json.RawMessage) error {
	if format == formatYAML {
		out, err := jsonToYAML(raw)
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("format the hub's answer: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// printList prints items as the API's list shape, {"items": [...]}.
func printList(w io.Writer, format string, items []json.RawMessage) error {
	if items == nil {
		items = []json.RawMessage{}
	}
	raw, err := json.Marshal(struct {
		Items []json.RawMessage `json:"items"`
	}{items})
	if err != nil {
		return err
	}
	return printObject(w, format, raw)
}

// jsonToYAML converts JSON to block-style YAML, keeping the order of object
// keys (which a map would lose) and quoting strings that would read as
// another type.
func jsonToYAML(raw json.RawMessage) ([]byte, error) {
	n, err := yamlNode(raw)
	if err != nil {
		return nil, err
	}
	return encodeYAML(n)
}

// encodeYAML writes n as YAML indented by two spaces, as people write it.
func encodeYAML(n *yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("format as YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// yamlNode parses JSON (being YAML) into a node tree in block style.
func yamlNode(raw json.RawMessage) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("read the hub's answer: %w", err)
	}
	n := &doc
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	blockStyle(n)
	return n, nil
}

// blockStyle clears the flow and quoting styles JSON input comes with. The
// parser has tagged every scalar, so a string such as "8080" stays quoted.
func blockStyle(n *yaml.Node) {
	if n.Style&(yaml.FlowStyle|yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		n.Style = 0
	}
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "\n") {
		n.Style = yaml.LiteralStyle // PEM blocks and nginx output read as text
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// table writes aligned columns: a header row, then one row per call.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)}
	t.row(header...)
	return t
}

// row adds a row; tabs and newlines in cells are replaced so that they
// cannot break the columns.
func (t *table) row(cells ...string) {
	clean := make([]string, len(cells))
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		clean[i] = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(c)
	}
	fmt.Fprintln(t.tw, strings.Join(clean, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// age formats how long before now t was, as kubectl does: 45s, 12m, 3h, 5d.
// The zero time is "-" (never).
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// labelList formats labels as k=v pairs sorted by key.
func labelList(labels map[string]string) string {
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

// firstFew joins at most n items and says how many more there are.
func firstFew(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ",")
	}
	return fmt.Sprintf("%s (+%d more)", strings.Join(items[:n], ","), len(items)-n)
}
