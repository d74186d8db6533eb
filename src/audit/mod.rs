//! Audit events: who did what, with what outcome. Written off the request
//! path by a background task that batches inserts.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::{AuditRecord, DynStore};
use crate::tenants::Tenant;
use crate::tokens::secret::random_id;

#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<AuditRecord>,
}

const BATCH: usize = 256;

impl Audit {
    /// Spawns the writer. Must be called inside a tokio runtime.
    pub fn start(store: DynStore) -> Self {
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
        Self { tx }
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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let event = AuditRecord {
            id: random_id(),
            tenant_id: tenant.id.clone(),
            at: now,
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
