//! Counters of the audit pipeline: cheap to read from anywhere (metrics),
//! updated with relaxed atomics on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct Counters {
    /// Events in memory waiting for the database (gauge).
    pub queue_depth: AtomicU64,
    /// Rows written to the database (counter).
    pub written: AtomicU64,
    /// Events lost before reaching the database (counter).
    pub dropped: AtomicU64,
    /// Events written to the spill file because the queue was full (counter).
    pub spilled: AtomicU64,
    /// Bytes in the spill files, waiting for the database (gauge).
    pub spill_bytes: AtomicU64,
    /// Routine events folded into per-minute aggregates (counter).
    pub aggregated: AtomicU64,
    /// Events the NDJSON sink could not take (counter).
    pub ndjson_dropped: AtomicU64,
}

/// A read-only view of the audit pipeline's counters. Clones share them.
#[derive(Clone, Default)]
pub struct AuditStats {
    pub(crate) c: Arc<Counters>,
    /// Dropped-delivery counters of the webhooks, read when asked.
    pub(crate) webhooks: Vec<super::webhook::WebhookSender>,
}

impl AuditStats {
    /// Events in memory waiting to be written to the database.
    pub fn queue_depth(&self) -> u64 {
        self.c.queue_depth.load(Ordering::Relaxed)
    }
    /// Audit rows written to the database (an aggregate is one row).
    pub fn written_total(&self) -> u64 {
        self.c.written.load(Ordering::Relaxed)
    }
    /// Events lost before reaching the database: the queue and the spill
    /// were full (or the spill is disabled), or the database stayed
    /// unreachable until shutdown.
    pub fn dropped_total(&self) -> u64 {
        self.c.dropped.load(Ordering::Relaxed)
    }
    /// Events that went through the on-disk spill because the queue was full.
    pub fn spilled_total(&self) -> u64 {
        self.c.spilled.load(Ordering::Relaxed)
    }
    /// Bytes waiting in the spill files.
    pub fn spill_bytes(&self) -> u64 {
        self.c.spill_bytes.load(Ordering::Relaxed)
    }
    /// Routine events counted into per-minute aggregates instead of rows.
    pub fn aggregated_total(&self) -> u64 {
        self.c.aggregated.load(Ordering::Relaxed)
    }
    /// Events the NDJSON sink or the webhooks lost (the database still
    /// has them).
    pub fn sink_dropped_total(&self) -> u64 {
        self.c.ndjson_dropped.load(Ordering::Relaxed)
            + self.webhooks.iter().map(|w| w.dropped()).sum::<u64>()
    }
}

/// Reports losses at most once per `every`: the first loss promptly, then
/// the count since the last report.
pub(crate) struct LossReporter {
    every: Duration,
    last_at: Option<Instant>,
    reported: u64,
}

impl LossReporter {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last_at: None,
            reported: 0,
        }
    }

    /// With the running total of losses: how many to report now, if any.
    pub fn due(&mut self, total: u64, now: Instant) -> Option<u64> {
        if total <= self.reported {
            return None;
        }
        if self
            .last_at
            .is_some_and(|at| now.duration_since(at) < self.every)
        {
            return None;
        }
        let n = total - self.reported;
        self.reported = total;
        self.last_at = Some(now);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_reported_at_most_once_per_period() {
        let mut r = LossReporter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(r.due(0, t0), None, "nothing lost");
        assert_eq!(r.due(3, t0), Some(3), "the first loss at once");
        assert_eq!(r.due(500, t0 + Duration::from_secs(30)), None, "muted");
        assert_eq!(r.due(900, t0 + Duration::from_secs(59)), None, "muted");
        assert_eq!(
            r.due(900, t0 + Duration::from_secs(61)),
            Some(897),
            "everything since the last report"
        );
        assert_eq!(r.due(900, t0 + Duration::from_secs(200)), None);
    }
}
