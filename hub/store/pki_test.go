package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestConsumeTokenExclusive: many goroutines on separate connections
// redeem one token with three uses; exactly three succeed, the rest see
// TokenUsedUp, and an unknown jti is TokenUnknown.
func TestConsumeTokenExclusive(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		a, b := openDB(t, url, nil), openDB(t, url, nil) // two hubs
		exp := time.Now().Add(time.Hour)
		if err := a.CreateToken(ctx, TokenRecord{JTI: "j1", Workspace: "default", Role: "agent",
			Labels: map[string]string{"env": "prod"}, Remaining: 3, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
		if err := a.CreateToken(ctx, TokenRecord{JTI: "j1", Role: "agent", Remaining: 1, ExpiresAt: exp}); !errors.Is(err, ErrConflict) {
			t.Fatalf("duplicate jti: %v, want ErrConflict", err)
		}
		const n = 24
		var (
			wg     sync.WaitGroup
			mu     sync.Mutex
			counts = map[TokenUse]int{}
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				db := a
				if i%2 == 1 {
					db = b
				}
				use, err := db.ConsumeToken(ctx, "j1")
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("consume: %v", err)
					return
				}
				counts[use]++
			}()
		}
		wg.Wait()
		if counts[TokenConsumed] != 3 || counts[TokenUsedUp] != n-3 {
			t.Fatalf("outcomes %v, want 3 consumed and %d used up", counts, n-3)
		}
		rec, err := b.GetToken(ctx, "j1")
		if err != nil || rec.Remaining != 0 || rec.Labels["env"] != "prod" || rec.Workspace != "default" {
			t.Fatalf("record %+v, %v", rec, err)
		}
		if use, err := a.ConsumeToken(ctx, "nope"); err != nil || use != TokenUnknown {
			t.Fatalf("unknown jti: %v %v", use, err)
		}
	})
}

func TestCAStateOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db := openDB(t, url, nil)
		if _, err := db.GetCA(ctx); !errors.Is(err, ErrNotFound) {
			t.Fatalf("empty store: %v, want ErrNotFound", err)
		}
		if err := db.CreateCA(ctx, []byte("first")); err != nil {
			t.Fatal(err)
		}
		if err := db.CreateCA(ctx, []byte("second")); !errors.Is(err, ErrConflict) {
			t.Fatalf("second CreateCA: %v, want ErrConflict", err)
		}
		if got, err := db.GetCA(ctx); err != nil || string(got) != "first" {
			t.Fatalf("GetCA = %q, %v", got, err)
		}
	})
}

func TestRevokeIdentity(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db := openDB(t, url, nil)
		now := time.Now()
		id := "spiffe://nxmesh.local/ws/default/agent/a1"
		for i, ident := range []string{id, id, "spiffe://nxmesh.local/ws/default/agent/a2"} {
			if err := db.RecordCertificate(ctx, CertRecord{Serial: fmt.Sprint(100 + i), Identity: ident,
				NotBefore: now, NotAfter: now.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
		if certs, err := db.ListCertificates(ctx, id); err != nil || len(certs) != 2 {
			t.Fatalf("certificates of %s: %v, %v", id, certs, err)
		}
		if err := db.Revoke(ctx, Revocation{Serial: "100", Reason: "manual", RevokedAt: now}); err != nil {
			t.Fatal(err)
		}
		n, err := db.RevokeIdentity(ctx, id, "agent deleted", now)
		if err != nil || n != 1 {
			t.Fatalf("RevokeIdentity = %d, %v; want 1 newly revoked", n, err)
		}
		for serial, want := range map[string]bool{"100": true, "101": true, "102": false, "999": false} {
			if got, err := db.IsRevoked(ctx, serial); err != nil || got != want {
				t.Errorf("IsRevoked(%s) = %v, %v; want %v", serial, got, err, want)
			}
		}
		if err := db.Revoke(ctx, Revocation{Serial: "100", Reason: "again"}); err != nil {
			t.Fatalf("revoking twice: %v", err)
		}
	})
}

func TestUsersAndAPITokens(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		clk := newFakeClock()
		db := openDB(t, url, clk)
		if _, err := db.CreateUser(ctx, User{Name: "admin", PasswordHash: "h1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := db.CreateUser(ctx, User{Name: "admin", PasswordHash: "h2"}); !errors.Is(err, ErrConflict) {
			t.Fatalf("second admin: %v, want ErrConflict", err)
		}
		if u, err := db.GetUser(ctx, "admin"); err != nil || u.PasswordHash != "h1" {
			t.Fatalf("GetUser = %+v, %v", u, err)
		}
		if _, err := db.GetUser(ctx, "bob"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetUser(bob): %v", err)
		}
		if _, err := db.CreateAPIToken(ctx, APIToken{Hash: "x", User: "bob", Kind: TokenKindAPI}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("token for a missing user: %v, want ErrNotFound", err)
		}
		exp := clk.Now().Add(12 * time.Hour)
		if _, err := db.CreateAPIToken(ctx, APIToken{Hash: "s1", User: "admin", Kind: TokenKindSession, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
		if _, err := db.CreateAPIToken(ctx, APIToken{Hash: "k1", User: "admin", Kind: TokenKindAPI, Name: "ci"}); err != nil {
			t.Fatal(err)
		}
		tok, err := db.UseAPIToken(ctx, "s1", clk.Now())
		if err != nil || tok.User != "admin" || !tok.ExpiresAt.Equal(exp) || !tok.LastUsedAt.Equal(clk.Now()) {
			t.Fatalf("UseAPIToken = %+v, %v", tok, err)
		}
		if tok.IsExpired(clk.Now()) || !tok.IsExpired(exp) {
			t.Error("IsExpired wrong around the expiry")
		}
		api, err := db.UseAPIToken(ctx, "k1", clk.Now())
		if err != nil || !api.ExpiresAt.IsZero() || api.IsExpired(clk.Now().Add(1000*time.Hour)) {
			t.Fatalf("api token %+v, %v", api, err)
		}
		if err := db.DeleteAPIToken(ctx, "s1"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.UseAPIToken(ctx, "s1", clk.Now()); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted token: %v", err)
		}
	})
}
