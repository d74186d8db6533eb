//! The store as the server uses it: every call of the [`Store`] trait runs
//! in a span (OpenTelemetry name `db.<method>`, attributes `db.system`
//! `sqlite` or `postgresql` and `db.operation` the method), marked as an
//! error when the call fails. Spans are at `debug`: without trace export
//! and below that log level they cost nothing.
//!
//! All delegation passes through [`TracedStore::observe`], which also
//! times every call into `gatehouse_db_query_duration_seconds{operation}`.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use tracing::field::Empty;
use tracing::Instrument;

use crate::store::*;
use crate::telemetry::metrics::metrics;

/// A [`Store`] whose calls are traced; see the module documentation.
pub struct TracedStore {
    inner: DynStore,
    system: &'static str,
}

impl TracedStore {
    /// Wraps `inner`; the store the server and the commands use.
    pub fn wrap(inner: DynStore) -> DynStore {
        let system = match inner.backend() {
            "postgres" => "postgresql",
            other => other,
        };
        Arc::new(TracedStore { inner, system })
    }

    /// Runs one store call, `op` being the [`Store`] method's name and
    /// `span_name` `db.<op>`.
    async fn observe<T>(
        &self,
        op: &'static str,
        span_name: &'static str,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let span = tracing::debug_span!(
            "db",
            otel.name = span_name,
            otel.kind = "client",
            db.system = self.system,
            db.operation = op,
            otel.status_code = Empty,
        );
        let started = std::time::Instant::now();
        let result = call.instrument(span.clone()).await;
        metrics().db_operation(op, started.elapsed());
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }
}

/// The [`Store`] impl: `backend` as is, every other method through
/// [`TracedStore::observe`]. A method added to the trait must be listed
/// here (the impl does not compile until it is).
macro_rules! traced_store {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        #[async_trait]
        impl Store for TracedStore {
            fn backend(&self) -> &'static str {
                self.inner.backend()
            }

            fn pool_stats(&self) -> PoolStats {
                self.inner.pool_stats()
            }

            fn changes(&self) -> &Arc<Changes> {
                self.inner.changes()
            }

            fn watch_changes(&self) {
                self.inner.watch_changes()
            }

            $(
                async fn $name(&self, $($arg: $ty),*) -> $ret {
                    self.observe(
                        stringify!($name),
                        concat!("db.", stringify!($name)),
                        self.inner.$name($($arg),*),
                    )
                    .await
                }
            )*
        }
    };
}

traced_store! {
    migrate() -> StoreResult<()>;
    ping() -> StoreResult<()>;
    upsert_tenant(t: &TenantRecord) -> StoreResult<()>;
    get_tenant(id: &str) -> StoreResult<Option<TenantRecord>>;
    list_tenants() -> StoreResult<Vec<TenantRecord>>;
    list_keys(tenant_id: &str) -> StoreResult<Vec<KeyRecord>>;
    insert_keys(keys: &[KeyRecord]) -> StoreResult<()>;
    rotate_keys(tenant_id: &str, promote: Option<&str>, retire: Option<&str>, new_next: &KeyRecord, now: i64, publish_until: i64) -> StoreResult<()>;
    upsert_client(c: &ClientRecord) -> StoreResult<()>;
    get_client(tenant_id: &str, client_id: &str) -> StoreResult<Option<ClientRecord>>;
    list_clients(tenant_id: &str) -> StoreResult<Vec<ClientRecord>>;
    delete_client(tenant_id: &str, client_id: &str) -> StoreResult<bool>;
    upsert_resource(r: &ResourceRecord) -> StoreResult<()>;
    list_resources(tenant_id: &str) -> StoreResult<Vec<ResourceRecord>>;
    map_identity(rec: &IdentityRecord, now: i64) -> StoreResult<String>;
    get_identity_by_subject(tenant_id: &str, subject: &str) -> StoreResult<Option<IdentityRecord>>;
    get_upstream_session(tenant_id: &str, subject: &str) -> StoreResult<Option<String>>;
    put_upstream_session(tenant_id: &str, subject: &str, data: Option<&str>) -> StoreResult<()>;
    put_pending(p: &HandleRecord) -> StoreResult<()>;
    get_pending(tenant_id: &str, hash: &str, now: i64) -> StoreResult<Option<HandleRecord>>;
    take_pending(tenant_id: &str, hash: &str, now: i64) -> StoreResult<Option<HandleRecord>>;
    put_session(s: &SessionRecord) -> StoreResult<()>;
    get_session(tenant_id: &str, hash: &str, now: i64) -> StoreResult<Option<SessionRecord>>;
    delete_session(tenant_id: &str, hash: &str) -> StoreResult<()>;
    get_consent(tenant_id: &str, subject: &str, client_id: &str) -> StoreResult<Option<String>>;
    put_consent(tenant_id: &str, subject: &str, client_id: &str, scopes: &str, now: i64) -> StoreResult<()>;
    create_grant_with_code(g: &GrantRecord, code: &CodeRecord) -> StoreResult<()>;
    create_grant(g: &GrantRecord) -> StoreResult<()>;
    get_grant(id: &str) -> StoreResult<Option<GrantRecord>>;
    revoke_grant(id: &str, now: i64) -> StoreResult<()>;
    revoke_subject(tenant_id: &str, subject: &str, now: i64) -> StoreResult<u64>;
    subject_revoked_at(tenant_id: &str, subject: &str) -> StoreResult<Option<i64>>;
    redeem_code(tenant_id: &str, code_hash: &str, now: i64, on_redeem: OnRedeem<'_>) -> StoreResult<CodeRedemption>;
    put_refresh(r: &RefreshRecord) -> StoreResult<()>;
    get_refresh(tenant_id: &str, hash: &str) -> StoreResult<Option<(RefreshRecord, Option<i64>)>>;
    rotate_refresh(tenant_id: &str, old_hash: &str, new: &RefreshRecord, access: Option<&AccessTokenRecord>, now: i64) -> StoreResult<RefreshRotation>;
    put_access_token(a: &AccessTokenRecord) -> StoreResult<()>;
    put_issued(rows: &IssuedRows) -> StoreResult<()>;
    access_token_state(tenant_id: &str, jti: &str, now: i64) -> StoreResult<AccessTokenState>;
    access_token_grant_id(tenant_id: &str, jti: &str) -> StoreResult<Option<String>>;
    find_opaque_token(tenant_id: &str, hash: &str) -> StoreResult<Option<(AccessTokenRecord, AccessTokenState)>>;
    revoke_access_token(a: &AccessTokenRecord, now: i64) -> StoreResult<()>;
    remember_jti(tenant_id: &str, scope: &str, jti: &str, expires_at: i64, now: i64) -> StoreResult<bool>;
    insert_audit(events: &[AuditRecord]) -> StoreResult<()>;
    list_audit(tenant_id: &str, limit: i64) -> StoreResult<Vec<AuditRecord>>;
    purge_audit_before(before: i64) -> StoreResult<u64>;
    purge_expired(now: i64) -> StoreResult<u64>;
    create_dynamic_client(c: &ClientRecord, reg: &RegistrationRecord) -> StoreResult<()>;
    get_registration(tenant_id: &str, client_id: &str) -> StoreResult<Option<RegistrationRecord>>;
    update_dynamic_client(c: &ClientRecord, reg: &RegistrationRecord) -> StoreResult<bool>;
    delete_dynamic_client(tenant_id: &str, client_id: &str, now: i64) -> StoreResult<bool>;
    put_initial_access_token(t: &InitialAccessTokenRecord) -> StoreResult<()>;
    initial_access_token_valid(tenant_id: &str, hash: &str, now: i64) -> StoreResult<bool>;
    mark_client_used(tenant_id: &str, client_id: &str, now: i64) -> StoreResult<()>;
    purge_unused_dynamic_clients(tenant_id: &str, created_before: i64, now: i64) -> StoreResult<u64>;
    put_device(d: &DeviceRecord) -> StoreResult<()>;
    find_pending_device_by_user_code(tenant_id: &str, user_code_hash: &str, now: i64) -> StoreResult<Option<DeviceRecord>>;
    decide_device(tenant_id: &str, device_code_hash: &str, status: &str, subject: &str, grant_id: Option<&str>, now: i64) -> StoreResult<bool>;
    poll_device(tenant_id: &str, device_code_hash: &str, now: i64, slow_down: bool) -> StoreResult<Option<DeviceRecord>>;
    consume_device(tenant_id: &str, device_code_hash: &str) -> StoreResult<bool>;
}
