package hub

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3.1 description of every route of apiRouteTable;
// TestOpenAPICoverage keeps the two in step.
//
//go:embed openapi.json
var openAPI []byte

// handleOpenAPI serves the OpenAPI document. It is public, like the
// documentation it is.
func handleOpenAPI(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(openAPI)
	return err
}
