//! The writer task: queue → sinks → database, the spill drained when the
//! queue is empty, aggregates written when their minute ends, losses
//! reported at most once a minute, everything written out at shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::ndjson::{EventJson, NdjsonSink};
use super::spill::DrainReader;
use super::stats::LossReporter;
use super::webhook::{Outgoing, WebhookSender};
use super::{Control, FlushReport, Shared, BATCH};
use crate::store::{AuditRecord, DynStore};
use crate::tokens::secret::random_id;

/// How long the writer waits for a batch to fill when events trickle in.
const GATHER: Duration = Duration::from_millis(50);
/// Events per audit webhook POST, at most.
const WEBHOOK_BATCH: usize = 500;
/// Consecutive failures of one batch, with the database answering, after
/// which its rows are tried one by one (a row the database refuses must
/// not hold up the others).
const ROW_BY_ROW_AFTER: u32 = 3;

pub(super) struct Writer {
    pub store: DynStore,
    pub rx: mpsc::Receiver<AuditRecord>,
    pub control: mpsc::Receiver<Control>,
    pub shared: Arc<Shared>,
    pub ndjson: Option<NdjsonSink>,
    pub webhook: Option<WebhookSender>,
    pub security_webhook: Option<WebhookSender>,
}

enum Step {
    Done(crate::store::StoreResult<()>),
    Stop(Option<Control>),
}

/// The writer was asked to stop while a batch was not yet written.
struct Interrupted {
    control: Control,
    unwritten: Vec<AuditRecord>,
}

struct Reports {
    lost: LossReporter,
    spilled: LossReporter,
    sinks: LossReporter,
    db_errors: LossReporter,
    db_failures: u64,
}

impl Reports {
    fn new() -> Self {
        let minute = Duration::from_secs(60);
        Self {
            lost: LossReporter::new(minute),
            spilled: LossReporter::new(minute),
            sinks: LossReporter::new(minute),
            db_errors: LossReporter::new(minute),
            db_failures: 0,
        }
    }
}

impl Writer {
    pub async fn run(mut self) {
        let mut reports = Reports::new();
        let mut drain: Option<DrainReader> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let interrupted = loop {
            let spill_waiting = self.rx.is_empty()
                && (drain.is_some() || self.shared.spill.as_ref().is_some_and(|s| s.has_data()));
            let mut batch = Vec::new();
            let step = tokio::select! {
                biased;
                c = self.control.recv() => match c {
                    Some(control) => Err(Interrupted { control, unwritten: Vec::new() }),
                    None => return,
                },
                _ = tick.tick() => self.every_second(&mut reports).await,
                n = self.rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        // Every handle is gone: nothing more will come.
                        return;
                    }
                    self.gather(&mut batch).await;
                    self.take_in(batch, &mut reports).await
                },
                () = std::future::ready(()), if spill_waiting => {
                    self.drain_some(&mut drain, &mut reports).await
                },
            };
            if let Err(i) = step {
                break i;
            }
        };
        self.shutdown(interrupted, drain).await;
    }

    /// Lets a batch fill a little when events trickle in, so the database
    /// sees few, larger transactions.
    async fn gather(&mut self, batch: &mut Vec<AuditRecord>) {
        let deadline = tokio::time::sleep(GATHER);
        tokio::pin!(deadline);
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            tokio::select! {
                n = self.rx.recv_many(batch, room) => if n == 0 { break },
                () = &mut deadline => break,
            }
        }
    }

    /// Events fresh from the queue: count them out of it, hand them to the
    /// sinks, store them.
    async fn take_in(
        &mut self,
        batch: Vec<AuditRecord>,
        reports: &mut Reports,
    ) -> Result<(), Interrupted> {
        self.shared
            .counters
            .queue_depth
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        self.sink(&batch);
        self.write(batch, reports).await
    }

    async fn every_second(&mut self, reports: &mut Reports) -> Result<(), Interrupted> {
        if let Some(spill) = &self.shared.spill {
            spill.flush();
        }
        self.report(reports);
        let due = self.shared.aggregator.take_due(self.shared.clock.now());
        for chunk in chunks(due) {
            self.sink(&chunk);
            self.write(chunk, reports).await?;
        }
        Ok(())
    }

    fn report(&self, reports: &mut Reports) {
        let c = &self.shared.counters;
        let now = Instant::now();
        if let Some(n) = reports.lost.due(c.dropped.load(Ordering::Relaxed), now) {
            tracing::warn!(
                lost = n,
                lost_total = c.dropped.load(Ordering::Relaxed),
                "{n} audit events lost in the last minute (queue and spill full, or the database unreachable)"
            );
        }
        if let Some(n) = reports.spilled.due(c.spilled.load(Ordering::Relaxed), now) {
            tracing::warn!(
                spilled = n,
                spill_bytes = c.spill_bytes.load(Ordering::Relaxed),
                "audit queue full: {n} events spilled to disk in the last minute (the database is not keeping up)"
            );
        }
        let sink_lost = c.ndjson_dropped.load(Ordering::Relaxed)
            + self.webhook.as_ref().map_or(0, |w| w.dropped());
        if let Some(n) = reports.sinks.due(sink_lost, now) {
            tracing::warn!(
                lost = n,
                "{n} audit events not delivered to the NDJSON output or the audit webhook in the last minute (the database has them)"
            );
        }
    }

    /// Sends events to the NDJSON output and the audit webhook.
    fn sink(&self, events: &[AuditRecord]) {
        if events.is_empty() {
            return;
        }
        if let Some(ndjson) = &self.ndjson {
            ndjson.write(events);
        }
        if let Some(webhook) = &self.webhook {
            for chunk in events.chunks(WEBHOOK_BATCH) {
                let array: Vec<EventJson<'_>> = chunk.iter().map(EventJson::of).collect();
                if let Ok(body) = serde_json::to_vec(&array) {
                    webhook.send(Outgoing {
                        id: random_id(),
                        body,
                        events: chunk.len() as u64,
                    });
                }
            }
        }
    }

    /// Stores a batch, retrying while the database is unreachable, until
    /// it is written or the writer is asked to stop.
    async fn write(
        &mut self,
        batch: Vec<AuditRecord>,
        reports: &mut Reports,
    ) -> Result<(), Interrupted> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut backoff = Duration::from_millis(100);
        let mut failures = 0;
        loop {
            // A stop request cuts an insert short: inserts skip ids already
            // stored, so the batch can be written again from anywhere.
            let step = tokio::select! {
                biased;
                c = self.control.recv() => Step::Stop(c),
                r = self.store.insert_audit(&batch) => Step::Done(r),
            };
            let error = match step {
                Step::Stop(Some(control)) => {
                    return Err(Interrupted {
                        control,
                        unwritten: batch,
                    })
                }
                Step::Stop(None) => continue,
                Step::Done(Ok(())) => {
                    self.shared
                        .counters
                        .written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Step::Done(Err(e)) => e,
            };
            failures += 1;
            reports.db_failures += 1;
            if let Some(n) = reports.db_errors.due(reports.db_failures, Instant::now()) {
                tracing::warn!(error = %error, failures = n, "audit events could not be written; retrying (new events wait in the queue and the spill)");
            }
            if failures >= ROW_BY_ROW_AFTER && self.database_answers().await {
                self.write_row_by_row(batch);
                return Ok(());
            }
            // The once-a-second chores go on while the database is away:
            // the spill reaches its file, losses are reported.
            if let Some(spill) = &self.shared.spill {
                spill.flush();
            }
            self.report(reports);
            let step = tokio::select! {
                c = self.control.recv() => Step::Stop(c),
                () = tokio::time::sleep(backoff) => Step::Done(Ok(())),
            };
            if let Step::Stop(Some(control)) = step {
                return Err(Interrupted {
                    control,
                    unwritten: batch,
                });
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn database_answers(&self) -> bool {
        tokio::time::timeout(Duration::from_secs(2), self.store.ping())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The database answers but refuses the batch: store what it takes,
    /// count the rest as lost.
    fn write_row_by_row(&self, batch: Vec<AuditRecord>) {
        let store = self.store.clone();
        let counters = self.shared.counters.clone();
        // Off the writer's loop: one round trip per row.
        tokio::spawn(async move {
            for row in batch {
                let done = store.insert_audit(std::slice::from_ref(&row)).await;
                let counter = if done.is_ok() {
                    &counters.written
                } else {
                    tracing::warn!(kind = %row.kind, id = %row.id, "the database refused an audit event; it is lost");
                    &counters.dropped
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// One batch from the spill into the database.
    async fn drain_some(
        &mut self,
        drain: &mut Option<DrainReader>,
        reports: &mut Reports,
    ) -> Result<(), Interrupted> {
        let Some(spill) = &self.shared.spill else {
            return Ok(());
        };
        if drain.is_none() {
            let Some((path, size)) = spill.next_drain() else {
                // Data but no file to drain (it could not be renamed): do
                // not spin; the next try comes after a pause.
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Ok(());
            };
            match DrainReader::open(path.clone(), size).await {
                Ok(r) => *drain = Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, file = %path.display(), "audit spill file unreadable; its events are lost");
                    spill.finished(&path, size);
                    return Ok(());
                }
            }
        }
        let Some(reader) = drain.as_mut() else {
            return Ok(());
        };
        let (lines, bad) = match reader.next_batch(BATCH).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "reading the audit spill failed; the rest of the file is lost");
                (Vec::new(), 0)
            }
        };
        if bad > 0 {
            self.shared
                .counters
                .dropped
                .fetch_add(bad, Ordering::Relaxed);
        }
        if lines.is_empty() && bad == 0 {
            if let Some(done) = drain.take() {
                spill.finished(&done.path, done.size);
            }
            return Ok(());
        }
        let unsunk: Vec<AuditRecord> = lines
            .iter()
            .filter(|(_, sunk)| !sunk)
            .map(|(r, _)| r.clone())
            .collect();
        self.sink(&unsunk);
        self.write(lines.into_iter().map(|(r, _)| r).collect(), reports)
            .await
    }

    /// The final flush: what is in memory to the database (or the spill),
    /// the spill drained as far as time allows, the sinks flushed.
    async fn shutdown(mut self, interrupted: Interrupted, mut drain: Option<DrainReader>) {
        let Control::Flush { deadline, done } = interrupted.control;
        let c = self.shared.counters.clone();
        // Everything in `rest` has been handed to the sinks.
        let mut rest = interrupted.unwritten;
        let mut fresh = self.shared.aggregator.take_all();
        while let Ok(e) = self.rx.try_recv() {
            c.queue_depth.fetch_sub(1, Ordering::Relaxed);
            fresh.push(e);
        }
        self.sink(&fresh);
        rest.extend(fresh);
        // Memory first: it is what a stop would lose.
        while !rest.is_empty() && Instant::now() < deadline {
            let n = rest.len().min(BATCH);
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.store.insert_audit(&rest[..n])).await {
                Ok(Ok(())) => {
                    c.written.fetch_add(n as u64, Ordering::Relaxed);
                    rest.drain(..n);
                }
                _ => break,
            }
        }
        // Then the spill, while time remains.
        let mut reports = Reports::new();
        while rest.is_empty()
            && Instant::now() < deadline
            && (drain.is_some() || self.shared.spill.as_ref().is_some_and(|s| s.has_data()))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.drain_some(&mut drain, &mut reports)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        // What could not be written waits in the spill for the next start.
        let lost = rest
            .iter()
            .filter(|e| !self.shared.spill_or_drop(e, true))
            .count() as u64;
        let left_in_spill = rest.len() as u64 - lost;
        if let Some(spill) = &self.shared.spill {
            spill.sync();
        }
        if let Some(ndjson) = &self.ndjson {
            ndjson.close(deadline).await;
        }
        let mut undelivered = 0;
        for w in self.webhook.iter().chain(&self.security_webhook) {
            undelivered += w.drain(deadline).await;
        }
        let spill_bytes = c.spill_bytes.load(Ordering::Relaxed);
        tracing::info!(
            written_total = c.written.load(Ordering::Relaxed),
            aggregated_total = c.aggregated.load(Ordering::Relaxed),
            spilled_total = c.spilled.load(Ordering::Relaxed),
            dropped_total = c.dropped.load(Ordering::Relaxed),
            spill_bytes,
            undelivered_webhook_events = undelivered,
            "audit pipeline flushed"
        );
        if lost > 0 || spill_bytes > 0 || undelivered > 0 {
            tracing::warn!(
                lost,
                left_in_spill,
                spill_bytes,
                undelivered_webhook_events = undelivered,
                "audit: not everything was written before shutdown (what is in the spill is written at the next start)"
            );
        }
        let _ = done.send(FlushReport {
            complete: lost == 0 && spill_bytes == 0 && undelivered == 0,
            lost,
            spill_bytes,
            undelivered,
        });
    }
}

fn chunks(mut events: Vec<AuditRecord>) -> Vec<Vec<AuditRecord>> {
    let mut out = Vec::new();
    while events.len() > BATCH {
        let tail = events.split_off(BATCH);
        out.push(std::mem::replace(&mut events, tail));
    }
    if !events.is_empty() {
        out.push(events);
    }
    out
}
