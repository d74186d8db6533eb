-- RFC 8628 device authorizations. Device and user codes are stored hashed.
CREATE TABLE device_authorizations (
    device_code_hash  TEXT PRIMARY KEY,
    user_code_hash    TEXT NOT NULL,
    tenant_id         TEXT NOT NULL,
    client_id         TEXT NOT NULL,
    data              TEXT NOT NULL,
    status            TEXT NOT NULL,
    subject           TEXT,
    grant_id          TEXT,
    interval_secs     BIGINT NOT NULL,
    last_polled_at    BIGINT,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL
);
CREATE UNIQUE INDEX device_authorizations_user_code ON device_authorizations (tenant_id, user_code_hash);
