//! Test harness: starts the real `gatehouse` binary on a free loopback port
//! against a fresh SQLite file or a fresh PostgreSQL database (created here
//! and dropped afterwards), and drives the browser side over HTTP.
#![allow(dead_code)]

pub mod otlp;
pub mod saml_idp;
pub mod upstream;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const MCP: &str = "http://127.0.0.1:8765/mcp";
pub const OTHER: &str = "https://other.example.com/mcp";
pub const PUBLIC_CLIENT: &str = "demo-public";
pub const SERVICE_CLIENT: &str = "demo-service";
pub const SERVICE_SECRET: &str = "demo-service-secret";
pub const WEB_CLIENT: &str = "web-app";
pub const WEB_SECRET: &str = "web-app-secret-0123456789";
pub const WEB_REDIRECT: &str = "https://app.example.com/callback";
pub const USER: &str = "admin@example.com";
pub const PASSWORD: &str = "password";
pub const REDIRECT: &str = "http://127.0.0.1:53682/callback";

/// argon2id of "password".
pub const PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$DdyCBm3CaX8h2fDebOJg7w$lwWRRk3zY1yYHotbfe34wdjFwJbHjd2UVpI1bHgwdgc";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The configuration every test starts from; `extra` TOML is appended.
pub fn base_config(extra: &str) -> String {
    format!(
        r#"
[keys]
algorithm = "ES256"

[[tenants]]
id = "default"
display_name = "Test"

[tenants.tokens]
access_token_ttl = 600
refresh_token_ttl = 86400
code_ttl = 60

[[tenants.connectors]]
id = "dev"
type = "dev"
users = [
  {{ email = "{USER}", password_hash = "{PASSWORD_HASH}", name = "Ada Admin", groups = ["admins"] }},
  {{ email = "bob@example.com", password_hash = "{PASSWORD_HASH}", name = "Bob" }},
]

[[tenants.resources]]
uri = "{MCP}"
name = "Demo MCP server"
scopes = ["mcp:read", "mcp:write"]
default_scopes = ["mcp:read"]

[[tenants.resources]]
uri = "{OTHER}"
name = "Other MCP server"
scopes = ["other:read"]

[[tenants.clients]]
client_id = "{PUBLIC_CLIENT}"
client_name = "Demo public client"
redirect_uris = ["http://127.0.0.1/callback", "http://localhost/callback"]
grant_types = ["authorization_code", "refresh_token"]
token_endpoint_auth_method = "none"

[[tenants.clients]]
client_id = "{SERVICE_CLIENT}"
client_name = "Demo service"
secret = "{SERVICE_SECRET}"
grant_types = ["client_credentials"]
token_endpoint_auth_method = "client_secret_basic"
# The harness introspects every kind of token with this client.
introspect_any = true

[[tenants.clients]]
client_id = "{WEB_CLIENT}"
client_name = "Web app"
secret = "{WEB_SECRET}"
redirect_uris = ["{WEB_REDIRECT}"]
grant_types = ["authorization_code", "refresh_token"]
token_endpoint_auth_method = "client_secret_basic"
{extra}
"#
    )
}

pub struct Server {
    pub base: String,
    pub port: u16,
    pub db: Db,
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pub config_path: PathBuf,
    pub clock_file: PathBuf,
    pg_name: Option<String>,
    child: Option<Child>,
    /// Environment added to the server's (and CLI commands').
    extra_env: Vec<(String, String)>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn psql(sql: &str) {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `<dir>/setup.sh` (the npm install of a test directory such as
/// tests/upstream or tests/browser) once per test process when
/// `<dir>/node_modules/<package>` is missing.
pub fn install_node_project(dir: &Path, package: &str) {
    static DONE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if done.iter().any(|d| d == dir) {
        return;
    }
    if !dir
        .join("node_modules")
        .join(package)
        .join("package.json")
        .exists()
    {
        let setup = dir.join("setup.sh");
        let out = Command::new("bash")
            .arg(&setup)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", setup.display()));
        assert!(
            out.status.success(),
            "{} failed: {}{}",
            setup.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    done.push(dir.to_path_buf());
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_gatehouse")
}

impl Server {
    pub async fn start(db: Db) -> Server {
        Self::start_with(db, &base_config("")).await
    }

    pub async fn start_with(db: Db, config: &str) -> Server {
        Self::start_with_env(db, config, &[]).await
    }

    /// Like `start_with`, with environment variables for the server.
    pub async fn start_with_env(db: Db, config: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("gatehouse.toml");
        std::fs::write(&config_path, config).expect("write config");
        let clock_file = dir.path().join("clock-offset");
        std::fs::write(&clock_file, "0").expect("write clock");
        let (database_url, pg_name) = match db {
            Db::Sqlite => (
                format!("sqlite://{}", dir.path().join("gh.db").display()),
                None,
            ),
            Db::Postgres => {
                let name = format!("gh_test_{}", uuid::Uuid::new_v4().simple());
                psql(&format!("CREATE DATABASE {name}"));
                (
                    format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    Some(name),
                )
            }
        };
        let port = free_port();
        let mut server = Server {
            base: format!("http://127.0.0.1:{port}"),
            port,
            db,
            dir,
            database_url,
            config_path,
            clock_file,
            pg_name,
            child: None,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        server.spawn().await;
        server
    }

    /// A second node of `first`'s deployment: same database, data
    /// directory (key-encryption key) and configuration, its own port, with
    /// `env` for the server.
    pub async fn start_sharing(first: &Server, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("gatehouse.toml");
        std::fs::copy(&first.config_path, &config_path).expect("copy config");
        let clock_file = dir.path().join("clock-offset");
        std::fs::write(&clock_file, "0").expect("write clock");
        let port = free_port();
        let mut extra_env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        extra_env.push((
            "GATEHOUSE_DATA_DIR".into(),
            first.dir.path().join("data").display().to_string(),
        ));
        let mut server = Server {
            base: format!("http://127.0.0.1:{port}"),
            port,
            db: first.db,
            dir,
            database_url: first.database_url.clone(),
            config_path,
            clock_file,
            pg_name: None,
            child: None,
            extra_env,
        };
        server.spawn().await;
        server
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GATEHOUSE_DATA_DIR", self.dir.path().join("data"))
            .env("GATEHOUSE_DATABASE_URL", &self.database_url)
            .env("GATEHOUSE_CONFIG", &self.config_path)
            .env("GATEHOUSE_LOG", "warn");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    async fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        let out = std::fs::File::create(self.dir.path().join("server.out")).expect("out file");
        let child = self
            .command()
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .env("GATEHOUSE_TEST_CLOCK_FILE", &self.clock_file)
            .stdout(out)
            .stderr(log)
            .spawn()
            .expect("spawn gatehouse");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("gatehouse exited early ({status}): {}", self.log());
            }
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gatehouse did not become healthy: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// What the server printed on stdout (since its last start).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.out")).unwrap_or_default()
    }

    /// The server process's id while it runs (its memory is in
    /// /proc/<pid>/status; the load harnesses read it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server gracefully (SIGTERM, as an orchestrator does) and
    /// waits for it to exit (at most 60 s); true when it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        // SAFETY: kill only sends a signal to the child this harness started.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Moves the server's clock forward (no sleeping in tests).
    pub fn advance_clock(&self, seconds: i64) {
        let now: i64 = std::fs::read_to_string(&self.clock_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        // Write-then-rename: the server must never read a half-written file.
        let tmp = self.clock_file.with_extension("tmp");
        std::fs::write(&tmp, (now + seconds).to_string()).expect("write clock");
        std::fs::rename(&tmp, &self.clock_file).expect("move clock");
    }

    /// Runs a CLI command against this server's database and data dir.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("run gatehouse cli")
    }

    pub fn cli_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(name) = &self.pg_name {
            psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// Runs each named `async fn name(db: Db)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Db::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Db::Postgres).await } )*
        }
    };
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// A cookie-keeping HTTP client that does not follow redirects, playing the
/// user's browser.
pub struct Browser {
    pub http: reqwest::Client,
}

pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&#x2F;", "/")
            .replace("&amp;", "&"),
    )
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let found = parsed
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned());
    found
}

/// How an authorization request ended, from the client's point of view.
#[derive(Debug)]
pub enum Outcome {
    /// Redirected back to the client: the full redirect URL.
    Redirect(String),
    /// A page (error or otherwise) with its status and body.
    Page(u16, String),
}

impl Outcome {
    pub fn redirect(self) -> String {
        match self {
            Outcome::Redirect(u) => u,
            Outcome::Page(s, b) => panic!("expected a redirect to the client, got page {s}: {b}"),
        }
    }
    pub fn code(self) -> String {
        let url = self.redirect();
        query_param(&url, "code").unwrap_or_else(|| panic!("no code in {url}"))
    }
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Browser { http }
    }

    /// Follows the authorization from `authorize_url` through login (if
    /// asked) and consent (answering `allow`), to the client redirect.
    pub async fn authorize(
        &self,
        server: &Server,
        authorize_url: &str,
        user: &str,
        password: &str,
        consent: bool,
    ) -> Outcome {
        let res = self
            .http
            .get(authorize_url)
            .send()
            .await
            .expect("authorize");
        self.follow(server, res, user, password, consent).await
    }

    /// Continues a browser flow from any response: follows redirects within
    /// the server, fills in login and consent pages, and stops at a redirect
    /// to the client or at any other page.
    pub async fn follow(
        &self,
        server: &Server,
        res: reqwest::Response,
        user: &str,
        password: &str,
        consent: bool,
    ) -> Outcome {
        self.follow_at(&server.base, res, user, password, consent)
            .await
    }

    /// Like `follow`, for a server reached at `base` (a tenant's own host).
    pub async fn follow_at(
        &self,
        base: &str,
        mut res: reqwest::Response,
        user: &str,
        password: &str,
        consent: bool,
    ) -> Outcome {
        for _ in 0..6 {
            let status = res.status().as_u16();
            if (300..400).contains(&status) {
                let to = location(&res);
                if to.starts_with(base) {
                    res = self.http.get(&to).send().await.expect("follow");
                    continue;
                }
                return Outcome::Redirect(to);
            }
            let body = res.text().await.expect("body");
            if body.contains("name=\"password\"") {
                let mut form = vec![
                    ("pending", hidden_field(&body, "pending").expect("pending")),
                    ("csrf", hidden_field(&body, "csrf").expect("csrf")),
                    ("username", user.to_string()),
                    ("password", password.to_string()),
                ];
                // Like a browser, send the form's connector back too.
                form.extend(hidden_field(&body, "connector").map(|c| ("connector", c)));
                res = self
                    .http
                    .post(server_action(&body, base))
                    .form(&form)
                    .send()
                    .await
                    .expect("login");
                continue;
            }
            if body.contains("name=\"decision\"") {
                let form = [
                    ("pending", hidden_field(&body, "pending").expect("pending")),
                    ("csrf", hidden_field(&body, "csrf").expect("csrf")),
                    (
                        "decision",
                        if consent {
                            "allow".to_string()
                        } else {
                            "deny".to_string()
                        },
                    ),
                ];
                res = self
                    .http
                    .post(server_action(&body, base))
                    .form(&form)
                    .send()
                    .await
                    .expect("consent");
                continue;
            }
            return Outcome::Page(status, body);
        }
        panic!("too many steps in the authorization flow");
    }
}

fn server_action(html: &str, base: &str) -> String {
    let marker = "action=\"";
    let start = html
        .find(marker)
        .map(|i| i + marker.len())
        .expect("form action");
    let end = html[start..].find('"').expect("action end") + start;
    let action = html[start..end]
        .replace("&#x2F;", "/")
        .replace("&amp;", "&");
    assert!(
        action.starts_with(base),
        "form posts to {action}, not the server"
    );
    action
}

/// Builds an /authorize URL for the public demo client with sane defaults;
/// `extra` pairs override or add.
pub fn authorize_url(
    server: &Server,
    client_id: &str,
    redirect_uri: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut url = url::Url::parse(&server.url("/authorize")).expect("url");
    let defaults = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", "xyz-state"),
        ("resource", MCP),
        ("scope", "mcp:read"),
    ];
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in defaults {
            if !extra.iter().any(|(ek, _)| *ek == k) {
                q.append_pair(k, v);
            }
        }
        for (k, v) in extra {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
    }
    url.to_string()
}

/// Posts a form to the token endpoint; returns status and JSON.
pub async fn token_request(
    server: &Server,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, serde_json::Value) {
    let http = reqwest::Client::new();
    let mut req = http.post(server.url("/token")).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let res = req.send().await.expect("token request");
    let status = res.status().as_u16();
    let json = res.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// A client_credentials access token for the demo MCP resource, as the
/// service client.
pub async fn service_token(server: &Server) -> String {
    let (status, json) = token_request(
        server,
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        Some((SERVICE_CLIENT, SERVICE_SECRET)),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    json["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// Full login for the public client: returns the token response JSON.
pub async fn login_public(server: &Server, browser: &Browser, scope: &str) -> serde_json::Value {
    let p = pkce();
    let url = authorize_url(
        server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("scope", scope)],
    );
    let code = browser
        .authorize(server, &url, USER, PASSWORD, true)
        .await
        .code();
    redeem_code(server, PUBLIC_CLIENT, REDIRECT, &code, &p).await
}

/// Redeems an authorization code of a public client for the demo MCP
/// resource; returns the token response JSON.
pub async fn redeem_code(
    server: &Server,
    client_id: &str,
    redirect_uri: &str,
    code: &str,
    p: &Pkce,
) -> serde_json::Value {
    let (status, json) = token_request(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", client_id),
            ("code_verifier", &p.verifier),
            ("resource", MCP),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "token response: {json}");
    json
}

/// Introspects a token as the service client (`introspect_any`).
pub async fn introspect(server: &Server, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(server.url("/introspect"))
        .basic_auth(SERVICE_CLIENT, Some(SERVICE_SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect")
        .json()
        .await
        .expect("json")
}

/// Decodes a JWT's payload without verifying (tests verify separately).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("jwt payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

pub fn jwt_header(token: &str) -> serde_json::Value {
    let h = token.split('.').next().expect("jwt header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).expect("b64")).expect("json")
}

impl Server {
    /// Like `cli`, with extra environment variables (e.g. to pass the
    /// key-encryption key the way production does).
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run gatehouse cli")
    }

    /// The development key-encryption key the server generated in its data
    /// directory (base64).
    pub fn kek_base64(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data").join("kek"))
            .expect("kek file")
            .trim()
            .to_string()
    }
}

/// Another tenant for `base_config`'s `extra`, set up like the default one:
/// the dev user, the demo MCP resource and the public client. `settings` go
/// in the tenant's table (e.g. `domain = "…"`), `extra` after it.
pub fn tenant_config(id: &str, settings: &str, extra: &str) -> String {
    format!(
        r#"
[[tenants]]
id = "{id}"
{settings}

[tenants.tokens]
access_token_ttl = 600
refresh_token_ttl = 86400
code_ttl = 60

[[tenants.connectors]]
id = "dev"
type = "dev"
users = [ {{ email = "{USER}", password_hash = "{PASSWORD_HASH}", name = "Ada Admin" }} ]

[[tenants.resources]]
uri = "{MCP}"
name = "Demo MCP server"
scopes = ["mcp:read", "mcp:write"]
default_scopes = ["mcp:read"]

[[tenants.clients]]
client_id = "{PUBLIC_CLIENT}"
redirect_uris = ["http://127.0.0.1/callback", "http://localhost/callback"]
grant_types = ["authorization_code", "refresh_token"]
token_endpoint_auth_method = "none"
{extra}
"#
    )
}
