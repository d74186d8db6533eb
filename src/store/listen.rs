//! PostgreSQL LISTEN for [`Changes`]: revocation notifications from the
//! triggers of migration 0012, and this node's own heartbeat, on one
//! dedicated connection.
//!
//! On any trouble the connection is dropped and a new one made; the epoch
//! moves once the new connection listens, because notifications sent in
//! between are lost. Until heartbeats come back, caches fall back to
//! rechecking every [`MAX_STALENESS`](super::changes::MAX_STALENESS).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgListener, PgPool};

use super::changes::{Changes, HEARTBEAT_EVERY, REVOCATION_CHANNEL};

/// Heartbeats in flight: sequence number and send time.
type InFlight = Arc<Mutex<VecDeque<(u64, Instant)>>>;

/// Starts the listener and its heartbeat. Both run for the life of the process.
pub(super) fn spawn(pool: PgPool, changes: Arc<Changes>) {
    let channel = format!("gatehouse_hb_{}", uuid::Uuid::new_v4().simple());
    let in_flight: InFlight = Arc::default();
    tokio::spawn(listen(
        pool.clone(),
        changes,
        channel.clone(),
        in_flight.clone(),
    ));
    tokio::spawn(heartbeat(pool, channel, in_flight));
}

async fn listen(pool: PgPool, changes: Arc<Changes>, channel: String, in_flight: InFlight) {
    let mut failures = 0u32;
    loop {
        match follow(&pool, &changes, &channel, &in_flight).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                // One line per outage, not one per retry.
                if failures == 1 {
                    tracing::warn!(error = %e, "revocation listener lost its connection; caches recheck every second until it is back");
                }
            }
        }
        // Never a tight loop, even when connections drop as soon as made.
        let pause = Duration::from_millis(100 + 200 * u64::from(failures.min(10)));
        tokio::time::sleep(pause).await;
    }
}

/// One connection's life: LISTEN, then note what arrives until it breaks.
async fn follow(
    pool: &PgPool,
    changes: &Changes,
    channel: &str,
    in_flight: &InFlight,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([REVOCATION_CHANNEL, channel]).await?;
    // Anything committed before LISTEN took effect was not heard.
    changes.revoked();
    loop {
        // `None`: the connection dropped. sqlx would reconnect on the next
        // call, but the epoch must move after the new LISTEN, so start over.
        let Some(note) = listener.try_recv().await? else {
            return Ok(());
        };
        if note.channel() == REVOCATION_CHANNEL {
            changes.revoked();
        } else if let Ok(seq) = note.payload().parse::<u64>() {
            let sent = {
                let Ok(mut queue) = in_flight.lock() else {
                    continue;
                };
                let mut sent = None;
                while let Some(&(n, at)) = queue.front() {
                    if n > seq {
                        break;
                    }
                    queue.pop_front();
                    if n == seq {
                        sent = Some(at);
                    }
                }
                sent
            };
            if let Some(at) = sent {
                changes.heartbeat_returned(at);
            }
        }
    }
}

async fn heartbeat(pool: PgPool, channel: String, in_flight: InFlight) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        seq += 1;
        if let Ok(mut queue) = in_flight.lock() {
            // Bounded: heartbeats that never came back are forgotten.
            if queue.len() >= 64 {
                queue.pop_front();
            }
            // Noted before sending: the mark must not be later than the send.
            queue.push_back((seq, Instant::now()));
        }
        let sent = tokio::time::timeout(
            HEARTBEAT_EVERY * 4,
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&channel)
                .bind(seq.to_string())
                .execute(&pool),
        )
        .await;
        if !matches!(sent, Ok(Ok(_))) {
            tracing::debug!("revocation heartbeat not sent");
        }
    }
}
