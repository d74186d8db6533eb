//! Spans around the calls connectors make to identity providers, and the
//! W3C trace context (`traceparent`, `tracestate`) sent with each call, so
//! that a provider's own traces join the broker's.
//!
//! Each operation (discovery, key set, token, refresh, userinfo, SAML
//! metadata) runs in a span that OpenTelemetry names `upstream.<operation>`,
//! with the connector id and the status of the provider's last answer. The
//! context sent is that span's, through OpenTelemetry's global propagator:
//! while the process installs no tracer and no propagator (the broker does
//! only when traces are exported), nothing is added to the requests.
//! Only the context goes out: never a token, code or secret of the call.

use std::future::Future;
use std::pin::Pin;

use openidconnect::{AsyncHttpClient, HttpClientError, HttpRequest, HttpResponse};
use opentelemetry::propagation::Injector;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The tracing name of every upstream span (OpenTelemetry's name is the
/// operation's, in `otel.name`).
const SPAN: &str = "upstream";

/// A span for one operation of `connector` against its provider.
pub(crate) fn span(operation: &'static str, connector: &str) -> tracing::Span {
    tracing::debug_span!(
        SPAN,
        otel.name = operation,
        otel.kind = "client",
        connector.id = connector,
        http.response.status_code = Empty,
        otel.status_code = Empty,
    )
}

/// Runs `call` in `span`; a failure marks the span as an error.
pub(crate) async fn traced<T, E>(
    span: tracing::Span,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let result = call.instrument(span.clone()).await;
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    result
}

/// Records the provider's HTTP status on the current span when it is an
/// upstream span (never on an enclosing request span).
pub(crate) fn record_status(status: u16) {
    let current = tracing::Span::current();
    if current.metadata().is_some_and(|m| m.name() == SPAN) {
        // An i64: OpenTelemetry has no unsigned integers (a u64 would be text).
        current.record("http.response.status_code", i64::from(status));
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Adds the current span's trace context to `headers`.
pub(crate) fn inject(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

/// The current span's trace context as headers, for a `reqwest` request.
pub(crate) fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    inject(&mut headers);
    headers
}

/// `reqwest`'s client as the HTTP client of `openidconnect` calls, with
/// the trace context added to each request and the answer's status
/// recorded on the span.
pub(crate) struct Traced<'a>(pub &'a reqwest::Client);

impl<'c> AsyncHttpClient<'c> for Traced<'_> {
    type Error = HttpClientError<reqwest::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(send(self.0, request))
    }
}

async fn send(
    http: &reqwest::Client,
    mut request: HttpRequest,
) -> Result<HttpResponse, HttpClientError<reqwest::Error>> {
    inject(request.headers_mut());
    let response = http.call(request).await?;
    record_status(response.status().as_u16());
    Ok(response)
}

#[cfg(test)]
mod tests {
    //! The trace context reaches a provider: a loopback server records the
    //! headers of the requests it gets while a real tracer is installed.

    use std::sync::{Arc, Mutex};

    use axum::http::HeaderMap as AxumHeaders;
    use axum::routing::get;
    use axum::Router;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    type Seen = Arc<Mutex<Vec<Option<String>>>>;

    async fn recorder() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let kept = seen.clone();
        let app = Router::new().route(
            "/metadata",
            get(move |headers: AxumHeaders| {
                let kept = kept.clone();
                async move {
                    let tp = headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    kept.lock().unwrap().push(tp);
                    "<ok/>"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/metadata"), seen)
    }

    async fn call(url: &str, op: &'static str) -> u16 {
        let http = reqwest::Client::new();
        traced(span(op, "corp"), async {
            let res = http.get(url).headers(headers()).send().await?;
            record_status(res.status().as_u16());
            Ok::<_, reqwest::Error>(res.status().as_u16())
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn the_upstream_call_carries_the_span_trace_context() {
        let (url, seen) = recorder().await;

        // Without a tracer: nothing is added.
        assert_eq!(call(&url, "upstream.saml_metadata").await, 200);
        assert_eq!(seen.lock().unwrap().as_slice(), &[None]);

        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let _guard = tracing::subscriber::set_default(subscriber);

        let parent = tracing::info_span!("request");
        let parent_cx = parent.context();
        let trace_id = parent_cx.span().span_context().trace_id();
        assert_ne!(trace_id, opentelemetry::trace::TraceId::INVALID);
        assert_eq!(
            call(&url, "upstream.saml_metadata")
                .instrument(parent.clone())
                .await,
            200
        );
        let got = seen.lock().unwrap()[1]
            .clone()
            .expect("a traceparent header");
        let parts: Vec<&str> = got.split('-').collect();
        assert_eq!(parts.len(), 4, "{got}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], trace_id.to_string(), "same trace as the caller");
        assert_ne!(
            parts[2],
            parent_cx.span().span_context().span_id().to_string(),
            "the parent is the upstream span, not the caller's"
        );
    }
}
