//! End to end against the real Gatehouse: this example's binary on one
//! loopback port, `gatehouse serve` on another, tokens from Gatehouse's
//! `client_credentials` grant, MCP spoken as raw JSON-RPC over HTTP.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const CLIENT_ID: &str = "example-service";
const CLIENT_SECRET: &str = "example-service-secret-0123456789";
const OTHER_RESOURCE: &str = "https://other.example.com/mcp";
const PROTOCOL_VERSION: &str = "2025-06-18";

/// A child process killed when the test ends, however it ends.
struct Running {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early ({status}): {}", self.name, self.log());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The `gatehouse` binary of this workspace. It is not reachable through
/// `CARGO_BIN_EXE_*` from this package, so look next to this test
/// executable (`target/debug/deps/…` → `target/debug/gatehouse`) and build
/// it there if it is missing.
fn gatehouse_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let binary = profile_dir.join(format!("gatehouse{}", std::env::consts::EXE_SUFFIX));
    if binary.is_file() {
        return binary;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(cargo)
        .args(["build", "-p", "gatehouse", "--bin", "gatehouse"])
        .current_dir(&workspace)
        .status()
        .expect("run cargo build -p gatehouse");
    assert!(status.success(), "cargo build -p gatehouse failed");
    assert!(
        binary.is_file(),
        "{} still missing after cargo build (different CARGO_TARGET_DIR?)",
        binary.display()
    );
    binary
}

fn gatehouse_config(resource: &str) -> String {
    format!(
        r#"
[keys]
algorithm = "ES256"

[[tenants]]
id = "default"
display_name = "rmcp example test"

[[tenants.resources]]
uri = "{resource}"
name = "rmcp example"
scopes = ["mcp:read", "mcp:write"]
default_scopes = ["mcp:read"]

[[tenants.resources]]
uri = "{OTHER_RESOURCE}"
name = "Another MCP server"
scopes = ["other:read"]

[[tenants.clients]]
client_id = "{CLIENT_ID}"
client_name = "Example service"
secret = "{CLIENT_SECRET}"
grant_types = ["client_credentials"]
token_endpoint_auth_method = "client_secret_basic"
"#
    )
}

async fn start_gatehouse(dir: &Path, resource: &str) -> (Running, String) {
    let config = dir.join("gatehouse.toml");
    std::fs::write(&config, gatehouse_config(resource)).expect("write config");
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let log = dir.join("gatehouse.log");
    let child = Command::new(gatehouse_binary())
        .env("GATEHOUSE_CONFIG", &config)
        .env("GATEHOUSE_DATA_DIR", dir.join("data"))
        .env(
            "GATEHOUSE_DATABASE_URL",
            format!("sqlite://{}", dir.join("gh.db").display()),
        )
        .env("GATEHOUSE_LOG", "warn")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn gatehouse");
    let mut running = Running {
        child,
        name: "gatehouse",
        log,
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        running.assert_alive();
        if let Ok(r) = http.get(format!("{issuer}/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "gatehouse did not become healthy: {}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (running, issuer)
}

/// Starts this example and waits for its `listening on …` line.
fn start_example(dir: &Path, issuer: &str, resource: &str, port: u16) -> Running {
    let log = dir.join("example.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse-example-rmcp"))
        .env("GATEHOUSE_ISSUER", issuer)
        .env("MCP_RESOURCE", resource)
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn example");
    let stdout = child.stdout.take().expect("stdout");
    let running = Running {
        child,
        name: "gatehouse-example-rmcp",
        log,
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let expected = format!("listening on http://127.0.0.1:{port}/mcp");
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => assert_eq!(line, expected, "stderr: {}", running.log()),
        Err(_) => panic!("example did not start: {}", running.log()),
    }
    running
}

async fn client_credentials_token(issuer: &str, resource: &str, scope: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", resource),
            ("scope", scope),
        ])
        .send()
        .await
        .expect("token request");
    let status = response.status();
    let body: Value = response.json().await.expect("token response JSON");
    assert!(status.is_success(), "token request failed: {body}");
    assert_eq!(body["scope"], scope, "granted scope: {body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// A minimal streamable HTTP MCP client: POSTs JSON-RPC, reads the answer
/// whether it comes as `application/json` or as an SSE stream.
struct McpClient {
    http: reqwest::Client,
    url: String,
    token: String,
    session: Option<String>,
    next_id: u64,
}

struct HttpAnswer {
    status: reqwest::StatusCode,
    www_authenticate: Option<String>,
    /// The JSON-RPC response, when the answer carried one.
    message: Option<Value>,
    raw: String,
}

impl McpClient {
    fn new(url: &str, token: &str) -> Self {
        McpClient {
            http: reqwest::Client::new(),
            url: url.to_string(),
            token: token.to_string(),
            session: None,
            next_id: 1,
        }
    }

    async fn post(&mut self, message: &Value) -> HttpAnswer {
        let mut request = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(message.to_string());
        if message["method"] != "initialize" {
            request = request.header("mcp-protocol-version", PROTOCOL_VERSION);
        }
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        let response = request.send().await.expect("POST /mcp");
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let www_authenticate = header("www-authenticate");
        let content_type = header("content-type").unwrap_or_default();
        if let Some(session) = header("mcp-session-id") {
            self.session = Some(session);
        }
        let raw = response.text().await.expect("response body");
        let id = message.get("id").cloned();
        let message = match id {
            None => None,
            Some(id) if content_type.starts_with("text/event-stream") => sse_messages(&raw)
                .into_iter()
                .find(|m| m.get("id") == Some(&id)),
            Some(_) => serde_json::from_str(&raw).ok(),
        };
        HttpAnswer {
            status,
            www_authenticate,
            message,
            raw,
        }
    }

    async fn request(&mut self, method: &str, params: Value) -> HttpAnswer {
        let id = self.next_id;
        self.next_id += 1;
        self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
    }

    /// `initialize` then `notifications/initialized`.
    async fn initialize(&mut self) {
        let answer = self
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "gatehouse-example-test", "version": "0"},
                }),
            )
            .await;
        assert_eq!(answer.status, 200, "initialize: {}", answer.raw);
        let result = &answer.message.as_ref().expect("initialize response")["result"];
        assert_eq!(
            result["protocolVersion"], PROTOCOL_VERSION,
            "{}",
            answer.raw
        );
        assert!(
            result["capabilities"]["tools"].is_object(),
            "{}",
            answer.raw
        );
        let answer = self
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(answer.status, 202, "initialized: {}", answer.raw);
    }

    async fn call_tool(&mut self, name: &str, arguments: Value) -> HttpAnswer {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))
            .await
    }
}

/// The JSON messages of an SSE body (`data:` lines, joined per event).
fn sse_messages(body: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    let mut data = String::new();
    for line in body.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if !data.is_empty() {
                if let Ok(v) = serde_json::from_str(&data) {
                    messages.push(v);
                }
                data.clear();
            }
        } else if let Some(rest) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        }
    }
    messages
}

/// The text of a successful `tools/call` answer.
fn tool_text(answer: &HttpAnswer) -> String {
    assert_eq!(answer.status, 200, "{}", answer.raw);
    let result = &answer.message.as_ref().expect("JSON-RPC response")["result"];
    assert_ne!(result["isError"], true, "{}", answer.raw);
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content: {}", answer.raw))
        .to_string()
}

#[tokio::test]
async fn protects_the_rmcp_server_with_gatehouse_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let metadata_url = format!("http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp");
    let (_gatehouse, issuer) = start_gatehouse(dir.path(), &resource).await;
    let mut example = start_example(dir.path(), &issuer, &resource, port);
    let http = reqwest::Client::new();

    // No token: 401 pointing at the metadata.
    let response = http
        .post(&resource)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .expect("POST /mcp");
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer "), "challenge: {challenge}");
    assert!(
        challenge.contains(&format!(r#"resource_metadata="{metadata_url}""#)),
        "challenge: {challenge}"
    );

    // The RFC 9728 document, at the path-suffixed URL and at the root.
    for url in [
        metadata_url.clone(),
        format!("http://127.0.0.1:{port}/.well-known/oauth-protected-resource"),
    ] {
        let response = http.get(&url).send().await.expect("GET metadata");
        assert_eq!(response.status(), 200, "{url}");
        let doc: Value = response.json().await.expect("metadata JSON");
        assert_eq!(doc["resource"], resource.as_str(), "{doc}");
        assert_eq!(doc["authorization_servers"], json!([issuer]), "{doc}");
        assert_eq!(
            doc["scopes_supported"],
            json!(["mcp:read", "mcp:write"]),
            "{doc}"
        );
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]), "{doc}");
    }

    // A read-only token: whoami works, write_note is a step-up 403.
    let read = client_credentials_token(&issuer, &resource, "mcp:read").await;
    let mut client = McpClient::new(&resource, &read);
    client.initialize().await;
    let answer = client.request("tools/list", json!({})).await;
    assert_eq!(answer.status, 200, "{}", answer.raw);
    let tools: Vec<&str> = answer.message.as_ref().expect("tools/list response")["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        tools.contains(&"whoami") && tools.contains(&"write_note"),
        "{tools:?}"
    );
    let answer = client.call_tool("whoami", json!({})).await;
    assert_eq!(
        tool_text(&answer),
        format!("subject={CLIENT_ID} client={CLIENT_ID} scopes=mcp:read")
    );
    let answer = client.call_tool("write_note", json!({"text": "hi"})).await;
    assert_eq!(answer.status, 403, "{}", answer.raw);
    let challenge = answer.www_authenticate.expect("WWW-Authenticate on 403");
    assert!(
        challenge.starts_with(r#"Bearer error="insufficient_scope""#),
        "challenge: {challenge}"
    );
    assert!(
        challenge.contains(r#"scope="mcp:read mcp:write""#),
        "challenge: {challenge}"
    );
    assert!(
        challenge.contains(&format!(r#"resource_metadata="{metadata_url}""#)),
        "challenge: {challenge}"
    );
    // Also when the call hides in a JSON-RPC batch.
    let answer = client
        .post(&json!([
            {"jsonrpc": "2.0", "id": 90, "method": "tools/list"},
            {"jsonrpc": "2.0", "id": 91, "method": "tools/call",
             "params": {"name": "write_note", "arguments": {"text": "hi"}}},
        ]))
        .await;
    assert_eq!(answer.status, 403, "{}", answer.raw);

    // Read and write: write_note works.
    let write = client_credentials_token(&issuer, &resource, "mcp:read mcp:write").await;
    let mut client = McpClient::new(&resource, &write);
    client.initialize().await;
    let answer = client
        .call_tool("write_note", json!({"text": "hello from the test"}))
        .await;
    assert_eq!(tool_text(&answer), "saved: hello from the test");
    let answer = client.call_tool("whoami", json!({})).await;
    assert_eq!(
        tool_text(&answer),
        format!("subject={CLIENT_ID} client={CLIENT_ID} scopes=mcp:read mcp:write")
    );

    // Without mcp:read nothing goes through.
    let write_only = client_credentials_token(&issuer, &resource, "mcp:write").await;
    let mut client = McpClient::new(&resource, &write_only);
    let answer = client
        .request(
            "initialize",
            json!({"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                   "clientInfo": {"name": "t", "version": "0"}}),
        )
        .await;
    assert_eq!(answer.status, 403, "{}", answer.raw);
    let challenge = answer.www_authenticate.expect("WWW-Authenticate on 403");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );

    // A token for another resource: 401 invalid_token.
    let other = client_credentials_token(&issuer, OTHER_RESOURCE, "other:read").await;
    let mut client = McpClient::new(&resource, &other);
    let answer = client.request("tools/list", json!({})).await;
    assert_eq!(answer.status, 401, "{}", answer.raw);
    let challenge = answer.www_authenticate.expect("WWW-Authenticate on 401");
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!(r#"resource_metadata="{metadata_url}""#)),
        "{challenge}"
    );

    example.assert_alive();
}

#[test]
fn missing_configuration_is_one_line_and_non_zero() {
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse-example-rmcp"))
        .env_remove("GATEHOUSE_ISSUER")
        .env("MCP_RESOURCE", "http://127.0.0.1:9/mcp")
        .env("PORT", "9")
        .output()
        .expect("run example");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("GATEHOUSE_ISSUER"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn unreachable_issuer_fails_after_retrying() {
    let closed = free_port();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse-example-rmcp"))
        .env("GATEHOUSE_ISSUER", format!("http://127.0.0.1:{closed}"))
        .env("MCP_RESOURCE", "http://127.0.0.1:9/mcp")
        .env("PORT", free_port().to_string())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run example");
    assert!(!output.status.success());
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "gave up too soon"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot discover issuer"), "{stderr}");
    assert!(output.stdout.is_empty());
}
