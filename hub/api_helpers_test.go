package hub

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// answer is one HTTP answer of the hub.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// errorBody is the error envelope with its details.
type errorBody struct {
	Error *struct {
		Code    string        `json:"code"`
		Message string        `json:"message"`
		Field   string        `json:"field"`
		Details []ErrorDetail `json:"details"`
	} `json:"error"`
}

// raw sends body with contentType ("" for none) and returns the answer.
func (c *client) raw(method, path, contentType string, body []byte) answer {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: data}
}

// ok sends body and decodes a status answer into out, failing the test on
// any other status.
func (c *client) ok(method, path, contentType string, body []byte, status int, out any) {
	c.t.Helper()
	a := c.raw(method, path, contentType, body)
	if a.status != status {
		c.t.Fatalf("%s %s: %d %s; want %d", method, path, a.status, a.body, status)
	}
	if out != nil {
		if err := json.Unmarshal(a.body, out); err != nil {
			c.t.Fatalf("%s %s: decode %s: %v", method, path, a.body, err)
		}
	}
}

// fails sends body and returns the error envelope of an answer with status,
// failing the test on any other status or on a body that is not one.
func (c *client) fails(method, path, contentType string, body []byte, status int) errorBody {
	c.t.Helper()
	a := c.raw(method, path, contentType, body)
	var e errorBody
	if err := json.Unmarshal(a.body, &e); err != nil || e.Error == nil || e.Error.Code == "" || e.Error.Message == "" {
		c.t.Fatalf("%s %s: %d %s: not an error body", method, path, a.status, a.body)
	}
	if a.status != status {
		c.t.Fatalf("%s %s: %d %s; want %d", method, path, a.status, a.body, status)
	}
	return e
}

// loggedIn starts a hub and returns a client logged in as admin.
func loggedIn(t *testing.T) (*Server, *client) {
	t.Helper()
	dir := t.TempDir()
	s := startHub(t, testConfig(t, dir))
	c := newClient(t, s)
	c.login(dir)
	return s, c
}

func jsonBody(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
