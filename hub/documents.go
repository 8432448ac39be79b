package hub

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/nxmesh/nxmesh/schema"
)

// documentTypes are the media types a body of documents may have; an
// absent Content-Type is read as YAML, of which JSON is a subset.
var documentTypes = []string{"application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}

// readDocuments reads a request body of resource documents (YAML, JSON, or
// a JSON array of documents), at most maxBodyBytes, and decodes it with
// schema.Decode, so errors name the document and field. versions[i] is the
// metadata.version resources[i] carried, 0 where it had none.
func readDocuments(w http.ResponseWriter, r *http.Request) (resources []schema.Resource, versions []int64, err error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !slices.Contains(documentTypes, mt) {
			return nil, nil, Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "",
				"documents must be application/yaml or application/json, not %s", ct)
		}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, nil, Errorf(http.StatusRequestEntityTooLarge, "too_large", "", "request body exceeds %d bytes", tooBig.Limit)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read request body: %w", err)
	}
	data, byDoc, err := PrepareDocuments(data)
	if err != nil {
		return nil, nil, err
	}
	resources, err = schema.Decode("", data)
	if err != nil {
		return nil, nil, err
	}
	versions = make([]int64, len(resources))
	for i, res := range resources {
		if d := res.Source.Document; d > 0 && d <= len(byDoc) {
			versions[i] = byDoc[d-1]
		}
	}
	return resources, versions, nil
}

// readOnlyMetadata are the metadata fields the API adds to stored resources
// (docs/api.md, Resources). A document may carry them, so that what a GET
// returns can be edited and sent back.
var readOnlyMetadata = []string{"version", "createdAt", "updatedAt"}

// maxBodyDocuments bounds the documents PrepareDocuments splits a body
// into; schema.Decode refuses more than this anyway.
const maxBodyDocuments = 10000

// PrepareDocuments turns a request body into what schema.Decode reads: a
// top-level sequence (a JSON array of documents) becomes one document per
// element, and the read-only metadata fields are taken out, so that the
// strict decoder still refuses every other unknown field. versions[i] is
// the metadata.version of document i+1, 0 where it has none. The CLI runs
// its files through it too, so that what `nxmesh get -o yaml` prints can
// be edited and applied.
//
// A body that needs neither change is returned as it is, and so is one
// that does not parse: schema.Decode then reports its problems, YAML syntax
// included, on the bytes the client sent. Otherwise the documents are
// encoded again from the parsed nodes, which keeps every value, tag, style,
// anchor and alias, so schema.Decode sees and refuses what it would have
// refused in the original.
func PrepareDocuments(data []byte) (out []byte, versions []int64, err error) {
	docs, err := parseNodes(data)
	if err != nil {
		return data, nil, nil
	}
	changed := false
	if len(docs) == 1 && docs[0].Kind == yaml.SequenceNode {
		docs, changed = docs[0].Content, true
		if len(docs) > maxBodyDocuments {
			return nil, nil, Errorf(http.StatusBadRequest, "invalid", "", "%d documents; at most %d are accepted", len(docs), maxBodyDocuments)
		}
	}
	versions = make([]int64, len(docs))
	var errs schema.Errors
	for i, n := range docs {
		v, stripped, fe := stripReadOnly(n)
		if fe != nil {
			fe.Document = i + 1
			errs = append(errs, fe)
		}
		versions[i], changed = v, changed || stripped
	}
	if len(errs) > 0 {
		return nil, nil, errs
	}
	if !changed {
		return data, versions, nil
	}
	var buf bytes.Buffer
	for i, n := range docs {
		if i > 0 {
			buf.WriteString("---\n")
		}
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			// An empty document encodes to nothing, which would renumber
			// the documents after it.
			buf.WriteString("null\n")
			continue
		}
		if err := encodeNode(&buf, n); err != nil {
			return nil, nil, schema.Errors{{Document: i + 1, Message: err.Error()}}
		}
	}
	return buf.Bytes(), versions, nil
}

// stripReadOnly takes the read-only fields out of the metadata of document
// n and returns its version (0 if absent or null) and whether it changed
// n.
func stripReadOnly(n *yaml.Node) (version int64, changed bool, _ *schema.FieldError) {
	if n.Kind != yaml.MappingNode {
		return 0, false, nil
	}
	var meta *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Tag == "!!str" && k.Value == "metadata" {
			meta = n.Content[i+1]
			break
		}
	}
	if meta == nil || meta.Kind != yaml.MappingNode {
		return 0, false, nil
	}
	kept := meta.Content[:0:0]
	seen := map[string]bool{}
	for i := 0; i+1 < len(meta.Content); i += 2 {
		k, v := meta.Content[i], meta.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag != "!!str" || !slices.Contains(readOnlyMetadata, k.Value) {
			kept = append(kept, k, v)
			continue
		}
		field := "metadata." + k.Value
		if seen[k.Value] {
			return 0, false, &schema.FieldError{Field: field, Message: "duplicate key"}
		}
		seen[k.Value] = true
		if k.Value != "version" || v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			continue
		}
		if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || v.Decode(&version) != nil || version < 0 {
			return 0, false, &schema.FieldError{Field: field, Message: "must be a non-negative integer: the version the document is based on"}
		}
	}
	if len(kept) == len(meta.Content) {
		return version, false, nil
	}
	meta.Content = kept
	return version, true, nil
}

// parseNodes splits data into documents and returns each one's root node.
func parseNodes(data []byte) (docs []*yaml.Node, err error) {
	defer func() {
		// The parser is not ours; a panic in it must not take the hub down.
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
			return nil, err
		}
		if len(docs) == maxBodyDocuments {
			return nil, fmt.Errorf("more than %d documents", maxBodyDocuments)
		}
		root := &n
		if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
			root = n.Content[0]
		}
		docs = append(docs, root)
	}
}

// encodeNode writes n as one YAML document.
func encodeNode(w io.Writer, n *yaml.Node) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("yaml: cannot encode document: %v", p)
		}
	}()
	enc := yaml.NewEncoder(w)
	if err := enc.Encode(n); err != nil {
		return err
	}
	return enc.Close()
}
