//! Traces: OpenTelemetry export over OTLP/HTTP (protobuf), and the W3C
//! trace context of each request.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (the collector's base
//! URL; `/v1/traces` is appended) or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! (the full URL) is set, unless `OTEL_SDK_DISABLED=true`. The SDK reads
//! the rest of the standard variables itself: `OTEL_SERVICE_NAME` (here
//! defaulting to `gatehouse`), `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default
//! `parentbased_always_on`), `OTEL_EXPORTER_OTLP_HEADERS` / `_TIMEOUT`, and
//! the batch processor's `OTEL_BSP_*`. Spans are exported in batches from
//! the SDK's own thread and flushed by [`shutdown`] when the server stops.
//!
//! Without export no OpenTelemetry layer is installed: the spans are plain
//! `tracing` spans (disabled at the default log level, except the request
//! span), and a request's trace id is still taken from its `traceparent`
//! (or made up) so that its log lines can be correlated.

use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::{Level, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The service name when neither `OTEL_SERVICE_NAME` nor a `service.name`
/// in `OTEL_RESOURCE_ATTRIBUTES` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "gatehouse";

/// The only OTLP protocol exported.
const HTTP_PROTOBUF: &str = "http/protobuf";

/// How long the server waits at shutdown for the last spans to go out.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one export may take unless `OTEL_EXPORTER_OTLP_TIMEOUT` (or
/// `…_TRACES_TIMEOUT`, milliseconds) says otherwise (the spec's default).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a collector's answer read (it is a small protobuf).
const MAX_ANSWER: u64 = 64 * 1024;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum TraceSetupError {
    #[error("{0}: '{1}' is not supported; Gatehouse exports traces over OTLP/HTTP with protobuf (http/protobuf)")]
    Protocol(&'static str, String),
    #[error("OpenTelemetry trace exporter: {0}")]
    Exporter(String),
    #[error("OpenTelemetry traces were already set up in this process")]
    AlreadySetUp,
    #[error("{0}: '{1}' is not a number of milliseconds")]
    Timeout(&'static str, String),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether traces are exported (see the module documentation).
pub fn export_configured() -> bool {
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    endpoint && !disabled
}

/// Refuses a protocol other than http/protobuf rather than sending
/// protobuf to a gRPC or JSON receiver.
fn check_protocol() -> Result<(), TraceSetupError> {
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(p) = env(var) {
            if p != HTTP_PROTOBUF {
                return Err(TraceSetupError::Protocol(var, p));
            }
            // The per-signal variable wins over the general one.
            return Ok(());
        }
    }
    Ok(())
}

fn export_timeout() -> Result<Duration, TraceSetupError> {
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ] {
        if let Some(v) = env(var) {
            return v
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| TraceSetupError::Timeout(var, v));
        }
    }
    Ok(EXPORT_TIMEOUT)
}

/// The exporter's HTTP client: reqwest's blocking client. The SDK's batch
/// processor exports from its own thread (outside the async runtime) and
/// waits for each export there. Redirects are not followed: the request
/// may carry credentials for the collector (`OTEL_EXPORTER_OTLP_HEADERS`).
#[derive(Debug)]
struct ExportClient(reqwest::blocking::Client);

impl ExportClient {
    fn new(timeout: Duration) -> Result<Self, TraceSetupError> {
        // Built (and later dropped) off the async runtime, as the blocking
        // client requires.
        std::thread::spawn(move || {
            reqwest::blocking::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
                .build()
        })
        .join()
        .map_err(|_| TraceSetupError::Exporter("the HTTP client could not be built".into()))?
        .map(ExportClient)
        .map_err(|e| TraceSetupError::Exporter(format!("HTTP client: {e}")))
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, body.to_vec());
        let mut answer = self.0.execute(request.try_into()?)?;
        let mut body = Vec::new();
        (&mut answer).take(MAX_ANSWER).read_to_end(&mut body)?;
        let mut response = http::Response::new(Bytes::from(body));
        *response.status_mut() = answer.status();
        *response.headers_mut() = answer.headers().clone();
        Ok(response)
    }
}

fn resource() -> Resource {
    let named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attrs| {
            attrs
                .split(',')
                .any(|kv| kv.trim_start().starts_with("service.name="))
        });
    let mut builder = Resource::builder();
    if !named {
        builder = builder.with_service_name(DEFAULT_SERVICE_NAME);
    }
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Spans exported whatever the log filter says: Gatehouse's own, down to
/// `debug` (the store and upstream calls). Events, and other crates'
/// spans, follow `GATEHOUSE_LOG` (`telemetry::logs::Gate`).
pub(crate) fn exported_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("gatehouse") && *meta.level() <= Level::DEBUG
}

/// Sets up export (the batch exporter, the W3C propagator) and returns the
/// `tracing` layer that feeds it.
pub fn layer<S>() -> Result<impl Layer<S> + Send + Sync, TraceSetupError>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    check_protocol()?;
    let client = ExportClient::new(export_timeout()?)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(client)
        .build()
        .map_err(|e| TraceSetupError::Exporter(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build();
    let tracer = provider.tracer("gatehouse");
    PROVIDER
        .set(provider)
        .map_err(|_| TraceSetupError::AlreadySetUp)?;
    // Connectors inject the context of their calls through the global
    // propagator (gatehouse-connectors' trace module).
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Spans carry what they say; not where in the source they were made,
    // on which thread, or their busy and idle times.
    Ok(tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false))
}

/// Flushes the spans not yet exported and stops the exporter (at most
/// [`SHUTDOWN_TIMEOUT`]). Blocking: call it off the async workers.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(error = %e, "the last traces could not be exported at shutdown");
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The caller's trace context (W3C `traceparent` and `tracestate`), when
/// the request carries a valid one.
pub fn remote_parent(headers: &HeaderMap) -> Option<Context> {
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` (just created, not yet entered) a child of the caller's
/// trace when `headers` carry one, and returns its trace id: the exported
/// span's when traces are exported, else the caller's, else a new random
/// one (so that the request's log lines still share an id).
pub fn join_trace(span: &tracing::Span, headers: &HeaderMap) -> TraceId {
    let parent = remote_parent(headers);
    if let Some(cx) = &parent {
        // Fails only without the OpenTelemetry layer (no export).
        let _ = span.set_parent(cx.clone());
    }
    let own = span.context().span().span_context().trace_id();
    if own != TraceId::INVALID {
        return own;
    }
    match parent {
        Some(cx) => cx.span().span_context().trace_id(),
        None => TraceId::from_bytes(rand::random::<[u8; 16]>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(traceparent: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_str(traceparent).unwrap());
        h
    }

    #[test]
    fn a_valid_traceparent_is_the_parent() {
        let cx = remote_parent(&headers(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .expect("valid");
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote() && sc.is_sampled());
    }

    #[test]
    fn malformed_or_zero_traceparents_are_ignored() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(remote_parent(&headers(bad)).is_none(), "{bad:?}");
        }
        assert!(remote_parent(&HeaderMap::new()).is_none());
    }

    #[test]
    fn without_export_the_trace_id_is_the_callers_or_new() {
        let span = tracing::Span::none();
        let id = join_trace(
            &span,
            &headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let a = join_trace(&span, &HeaderMap::new());
        let b = join_trace(&span, &HeaderMap::new());
        assert_ne!(a, TraceId::INVALID);
        assert_ne!(a, b);
    }
}
