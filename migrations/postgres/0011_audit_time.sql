-- Retention deletes audit events by age across tenants: index `at` alone
-- (audit_events_at covers (tenant_id, at) for per-tenant reads).
CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events (at);
