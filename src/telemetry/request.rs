//! The span every HTTP request runs in (the layer `app::router` applies).
//!
//! Its OpenTelemetry name is `"{METHOD} {route}"` with the route template
//! (`POST /token`, `GET /t/{tenant}/authorize`; `unmatched` for paths no
//! route knows), and it carries the semantic-convention attributes
//! `http.request.method`, `http.route`, `url.path` (never the query, which
//! holds codes, `state` and sign-in handles), `http.response.status_code`,
//! plus `request_id` (`x-request-id`) and `trace_id`. A `traceparent` from
//! the caller makes it part of the caller's trace. Every log line written
//! inside the request carries both ids (`telemetry::logs`); one line at
//! `debug` says how the request ended.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tracing::field::Empty;
use tracing::Instrument;

use super::logs::{self, RequestIds};
use super::trace;

/// The target of request spans; `telemetry::logs` keeps them enabled
/// whatever the log filter, so every line of a request has its ids.
pub const TARGET: &str = module_path!();

/// The name of request spans (for `tracing`; OpenTelemetry's is per route).
pub const SPAN: &str = "request";

/// Longest `url.path` recorded; longer ones are cut.
const MAX_PATH: usize = 256;
/// Longest `x-request-id` recorded as it is; longer ones are cut.
const MAX_REQUEST_ID: usize = 128;

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The request id `SetRequestIdLayer` gave the request (the caller's own,
/// when it sent one).
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|id| cut(id, MAX_REQUEST_ID).to_string())
        .unwrap_or_default()
}

/// Runs the request in its span; see the module documentation.
pub async fn trace_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let name = format!("{method} {}", route.as_deref().unwrap_or("unmatched"));
    let request_id = request_id(request.headers());
    let span = tracing::info_span!(
        target: TARGET,
        SPAN,
        otel.name = %name,
        otel.kind = "server",
        http.request.method = %method,
        http.route = Empty,
        url.path = cut(request.uri().path(), MAX_PATH),
        request_id = %request_id,
        trace_id = Empty,
        http.response.status_code = Empty,
        otel.status_code = Empty,
    );
    if let Some(route) = &route {
        span.record("http.route", route.as_str());
    }
    let trace_id = trace::join_trace(&span, request.headers()).to_string();
    span.record("trace_id", trace_id.as_str());
    logs::attach(
        &span,
        RequestIds {
            request_id,
            trace_id,
        },
    );

    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    // An i64: OpenTelemetry has no unsigned integers (a u64 would be text).
    span.record("http.response.status_code", i64::from(status));
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    tracing::debug!(
        target: TARGET,
        parent: &span,
        status,
        latency_ms = started.elapsed().as_micros() as f64 / 1000.0,
        "{name} answered"
    );
    response
}
