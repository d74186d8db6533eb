//! The fixed-window rate limits of the endpoints that create things or take
//! guesses: self-registrations (per source and per tenant, from the
//! tenant's registration policy) and device user-code entries (per source).
//! Each refusal is counted in `gatehouse_rate_limited_total`; the endpoint
//! only renders it in its own protocol's format (RFC 7591 JSON, the device
//! page).

use std::time::Duration;

use super::source_key;
use crate::http::SourceAddr;
use crate::telemetry::metrics::metrics;
use crate::tenants::Tenant;
use crate::AppState;

const MINUTE: Duration = Duration::from_secs(60);

/// Device user-code entries per address a minute, so guessing a live code
/// (20^8 possibilities, 10 minutes to live) is hopeless.
pub const CODE_ENTRIES_PER_MINUTE: u64 = 10;

/// A request over a limit: what to tell the caller, and when to retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    pub message: &'static str,
    pub retry_after: u64,
}

async fn take(
    app: &AppState,
    key: &str,
    limit: u64,
    label: &'static str,
    message: &'static str,
) -> Result<(), Limited> {
    let count = app.limits.take(key, limit, MINUTE).await;
    if count.allowed {
        return Ok(());
    }
    metrics().rate_limited(label);
    Err(Limited {
        message,
        retry_after: count.retry_after(),
    })
}

/// One more self-registration at `tenant` from `source`.
pub async fn registration(
    app: &AppState,
    tenant: &Tenant,
    source: SourceAddr,
) -> Result<(), Limited> {
    let policy = &tenant.settings.registration;
    take(
        app,
        &format!("reg:src:{}:{}", tenant.id, source_key(source)),
        u64::from(policy.per_ip_per_minute),
        "registration_source",
        "too many registrations from this address",
    )
    .await?;
    take(
        app,
        &format!("reg:tenant:{}", tenant.id),
        u64::from(policy.per_tenant_per_minute),
        "registration_tenant",
        "too many registrations at this authorization server",
    )
    .await
}

/// One more device user-code entry from `source`. Every attempt counts,
/// right or wrong.
pub async fn device_code_entry(app: &AppState, source: SourceAddr) -> Result<(), Limited> {
    take(
        app,
        &format!("device:src:{}", source_key(source)),
        CODE_ENTRIES_PER_MINUTE,
        "device_code_entry",
        "Too many attempts. Wait a minute and try again.",
    )
    .await
}
