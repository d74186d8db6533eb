//! The management listener's `/metrics`, read with Prometheus' own parser
//! (`prometheus_client` from PyPI, tests/python): every family moves when
//! its event happens, labels stay bounded whatever a caller sends, and the
//! public listener does not serve metrics.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::upstream::{self, login_upstream, Upstream, UPSTREAM_CLIENT, UPSTREAM_SECRET};
use common::*;
use serde_json::{json, Value};

const SECOND: &str = "https://second.example.com/mcp";
const AGENT: &str = "agent";
const AGENT_SECRET: &str = "agent-secret-0123456789";
const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

fn config() -> String {
    base_config(&format!(
        r#"
[[tenants.resources]]
uri = "{SECOND}"
name = "Second MCP server"
scopes = ["mcp:read", "mcp:write"]

[[tenants.clients]]
client_id = "{AGENT}"
client_name = "Delegating agent"
secret = "{AGENT_SECRET}"
grant_types = ["client_credentials", "{TE}"]

[[tenants.token_exchange]]
clients = ["{AGENT}"]
subject_token_types = ["{AT}"]
resources = ["{SECOND}"]
"#
    ))
}

/// One parsed sample.
#[derive(Debug)]
struct Sample {
    family: String,
    kind: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

struct Scrape(Vec<Sample>);

impl Scrape {
    /// Sum of the samples named `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn family_type(&self, family: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|s| s.family == family)
            .map(|s| s.kind.as_str())
    }
}

fn python() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let status = Command::new(dir.join("setup.sh"))
        .status()
        .expect("tests/python/setup.sh");
    assert!(status.success(), "tests/python/setup.sh failed");
    dir.join(".venv/bin/python")
}

/// GET /metrics on the management listener, parsed by prometheus_client.
async fn scrape(mgmt: &str) -> Scrape {
    let res = reqwest::get(format!("{mgmt}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = res.text().await.expect("body");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/parse_metrics.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    Scrape(
        parsed
            .into_iter()
            .map(|s| Sample {
                family: s["family"].as_str().unwrap().to_string(),
                kind: s["type"].as_str().unwrap().to_string(),
                name: s["name"].as_str().unwrap().to_string(),
                labels: serde_json::from_value(s["labels"].clone()).unwrap(),
                value: s["value"].as_f64().unwrap(),
            })
            .collect(),
    )
}

async fn start(db: Db, config: &str, env: &[(&str, &str)]) -> (Server, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut all = vec![("GATEHOUSE_MANAGEMENT_LISTEN", listen.as_str())];
    all.extend_from_slice(env);
    let server = Server::start_with_env(db, config, &all).await;
    (server, format!("http://{listen}"))
}

/// Waits until `check` holds for a fresh scrape (counters fed by
/// background work, such as the audit writer, lag a little).
async fn eventually(mgmt: &str, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(mgmt).await;
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn post_form(server: &Server, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(server.url(path))
        .form(form)
        .send()
        .await
        .expect("post");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn management_listener_serves_probes_and_the_public_one_no_metrics() {
    let (server, mgmt) = start(Db::Sqlite, &config(), &[]).await;
    for path in ["/healthz", "/readyz"] {
        let res = reqwest::get(format!("{mgmt}{path}")).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let public = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(public.status(), 404, "metrics must not be public");
    let s = scrape(&mgmt).await;
    assert_eq!(s.family_type("gatehouse_build"), Some("info"));
    assert_eq!(
        s.value(
            "gatehouse_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

#[tokio::test]
async fn each_family_moves_when_its_event_happens() {
    let (server, mgmt) = start(
        Db::Sqlite,
        &config(),
        // Two wrong secrets per client before 429, so the test reaches it.
        &[("GATEHOUSE_MAX_FAILURES", "2")],
    )
    .await;
    let before = scrape(&mgmt).await;
    let grew = |after: &Scrape, name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };

    // HTTP requests, by route template.
    let disco = reqwest::get(server.url("/.well-known/oauth-authorization-server"))
        .await
        .unwrap();
    assert_eq!(disco.status(), 200);

    // Tokens issued, by grant and format.
    let (status, _) = token_request(
        &server,
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        Some((SERVICE_CLIENT, SERVICE_SECRET)),
    )
    .await;
    assert_eq!(status, 200);

    // An OAuth error.
    let (status, body) = post_form(&server, "/token", &[("grant_type", "password")]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "unsupported_grant_type");

    // A sign-in, with refresh and ID tokens.
    let tokens = login_public(&server, &Browser::new(), "openid mcp:read").await;
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();

    // Token exchange: allowed for a resource the rule names, denied for one
    // it does not.
    let user = tokens["access_token"].as_str().unwrap();
    let exchange = |resource: &'static str| {
        let user = user.to_string();
        let server = &server;
        async move {
            token_request(
                server,
                &[
                    ("grant_type", TE),
                    ("subject_token", &user),
                    ("subject_token_type", AT),
                    ("resource", resource),
                ],
                Some((AGENT, AGENT_SECRET)),
            )
            .await
        }
    };
    let (status, json) = exchange(SECOND).await;
    assert_eq!(status, 200, "{json}");
    let (status, _) = exchange(OTHER).await;
    assert_eq!(status, 400);

    // Refresh reuse: the second use of the same refresh token.
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("client_id", PUBLIC_CLIENT),
    ];
    assert_eq!(post_form(&server, "/token", &form).await.0, 200);
    assert_eq!(post_form(&server, "/token", &form).await.0, 400);

    // Code replay.
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let code = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .code();
    redeem_code(&server, PUBLIC_CLIENT, REDIRECT, &code, &p).await;
    let replay = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", PUBLIC_CLIENT),
        ("code_verifier", p.verifier.as_str()),
    ];
    assert_eq!(post_form(&server, "/token", &replay).await.0, 400);

    // A failed sign-in: the login form posted once with a wrong password.
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let browser = Browser::new();
    let mut res = browser.http.get(&url).send().await.unwrap();
    while res.status().is_redirection() {
        let to = location(&res);
        res = browser.http.get(&to).send().await.unwrap();
    }
    let page = res.text().await.unwrap();
    let action = upstream::form_action(&page).expect("login form");
    let form = [
        ("pending", hidden_field(&page, "pending").expect("pending")),
        ("csrf", hidden_field(&page, "csrf").expect("csrf")),
        ("username", USER.to_string()),
        ("password", "not-the-password".to_string()),
    ];
    let wrong = browser.http.post(&action).form(&form).send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    // Registrations: one created, one refused.
    let http = reqwest::Client::new();
    let created = http
        .post(server.url("/register"))
        .json(&json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let refused = http
        .post(server.url("/register"))
        .json(&json!({"redirect_uris": ["http://app.example.com/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    // Rate limit: wrong secrets until the throttle answers 429.
    let mut limited = false;
    for _ in 0..5 {
        let (status, _) = token_request(
            &server,
            &[("grant_type", "client_credentials")],
            Some((SERVICE_CLIENT, "wrong-secret")),
        )
        .await;
        if status == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the client-auth throttle never answered 429");

    // A caller cannot mint label values: an unknown path and an invented
    // method each land on one fixed label.
    let odd = reqwest::get(server.url("/no-such-endpoint-4711"))
        .await
        .unwrap();
    assert_eq!(odd.status(), 404);
    let brew = http
        .request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            server.url("/token"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(brew.status(), 405);

    let after = eventually(&mgmt, "audit events written", |s| {
        s.value("gatehouse_audit_events_written_total", &[]) > 0.0
    })
    .await;
    let default = ("tenant", "default");

    let disco_labels = [
        ("route", "/.well-known/oauth-authorization-server"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert_eq!(
        grew(&after, "gatehouse_http_requests_total", &disco_labels),
        1.0
    );
    assert_eq!(
        grew(
            &after,
            "gatehouse_http_request_duration_seconds_count",
            &disco_labels
        ),
        1.0
    );
    assert_eq!(
        after.family_type("gatehouse_http_request_duration_seconds"),
        Some("histogram")
    );
    for (grant, format, n) in [
        ("client_credentials", "jwt", 1.0),
        ("authorization_code", "jwt", 2.0),
        ("authorization_code", "refresh", 2.0),
        ("authorization_code", "id_token", 1.0),
        ("refresh_token", "jwt", 1.0),
        ("refresh_token", "refresh", 1.0),
        (TE, "jwt", 1.0),
    ] {
        assert_eq!(
            grew(
                &after,
                "gatehouse_tokens_issued_total",
                &[default, ("grant_type", grant), ("format", format)]
            ),
            n,
            "{grant} {format}"
        );
    }
    assert_eq!(
        grew(
            &after,
            "gatehouse_oauth_errors_total",
            &[("endpoint", "/token"), ("error", "unsupported_grant_type")]
        ),
        1.0
    );
    assert!(
        grew(
            &after,
            "gatehouse_oauth_errors_total",
            &[("endpoint", "/token"), ("error", "invalid_grant")]
        ) >= 2.0,
        "refresh reuse and code replay are invalid_grant"
    );
    for kind in ["refresh_reuse", "code_replay"] {
        assert_eq!(
            grew(
                &after,
                "gatehouse_replays_detected_total",
                &[default, ("kind", kind)]
            ),
            1.0,
            "{kind}"
        );
        assert_eq!(
            grew(
                &after,
                "gatehouse_security_events_total",
                &[("kind", kind), ("severity", "high")]
            ),
            1.0,
            "{kind}"
        );
    }
    for (outcome, n) in [("success", 2.0), ("failure", 1.0)] {
        assert_eq!(
            grew(
                &after,
                "gatehouse_sign_ins_total",
                &[default, ("connector", "dev"), ("outcome", outcome)]
            ),
            n,
            "sign-ins {outcome}"
        );
    }
    for outcome in ["created", "refused"] {
        assert_eq!(
            grew(
                &after,
                "gatehouse_registrations_total",
                &[default, ("method", "dcr"), ("outcome", outcome)]
            ),
            1.0,
            "registration {outcome}"
        );
    }
    for decision in ["allowed", "denied"] {
        assert_eq!(
            grew(
                &after,
                "gatehouse_token_exchange_decisions_total",
                &[default, ("decision", decision)]
            ),
            1.0,
            "exchange {decision}"
        );
    }
    assert!(
        grew(
            &after,
            "gatehouse_rate_limited_total",
            &[("limit", "client_auth_client")]
        ) >= 1.0
    );
    assert!(
        grew(
            &after,
            "gatehouse_cache_requests_total",
            &[("cache", "tenants"), ("result", "hit")]
        ) > 0.0
    );
    assert!(
        grew(
            &after,
            "gatehouse_cache_requests_total",
            &[("cache", "clients"), ("result", "hit")]
        ) > 0.0
    );
    assert!(after.value("gatehouse_db_pool_max_connections", &[]) >= 1.0);
    // SQLite: nothing to listen to.
    assert_eq!(after.value("gatehouse_revocation_listener_up", &[]), 0.0);
    assert!(
        after.value("gatehouse_db_pool_connections", &[("state", "idle")])
            + after.value("gatehouse_db_pool_connections", &[("state", "in_use")])
            >= 1.0
    );
    assert!(after.value("gatehouse_db_query_duration_seconds_count", &[]) > 0.0);
    assert_eq!(
        after.family_type("gatehouse_audit_queue_depth"),
        Some("gauge")
    );
    assert_eq!(
        after.value("gatehouse_audit_events_dropped_total", &[]),
        0.0
    );

    // Bounded labels: the odd path and method left no trace of themselves.
    assert!(
        grew(
            &after,
            "gatehouse_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ) >= 1.0
    );
    assert!(
        grew(
            &after,
            "gatehouse_http_requests_total",
            &[("method", "other"), ("status", "405")]
        ) >= 1.0
    );
    for s in &after.0 {
        for v in s.labels.values() {
            assert!(
                !v.contains("4711") && v != "BREW",
                "a caller's input became a label value: {s:?}"
            );
            assert!(
                !v.contains(SERVICE_CLIENT) && !v.contains(PUBLIC_CLIENT),
                "client ids are not labels: {s:?}"
            );
        }
    }
}

#[tokio::test]
async fn upstream_calls_are_counted_by_connector() {
    common::upstream::install_upstream();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let connectors = format!(
        r#"
[[tenants.connectors]]
id = "corp"
type = "oidc"
display_name = "Corp"
issuer = "{issuer}"
client_id = "{UPSTREAM_CLIENT}"
client_secret = "{UPSTREAM_SECRET}"
scopes = ["openid", "email", "profile"]
"#
    );
    let (server, mgmt) = start(Db::Postgres, &common::upstream::config(&connectors), &[]).await;
    let upstream = Upstream::start(port, &server.url("/callback/corp"), &[]);
    let before = scrape(&mgmt).await;
    login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    let after = scrape(&mgmt).await;
    let ok = [("connector", "corp"), ("outcome", "ok")];
    assert!(
        after.value("gatehouse_upstream_requests_total", &ok)
            - before.value("gatehouse_upstream_requests_total", &ok)
            >= 2.0,
        "begin (discovery) and complete (token, keys) reach the IdP"
    );
    assert!(
        after.value(
            "gatehouse_upstream_request_duration_seconds_count",
            &[("connector", "corp")]
        ) >= 2.0
    );
    assert_eq!(
        after.value(
            "gatehouse_sign_ins_total",
            &[
                ("tenant", "default"),
                ("connector", "corp"),
                ("outcome", "success")
            ]
        ),
        1.0
    );

    // PostgreSQL's pool is sampled too.
    assert!(after.value("gatehouse_db_pool_max_connections", &[]) >= 1.0);
    // The node hears revocations from the others: its heartbeat returns
    // (polled: on a loaded machine one may come back late).
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(&mgmt)
        .await
        .value("gatehouse_revocation_listener_up", &[])
        != 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the revocation listener never reported hearing: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_unreachable_provider_counts_as_an_upstream_error() {
    // Nothing listens at this issuer: discovery fails at the first login.
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let connectors = format!(
        r#"
[[tenants.connectors]]
id = "down"
type = "oidc"
issuer = "{issuer}"
client_id = "{UPSTREAM_CLIENT}"
client_secret = "{UPSTREAM_SECRET}"
"#
    );
    let (server, mgmt) = start(Db::Sqlite, &common::upstream::config(&connectors), &[]).await;
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    match Browser::new().authorize(&server, &url, "", "", true).await {
        Outcome::Page(status, _) => assert!(status >= 500, "{status}"),
        Outcome::Redirect(u) => panic!("no provider, yet redirected to {u}"),
    }
    let s = scrape(&mgmt).await;
    assert_eq!(
        s.value(
            "gatehouse_upstream_requests_total",
            &[("connector", "down"), ("outcome", "error")]
        ),
        1.0
    );
    assert_eq!(
        s.value(
            "gatehouse_sign_ins_total",
            &[
                ("tenant", "default"),
                ("connector", "down"),
                ("outcome", "failure")
            ]
        ),
        1.0
    );
}

/// deploy/checks/deploy_checks.py checks the alert rules and the Grafana
/// dashboard against its list of what Gatehouse exports; that list must be
/// what the binary really serves, family for family, label for label.
#[tokio::test]
async fn the_deploy_checks_know_exactly_the_exported_metrics() {
    let (server, mgmt) = start(Db::Sqlite, &config(), &[]).await;
    // One request so the HTTP families have a sample to show their labels.
    reqwest::get(server.url("/healthz")).await.unwrap();
    let text = reqwest::get(format!("{mgmt}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut served: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap();
            let sample = match kind {
                "counter" => format!("{family}_total"),
                "info" => format!("{family}_info"),
                _ => family.to_string(),
            };
            served.insert(sample, kind.to_string());
        }
    }
    let checks = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/checks/deploy_checks.py"),
    )
    .unwrap();
    let start = checks.find("METRICS: dict").expect("METRICS table");
    let end = start + checks[start..].find("\n}\n").expect("end of METRICS");
    let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in checks[start..end].lines().skip(1) {
        let line = line.trim();
        let Some(rest) = line.strip_prefix('"') else {
            continue;
        };
        let (name, rest) = rest.split_once('"').unwrap();
        let labels = rest
            .split(['{', '}'])
            .nth(1)
            .unwrap_or("")
            .split(',')
            .map(|l| l.trim().trim_matches('"').to_string())
            .filter(|l| !l.is_empty() && l != "set()")
            .collect();
        listed.insert(name.to_string(), labels);
    }
    // A family shows on /metrics once it has a sample; every one that
    // does must be listed, and every listed one must be registered.
    for name in served.keys() {
        assert!(
            listed.contains_key(name),
            "{name} is served but not in deploy_checks.py"
        );
    }
    let source = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/telemetry/metrics.rs"),
    )
    .unwrap();
    for name in listed.keys() {
        let family = name
            .strip_suffix("_total")
            .or_else(|| name.strip_suffix("_info"))
            .unwrap_or(name);
        assert!(
            source.contains(&format!("\"{family}\"")),
            "deploy_checks.py lists {name}, which Gatehouse does not register"
        );
    }
    let s = scrape(&mgmt).await;
    for (name, labels) in &listed {
        let base = name.as_str();
        if let Some(sample) = s.0.iter().find(|x| {
            x.name == base
                || x.name == format!("{base}_count")
                || x.name == format!("{base}_bucket")
        }) {
            let mut have: Vec<&String> = sample.labels.keys().filter(|k| *k != "le").collect();
            have.sort();
            let mut want: Vec<&String> = labels.iter().collect();
            want.sort();
            assert_eq!(have, want, "labels of {name}");
        }
    }
}
