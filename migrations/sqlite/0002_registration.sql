-- Dynamic client registration (RFC 7591) and its management (RFC 7592).

-- Set the first time a client obtains a token; self-registered clients that
-- never did are deleted after the tenant's `registration.unused_client_ttl`.
ALTER TABLE clients ADD COLUMN first_used_at BIGINT;
CREATE INDEX clients_never_used ON clients (tenant_id, source, created_at) WHERE first_used_at IS NULL;

-- One row per self-registered client: the SHA-256 of its registration access
-- token and the metadata document as registered (RFC 7591 names).
CREATE TABLE client_registrations (
    tenant_id    TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    token_hash   TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, client_id),
    FOREIGN KEY (tenant_id, client_id) REFERENCES clients (tenant_id, client_id) ON DELETE CASCADE
);

-- Initial access tokens an administrator issued (`clients initial-token`),
-- by SHA-256; usable for any number of registrations until they expire.
CREATE TABLE initial_access_tokens (
    token_hash  TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- Deleting a client revokes its grants; purging checks whether it has any.
CREATE INDEX grants_client ON grants (tenant_id, client_id);
