//! Guessing is throttled, memory and connections are bounded (issue 9,
//! items 7 and 9b): sign-in and client-authentication throttles keyed by
//! source, limits shared through Redis, header/body timeouts and the
//! connection limit.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ATTACKER: &str = "127.0.0.1";
const USER_ADDR: &str = "127.0.0.2";

fn from(addr: &str) -> reqwest::Client {
    let ip: IpAddr = addr.parse().expect("ip");
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip)
        .build()
        .expect("client")
}

/// A login form of a fresh authorization, opened from `addr`.
struct LoginForm {
    http: reqwest::Client,
    action: String,
    pending: String,
    csrf: String,
}

struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: String,
}

async fn open_login(server: &Server, addr: &str) -> LoginForm {
    let http = from(addr);
    let p = pkce();
    let url = authorize_url(server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let res = http.get(&url).send().await.expect("authorize");
    let login = location(&res);
    assert!(login.contains("/login"), "not sent to login: {login}");
    let html = http
        .get(&login)
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("html");
    LoginForm {
        action: server.url("/login"),
        pending: hidden_field(&html, "pending").expect("pending"),
        csrf: hidden_field(&html, "csrf").expect("csrf"),
        http,
    }
}

impl LoginForm {
    async fn submit(&self, user: &str, password: &str) -> Answer {
        let res = self
            .http
            .post(&self.action)
            .form(&[
                ("pending", self.pending.as_str()),
                ("csrf", self.csrf.as_str()),
                ("username", user),
                ("password", password),
            ])
            .send()
            .await
            .expect("login post");
        answer(res).await
    }
}

async fn answer(res: reqwest::Response) -> Answer {
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = res.text().await.unwrap_or_default();
    Answer {
        status,
        retry_after,
        body,
    }
}

fn signed_in(a: &Answer) -> bool {
    // On to consent (a page with the decision form) or back to the client.
    (a.status == 200 && a.body.contains("name=\"decision\"")) || a.status == 303
}

async fn security_events(server: &Server, kind: &str) -> Vec<Value> {
    let store = gatehouse::store::connect(&server.database_url)
        .await
        .expect("store");
    for _ in 0..50 {
        let events: Vec<Value> = store
            .list_audit("default", 500)
            .await
            .expect("audit")
            .iter()
            .filter(|e| e.kind == format!("security.{kind}"))
            .map(|e| {
                let mut d: Value = serde_json::from_str(&e.detail).unwrap_or(Value::Null);
                d["source_ip"] = e.source_ip.clone().into();
                d["client_id"] = e.client_id.clone().into();
                d
            })
            .collect();
        if !events.is_empty() {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Vec::new()
}

/// Five failures per (account, source) in these tests.
const FAST: &[(&str, &str)] = &[
    ("GATEHOUSE_MAX_FAILURES", "5"),
    ("GATEHOUSE_FAILURE_ALERT_THRESHOLD", "5"),
];

async fn start(db: Db, env: &[(&str, &str)]) -> Server {
    let mut all: Vec<(&str, &str)> = FAST.to_vec();
    all.extend_from_slice(env);
    Server::start_with_env(db, &base_config(""), &all).await
}

// ---------------------------------------------------------------------------
// Sign-in
// ---------------------------------------------------------------------------

/// After a few failures each attempt waits longer; at the limit the form
/// answers 429 with Retry-After and a page that says why, even for the
/// right password from that source.
async fn wrong_passwords_are_delayed_then_refused(db: Db) {
    let server = start(db, &[]).await;
    let form = open_login(&server, ATTACKER).await;
    let mut times = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        let a = form.submit(USER, "wrong").await;
        times.push(t.elapsed());
        assert_eq!(a.status, 401, "attempt {i}: {}", a.body);
    }
    // Attempts 4 and 5 follow 3 and 4 failures: 250 ms, then 500 ms.
    assert!(times[3] >= Duration::from_millis(240), "{times:?}");
    assert!(times[4] >= Duration::from_millis(490), "{times:?}");
    let a = form.submit(USER, PASSWORD).await;
    assert_eq!(a.status, 429, "{}", a.body);
    let retry = a.retry_after.expect("Retry-After");
    assert!((1..=900).contains(&retry), "{retry}");
    assert!(a.body.contains("Too many failed attempts"), "{}", a.body);
    assert!(a.body.contains("try again in"), "{}", a.body);
}

/// Throttling is keyed by source: during an attack on an account, its
/// owner signs in from another address.
async fn throttling_an_account_does_not_lock_out_its_owner(db: Db) {
    let server = start(db, &[]).await;
    let attacker = open_login(&server, ATTACKER).await;
    for _ in 0..5 {
        attacker.submit(USER, "wrong").await;
    }
    assert_eq!(attacker.submit(USER, "wrong").await.status, 429);
    let owner = open_login(&server, USER_ADDR).await;
    let t = Instant::now();
    let a = owner.submit(USER, PASSWORD).await;
    assert!(signed_in(&a), "{} {}", a.status, a.body);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

/// Many accounts from one source: the per-source limit stops it.
async fn many_accounts_from_one_source_are_refused(db: Db) {
    let server = start(db, &[("GATEHOUSE_MAX_FAILURES_PER_SOURCE", "6")]).await;
    let form = open_login(&server, ATTACKER).await;
    for i in 0..6 {
        let a = form.submit(&format!("user{i}@example.com"), "x").await;
        assert_eq!(a.status, 401, "{i}");
    }
    let a = form.submit("fresh@example.com", "x").await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.body.contains("from this address"), "{}", a.body);
}

/// Without a trusted proxy, X-Forwarded-For does not give an attacker new
/// source addresses.
async fn forwarded_for_from_an_untrusted_peer_does_not_reset_the_throttle(db: Db) {
    let server = start(db, &[]).await;
    let form = open_login(&server, ATTACKER).await;
    for i in 0..6 {
        let res = form
            .http
            .post(&form.action)
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .form(&[
                ("pending", form.pending.as_str()),
                ("csrf", form.csrf.as_str()),
                ("username", USER),
                ("password", "wrong"),
            ])
            .send()
            .await
            .expect("post");
        let status = res.status().as_u16();
        assert_eq!(status, if i < 5 { 401 } else { 429 }, "attempt {i}");
    }
}

/// A burst of concurrent wrong passwords is refused cheaply past the
/// limits (no unbounded hashing) and the owner, from another address,
/// still signs in.
async fn a_concurrent_burst_does_not_starve_other_sign_ins(db: Db) {
    let server = start(db, &[]).await;
    let form = std::sync::Arc::new(open_login(&server, ATTACKER).await);
    let mut burst = Vec::new();
    for i in 0..200 {
        let form = form.clone();
        burst.push(tokio::spawn(async move {
            form.submit(&format!("victim{}@example.com", i % 3), "wrong")
                .await
                .status
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let owner = open_login(&server, USER_ADDR).await;
    let a = owner.submit(USER, PASSWORD).await;
    assert!(signed_in(&a), "{} {}", a.status, a.body);
    let mut statuses = Vec::new();
    for b in burst {
        statuses.push(b.await.expect("task"));
    }
    let hashed = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        statuses.iter().all(|s| [401, 429, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        hashed <= 20,
        "{hashed} of the burst were checked: {statuses:?}"
    );
}

/// Crossing the burst threshold raises one `login_failure_burst` event,
/// and a refusal one `login_throttled` event, with the source address.
async fn failure_bursts_and_throttling_raise_security_events(db: Db) {
    let server = start(db, &[]).await;
    let form = open_login(&server, ATTACKER).await;
    for _ in 0..8 {
        form.submit(USER, "wrong").await;
    }
    let bursts = security_events(&server, "login_failure_burst").await;
    assert!(!bursts.is_empty(), "no burst event");
    assert!(bursts.len() <= 2, "one per scope and window: {bursts:?}");
    assert_eq!(bursts[0]["severity"], "medium");
    assert_eq!(bursts[0]["source_ip"], ATTACKER);
    let throttled = security_events(&server, "login_throttled").await;
    assert_eq!(throttled.len(), 1, "once per window: {throttled:?}");
    assert_eq!(throttled[0]["account"], USER);
}

// ---------------------------------------------------------------------------
// Client authentication
// ---------------------------------------------------------------------------

async fn post_form(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
    basic: (&str, &str),
) -> Answer {
    let res = http
        .post(url)
        .basic_auth(basic.0, Some(basic.1))
        .form(form)
        .send()
        .await
        .expect("post");
    answer(res).await
}

fn error_of(a: &Answer) -> String {
    serde_json::from_str::<Value>(&a.body).unwrap_or(Value::Null)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Wrong client secrets: 401 invalid_client, then 429 invalid_client with
/// Retry-After at every endpoint that authenticates clients (the count is
/// shared), while the right secret from another source still works.
async fn wrong_client_secrets_are_throttled_at_every_endpoint(db: Db) {
    let server = start(db, &[]).await;
    let attacker = from(ATTACKER);
    let cc = [("grant_type", "client_credentials"), ("resource", MCP)];
    for i in 0..5 {
        let a = post_form(&attacker, &server.url("/token"), &cc, (WEB_CLIENT, "nope")).await;
        assert_eq!(
            (a.status, error_of(&a).as_str()),
            (401, "invalid_client"),
            "{i}"
        );
    }
    let token_form = [("token", "x")];
    for (path, form) in [
        ("/token", &cc[..]),
        ("/introspect", &token_form[..]),
        ("/revoke", &token_form[..]),
        ("/device_authorization", &[][..]),
    ] {
        let a = post_form(&attacker, &server.url(path), form, (WEB_CLIENT, WEB_SECRET)).await;
        assert_eq!(a.status, 429, "{path}: {}", a.body);
        assert_eq!(error_of(&a), "invalid_client", "{path}");
        assert!(a.retry_after.is_some_and(|r| r >= 1), "{path}");
    }
    // The real client, elsewhere, is not locked out.
    let a = post_form(
        &from(USER_ADDR),
        &server.url("/introspect"),
        &token_form,
        (WEB_CLIENT, WEB_SECRET),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let events = security_events(&server, "client_auth_throttled").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["client_id"], WEB_CLIENT);
}

/// Guessing registration access tokens (RFC 7592) is throttled too.
async fn registration_access_token_guessing_is_throttled(db: Db) {
    let server = start(db, &[]).await;
    let http = from(ATTACKER);
    let reg: Value = http
        .post(server.url("/register"))
        .json(&serde_json::json!({
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code"],
        }))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let uri = reg["registration_client_uri"]
        .as_str()
        .expect("uri")
        .to_string();
    for i in 0..5 {
        let res = http
            .get(&uri)
            .bearer_auth("guess")
            .send()
            .await
            .expect("get");
        assert_eq!(res.status().as_u16(), 401, "{i}");
    }
    let res = http
        .get(&uri)
        .bearer_auth(reg["registration_access_token"].as_str().expect("rat"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status().as_u16(), 429);
    assert!(res.headers().get("retry-after").is_some());
}

// ---------------------------------------------------------------------------
// Shared limits
// ---------------------------------------------------------------------------

fn redis_env(prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GATEHOUSE_REDIS_URL", "redis://127.0.0.1:6379".to_string()),
        ("GATEHOUSE_REDIS_PREFIX", prefix.to_string()),
    ]
}

/// Two nodes on one database and one Redis: failures spent at one count
/// at the other.
async fn limits_are_shared_by_nodes_through_redis(db: Db) {
    let prefix = format!("gh-test-{}:", uuid::Uuid::new_v4().simple());
    let env = redis_env(&prefix);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = start(db, &env).await;
    let mut env_b = FAST.to_vec();
    env_b.extend_from_slice(&env);
    let b = Server::start_sharing(&a, &env_b).await;
    let http = from(ATTACKER);
    let cc = [("grant_type", "client_credentials"), ("resource", MCP)];
    for _ in 0..5 {
        let r = post_form(&http, &a.url("/token"), &cc, (SERVICE_CLIENT, "nope")).await;
        assert_eq!(r.status, 401);
    }
    let r = post_form(
        &http,
        &b.url("/token"),
        &cc,
        (SERVICE_CLIENT, SERVICE_SECRET),
    )
    .await;
    assert_eq!(
        r.status, 429,
        "the other node did not see the failures: {}",
        r.body
    );
}

/// Redis unreachable: the node starts, limits still hold (per node), and
/// nothing answers 500.
async fn unreachable_redis_falls_back_to_per_node_limits(db: Db) {
    let server = start(
        db,
        &[
            ("GATEHOUSE_REDIS_URL", "redis://127.0.0.1:1"),
            ("GATEHOUSE_REDIS_PREFIX", "unused:"),
        ],
    )
    .await;
    let http = from(ATTACKER);
    let cc = [("grant_type", "client_credentials"), ("resource", MCP)];
    for _ in 0..5 {
        let r = post_form(&http, &server.url("/token"), &cc, (SERVICE_CLIENT, "nope")).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = post_form(&http, &server.url("/token"), &cc, (SERVICE_CLIENT, "nope")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    let r = post_form(
        &from(USER_ADDR),
        &server.url("/token"),
        &cc,
        (SERVICE_CLIENT, SERVICE_SECRET),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        server.log().contains("Redis"),
        "no warning: {}",
        server.log()
    );
}

on_both_databases!(
    wrong_passwords_are_delayed_then_refused,
    throttling_an_account_does_not_lock_out_its_owner,
    many_accounts_from_one_source_are_refused,
    forwarded_for_from_an_untrusted_peer_does_not_reset_the_throttle,
    a_concurrent_burst_does_not_starve_other_sign_ins,
    failure_bursts_and_throttling_raise_security_events,
    wrong_client_secrets_are_throttled_at_every_endpoint,
    registration_access_token_guessing_is_throttled,
    limits_are_shared_by_nodes_through_redis,
    unreachable_redis_falls_back_to_per_node_limits,
    an_unfinished_request_head_is_cut_after_the_header_timeout,
    a_silent_connection_is_cut_after_the_header_timeout,
    an_idle_keep_alive_connection_is_cut,
    at_the_connection_limit_healthz_answers_after_slow_connections_are_cut,
    a_trickling_body_is_cut,
);

// ---------------------------------------------------------------------------
// Slow clients (on both databases, like every item of the review)
// ---------------------------------------------------------------------------

async fn start_net(db: Db, env: &[(&str, &str)]) -> Server {
    Server::start_with_env(db, &base_config(""), env).await
}

/// Reads until the server closes the connection; the time it took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

async fn an_unfinished_request_head_is_cut_after_the_header_timeout(db: Db) {
    let server = start_net(db, &[("GATEHOUSE_HEADER_TIMEOUT", "1")]).await;
    let mut s = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    let took = closed_within(&mut s, Duration::from_secs(10)).await;
    assert!(took.is_some(), "a slowloris connection stayed open");
}

async fn a_silent_connection_is_cut_after_the_header_timeout(db: Db) {
    let server = start_net(db, &[("GATEHOUSE_HEADER_TIMEOUT", "1")]).await;
    let mut s = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    let took = closed_within(&mut s, Duration::from_secs(10)).await;
    assert!(took.is_some(), "a silent connection stayed open");
}

async fn an_idle_keep_alive_connection_is_cut(db: Db) {
    let server = start_net(db, &[("GATEHOUSE_HEADER_TIMEOUT", "1")]).await;
    let mut s = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let took = closed_within(&mut s, Duration::from_secs(10)).await;
    assert!(took.is_some(), "an idle keep-alive connection stayed open");
}

/// At the connection limit, a new connection waits until slow ones are
/// cut, then `/healthz` answers.
async fn at_the_connection_limit_healthz_answers_after_slow_connections_are_cut(db: Db) {
    let server = start_net(
        db,
        &[
            ("GATEHOUSE_HEADER_TIMEOUT", "2"),
            ("GATEHOUSE_MAX_CONNECTIONS", "20"),
        ],
    )
    .await;
    // The harness's health check left no connection open; fill every slot.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let res = reqwest::Client::new()
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .expect("healthz answers once slow connections are cut");
    assert_eq!(res.status().as_u16(), 200);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "answered at once ({waited:?}): the limit did not hold"
    );
    drop(slow);
}

/// A body that trickles in is cut at the body deadline, not read forever.
async fn a_trickling_body_is_cut(db: Db) {
    let server = start_net(db, &[("GATEHOUSE_BODY_TIMEOUT", "1")]).await;
    let mut s = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    s.write_all(
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n",
    )
    .await
    .expect("write head");
    let t = Instant::now();
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if wr.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf))
        .await
        .expect("an answer before the body would have finished")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    trickle.abort();
}
