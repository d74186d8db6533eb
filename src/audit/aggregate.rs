//! Routine events counted instead of stored one by one
//! (`GATEHOUSE_AUDIT_ROUTINE=aggregate`, the default).
//!
//! Routine: a successful `client_credentials` token (kind `token`, outcome
//! `success`, `grant_type` `client_credentials`). Each is counted under its
//! (tenant, client, source address, minute); once the minute is over the
//! writer turns every count into one `token` event whose detail says
//! `"aggregated": true` and how many tokens it stands for. Counting is
//! exact: nothing is sampled, and what is still counting at shutdown is
//! written then. Every other event (failures, user-facing and security
//! events) is always recorded on its own.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::AuditRecord;
use crate::tokens::secret::random_id;

/// Whether routine events are aggregated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Routine {
    /// One event per token, like every other event.
    All,
    /// One event per (tenant, client, source, minute) with a count.
    #[default]
    Aggregate,
}

impl std::str::FromStr for Routine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "aggregate" => Ok(Self::Aggregate),
            other => Err(format!("'{other}' is not one of: all, aggregate")),
        }
    }
}

/// The length of an aggregation window, seconds.
pub const WINDOW: i64 = 60;

/// Distinct windows counting at once, at most; beyond, events are
/// recorded one by one (nothing is lost, only not folded).
const MAX_KEYS: usize = 100_000;

/// Whether an event is routine: the grant type it aggregates under.
pub(crate) fn routine_grant(
    kind: &str,
    outcome: &str,
    detail: &serde_json::Value,
) -> Option<&'static str> {
    (kind == "token"
        && outcome == "success"
        && detail.get("grant_type").and_then(|g| g.as_str()) == Some("client_credentials"))
    .then_some("client_credentials")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    tenant: String,
    client_id: Option<String>,
    source_ip: Option<String>,
    grant_type: &'static str,
    window: i64,
}

#[derive(Clone, Copy, Debug)]
struct Tally {
    count: u64,
    first: i64,
    last: i64,
}

#[derive(Default)]
pub(crate) struct Aggregator {
    counts: Mutex<HashMap<Key, Tally>>,
}

impl Aggregator {
    /// Counts one routine event at `at`; false when too many windows are
    /// open (the caller records the event itself).
    pub fn add(
        &self,
        tenant: &str,
        client_id: Option<&str>,
        source_ip: Option<&str>,
        grant_type: &'static str,
        at: i64,
    ) -> bool {
        let key = Key {
            tenant: tenant.to_string(),
            client_id: client_id.map(str::to_string),
            source_ip: source_ip.map(str::to_string),
            grant_type,
            window: at.div_euclid(WINDOW),
        };
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let full = counts.len() >= MAX_KEYS;
        match counts.get_mut(&key) {
            Some(t) => {
                t.count += 1;
                t.first = t.first.min(at);
                t.last = t.last.max(at);
                true
            }
            None if full => false,
            None => {
                counts.insert(
                    key,
                    Tally {
                        count: 1,
                        first: at,
                        last: at,
                    },
                );
                true
            }
        }
    }

    /// The events of windows that ended before `now`.
    pub fn take_due(&self, now: i64) -> Vec<AuditRecord> {
        let current = now.div_euclid(WINDOW);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let due: Vec<Key> = counts
            .keys()
            .filter(|k| k.window < current)
            .cloned()
            .collect();
        due.into_iter()
            .filter_map(|k| counts.remove(&k).map(|t| event(k, t)))
            .collect()
    }

    /// Every window's event, finished or not (shutdown).
    pub fn take_all(&self) -> Vec<AuditRecord> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.drain().map(|(k, t)| event(k, t)).collect()
    }
}

fn event(k: Key, t: Tally) -> AuditRecord {
    let detail = serde_json::json!({
        "grant_type": k.grant_type,
        "aggregated": true,
        "count": t.count,
        "first": t.first,
        "last": t.last,
        "window_start": k.window * WINDOW,
        "window_seconds": WINDOW,
    });
    AuditRecord {
        id: random_id(),
        tenant_id: k.tenant,
        at: t.first,
        kind: "token".into(),
        outcome: "success".into(),
        client_id: k.client_id,
        subject: None,
        source_ip: k.source_ip,
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn count_of(r: &AuditRecord) -> u64 {
        serde_json::from_str::<serde_json::Value>(&r.detail).unwrap()["count"]
            .as_u64()
            .unwrap()
    }

    #[test]
    fn only_successful_client_credentials_tokens_are_routine() {
        let cc = json!({"grant_type": "client_credentials"});
        assert_eq!(
            routine_grant("token", "success", &cc),
            Some("client_credentials")
        );
        assert_eq!(routine_grant("token", "failure", &cc), None);
        assert_eq!(
            routine_grant(
                "token",
                "success",
                &json!({"grant_type": "authorization_code"})
            ),
            None
        );
        assert_eq!(
            routine_grant("security.refresh_reuse", "detected", &cc),
            None
        );
    }

    #[test]
    fn counts_are_exact_per_client_source_and_minute() {
        let agg = Aggregator::default();
        let t0 = 1_700_000_020; // 40 s into a minute
        for i in 0..1000 {
            let client = if i % 3 == 0 { "a" } else { "b" };
            assert!(agg.add(
                "default",
                Some(client),
                Some("10.0.0.1"),
                "client_credentials",
                t0 + (i % 30)
            ));
        }
        // The next minute has started for some of them.
        for _ in 0..7 {
            assert!(agg.add(
                "default",
                Some("a"),
                Some("10.0.0.1"),
                "client_credentials",
                t0 + 25
            ));
        }
        assert!(agg.take_due(t0).is_empty(), "the minute is not over");
        let due = agg.take_due(t0 + 20);
        let total: u64 = due.iter().map(count_of).sum();
        let rest: u64 = agg.take_all().iter().map(count_of).sum();
        assert_eq!(total + rest, 1007, "every token counted once");
        assert!(due.iter().all(|r| r.at < t0 + 20));
        assert!(agg.take_all().is_empty(), "taken means gone");
    }

    #[test]
    fn an_aggregate_says_what_it_stands_for() {
        let agg = Aggregator::default();
        agg.add(
            "t",
            Some("svc"),
            Some("10.0.0.9"),
            "client_credentials",
            120,
        );
        agg.add(
            "t",
            Some("svc"),
            Some("10.0.0.9"),
            "client_credentials",
            150,
        );
        let events = agg.take_due(180);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!((e.kind.as_str(), e.outcome.as_str()), ("token", "success"));
        assert_eq!(e.client_id.as_deref(), Some("svc"));
        assert_eq!(e.source_ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(e.at, 120);
        let d: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
        assert_eq!(
            d,
            json!({"grant_type": "client_credentials", "aggregated": true, "count": 2,
                   "first": 120, "last": 150, "window_start": 120, "window_seconds": 60})
        );
    }
}
