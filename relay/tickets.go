package relay

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Session tickets let an agent that reconnects resume its TLS session
// instead of a full handshake with certificate signatures and chain
// verification: several times cheaper, which is what a relay restarted
// under ten thousand agents needs. Go's TLS server makes random ticket keys
// at start, which a restart forgets; the relay keeps its keys in
// StateDir/session-tickets (mode 0600, as secret as relay.key), one per
// line, newest first, with the time each was made, and makes a new one
// each ticketKeyLifetime, keeping the previous so that tickets issued just
// before a rotation still resume. A resumed session still runs the
// certificate checks of VerifyConnection (identity, role, revocation).

const (
	ticketKeysFile    = "session-tickets"
	ticketKeyLifetime = 24 * time.Hour
)

// loadTicketKeys returns the ticket keys to use now, making and saving a
// new one when there is none or the newest is older than
// ticketKeyLifetime.
func loadTicketKeys(stateDir string, now time.Time) ([][32]byte, error) {
	path := filepath.Join(stateDir, ticketKeysFile)
	type entry struct {
		made time.Time
		key  [32]byte
	}
	var keys []entry
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("session ticket keys: %w", err)
	default:
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("session ticket keys %s: mode %v lets others read it; chmod 600 it", path, fi.Mode().Perm())
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			made, hexKey, ok := strings.Cut(line, " ")
			t, terr := time.Parse(time.RFC3339, made)
			raw, herr := hex.DecodeString(hexKey)
			if !ok || terr != nil || herr != nil || len(raw) != 32 {
				return nil, fmt.Errorf("session ticket keys %s: malformed line; delete the file to start over", path)
			}
			var e entry
			e.made = t
			copy(e.key[:], raw)
			keys = append(keys, e)
		}
	}
	if len(keys) == 0 || now.Sub(keys[0].made) >= ticketKeyLifetime {
		var e entry
		e.made = now.UTC().Truncate(time.Second)
		if _, err := rand.Read(e.key[:]); err != nil {
			return nil, err
		}
		keys = append([]entry{e}, keys...)
		if len(keys) > 2 {
			keys = keys[:2]
		}
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s %s\n", k.made.Format(time.RFC3339), hex.EncodeToString(k.key[:]))
		}
		if err := writeAtomic(path, []byte(b.String())); err != nil {
			return nil, fmt.Errorf("session ticket keys: %w", err)
		}
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("session ticket keys: %w", err)
		}
	}
	out := make([][32]byte, len(keys))
	for i, k := range keys {
		out[i] = k.key
	}
	return out, nil
}

// useTicketKeys installs the relay's persistent ticket keys in cfg.
func (s *Server) useTicketKeys(cfg *tls.Config) error {
	keys, err := loadTicketKeys(s.cfg.StateDir, s.cfg.Clock.Now())
	if err != nil {
		return err
	}
	cfg.SetSessionTicketKeys(keys)
	return nil
}

// rotateTicketKeys checks every hour whether the newest key is due for
// rotation, until ctx ends.
func (s *Server) rotateTicketKeys(ctx context.Context, cfg *tls.Config) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.cfg.Clock.After(time.Hour):
		}
		if err := s.useTicketKeys(cfg); err != nil {
			s.log.Error("relay: rotating session ticket keys", "err", err)
		}
	}
}
