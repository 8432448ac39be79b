-- The certificate authority, sealed under the hubs' secret key. One row,
-- id 'ca'; the first hub to insert it wins (ON CONFLICT DO NOTHING).
CREATE TABLE ca_state (
    id         TEXT PRIMARY KEY,
    sealed     BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- Enrollment tokens by JWT jti. The token itself is never stored; remaining
-- is decremented atomically on each redemption.
CREATE TABLE enrollment_tokens (
    jti        TEXT PRIMARY KEY,
    workspace  TEXT NOT NULL,
    role       TEXT NOT NULL,
    labels     JSONB NOT NULL,
    remaining  BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- Every certificate the CA issued (renewals included), by decimal serial.
CREATE TABLE certificates (
    serial     TEXT PRIMARY KEY,
    identity   TEXT NOT NULL,
    not_before TIMESTAMPTZ NOT NULL,
    not_after  TIMESTAMPTZ NOT NULL
);
CREATE INDEX certificates_identity ON certificates (identity, serial);

CREATE TABLE revocations (
    serial     TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    revoked_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);

-- Bearer tokens by SHA-256 of the token; kind is 'session' (login) or
-- 'api'. expires_at NULL means no expiry.
CREATE TABLE api_tokens (
    hash         TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL REFERENCES users (name),
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    expires_at   TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ
);
CREATE INDEX api_tokens_user ON api_tokens (user_name, hash);
