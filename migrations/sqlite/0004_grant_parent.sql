-- A grant derived from another (a token exchange that issued a refresh
-- token) names its parent; revoking the parent revokes it too.
ALTER TABLE grants ADD COLUMN parent_id TEXT;
CREATE INDEX grants_parent ON grants (parent_id);
