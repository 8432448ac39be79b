package hub

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/pki"
)

// Config configures a hub. Zero values get the defaults setDefaults names.
type Config struct {
	// DataDir holds the SQLite database (unless DatabaseURL), the
	// generated secret key, ca/root.pem, the hub id and the initial admin
	// password. Required.
	DataDir string
	// APIAddr is the HTTPS REST API's listen address (default :8443).
	APIAddr string
	// AgentAddr is the mTLS listener for agents and relays (default :8444).
	AgentAddr string
	// MaxHandshakes bounds the connections in their TLS handshake at once
	// on the agent listener (default 512, as a relay's); more wait,
	// accepted, for their turn, so that agents reconnecting all at once
	// do not each time out in a crowd of handshakes.
	MaxHandshakes int
	// DatabaseURL is a postgres:// or cockroach:// URL shared by all hubs;
	// empty means SQLite at DataDir/nxmesh.db.
	DatabaseURL string
	// SecretKey is the 32-byte key-encryption key of the CA, hex or base64.
	// It wins over SecretKeyFile.
	SecretKey string
	// SecretKeyFile holds the key in the same encoding, mode 0600. With
	// neither set, DataDir/secret.key is used, and generated on first start.
	SecretKeyFile string
	// TrustDomain of the installation (default "nxmesh.local").
	TrustDomain string
	// HubID names this hub in its certificate (default: kept in
	// DataDir/hub-id, a new UUID on first start).
	HubID string
	// Clock is the time source (default time.Now); tests move it.
	Clock func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Console receives the one line that shows the initial admin password,
	// on the start that creates the admin user. It is the operator's
	// terminal, never the structured log: secrets stay out of logs. Nil
	// prints nothing (the password is in DataDir/initial-admin-password).
	Console io.Writer
	// CertLifetime of issued certificates (default 24h).
	CertLifetime time.Duration
}

// DefaultTrustDomain is the trust domain of an installation that sets none.
const DefaultTrustDomain = "nxmesh.local"

func (c *Config) setDefaults() {
	if c.APIAddr == "" {
		c.APIAddr = ":8443"
	}
	if c.AgentAddr == "" {
		c.AgentAddr = ":8444"
	}
	if c.TrustDomain == "" {
		c.TrustDomain = DefaultTrustDomain
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first invalid setting, after defaults.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("hub config: no data directory (--data-dir)")
	}
	for name, addr := range map[string]string{"api address": c.APIAddr, "agent address": c.AgentAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("hub config: %s %q must be HOST:PORT: %w", name, addr, err)
		}
	}
	if err := pki.ValidateTrustDomain(c.TrustDomain); err != nil {
		return fmt.Errorf("hub config: %w", err)
	}
	if c.HubID != "" {
		if err := pki.ValidateSegment("hub id", c.HubID); err != nil {
			return fmt.Errorf("hub config: %w", err)
		}
	}
	if c.SecretKey != "" {
		if _, err := parseSecretKey(c.SecretKey); err != nil {
			return fmt.Errorf("hub config: secret key: %w", err)
		}
	}
	if c.CertLifetime < 0 {
		return fmt.Errorf("hub config: negative certificate lifetime %s", c.CertLifetime)
	}
	return nil
}

func (c *Config) databaseURL() string {
	if c.DatabaseURL != "" {
		return c.DatabaseURL
	}
	return filepath.Join(c.DataDir, "nxmesh.db")
}

// parseSecretKey decodes a 32-byte key written as hex or base64 (standard
// or URL alphabet, padded or not).
func parseSecretKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf("decodes to %d bytes, want 32", len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("must be 32 bytes written as 64 hex digits or base64")
}

// secretKeySource says where a KEK came from, for the log and errors.
type secretKeySource struct {
	key       []byte
	path      string // file it was read from or will be written to
	generated bool   // not yet on disk: write it once the CA is created
}

// loadSecretKey finds the KEK: SecretKey, else SecretKeyFile, else
// DataDir/secret.key. A key file that group or others can access is
// refused. With no key anywhere, a fresh key is returned with generated
// set; New writes it only when it is about to create the CA, so a hub that
// finds an existing CA without being given its key writes nothing.
func (c *Config) loadSecretKey() (secretKeySource, error) {
	if c.SecretKey != "" {
		k, err := parseSecretKey(c.SecretKey)
		return secretKeySource{key: k}, err
	}
	path, explicit := c.SecretKeyFile, true
	if path == "" {
		path, explicit = filepath.Join(c.DataDir, "secret.key"), false
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil:
		if fi.Mode().Perm()&0o077 != 0 {
			return secretKeySource{}, fmt.Errorf("secret key file %s has mode %04o: %w; run chmod 600 %s",
				path, fi.Mode().Perm(), pki.ErrKeyPermissions, path)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return secretKeySource{}, fmt.Errorf("read secret key: %w", err)
		}
		k, err := parseSecretKey(string(data))
		if err != nil {
			return secretKeySource{}, fmt.Errorf("secret key file %s: %w", path, err)
		}
		return secretKeySource{key: k, path: path}, nil
	case errors.Is(err, os.ErrNotExist) && !explicit:
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return secretKeySource{}, err
		}
		return secretKeySource{key: k, path: path, generated: true}, nil
	default:
		return secretKeySource{}, fmt.Errorf("secret key file: %w", err)
	}
}

// writeSecretKey stores a generated key as hex, mode 0600, never replacing
// an existing file.
func writeSecretKey(path string, key []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write generated secret key: %w", err)
	}
	_, werr := f.WriteString(hex.EncodeToString(key) + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(path)
		return fmt.Errorf("write generated secret key %s: %w", path, err)
	}
	return nil
}

// hubID returns the configured id, else the one kept in DataDir/hub-id,
// else a new UUID that is then kept there.
func (c *Config) hubID() (string, error) {
	if c.HubID != "" {
		return c.HubID, nil
	}
	path := filepath.Join(c.DataDir, "hub-id")
	if data, err := os.ReadFile(path); err == nil {
		id := strings.TrimSpace(string(data))
		if err := pki.ValidateSegment("hub id", id); err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		return id, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	id := uuid.NewString()
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write hub id: %w", err)
	}
	return id, nil
}
