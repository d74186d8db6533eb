//! The upstream OpenID provider (panva/oidc-provider in tests/upstream) as a
//! process for tests, and the tenant configuration around an upstream
//! connector. Shared by tests/oidc.rs and tests/oidc_presets.rs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::*;

pub const UPSTREAM_CLIENT: &str = "gatehouse";
pub const UPSTREAM_SECRET: &str = "gatehouse-upstream-secret-0123456789";

// ---------------------------------------------------------------------------
// The upstream provider process.
// ---------------------------------------------------------------------------

pub fn upstream_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream")
}

/// Installs oidc-provider once per test process when it is missing.
pub fn install_upstream() {
    install_node_project(&upstream_dir(), "oidc-provider");
}

/// A running oidc-provider on 127.0.0.1, killed on drop.
pub struct Upstream {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Upstream {
    /// Starts the provider on `port` with Gatehouse's `callback` as the
    /// client's redirect URI; `env` adds provider options.
    pub fn start(port: u16, callback: &str, env: &[(&str, &str)]) -> Upstream {
        install_upstream();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("upstream.log");
        let mut cmd = Command::new("node");
        cmd.arg(upstream_dir().join("provider.mjs"))
            .env("UPSTREAM_PORT", port.to_string())
            .env("UPSTREAM_REDIRECT_URIS", callback)
            .env("UPSTREAM_CLIENT_ID", UPSTREAM_CLIENT)
            .env("UPSTREAM_CLIENT_SECRET", UPSTREAM_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn node tests/upstream/provider.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.trim() == "ready" {
                    let _ = tx.send(());
                }
            }
        });
        let upstream = Upstream {
            child,
            log,
            _dir: dir,
        };
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("the upstream provider did not start: {}", upstream.log());
        }
        upstream
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Configuration.
// ---------------------------------------------------------------------------

/// One tenant with the given connector tables, the demo MCP resource, the
/// public client and the service client (for introspection).
pub fn config(connectors: &str) -> String {
    format!(
        r#"
[keys]
algorithm = "ES256"

[[tenants]]
id = "default"
display_name = "Test"

{connectors}

[[tenants.resources]]
uri = "{MCP}"
name = "Demo MCP server"
scopes = ["mcp:read", "mcp:write"]
default_scopes = ["mcp:read"]

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
"#
    )
}

// ---------------------------------------------------------------------------
// Playing the user.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
pub enum AtUpstream {
    SignInAndConsent,
    Cancel,
}

pub fn html_attr_unescape(s: &str) -> String {
    s.replace("&#x2F;", "/")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

pub fn form_action(html: &str) -> Option<String> {
    let start = html.find("action=\"")? + "action=\"".len();
    let end = html[start..].find('"')? + start;
    Some(html_attr_unescape(&html[start..end]))
}

/// The link whose text is `text`.
pub fn link_to(html: &str, text: &str) -> Option<String> {
    let at = html.find(text)?;
    let start = html[..at].rfind("href=\"")? + "href=\"".len();
    let end = html[start..].find('"')? + start;
    Some(html_attr_unescape(&html[start..end]))
}

/// Walks the provider's development pages from `start` (the upstream
/// authorization URL Gatehouse redirected to), signing in as `login`.
/// Returns the URL the provider sends the browser back to.
pub async fn at_upstream(
    browser: &Browser,
    server: &Server,
    start: &str,
    login: &str,
    action: AtUpstream,
) -> String {
    let mut res = browser.http.get(start).send().await.expect("upstream");
    for _ in 0..12 {
        let here = res.url().clone();
        let status = res.status().as_u16();
        if (300..400).contains(&status) {
            let to = here
                .join(&location(&res))
                .expect("redirect URL")
                .to_string();
            if to.starts_with(&server.base) {
                return to;
            }
            res = browser.http.get(&to).send().await.expect("upstream");
            continue;
        }
        let body = res.text().await.expect("body");
        assert_eq!(status, 200, "upstream page {here}: {body}");
        let action_url = |html: &str| {
            here.join(&form_action(html).expect("form action"))
                .expect("action URL")
        };
        if body.contains("name=\"login\"") {
            if action == AtUpstream::Cancel {
                let abort = here
                    .join(&link_to(&body, "[ Cancel ]").expect("cancel link"))
                    .expect("cancel URL");
                res = browser.http.get(abort).send().await.expect("cancel");
                continue;
            }
            res = browser
                .http
                .post(action_url(&body))
                .form(&[("prompt", "login"), ("login", login), ("password", "any")])
                .send()
                .await
                .expect("upstream login");
            continue;
        }
        if body.contains("value=\"consent\"") {
            res = browser
                .http
                .post(action_url(&body))
                .form(&[("prompt", "consent")])
                .send()
                .await
                .expect("upstream consent");
            continue;
        }
        panic!("unexpected upstream page {here}: {body}");
    }
    panic!("too many steps at the upstream provider");
}

/// /authorize for the public client up to the upstream authorization URL.
pub async fn to_upstream(
    server: &Server,
    browser: &Browser,
    extra: &[(&str, &str)],
) -> (String, Pkce) {
    let p = pkce();
    let url = authorize_url(server, PUBLIC_CLIENT, REDIRECT, &p.challenge, extra);
    let out = browser.authorize(server, &url, "", "", true).await;
    let Outcome::Redirect(upstream) = out else {
        panic!("expected a redirect to the provider, got {out:?}");
    };
    assert!(
        !upstream.starts_with(REDIRECT),
        "sent to the client instead of the provider: {upstream}"
    );
    (upstream, p)
}

/// Back at Gatehouse's callback: follows through consent to the client.
pub async fn back_at_gatehouse(server: &Server, browser: &Browser, callback: &str) -> Outcome {
    let res = browser.http.get(callback).send().await.expect("callback");
    browser.follow(server, res, "", "", true).await
}

pub async fn redeem(server: &Server, code: &str, p: &Pkce) -> Value {
    redeem_code(server, PUBLIC_CLIENT, REDIRECT, code, p).await
}

/// A whole login at the provider as `login`; returns the token response.
pub async fn login_upstream(
    server: &Server,
    upstream: &Upstream,
    browser: &Browser,
    login: &str,
) -> Value {
    let (start, p) = to_upstream(
        server,
        browser,
        &[("scope", "openid email profile mcp:read")],
    )
    .await;
    let callback = at_upstream(browser, server, &start, login, AtUpstream::SignInAndConsent).await;
    let out = back_at_gatehouse(server, browser, &callback).await;
    let code = match out {
        Outcome::Redirect(u) => query_param(&u, "code")
            .unwrap_or_else(|| panic!("no code in {u}; upstream log: {}", upstream.log())),
        Outcome::Page(s, b) => panic!(
            "page {s} instead of the client: {b}\nserver log: {}\nupstream log: {}",
            server.log(),
            upstream.log()
        ),
    };
    redeem(server, &code, &p).await
}

/// Plays a client of the provider itself (the connector's client, whose
/// secret the tests know, with Gatehouse's callback at `callback_path` as
/// its redirect URI): the provider's token response for `login`, asked with
/// `scope` and `extra` authorization parameters.
pub async fn upstream_tokens(
    server: &Server,
    issuer: &str,
    callback_path: &str,
    login: &str,
    scope: &str,
    extra: &[(&str, &str)],
) -> Value {
    let p = pkce();
    let callback = server.url(callback_path);
    let mut start = url::Url::parse(&format!("{issuer}/auth")).unwrap();
    start
        .query_pairs_mut()
        .append_pair("client_id", UPSTREAM_CLIENT)
        .append_pair("response_type", "code")
        .append_pair("scope", scope)
        .append_pair("redirect_uri", &callback)
        .append_pair("state", "s-1")
        .append_pair("nonce", "n-1")
        .append_pair("code_challenge", &p.challenge)
        .append_pair("code_challenge_method", "S256");
    for (k, v) in extra {
        start.query_pairs_mut().append_pair(k, v);
    }
    let back = at_upstream(
        &Browser::new(),
        server,
        start.as_str(),
        login,
        AtUpstream::SignInAndConsent,
    )
    .await;
    let code = query_param(&back, "code").expect("code from the provider");
    let res = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth(UPSTREAM_CLIENT, Some(UPSTREAM_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &callback),
            ("code_verifier", &p.verifier),
        ])
        .send()
        .await
        .expect("provider token endpoint");
    let json: Value = res.json().await.expect("json");
    assert!(json["access_token"].is_string(), "provider tokens: {json}");
    json
}

pub async fn userinfo(server: &Server, access_token: &str) -> Value {
    let res = reqwest::Client::new()
        .get(server.url("/userinfo"))
        .bearer_auth(access_token)
        .send()
        .await
        .expect("userinfo");
    assert_eq!(res.status().as_u16(), 200);
    res.json().await.expect("json")
}

/// The failed logins the audit log recorded (written in the background:
/// polled for a few seconds).
pub async fn login_failures(server: &Server) -> Vec<Value> {
    let store = gatehouse::store::connect(&server.database_url)
        .await
        .expect("store");
    for _ in 0..50 {
        let events = store.list_audit("default", 100).await.expect("audit");
        let failures: Vec<Value> = events
            .iter()
            .filter(|e| e.kind == "login" && e.outcome == "failure")
            .map(|e| serde_json::from_str(&e.detail).unwrap_or(Value::Null))
            .collect();
        if !failures.is_empty() {
            return failures;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Vec::new()
}

pub fn error_page(out: Outcome) -> (u16, String) {
    match out {
        Outcome::Page(status, body) => {
            assert!(
                body.contains("id=\"error-message\""),
                "not an error page ({status}): {body}"
            );
            (status, body)
        }
        Outcome::Redirect(u) => panic!("expected an error page, got a redirect to {u}"),
    }
}
