package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// clientConfig is what `nxmesh login` keeps in $HOME/.config/nxmesh/config
// (or $XDG_CONFIG_HOME/nxmesh/config), mode 0600 because it holds a token.
type clientConfig struct {
	Hub    string `yaml:"hub"`
	CACert string `yaml:"caCert,omitempty"` // PEM of the hub's root CA
	Token  string `yaml:"token,omitempty"`
}

// hubFlags are the flags of every command that talks to a hub. Unset flags
// fall back to the saved config; NXMESH_HUB and NXMESH_TOKEN override both.
type hubFlags struct {
	Hub    string `help:"Hub API URL, such as https://hub.example:8443." env:"NXMESH_HUB"`
	CAFile string `help:"PEM file of the hub's root CA (the hub writes it to DATA_DIR/ca/root.pem)." env:"NXMESH_CA_FILE" type:"existingfile"`
	Token  string `help:"API token; defaults to the one saved by nxmesh login." env:"NXMESH_TOKEN"`
}

func clientConfigPath() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the config directory: %w", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "nxmesh", "config"), nil
}

func loadClientConfig() (clientConfig, error) {
	var cfg clientConfig
	p, err := clientConfigPath()
	if err != nil {
		return cfg, err
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, err
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return cfg, fmt.Errorf("read %s: %w", p, err)
	}
	return cfg, nil
}

func saveClientConfig(cfg clientConfig) (string, error) {
	p, err := clientConfigPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return "", err
	}
	return p, os.Rename(tmp, p)
}

// apiClient calls the hub's REST API.
type apiClient struct {
	base  *url.URL
	http  *http.Client
	token string
}

// newAPIClient builds a client from flags, then the saved config.
func newAPIClient(f hubFlags, needToken bool) (*apiClient, error) {
	cfg, err := loadClientConfig()
	if err != nil {
		return nil, err
	}
	hub, token, caPEM := cfg.Hub, cfg.Token, []byte(cfg.CACert)
	if f.Hub != "" {
		hub = f.Hub
	}
	if f.Token != "" {
		token = f.Token
	}
	if f.CAFile != "" {
		if caPEM, err = os.ReadFile(f.CAFile); err != nil {
			return nil, err
		}
	}
	if hub == "" {
		return nil, errors.New("no hub given: pass --hub URL or set NXMESH_HUB, or run nxmesh login first")
	}
	if needToken && token == "" {
		return nil, errors.New("not logged in: run nxmesh login, or pass --token / set NXMESH_TOKEN")
	}
	return newAPIClientFor(hub, caPEM, token)
}

func newAPIClientFor(hub string, caPEM []byte, token string) (*apiClient, error) {
	u, err := url.Parse(strings.TrimRight(hub, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("hub URL %q must look like https://host:port", hub)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("the hub CA file holds no PEM certificate")
		}
		tlsCfg.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	return &apiClient{base: u, http: &http.Client{Transport: tr, Timeout: 60 * time.Second}, token: token}, nil
}

// remoteError is an error body from the hub.
type remoteError struct {
	Status  int
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Field   string         `json:"field"`
	Details []remoteDetail `json:"details"`
}

// remoteDetail is one problem of an invalid request; Document is the
// 1-based position of the document in the request body.
type remoteDetail struct {
	File     string `json:"file"`
	Document int    `json:"document"`
	Field    string `json:"field"`
	Message  string `json:"message"`
}

func (e *remoteError) Error() string {
	if e.Field != "" && !strings.Contains(e.Message, e.Field+":") { // the hub may name it already
		return fmt.Sprintf("hub: %s: %s", e.Field, e.Message)
	}
	return "hub: " + e.Message
}

// do sends in (JSON, unless it is a []byte or nil) and decodes the response
// into out (unless nil).
func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	contentType := ""
	switch v := in.(type) {
	case nil:
	case []byte:
		body, contentType = bytes.NewReader(v), "application/yaml"
	default:
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		body, contentType = bytes.NewReader(data), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach the hub at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read the hub's answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var envelope struct {
			Error *remoteError `json:"error"`
		}
		if json.Unmarshal(data, &envelope) == nil && envelope.Error != nil {
			envelope.Error.Status = resp.StatusCode
			return envelope.Error
		}
		return &remoteError{Status: resp.StatusCode, Message: fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(data)))}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode the hub's answer: %w", err)
	}
	return nil
}
