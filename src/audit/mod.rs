//! Audit events: who did what, with what outcome.
//!
//! `Audit::record` never blocks and never logs above debug. Events go into
//! a bounded in-memory queue; a writer task takes them in batches of up to
//! `BATCH` rows, one transaction each. When the queue is full (the database
//! is slow or down), events are appended to a bounded spill file in the
//! data directory (`spill`), which the writer drains once it catches up;
//! only when the spill is full too is an event lost, and then it is
//! counted (`AuditStats`) and reported at most once a minute.
//!
//! Every kept event also goes, when configured, to an NDJSON output
//! (`ndjson`) and to a signed audit webhook (`webhook`); security-class
//! events also go to the security webhook. Routine events
//! (`client_credentials` tokens) are counted per client and minute by
//! default instead of being stored one by one (`aggregate`).
//! `Audit::flush` writes everything out at shutdown.

pub mod aggregate;
pub mod ndjson;
mod spill;
pub mod stats;
pub mod webhook;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::http::SourceAddr;
use crate::store::{AuditRecord, DynStore};
use crate::tenants::Tenant;
use crate::tokens::secret::random_id;
pub use aggregate::Routine;
pub use ndjson::{NdjsonOutput, NdjsonTarget};
pub use stats::AuditStats;
use webhook::{SenderOptions, WebhookConfig, WebhookSender};

/// Rows per database transaction, at most.
pub const BATCH: usize = 2000;

/// How the audit pipeline is set up (`gatehouse serve` flags).
pub struct AuditSettings {
    /// Security events, one JSON object per POST.
    pub security_webhook: Option<WebhookConfig>,
    /// Every kept event, JSON arrays.
    pub webhook: Option<WebhookConfig>,
    /// Every kept event, one JSON line each.
    pub ndjson: Option<NdjsonOutput>,
    pub routine: Routine,
    /// Events the in-memory queue holds.
    pub queue: usize,
    /// Directory of the spill files; none: no spill (a full queue loses
    /// events).
    pub spill_dir: Option<PathBuf>,
    /// Bytes all spill files may take together.
    pub spill_max_bytes: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            security_webhook: None,
            webhook: None,
            ndjson: None,
            routine: Routine::Aggregate,
            queue: 10_000,
            spill_dir: None,
            spill_max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// What the final flush managed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Everything recorded is in the database and with the sinks.
    pub complete: bool,
    /// Events lost: neither written nor spilled.
    pub lost: u64,
    /// Bytes left in the spill, written at the next start.
    pub spill_bytes: u64,
    /// Webhook deliveries (events) still pending at the deadline.
    pub undelivered: u64,
}

enum Control {
    /// Write everything out, then stop.
    Flush {
        deadline: std::time::Instant,
        done: oneshot::Sender<FlushReport>,
    },
}

pub(crate) struct Shared {
    tx: mpsc::Sender<AuditRecord>,
    control: mpsc::Sender<Control>,
    clock: Clock,
    routine: Routine,
    aggregator: aggregate::Aggregator,
    spill: Option<spill::Spill>,
    counters: Arc<stats::Counters>,
    /// After the final flush: events go straight to the spill.
    closed: AtomicBool,
}

#[derive(Clone)]
pub struct Audit {
    shared: Arc<Shared>,
    security_webhook: Option<WebhookSender>,
    stats: AuditStats,
}

impl Audit {
    /// Spawns the writer and the webhooks' senders. Must be called inside
    /// a tokio runtime.
    pub fn start(store: DynStore, clock: Clock, settings: AuditSettings) -> Self {
        let counters = Arc::new(stats::Counters::default());
        let (tx, rx) = mpsc::channel::<AuditRecord>(settings.queue.max(1));
        let (control, control_rx) = mpsc::channel(1);
        let spill = settings.spill_dir.as_deref().and_then(|dir| {
            if settings.spill_max_bytes == 0 {
                return None;
            }
            match spill::Spill::open(dir, settings.spill_max_bytes, counters.clone()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "audit spill unavailable: when the queue is full, events are lost (counted)");
                    None
                }
            }
        });
        let security_webhook = settings
            .security_webhook
            .map(|c| WebhookSender::start(c, SenderOptions::SECURITY));
        let webhook = settings
            .webhook
            .map(|c| WebhookSender::start(c, SenderOptions::AUDIT));
        let ndjson = settings.ndjson.and_then(|out| {
            let target = out.target().clone();
            match ndjson::NdjsonSink::start(out, counters.clone()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(output = %target, error = %e, "audit NDJSON output disabled: no thread");
                    None
                }
            }
        });
        let stats = AuditStats {
            c: counters.clone(),
            webhooks: security_webhook.iter().chain(&webhook).cloned().collect(),
        };
        let shared = Arc::new(Shared {
            tx,
            control,
            clock,
            routine: settings.routine,
            aggregator: aggregate::Aggregator::default(),
            spill,
            counters,
            closed: AtomicBool::new(false),
        });
        tokio::spawn(
            writer::Writer {
                store,
                rx,
                control: control_rx,
                shared: shared.clone(),
                ndjson,
                webhook,
                security_webhook: security_webhook.clone(),
            }
            .run(),
        );
        Self {
            shared,
            security_webhook,
            stats,
        }
    }

    /// The pipeline's counters (queue depth, written, dropped, spilled).
    pub fn stats(&self) -> AuditStats {
        self.stats.clone()
    }

    /// Writes out everything recorded so far: the queue, the spill, the
    /// open aggregates, the NDJSON buffer and the webhook queues, waiting
    /// at most `timeout`; then stops the writer. Call once, at shutdown,
    /// after the server stopped taking requests: events recorded later go
    /// to the spill for the next start.
    pub async fn flush(&self, timeout: Duration) -> FlushReport {
        let deadline = std::time::Instant::now() + timeout;
        self.shared.closed.store(true, Ordering::SeqCst);
        let (done, wait) = oneshot::channel();
        if self
            .shared
            .control
            .try_send(Control::Flush { deadline, done })
            .is_err()
        {
            return FlushReport::default();
        }
        // The writer keeps to the deadline; a little slack for its report.
        match tokio::time::timeout(timeout + Duration::from_secs(1), wait).await {
            Ok(Ok(report)) => report,
            _ => FlushReport::default(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        tenant: &Tenant,
        kind: &str,
        outcome: &str,
        client_id: Option<&str>,
        subject: Option<&str>,
        source_ip: Option<&str>,
        detail: serde_json::Value,
    ) {
        let at = self.shared.clock.now();
        if self.shared.routine == Routine::Aggregate {
            if let Some(grant) = aggregate::routine_grant(kind, outcome, &detail) {
                if self
                    .shared
                    .aggregator
                    .add(&tenant.id, client_id, source_ip, grant, at)
                {
                    self.shared
                        .counters
                        .aggregated
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        self.emit(AuditRecord {
            id: random_id(),
            tenant_id: tenant.id.clone(),
            at,
            kind: kind.to_string(),
            outcome: outcome.to_string(),
            client_id: client_id.map(str::to_string),
            subject: subject.map(str::to_string),
            source_ip: source_ip.map(str::to_string),
            detail: detail.to_string(),
        });
    }

    fn emit(&self, mut event: AuditRecord) {
        tracing::debug!(
            target: "audit",
            tenant = %event.tenant_id,
            kind = %event.kind,
            outcome = %event.outcome,
            client_id = event.client_id.as_deref(),
            subject = event.subject.as_deref(),
            "audit"
        );
        for value in [&mut event.kind, &mut event.outcome]
            .into_iter()
            .chain(event.client_id.as_mut())
            .chain(event.subject.as_mut())
            .chain(event.source_ip.as_mut())
        {
            without_nul(value);
        }
        self.shared.enqueue(event);
    }
}

/// PostgreSQL text cannot hold NUL, and one such value would fail its
/// whole batch.
fn without_nul(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
}

impl Shared {
    fn enqueue(&self, event: AuditRecord) {
        let event = if self.closed.load(Ordering::Relaxed) {
            event
        } else {
            match self.tx.try_send(event) {
                Ok(()) => {
                    self.counters.queue_depth.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(mpsc::error::TrySendError::Full(e)) => e,
                Err(mpsc::error::TrySendError::Closed(e)) => e,
            }
        };
        self.spill_or_drop(&event, false);
    }

    /// Puts an event in the spill; counts it as lost when it does not fit.
    fn spill_or_drop(&self, event: &AuditRecord, sunk: bool) -> bool {
        let kept = self.spill.as_ref().is_some_and(|s| {
            spill::SpillLine::encode(event, sunk).is_some_and(|line| s.append(&line))
        });
        let counter = if kept {
            &self.counters.spilled
        } else {
            &self.counters.dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
        kept
    }
}

/// How urgent a security event is: `high` wants a person now (a stolen
/// token was replayed), `medium` a look soon (a burst of failures),
/// `low` a trend to watch (one refusal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// An audit event of the `security` class: stored with kind
/// `security.{kind}` and outcome `detected`, its severity and class in the
/// detail, and sent to the security webhook when one is configured.
/// `docs/security.md` lists every kind and what to do about it.
pub struct SecurityEvent<'a> {
    /// Short snake_case name, e.g. `refresh_reuse`, `code_replay`.
    pub kind: &'static str,
    pub severity: Severity,
    pub client_id: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub source: Option<SourceAddr>,
    /// Anything else worth knowing; never a secret, token or code.
    pub detail: serde_json::Value,
}

impl Audit {
    pub fn security(&self, tenant: &Tenant, event: SecurityEvent<'_>) {
        let mut detail = match event.detail {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => serde_json::Map::new(),
            other => {
                let mut map = serde_json::Map::new();
                map.insert("info".into(), other);
                map
            }
        };
        detail.insert("class".into(), "security".into());
        detail.insert(
            "severity".into(),
            serde_json::to_value(event.severity).unwrap_or_default(),
        );
        let source = event.source.map(|s| s.to_string());
        crate::telemetry::metrics::metrics().security_event(event.kind, event.severity.label());
        tracing::warn!(
            target: "security",
            tenant = %tenant.id,
            kind = event.kind,
            severity = ?event.severity,
            client_id = event.client_id,
            subject = event.subject,
            source = source.as_deref(),
            "security event"
        );
        let id = random_id();
        let at = self.shared.clock.now();
        if let Some(webhook) = &self.security_webhook {
            webhook.send_json(
                &id,
                &serde_json::json!({
                    "id": id,
                    "time": at,
                    "class": "security",
                    "kind": event.kind,
                    "severity": event.severity,
                    "tenant": tenant.id,
                    "client_id": event.client_id,
                    "subject": event.subject,
                    "source": source,
                    "detail": serde_json::Value::Object(detail.clone()),
                }),
                1,
            );
        }
        self.emit(AuditRecord {
            id,
            tenant_id: tenant.id.clone(),
            at,
            kind: format!("security.{}", event.kind),
            outcome: "detected".into(),
            client_id: event.client_id.map(str::to_string),
            subject: event.subject.map(str::to_string),
            source_ip: source,
            detail: serde_json::Value::Object(detail).to_string(),
        });
    }
}
