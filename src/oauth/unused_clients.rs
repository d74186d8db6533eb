//! Self-registered clients that never obtain a token expire: the token
//! endpoint notes a client's first use, registration purges, now and then,
//! the registrations older than the tenant's `unused_client_ttl` never used.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use moka::future::Cache;

use crate::oauth::client_auth::Client;
use crate::tenants::Tenant;
use crate::AppState;

/// `clients.source` of a client registered through DCR (RFC 7591).
pub const SOURCE_DCR: &str = "dcr";

/// Records that a self-registered client obtained a token, once per client
/// per node (later calls are answered from memory). Call after a successful
/// token response; failures are logged, never returned.
pub async fn note_client_used(app: &AppState, tenant_id: &str, client: &Client) {
    static SEEN: OnceLock<Cache<String, ()>> = OnceLock::new();
    if client.source != SOURCE_DCR {
        return;
    }
    let seen = SEEN
        .get_or_init(|| crate::app::new_cache(std::time::Duration::from_secs(24 * 3600), 100_000));
    let key = format!("{tenant_id}\n{}", client.client_id);
    if seen.get(&key).await.is_some() {
        return;
    }
    match app
        .store
        .mark_client_used(tenant_id, &client.client_id, app.now())
        .await
    {
        Ok(()) => seen.insert(key, ()).await,
        Err(e) => tracing::warn!(error = %e, "could not record the client's first use"),
    }
}

/// How often one node purges a tenant's never-used registrations.
const PURGE_INTERVAL: i64 = 600;

/// After a registration, at most every `PURGE_INTERVAL` seconds per tenant
/// and node: delete self-registered clients older than the tenant's
/// `unused_client_ttl` that never obtained a token, and expired initial
/// access tokens. Runs in the background.
pub fn maybe_purge_unused(app: &AppState, tenant: &Tenant) {
    static LAST: OnceLock<Mutex<HashMap<String, i64>>> = OnceLock::new();
    let now = app.now();
    {
        let mut last = LAST
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match last.get(&tenant.id) {
            Some(at) if now - at < PURGE_INTERVAL => return,
            _ => {
                last.insert(tenant.id.clone(), now);
            }
        }
    }
    let store = app.store.clone();
    let tenant_id = tenant.id.clone();
    let cutoff = now - tenant.settings.registration.unused_client_ttl;
    tokio::spawn(async move {
        match store
            .purge_unused_dynamic_clients(&tenant_id, cutoff, now)
            .await
        {
            Ok(n) if n > 0 => {
                tracing::info!(tenant = %tenant_id, removed = n, "purged never-used registrations")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging never-used registrations failed"),
        }
    });
}
