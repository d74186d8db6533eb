//! What this node knows of changes committed anywhere: for now, revocations.
//!
//! Caches that answer from memory ("this token is active") ask
//! [`Changes::still_valid`] whether what they checked against the database
//! may still be served. The answer rests on two facts:
//!
//! - the **revocation epoch** moves after every revocation this node commits
//!   (the store bumps it after the commit) and, on PostgreSQL, after every
//!   `gatehouse_revocations` notification, which triggers on `grants` and
//!   `access_tokens` send for revocations committed by any node or command;
//! - the **sync mark**: on PostgreSQL the listener sends itself a heartbeat
//!   notification every 250 ms. Notifications arrive in commit order, so
//!   when heartbeat *n* comes back, every revocation committed before it was
//!   sent has already moved the epoch. That send time is the sync mark.
//!
//! A cached answer checked at `t` with epoch `e` may be served while the
//! epoch is still `e` and either `t` is less than [`MAX_STALENESS`] ago or
//! the sync mark is less than that ago. Without a listener (SQLite, or
//! PostgreSQL while the listener is down) only the first holds, so every
//! answer is rechecked at least once a second: revocations by another node
//! or by the `gatehouse` command show within a second either way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest a revocation committed elsewhere may go unseen by a cache.
pub const MAX_STALENESS: Duration = Duration::from_secs(1);

/// PostgreSQL channel the revocation triggers notify (migration 0012).
pub const REVOCATION_CHANNEL: &str = "gatehouse_revocations";

/// How often the listener checks its own delivery with a heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub struct Changes {
    origin: Instant,
    revocation_epoch: AtomicU64,
    /// Microseconds after `origin` at which the newest returned heartbeat
    /// was sent, plus one; 0 while no heartbeat has come back.
    synced: AtomicU64,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            origin: Instant::now(),
            revocation_epoch: AtomicU64::new(0),
            synced: AtomicU64::new(0),
        }
    }
}

/// What a cache notes before it checks the database: an answer it stores
/// afterwards is valid only if no revocation was seen in between.
#[derive(Clone, Copy, Debug)]
pub struct Checked {
    epoch: u64,
    at: Instant,
}

impl Changes {
    /// Call **before** reading the state a cached answer is built from.
    pub fn before_check(&self) -> Checked {
        Checked {
            epoch: self.revocation_epoch.load(Ordering::Acquire),
            at: Instant::now(),
        }
    }

    /// Whether an answer checked at `checked` may still be served.
    pub fn still_valid(&self, checked: Checked) -> bool {
        // The sync mark first: a mark that is seen implies the epoch bumps
        // made before it (Release in `heartbeat_returned`) are seen too.
        let synced = self.synced.load(Ordering::Acquire);
        if self.revocation_epoch.load(Ordering::Acquire) != checked.epoch {
            return false;
        }
        let now = Instant::now();
        if now.saturating_duration_since(checked.at) < MAX_STALENESS {
            return true;
        }
        synced != 0
            && now.saturating_duration_since(self.origin + Duration::from_micros(synced - 1))
                < MAX_STALENESS
    }

    /// A revocation was committed (here, or elsewhere and notified), or
    /// revocations may have been missed (the listener reconnected).
    pub fn revoked(&self) {
        self.revocation_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// A heartbeat sent at `sent` came back: everything committed before
    /// then has been seen.
    pub fn heartbeat_returned(&self, sent: Instant) {
        let micros = sent.saturating_duration_since(self.origin).as_micros();
        let mark = u64::try_from(micros).unwrap_or(u64::MAX - 1) + 1;
        self.synced.fetch_max(mark, Ordering::AcqRel);
    }

    /// Whether heartbeats are coming back (the listener is healthy).
    pub fn listening(&self) -> bool {
        let synced = self.synced.load(Ordering::Acquire);
        synced != 0
            && Instant::now()
                .saturating_duration_since(self.origin + Duration::from_micros(synced - 1))
                < MAX_STALENESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_after_the_check_invalidates() {
        let changes = Changes::default();
        let checked = changes.before_check();
        assert!(changes.still_valid(checked));
        changes.revoked();
        assert!(!changes.still_valid(checked));
        assert!(changes.still_valid(changes.before_check()));
    }

    #[test]
    fn without_heartbeats_an_answer_lasts_at_most_max_staleness() {
        let changes = Changes {
            origin: Instant::now() - MAX_STALENESS * 10,
            ..Changes::default()
        };
        let old = Checked {
            epoch: 0,
            at: Instant::now() - MAX_STALENESS,
        };
        assert!(!changes.still_valid(old));
        assert!(!changes.listening());
        // A heartbeat sent just now covers it; one sent too long ago does not.
        changes.heartbeat_returned(Instant::now() - MAX_STALENESS * 2);
        assert!(!changes.still_valid(old));
        changes.heartbeat_returned(Instant::now());
        assert!(changes.listening());
        assert!(changes.still_valid(old));
        changes.revoked();
        assert!(!changes.still_valid(old));
    }
}
