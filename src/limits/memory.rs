//! Counters in this node's memory. Bounded: at most `MAX_KEYS` counters
//! (least-used evicted first) and none older than `MAX_WINDOW`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache;

use super::{Count, LimitError, LimitStore};

const MAX_KEYS: u64 = 200_000;
/// No window is longer than this.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Window {
    count: u64,
    ends: Instant,
}

pub struct MemoryStore {
    counters: Cache<String, Arc<Mutex<Window>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            counters: Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_live(MAX_WINDOW)
                .build(),
        }
    }

    pub fn take_now(&self, key: &str, limit: u64, window: Duration) -> Count {
        let now = Instant::now();
        let entry = self.counters.get_with(key.to_string(), || {
            Arc::new(Mutex::new(Window {
                count: 0,
                ends: now + window.min(MAX_WINDOW),
            }))
        });
        let mut w = entry.lock().unwrap_or_else(|p| p.into_inner());
        if w.ends <= now {
            w.count = 0;
            w.ends = now + window.min(MAX_WINDOW);
        }
        let allowed = w.count < limit;
        if allowed {
            w.count += 1;
        }
        Count {
            allowed,
            count: w.count,
            reset_in: w.ends.saturating_duration_since(now),
        }
    }

    pub fn peek_now(&self, key: &str) -> Count {
        let now = Instant::now();
        let (count, reset_in) = match self.counters.get(key) {
            Some(entry) => {
                let w = entry.lock().unwrap_or_else(|p| p.into_inner());
                if w.ends <= now {
                    (0, Duration::ZERO)
                } else {
                    (w.count, w.ends.saturating_duration_since(now))
                }
            }
            None => (0, Duration::ZERO),
        };
        Count {
            allowed: true,
            count,
            reset_in,
        }
    }

    pub fn reset_now(&self, key: &str) {
        self.counters.invalidate(key);
    }
}

#[async_trait]
impl LimitStore for MemoryStore {
    async fn take(&self, key: &str, limit: u64, window: Duration) -> Result<Count, LimitError> {
        Ok(self.take_now(key, limit, window))
    }

    async fn peek(&self, key: &str) -> Result<Count, LimitError> {
        Ok(self.peek_now(key))
    }

    async fn reset(&self, key: &str) -> Result<(), LimitError> {
        self.reset_now(key);
        Ok(())
    }
}
