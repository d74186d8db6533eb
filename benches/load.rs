//! Load harness: starts the real (release, under `cargo bench`) binary on
//! SQLite and PostgreSQL and drives client_credentials token requests and
//! introspections over HTTP from N concurrent connections for T seconds,
//! then whole authorization-code flows one after another for T seconds.
//! For the flows it also prints the server's own time: per flow, the sum
//! of the request times the server logged (p50, p99, and where the slowest
//! 1 % spent it), and per route and database operation, the means from the
//! management listener's metrics.
//!
//! The authorization-code flow is what a user's browser and the client do:
//! GET /authorize, the login page, POST /login, consent (the first time),
//! the redirect with the code, and POST /token with PKCE; each flow in a
//! fresh browser (no session). Its figure is the server's own time for the
//! whole flow: the dev connector's user has a minimal argon2 hash, so the
//! password check, which a real deployment leaves to the upstream IdP,
//! costs microseconds.
//!
//!   cargo bench --bench load -- --seconds 10 --concurrency 32 --db both
//!   cargo bench --bench load -- --seconds 30 --only authorization_code
//!
//! The load generator runs on the same machine as the server, so on a
//! 2-core box the figures are a floor, not a ceiling. Under `cargo test`
//! (no --bench flag) it runs a one-second smoke pass and fails on any error.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    base_config, login_public, Browser, Db, Server, MCP, PASSWORD, PASSWORD_HASH, SERVICE_CLIENT,
    SERVICE_SECRET,
};

struct Options {
    seconds: u64,
    concurrency: usize,
    dbs: Vec<Db>,
    smoke: bool,
    /// `--only <scenario>`: run one scenario (client_credentials,
    /// introspection or authorization_code); all by default.
    only: Option<String>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let smoke = !args.iter().any(|a| a == "--bench");
    let dbs = match value("--db").as_deref() {
        Some("sqlite") => vec![Db::Sqlite],
        Some("postgres") => vec![Db::Postgres],
        _ => vec![Db::Sqlite, Db::Postgres],
    };
    Options {
        seconds: value("--seconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 1 } else { 10 }),
        concurrency: value("--concurrency")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 4 } else { 32 }),
        dbs,
        smoke,
        only: value("--only"),
    }
}

impl Options {
    fn wants(&self, scenario: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == scenario)
    }
}

struct Report {
    ok: usize,
    errors: usize,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

impl Report {
    fn of(mut latencies_us: Vec<u64>) -> Report {
        latencies_us.sort_unstable();
        Report {
            ok: latencies_us.len(),
            errors: 0,
            latencies_us,
            elapsed: Duration::ZERO,
        }
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Runs `request` from `concurrency` tasks until the deadline.
async fn drive<F, Fut>(concurrency: usize, seconds: u64, request: F) -> Report
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut lat) = (0usize, 0usize, Vec::new());
            let mut i = worker;
            while Instant::now() < deadline {
                let t = Instant::now();
                if request(i).await {
                    ok += 1;
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
                i += concurrency;
            }
            (ok, errors, lat)
        }));
    }
    let mut report = Report {
        ok: 0,
        errors: 0,
        latencies_us: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        if let Ok((ok, errors, lat)) = t.await {
            report.ok += ok;
            report.errors += errors;
            report.latencies_us.extend(lat);
        }
    }
    report.elapsed = start.elapsed();
    report.latencies_us.sort_unstable();
    report
}

async fn client_credentials(http: &reqwest::Client, server: &Server) -> Option<String> {
    let res = http
        .post(server.url("/token"))
        .basic_auth(SERVICE_CLIENT, Some(SERVICE_SECRET))
        .form(&[("grant_type", "client_credentials"), ("resource", MCP)])
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    let json: serde_json::Value = res.json().await.ok()?;
    json["access_token"].as_str().map(str::to_string)
}

fn print(db: Db, scenario: &str, concurrency: usize, r: &Report) {
    let rps = r.ok as f64 / r.elapsed.as_secs_f64();
    println!(
        "| {:<8} | {:<18} | {:>4} | {:>9.0} | {:>8.2} | {:>8.2} | {:>6} |",
        format!("{db:?}").to_lowercase(),
        scenario,
        concurrency,
        rps,
        r.percentile(0.5),
        r.percentile(0.99),
        r.errors
    );
}

/// argon2id of the dev users' password at the smallest cost argon2 allows
/// (8 KiB, one pass), standing in for an upstream IdP's sign-in.
fn cheap_password_hash() -> String {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).expect("params");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(PASSWORD.as_bytes(), &SaltString::generate(&mut OsRng))
        .expect("hash")
        .to_string()
}

/// Every sample of a Prometheus text scrape of the management listener,
/// by series (name and labels).
async fn scrape(mgmt: &str) -> std::collections::HashMap<String, f64> {
    let text = match reqwest::get(format!("{mgmt}/metrics")).await {
        Ok(res) => res.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The server's own time per flow between two scrapes: the request
/// durations it recorded (from the first byte read to the response
/// written), per route and in all, and the database's share per operation.
fn server_time(
    before: &std::collections::HashMap<String, f64>,
    after: &std::collections::HashMap<String, f64>,
    flows: usize,
) {
    let per_flow = |prefix: &str, label: &str| {
        let mut by: std::collections::BTreeMap<String, f64> = Default::default();
        for (series, value) in after {
            if let Some(labels) = series.strip_prefix(prefix) {
                let delta = value - before.get(series).copied().unwrap_or(0.0);
                let key = labels
                    .split(&format!("{label}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("?")
                    .to_string();
                *by.entry(key).or_default() += delta * 1000.0 / flows.max(1) as f64;
            }
        }
        by
    };
    let routes = per_flow("gatehouse_http_request_duration_seconds_sum{", "route");
    let total: f64 = routes.values().sum();
    println!("  server time per flow, mean: {total:.2} ms");
    for (route, ms) in &routes {
        println!("    {route:<40} {ms:>7.3} ms");
    }
    let db = per_flow("gatehouse_db_query_duration_seconds_sum{", "operation");
    let total: f64 = db.values().sum();
    println!("  of which database, mean: {total:.2} ms");
    for (op, ms) in db.iter().filter(|(_, ms)| **ms >= 0.005) {
        println!("    {op:<40} {ms:>7.3} ms");
    }
}

/// A flow as the server logged it: each request's name and time in ms.
type LoggedFlow = Vec<(String, f64)>;

/// The flows in the server's log (`GET /authorize` starts one; flows run
/// one after another).
fn logged_flows(log: &str) -> Vec<LoggedFlow> {
    let mut flows = Vec::new();
    let mut current = LoggedFlow::new();
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let message = event["message"].as_str().unwrap_or_default();
        let (Some(ms), Some(name)) = (
            event["fields"]["latency_ms"].as_f64(),
            message.strip_suffix(" answered"),
        ) else {
            continue;
        };
        if name == "GET /authorize" && !current.is_empty() {
            flows.push(std::mem::take(&mut current));
        }
        current.push((name.to_string(), ms));
    }
    if !current.is_empty() {
        flows.push(current);
    }
    flows
}

/// The server's own time per flow, and where the slowest 1 % spent it.
fn own_time(flows: &[LoggedFlow]) {
    let total = |f: &LoggedFlow| f.iter().map(|(_, ms)| ms).sum::<f64>();
    let own = Report::of(flows.iter().map(|f| (total(f) * 1000.0) as u64).collect());
    println!(
        "  server's own time per flow (its requests' times, from its log): p50 {:.2} ms, p99 {:.2} ms over {} flows",
        own.percentile(0.5),
        own.percentile(0.99),
        own.ok
    );
    let mut sorted: Vec<&LoggedFlow> = flows.iter().collect();
    sorted.sort_by(|a, b| total(a).total_cmp(&total(b)));
    let tail = &sorted[sorted.len() - sorted.len().div_ceil(100)..];
    let mut by: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
    for f in tail {
        for (name, ms) in f.iter() {
            let e = by.entry(name.as_str()).or_default();
            e.0 += ms;
            e.1 = e.1.max(*ms);
        }
    }
    println!(
        "  the slowest 1 % of flows ({}), per request: mean / max ms",
        tail.len()
    );
    for (name, (sum, max)) in by {
        println!(
            "    {name:<40} {:>7.3} / {max:>7.3}",
            sum / tail.len() as f64
        );
    }
}

/// One sign-in from a fresh browser to the token response.
async fn authorization_code_flow(server: &Server) -> bool {
    login_public(server, &Browser::new(), "mcp:read").await["access_token"].is_string()
}

#[tokio::main]
async fn main() {
    let opts = options();
    println!("| database | scenario           | conc |   req/s   | p50 ms   | p99 ms   | errors |");
    println!("|----------|--------------------|------|-----------|----------|----------|--------|");
    for &db in &opts.dbs {
        // The dev users' password check costs what the IdP's would not.
        let config = base_config("").replace(PASSWORD_HASH, &cheap_password_hash());
        let server = Arc::new(Server::start_with(db, &config).await);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(opts.concurrency)
            .build()
            .expect("client");

        // Warm up: the first request pays the argon2 verification once.
        let warm = client_credentials(&http, &server).await;
        assert!(
            warm.is_some(),
            "client_credentials failed: {}",
            server.log()
        );

        let mut reports = Vec::new();
        if opts.wants("client_credentials") {
            let (h, s) = (http.clone(), server.clone());
            let cc = drive(opts.concurrency, opts.seconds, move |_| {
                let (h, s) = (h.clone(), s.clone());
                async move { client_credentials(&h, &s).await.is_some() }
            })
            .await;
            print(db, "client_credentials", opts.concurrency, &cc);
            reports.push(("client_credentials", cc));
        }

        if opts.wants("introspection") {
            let mut tokens = Vec::new();
            for _ in 0..64 {
                tokens.extend(client_credentials(&http, &server).await);
            }
            let tokens = Arc::new(tokens);
            let (h, s, t) = (http.clone(), server.clone(), tokens.clone());
            let intro = drive(opts.concurrency, opts.seconds, move |i| {
                let (h, s, t) = (h.clone(), s.clone(), t.clone());
                async move {
                    let token = &t[i % t.len()];
                    match h
                        .post(s.url("/introspect"))
                        .basic_auth(SERVICE_CLIENT, Some(SERVICE_SECRET))
                        .form(&[("token", token.as_str())])
                        .send()
                        .await
                    {
                        Ok(res) if res.status().is_success() => res
                            .json::<serde_json::Value>()
                            .await
                            .map(|v| v["active"] == true)
                            .unwrap_or(false),
                        _ => false,
                    }
                }
            })
            .await;
            print(db, "introspection", opts.concurrency, &intro);
            reports.push(("introspection", intro));
        }

        if opts.wants("authorization_code") {
            // A server of its own, which logs each request's time.
            let listen = format!("127.0.0.1:{}", common::free_port());
            let mgmt = format!("http://{listen}");
            let server = Arc::new(
                Server::start_with_env(
                    db,
                    &config,
                    &[
                        ("GATEHOUSE_MANAGEMENT_LISTEN", &listen),
                        ("GATEHOUSE_LOG", "info,gatehouse::telemetry::request=debug"),
                        ("GATEHOUSE_LOG_FORMAT", "json"),
                    ],
                )
                .await,
            );
            let s = server.clone();
            let before = scrape(&mgmt).await;
            let log_from = server.log().len();
            let flows = drive(1, opts.seconds, move |_| {
                let s = s.clone();
                async move { authorization_code_flow(&s).await }
            })
            .await;
            let after = scrape(&mgmt).await;
            print(db, "authorization_code", 1, &flows);
            own_time(&logged_flows(&server.log()[log_from..]));
            server_time(&before, &after, flows.ok + flows.errors);
            reports.push(("authorization_code", flows));
        }

        if opts.smoke {
            for (scenario, r) in &reports {
                assert!(
                    r.ok > 0 && r.errors == 0,
                    "{scenario} smoke pass had errors: {}",
                    server.log()
                );
            }
        }
    }
}
