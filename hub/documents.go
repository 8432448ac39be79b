package hub

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"

	"github.com/nxmesh/nxmesh/schema"
)

// documentTypes are the media types a body of documents may have; an
// absent Content-Type is read as YAML, of which JSON is a subset.
var documentTypes = []string{"application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}

// readDocuments reads a request body of resource documents (YAML, JSON, or
// a JSON array of documents), at most maxBodyBytes, and decodes it with
// schema.DecodeDocuments, so errors name the document and field.
// versions[i] is the metadata.version resources[i] carried, 0 where it had
// none.
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
	return schema.DecodeDocuments("", data)
}
