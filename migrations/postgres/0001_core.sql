-- Core schema. Timestamps are unix seconds (BIGINT); JSON documents are TEXT.
-- Tokens, codes, sessions and secrets are stored only as hashes.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    settings    TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid            TEXT NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    alg            TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    private_enc    BYTEA NOT NULL,
    state          TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    activated_at   BIGINT,
    retired_at     BIGINT,
    publish_until  BIGINT,
    PRIMARY KEY (tenant_id, kid)
);

CREATE TABLE clients (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id    TEXT NOT NULL,
    secret_hash  TEXT,
    metadata     TEXT NOT NULL,
    source       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, client_id)
);

CREATE TABLE resources (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    uri         TEXT NOT NULL,
    settings    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, uri)
);

CREATE TABLE identities (
    tenant_id         TEXT NOT NULL,
    connector_id      TEXT NOT NULL,
    upstream_subject  TEXT NOT NULL,
    subject           TEXT NOT NULL,
    claims            TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    last_login_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, connector_id, upstream_subject)
);
CREATE UNIQUE INDEX identities_subject ON identities (tenant_id, subject);

CREATE TABLE pending_authorizations (
    id_hash     TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    data        TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    subject     TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE consents (
    tenant_id   TEXT NOT NULL,
    subject     TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, subject, client_id)
);

-- A grant is what one authorization (code) produced: the refresh-token family
-- and the access tokens minted from it. Revoking it revokes all of them.
CREATE TABLE grants (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    subject     TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE auth_codes (
    code_hash    TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    grant_id     TEXT NOT NULL,
    data         TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    consumed_at  BIGINT
);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    grant_id    TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    rotated_at  BIGINT
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

-- Rows exist for opaque tokens (token_hash set, claims kept here), for JWTs
-- minted from a grant (so revoking the grant reaches them), and for JWTs
-- revoked one by one. Plain client_credentials JWTs need no row.
CREATE TABLE access_tokens (
    jti          TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    grant_id     TEXT,
    token_hash   TEXT UNIQUE,
    claims       TEXT,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX access_tokens_grant ON access_tokens (grant_id);

-- One-time values (private_key_jwt assertion ids) remembered until expiry.
CREATE TABLE used_jtis (
    tenant_id   TEXT NOT NULL,
    scope       TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, scope, jti)
);

CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    client_id   TEXT,
    subject     TEXT,
    source_ip   TEXT,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events (tenant_id, at);
