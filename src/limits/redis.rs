//! Counters in Redis, shared by every node (`GATEHOUSE_REDIS_URL`). Each
//! operation is one Lua script, so a counter is checked and counted
//! atomically however many nodes and requests race. Keys carry a prefix
//! (`GATEHOUSE_REDIS_PREFIX`, default `gatehouse:`) and expire with their
//! window, so Redis holds nothing stale.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::Mutex;

use super::{Count, LimitError, LimitStore};

/// The most one Redis operation may take before the node counts in memory.
const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a node without a connection tries again.
const RECONNECT_EVERY: Duration = Duration::from_secs(5);

const TAKE: &str = r"
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if c >= tonumber(ARGV[1]) then return {0, c, ttl} end
c = redis.call('INCR', KEYS[1])
if c == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {1, c, ttl}
";

const PEEK: &str = r"
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
return {1, c, redis.call('PTTL', KEYS[1])}
";

pub struct RedisStore {
    client: redis::Client,
    prefix: String,
    conn: Mutex<(Option<ConnectionManager>, Option<tokio::time::Instant>)>,
    take: Script,
    peek: Script,
}

impl RedisStore {
    /// Checks the URL; the connection is made on first use (and again
    /// after failures), so a node starts even while Redis is down.
    pub fn new(url: &str, prefix: &str) -> Result<Self, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("GATEHOUSE_REDIS_URL is not a Redis URL: {e}"))?;
        Ok(Self {
            client,
            prefix: prefix.to_string(),
            conn: Mutex::new((None, None)),
            take: Script::new(TAKE),
            peek: Script::new(PEEK),
        })
    }

    /// Connects now (for the start-up log line).
    pub async fn ping(&self) -> Result<(), LimitError> {
        let mut conn = self.connection().await?;
        tokio::time::timeout(
            OP_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .map_err(|_| LimitError::Unreachable("timed out".into()))?
        .map_err(|e| LimitError::Unreachable(e.to_string()))?;
        Ok(())
    }

    async fn connection(&self) -> Result<ConnectionManager, LimitError> {
        let mut state = self.conn.lock().await;
        if let Some(c) = &state.0 {
            return Ok(c.clone());
        }
        let now = tokio::time::Instant::now();
        if state.1.is_some_and(|at| now < at + RECONNECT_EVERY) {
            return Err(LimitError::Unreachable("not connected".into()));
        }
        state.1 = Some(now);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(OP_TIMEOUT)
            .set_response_timeout(OP_TIMEOUT)
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            OP_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| LimitError::Unreachable("connection timed out".into()))?
        .map_err(|e| LimitError::Unreachable(e.to_string()))?;
        state.0 = Some(conn.clone());
        Ok(conn)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn run(&self, script: &Script, key: &str, args: &[u64]) -> Result<Count, LimitError> {
        let mut conn = self.connection().await?;
        let mut call = script.key(self.key(key));
        for a in args {
            call.arg(*a);
        }
        let (allowed, count, ttl): (i64, i64, i64) =
            tokio::time::timeout(OP_TIMEOUT, call.invoke_async(&mut conn))
                .await
                .map_err(|_| LimitError::Unreachable("timed out".into()))?
                .map_err(|e| LimitError::Unreachable(e.to_string()))?;
        Ok(Count {
            allowed: allowed == 1,
            count: count.max(0) as u64,
            reset_in: Duration::from_millis(ttl.max(0) as u64),
        })
    }
}

#[async_trait]
impl LimitStore for RedisStore {
    async fn take(&self, key: &str, limit: u64, window: Duration) -> Result<Count, LimitError> {
        let ms = window.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        self.run(&self.take, key, &[limit.min(i64::MAX as u64), ms])
            .await
    }

    async fn peek(&self, key: &str) -> Result<Count, LimitError> {
        self.run(&self.peek, key, &[]).await
    }

    async fn reset(&self, key: &str) -> Result<(), LimitError> {
        let mut conn = self.connection().await?;
        tokio::time::timeout(
            OP_TIMEOUT,
            redis::cmd("DEL")
                .arg(self.key(key))
                .query_async::<i64>(&mut conn),
        )
        .await
        .map_err(|_| LimitError::Unreachable("timed out".into()))?
        .map_err(|e| LimitError::Unreachable(e.to_string()))?;
        Ok(())
    }
}
