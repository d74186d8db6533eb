//! The NDJSON sink (`GATEHOUSE_AUDIT_NDJSON`): every kept audit event as
//! one JSON line on stdout, stderr or appended to a file.
//!
//! Writing happens on a thread of its own, so a slow disk or a stalled
//! pipe never holds a runtime thread: the audit writer hands it batches of
//! lines through a bounded channel (a full channel loses the batch,
//! counted), and the thread writes them through a buffer flushed at least
//! every second, and at shutdown.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::stats::Counters;
use crate::store::AuditRecord;

/// Batches waiting for the thread, at most.
const QUEUE: usize = 256;
/// Longest time a written line stays in the buffer.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Where the lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NdjsonTarget {
    Stdout,
    Stderr,
    File(PathBuf),
}

impl std::str::FromStr for NdjsonTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" => Err("give stdout, stderr or a file path".into()),
            "stdout" | "-" => Ok(Self::Stdout),
            "stderr" => Ok(Self::Stderr),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

impl std::fmt::Display for NdjsonTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::Stderr => f.write_str("stderr"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// An opened target, ready for the sink's thread.
pub struct NdjsonOutput {
    target: NdjsonTarget,
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for NdjsonOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NdjsonOutput({:?})", self.target)
    }
}

impl NdjsonOutput {
    /// Opens the target: a file is created (mode 0600) or appended to.
    pub fn open(target: NdjsonTarget) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match &target {
            NdjsonTarget::Stdout => Box::new(std::io::stdout()),
            NdjsonTarget::Stderr => Box::new(std::io::stderr()),
            NdjsonTarget::File(path) => {
                let mut o = OpenOptions::new();
                o.create(true).append(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    o.mode(0o600);
                }
                Box::new(o.open(path)?)
            }
        };
        Ok(Self { target, out })
    }

    pub fn target(&self) -> &NdjsonTarget {
        &self.target
    }
}

/// One event as the sinks (NDJSON, audit webhook) show it.
#[derive(Serialize)]
pub struct EventJson<'a> {
    pub id: &'a str,
    /// RFC 3339, UTC, whole seconds.
    pub time: String,
    /// Unix seconds.
    pub unix: i64,
    pub tenant: &'a str,
    pub kind: &'a str,
    pub outcome: &'a str,
    pub client_id: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub source_ip: Option<&'a str>,
    pub detail: serde_json::Value,
}

impl<'a> EventJson<'a> {
    pub fn of(r: &'a AuditRecord) -> Self {
        let time = chrono::DateTime::from_timestamp(r.at, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        Self {
            id: &r.id,
            time,
            unix: r.at,
            tenant: &r.tenant_id,
            kind: &r.kind,
            outcome: &r.outcome,
            client_id: r.client_id.as_deref(),
            subject: r.subject.as_deref(),
            source_ip: r.source_ip.as_deref(),
            detail: serde_json::from_str(&r.detail)
                .unwrap_or_else(|_| serde_json::Value::String(r.detail.clone())),
        }
    }
}

enum Message {
    Lines { text: String, events: u64 },
    Close(tokio::sync::oneshot::Sender<()>),
}

/// The writer task's handle on the sink's thread.
pub(crate) struct NdjsonSink {
    tx: SyncSender<Message>,
    counters: Arc<Counters>,
}

impl NdjsonSink {
    pub fn start(output: NdjsonOutput, counters: Arc<Counters>) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Message>(QUEUE);
        let thread_counters = counters.clone();
        std::thread::Builder::new()
            .name("audit-ndjson".into())
            .spawn(move || {
                let mut out = BufWriter::with_capacity(64 * 1024, output.out);
                let mut dirty_since: Option<Instant> = None;
                let mut failing = false;
                loop {
                    let wait = dirty_since
                        .map(|t| FLUSH_EVERY.saturating_sub(t.elapsed()))
                        .unwrap_or(Duration::from_secs(3600));
                    match rx.recv_timeout(wait) {
                        Ok(Message::Lines { text, events }) => {
                            if out.write_all(text.as_bytes()).is_err() {
                                thread_counters
                                    .ndjson_dropped
                                    .fetch_add(events, Ordering::Relaxed);
                                if !failing {
                                    tracing::error!("audit NDJSON output failed; events not written there are counted as lost");
                                    failing = true;
                                }
                            } else {
                                failing = false;
                            }
                            dirty_since.get_or_insert_with(Instant::now);
                        }
                        Ok(Message::Close(done)) => {
                            let _ = out.flush();
                            let _ = done.send(());
                            return;
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            let _ = out.flush();
                            return;
                        }
                    }
                    if dirty_since.is_some_and(|t| t.elapsed() >= FLUSH_EVERY) {
                        let _ = out.flush();
                        dirty_since = None;
                    }
                }
            })?;
        Ok(Self { tx, counters })
    }

    /// Hands events to the thread; never blocks.
    pub fn write(&self, events: &[AuditRecord]) {
        if events.is_empty() {
            return;
        }
        let mut text = String::with_capacity(events.len() * 300);
        for r in events {
            if let Ok(line) = serde_json::to_string(&EventJson::of(r)) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        let n = events.len() as u64;
        if self
            .tx
            .try_send(Message::Lines { text, events: n })
            .is_err()
        {
            self.counters.ndjson_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Flushes and stops the thread, waiting at most until `deadline`.
    pub async fn close(&self, deadline: Instant) {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let tx = self.tx.clone();
        // `send` may wait for room in the channel: not on a runtime thread.
        let sent = tokio::task::spawn_blocking(move || tx.send(Message::Close(done_tx)).is_ok());
        let wait = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(wait, async {
            if sent.await.unwrap_or(false) {
                let _ = done_rx.await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!("stdout".parse(), Ok(NdjsonTarget::Stdout));
        assert_eq!("stderr".parse(), Ok(NdjsonTarget::Stderr));
        assert_eq!(
            "/var/log/gatehouse/audit.ndjson".parse(),
            Ok(NdjsonTarget::File("/var/log/gatehouse/audit.ndjson".into()))
        );
        assert!("".parse::<NdjsonTarget>().is_err());
    }

    #[test]
    fn an_event_has_both_times_and_its_detail_as_json() {
        let r = AuditRecord {
            id: "abc".into(),
            tenant_id: "default".into(),
            at: 1_735_689_600,
            kind: "token".into(),
            outcome: "success".into(),
            client_id: Some("svc".into()),
            subject: None,
            source_ip: Some("203.0.113.9".into()),
            detail: r#"{"grant_type":"client_credentials"}"#.into(),
        };
        let v = serde_json::to_value(EventJson::of(&r)).unwrap();
        assert_eq!(v["time"], "2025-01-01T00:00:00Z");
        assert_eq!(v["unix"], 1_735_689_600);
        assert_eq!(v["detail"]["grant_type"], "client_credentials");
        assert_eq!(v["subject"], serde_json::Value::Null);
        let line = serde_json::to_string(&EventJson::of(&r)).unwrap();
        assert!(line.starts_with(r#"{"id":"abc","time":"#), "{line}");
    }

    #[tokio::test]
    async fn lines_reach_the_file_by_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        let output = NdjsonOutput::open(NdjsonTarget::File(path.clone())).unwrap();
        let sink = NdjsonSink::start(output, Arc::default()).unwrap();
        let r = AuditRecord {
            id: "x".into(),
            tenant_id: "t".into(),
            at: 0,
            kind: "k".into(),
            outcome: "o".into(),
            client_id: None,
            subject: None,
            source_ip: None,
            detail: "{}".into(),
        };
        sink.write(&[r.clone(), r]);
        sink.close(Instant::now() + Duration::from_secs(5)).await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
