//! Audit events: who did what, with what outcome. Written off the request
//! path by a background task that batches inserts; security-class events
//! also go to the operator's webhook when one is configured (`webhook`).

pub mod webhook;

use std::time::Duration;

use tokio::sync::mpsc;

use crate::http::SourceAddr;
use crate::store::{AuditRecord, DynStore};
use crate::tenants::Tenant;
use crate::tokens::secret::random_id;
use webhook::{SecurityWebhook, WebhookConfig};

#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<AuditRecord>,
    webhook: Option<SecurityWebhook>,
}

const BATCH: usize = 256;

impl Audit {
    /// Spawns the writer (and the webhook's sender, when configured). Must
    /// be called inside a tokio runtime.
    pub fn start(store: DynStore, webhook: Option<WebhookConfig>) -> Self {
        let (tx, mut rx) = mpsc::channel::<AuditRecord>(10_000);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                let first = rx.recv().await;
                let Some(first) = first else { break };
                batch.push(first);
                // Gather what else arrives within a short window.
                let deadline = tokio::time::sleep(Duration::from_millis(100));
                tokio::pin!(deadline);
                while batch.len() < BATCH {
                    tokio::select! {
                        next = rx.recv() => match next { Some(e) => batch.push(e), None => break },
                        _ = &mut deadline => break,
                    }
                }
                if let Err(e) = store.insert_audit(&batch).await {
                    tracing::error!(error = %e, dropped = batch.len(), "audit events could not be written");
                }
                batch.clear();
            }
        });
        Self {
            tx,
            webhook: webhook.map(SecurityWebhook::start),
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
        self.record_with_id(
            random_id(),
            tenant,
            kind,
            outcome,
            client_id,
            subject,
            source_ip,
            detail,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn record_with_id(
        &self,
        id: String,
        tenant: &Tenant,
        kind: &str,
        outcome: &str,
        client_id: Option<&str>,
        subject: Option<&str>,
        source_ip: Option<&str>,
        detail: serde_json::Value,
    ) {
        let event = AuditRecord {
            id,
            tenant_id: tenant.id.clone(),
            at: unix_now(),
            kind: kind.to_string(),
            outcome: outcome.to_string(),
            client_id: client_id.map(str::to_string),
            subject: subject.map(str::to_string),
            source_ip: source_ip.map(str::to_string),
            detail: detail.to_string(),
        };
        tracing::info!(target: "audit", tenant = %tenant.id, kind, outcome, client_id, subject, "audit");
        if self.tx.try_send(event).is_err() {
            tracing::warn!("audit queue full; event dropped");
        }
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
        if let Some(webhook) = &self.webhook {
            webhook.send(
                &id,
                &serde_json::json!({
                    "id": id,
                    "time": unix_now(),
                    "class": "security",
                    "kind": event.kind,
                    "severity": event.severity,
                    "tenant": tenant.id,
                    "client_id": event.client_id,
                    "subject": event.subject,
                    "source": source,
                    "detail": serde_json::Value::Object(detail.clone()),
                }),
            );
        }
        self.record_with_id(
            id,
            tenant,
            &format!("security.{}", event.kind),
            "detected",
            event.client_id,
            event.subject,
            source.as_deref(),
            serde_json::Value::Object(detail),
        );
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
