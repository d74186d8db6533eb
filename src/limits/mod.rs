//! Counters behind every limit and throttle: registration and device-code
//! rate limits, and the sign-in and client-authentication throttles
//! (`throttle`). One [`LimitStore`] trait with two backends:
//!
//! * [`memory::MemoryStore`]: this node's memory (the default);
//! * [`redis::RedisStore`]: Redis, shared by every node, when
//!   `GATEHOUSE_REDIS_URL` is set.
//!
//! [`Limits`] is what the rest of the code uses. It never fails: when Redis
//! cannot be reached it falls back to this node's memory (fail safe: the
//! limits still hold per node, never fail open), logs a warning at most
//! every 30 s and says so in `/readyz`'s log line.

pub mod memory;
pub mod rate;
pub mod redis;
pub mod throttle;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

pub use throttle::{Attempt, ThrottleSettings, Throttled};

use crate::http::SourceAddr;

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("the limit store could not be reached: {0}")]
    Unreachable(String),
}

/// A counter's state after `take` or `peek`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count {
    /// Whether `take` counted this event (false: the limit was reached).
    pub allowed: bool,
    /// Events counted in the current window (after this one, if counted).
    pub count: u64,
    /// When the current window ends (zero when there is none).
    pub reset_in: Duration,
}

impl Count {
    /// Seconds to put in `Retry-After`: at least 1.
    pub fn retry_after(&self) -> u64 {
        let d = self.reset_in;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

/// Fixed-window counters.
#[async_trait]
pub trait LimitStore: Send + Sync {
    /// Counts one event against `key` unless `limit` events were already
    /// counted in its window; the window (`window` long) starts with the
    /// first event.
    async fn take(&self, key: &str, limit: u64, window: Duration) -> Result<Count, LimitError>;
    /// The counter without changing it.
    async fn peek(&self, key: &str) -> Result<Count, LimitError>;
    /// Forgets the counter.
    async fn reset(&self, key: &str) -> Result<(), LimitError>;
}

/// The limits of this node: `primary` (Redis or memory) and the per-node
/// memory store used when Redis fails.
#[derive(Clone)]
pub struct Limits {
    primary: Arc<dyn LimitStore>,
    fallback: Option<Arc<memory::MemoryStore>>,
    pub settings: ThrottleSettings,
    /// Per-node attempts under way, by source (see `throttle`).
    in_flight: throttle::InFlight,
    last_warning: Arc<AtomicU64>,
    started: Instant,
}

impl Limits {
    /// Per node, in memory.
    pub fn memory(settings: ThrottleSettings) -> Self {
        Self::with(Arc::new(memory::MemoryStore::new()), None, settings)
    }

    /// Shared through Redis, with this node's memory as the fallback.
    pub fn redis(store: redis::RedisStore, settings: ThrottleSettings) -> Self {
        Self::with(
            Arc::new(store),
            Some(Arc::new(memory::MemoryStore::new())),
            settings,
        )
    }

    fn with(
        primary: Arc<dyn LimitStore>,
        fallback: Option<Arc<memory::MemoryStore>>,
        settings: ThrottleSettings,
    ) -> Self {
        Self {
            primary,
            fallback,
            in_flight: throttle::InFlight::new(settings.max_in_flight_per_source),
            settings,
            last_warning: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
        }
    }

    pub fn shared(&self) -> bool {
        self.fallback.is_some()
    }

    fn warn(&self, e: &LimitError) {
        let now = self.started.elapsed().as_secs() + 30;
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + 30
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %e, "limits: Redis unreachable; counting in this node's memory until it is back (limits hold per node)");
        }
    }

    pub async fn take(&self, key: &str, limit: u64, window: Duration) -> Count {
        match self.primary.take(key, limit, window).await {
            Ok(c) => c,
            Err(e) => {
                self.warn(&e);
                match &self.fallback {
                    Some(f) => f.take_now(key, limit, window),
                    None => Count {
                        allowed: false,
                        count: limit,
                        reset_in: window,
                    },
                }
            }
        }
    }

    pub async fn peek(&self, key: &str) -> Count {
        match self.primary.peek(key).await {
            Ok(c) => c,
            Err(e) => {
                self.warn(&e);
                match &self.fallback {
                    Some(f) => f.peek_now(key),
                    None => Count {
                        allowed: true,
                        count: 0,
                        reset_in: Duration::ZERO,
                    },
                }
            }
        }
    }

    pub async fn reset(&self, key: &str) {
        if let Err(e) = self.primary.reset(key).await {
            self.warn(&e);
        }
        if let Some(f) = &self.fallback {
            f.reset_now(key);
        }
    }

    /// True once per `window` for `key`: bounds alerts and log lines.
    pub async fn once_per_window(&self, key: &str, window: Duration) -> bool {
        self.take(&format!("once:{key}"), 1, window).await.allowed
    }
}

/// A source address as a counter key: IPv4 as is, IPv6 by its /64 (one
/// customer's allocation; one host can use any address in it).
pub fn source_key(source: SourceAddr) -> String {
    match source.0 {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Client-chosen text (usernames, client ids) as a short fixed-size key part.
pub fn text_key(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_are_counted_by_their_64() {
        let a = SourceAddr("2001:db8:1:2::1".parse().unwrap());
        let b = SourceAddr("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = SourceAddr("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped = SourceAddr("::ffff:192.0.2.1".parse().unwrap());
        assert_eq!(source_key(mapped), "192.0.2.1");
    }

    #[tokio::test]
    async fn take_counts_up_to_the_limit_then_refuses() {
        let limits = Limits::memory(ThrottleSettings::default());
        let w = Duration::from_secs(60);
        for i in 1..=3 {
            let c = limits.take("k", 3, w).await;
            assert!(c.allowed);
            assert_eq!(c.count, i);
        }
        let c = limits.take("k", 3, w).await;
        assert!(!c.allowed);
        assert!((1..=60).contains(&c.retry_after()));
        limits.reset("k").await;
        assert!(limits.take("k", 3, w).await.allowed);
    }

    #[tokio::test]
    async fn once_per_window_is_once() {
        let limits = Limits::memory(ThrottleSettings::default());
        let w = Duration::from_secs(60);
        assert!(limits.once_per_window("alert", w).await);
        assert!(!limits.once_per_window("alert", w).await);
    }
}
