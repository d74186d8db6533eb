//! `deploy/local/up` end to end: two Gatehouse nodes on their own
//! PostgreSQL database and Redis behind HAProxy, on free loopback ports.
//! Tokens obtained through the load balancer come from both nodes, a token
//! one node issued is valid when introspected at the other, the nodes see
//! the client's address through the proxy, and `deploy/local/down` stops
//! everything.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{binary, free_port, MCP};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A cluster started by `deploy/local/up`; dropped with `down --purge`
/// (database, Redis keys and state directory), even when the test fails.
struct Cluster {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    lb: u16,
    nodes: [u16; 2],
    mgmt: [u16; 2],
    stats: u16,
    database: String,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = format!(
            "gatehouse_local_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let (lb, nodes, mgmt, stats) = (
            free_port(),
            [free_port(), free_port()],
            [free_port(), free_port()],
            free_port(),
        );
        let state = dir.path().join("state");
        let env = vec![
            ("GATEHOUSE_LOCAL_DIR", state.display().to_string()),
            ("GATEHOUSE_LOCAL_PORT", lb.to_string()),
            ("GATEHOUSE_LOCAL_NODE1_PORT", nodes[0].to_string()),
            ("GATEHOUSE_LOCAL_NODE2_PORT", nodes[1].to_string()),
            ("GATEHOUSE_LOCAL_MGMT1_PORT", mgmt[0].to_string()),
            ("GATEHOUSE_LOCAL_MGMT2_PORT", mgmt[1].to_string()),
            ("GATEHOUSE_LOCAL_STATS_PORT", stats.to_string()),
            ("GATEHOUSE_LOCAL_DATABASE", database.clone()),
            ("GATEHOUSE_BIN", binary().to_string()),
            (
                "GATEHOUSE_LOG",
                "info,sqlx=warn,tower_http=debug".to_string(),
            ),
        ];
        Cluster {
            dir,
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            lb,
            nodes,
            mgmt,
            stats,
            database,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn run(&self, script: &str, args: &[&str]) -> Output {
        Command::new(repo().join("deploy/local").join(script))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .unwrap_or_else(|e| panic!("run deploy/local/{script}: {e}"))
    }

    fn secret(&self, client: &str) -> String {
        std::fs::read_to_string(self.state().join(format!("{client}.secret")))
            .expect("secret written by up")
            .trim()
            .to_string()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.state().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn logs(&self) -> String {
        ["node1", "node2", "haproxy"]
            .iter()
            .map(|n| format!("--- {n}.log\n{}", self.log(n)))
            .collect()
    }

    fn pid(&self, name: &str) -> Option<u32> {
        std::fs::read_to_string(self.state().join(format!("{name}.pid")))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = self.run("down", &["--purge"]);
        if !out.status.success() {
            eprintln!(
                "deploy/local/down --purge failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
}

async fn token(http: &reqwest::Client, base: &str, client: &str, secret: &str) -> Value {
    let res = http
        .post(format!("{base}/token"))
        .basic_auth(client, Some(secret))
        .form(&[("grant_type", "client_credentials"), ("resource", MCP)])
        .send()
        .await
        .expect("token request");
    let status = res.status().as_u16();
    let json: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "token at {base} for {client}: {json}");
    json
}

async fn introspect(http: &reqwest::Client, base: &str, secret: &str, token: &str) -> Value {
    http.post(format!("{base}/introspect"))
        .basic_auth("local-service", Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect")
        .json()
        .await
        .expect("introspection json")
}

/// HAProxy's count of 2xx answers per server of the `nodes` backend.
async fn answers_2xx(http: &reqwest::Client, stats: u16) -> [u64; 2] {
    let csv = http
        .get(format!("http://127.0.0.1:{stats}/stats;csv"))
        .send()
        .await
        .expect("haproxy stats")
        .text()
        .await
        .expect("stats text");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("csv header")
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (px, sv, ok) = (col("pxname"), col("svname"), col("hrsp_2xx"));
    let mut out = [0u64; 2];
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.get(px) == Some(&"nodes") {
            let n: u64 = f.get(ok).and_then(|v| v.parse().ok()).unwrap_or(0);
            match f.get(sv) {
                Some(&"node1") => out[0] = n,
                Some(&"node2") => out[1] = n,
                _ => {}
            }
        }
    }
    out
}

/// `gatehouse_http_requests_total` for the token endpoint in a node's
/// /metrics, summed over methods and statuses.
fn token_requests_in_metrics(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("gatehouse_http_requests_total{") && l.contains("/token\""))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn psql(database: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-qtAc",
            sql,
        ])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn local_cluster_serves_through_the_load_balancer_from_both_nodes() {
    let cluster = Cluster::new();
    let up = cluster.run("up", &[]);
    let stdout = String::from_utf8_lossy(&up.stdout).to_string();
    assert!(
        up.status.success(),
        "deploy/local/up failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&up.stderr),
        cluster.logs()
    );
    let lb = format!("http://127.0.0.1:{}", cluster.lb);
    for url in [
        lb.clone(),
        format!("http://127.0.0.1:{}", cluster.nodes[0]),
        format!("http://127.0.0.1:{}", cluster.nodes[1]),
        format!("http://127.0.0.1:{}/metrics", cluster.mgmt[0]),
        format!("http://127.0.0.1:{}/stats", cluster.stats),
    ] {
        assert!(stdout.contains(&url), "up does not print {url}:\n{stdout}");
    }

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let service = cluster.secret("local-service");
    let opaque = cluster.secret("local-opaque");

    // The issuer is the load balancer, whichever node answers.
    let meta: Value = http
        .get(format!("{lb}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("discovery json");
    assert_eq!(meta["issuer"], lb.as_str());

    // Through the load balancer: both nodes answer token requests.
    let before = answers_2xx(&http, cluster.stats).await;
    for _ in 0..8 {
        let t = token(&http, &lb, "local-service", &service).await;
        assert!(t["access_token"].as_str().is_some_and(|s| !s.is_empty()));
    }
    let after = answers_2xx(&http, cluster.stats).await;
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "HAProxy sent the token requests to one node only: 2xx answers before {before:?}, after {after:?}\n{}",
        cluster.logs()
    );

    // Each node's own count, on its management listener.
    for (i, port) in cluster.mgmt.iter().enumerate() {
        let metrics = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        assert!(
            token_requests_in_metrics(&metrics) >= 1.0,
            "node{} counted no /token request in gatehouse_http_requests_total:\n{metrics}",
            i + 1
        );
    }

    // A token issued by one node is valid at the other: an opaque one
    // exists only in the shared database, a JWT is signed with the keys
    // both nodes load from it.
    let node = |i: usize| format!("http://127.0.0.1:{}", cluster.nodes[i]);
    let minted = token(&http, &node(0), "local-opaque", &opaque).await;
    let handle = minted["access_token"].as_str().expect("opaque token");
    assert_eq!(handle.split('.').count(), 1, "an opaque token: {handle}");
    let seen = introspect(&http, &node(1), &service, handle).await;
    assert_eq!(
        seen["active"], true,
        "node2 on node1's opaque token: {seen}"
    );
    assert_eq!(seen["client_id"], "local-opaque");
    assert_eq!(seen["aud"], MCP);
    let jwt = token(&http, &node(1), "local-service", &service).await;
    let jwt = jwt["access_token"].as_str().expect("jwt");
    let seen = introspect(&http, &node(0), &service, jwt).await;
    assert_eq!(seen["active"], true, "node1 on node2's JWT: {seen}");
    assert_eq!(seen["iss"], lb.as_str());
    let junk = introspect(&http, &node(0), &service, "not-a-token").await;
    assert_eq!(junk["active"], false);

    // The nodes believe HAProxy's X-Forwarded-For: a token request sent to
    // the load balancer from 127.0.0.3 is recorded with that address.
    let from = reqwest::Client::builder()
        .no_proxy()
        .local_address("127.0.0.3".parse::<std::net::IpAddr>().expect("ip"))
        .build()
        .expect("client");
    // A refused grant: successful client_credentials tokens are aggregated
    // per minute (docs/operations.md 7.3), failures are recorded one by one.
    let refused = from
        .post(format!("{lb}/token"))
        .basic_auth("local-opaque", Some(&opaque))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", "https://not-registered.example/mcp"),
        ])
        .send()
        .await
        .expect("token request via the load balancer");
    assert_eq!(refused.status(), 400);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sources = psql(
            &cluster.database,
            "SELECT string_agg(DISTINCT source_ip, ',') FROM audit_events \
             WHERE kind = 'token' AND client_id = 'local-opaque'",
        );
        if sources.split(',').any(|s| s == "127.0.0.3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no token audit event from 127.0.0.3 (sources: {sources})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `down` stops all three processes and keeps the state for the next `up`.
    let pids: Vec<u32> = ["haproxy", "node1", "node2"]
        .iter()
        .map(|n| cluster.pid(n).unwrap_or_else(|| panic!("{n}.pid")))
        .collect();
    let down = cluster.run("down", &[]);
    assert!(
        down.status.success(),
        "down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    for pid in pids {
        assert!(!alive(pid), "process {pid} still runs after down");
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", cluster.lb)).is_err(),
        "the load balancer still accepts connections"
    );
    assert!(cluster.state().join("kek").exists());
    assert!(
        cluster.log("node1").contains("gatehouse is serving")
            && cluster.log("node2").contains("gatehouse is serving"),
        "{}",
        cluster.logs()
    );
}
