package relay

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	"github.com/gorilla/websocket"

	"github.com/nxmesh/nxmesh/wire"
)

// The relay's disk state, under StateDir:
//
//	desired.json        agent id -> desired bundle hash, from the hub
//	bundles/<hash>      8-byte big-endian uncompressed size, then the
//	                    compressed payload exactly as the hub sent it
//
// It is what lets an agent that connects while every hub is down still get
// its last desired bundle (cold start). Bundles are opaque: the relay never
// decompresses them; the agent verifies the hash.

// cachedBundle is one bundle in memory, framed once for every agent.
type cachedBundle struct {
	hash    string
	size    int64
	payload []byte
	pm      *websocket.PreparedMessage
}

// cache holds bundles by hash, and the deltas between them the hub sent
// (in memory only: after a restart agents get whole bundles). It has no
// lock of its own: the relay guards it with Server.mu. Disk I/O happens
// outside that lock.
type cache struct {
	dir     string
	bundles map[string]*cachedBundle
	deltas  map[deltaKey]*websocket.PreparedMessage
}

// deltaKey names a delta: from base to hash.
type deltaKey struct{ base, hash string }

func openCache(stateDir string) (*cache, error) {
	dir := filepath.Join(stateDir, "bundles")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("relay cache: %w", err)
	}
	c := &cache{dir: dir, bundles: map[string]*cachedBundle{}, deltas: map[deltaKey]*websocket.PreparedMessage{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("relay cache: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !wire.IsHash(name) {
			continue // temp files of an interrupted write
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || len(data) < 8 {
			continue
		}
		b, err := newCachedBundle(name, int64(binary.BigEndian.Uint64(data[:8])), data[8:])
		if err != nil {
			continue
		}
		c.bundles[name] = b
	}
	return c, nil
}

func newCachedBundle(hash string, size int64, payload []byte) (*cachedBundle, error) {
	pm, err := wire.Prepare(&wire.Bundle{Hash: hash, Encoding: wire.EncodingGzip, Size: size}, payload)
	if err != nil {
		return nil, err
	}
	return &cachedBundle{hash: hash, size: size, payload: payload, pm: pm}, nil
}

func (c *cache) len() int                         { return len(c.bundles) }
func (c *cache) get(hash string) *cachedBundle    { return c.bundles[hash] }
func (c *cache) put(b *cachedBundle)              { c.bundles[b.hash] = b }
func (c *cache) path(hash string) string          { return filepath.Join(c.dir, hash) }
func (c *cache) desiredPath() string              { return filepath.Join(filepath.Dir(c.dir), "desired.json") }
func (c *cache) drop(hash string)                 { delete(c.bundles, hash) }
func (c *cache) removeFile(hash string)           { _ = os.Remove(c.path(hash)) }
func (c *cache) hashes() map[string]*cachedBundle { return c.bundles }

// delta returns the prepared BundleDelta from base to hash, or nil.
func (c *cache) delta(base, hash string) *websocket.PreparedMessage {
	return c.deltas[deltaKey{base, hash}]
}

func (c *cache) putDelta(base, hash string, pm *websocket.PreparedMessage) {
	c.deltas[deltaKey{base, hash}] = pm
}

// dropDeltas forgets the deltas toward hashes no agent wants.
func (c *cache) dropDeltas(wanted func(hash string) bool) {
	maps.DeleteFunc(c.deltas, func(k deltaKey, _ *websocket.PreparedMessage) bool { return !wanted(k.hash) })
}

// writeBundle stores b on disk atomically. Called without Server.mu.
func (c *cache) writeBundle(b *cachedBundle) error {
	data := make([]byte, 8, 8+len(b.payload))
	binary.BigEndian.PutUint64(data, uint64(b.size))
	data = append(data, b.payload...)
	return writeAtomic(c.path(b.hash), data)
}

func (c *cache) loadDesired() (map[string]string, error) {
	m := map[string]string{}
	data, err := os.ReadFile(c.desiredPath())
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("relay cache: %w", err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("relay cache: %s: %w", c.desiredPath(), err)
	}
	return m, nil
}

// appendDesiredJSON appends the desired map as a JSON object, as
// encoding/json would but in the map's order. It runs under Server.mu,
// once assignments settle (persistDesired): encoding/json's sorted,
// reflective encoding of 17,000 agents was a twentieth of a relay's CPU
// in a push, and held the lock that fan-out and results need.
func appendDesiredJSON(dst []byte, desired map[string]string) []byte {
	dst = append(dst, '{')
	first := true
	for id, hash := range desired {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendJSONString(dst, id)
		dst = append(dst, ':')
		dst = appendJSONString(dst, hash)
	}
	return append(dst, '}')
}

// appendJSONString appends s as a JSON string: as it is when nothing in
// it needs escaping (agent ids and hashes), else through encoding/json.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// writeDesired persists the desired map. Called without Server.mu, by
// persistDesired only, so writes happen in order.
func (c *cache) writeDesired(data []byte) error {
	return writeAtomic(c.desiredPath(), data)
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil {
		_ = os.Remove(tmp.Name())
	}
	return werr
}
