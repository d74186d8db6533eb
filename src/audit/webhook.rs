//! The security webhook: security-class audit events POSTed as JSON to an
//! operator's endpoint (`GATEHOUSE_SECURITY_WEBHOOK_URL`), signed with
//! HMAC-SHA256 (`GATEHOUSE_SECURITY_WEBHOOK_SECRET`).
//!
//! Each request carries
//! `Gatehouse-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//! and `Gatehouse-Event-Id: <event id>`; a receiver recomputes the HMAC over
//! the timestamp, a `.` and the raw body, compares in constant time, refuses
//! timestamps too far from its clock, and ignores event ids it has seen
//! (a retry after a lost answer sends the same event again, freshly signed).
//!
//! Delivery never blocks a request and never holds unbounded memory: events
//! wait in a bounded queue (a full queue drops the event, counted and
//! logged), at most a few are in flight, and each gets a bounded number of
//! attempts with exponential backoff on network errors, 408, 429 and 5xx.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{mpsc, Semaphore};

/// Header with the timestamp and signature.
pub const SIGNATURE_HEADER: &str = "Gatehouse-Signature";
/// Header with the event's id (the same on every attempt).
pub const EVENT_ID_HEADER: &str = "Gatehouse-Event-Id";

/// Events waiting for delivery, at most.
const QUEUE: usize = 1000;
/// Deliveries in flight (each with its retries), at most.
const IN_FLIGHT: usize = 4;
/// Attempts per event, at most.
const ATTEMPTS: u32 = 5;
/// Backoff before the second attempt; doubled each time, capped.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// One attempt's deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook's signing key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookSecret(String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Where security events go, as configured.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub url: url::Url,
    pub secret: WebhookSecret,
}

impl WebhookConfig {
    /// Checks the URL (absolute http or https, no credentials) and the
    /// secret (at least 32 characters: it is an HMAC key).
    pub fn new(url: &str, secret: Option<&str>) -> Result<Self, String> {
        let parsed = url::Url::parse(url)
            .map_err(|e| format!("GATEHOUSE_SECURITY_WEBHOOK_URL: '{url}' is not a URL: {e}"))?;
        if parsed.scheme() != "https" && parsed.scheme() != "http" {
            return Err("GATEHOUSE_SECURITY_WEBHOOK_URL: must be an http(s) URL".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("GATEHOUSE_SECURITY_WEBHOOK_URL: must not contain credentials".into());
        }
        let secret = secret.filter(|s| !s.is_empty()).ok_or_else(|| {
            "GATEHOUSE_SECURITY_WEBHOOK_SECRET: the webhook needs a signing secret".to_string()
        })?;
        if secret.len() < 32 {
            return Err(
                "GATEHOUSE_SECURITY_WEBHOOK_SECRET: must be at least 32 characters".to_string(),
            );
        }
        Ok(Self {
            url: parsed,
            secret: WebhookSecret(secret.to_string()),
        })
    }
}

/// The value of `Gatehouse-Signature` for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut hex = String::with_capacity(64);
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) {
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        for b in mac.finalize().into_bytes() {
            hex.push_str(&format!("{b:02x}"));
        }
    }
    format!("t={timestamp},v1={hex}")
}

/// One event to deliver: its id and its JSON body.
struct Outgoing {
    id: String,
    body: Vec<u8>,
}

/// The sender side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct SecurityWebhook {
    tx: mpsc::Sender<Outgoing>,
    dropped: Arc<AtomicU64>,
}

impl SecurityWebhook {
    /// Spawns the delivery task. Must be called inside a tokio runtime.
    pub fn start(config: WebhookConfig) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        if config.url.scheme() == "http" {
            // The host only: a webhook URL's path or query can be its secret.
            let host = config.url.host_str().unwrap_or_default();
            tracing::warn!(
                host,
                "the security webhook is plain http: events cross the network unencrypted"
            );
        }
        tokio::spawn(deliver_all(config, rx, dropped.clone()));
        Self { tx, dropped }
    }

    /// Queues an event (`event` is its JSON object, with an `id`).
    pub fn send(&self, id: &str, event: &serde_json::Value) {
        let body = match serde_json::to_vec(event) {
            Ok(b) => b,
            Err(_) => return,
        };
        let outgoing = Outgoing {
            id: id.to_string(),
            body,
        };
        if self.tx.try_send(outgoing).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Once, then every 100th, so a flood cannot flood the log too.
            if n == 1 || n.is_multiple_of(100) {
                tracing::warn!(
                    dropped_total = n,
                    "security webhook queue full; event dropped"
                );
            }
        }
    }

    /// Events dropped so far because the queue was full or delivery failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn deliver_all(
    config: WebhookConfig,
    mut rx: mpsc::Receiver<Outgoing>,
    dropped: Arc<AtomicU64>,
) {
    let http = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ATTEMPT_TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "security webhook disabled: no HTTP client");
            return;
        }
    };
    let config = Arc::new(config);
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(event) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (http, config, dropped) = (http.clone(), config.clone(), dropped.clone());
        tokio::spawn(async move {
            if !deliver(&http, &config, &event).await {
                let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(event_id = %event.id, dropped_total = n, attempts = ATTEMPTS, "security webhook delivery failed; event dropped");
            }
            drop(permit);
        });
    }
}

/// Delivers one event, retrying as needed; true once the receiver took it.
async fn deliver(http: &reqwest::Client, config: &WebhookConfig, event: &Outgoing) -> bool {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let result = http
            .post(config.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                signature(config.secret.0.as_bytes(), now, &event.body),
            )
            .header(EVENT_ID_HEADER, &event.id)
            .body(event.body.clone())
            .send()
            .await;
        let retry = match result {
            Ok(res) if res.status().is_success() => return true,
            Ok(res) => {
                let status = res.status();
                let retryable = status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                tracing::warn!(event_id = %event.id, attempt, status = status.as_u16(), retry = retryable, "security webhook refused an event");
                retryable
            }
            Err(e) => {
                // Without the URL, which may carry the receiver's secret.
                let e = e.without_url();
                tracing::warn!(event_id = %event.id, attempt, error = %e, "security webhook unreachable");
                true
            }
        };
        if !retry || attempt == ATTEMPTS {
            return false;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Python: hmac.new(b"key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"key", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }

    #[test]
    fn config_needs_an_http_url_and_a_long_secret() {
        let secret = "s".repeat(32);
        assert!(WebhookConfig::new("https://siem.example.com/hook", Some(&secret)).is_ok());
        assert!(WebhookConfig::new("https://siem.example.com/hook", None).is_err());
        assert!(WebhookConfig::new("https://siem.example.com/hook", Some("short")).is_err());
        assert!(WebhookConfig::new("ftp://siem.example.com/hook", Some(&secret)).is_err());
        assert!(WebhookConfig::new("https://u:p@siem.example.com/", Some(&secret)).is_err());
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let c = WebhookConfig::new("https://x.example/", Some(&"k".repeat(40))).unwrap();
        assert!(!format!("{c:?}").contains("kkkk"));
    }
}
