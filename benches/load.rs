//! Load harness: starts the real (release, under `cargo bench`) binary on
//! SQLite and PostgreSQL and drives client_credentials token requests and
//! introspections over HTTP from N concurrent connections for T seconds,
//! then whole authorization-code flows one after another for T seconds.
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
    }
}

struct Report {
    ok: usize,
    errors: usize,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

impl Report {
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

        let (h, s) = (http.clone(), server.clone());
        let cc = drive(opts.concurrency, opts.seconds, move |_| {
            let (h, s) = (h.clone(), s.clone());
            async move { client_credentials(&h, &s).await.is_some() }
        })
        .await;
        print(db, "client_credentials", opts.concurrency, &cc);

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

        let s = server.clone();
        let flows = drive(1, opts.seconds, move |_| {
            let s = s.clone();
            async move { authorization_code_flow(&s).await }
        })
        .await;
        print(db, "authorization_code", 1, &flows);

        if opts.smoke {
            assert!(
                flows.ok > 0 && flows.errors == 0,
                "authorization_code smoke pass had errors: {}",
                server.log()
            );
            assert!(
                cc.ok > 0 && cc.errors == 0,
                "client_credentials smoke pass had errors"
            );
            assert!(
                intro.ok > 0 && intro.errors == 0,
                "introspection smoke pass had errors"
            );
        }
    }
}
