package pki

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// ErrExpired means the current certificate has expired. Renewal needs a valid
// certificate, so the process must enroll again with a new token.
var ErrExpired = errors.New("certificate expired: renewal is no longer possible, enroll again with a new enrollment token")

// Clock is the time source of a Renewer; tests replace it with a fake.
type Clock interface {
	Now() time.Time
	// After behaves like time.After.
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// RenewFunc obtains a new chain (leaf then intermediate) for the public key
// of current, authenticating with current itself (mTLS). It returns an error
// wrapping ErrExpired when the CA refuses because current has expired.
type RenewFunc func(ctx context.Context, current tls.Certificate) ([]*x509.Certificate, error)

// Renewer keeps a Source's certificate fresh: it renews at two thirds of the
// certificate's lifetime and retries failures with exponential backoff and
// jitter until the certificate expires.
type Renewer struct {
	Source *Source
	Renew  RenewFunc
	// Clock defaults to SystemClock.
	Clock Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the retry delay (defaults 1s and 5m).
	MinBackoff, MaxBackoff time.Duration
	// OnRenew, when set, is called with each new certificate after it is in
	// the Source, e.g. to write the chain to disk. Its error is logged.
	OnRenew func(tls.Certificate) error
}

// RenewAt returns when a certificate should be renewed: two thirds into its
// validity. When that moment is already past at now (a backdated short-lived
// certificate, or a process that was stopped for a while), it returns two
// thirds of the way from now to expiry instead, so a fresh certificate is
// never renewed in a tight loop.
func RenewAt(leaf *x509.Certificate, now time.Time) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	at := leaf.NotBefore.Add(life * 2 / 3)
	if !at.After(now) {
		at = now.Add(leaf.NotAfter.Sub(now) * 2 / 3)
	}
	return at
}

// Run renews until ctx ends (returning nil) or the certificate expires
// (returning an error wrapping ErrExpired).
func (r *Renewer) Run(ctx context.Context) error {
	clock := r.Clock
	if clock == nil {
		clock = SystemClock{}
	}
	log := r.Logger
	if log == nil {
		log = slog.Default()
	}
	minB, maxB := r.MinBackoff, r.MaxBackoff
	if minB <= 0 {
		minB = time.Second
	}
	if maxB < minB {
		maxB = max(5*time.Minute, minB)
	}
	attempt := 0
	var wait time.Duration
	for {
		cur := r.Source.Current()
		now := clock.Now()
		if !now.Before(cur.Leaf.NotAfter) {
			return fmt.Errorf("renew certificate %s: %w (expired at %s)", cur.Leaf.SerialNumber, ErrExpired, cur.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		if attempt == 0 {
			wait = RenewAt(cur.Leaf, now).Sub(now)
		} else if until := cur.Leaf.NotAfter.Sub(now); wait > until {
			wait = until // one last look at expiry
		}
		select {
		case <-ctx.Done():
			return nil
		case <-clock.After(wait):
		}
		if !clock.Now().Before(cur.Leaf.NotAfter) {
			continue // reported as expired at the top of the loop
		}
		next, err := r.renewOnce(ctx, *cur)
		if err == nil {
			attempt = 0
			log.Info("certificate renewed", "serial", next.Leaf.SerialNumber.String(),
				"not_after", next.Leaf.NotAfter.UTC())
			if r.OnRenew != nil {
				if err := r.OnRenew(next); err != nil {
					log.Warn("renewed certificate not persisted", "err", err)
				}
			}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrExpired) {
			return fmt.Errorf("renew certificate %s: %w", cur.Leaf.SerialNumber, err)
		}
		attempt++
		wait = backoff(minB, maxB, attempt)
		log.Warn("certificate renewal failed, will retry", "attempt", attempt, "retry_in", wait, "err", err)
	}
}

// renewOnce calls Renew and installs the result in the Source.
func (r *Renewer) renewOnce(ctx context.Context, cur tls.Certificate) (tls.Certificate, error) {
	chain, err := r.Renew(ctx, cur)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, ok := cur.PrivateKey.(crypto.Signer)
	if !ok {
		return tls.Certificate{}, errors.New("renew: current private key is not a crypto.Signer")
	}
	next, err := NewCertificate(key, chain)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("renew: %w", err)
	}
	if err := r.Source.Store(next); err != nil {
		return tls.Certificate{}, err
	}
	return next, nil
}

// backoff returns min*2^(attempt-1) capped at max, with "equal jitter": a
// uniformly random value in [d/2, d], so many processes failing together do
// not retry together.
func backoff(minB, maxB time.Duration, attempt int) time.Duration {
	d := minB
	for i := 1; i < attempt && d < maxB; i++ {
		d *= 2
	}
	d = min(d, maxB)
	half := d / 2
	return half + rand.N(d-half+1)
}
