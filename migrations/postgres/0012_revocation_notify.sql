-- Revocations committed anywhere (any node, any `gatehouse` command) are
-- announced on the channel `gatehouse_revocations`, so every node's cached
-- "this token is active" answers are dropped within a second (see
-- src/store/changes.rs). Only the change from active to revoked notifies;
-- PostgreSQL folds identical notifications of one transaction into one.
CREATE OR REPLACE FUNCTION gatehouse_notify_revocation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gatehouse_revocations', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER grants_revoked_notify
    AFTER UPDATE OF revoked_at ON grants
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
    EXECUTE FUNCTION gatehouse_notify_revocation();

CREATE TRIGGER access_tokens_revoked_notify
    AFTER UPDATE OF revoked_at ON access_tokens
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
    EXECUTE FUNCTION gatehouse_notify_revocation();

-- Revoking a JWT that had no row (client_credentials) inserts a revoked one.
CREATE TRIGGER access_tokens_inserted_revoked_notify
    AFTER INSERT ON access_tokens
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION gatehouse_notify_revocation();

