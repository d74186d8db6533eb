//! Secrets are never logged, not even at `trace` level: the server runs
//! with `GATEHOUSE_LOG=trace` (every crate, SQL statements included), trace
//! export, and JSON lines (again with text lines, which also show span
//! fields), through a whole life of a deployment (an initial access token,
//! a self-registered confidential client and its registration access
//! token, a sign-in with a password (and a wrong one), the code with PKCE,
//! refresh, introspection, revocation, client_credentials, token exchange,
//! a wrong client secret and a replayed code). Every secret the test used
//! or received is then looked for in what the server wrote (stderr and
//! stdout), in what it exported as spans, and in what the CLI wrote while
//! issuing the initial access token. Hashes of secrets may appear; the
//! secrets themselves never.

mod common;
use common::otlp::Receiver;
use common::*;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};

const SECOND: &str = "https://second.example.com/mcp";
const AGENT: &str = "agent";
const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
const CAROL: &str = "carol@example.com";

/// Values unique to this run (nothing else in a log could contain them).
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn hash_password(password: &str) -> String {
    let out = {
        use std::io::Write;
        let mut child = std::process::Command::new(binary())
            .arg("hash-password")
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("hash-password");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait")
    };
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

fn config(password_hash: &str, agent_secret: &str) -> String {
    format!(
        r#"
[[tenants]]
id = "default"

[tenants.registration]
mode = "initial_access_token"

[tenants.registration.machine_clients]
resources = ["{MCP}"]

[[tenants.connectors]]
id = "dev"
type = "dev"
users = [ {{ email = "{CAROL}", password_hash = "{password_hash}", name = "Carol" }} ]

[[tenants.resources]]
uri = "{MCP}"
scopes = ["mcp:read", "mcp:write"]
default_scopes = ["mcp:read"]

[[tenants.resources]]
uri = "{SECOND}"
scopes = ["mcp:read", "mcp:write"]

[[tenants.clients]]
client_id = "{SERVICE_CLIENT}"
secret = "{SERVICE_SECRET}"
grant_types = ["client_credentials"]
introspect_any = true

[[tenants.clients]]
client_id = "{AGENT}"
secret = "{agent_secret}"
grant_types = ["client_credentials", "{TE}"]

[[tenants.token_exchange]]
clients = ["{AGENT}"]
subject_token_types = ["{AT}"]
resources = ["{SECOND}"]
"#
    )
}

/// Everything secret the run saw, by what it is.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: &str, value: &str) {
        assert!(
            value.len() >= 16,
            "{what} is too short to look for: {value:?}"
        );
        self.0.push((what.to_string(), value.to_string()));
        // A JWT's signature alone would also give a leak away.
        let parts: Vec<&str> = value.split('.').collect();
        if parts.len() == 3 && parts[2].len() >= 16 {
            self.0
                .push((format!("{what} (signature)"), parts[2].to_string()));
        }
    }

    fn add_json(&mut self, what: &str, json: &Value, keys: &[&str]) {
        for k in keys {
            let v = json[k]
                .as_str()
                .unwrap_or_else(|| panic!("no {k} in {what}: {json}"));
            self.add(&format!("{what} {k}"), v);
        }
    }

    /// Each secret found in `text` (`where_` names the text).
    fn found_in(&self, where_: &str, text: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, v)| text.contains(v.as_str()))
            .map(|(what, _)| format!("{what} in {where_}"))
            .collect()
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn form_action(html: &str) -> String {
    let start = html.find("action=\"").expect("form") + "action=\"".len();
    let end = html[start..].find('"').expect("action end") + start;
    html[start..end]
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

/// Plays the browser from `url` to the redirect back to the client: a
/// wrong password first, then the right one, then consent. Records the
/// cookies and the forms' hidden values on the way.
async fn sign_in(
    server: &Server,
    browser: &reqwest::Client,
    url: &str,
    passwords: (&str, &str),
    secrets: &mut Secrets,
) -> String {
    let mut res = browser.get(url).send().await.expect("authorize");
    let mut tries = 0;
    for _ in 0..10 {
        for cookie in res.headers().get_all("set-cookie") {
            let cookie = cookie.to_str().expect("cookie");
            let value = cookie
                .split(';')
                .next()
                .and_then(|kv| kv.split_once('='))
                .map(|(_, v)| v)
                .unwrap_or_default();
            if value.len() >= 16 {
                secrets.add("session cookie", value);
            }
        }
        let status = res.status().as_u16();
        if (300..400).contains(&status) {
            let to = location(&res);
            if !to.starts_with(&server.base) {
                return to;
            }
            res = browser.get(&to).send().await.expect("follow");
            continue;
        }
        let body = res.text().await.expect("body");
        let pending = hidden_field(&body, "pending").unwrap_or_else(|| panic!("{status}: {body}"));
        let csrf = hidden_field(&body, "csrf").expect("csrf");
        secrets.add("pending sign-in handle", &pending);
        secrets.add("csrf token", &csrf);
        let mut form = vec![("pending", pending), ("csrf", csrf)];
        if body.contains("name=\"password\"") {
            let password = if tries == 0 { passwords.0 } else { passwords.1 };
            tries += 1;
            form.push(("username", CAROL.to_string()));
            form.push(("password", password.to_string()));
            form.extend(hidden_field(&body, "connector").map(|c| ("connector", c)));
        } else if body.contains("name=\"decision\"") {
            form.push(("decision", "allow".to_string()));
        } else {
            panic!("unexpected page {status}: {body}");
        }
        res = browser
            .post(form_action(&body))
            .form(&form)
            .send()
            .await
            .expect("form");
    }
    panic!("too many steps");
}

async fn token(server: &Server, form: &[(&str, &str)], basic: (&str, &str)) -> Value {
    let (status, json) = token_request(server, form, Some(basic)).await;
    assert_eq!(status, 200, "{form:?}: {json}");
    json
}

/// One life of a deployment, logged in `format` (`json` or `text`).
async fn nothing_secret_is_written(db: Db, format: &str) {
    let mut secrets = Secrets::default();
    let kek = STANDARD.encode(rand_bytes());
    secrets.add("key-encryption key", &kek);
    let password = unique("Carol-Passw0rd");
    let wrong_password = unique("Wrong-Passw0rd");
    let agent_secret = unique("agent-secret");
    let wrong_secret = unique("wrong-client-secret");
    secrets.add("password", &password);
    secrets.add("wrong password", &wrong_password);
    secrets.add("agent secret", &agent_secret);
    secrets.add("wrong client secret", &wrong_secret);
    secrets.add("service secret", SERVICE_SECRET);

    let receiver = Receiver::start();
    let endpoint = receiver.endpoint();
    let server = Server::start_with_env(
        db,
        &config(&hash_password(&password), &agent_secret),
        &[
            ("GATEHOUSE_LOG", "trace"),
            ("GATEHOUSE_LOG_FORMAT", format),
            ("GATEHOUSE_KEY_ENCRYPTION_KEY", &kek),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await;

    // An administrator issues an initial access token (the CLI at trace too).
    let cli = server.cli_env(
        &["clients", "initial-token", "--ttl", "3600"],
        &[
            ("GATEHOUSE_LOG", "trace"),
            ("GATEHOUSE_KEY_ENCRYPTION_KEY", &kek),
        ],
    );
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let iat = String::from_utf8_lossy(&cli.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("initial_access_token: "))
        .expect("token printed")
        .trim()
        .to_string();
    secrets.add("initial access token", &iat);
    let cli_log = String::from_utf8_lossy(&cli.stderr).to_string();

    // A program registers itself as a confidential client.
    let http = http();
    let res = http
        .post(server.url("/register"))
        .bearer_auth(&iat)
        .json(&json!({
            "client_name": "Nightly agent",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": "openid mcp:read"
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status().as_u16(), 201);
    let reg: Value = res.json().await.expect("json");
    secrets.add_json(
        "registration",
        &reg,
        &["client_secret", "registration_access_token"],
    );
    let client_id = reg["client_id"].as_str().expect("client_id").to_string();
    let client_secret = reg["client_secret"].as_str().unwrap().to_string();
    let res = http
        .get(reg["registration_client_uri"].as_str().expect("uri"))
        .bearer_auth(reg["registration_access_token"].as_str().unwrap())
        .send()
        .await
        .expect("read registration");
    assert_eq!(res.status().as_u16(), 200);
    let basic = (client_id.as_str(), client_secret.as_str());

    // A user signs in (a wrong password first) and the client gets a code.
    let p = pkce();
    secrets.add("code_verifier", &p.verifier);
    let url = authorize_url(
        &server,
        &client_id,
        "http://127.0.0.1/callback",
        &p.challenge,
        &[
            ("scope", "openid mcp:read"),
            ("nonce", "n-0123456789abcdef"),
        ],
    );
    let back = sign_in(
        &server,
        &http,
        &url,
        (&wrong_password, &password),
        &mut secrets,
    )
    .await;
    let code = query_param(&back, "code").unwrap_or_else(|| panic!("no code: {back}"));
    secrets.add("authorization code", &code);
    let code_form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "http://127.0.0.1/callback"),
        ("code_verifier", p.verifier.as_str()),
        ("resource", MCP),
    ];
    let tokens = token(&server, &code_form, basic).await;
    secrets.add_json(
        "code grant",
        &tokens,
        &["access_token", "refresh_token", "id_token"],
    );

    // Refresh, introspection, revocation.
    let refreshed = token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
        basic,
    )
    .await;
    secrets.add_json("refresh", &refreshed, &["access_token", "refresh_token"]);
    let user_token = refreshed["access_token"].as_str().unwrap().to_string();
    let intro = introspect(&server, &user_token).await;
    assert_eq!(intro["active"], true, "{intro}");

    // Machine tokens: the self-registered client and a configured agent,
    // and the agent's exchange of the user's token.
    let own = token(
        &server,
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        basic,
    )
    .await;
    secrets.add_json("client_credentials", &own, &["access_token"]);
    let agent = token(
        &server,
        &[("grant_type", "client_credentials"), ("resource", SECOND)],
        (AGENT, &agent_secret),
    )
    .await;
    secrets.add_json("agent", &agent, &["access_token"]);
    let exchanged = token(
        &server,
        &[
            ("grant_type", TE),
            ("subject_token", &user_token),
            ("subject_token_type", AT),
            ("actor_token", agent["access_token"].as_str().unwrap()),
            ("actor_token_type", AT),
            ("resource", SECOND),
        ],
        (AGENT, &agent_secret),
    )
    .await;
    secrets.add_json("exchange", &exchanged, &["access_token"]);

    let res = http
        .post(server.url("/revoke"))
        .basic_auth(basic.0, Some(basic.1))
        .form(&[("token", refreshed["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .expect("revoke");
    assert_eq!(res.status().as_u16(), 200);

    // Failures: a wrong client secret, and the code presented again (a
    // security event that revokes the grant).
    let (status, _) = token_request(
        &server,
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        Some((&client_id, &wrong_secret)),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = token_request(&server, &code_form, Some(basic)).await;
    assert_eq!(status, 400);

    // Let the batched exports and audit writes happen, then look.
    receiver
        .wait_for("the replayed code's token request", |spans| {
            spans
                .iter()
                .filter(|s| s["name"] == "grant.authorization_code")
                .count()
                >= 2
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let log = server.log();
    // The run was logged at trace, SQL and the request lines included: the
    // search means something.
    if format == "json" {
        let lines: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        assert!(
            lines.iter().any(|l| l["level"] == "TRACE"),
            "nothing at trace level"
        );
        assert!(
            lines
                .iter()
                .any(|l| l["target"].as_str().unwrap_or_default().starts_with("sqlx")),
            "no SQL logged"
        );
        assert!(
            lines.iter().any(|l| l["fields"]["status"] == 401),
            "the request lines are missing"
        );
    } else {
        assert!(log.contains(" TRACE "), "nothing at trace level");
        assert!(log.contains(" sqlx::query: "), "no SQL logged");
        assert!(log.contains("status=401"), "the request lines are missing");
        assert!(!log.contains('\u{1b}'), "terminal colours in a log file");
    }
    let mut leaks = secrets.found_in("the server log", &log);
    leaks.extend(secrets.found_in("the server's stdout", &server.stdout()));
    leaks.extend(secrets.found_in("the exported spans", &receiver.raw()));
    leaks.extend(secrets.found_in("the CLI's log", &cli_log));
    assert!(leaks.is_empty(), "secrets were written: {leaks:#?}");
    // And the JWTs' payloads (claims) were not logged whole either.
    for (what, value) in &secrets.0 {
        let parts: Vec<&str> = value.split('.').collect();
        if parts.len() == 3 && URL_SAFE_NO_PAD.decode(parts[1]).is_ok() {
            assert!(!log.contains(parts[1]), "the claims of {what} were logged");
        }
    }
}

fn rand_bytes() -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let id = uuid::Uuid::new_v4();
        chunk.copy_from_slice(&id.as_bytes()[..16]);
        chunk[0] ^= i as u8;
    }
    out
}

async fn nothing_secret_reaches_json_logs(db: Db) {
    nothing_secret_is_written(db, "json").await
}

/// Text lines also show the fields of the spans around each event.
async fn nothing_secret_reaches_text_logs(db: Db) {
    nothing_secret_is_written(db, "text").await
}

on_both_databases!(
    nothing_secret_reaches_json_logs,
    nothing_secret_reaches_text_logs
);
