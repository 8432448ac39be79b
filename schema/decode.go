package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Input limits. The YAML parser has its own depth limit (10000); ours is far
// lower because no valid document nests more than a few levels, and the
// strict decoder never descends into fields it does not know.
const (
	// MaxFileSize is the largest input Decode, DecodeSpec and
	// Resource.UnmarshalJSON accept.
	MaxFileSize = 8 << 20
	// maxDocuments bounds the number of documents in one file.
	maxDocuments = 10000
	// maxDepth bounds how deep the strict decoder descends.
	maxDepth = 32
)

// Decode parses a file of one or more YAML documents separated by "---" (JSON
// is accepted too, being YAML) into resources, and validates each of them.
//
// Decoding is strict: unknown fields, duplicate keys, type mismatches,
// aliases (anchors may be declared but never referenced, which rules out
// "billion laughs" expansion) and tags other than the core schema's are
// errors, each naming its path. Documents that are empty (only comments, or
// nothing between two "---") are skipped, but they still count when
// numbering documents, as YAML does: in "a\n---\n---\nb" b is document 3.
// Every document is decoded and validated before Decode returns, so the
// returned Errors lists every problem of the file (up to 50). A YAML syntax
// error stops decoding at that document.
//
// On error Decode returns no resources. Cross-resource rules (duplicate
// names, references) are ValidateSet's job.
func Decode(file string, data []byte) ([]Resource, error) {
	l := &errorList{file: file}
	docs, ok := parseFile(l, data)
	if !ok {
		return nil, l.err()
	}
	out := decodeDocs(l, file, docs)
	if err := l.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// parseFile splits data into document root nodes, reporting a file over
// MaxFileSize or a YAML syntax error to l.
func parseFile(l *errorList, data []byte) ([]*yaml.Node, bool) {
	if len(data) > MaxFileSize {
		l.add("", "file is %d bytes; at most %d are accepted", len(data), MaxFileSize)
		return nil, false
	}
	docs, err := parseYAML(data)
	if err != nil {
		l.doc = len(docs) + 1
		l.add("", "%s", err.Error())
		return nil, false
	}
	return docs, true
}

// decodeDocs decodes and validates each document (document i+1 is
// docs[i]), reporting every problem to l; it returns the resources of the
// documents without problems.
func decodeDocs(l *errorList, file string, docs []*yaml.Node) []Resource {
	var out []Resource
	for i, n := range docs {
		l.doc = i + 1
		if isNull(n) {
			continue
		}
		r := Resource{Source: Source{File: file, Document: l.doc}}
		before := len(l.errs)
		d := &decoder{errs: l}
		d.resource(n, &r)
		// Validation errors at or under a path that already failed to decode
		// would only repeat the problem ("required" after "expected integer").
		failed := make([]string, 0, len(l.errs)-before)
		for _, e := range l.errs[before:] {
			failed = append(failed, e.Field)
		}
		vl := &errorList{file: file, doc: l.doc}
		r.validate(vl)
		for _, e := range vl.errs {
			if !under(e.Field, failed) {
				l.add(e.Field, "%s", e.Message)
			}
		}
		if len(l.errs) == before {
			out = append(out, r)
		}
	}
	return out
}

// under reports whether field is one of paths or lies below one of them.
func under(field string, paths []string) bool {
	for _, p := range paths {
		if p == "" || field == p || strings.HasPrefix(field, p+".") || strings.HasPrefix(field, p+"[") {
			return true
		}
	}
	return false
}

// DecodeSpec decodes the JSON form of a spec of the given kind, as the store
// reads it back, with the same strict rules as Decode (paths in errors start
// with "spec"). It does not validate the spec.
func DecodeSpec(kind Kind, data []byte) (Spec, error) {
	l := &errorList{}
	spec := newSpec(kind)
	if spec == nil {
		l.add("kind", "%s", unknownKind(kind))
		return nil, l.err()
	}
	n, ok := parseJSON(l, "spec", data)
	if !ok {
		return nil, l.err()
	}
	d := &decoder{errs: l}
	d.value(n, reflect.ValueOf(spec).Elem(), "spec", 1)
	if err := l.err(); err != nil {
		return nil, err
	}
	return spec, nil
}

// MarshalJSON encodes the resource with its spec as a JSON object.
func (r Resource) MarshalJSON() ([]byte, error) {
	type plain Resource // drops the methods, so no recursion
	return json.Marshal(plain(r))
}

// UnmarshalJSON decodes a resource with the strict rules of Decode, typing
// spec by kind. It does not validate the resource; Source is left empty.
func (r *Resource) UnmarshalJSON(data []byte) error {
	l := &errorList{}
	n, ok := parseJSON(l, "", data)
	if !ok {
		return l.err()
	}
	var out Resource
	d := &decoder{errs: l}
	d.resource(n, &out)
	if newSpec(out.Kind) == nil && len(l.errs) == 0 {
		l.add("kind", "%s", unknownKind(out.Kind))
	}
	if err := l.err(); err != nil {
		return err
	}
	*r = out
	return nil
}

// parseJSON checks that data is one JSON value and parses it as YAML (of
// which JSON is a subset), so that JSON gets the same strict decoder.
func parseJSON(l *errorList, field string, data []byte) (*yaml.Node, bool) {
	if len(data) > MaxFileSize {
		l.add(field, "input is %d bytes; at most %d are accepted", len(data), MaxFileSize)
		return nil, false
	}
	if !json.Valid(data) {
		l.add(field, "invalid JSON")
		return nil, false
	}
	docs, err := parseYAML(data)
	if err != nil {
		l.add(field, "%s", err.Error())
		return nil, false
	}
	if len(docs) != 1 {
		l.add(field, "expected one JSON value, got %d", len(docs))
		return nil, false
	}
	return docs[0], true
}

// parseYAML splits data into documents and returns each document's root
// node. On a syntax error it returns the documents before the bad one.
func parseYAML(data []byte) (docs []*yaml.Node, err error) {
	defer func() {
		// The parser is not ours; a panic in it must not take a daemon down.
		if p := recover(); p != nil {
			err = fmt.Errorf("yaml: cannot parse input: %v", p)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, err
		}
		if len(docs) == maxDocuments {
			return docs, fmt.Errorf("too many documents; at most %d are accepted", maxDocuments)
		}
		root := &n
		if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
			root = n.Content[0]
		}
		docs = append(docs, root)
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// newSpec returns a new, empty spec for kind, or nil for an unknown kind.
func newSpec(kind Kind) Spec {
	switch kind {
	case KindUpstream:
		return &UpstreamSpec{}
	case KindVirtualHost:
		return &VirtualHostSpec{}
	case KindCertificate:
		return &CertificateSpec{}
	}
	return nil
}

func unknownKind(k Kind) string {
	names := make([]string, len(Kinds))
	for i, k := range Kinds {
		names[i] = string(k)
	}
	if k == "" {
		return "required; must be one of " + strings.Join(names, ", ")
	}
	return fmt.Sprintf("unknown kind %s; must be one of %s", quote(string(k)), strings.Join(names, ", "))
}

// decoder is a strict, path-tracking decoder from yaml.Node to the schema's
// Go types, driven by their json tags. It reports every problem it finds to
// errs and keeps going, leaving a field that fails at its zero value.
type decoder struct {
	errs *errorList
}

// resource decodes a whole document. apiVersion and kind are only decoded
// here; their values are checked by Validate. The spec is decoded into the
// concrete type of the kind, after all other keys, so key order is free.
func (d *decoder) resource(n *yaml.Node, r *Resource) {
	if !d.check(n, "", 0) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errs.add("", "document must be a mapping with apiVersion, kind, metadata and spec, got %s", nodeType(n))
		return
	}
	var spec *yaml.Node
	d.mapping(n, "", 0, func(key string, v *yaml.Node, path string) {
		switch key {
		case "apiVersion":
			d.value(v, reflect.ValueOf(&r.APIVersion).Elem(), path, 1)
		case "kind":
			d.value(v, reflect.ValueOf(&r.Kind).Elem(), path, 1)
		case "metadata":
			d.value(v, reflect.ValueOf(&r.Metadata).Elem(), path, 1)
		case "spec":
			spec = v
		default:
			d.errs.add(path, "unknown field")
		}
	})
	if spec == nil || isNull(spec) {
		return
	}
	s := newSpec(r.Kind)
	if s == nil {
		return // Validate reports the kind; the spec cannot be typed.
	}
	// A partly decoded spec is kept so that Validate can still report
	// problems in the fields that did decode.
	d.value(spec, reflect.ValueOf(s).Elem(), "spec", 1)
	r.Spec = s
}

// check rejects what no field accepts: aliases, foreign tags and too much
// depth. It reports whether decoding n may go on.
func (d *decoder) check(n *yaml.Node, path string, depth int) bool {
	switch {
	case depth > maxDepth:
		d.errs.add(path, "nested too deeply; at most %d levels are allowed", maxDepth)
		return false
	case n.Kind == yaml.AliasNode:
		d.errs.add(path, "YAML aliases (*%s) are not allowed; repeat the value instead", n.Value)
		return false
	case n.Kind == yaml.DocumentNode:
		d.errs.add(path, "unexpected nested document")
		return false
	}
	switch n.Tag {
	case "!!str", "!!int", "!!bool", "!!float", "!!null", "!!map", "!!seq":
		return true
	case "!!merge":
		d.errs.add(path, "YAML merge keys (<<) are not allowed")
		return false
	}
	d.errs.add(path, "YAML tag %s is not allowed", quote(n.Tag))
	return false
}

// mapping walks the pairs of a mapping node, rejecting keys that are not
// strings and keys that repeat, and calls f for each remaining pair.
func (d *decoder) mapping(n *yaml.Node, path string, depth int, f func(key string, v *yaml.Node, path string)) {
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !d.check(k, path, depth+1) {
			continue
		}
		if k.Kind != yaml.ScalarNode || k.Tag != "!!str" {
			d.errs.add(path, "mapping keys must be strings, got %s", nodeType(k))
			continue
		}
		kp := joinKey(path, k.Value)
		if seen[k.Value] {
			d.errs.add(kp, "duplicate key")
			continue
		}
		seen[k.Value] = true
		f(k.Value, v, kp)
	}
}

// value decodes n into v, which is addressable. It reports whether it
// succeeded without error.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string, depth int) bool {
	if !d.check(n, path, depth) {
		return false
	}
	if isNull(n) {
		// Like encoding/json: null leaves the zero value; Validate decides
		// whether the field was required.
		v.SetZero()
		return true
	}
	switch v.Kind() {
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		ok := d.value(n, p.Elem(), path, depth)
		v.Set(p) // even when partial: Validate reports the other fields
		return ok
	case reflect.Struct:
		if !d.want(n, yaml.MappingNode, "mapping", path) {
			return false
		}
		fields := jsonFields(v.Type())
		ok := true
		d.mapping(n, path, depth, func(key string, c *yaml.Node, kp string) {
			i, known := fields[key]
			if !known {
				d.errs.add(kp, "unknown field")
				ok = false
				return
			}
			if !d.value(c, v.Field(i), kp, depth+1) {
				ok = false
			}
		})
		return ok
	case reflect.Slice:
		if !d.want(n, yaml.SequenceNode, "sequence", path) {
			return false
		}
		if len(n.Content) == 0 {
			// Empty and missing lists are the same thing, so that a value
			// survives a JSON round trip through omitempty unchanged.
			v.SetZero()
			return true
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		ok := true
		for i, c := range n.Content {
			if !d.value(c, s.Index(i), path+"["+strconv.Itoa(i)+"]", depth+1) {
				ok = false
			}
		}
		v.Set(s)
		return ok
	case reflect.Map:
		if !d.want(n, yaml.MappingNode, "mapping", path) {
			return false
		}
		if len(n.Content) == 0 {
			v.SetZero()
			return true
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		ok := true
		d.mapping(n, path, depth, func(key string, c *yaml.Node, kp string) {
			e := reflect.New(v.Type().Elem()).Elem()
			if !d.value(c, e, kp, depth+1) {
				ok = false
				return
			}
			m.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), e)
		})
		v.Set(m)
		return ok
	case reflect.String:
		// A Size may be written as a plain number ("512"); every other
		// string must be a YAML string, so that `name: 0123` or `on: true`
		// does not silently become something the author did not write.
		if n.Kind == yaml.ScalarNode && (n.Tag == "!!str" || n.Tag == "!!int" && v.Type() == reflect.TypeFor[Size]() && plainInt.MatchString(n.Value)) {
			v.SetString(n.Value)
			return true
		}
		return d.mismatch(n, "string", path)
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			return d.mismatch(n, "integer", path)
		}
		if !plainInt.MatchString(n.Value) {
			d.errs.add(path, "%s is not a decimal integer", quote(n.Value))
			return false
		}
		i, err := strconv.ParseInt(n.Value, 10, 0)
		if err != nil {
			d.errs.add(path, "integer %s is out of range", quote(n.Value))
			return false
		}
		v.SetInt(i)
		return true
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			return d.mismatch(n, "boolean", path)
		}
		switch n.Value {
		case "true", "True", "TRUE":
			v.SetBool(true)
		case "false", "False", "FALSE":
			v.SetBool(false)
		default:
			return d.mismatch(n, "boolean", path)
		}
		return true
	}
	// Only reachable if resource.go gains a field of a new Go kind.
	d.errs.add(path, "cannot decode into %s", v.Type())
	return false
}

// plainInt is the integer syntax we accept: decimal, as in JSON (YAML would
// also take 0x1F, 0o17 and +5, which a reader may misread).
var plainInt = regexp.MustCompile(`^-?[0-9]+$`)

func (d *decoder) want(n *yaml.Node, kind yaml.Kind, name, path string) bool {
	if n.Kind == kind {
		return true
	}
	return d.mismatch(n, name, path)
}

func (d *decoder) mismatch(n *yaml.Node, want, path string) bool {
	got := nodeType(n)
	if want == "string" && n.Kind == yaml.ScalarNode {
		d.errs.add(path, "expected string, got %s (quote the value)", got)
	} else {
		d.errs.add(path, "expected %s, got %s", want, got)
	}
	return false
}

// nodeType names the type of a node for error messages.
func nodeType(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "sequence"
	case yaml.AliasNode:
		return "alias"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return "string"
		case "!!int":
			return "integer"
		case "!!bool":
			return "boolean"
		case "!!float":
			return "number"
		case "!!null":
			return "null"
		}
		return "scalar"
	}
	return "document"
}

// jsonFields maps a struct's JSON names to field indexes. Fields without a
// name or tagged "-" are not decoded.
func jsonFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		m[name] = i
	}
	return m
}

// joinKey appends a mapping key to a path: ".key" for simple keys, `["key"]`
// for anything else (label keys with dots, hostile keys with newlines).
func joinKey(path, key string) string {
	if simpleKey.MatchString(key) {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	return path + "[" + quote(key) + "]"
}

var simpleKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]{0,63}$`)
