//! The sign-in and client-authentication throttles. Every password or
//! client-secret check goes through [`begin`]:
//!
//! * Failures are counted per (account or client, source address) and per
//!   source address, in fixed windows (`window`, 15 minutes by default).
//!   After `free_failures` failures of one account from one source, each
//!   attempt waits a growing delay (`base_delay` doubling up to
//!   `max_delay`); at `max_failures` (or `max_failures_per_source` from one
//!   source for any accounts) attempts are refused with 429 and
//!   `Retry-After` until the window ends, before anything is looked up or
//!   hashed.
//! * Throttling is keyed by source, never by the account alone: the real
//!   user or client, from its own address, is not locked out by an attack
//!   on its name. A success from a source clears that account's count there.
//! * At most `max_in_flight_per_source` checks from one source run at once
//!   on a node; more are refused (429, `Retry-After: 1`). With the bounded
//!   hashing pool this keeps one source from filling the queue that
//!   everyone else's sign-ins wait in.
//! * A source or an account (over all sources) reaching `burst_threshold`
//!   failures in a window raises a `*_failure_burst` security event, and a
//!   refusal a `*_throttled` event: each at most once per window and key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::{source_key, text_key, Limits};
use crate::audit::{SecurityEvent, Severity};
use crate::http::SourceAddr;
use crate::telemetry::metrics::metrics;
use crate::tenants::Tenant;
use crate::AppState;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleSettings {
    pub window: Duration,
    pub free_failures: u64,
    pub max_failures: u64,
    pub max_failures_per_source: u64,
    pub burst_threshold: u64,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_in_flight_per_source: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(900),
            free_failures: 3,
            max_failures: 10,
            max_failures_per_source: 100,
            burst_threshold: 20,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
            max_in_flight_per_source: 4,
        }
    }
}

impl ThrottleSettings {
    /// The growing delay before an attempt that follows `failures` failures.
    pub fn delay(&self, failures: u64) -> Duration {
        if failures < self.free_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free_failures).min(16) as u32;
        self.base_delay
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max_delay)
    }
}

/// What is being guessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A user's password at the login form.
    Login,
    /// A client's secret, assertion or registration access token.
    ClientAuth,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Login => "login",
            Kind::ClientAuth => "cauth",
        }
    }
    fn throttled_event(self) -> &'static str {
        match self {
            Kind::Login => "login_throttled",
            Kind::ClientAuth => "client_auth_throttled",
        }
    }
    fn burst_event(self) -> &'static str {
        match self {
            Kind::Login => "login_failure_burst",
            Kind::ClientAuth => "client_auth_failure_burst",
        }
    }
}

/// An attempt refused before any check: answer 429 with `Retry-After`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: u64,
    /// For the person or client: why, without saying which account.
    pub message: String,
}

/// Attempts under way per source on this node.
#[derive(Clone)]
pub struct InFlight {
    max: usize,
    by_source: Arc<Mutex<HashMap<String, usize>>>,
}

pub struct Slot {
    key: String,
    by_source: Arc<Mutex<HashMap<String, usize>>>,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            by_source: Arc::default(),
        }
    }

    fn enter(&self, key: &str) -> Option<Slot> {
        let mut map = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.to_string()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            key: key.to_string(),
            by_source: self.by_source.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// An admitted attempt: report how it ended.
pub struct Attempt {
    kind: Kind,
    who: String,
    pair: String,
    source_key: String,
    all: String,
    source: SourceAddr,
    had_failures: bool,
    /// Held from the check to the outcome (sign-in).
    slot: Option<Slot>,
}

fn keys(kind: Kind, tenant: &Tenant, who: &str, source: SourceAddr) -> (String, String, String) {
    let p = kind.prefix();
    let who = text_key(who);
    let src = source_key(source);
    (
        format!("{p}:pair:{}:{who}:{src}", tenant.id),
        format!("{p}:src:{src}"),
        format!("{p}:all:{}:{who}", tenant.id),
    )
}

/// The metrics label of a refusal: which kind of attempt, counted by what.
fn limit_label(kind: Kind, scope: &str) -> &'static str {
    match (kind, scope) {
        (Kind::Login, "source") => "sign_in_source",
        (Kind::Login, "in_flight") => "sign_in_in_flight",
        (Kind::Login, _) => "sign_in_account",
        (Kind::ClientAuth, "source") => "client_auth_source",
        (Kind::ClientAuth, "in_flight") => "client_auth_in_flight",
        (Kind::ClientAuth, _) => "client_auth_client",
    }
}

/// Records a refusal (as a security event, once per window and key) and
/// returns it.
async fn refuse(
    app: &AppState,
    tenant: &Tenant,
    (kind, who, source): (Kind, &str, SourceAddr),
    (retry_after, message, scope, key): (u64, &str, &str, &str),
) -> Throttled {
    metrics().rate_limited(limit_label(kind, scope));
    let limits = &app.limits;
    if limits
        .once_per_window(&format!("evt:{key}"), limits.settings.window)
        .await
    {
        app.audit.security(
            tenant,
            SecurityEvent {
                kind: kind.throttled_event(),
                severity: Severity::Medium,
                client_id: (kind == Kind::ClientAuth).then_some(who),
                subject: None,
                source: Some(source),
                detail: json!({
                    "scope": scope,
                    "account": (kind == Kind::Login).then(|| bounded(who)),
                    "retry_after": retry_after,
                }),
            },
        );
    }
    Throttled {
        retry_after,
        message: message.to_string(),
    }
}

/// Admits or refuses an attempt to authenticate as `who` (a username or a
/// client id) from `source`, waiting the growing delay first. Cheap: two
/// counter reads, nothing looked up or hashed.
pub async fn begin(
    app: &AppState,
    tenant: &Tenant,
    kind: Kind,
    who: &str,
    source: SourceAddr,
) -> Result<Attempt, Throttled> {
    let limits: &Limits = &app.limits;
    let s = limits.settings;
    let (pair, source_k, all) = keys(kind, tenant, who, source);
    // A password is always hashed: take the source's place first, so that
    // at most `max_in_flight_per_source` attempts are between the check
    // below and their outcome (the overshoot a concurrent burst can get).
    let slot = match kind {
        Kind::Login => Some(enter(app, tenant, (kind, who, source)).await?),
        Kind::ClientAuth => None,
    };
    let by_source = limits.peek(&source_k).await;
    if by_source.count >= s.max_failures_per_source {
        let why = (
            by_source.retry_after(),
            "Too many failed attempts from this address.",
            "source",
            source_k.as_str(),
        );
        return Err(refuse(app, tenant, (kind, who, source), why).await);
    }
    let by_pair = limits.peek(&pair).await;
    if by_pair.count >= s.max_failures {
        let why = (
            by_pair.retry_after(),
            "Too many failed attempts.",
            "account_source",
            pair.as_str(),
        );
        return Err(refuse(app, tenant, (kind, who, source), why).await);
    }
    let delay = s.delay(by_pair.count);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(Attempt {
        kind,
        who: who.to_string(),
        had_failures: by_pair.count > 0,
        pair,
        source_key: source_k,
        all,
        source,
        slot,
    })
}

async fn enter(
    app: &AppState,
    tenant: &Tenant,
    (kind, who, source): (Kind, &str, SourceAddr),
) -> Result<Slot, Throttled> {
    let src = source_key(source);
    match app.limits.in_flight.enter(&src) {
        Some(slot) => Ok(slot),
        None => {
            let key = format!("{}:inflight:{src}", kind.prefix());
            let why = (
                1,
                "Too many attempts at once from this address.",
                "in_flight",
                key.as_str(),
            );
            Err(refuse(app, tenant, (kind, who, source), why).await)
        }
    }
}

impl Attempt {
    /// A place among the checks this node runs for this source: at most
    /// `max_in_flight_per_source` at once (429, `Retry-After: 1` beyond).
    /// Hold it while hashing. (A sign-in attempt holds one from `begin`.)
    pub async fn hashing_slot(
        &self,
        app: &AppState,
        tenant: &Tenant,
    ) -> Result<Option<Slot>, Throttled> {
        if self.slot.is_some() {
            return Ok(None);
        }
        enter(app, tenant, (self.kind, &self.who, self.source))
            .await
            .map(Some)
    }
}

fn bounded(s: &str) -> String {
    s.chars().take(100).collect()
}

impl Attempt {
    /// The credentials were right: this account's failures from this
    /// source are forgotten.
    pub async fn succeeded(self, app: &AppState) {
        if self.had_failures {
            app.limits.reset(&self.pair).await;
        }
    }

    /// The credentials were wrong (or named nobody).
    pub async fn failed(self, app: &AppState, tenant: &Tenant) {
        let limits = &app.limits;
        let s = limits.settings;
        let never = u64::MAX;
        limits.take(&self.pair, never, s.window).await;
        let by_source = limits.take(&self.source_key, never, s.window).await;
        let by_account = limits.take(&self.all, never, s.window).await;
        for (scope, count, key) in [
            ("source", by_source.count, &self.source_key),
            ("account", by_account.count, &self.all),
        ] {
            if count >= s.burst_threshold
                && limits
                    .once_per_window(&format!("evt:burst:{key}"), s.window)
                    .await
            {
                let who = self.who.as_str();
                app.audit.security(
                    tenant,
                    SecurityEvent {
                        kind: self.kind.burst_event(),
                        severity: Severity::Medium,
                        client_id: (self.kind == Kind::ClientAuth).then_some(who),
                        subject: None,
                        source: Some(self.source),
                        detail: json!({
                            "scope": scope,
                            "failures": count,
                            "window_seconds": s.window.as_secs(),
                            "account": (self.kind == Kind::Login).then(|| bounded(who)),
                        }),
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_then_stops_growing() {
        let s = ThrottleSettings::default();
        assert_eq!(s.delay(0), Duration::ZERO);
        assert_eq!(s.delay(2), Duration::ZERO);
        assert_eq!(s.delay(3), Duration::from_millis(250));
        assert_eq!(s.delay(4), Duration::from_millis(500));
        assert_eq!(s.delay(5), Duration::from_secs(1));
        assert_eq!(s.delay(9), Duration::from_secs(2));
        assert_eq!(s.delay(u64::MAX), Duration::from_secs(2));
    }

    #[test]
    fn in_flight_attempts_are_bounded_per_source() {
        let f = InFlight::new(2);
        let a = f.enter("s").unwrap();
        let _b = f.enter("s").unwrap();
        assert!(f.enter("s").is_none());
        assert!(f.enter("other").is_some());
        drop(a);
        assert!(f.enter("s").is_some());
    }
}
