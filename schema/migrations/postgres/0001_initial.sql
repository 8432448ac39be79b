CREATE TABLE organizations (
    name       TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE workspaces (
    name       TEXT PRIMARY KEY,
    org        TEXT NOT NULL REFERENCES organizations (name),
    revision   BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX workspaces_org ON workspaces (org, name);

CREATE TABLE revisions (
    workspace  TEXT NOT NULL REFERENCES workspaces (name),
    number     BIGINT NOT NULL,
    author     TEXT NOT NULL,
    message    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workspace, number)
);

CREATE TABLE resources (
    workspace  TEXT NOT NULL REFERENCES workspaces (name),
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    labels     JSONB NOT NULL,
    spec       JSONB NOT NULL,
    version    BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workspace, kind, name)
);

-- One row per resource per revision that touched it; labels and spec are
-- NULL when the revision deleted the resource.
CREATE TABLE resource_history (
    workspace TEXT NOT NULL,
    kind      TEXT NOT NULL,
    name      TEXT NOT NULL,
    revision  BIGINT NOT NULL,
    version   BIGINT NOT NULL,
    labels    JSONB,
    spec      JSONB,
    PRIMARY KEY (workspace, kind, name, revision),
    FOREIGN KEY (workspace, revision) REFERENCES revisions (workspace, number)
);
CREATE INDEX resource_history_revision ON resource_history (workspace, revision);

CREATE TABLE agents (
    id           TEXT PRIMARY KEY,
    workspace    TEXT NOT NULL REFERENCES workspaces (name),
    labels       JSONB NOT NULL,
    relay        TEXT NOT NULL,
    applied_hash TEXT NOT NULL,
    last_result  TEXT NOT NULL,
    last_error   TEXT NOT NULL,
    last_seen    TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX agents_workspace ON agents (workspace, id);

CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE audit_events (
    id         UUID PRIMARY KEY,
    workspace  TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    detail     JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX audit_events_workspace ON audit_events (workspace, created_at, id);
