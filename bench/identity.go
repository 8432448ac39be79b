package bench

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nxmesh/nxmesh/pki"
)

// identity is one simulated agent's own key and certificate, as the hub's
// CA issued it through enrollment: no two agents share one.
type identity struct {
	id       string
	cert     tls.Certificate
	keyPEM   []byte
	chainPEM []byte
}

// identitiesFile is where the agents' keys and certificates are kept
// between runs: for each agent its private key, then its chain, in PEM.
func identitiesFile(workDir string) string { return filepath.Join(workDir, "agents.pem") }

// loadIdentities reads the cached identities that chain to roots and stay
// valid for minCertLife. stale counts those that do not: a cache with any
// stale entry belongs to an older hub or an older day.
func loadIdentities(path string, roots *x509.CertPool) (ids []identity, stale int, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("agent identities: %w", err)
	}
	p := newIdentityParser(roots)
	scanIdentities(data, func(_ int, keyPEM []byte, chain [][]byte) bool {
		if id, ok := p.parse(keyPEM, chain); ok {
			ids = append(ids, id)
		} else {
			stale++
		}
		return true
	})
	return ids, stale, nil
}

// loadIdentityRange reads entries first to first+count-1 of the cache at
// path, as an agent process does with its share of a run's agents. Unlike
// loadIdentities it fails on a missing or stale entry: the bench rewrote
// the cache so that its first entries are exactly the run's agents.
func loadIdentityRange(path string, roots *x509.CertPool, first, count int) ([]identity, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("agent identities: %w", err)
	}
	p := newIdentityParser(roots)
	ids := make([]identity, 0, count)
	var bad error
	scanIdentities(data, func(i int, keyPEM []byte, chain [][]byte) bool {
		if i < first {
			return true
		}
		id, ok := p.parse(keyPEM, chain)
		if !ok {
			bad = fmt.Errorf("agent identities: entry %d of %s is not a valid agent certificate of this hub", i, path)
			return false
		}
		ids = append(ids, id)
		return len(ids) < count
	})
	if bad != nil {
		return nil, bad
	}
	if len(ids) < count {
		return nil, fmt.Errorf("agent identities: %s holds %d entries, want at least %d", path, first+len(ids), first+count)
	}
	return ids, nil
}

// scanIdentities calls fn with each entry of a cache file (a private key,
// then its chain), in file order, with the entry's index, until fn
// returns false.
func scanIdentities(data []byte, fn func(i int, keyPEM []byte, chain [][]byte) bool) {
	i := 0
	var keyPEM []byte
	var chain [][]byte
	flush := func() bool {
		if keyPEM == nil {
			return true
		}
		more := fn(i, keyPEM, chain)
		i++
		keyPEM, chain = nil, nil
		return more
	}
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			if !flush() {
				return
			}
			keyPEM = pem.EncodeToMemory(b)
			continue
		}
		if b.Type == "CERTIFICATE" && keyPEM != nil {
			chain = append(chain, pem.EncodeToMemory(b))
		}
	}
	flush()
}

// identityParser checks cached entries against one hub's root. Every leaf
// is issued by the same intermediate: it verifies each distinct
// intermediate against the root once, then only each leaf's signature.
type identityParser struct {
	roots    *x509.CertPool
	verified map[string]*x509.Certificate
	deadline time.Time
}

func newIdentityParser(roots *x509.CertPool) *identityParser {
	return &identityParser{roots: roots, verified: map[string]*x509.Certificate{}, deadline: time.Now().Add(minCertLife)}
}

func (p *identityParser) parse(keyPEM []byte, chain [][]byte) (identity, bool) {
	return parseIdentity(keyPEM, chain, p.roots, p.verified, p.deadline)
}

// parseIdentity is one cached agent, if it is still good for this hub.
func parseIdentity(keyPEM []byte, chain [][]byte, roots *x509.CertPool, verified map[string]*x509.Certificate, validUntil time.Time) (identity, bool) {
	chainPEM := bytes.Join(chain, nil)
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return identity{}, false
	}
	certs, err := pki.ParseCertsPEM(chainPEM)
	if err != nil || len(certs) < 2 || certs[0].NotAfter.Before(validUntil) {
		return identity{}, false
	}
	inter, ok := verified[string(certs[1].Raw)]
	if !ok {
		if _, err := certs[1].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return identity{}, false
		}
		inter = certs[1]
		verified[string(certs[1].Raw)] = inter
	}
	if err := certs[0].CheckSignatureFrom(inter); err != nil {
		return identity{}, false
	}
	return newIdentity(key, certs, keyPEM, chainPEM)
}

func newIdentity(key crypto.Signer, certs []*x509.Certificate, keyPEM, chainPEM []byte) (identity, bool) {
	cert, err := pki.NewCertificate(key, certs)
	if err != nil {
		return identity{}, false
	}
	pid, err := pki.IdentityFromCert(certs[0])
	if err != nil || pid.Role != pki.RoleAgent {
		return identity{}, false
	}
	return identity{id: pid.ID, cert: cert, keyPEM: keyPEM, chainPEM: chainPEM}, true
}

// saveIdentities writes ids to path (mode 0600: they hold private keys),
// whole or not at all.
func saveIdentities(path string, ids []identity) error {
	var buf bytes.Buffer
	for _, id := range ids {
		buf.Write(id.keyPEM)
		buf.Write(id.chainPEM)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("save agent identities: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save agent identities: %w", err)
	}
	return nil
}

// mintIdentities enrolls n agents through the hub's API, workers at a
// time, each with a fresh key: the CA path every real agent takes, in
// bulk. done is told the running count.
func mintIdentities(ctx context.Context, api *hubAPI, n, workers int, labels map[string]string, done func(int)) ([]identity, error) {
	token, err := api.enrollmentToken(ctx, "agent", n, labels)
	if err != nil {
		return nil, err
	}
	ids := make([]identity, n)
	var next, finished atomic.Int64
	var mu sync.Mutex // serializes done
	eg, ctx := errgroup.WithContext(ctx)
	for range workers {
		eg.Go(func() error {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return nil
				}
				id, err := mintIdentity(ctx, api, token)
				if err != nil {
					return fmt.Errorf("enroll agent %d of %d: %w", i+1, n, err)
				}
				ids[i] = id
				if done != nil {
					mu.Lock()
					done(int(finished.Add(1)))
					mu.Unlock()
				}
			}
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	return ids, nil
}

// mintIdentity is one enrollment: key and CSR here, certificate from the
// hub.
func mintIdentity(ctx context.Context, api *hubAPI, token string) (identity, error) {
	key, err := pki.GenerateKey()
	if err != nil {
		return identity{}, err
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return identity{}, err
	}
	chainPEM, err := api.enroll(ctx, token, csr)
	if err != nil {
		return identity{}, err
	}
	certs, err := pki.ParseCertsPEM(chainPEM)
	if err != nil {
		return identity{}, err
	}
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return identity{}, err
	}
	cert, err := pki.NewCertificate(key, certs)
	if err != nil {
		return identity{}, err
	}
	pid, err := pki.IdentityFromCert(certs[0])
	if err != nil {
		return identity{}, err
	}
	return identity{id: pid.ID, cert: cert, keyPEM: keyPEM, chainPEM: chainPEM}, nil
}
