//! Signed webhooks. One sender serves both:
//!
//! * the security webhook (`GATEHOUSE_SECURITY_WEBHOOK_URL`): each
//!   security-class audit event as one JSON object, header
//!   `Gatehouse-Event-Id: <event id>`;
//! * the audit webhook (`GATEHOUSE_AUDIT_WEBHOOK_URL`): every kept audit
//!   event, as JSON arrays of events, header `Gatehouse-Batch-Id: <batch id>`.
//!
//! Each request carries
//! `Gatehouse-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`;
//! a receiver recomputes the HMAC over the timestamp, a `.` and the raw
//! body, compares in constant time, refuses timestamps too far from its
//! clock, and ignores ids it has seen (a retry after a lost answer sends the
//! same body again, freshly signed).
//!
//! Delivery never blocks a request and never holds unbounded memory:
//! deliveries wait in a bounded queue (a full queue drops the delivery,
//! counted), at most a few are in flight, and each gets a bounded number of
//! attempts with exponential backoff on network errors, 408, 429 and 5xx.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{mpsc, Semaphore};

/// Header with the timestamp and signature.
pub const SIGNATURE_HEADER: &str = "Gatehouse-Signature";
/// Header with the security event's id (the same on every attempt).
pub const EVENT_ID_HEADER: &str = "Gatehouse-Event-Id";
/// Header with the audit batch's id (the same on every attempt).
pub const BATCH_ID_HEADER: &str = "Gatehouse-Batch-Id";

/// Deliveries in flight (each with its retries), at most.
const IN_FLIGHT: usize = 4;
/// Attempts per delivery, at most.
const ATTEMPTS: u32 = 5;
/// Backoff before the second attempt; doubled each time, capped.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// One attempt's deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A webhook's signing key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookSecret(String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Where a webhook's deliveries go, as configured.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub url: url::Url,
    pub secret: WebhookSecret,
}

impl WebhookConfig {
    /// Checks the URL (absolute http or https, no credentials) and the
    /// secret (at least 32 characters: it is an HMAC key). `var` is the
    /// settings' prefix for messages, e.g. `GATEHOUSE_SECURITY_WEBHOOK`.
    pub fn new(var: &str, url: &str, secret: Option<&str>) -> Result<Self, String> {
        let parsed =
            url::Url::parse(url).map_err(|e| format!("{var}_URL: '{url}' is not a URL: {e}"))?;
        if parsed.scheme() != "https" && parsed.scheme() != "http" {
            return Err(format!("{var}_URL: must be an http(s) URL"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!("{var}_URL: must not contain credentials"));
        }
        let secret = secret
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{var}_SECRET: the webhook needs a signing secret"))?;
        if secret.len() < 32 {
            return Err(format!("{var}_SECRET: must be at least 32 characters"));
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

/// How one webhook behaves: its name in logs, its id header, its queue.
#[derive(Clone, Copy, Debug)]
pub struct SenderOptions {
    /// `security webhook` or `audit webhook`.
    pub name: &'static str,
    /// `EVENT_ID_HEADER` or `BATCH_ID_HEADER`.
    pub id_header: &'static str,
    /// Deliveries waiting, at most.
    pub queue: usize,
    /// Log every refused attempt and every lost delivery (rare security
    /// events); otherwise attempts log at debug and losses are only
    /// counted (the audit pipeline reports them once a minute).
    pub log_each: bool,
}

impl SenderOptions {
    pub const SECURITY: SenderOptions = SenderOptions {
        name: "security webhook",
        id_header: EVENT_ID_HEADER,
        queue: 1000,
        log_each: true,
    };
    pub const AUDIT: SenderOptions = SenderOptions {
        name: "audit webhook",
        id_header: BATCH_ID_HEADER,
        queue: 256,
        log_each: false,
    };
}

/// One delivery: its id, its JSON body and how many events it carries.
pub struct Outgoing {
    pub id: String,
    pub body: Vec<u8>,
    pub events: u64,
}

#[derive(Default)]
struct Counters {
    /// Events lost: queue full, or attempts used up.
    dropped: AtomicU64,
    /// Events queued or in flight.
    pending: AtomicU64,
}

/// The sending side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct WebhookSender {
    tx: mpsc::Sender<Outgoing>,
    counters: Arc<Counters>,
    options: SenderOptions,
}

impl WebhookSender {
    /// Spawns the delivery task. Must be called inside a tokio runtime.
    pub fn start(config: WebhookConfig, options: SenderOptions) -> Self {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let counters = Arc::new(Counters::default());
        if config.url.scheme() == "http" {
            // The host only: a webhook URL's path or query can be its secret.
            let host = config.url.host_str().unwrap_or_default();
            tracing::warn!(
                host,
                "the {} is plain http: events cross the network unencrypted",
                options.name
            );
        }
        tokio::spawn(deliver_all(config, rx, counters.clone(), options));
        Self {
            tx,
            counters,
            options,
        }
    }

    /// Queues a delivery; false (and counted as lost) when the queue is full.
    pub fn send(&self, outgoing: Outgoing) -> bool {
        let events = outgoing.events;
        self.counters.pending.fetch_add(events, Ordering::Relaxed);
        if self.tx.try_send(outgoing).is_ok() {
            return true;
        }
        self.counters.pending.fetch_sub(events, Ordering::Relaxed);
        let before = self.counters.dropped.fetch_add(events, Ordering::Relaxed);
        let n = before + events;
        // Once, then every 100th, so a flood cannot flood the log too.
        if self.options.log_each && (before == 0 || before / 100 != n / 100) {
            tracing::warn!(
                dropped_total = n,
                "{} queue full; event dropped",
                self.options.name
            );
        }
        false
    }

    /// Queues one JSON value (`event` has an `id`).
    pub fn send_json(&self, id: &str, event: &serde_json::Value, events: u64) -> bool {
        match serde_json::to_vec(event) {
            Ok(body) => self.send(Outgoing {
                id: id.to_string(),
                body,
                events,
            }),
            Err(_) => false,
        }
    }

    /// Events lost so far (queue full, or delivery failed).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Events queued or being delivered.
    pub fn pending(&self) -> u64 {
        self.counters.pending.load(Ordering::Relaxed)
    }

    /// Waits until every queued delivery is done or `deadline` passes;
    /// returns the events still undelivered.
    pub async fn drain(&self, deadline: Instant) -> u64 {
        loop {
            let pending = self.pending();
            if pending == 0 || Instant::now() >= deadline {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn deliver_all(
    config: WebhookConfig,
    mut rx: mpsc::Receiver<Outgoing>,
    counters: Arc<Counters>,
    options: SenderOptions,
) {
    let http = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ATTEMPT_TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "{} disabled: no HTTP client", options.name);
            return;
        }
    };
    let config = Arc::new(config);
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(outgoing) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (http, config, counters) = (http.clone(), config.clone(), counters.clone());
        tokio::spawn(async move {
            let delivered = deliver(&http, &config, &outgoing, &options).await;
            if !delivered {
                let n = counters
                    .dropped
                    .fetch_add(outgoing.events, Ordering::Relaxed)
                    + outgoing.events;
                if options.log_each {
                    tracing::error!(event_id = %outgoing.id, dropped_total = n, attempts = ATTEMPTS, "{} delivery failed; event dropped", options.name);
                }
            }
            counters
                .pending
                .fetch_sub(outgoing.events, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Delivers one body, retrying as needed; true once the receiver took it.
async fn deliver(
    http: &reqwest::Client,
    config: &WebhookConfig,
    outgoing: &Outgoing,
    options: &SenderOptions,
) -> bool {
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
                signature(config.secret.0.as_bytes(), now, &outgoing.body),
            )
            .header(options.id_header, &outgoing.id)
            .body(outgoing.body.clone())
            .send()
            .await;
        let retry = match result {
            Ok(res) if res.status().is_success() => return true,
            Ok(res) => {
                let status = res.status();
                let retryable = status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                if options.log_each {
                    tracing::warn!(id = %outgoing.id, attempt, status = status.as_u16(), retry = retryable, "{} refused a delivery", options.name);
                } else {
                    tracing::debug!(id = %outgoing.id, attempt, status = status.as_u16(), retry = retryable, "{} refused a delivery", options.name);
                }
                retryable
            }
            Err(e) => {
                // Without the URL, which may carry the receiver's secret.
                let e = e.without_url();
                if options.log_each {
                    tracing::warn!(id = %outgoing.id, attempt, error = %e, "{} unreachable", options.name);
                } else {
                    tracing::debug!(id = %outgoing.id, attempt, error = %e, "{} unreachable", options.name);
                }
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

    const VAR: &str = "GATEHOUSE_SECURITY_WEBHOOK";

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
        let new = |url: &str, secret: Option<&str>| WebhookConfig::new(VAR, url, secret);
        assert!(new("https://siem.example.com/hook", Some(&secret)).is_ok());
        assert!(new("https://siem.example.com/hook", None).is_err());
        assert!(new("https://siem.example.com/hook", Some("short")).is_err());
        assert!(new("ftp://siem.example.com/hook", Some(&secret)).is_err());
        assert!(new("https://u:p@siem.example.com/", Some(&secret)).is_err());
    }

    #[test]
    fn messages_name_the_setting() {
        let e =
            WebhookConfig::new("GATEHOUSE_AUDIT_WEBHOOK", "https://x.example/", None).unwrap_err();
        assert!(e.starts_with("GATEHOUSE_AUDIT_WEBHOOK_SECRET:"), "{e}");
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let c = WebhookConfig::new(VAR, "https://x.example/", Some(&"k".repeat(40))).unwrap();
        assert!(!format!("{c:?}").contains("kkkk"));
    }
}
