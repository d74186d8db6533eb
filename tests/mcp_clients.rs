//! End-to-end with the official MCP TypeScript SDK client: v1
//! (`@modelcontextprotocol/sdk`) and v2 (`@modelcontextprotocol/client`)
//! against each example MCP server protected by Gatehouse (Python, TypeScript
//! and the Rust rmcp one).
//!
//! Each test starts Gatehouse (SQLite) with three registered MCP servers,
//! then the example server under test on the first one's port and a second
//! instance of the same example on the second's (the third stays registered
//! and unused: Gatehouse must still issue tokens for exactly one resource).
//! `tests/mcp-e2e/sdk-v{1,2}.mjs` then connects, gets 401, lets the SDK
//! discover Gatehouse and register itself, plays the user in the login and
//! consent pages, calls tools, checks the token's audience at the second
//! server and steps up to `mcp:write` (see `tests/mcp-e2e/lib.mjs`).
//!
//! Needs `examples/setup.sh` first (Python venv, npm packages, the
//! TypeScript example's build) and, for the Rust server, its binary
//! (`cargo build -p gatehouse-example-rmcp`, or `cargo test --workspace`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use common::{base_config, free_port, Db, Server};

/// How long an example server may take to print its `listening` line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The client script's own deadline, and ours a little later.
const CLIENT_DEADLINE_MS: u64 = 90_000;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug)]
enum Example {
    Python,
    TypeScript,
    Rust,
}

#[derive(Clone, Copy, Debug)]
enum Sdk {
    /// `@modelcontextprotocol/sdk` (1.x).
    V1,
    /// `@modelcontextprotocol/client` (2.x).
    V2,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn require(path: &Path, hint: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {hint}", path.display());
    path.to_path_buf()
}

/// The Rust example's binary, built next to this test's own directory.
fn rust_example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    dir.join(format!(
        "gatehouse-example-rmcp{}",
        std::env::consts::EXE_SUFFIX
    ))
}

fn example_command(example: Example) -> Command {
    const SETUP: &str = "run examples/setup.sh first";
    match example {
        Example::Python => {
            let python = require(&repo().join("sdk/python/.venv/bin/python"), SETUP);
            let mut cmd = Command::new(python);
            cmd.arg(repo().join("examples/python-mcp-server/server.py"))
                .env("PYTHONUNBUFFERED", "1");
            cmd
        }
        Example::TypeScript => {
            let script = require(
                &repo().join("examples/typescript-mcp-server/dist/server.js"),
                SETUP,
            );
            let mut cmd = Command::new("node");
            cmd.arg(script);
            cmd
        }
        Example::Rust => {
            let binary = require(
                &rust_example_binary(),
                "build it with `cargo build -p gatehouse-example-rmcp` (cargo test --workspace does)",
            );
            Command::new(binary)
        }
    }
}

/// Collects a child's output lines into a shared buffer.
fn collect(stream: impl AsyncRead + Unpin + Send + 'static, log: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut log = log.lock().expect("log lock");
            log.push_str(&line);
            log.push('\n');
        }
    });
}

/// A running example server; killed when dropped.
struct Running {
    name: String,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Running {
    fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn start_example(example: Example, issuer: &str, port: u16) -> Running {
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let mut child = example_command(example)
        .env("GATEHOUSE_ISSUER", issuer)
        .env("MCP_RESOURCE", &resource)
        .env("PORT", port.to_string())
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {example:?} example: {e}"));
    let log = Arc::new(Mutex::new(String::new()));
    collect(child.stdout.take().expect("stdout"), log.clone());
    collect(child.stderr.take().expect("stderr"), log.clone());
    let mut running = Running {
        name: format!("{example:?} example on {port}"),
        child,
        log,
    };
    let ready = format!("listening on {resource}");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if running.log().lines().any(|l| l.trim() == ready) {
            return running;
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            // Let the readers catch the last lines.
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!(
                "the {} exited before it was ready ({status}):\n{}",
                running.name,
                running.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the {} did not print `{ready}` within {READY_TIMEOUT:?}:\n{}",
            running.name,
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `N` distinct free loopback ports.
fn free_ports<const N: usize>() -> [u16; N] {
    let mut ports = Vec::with_capacity(N);
    while ports.len() < N {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    ports.try_into().expect("N ports")
}

fn resource_tables(resources: &[String]) -> String {
    resources
        .iter()
        .enumerate()
        .map(|(i, uri)| {
            format!(
                r#"
[[tenants.resources]]
uri = "{uri}"
name = "Example MCP server {n}"
scopes = ["mcp:read", "mcp:write"]
default_scopes = ["mcp:read"]
"#,
                n = i + 1
            )
        })
        .collect()
}

async fn client_against(sdk: Sdk, example: Example) {
    let ports = free_ports::<3>();
    let resources = ports.map(|p| format!("http://127.0.0.1:{p}/mcp"));
    let gatehouse =
        Server::start_with(Db::Sqlite, &base_config(&resource_tables(&resources))).await;
    let under_test = start_example(example, &gatehouse.base, ports[0]).await;
    let second = start_example(example, &gatehouse.base, ports[1]).await;

    let script = match sdk {
        Sdk::V1 => "sdk-v1.mjs",
        Sdk::V2 => "sdk-v2.mjs",
    };
    let e2e = repo().join("tests/mcp-e2e");
    require(
        &e2e.join("node_modules/@modelcontextprotocol"),
        "run examples/setup.sh first",
    );
    let client = Command::new("node")
        .arg(e2e.join(script))
        .current_dir(&e2e)
        .env("MCP_SERVER_URL", &resources[0])
        .env("MCP_OTHER_SERVER_URL", &resources[1])
        .env("GATEHOUSE_URL", &gatehouse.base)
        .env("E2E_TIMEOUT_MS", CLIENT_DEADLINE_MS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node (is it installed?)");
    let output = match tokio::time::timeout(CLIENT_TIMEOUT, client.wait_with_output()).await {
        Ok(output) => output.expect("wait for the client"),
        Err(_) => panic!(
            "{script} did not finish within {CLIENT_TIMEOUT:?}\n--- {} ---\n{}\n--- gatehouse ---\n{}",
            under_test.name,
            under_test.log(),
            gatehouse.log()
        ),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} against the {example:?} example failed ({}):\n{stdout}{stderr}\n\
         --- {} ---\n{}\n--- {} ---\n{}\n--- gatehouse ---\n{}",
        output.status,
        under_test.name,
        under_test.log(),
        second.name,
        second.log(),
        gatehouse.log()
    );
    println!("{stdout}{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_v1_client_against_python_server() {
    client_against(Sdk::V1, Example::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_v2_client_against_python_server() {
    client_against(Sdk::V2, Example::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_v1_client_against_typescript_server() {
    client_against(Sdk::V1, Example::TypeScript).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_v2_client_against_typescript_server() {
    client_against(Sdk::V2, Example::TypeScript).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_v1_client_against_rust_server() {
    client_against(Sdk::V1, Example::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_v2_client_against_rust_server() {
    client_against(Sdk::V2, Example::Rust).await;
}
