package schema

import (
	"slices"

	"go.yaml.in/yaml/v3"
)

// readOnlyMetadata are the metadata fields the API adds to stored resources
// (docs/api.md, Resources): what a GET returns or `nxmesh get -o yaml`
// prints carries them, and may be edited and sent back.
var readOnlyMetadata = []string{"version", "createdAt", "updatedAt"}

// DecodeDocuments is Decode for documents as the API and the CLI read them:
// a top-level sequence (a JSON array of documents), or the API's list
// shape (a mapping whose only key is "items", holding a sequence: what
// `nxmesh get KINDs -o yaml` prints), is one document per element, and
// the read-only metadata fields are allowed. versions[i] is
// the metadata.version resources[i] carried (the version it is based on),
// 0 where it had none; the timestamps are ignored. A version that is not a
// non-negative integer, or a read-only field given twice, is an error like
// any other; every other unknown field is still refused.
func DecodeDocuments(file string, data []byte) (resources []Resource, versions []int64, err error) {
	l := &errorList{file: file}
	docs, ok := parseFile(l, data)
	if !ok {
		return nil, nil, l.err()
	}
	if len(docs) == 1 {
		if items := listItems(docs[0]); items != nil {
			docs[0] = items
		}
	}
	if len(docs) == 1 && docs[0].Kind == yaml.SequenceNode {
		docs = docs[0].Content
		if len(docs) > maxDocuments {
			l.add("", "%d documents; at most %d are accepted", len(docs), maxDocuments)
			return nil, nil, l.err()
		}
	}
	byDoc := make([]int64, len(docs))
	for i, n := range docs {
		l.doc = i + 1
		byDoc[i] = takeReadOnly(l, n)
	}
	if err := l.err(); err != nil {
		return nil, nil, err
	}
	resources = decodeDocs(l, file, docs)
	if err := l.err(); err != nil {
		return nil, nil, err
	}
	versions = make([]int64, len(resources))
	for i, r := range resources {
		versions[i] = byDoc[r.Source.Document-1]
	}
	return resources, versions, nil
}

// listItems is the sequence of n when n is the API's list shape, a
// mapping whose only key is "items" and whose value is a sequence; else
// nil. A resource always has a kind, so no resource has this shape.
func listItems(n *yaml.Node) *yaml.Node {
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		return nil
	}
	k, v := n.Content[0], n.Content[1]
	if k.Kind != yaml.ScalarNode || k.Tag != "!!str" || k.Value != "items" || v.Kind != yaml.SequenceNode {
		return nil
	}
	return v
}

// takeReadOnly takes the read-only fields out of the metadata of document
// n, reporting a bad or repeated one to l, and returns its version (0 when
// absent or null).
func takeReadOnly(l *errorList, n *yaml.Node) (version int64) {
	if n.Kind != yaml.MappingNode {
		return 0
	}
	var meta *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Tag == "!!str" && k.Value == "metadata" {
			meta = n.Content[i+1]
			break
		}
	}
	if meta == nil || meta.Kind != yaml.MappingNode {
		return 0
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
			l.add(field, "duplicate key")
			continue
		}
		seen[k.Value] = true
		if k.Value != "version" || isNull(v) {
			continue
		}
		if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || v.Decode(&version) != nil || version < 0 {
			l.add(field, "must be a non-negative integer: the version the document is based on")
			version = 0
		}
	}
	meta.Content = kept
	return version
}
