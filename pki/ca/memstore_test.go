package ca

import (
	"context"
	"encoding/base64"
	"maps"
	"sync"
	"sync/atomic"
)

// memStore is a TEST DOUBLE for the hub's SQL store (hub/store), which will
// implement Storage for real. It keeps the same atomicity promises as the
// SQL statements documented on Storage (insert-if-absent for the CA, a
// conditional decrement for token uses) under one mutex. Not for production.
type memStore struct {
	mu      sync.Mutex // guards the maps and ca
	ca      []byte
	tokens  map[string]int // jti -> remaining uses
	certs   map[string]CertRecord
	revoked map[string]Revocation
	writes  atomic.Int64 // every mutating call, for "storage untouched" tests
}

var _ Storage = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{tokens: map[string]int{}, certs: map[string]CertRecord{}, revoked: map[string]Revocation{}}
}

func (m *memStore) GetCA(context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ca == nil {
		return nil, ErrNotFound
	}
	return append([]byte(nil), m.ca...), nil
}

func (m *memStore) CreateCA(_ context.Context, sealed []byte) error {
	m.writes.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ca != nil {
		return ErrExists
	}
	m.ca = append([]byte(nil), sealed...)
	return nil
}

func (m *memStore) CreateToken(_ context.Context, t TokenRecord) error {
	m.writes.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens[t.ID] = t.Uses
	return nil
}

func (m *memStore) ConsumeToken(_ context.Context, jti string) (TokenUse, error) {
	m.writes.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.tokens[jti]
	switch {
	case !ok:
		return TokenUnknown, nil
	case n <= 0:
		return TokenUsedUp, nil
	}
	m.tokens[jti] = n - 1
	return TokenConsumed, nil
}

func (m *memStore) RecordCertificate(_ context.Context, c CertRecord) error {
	m.writes.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.certs[c.Serial] = c
	return nil
}

func (m *memStore) Revoke(_ context.Context, r Revocation) error {
	m.writes.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revoked[r.Serial] = r
	return nil
}

func (m *memStore) IsRevoked(_ context.Context, serial string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.revoked[serial]
	return ok, nil
}

func (m *memStore) snapshot() ([]byte, map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.ca...), maps.Clone(m.tokens)
}

var b64 = base64.RawURLEncoding
