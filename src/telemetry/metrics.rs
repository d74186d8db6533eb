//! Prometheus metrics: one registry per process, served on the management
//! listener (`telemetry::management`).
//!
//! Every label has a bounded set of values: route templates (never raw
//! paths), HTTP methods and status codes, RFC error codes, and identifiers an
//! administrator configured (tenant, connector). Nothing a caller can choose
//! freely (client ids of self-registered clients, subjects, addresses) is
//! ever a label; `docs/operations.md` lists every family.
//!
//! Call sites use the small functions below (`metrics().token_issued(...)`)
//! so the names and label sets live in this one file.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Prometheus' text exposition of every family, for `GET /metrics`.
pub fn render() -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics().registry);
    out
}

/// Content type of [`render`]'s output (OpenMetrics 1.0, which Prometheus
/// negotiates and parses).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    tenant: String,
    grant_type: &'static str,
    format: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    endpoint: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantKindLabels {
    tenant: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistrationLabels {
    tenant: String,
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    tenant: String,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignInLabels {
    tenant: String,
    connector: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    connector: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorLabels {
    connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SecurityLabels {
    kind: &'static str,
    severity: &'static str,
}

pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<HttpLabels>,
    tokens_issued: Family<TokenLabels, Counter>,
    oauth_errors: Family<ErrorLabels, Counter>,
    replays: Family<TenantKindLabels, Counter>,
    registrations: Family<RegistrationLabels, Counter>,
    exchange_decisions: Family<DecisionLabels, Counter>,
    sign_ins: Family<SignInLabels, Counter>,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_duration: HistogramFamily<ConnectorLabels>,
    db_duration: HistogramFamily<OperationLabels>,
    db_pool: Family<StateLabels, Gauge>,
    db_pool_max: Gauge,
    revocations_heard: Gauge,
    cache_requests: Family<CacheLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    security_events: Family<SecurityLabels, Counter>,
    audit_queue_depth: Gauge,
    audit_dropped: Counter,
    audit_written: Counter,
    /// Scrapes copy counters in one at a time (see [`set_counter`]).
    scrape: Mutex<()>,
}

/// Seconds, from 1 ms to about 16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Database calls are faster: from 0.1 ms to about 3 s.
fn db_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        registry.register(
            "gatehouse_build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let m = Metrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            tokens_issued: Family::default(),
            oauth_errors: Family::default(),
            replays: Family::default(),
            registrations: Family::default(),
            exchange_decisions: Family::default(),
            sign_ins: Family::default(),
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            db_duration: Family::new_with_constructor(db_histogram),
            db_pool: Family::default(),
            db_pool_max: Gauge::default(),
            revocations_heard: Gauge::default(),
            cache_requests: Family::default(),
            rate_limited: Family::default(),
            security_events: Family::default(),
            audit_queue_depth: Gauge::default(),
            audit_dropped: Counter::default(),
            audit_written: Counter::default(),
            scrape: Mutex::new(()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "gatehouse_http_requests",
            "HTTP requests answered, by route template, method and status",
            m.http_requests.clone(),
        );
        r.register(
            "gatehouse_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status",
            m.http_duration.clone(),
        );
        r.register(
            "gatehouse_tokens_issued",
            "Tokens issued, by tenant, grant type and format (jwt, opaque, refresh, id_token)",
            m.tokens_issued.clone(),
        );
        r.register(
            "gatehouse_oauth_errors",
            "OAuth error responses, by endpoint and RFC error code",
            m.oauth_errors.clone(),
        );
        r.register(
            "gatehouse_replays_detected",
            "Replays detected: refresh token reuse, authorization code replay, assertion replay",
            m.replays.clone(),
        );
        r.register(
            "gatehouse_registrations",
            "Client registrations (DCR, client ID metadata documents), by outcome",
            m.registrations.clone(),
        );
        r.register(
            "gatehouse_token_exchange_decisions",
            "RFC 8693 token exchange requests, allowed or denied",
            m.exchange_decisions.clone(),
        );
        r.register(
            "gatehouse_sign_ins",
            "User sign-ins, by tenant, connector and outcome (success, failure, throttled)",
            m.sign_ins.clone(),
        );
        r.register(
            "gatehouse_upstream_requests",
            "Calls to upstream identity providers, by connector and outcome",
            m.upstream_requests.clone(),
        );
        r.register(
            "gatehouse_upstream_request_duration_seconds",
            "Time of calls to upstream identity providers, by connector",
            m.upstream_duration.clone(),
        );
        r.register(
            "gatehouse_db_query_duration_seconds",
            "Time of database operations, by store operation",
            m.db_duration.clone(),
        );
        r.register(
            "gatehouse_db_pool_connections",
            "Database pool connections, idle or in use",
            m.db_pool.clone(),
        );
        r.register(
            "gatehouse_db_pool_max_connections",
            "Largest size of the database pool",
            m.db_pool_max.clone(),
        );
        r.register(
            "gatehouse_revocation_listener_up",
            "1 while this node hears revocations from other nodes (PostgreSQL LISTEN, heartbeat back within a second); 0 otherwise, and always on SQLite",
            m.revocations_heard.clone(),
        );
        r.register(
            "gatehouse_cache_requests",
            "In-process cache lookups, by cache and result (hit, miss)",
            m.cache_requests.clone(),
        );
        r.register(
            "gatehouse_rate_limited",
            "Requests refused or slowed by a rate limit or throttle, by limit",
            m.rate_limited.clone(),
        );
        r.register(
            "gatehouse_security_events",
            "Security events raised, by kind and severity",
            m.security_events.clone(),
        );
        r.register(
            "gatehouse_audit_queue_depth",
            "Audit events waiting to be written",
            m.audit_queue_depth.clone(),
        );
        r.register(
            "gatehouse_audit_events_dropped",
            "Audit events lost (not written to the database)",
            m.audit_dropped.clone(),
        );
        r.register(
            "gatehouse_audit_events_written",
            "Audit events written to the database",
            m.audit_written.clone(),
        );
        Metrics { registry, ..m }
    }

    /// `route` is a route template (see `http_metrics::route_label`): the
    /// labels borrow, so counting a request allocates nothing.
    pub fn http_request(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        let labels = HttpLabels {
            route,
            method,
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn token_issued(&self, tenant: &str, grant_type: &str, format: &'static str) {
        self.tokens_issued
            .get_or_create(&TokenLabels {
                tenant: tenant.to_string(),
                grant_type: grant_label(grant_type),
                format,
            })
            .inc();
    }

    pub fn oauth_error(&self, endpoint: &'static str, error: &'static str) {
        self.oauth_errors
            .get_or_create(&ErrorLabels { endpoint, error })
            .inc();
    }

    /// `kind`: `refresh_reuse`, `code_replay` or `assertion_replay`.
    pub fn replay_detected(&self, tenant: &str, kind: &'static str) {
        self.replays
            .get_or_create(&TenantKindLabels {
                tenant: tenant.to_string(),
                kind,
            })
            .inc();
    }

    /// `method`: `dcr` or `metadata_document`; `outcome`: `created` or `refused`.
    pub fn registration(&self, tenant: &str, method: &'static str, outcome: &'static str) {
        self.registrations
            .get_or_create(&RegistrationLabels {
                tenant: tenant.to_string(),
                method,
                outcome,
            })
            .inc();
    }

    pub fn exchange_decision(&self, tenant: &str, allowed: bool) {
        self.exchange_decisions
            .get_or_create(&DecisionLabels {
                tenant: tenant.to_string(),
                decision: if allowed { "allowed" } else { "denied" },
            })
            .inc();
    }

    /// `outcome`: `success`, `failure` or `throttled`.
    pub fn sign_in(&self, tenant: &str, connector: &str, outcome: &'static str) {
        self.sign_ins
            .get_or_create(&SignInLabels {
                tenant: tenant.to_string(),
                connector: connector.to_string(),
                outcome,
            })
            .inc();
    }

    pub fn upstream_request(&self, connector: &str, ok: bool, elapsed: Duration) {
        self.upstream_requests
            .get_or_create(&UpstreamLabels {
                connector: connector.to_string(),
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
        self.upstream_duration
            .get_or_create(&ConnectorLabels {
                connector: connector.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn db_operation(&self, operation: &'static str, elapsed: Duration) {
        self.db_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// Sampled at scrape: whether `store::changes` hears other nodes.
    pub fn revocation_listener(&self, listening: bool) {
        self.revocations_heard.set(i64::from(listening));
    }

    pub fn db_pool(&self, stats: crate::store::PoolStats) {
        let idle = stats.idle.min(stats.size);
        self.db_pool
            .get_or_create(&StateLabels { state: "idle" })
            .set(i64::from(idle));
        self.db_pool
            .get_or_create(&StateLabels { state: "in_use" })
            .set(i64::from(stats.size - idle));
        self.db_pool_max.set(i64::from(stats.max));
    }

    pub fn cache(&self, cache: &'static str, hit: bool) {
        self.cache_requests
            .get_or_create(&CacheLabels {
                cache,
                result: if hit { "hit" } else { "miss" },
            })
            .inc();
    }

    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    pub fn security_event(&self, kind: &'static str, severity: &'static str) {
        self.security_events
            .get_or_create(&SecurityLabels { kind, severity })
            .inc();
    }

    /// The audit writer's counters, read at scrape time.
    pub fn audit(&self, queue_depth: u64, written_total: u64, dropped_total: u64) {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.audit_queue_depth
            .set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        set_counter(&self.audit_written, written_total);
        set_counter(&self.audit_dropped, dropped_total);
    }
}

/// Counters owned elsewhere (the audit writer's atomics) are copied in at
/// scrape time; they only ever grow.
fn set_counter(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

/// Grant types are a closed set; anything else is `other` so a caller
/// cannot mint label values.
fn grant_label(grant_type: &str) -> &'static str {
    use crate::tenants::SUPPORTED_GRANTS;
    SUPPORTED_GRANTS
        .iter()
        .find(|g| **g == grant_type)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_grant_types_share_one_label() {
        assert_eq!(grant_label("urn:evil:grant"), "other");
        assert_eq!(grant_label("client_credentials"), "client_credentials");
    }

    #[test]
    fn renders_every_family_with_build_info() {
        metrics().http_request("/token", "POST", 200, Duration::from_millis(3));
        let text = render();
        assert!(text.contains("gatehouse_build_info{version=\""), "{text}");
        assert!(
            text.contains(
                "gatehouse_http_requests_total{route=\"/token\",method=\"POST\",status=\"200\"}"
            ),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
