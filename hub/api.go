package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
)

// maxBodyBytes bounds every JSON request body the API reads.
const maxBodyBytes = 8 << 20

// APIError is an error the API returns to clients as
// {"error":{"code","message","field"}} with Status. Internal errors never
// become an APIError: they are logged and the client sees a generic 500.
type APIError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// Details lists every problem when there are several, such as the
	// validation errors of the documents of an apply; Field and Message
	// describe the first.
	Details []ErrorDetail `json:"details,omitempty"`
}

// ErrorDetail is one problem of a request with several: a field of a
// document of the body (docs/api.md, Apply).
type ErrorDetail struct {
	File     string `json:"file"`
	Document int    `json:"document"`
	Field    string `json:"field"`
	Message  string `json:"message"`
}

func (e *APIError) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

// Errorf returns an *APIError with a formatted message.
func Errorf(status int, code, field, format string, args ...any) *APIError {
	return &APIError{Status: status, Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// handlerFunc is an API handler: it writes a response or returns an error
// that writeError renders, so every error body has one shape.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// errorMapper turns package errors (store, schema, pki) into API errors; it
// returns nil for errors it does not know, which become 500.
type errorMapper func(error) *APIError

// serveAPI adapts h to http.Handler, rendering its error with mapErr.
func serveAPI(log *slog.Logger, mapErr errorMapper, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			writeError(w, r, log, mapErr, err)
		}
	})
}

func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, mapErr errorMapper, err error) {
	var ae *APIError
	if !errors.As(err, &ae) && mapErr != nil {
		ae = mapErr(err)
	}
	if ae == nil {
		log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = &APIError{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error; the hub's log has the details"}
	}
	writeJSON(w, ae.Status, map[string]*APIError{"error": ae})
}

// writeJSON writes v as the JSON response body with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// decodeJSON reads a JSON request body into v, refusing unknown fields,
// trailing data and bodies over maxBodyBytes, with errors that name the field.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "", "request body must be application/json, not %s", ct)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Errorf(http.StatusBadRequest, "invalid_json", "", "request body has data after the JSON value")
	}
	return nil
}

func jsonError(err error) *APIError {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
		tooBig *http.MaxBytesError
	)
	switch {
	case errors.As(err, &tooBig):
		return Errorf(http.StatusRequestEntityTooLarge, "too_large", "", "request body exceeds %d bytes", tooBig.Limit)
	case errors.As(err, &syntax):
		return Errorf(http.StatusBadRequest, "invalid_json", "", "malformed JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return Errorf(http.StatusBadRequest, "invalid_json", typ.Field, "must be %s, not %s", typ.Type, typ.Value)
	case errors.Is(err, io.EOF):
		return Errorf(http.StatusBadRequest, "invalid_json", "", "request body is empty")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for unknown fields.
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return Errorf(http.StatusBadRequest, "unknown_field", field, "unknown field")
	default:
		return Errorf(http.StatusBadRequest, "invalid_json", "", "malformed JSON: %v", err)
	}
}
