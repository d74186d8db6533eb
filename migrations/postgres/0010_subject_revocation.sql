-- Revoking a user (admin revocation, or the upstream refusing them at a
-- re-check) ends every grant of their broker subject and remembers when:
-- an ID token or upstream token issued before then is no longer exchanged.
ALTER TABLE identities ADD COLUMN revoked_at BIGINT;
CREATE INDEX grants_subject ON grants (tenant_id, subject);
