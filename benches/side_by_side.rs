//! Side-by-side load harness (issue 11): Gatehouse next to
//! node-oidc-provider, both configured like the quick start, driven with the
//! same load by wrk, runs alternating between them.
//!
//!   cargo bench --bench side_by_side -- [--rounds 5] [--seconds 6]
//!       [--connections 32] [--scenarios client_credentials,introspection,refresh]
//!       [--db sqlite,postgres] [--memory-seconds 60] [--memory-runs 2]
//!       [--warmup 2]
//!
//! Needs wrk (Debian: `apt-get install wrk`), node and npm (the peer,
//! benches/peer, is installed from its package-lock.json on first use), and
//! PostgreSQL on 127.0.0.1:5432 for `--db postgres`.
//!
//! What it does:
//! 1. Starts Gatehouse (the release binary under `cargo bench`) on a fresh
//!    SQLite file and on a fresh PostgreSQL database, and node-oidc-provider
//!    (benches/peer/provider.mjs). Both have the same clients (a
//!    client_secret_basic service client, a public PKCE client), the demo MCP
//!    resource with ES256 RFC 9068 JWT access tokens, a second resource with
//!    opaque tokens, 600 s access tokens, and refresh tokens that rotate on
//!    every use.
//! 2. Checks that both answer alike: an ES256 `at+jwt` access token with the
//!    same claims, whose signature verifies with the server's published JWKS;
//!    an active introspection; a refresh that rotates, and a reused refresh
//!    token refused.
//! 3. Reads each server's idle RSS (started, and after the checks, which
//!    sign a user in: Gatehouse's argon2 buffers), then (with
//!    `--memory-seconds`) loads each
//!    server alone with client_credentials for that long, `--memory-runs`
//!    times, sampling VmRSS every 100 ms: peak during and RSS one second
//!    after each run.
//! 4. For each scenario, runs wrk (1 thread, `--connections` connections,
//!    `--seconds` each) on every target in turn, `--rounds` times, Gatehouse
//!    and node-oidc-provider alternating, and prints every run, the medians
//!    and, per Gatehouse target, the median over rounds of its throughput
//!    divided by node-oidc-provider's in the same round.
//!
//! Scenarios, with the same request on both sides:
//! - client_credentials: `grant_type=client_credentials`, `scope=mcp:read`,
//!   `resource=<MCP>`, HTTP Basic authentication; answers are counted by wrk
//!   (non-2xx is an error) and the body is not read.
//! - introspection: the same active access token every time, the service
//!   client authenticating with Basic; an answer counts only when it is a 200
//!   saying `"active":true`. node-oidc-provider refuses to introspect its JWT
//!   access tokens, so its token is an opaque one; Gatehouse is measured with
//!   its JWT (the usual case) and with an opaque token.
//! - refresh: the public client's `grant_type=refresh_token` with
//!   `resource=<MCP>`; each answer's new refresh token is spent by the next
//!   request (benches/wrk/oauth.lua), one chain per connection, fresh chains
//!   (one browser login each) before every run.
//!
//! Under `cargo test` (no `--bench` flag, so in CI) it runs a smoke pass:
//! the checks of step 2, the idle RSS, and one one-second wrk run of each
//! scenario on each target, with 4 connections, Gatehouse on SQLite only
//! (`--db` adds PostgreSQL). It fails on any error and never on speed. When
//! wrk is not installed the smoke pass says so and skips the wrk runs.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::{
    base_config, free_port, install_node_project, login_public, Browser, Db, Server, MCP,
    PUBLIC_CLIENT, REDIRECT, SERVICE_CLIENT, SERVICE_SECRET,
};
use serde_json::Value;

/// The second resource, whose access tokens are opaque (introspection).
const OPAQUE: &str = "http://127.0.0.1:8767/mcp";
const SCOPE: &str = "mcp:read";
const ACCESS_TOKEN_TTL: i64 = 600;

// ---------------------------------------------------------------------------
// Options.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    ClientCredentials,
    Introspection,
    Refresh,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::ClientCredentials => "client_credentials",
            Scenario::Introspection => "introspection",
            Scenario::Refresh => "refresh",
        }
    }
}

struct Options {
    smoke: bool,
    rounds: usize,
    seconds: u64,
    connections: usize,
    warmup: u64,
    scenarios: Vec<Scenario>,
    dbs: Vec<Db>,
    memory_seconds: u64,
    memory_runs: usize,
    wrk: Option<PathBuf>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |name: &str, default: u64| {
        value(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}"))
        })
    };
    let smoke = !args.iter().any(|a| a == "--bench");
    let dbs = match value("--db") {
        Some(list) => list
            .split(',')
            .map(|d| match d.trim() {
                "sqlite" => Db::Sqlite,
                "postgres" => Db::Postgres,
                other => panic!("--db: sqlite, postgres or both comma-separated, not {other:?}"),
            })
            .collect(),
        None if smoke => vec![Db::Sqlite],
        None => vec![Db::Sqlite, Db::Postgres],
    };
    let scenarios = match value("--scenarios") {
        Some(list) => list
            .split(',')
            .map(|s| match s.trim() {
                "client_credentials" | "cc" => Scenario::ClientCredentials,
                "introspection" => Scenario::Introspection,
                "refresh" => Scenario::Refresh,
                other => {
                    panic!("--scenarios: client_credentials, introspection, refresh, not {other:?}")
                }
            })
            .collect(),
        None => vec![
            Scenario::ClientCredentials,
            Scenario::Introspection,
            Scenario::Refresh,
        ],
    };
    Options {
        smoke,
        rounds: number("--rounds", if smoke { 1 } else { 5 }) as usize,
        seconds: number("--seconds", if smoke { 1 } else { 6 }),
        connections: number("--connections", if smoke { 4 } else { 32 }) as usize,
        warmup: number("--warmup", if smoke { 0 } else { 2 }),
        scenarios,
        dbs,
        memory_seconds: number("--memory-seconds", if smoke { 0 } else { 60 }),
        memory_runs: number("--memory-runs", 2) as usize,
        wrk: find_wrk(),
    }
}

fn find_wrk() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("wrk"))
        .find(|p| p.is_file())
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// The peer: node-oidc-provider (benches/peer).
// ---------------------------------------------------------------------------

struct Peer {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Peer {
    fn start() -> Peer {
        let dir = repo().join("benches/peer");
        install_node_project(&dir, "oidc-provider");
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join("peer.log");
        let port = free_port();
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .env("NODE_ENV", "production")
            .env("PEER_PORT", port.to_string())
            .env("PEER_RESOURCE", MCP)
            .env("PEER_OPAQUE_RESOURCE", OPAQUE)
            .env("PEER_SERVICE_CLIENT", SERVICE_CLIENT)
            .env("PEER_SERVICE_SECRET", SERVICE_SECRET)
            .env("PEER_PUBLIC_CLIENT", PUBLIC_CLIENT)
            .env("PEER_REDIRECT_URI", REDIRECT)
            .env("PEER_ACCESS_TOKEN_TTL", ACCESS_TOKEN_TTL.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("peer log"))
            .spawn()
            .expect("spawn node benches/peer/provider.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.trim() == "ready" {
                    let _ = tx.send(());
                }
            }
        });
        let peer = Peer {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: tmp,
        };
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("node-oidc-provider did not start: {}", peer.log());
        }
        peer
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Targets: one server process, as the load sees it.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Gatehouse(Db),
    Peer,
}

#[derive(Clone)]
struct Target {
    name: String,
    side: Side,
    base: String,
    pid: u32,
    introspection_path: &'static str,
}

impl Target {
    fn gatehouse(server: &Server) -> Target {
        Target {
            name: format!("gatehouse {}", db_name(server.db)),
            side: Side::Gatehouse(server.db),
            base: server.base.clone(),
            pid: server.pid().expect("gatehouse runs"),
            introspection_path: "/introspect",
        }
    }

    fn peer(peer: &Peer) -> Target {
        Target {
            name: "node-oidc-provider".into(),
            side: Side::Peer,
            base: peer.base.clone(),
            pid: peer.child.id(),
            introspection_path: "/token/introspection",
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn is_peer(&self) -> bool {
        self.side == Side::Peer
    }
}

fn db_name(db: Db) -> &'static str {
    match db {
        Db::Sqlite => "sqlite",
        Db::Postgres => "postgres",
    }
}

fn gatehouse_config() -> String {
    base_config(&format!(
        r#"
[[tenants.resources]]
uri = "{OPAQUE}"
name = "Opaque-token MCP server"
scopes = ["mcp:read", "mcp:write"]
default_scopes = ["mcp:read"]
access_token_format = "opaque"
"#
    ))
}

// ---------------------------------------------------------------------------
// Requests (the harness's own client, for setup and checks).
// ---------------------------------------------------------------------------

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn basic_service() -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{SERVICE_CLIENT}:{SERVICE_SECRET}"))
    )
}

fn client_credentials_body(resource: &str) -> String {
    form(&[
        ("grant_type", "client_credentials"),
        ("scope", SCOPE),
        ("resource", resource),
    ])
}

/// Everything of a refresh request but the token, which goes last.
fn refresh_body_prefix() -> String {
    format!(
        "{}&refresh_token=",
        form(&[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC_CLIENT),
            ("resource", MCP),
        ])
    )
}

async fn post(http: &reqwest::Client, url: &str, body: String, auth: Option<&str>) -> (u16, Value) {
    let mut req = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn access_token(http: &reqwest::Client, target: &Target, resource: &str) -> String {
    let (status, json) = post(
        http,
        &target.url("/token"),
        client_credentials_body(resource),
        Some(&basic_service()),
    )
    .await;
    assert_eq!(status, 200, "{}: client_credentials: {json}", target.name);
    json["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no access_token in {json}", target.name))
        .to_string()
}

/// One login of the public client, ending in a refresh token for MCP.
async fn refresh_token(target: &Target, gatehouse: Option<&Server>) -> String {
    let json = match gatehouse {
        Some(server) => login_public(server, &Browser::new(), SCOPE).await,
        None => peer_login(target).await,
    };
    json["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no refresh_token in {json}", target.name))
        .to_string()
}

/// Plays the user at node-oidc-provider's development login and consent
/// pages (any login name, any password) and redeems the code.
async fn peer_login(target: &Target) -> Value {
    let browser = Browser::new();
    let p = common::pkce();
    let mut url = url::Url::parse(&target.url("/auth")).expect("url");
    url.query_pairs_mut()
        .append_pair("client_id", PUBLIC_CLIENT)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", SCOPE)
        .append_pair("resource", MCP)
        .append_pair("code_challenge", &p.challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "bench");
    let mut res = browser.http.get(url).send().await.expect("authorize");
    let mut code = None;
    for _ in 0..12 {
        let here = res.url().clone();
        let status = res.status().as_u16();
        if (300..400).contains(&status) {
            let to = here
                .join(&common::location(&res))
                .expect("redirect")
                .to_string();
            if to.starts_with(REDIRECT) {
                code = common::query_param(&to, "code");
                break;
            }
            res = browser.http.get(&to).send().await.expect("follow");
            continue;
        }
        let body = res.text().await.expect("page");
        let action = common::upstream::form_action(&body)
            .map(|a| here.join(&a).expect("form action"))
            .unwrap_or_else(|| panic!("node-oidc-provider page {here} ({status}): {body}"));
        let fields: &[(&str, &str)] = if body.contains("name=\"login\"") {
            &[("prompt", "login"), ("login", "alice"), ("password", "any")]
        } else if body.contains("value=\"consent\"") {
            &[("prompt", "consent")]
        } else {
            panic!("unexpected node-oidc-provider page {here}: {body}");
        };
        res = browser
            .http
            .post(action)
            .form(fields)
            .send()
            .await
            .expect("submit");
    }
    let code = code.expect("node-oidc-provider redirected back with a code");
    let (status, json) = post(
        &reqwest::Client::new(),
        &target.url("/token"),
        form(&[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &p.verifier),
            ("resource", MCP),
        ]),
        None,
    )
    .await;
    assert_eq!(status, 200, "node-oidc-provider code redemption: {json}");
    json
}

/// `n` fresh refresh tokens, four logins at a time (Gatehouse lets one
/// source run four password checks at once).
async fn refresh_tokens(target: &Target, gatehouse: Option<&Arc<Server>>, n: usize) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 4.min(n.max(1));
    for w in 0..workers {
        let target = target.clone();
        let server = gatehouse.cloned();
        let count = n / workers + usize::from(w < n % workers);
        tasks.spawn(async move {
            let mut out = Vec::new();
            for _ in 0..count {
                out.push(refresh_token(&target, server.as_deref()).await);
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(part) = tasks.join_next().await {
        match part {
            Ok(tokens) => all.extend(tokens),
            Err(e) => panic!(
                "{}: a login for a refresh token failed: {e}{}",
                target.name,
                gatehouse
                    .map(|s| format!("\nserver log:\n{}", tail(&s.log(), 40)))
                    .unwrap_or_default()
            ),
        }
    }
    all
}

// ---------------------------------------------------------------------------
// Checks: both servers answer alike.
// ---------------------------------------------------------------------------

fn jwt_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).expect("JWT part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

/// An ES256 RFC 9068 access token for `resource` whose signature verifies
/// with the key the server publishes.
async fn check_jwt(http: &reqwest::Client, target: &Target, token: &str, client_id: &str) {
    let header = jwt_part(token, 0);
    assert_eq!(header["alg"], "ES256", "{}: {header}", target.name);
    assert_eq!(header["typ"], "at+jwt", "{}: {header}", target.name);
    let claims = jwt_part(token, 1);
    let who = &target.name;
    assert_eq!(claims["aud"], MCP, "{who}: {claims}");
    assert_eq!(claims["scope"], SCOPE, "{who}: {claims}");
    assert_eq!(claims["client_id"], client_id, "{who}: {claims}");
    assert_eq!(claims["iss"], target.base, "{who}: {claims}");
    for claim in ["sub", "jti"] {
        assert!(claims[claim].is_string(), "{who}: no {claim} in {claims}");
    }
    let ttl = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    assert_eq!(ttl, ACCESS_TOKEN_TTL, "{who}: {claims}");

    let discovery: Value = http
        .get(target.url("/.well-known/openid-configuration"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("discovery JSON");
    let jwks_uri = discovery["jwks_uri"].as_str().expect("jwks_uri");
    let jwks: jsonwebtoken::jwk::JwkSet = http
        .get(jwks_uri)
        .send()
        .await
        .expect("JWKS")
        .json()
        .await
        .expect("JWKS JSON");
    let kid = header["kid"].as_str().expect("kid");
    let jwk = jwks
        .find(kid)
        .unwrap_or_else(|| panic!("{who}: kid {kid} not in the JWKS"));
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[MCP]);
    validation.set_issuer(&[&target.base]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap_or_else(|e| panic!("{who}: the access token does not verify: {e}"));
}

async fn introspect(http: &reqwest::Client, target: &Target, token: &str) -> Value {
    let (status, json) = post(
        http,
        &target.url(target.introspection_path),
        form(&[("token", token)]),
        Some(&basic_service()),
    )
    .await;
    assert_eq!(status, 200, "{}: introspection: {json}", target.name);
    json
}

async fn check_target(http: &reqwest::Client, target: &Target, gatehouse: Option<&Server>) {
    let who = &target.name;
    // client_credentials: the JWT.
    let jwt = access_token(http, target, MCP).await;
    check_jwt(http, target, &jwt, SERVICE_CLIENT).await;

    // Introspection: the token each side introspects in the scenario.
    for (resource, token) in [
        (OPAQUE, access_token(http, target, OPAQUE).await),
        (MCP, jwt),
    ] {
        if target.is_peer() && resource == MCP {
            continue; // node-oidc-provider does not introspect JWTs
        }
        let answer = introspect(http, target, &token).await;
        assert_eq!(answer["active"], true, "{who}: {answer}");
        assert_eq!(answer["aud"], resource, "{who}: {answer}");
        assert_eq!(answer["scope"], SCOPE, "{who}: {answer}");
        assert_eq!(answer["client_id"], SERVICE_CLIENT, "{who}: {answer}");
    }
    let garbage = introspect(http, target, "not-a-token").await;
    assert_eq!(garbage["active"], false, "{who}: {garbage}");

    // Refresh: rotates, the new access token is the same kind of JWT, and
    // the spent token is refused.
    let first = refresh_token(target, gatehouse).await;
    let (status, json) = post(
        http,
        &target.url("/token"),
        format!("{}{first}", refresh_body_prefix()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{who}: refresh: {json}");
    let second = json["refresh_token"].as_str().expect("refresh_token");
    assert_ne!(second, first, "{who}: the refresh token did not rotate");
    check_jwt(
        http,
        target,
        json["access_token"].as_str().expect("access_token"),
        PUBLIC_CLIENT,
    )
    .await;
    let (status, json) = post(
        http,
        &target.url("/token"),
        format!("{}{first}", refresh_body_prefix()),
        None,
    )
    .await;
    assert_eq!(status, 400, "{who}: reused refresh token: {json}");
    assert_eq!(json["error"], "invalid_grant", "{who}: {json}");
}

// ---------------------------------------------------------------------------
// Memory.
// ---------------------------------------------------------------------------

/// A field of /proc/<pid>/status in kB (VmRSS: now; VmHWM: peak so far).
fn proc_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn rss_mb(pid: u32) -> f64 {
    proc_kb(pid, "VmRSS").map_or(f64::NAN, |kb| kb as f64 / 1024.0)
}

/// Samples VmRSS every 100 ms until dropped; `peak_mb` is the highest seen.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak_kb: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kb = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak_kb.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kb) = proc_kb(pid, "VmRSS") {
                    p.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssSampler {
            stop,
            peak_kb,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak_kb.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

// ---------------------------------------------------------------------------
// wrk.
// ---------------------------------------------------------------------------

/// What one wrk run sends.
struct Load {
    path: String,
    body: String,
    auth: Option<String>,
    /// WRK_CHECK: status, active or refresh (benches/wrk/oauth.lua).
    check: &'static str,
    tokens: Option<PathBuf>,
}

#[derive(Clone, Debug, Default)]
struct Run {
    ok_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    errors: u64,
    /// CPU the server process used during the run, in cores (1.0 = one
    /// core busy the whole run), and wrk's.
    server_cores: f64,
    wrk_cores: f64,
    /// wrk's stderr (the first failed answer, if any).
    stderr: String,
}

/// User + system CPU seconds of a process so far (/proc/<pid>/stat).
fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The fields after the command name, which is in parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / clock_ticks(),
        _ => f64::NAN,
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU seconds of this process's waited-for children (wrk runs).
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn wrk(wrk: &Path, connections: usize, seconds: u64, target: &Target, load: &Load) -> Run {
    let script = repo().join("benches/wrk/oauth.lua");
    let mut cmd = Command::new(wrk);
    cmd.args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["--timeout", "10s", "--latency", "-s"])
        .arg(&script)
        .arg(target.url(&load.path))
        .env("WRK_BODY", &load.body)
        .env("WRK_AUTH", load.auth.as_deref().unwrap_or(""))
        .env("WRK_CHECK", load.check);
    if let Some(tokens) = &load.tokens {
        cmd.env("WRK_TOKENS", tokens);
    }
    let (server_before, wrk_before, started) = (
        process_cpu_seconds(target.pid),
        children_cpu_seconds(),
        std::time::Instant::now(),
    );
    let out = cmd.output().expect("run wrk");
    let wall = started.elapsed().as_secs_f64();
    let server_cores = (process_cpu_seconds(target.pid) - server_before) / wall;
    let wrk_cores = (children_cpu_seconds() - wrk_before) / wall;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("WRK_RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "wrk printed no result ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let r: Value = serde_json::from_str(line).expect("WRK_RESULT JSON");
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    let socket = n("connect") + n("read") + n("write") + n("timeout");
    // With a check, `failed` counts every answer that is not right
    // (non-2xx included); without one, wrk's own non-2xx count.
    let bad = if load.check == "status" {
        n("status")
    } else {
        n("failed")
    };
    let ok = n("requests").saturating_sub(bad);
    let seconds = n("duration_us") as f64 / 1e6;
    Run {
        ok_per_s: ok as f64 / seconds.max(1e-9),
        p50_ms: n("p50_us") as f64 / 1000.0,
        p99_ms: n("p99_us") as f64 / 1000.0,
        ok,
        errors: socket + bad,
        server_cores,
        wrk_cores,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

// ---------------------------------------------------------------------------
// Scenarios.
// ---------------------------------------------------------------------------

/// One line of a scenario: a target and the token it is measured with.
struct Line {
    label: String,
    target: Target,
    server: Option<Arc<Server>>,
    /// Introspection: the token introspected every time.
    token: Option<String>,
    /// Refresh: tokens minted before the first refresh run (Gatehouse).
    minted: std::sync::Mutex<Vec<String>>,
}

async fn lines_for(
    scenario: Scenario,
    http: &reqwest::Client,
    gatehouses: &[Arc<Server>],
    peer: &Target,
) -> Vec<Line> {
    let mut lines = Vec::new();
    for server in gatehouses {
        let target = Target::gatehouse(server);
        if scenario == Scenario::Introspection {
            for (kind, resource) in [("JWT", MCP), ("opaque", OPAQUE)] {
                lines.push(Line {
                    label: format!("{} ({kind})", target.name),
                    token: Some(access_token(http, &target, resource).await),
                    target: target.clone(),
                    server: Some(server.clone()),
                    minted: Default::default(),
                });
            }
        } else {
            lines.push(Line {
                label: target.name.clone(),
                target,
                server: Some(server.clone()),
                token: None,
                minted: Default::default(),
            });
        }
    }
    let peer_line = Line {
        label: if scenario == Scenario::Introspection {
            format!("{} (opaque)", peer.name)
        } else {
            peer.name.clone()
        },
        token: if scenario == Scenario::Introspection {
            Some(access_token(http, peer, OPAQUE).await)
        } else {
            None
        },
        target: peer.clone(),
        server: None,
        minted: Default::default(),
    };
    // Node-oidc-provider in the middle of each round, so every Gatehouse
    // run is at most a run or two from the peer run it is compared with.
    let middle = lines.len().div_ceil(2);
    lines.insert(middle, peer_line);
    lines
}

async fn load_for(scenario: Scenario, line: &Line, connections: usize, dir: &Path) -> Load {
    match scenario {
        Scenario::ClientCredentials => Load {
            path: "/token".into(),
            body: client_credentials_body(MCP),
            auth: Some(basic_service()),
            check: "status",
            tokens: None,
        },
        Scenario::Introspection => Load {
            path: line.target.introspection_path.into(),
            body: form(&[("token", line.token.as_deref().unwrap_or_default())]),
            auth: Some(basic_service()),
            check: "active",
            tokens: None,
        },
        Scenario::Refresh => {
            // One chain per connection, and one for wrk's check of the
            // script (benches/wrk/oauth.lua).
            let n = connections + 1;
            let ahead = {
                let mut minted = line.minted.lock().unwrap_or_else(|e| e.into_inner());
                let at = minted.len().saturating_sub(n);
                (minted.len() >= n).then(|| minted.split_off(at))
            };
            let tokens = match ahead {
                Some(tokens) => tokens,
                None => refresh_tokens(&line.target, line.server.as_ref(), n).await,
            };
            let file = dir.join("refresh-tokens");
            std::fs::write(&file, tokens.join("\n")).expect("write refresh tokens");
            Load {
                path: "/token".into(),
                body: refresh_body_prefix(),
                auth: None,
                check: "refresh",
                tokens: Some(file),
            }
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn flush() {
    let _ = std::io::stdout().flush();
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn print_environment(opts: &Options) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let peer_version = std::fs::read_to_string(
        repo().join("benches/peer/node_modules/oidc-provider/package.json"),
    )
    .ok()
    .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    .and_then(|v| v["version"].as_str().map(str::to_string))
    .unwrap_or_default();
    println!("# Side-by-side: Gatehouse and node-oidc-provider");
    println!();
    println!(
        "- date: {} (UTC)",
        command_line("date", &["-u", "+%Y-%m-%d %H:%M"])
    );
    println!(
        "- machine: {} cores, {cpu}; load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    println!(
        "- gatehouse: {} build, commit {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        command_line(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD"
            ]
        )
    );
    println!(
        "- peer: node-oidc-provider {peer_version} on node {}, in-memory adapter",
        command_line("node", &["--version"])
    );
    println!(
        "- load: {}, 1 thread, {} connections, {} s per run, {} round(s), warm-up {} s",
        opts.wrk
            .as_ref()
            .map_or("wrk not installed".to_string(), |w| command_line(
                &w.display().to_string(),
                &["-v"]
            )),
        opts.connections,
        opts.seconds,
        opts.rounds,
        opts.warmup
    );
    println!();
    flush();
}

async fn run_scenario(
    opts: &Options,
    wrk_path: &Path,
    scenario: Scenario,
    lines: &[Line],
    dir: &Path,
) -> usize {
    println!("## {}", scenario.name());
    println!();
    if scenario == Scenario::Refresh {
        // Gatehouse's refresh tokens for every run come from logins made
        // before the first refresh run. A run ends with requests in flight;
        // on PostgreSQL, a request cancelled while its BEGIN is on the wire
        // can leave a pooled connection inside a transaction (sqlx 0.8,
        // transact-rs/sqlx#4393), and sign-ins served on it afterwards fail
        // ("this sign-in request has expired"). Logging in first keeps the
        // setup out of that; the runs themselves show any error. (The peer
        // keeps tokens in a 1,000-entry LRU, so its chains are made just
        // before each run instead.)
        let runs = opts.rounds + usize::from(opts.warmup > 0);
        for line in lines.iter().filter(|l| !l.target.is_peer()) {
            let tokens = refresh_tokens(
                &line.target,
                line.server.as_ref(),
                runs * (opts.connections + 1),
            )
            .await;
            *line.minted.lock().unwrap_or_else(|e| e.into_inner()) = tokens;
        }
    }
    if opts.warmup > 0 {
        for line in lines {
            let load = load_for(scenario, line, opts.connections, dir).await;
            wrk(wrk_path, opts.connections, opts.warmup, &line.target, &load);
        }
    }
    println!("| round | server | ok/s | p50 ms | p99 ms | errors | server CPU (cores) | wrk CPU (cores) |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); lines.len()];
    for round in 1..=opts.rounds {
        for (i, line) in lines.iter().enumerate() {
            let load = load_for(scenario, line, opts.connections, dir).await;
            let run = wrk(
                wrk_path,
                opts.connections,
                opts.seconds,
                &line.target,
                &load,
            );
            println!(
                "| {round} | {} | {:.0} | {:.2} | {:.2} | {} | {:.2} | {:.2} |",
                line.label,
                run.ok_per_s,
                run.p50_ms,
                run.p99_ms,
                run.errors,
                run.server_cores,
                run.wrk_cores
            );
            flush();
            if run.errors > 0 {
                eprintln!("{} {}: {}", scenario.name(), line.label, run.stderr);
                if let Some(server) = &line.server {
                    eprintln!("server log (last lines):\n{}", tail(&server.log(), 12));
                }
            }
            if opts.smoke {
                assert!(
                    run.ok > 0 && run.errors == 0,
                    "{} {}: {} answers, {} errors{}",
                    scenario.name(),
                    line.label,
                    run.ok,
                    run.errors,
                    line.server
                        .as_ref()
                        .map(|s| format!("; server log: {}", s.log()))
                        .unwrap_or_default()
                );
            }
            runs[i].push(run);
        }
    }
    let peer = lines
        .iter()
        .position(|l| l.target.is_peer())
        .expect("peer line");
    println!();
    println!(
        "| server | median ok/s | median p50 ms | median p99 ms | errors | median server CPU (cores) | × node-oidc-provider (median of rounds) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut errors = 0;
    for (i, line) in lines.iter().enumerate() {
        let r = &runs[i];
        let err: u64 = r.iter().map(|x| x.errors).sum();
        errors += err as usize;
        let ratio = if i == peer {
            "1".to_string()
        } else {
            format!(
                "{:.2}",
                median(
                    r.iter()
                        .zip(&runs[peer])
                        .map(|(g, n)| g.ok_per_s / n.ok_per_s)
                        .collect()
                )
            )
        };
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {err} | {:.2} | {ratio} |",
            line.label,
            median(r.iter().map(|x| x.ok_per_s).collect()),
            median(r.iter().map(|x| x.p50_ms).collect()),
            median(r.iter().map(|x| x.p99_ms).collect()),
            median(r.iter().map(|x| x.server_cores).collect()),
        );
    }
    println!();
    flush();
    errors
}

async fn memory_phase(opts: &Options, wrk_path: &Path, targets: &[Target]) {
    println!(
        "## Memory under client_credentials ({} s × {}, one server at a time)",
        opts.memory_seconds, opts.memory_runs
    );
    println!();
    println!(
        "| server | run | ok/s | errors | RSS before MB | peak RSS during MB | RSS 1 s after MB |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let load = Load {
        path: "/token".into(),
        body: client_credentials_body(MCP),
        auth: Some(basic_service()),
        check: "status",
        tokens: None,
    };
    for target in targets {
        for run_no in 1..=opts.memory_runs {
            let before = rss_mb(target.pid);
            let sampler = RssSampler::start(target.pid);
            let run = wrk(
                wrk_path,
                opts.connections,
                opts.memory_seconds,
                target,
                &load,
            );
            let peak = sampler.finish();
            tokio::time::sleep(Duration::from_secs(1)).await;
            println!(
                "| {} | {run_no} | {:.0} | {} | {before:.1} | {peak:.1} | {:.1} |",
                target.name,
                run.ok_per_s,
                run.errors,
                rss_mb(target.pid)
            );
            flush();
        }
    }
    println!();
}

#[tokio::main]
async fn main() {
    let opts = options();
    print_environment(&opts);
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();

    let config = gatehouse_config();
    let mut gatehouses = Vec::new();
    for &db in &opts.dbs {
        gatehouses.push(Arc::new(Server::start_with(db, &config).await));
    }
    let peer = Peer::start();
    let peer_target = Target::peer(&peer);
    let mut targets: Vec<Target> = gatehouses.iter().map(|s| Target::gatehouse(s)).collect();
    targets.push(peer_target.clone());

    // Idle: started, one second to settle, nothing served yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fresh: Vec<f64> = targets.iter().map(|t| rss_mb(t.pid)).collect();

    // Both sides answer alike (this also pays Gatehouse's first argon2
    // verification of the service secret, as a warm-up would).
    for (i, target) in targets.iter().enumerate() {
        check_target(&http, target, gatehouses.get(i).map(|s| s.as_ref())).await;
    }
    println!(
        "Checks passed: on every server, client_credentials gives an ES256 at+jwt access token"
    );
    println!(
        "(aud, scope, client_id, iss, 600 s) that verifies with its JWKS; introspection of its"
    );
    println!("token is active; refresh rotates and a spent refresh token is invalid_grant.");
    println!();

    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "| server | idle RSS MB, started | idle RSS MB, after the checks (a login, a few tokens) |"
    );
    println!("| --- | ---: | ---: |");
    for (target, fresh) in targets.iter().zip(fresh) {
        let rss = rss_mb(target.pid);
        assert!(
            rss > 0.0 && fresh > 0.0,
            "{}: no VmRSS in /proc/{}/status",
            target.name,
            target.pid
        );
        println!("| {} | {fresh:.1} | {rss:.1} |", target.name);
    }
    println!();
    flush();

    let Some(wrk_path) = opts.wrk.clone() else {
        if opts.smoke {
            println!("wrk is not installed (apt-get install wrk): the wrk runs are skipped.");
            return;
        }
        panic!("wrk is not installed (Debian: apt-get install wrk)");
    };

    if opts.memory_seconds > 0 && opts.memory_runs > 0 {
        memory_phase(&opts, &wrk_path, &targets).await;
    }

    let mut errors = 0;
    for &scenario in &opts.scenarios {
        let lines = lines_for(scenario, &http, &gatehouses, &peer_target).await;
        errors += run_scenario(&opts, &wrk_path, scenario, &lines, dir.path()).await;
    }
    println!("Load average at the end: {}", loadavg());
    if errors > 0 {
        eprintln!("{errors} errors during the runs; peer log: {}", peer.log());
        std::process::exit(1);
    }
}
