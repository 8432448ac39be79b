package testenv

import (
	"fmt"
	"io"
	"net/http"
	"testing"
)

func TestStartNginxServes(t *testing.T) {
	port := FreePort(t)
	StartNginx(t, fmt.Sprintf(`server { listen 127.0.0.1:%d; location / { return 200 "hello from nginx"; } }`, port), port)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "hello from nginx" {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, "hello from nginx")
	}
}
