package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// RenewPath is the hub's renewal endpoint on its mTLS listener.
const RenewPath = "/v1/renew"

// HTTPSRenewFunc returns a RenewFunc that renews over a hub's mTLS listener
// (hubURL such as https://hub:8444): a POST to RenewPath authenticated by
// the current certificate, nothing else. The hub is verified as a hub of
// peer's trust domain. The new chain is checked to name the same identity.
func HTTPSRenewFunc(hubURL string, peer Peer) RenewFunc {
	peer.Roles = []Role{RoleHub}
	url := strings.TrimRight(hubURL, "/") + RenewPath
	return func(ctx context.Context, current tls.Certificate) ([]*x509.Certificate, error) {
		src, err := NewSource(current)
		if err != nil {
			return nil, err
		}
		cfg, err := ClientTLSConfig(src, peer)
		if err != nil {
			return nil, err
		}
		tr := &http.Transport{TLSClientConfig: cfg, TLSHandshakeTimeout: 10 * time.Second}
		defer tr.CloseIdleConnections()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			return nil, fmt.Errorf("renew at %s: %w", url, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("renew at %s: %w", url, err)
		}
		var out struct {
			Certificate string `json:"certificate"`
			Error       *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &out); err != nil {
			return nil, fmt.Errorf("renew at %s: %s: malformed answer", url, resp.Status)
		}
		if resp.StatusCode != http.StatusOK {
			if out.Error != nil {
				return nil, fmt.Errorf("renew at %s: %s (%s)", url, out.Error.Message, out.Error.Code)
			}
			return nil, fmt.Errorf("renew at %s: %s", url, resp.Status)
		}
		chain, err := ParseCertsPEM([]byte(out.Certificate))
		if err != nil {
			return nil, fmt.Errorf("renew at %s: %w", url, err)
		}
		if len(chain) == 0 || len(current.Certificate) == 0 {
			return nil, errors.New("renewal returned no certificate")
		}
		old, err := x509.ParseCertificate(current.Certificate[0])
		if err != nil {
			return nil, err
		}
		was, err1 := IdentityFromCert(old)
		now, err2 := IdentityFromCert(chain[0])
		if err1 != nil || err2 != nil || was != now {
			return nil, fmt.Errorf("renewal returned identity %v, want %v", now, was)
		}
		return chain, nil
	}
}
