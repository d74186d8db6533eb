//! The OTLP/HTTP trace receiver (tests/python/receiver.py, decoding with
//! PyPI's opentelemetry-proto) as a process, and helpers to read what
//! Gatehouse exported to it. Shared by tests/telemetry_traces.rs and
//! tests/no_secrets_in_logs.rs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn otlp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// Runs tests/python/setup.sh (the receiver's venv) once per test process.
pub fn install_receiver() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let setup = otlp_dir().join("setup.sh");
    let out = Command::new("bash")
        .arg(&setup)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", setup.display()));
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        setup.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    *done = true;
}

/// A running receiver on 127.0.0.1, killed on drop.
pub struct Receiver {
    child: Child,
    pub port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    pub fn start() -> Receiver {
        install_receiver();
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("spans.jsonl");
        let mut child = Command::new(otlp_dir().join(".venv/bin/python"))
            .arg(otlp_dir().join("receiver.py"))
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tests/python/receiver.py");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("ready ") {
                    let _ = tx.send(port.trim().parse::<u16>().expect("port"));
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!("the OTLP receiver did not start");
            }
        };
        Receiver {
            child,
            port,
            out,
            _dir: dir,
        }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for Gatehouse.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far (and any rejected request, as
    /// `{"rejected": …}`).
    pub fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("receiver output is JSON"))
            .collect()
    }

    /// The raw text received (to search for values that must not be there).
    pub fn raw(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until `done` holds for the spans received (at most 30 s);
    /// returns them.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if let Some(r) = spans.iter().find(|s| s.get("rejected").is_some()) {
                panic!("the receiver rejected an export: {r}");
            }
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} among the exported spans: {}",
                serde_json::to_string_pretty(&spans).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server environment that exports to `receiver` quickly (200 ms
/// batches) and logs JSON lines.
pub fn export_env(receiver: &Receiver) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
        ("GATEHOUSE_LOG_FORMAT".into(), "json".into()),
    ]
}

/// A random W3C trace id and parent span id, and the `traceparent` header
/// (sampled) that names them.
pub fn traceparent(sampled: bool) -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let parent = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    let flags = if sampled { "01" } else { "00" };
    let header = format!("00-{trace_id}-{parent}-{flags}");
    (trace_id, parent, header)
}

pub fn by_name<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

pub fn by_id<'a>(spans: &'a [Value], span_id: &str) -> Option<&'a Value> {
    spans.iter().find(|s| s["span_id"] == span_id)
}

/// Whether `span`'s chain of parents (within `spans`) reaches `ancestor`.
pub fn descends_from(spans: &[Value], span: &Value, ancestor: &Value) -> bool {
    let mut current = span;
    for _ in 0..64 {
        let parent = current["parent_span_id"].as_str().unwrap_or_default();
        if parent.is_empty() {
            return false;
        }
        if parent == ancestor["span_id"] {
            return true;
        }
        match by_id(spans, parent) {
            Some(p) => current = p,
            None => return false,
        }
    }
    false
}
