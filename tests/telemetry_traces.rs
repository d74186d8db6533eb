//! Traces and JSON logs end to end: Gatehouse exports to a real OTLP/HTTP
//! receiver (tests/python/receiver.py, decoding the protobuf with PyPI's
//! opentelemetry-proto) while the test runs sign-ins; the spans received
//! must name the endpoints, grants, store calls and upstream calls, hang
//! together, continue the caller's W3C trace, and share their trace id with
//! the request's JSON log lines. Upstream providers receive the context.

mod common;
use common::otlp::*;
use common::upstream::{self as up, Upstream, UPSTREAM_CLIENT, UPSTREAM_SECRET};
use common::*;

use std::sync::{Arc, Mutex};

use gatehouse_connectors::saml_test_idp::TestIdp;
use serde_json::Value;

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

async fn start_exporting(
    db: Db,
    config: &str,
    receiver: &Receiver,
    extra: &[(&str, &str)],
) -> Server {
    let mut env = export_env(receiver);
    // The per-request line is at debug: it is the line of /token we look for.
    env.push((
        "GATEHOUSE_LOG".into(),
        "info,sqlx=warn,gatehouse::telemetry=debug".into(),
    ));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Server::start_with_env(db, config, &env_refs(&env)).await
}

/// The JSON log lines of the server (every line must be one).
fn json_lines(server: &Server) -> Vec<Value> {
    server
        .log()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {l}"))
        })
        .collect()
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

async fn login_and_token_form_one_trace_with_the_callers_parent(db: Db) {
    let receiver = Receiver::start();
    let server = start_exporting(db, &base_config(""), &receiver, &[]).await;

    // Sign in (no traceparent: each browser request is a new trace).
    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let code = browser
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .code();

    // Redeem the code as part of the caller's trace.
    let (trace_id, parent, header) = traceparent(true);
    let res = reqwest::Client::new()
        .post(server.url("/token"))
        .header("traceparent", &header)
        .header("tracestate", "vendor=opaque")
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("client_id", PUBLIC_CLIENT),
            ("code_verifier", p.verifier.as_str()),
            ("resource", MCP),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(res.status().as_u16(), 200);
    let request_id = res.headers()["x-request-id"]
        .to_str()
        .expect("request id")
        .to_string();
    let tokens: Value = res.json().await.expect("json");
    let access = tokens["access_token"].as_str().expect("access token");

    let in_trace = |s: &Value| s["trace_id"] == trace_id.as_str();
    let spans = receiver
        .wait_for("token request with its grant and store calls", |spans| {
            let token = spans
                .iter()
                .any(|s| in_trace(s) && s["name"] == "POST /token");
            let grant = spans
                .iter()
                .any(|s| in_trace(s) && s["name"] == "grant.authorization_code");
            let db = spans
                .iter()
                .any(|s| in_trace(s) && s["name"] == "db.redeem_code");
            let pages = ["GET /authorize", "GET /login", "POST /login"]
                .iter()
                .all(|n| !by_name(spans, n).is_empty());
            token && grant && db && pages
        })
        .await;

    // The request span: a server span named after the route, child of the
    // span the caller named, with the semantic-convention attributes.
    let token = by_name(&spans, "POST /token")
        .into_iter()
        .find(|s| in_trace(s))
        .expect("token span");
    assert_eq!(token["parent_span_id"], parent.as_str(), "{token}");
    assert_eq!(token["kind"], "server");
    assert_eq!(attr(token, "http.request.method"), "POST");
    assert_eq!(attr(token, "http.route"), "/token");
    assert_eq!(attr(token, "url.path"), "/token");
    assert_eq!(attr(token, "http.response.status_code"), 200);
    assert_eq!(attr(token, "request_id"), request_id.as_str());
    assert_eq!(token["resource"]["service.name"], "gatehouse");

    // The grant, and the store calls under it, descend from the request.
    let grant = by_name(&spans, "grant.authorization_code")
        .into_iter()
        .find(|s| in_trace(s))
        .expect("grant span");
    assert!(descends_from(&spans, grant, token), "{grant}");
    assert_eq!(attr(grant, "client_id"), PUBLIC_CLIENT);
    let redeem = by_name(&spans, "db.redeem_code")
        .into_iter()
        .find(|s| in_trace(s))
        .expect("db span");
    assert!(descends_from(&spans, redeem, grant), "{redeem}");
    assert_eq!(redeem["kind"], "client");
    let system = match db {
        Db::Sqlite => "sqlite",
        Db::Postgres => "postgresql",
    };
    assert_eq!(attr(redeem, "db.system"), system);
    assert_eq!(attr(redeem, "db.operation"), "redeem_code");
    // Every span of the request is in the caller's trace.
    for s in spans.iter().filter(|s| descends_from(&spans, s, token)) {
        assert!(in_trace(s), "{s}");
    }

    // The browser's requests: their own traces, with no query in url.path
    // (the authorization request's parameters and the code stay out).
    let authorize = by_name(&spans, "GET /authorize")[0];
    assert_eq!(attr(authorize, "url.path"), "/authorize");
    assert_eq!(authorize["parent_span_id"], "");
    assert_ne!(authorize["trace_id"], trace_id.as_str());
    assert!(!by_name(&spans, "db.put_pending").is_empty());
    let raw = receiver.raw();
    for value in [
        code.as_str(),
        p.verifier.as_str(),
        access,
        p.challenge.as_str(),
    ] {
        assert!(!raw.contains(value), "exported: {value}");
    }

    // The JSON log: one object per line; the lines of the /token request
    // carry its request id and the caller's trace id.
    let lines = json_lines(&server);
    for l in &lines {
        for key in ["timestamp", "level", "target", "message", "fields"] {
            assert!(l.get(key).is_some(), "no {key} in {l}");
        }
    }
    let of_token: Vec<&Value> = lines
        .iter()
        .filter(|l| l["request_id"] == request_id.as_str())
        .collect();
    assert!(!of_token.is_empty(), "no log line of the token request");
    for l in of_token {
        assert_eq!(l["trace_id"], trace_id.as_str(), "{l}");
    }
}

async fn unsampled_callers_are_not_exported_but_keep_their_trace_id(db: Db) {
    let receiver = Receiver::start();
    let server = start_exporting(db, &base_config(""), &receiver, &[]).await;
    let http = reqwest::Client::new();
    let (unsampled, _, header) = traceparent(false);
    let res = http
        .get(server.url("/jwks.json"))
        .header("traceparent", &header)
        .send()
        .await
        .expect("jwks");
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    // A sampled request afterwards: once it is exported, the earlier one
    // would have been too.
    let (sampled, _, header) = traceparent(true);
    let res = http
        .get(server.url("/nowhere?code=hidden"))
        .header("traceparent", &header)
        .send()
        .await
        .expect("404");
    assert_eq!(res.status().as_u16(), 404);
    let spans = receiver
        .wait_for("the sampled request", |spans| {
            spans.iter().any(|s| s["trace_id"] == sampled.as_str())
        })
        .await;
    assert!(
        spans.iter().all(|s| s["trace_id"] != unsampled.as_str()),
        "parentbased_always_on: a caller's unsampled trace is not exported"
    );
    let unmatched = spans
        .iter()
        .find(|s| s["trace_id"] == sampled.as_str() && s["kind"] == "server")
        .expect("request span");
    assert_eq!(unmatched["name"], "GET unmatched");
    assert_eq!(attr(unmatched, "url.path"), "/nowhere");
    assert_eq!(attr(unmatched, "http.response.status_code"), 404);
    assert!(attr(unmatched, "http.route").is_null());
    // The unsampled request's log line still names its trace.
    let lines = json_lines(&server);
    let line = lines
        .iter()
        .find(|l| l["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no log line of the unsampled request: {}", server.log()));
    assert_eq!(line["trace_id"], unsampled.as_str());
}

on_both_databases!(
    login_and_token_form_one_trace_with_the_callers_parent,
    unsampled_callers_are_not_exported_but_keep_their_trace_id,
);

/// `OTEL_TRACES_SAMPLER` is the SDK's: `always_on` exports even what the
/// caller did not sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_comes_from_the_environment() {
    let receiver = Receiver::start();
    let server = start_exporting(
        Db::Sqlite,
        &base_config(""),
        &receiver,
        &[
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_SERVICE_NAME", "gh-test"),
        ],
    )
    .await;
    let (unsampled, _, header) = traceparent(false);
    reqwest::Client::new()
        .get(server.url("/jwks.json"))
        .header("traceparent", &header)
        .send()
        .await
        .expect("jwks");
    let spans = receiver
        .wait_for("the request", |spans| {
            spans.iter().any(|s| s["trace_id"] == unsampled.as_str())
        })
        .await;
    assert_eq!(spans[0]["resource"]["service.name"], "gh-test");
}

/// Spans still buffered when the server is stopped (SIGTERM) are exported
/// before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_the_last_spans() {
    let receiver = Receiver::start();
    let mut server = start_exporting(
        Db::Sqlite,
        &base_config(""),
        &receiver,
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    )
    .await;
    let (trace_id, _, header) = traceparent(true);
    reqwest::Client::new()
        .get(server.url("/.well-known/oauth-authorization-server"))
        .header("traceparent", &header)
        .send()
        .await
        .expect("metadata");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        receiver
            .spans()
            .iter()
            .all(|s| s["trace_id"] != trace_id.as_str()),
        "exported before the batch delay: the test proves nothing"
    );
    server.terminate();
    receiver
        .wait_for("the span buffered at shutdown", |spans| {
            spans.iter().any(|s| s["trace_id"] == trace_id.as_str())
        })
        .await;
}

/// A bad setting stops the server with one line naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (env, expected) in [
        (
            ("GATEHOUSE_LOG_FORMAT", "yaml"),
            "error: GATEHOUSE_LOG_FORMAT: 'yaml' is not a log format (text or json)",
        ),
        (
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            "error: OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' is not supported",
        ),
        (
            ("GATEHOUSE_LOG", "info,gatehouse=loud"),
            "error: GATEHOUSE_LOG: 'info,gatehouse=loud' is not a valid filter",
        ),
    ] {
        let out = std::process::Command::new(binary())
            .env_clear()
            .env("GATEHOUSE_DATA_DIR", dir.path())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env(env.0, env.1)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(expected), "{env:?}: {stderr}");
    }
}

// ---------------------------------------------------------------------------
// Upstream calls.
// ---------------------------------------------------------------------------

/// An OIDC sign-in at a real provider (oidc-provider): discovery and the
/// code exchange are client spans of the requests that made them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_oidc_calls_are_spans_of_their_requests() {
    let receiver = Receiver::start();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let connector = format!(
        r#"
[[tenants.connectors]]
id = "corp"
type = "oidc"
issuer = "{issuer}"
client_id = "{UPSTREAM_CLIENT}"
client_secret = "{UPSTREAM_SECRET}"
scopes = ["openid", "email", "profile"]
"#
    );
    let server = start_exporting(Db::Sqlite, &up::config(&connector), &receiver, &[]).await;
    let upstream = Upstream::start(port, &server.url("/callback/corp"), &[]);
    let tokens = up::login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    assert!(tokens["access_token"].is_string());

    let spans = receiver
        .wait_for("upstream discovery and token spans", |spans| {
            !by_name(spans, "upstream.discovery").is_empty()
                && !by_name(spans, "upstream.token").is_empty()
                && !by_name(spans, "GET /callback/{connector_id}").is_empty()
        })
        .await;
    let discovery = by_name(&spans, "upstream.discovery")[0];
    // The sign-in request that needed the provider's metadata.
    let request = by_id(
        &spans,
        discovery["parent_span_id"].as_str().unwrap_or_default(),
    )
    .expect("discovery's parent");
    assert_eq!(request["kind"], "server", "{discovery}");
    assert!(
        ["GET /authorize", "GET /login"].contains(&request["name"].as_str().unwrap_or_default()),
        "{request}"
    );
    assert_eq!(discovery["kind"], "client");
    assert_eq!(attr(discovery, "connector.id"), "corp");
    assert_eq!(attr(discovery, "http.response.status_code"), 200);

    let token = by_name(&spans, "upstream.token")[0];
    let callback = by_name(&spans, "GET /callback/{connector_id}")[0];
    assert!(descends_from(&spans, token, callback), "{token}");
    assert_eq!(attr(token, "http.response.status_code"), 200);
    assert_eq!(token["status"], "unset");
    assert_eq!(attr(callback, "url.path"), "/callback/corp");
}

/// The provider receives the trace context of the call: a SAML IdP's
/// metadata URL served here records the `traceparent` Gatehouse sends when
/// a sign-in (with the caller's trace) needs the metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_receives_the_trace_context() {
    let receiver = Receiver::start();
    let idp = TestIdp::generate("https://idp.example.com");
    let metadata = idp.metadata("http://127.0.0.1:9/sso");
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/metadata",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let kept = kept.clone();
            let metadata = metadata.clone();
            async move {
                let tp = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                kept.lock().unwrap().push(tp);
                metadata
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let connector = format!(
        r#"
[[tenants.connectors]]
id = "corp"
type = "saml"
idp_metadata_url = "http://{addr}/metadata"
attributes = {{ email = "mail" }}
"#
    );
    let server = start_exporting(Db::Sqlite, &up::config(&connector), &receiver, &[]).await;
    // The browser's requests up to the IdP, each sent with the caller's
    // trace context.
    let (trace_id, parent, header) = traceparent(true);
    let p = pkce();
    let browser = Browser::new();
    let mut next = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    for _ in 0..4 {
        let res = browser
            .http
            .get(&next)
            .header("traceparent", &header)
            .send()
            .await
            .expect("sign-in");
        assert!(res.status().is_redirection(), "{}", server.log());
        next = location(&res);
        if !next.starts_with(&server.base) {
            break;
        }
    }
    assert!(next.starts_with("http://127.0.0.1:9/sso"), "{next}");

    let sent = seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let sent = sent[0]
        .clone()
        .expect("a traceparent header at the provider");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(parts[1], trace_id, "the caller's trace");

    let spans = receiver
        .wait_for("the metadata fetch", |spans| {
            !by_name(spans, "upstream.saml_metadata").is_empty()
        })
        .await;
    let fetch = by_name(&spans, "upstream.saml_metadata")[0];
    assert_eq!(
        fetch["span_id"], parts[2],
        "the parent the provider saw is the fetch's span"
    );
    assert_eq!(fetch["trace_id"], trace_id.as_str());
    let request = by_id(&spans, fetch["parent_span_id"].as_str().unwrap_or_default())
        .expect("fetch's parent");
    assert_eq!(request["kind"], "server", "{request}");
    assert_eq!(request["parent_span_id"], parent.as_str());
}
