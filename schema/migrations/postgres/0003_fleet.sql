-- What the hubs know of the fleet beyond enrollment: each agent's last
-- apply result in full (the bundle it was about and nginx's output), and
-- the relays with a live session to some hub. An agent is online while its
-- relay column names a relay whose last_seen is recent: relays are few, so
-- liveness costs one write per relay, not one per agent heartbeat.
ALTER TABLE agents ADD COLUMN result_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN result_output TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN result_at TIMESTAMPTZ;

CREATE TABLE relays (
    id           TEXT PRIMARY KEY,
    hub          TEXT NOT NULL,
    agents       BIGINT NOT NULL,
    connected_at TIMESTAMPTZ NOT NULL,
    last_seen    TIMESTAMPTZ NOT NULL
);

-- Hubs poll recent revocations to cut the sessions of deleted agents that
-- are connected through their relays.
CREATE INDEX revocations_revoked_at ON revocations (revoked_at);
