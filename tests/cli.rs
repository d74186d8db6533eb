//! The command line: one-line errors naming the offending key or flag, and
//! the admin commands (clients, resources, tenants, keys, migrate,
//! hash-password) against the same database as a running server.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A production-style key-encryption key, so no development-key warning is
/// logged before the error under test.
fn kek() -> String {
    STANDARD.encode([7u8; 32])
}

/// Runs the binary with a clean environment rooted in `dir`, killing it
/// (and failing) if it is still running after `timeout`: a `serve` that
/// should have refused to start must not hang the test.
fn run(dir: &Path, env: &[(&str, &str)], args: &[&str], timeout: Duration) -> Output {
    let out_path = dir.join(format!("out-{}", uuid::Uuid::new_v4().simple()));
    let err_path = dir.join(format!("err-{}", uuid::Uuid::new_v4().simple()));
    let mut cmd = Command::new(binary());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GATEHOUSE_DATA_DIR", dir.join("data"))
        .env(
            "GATEHOUSE_DATABASE_URL",
            format!("sqlite://{}", dir.join("gh.db").display()),
        )
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn gatehouse");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gatehouse {args:?} still running after {timeout:?}; stderr: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    }
}

/// `gatehouse serve` with `config` as the config file.
fn serve_with_config(config: &str) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, config).expect("write config");
    let listen = format!("127.0.0.1:{}", free_port());
    run(
        dir.path(),
        &[("GATEHOUSE_CONFIG", path.to_str().unwrap())],
        &["serve", "--listen", &listen],
        Duration::from_secs(30),
    )
}

/// `server.cli` as production runs it: the key-encryption key comes from the
/// environment (the server's development key, read from its data dir), so
/// the development-key warning does not precede the output under test.
fn admin(server: &Server, args: &[&str]) -> Output {
    server.cli_env(
        args,
        &[("GATEHOUSE_KEY_ENCRYPTION_KEY", &server.kek_base64())],
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Non-zero exit and stderr exactly one non-empty line containing each of
/// `needles`. Returns that line.
fn assert_one_line_error(out: &Output, needles: &[&str]) -> String {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure; stdout: {} stderr: {err}",
        stdout(out)
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr must be one line, got: {err:?}");
    let line = lines[0];
    assert!(!line.trim().is_empty(), "empty error line");
    for n in needles {
        assert!(line.contains(n), "error line does not name {n:?}: {line}");
    }
    assert!(
        !stdout(out).contains("listening"),
        "server started: {}",
        stdout(out)
    );
    line.to_string()
}

fn assert_success(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}; stdout: {} stderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

async fn client_credentials(
    server: &Server,
    id: &str,
    secret: &str,
    resource: &str,
) -> (u16, Value) {
    token_request(
        server,
        &[("grant_type", "client_credentials"), ("resource", resource)],
        Some((id, secret)),
    )
    .await
}

// ---------------------------------------------------------------------------
// One-line errors
// ---------------------------------------------------------------------------

#[test]
fn bad_config_key_gives_one_line_error() {
    let base = base_config("");
    let edit = |from: &str, to: &str| {
        assert!(base.contains(from), "base config has no {from:?}");
        base.replacen(from, to, 1)
    };
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown tenant key",
            edit(
                "display_name = \"Test\"\n",
                "display_name = \"Test\"\nbogus_key = 1\n",
            ),
            vec!["tenants[0]", "bogus_key"],
        ),
        (
            "unknown client key",
            edit(
                "client_name = \"Web app\"\n",
                "client_name = \"Web app\"\nredirect_uri = \"https://app.example.com/callback\"\n",
            ),
            vec!["tenants[0].clients[2]", "redirect_uri"],
        ),
        (
            "unknown top-level key",
            format!("listen = \"127.0.0.1:1\"\n{base}"),
            vec!["listen"],
        ),
        (
            "wrong type",
            edit("code_ttl = 60", "code_ttl = \"sixty\""),
            vec!["tenants[0].tokens.code_ttl"],
        ),
        (
            "wrong type in a list",
            edit(
                "scopes = [\"mcp:read\", \"mcp:write\"]",
                "scopes = \"mcp:read\"",
            ),
            vec!["tenants[0].resources[0].scopes"],
        ),
        (
            "bad redirect URI",
            edit(
                &format!("redirect_uris = [\"{WEB_REDIRECT}\"]"),
                "redirect_uris = [\"http://app.example.com/callback\"]",
            ),
            vec!["tenants[0].clients[2].redirect_uris[0]"],
        ),
        (
            "bad redirect URI, first client",
            "[[tenants]]\nid = \"default\"\n\n[[tenants.clients]]\nclient_id = \"c\"\nredirect_uris = [\"http://127.0.0.1/cb\", \"https://*.example.com/cb\"]\n"
                .to_string(),
            vec!["tenants[0].clients[0].redirect_uris[1]"],
        ),
        (
            "default resource not a resource",
            edit(
                "display_name = \"Test\"\n",
                "display_name = \"Test\"\ndefault_resource = \"https://nowhere.example.com/mcp\"\n",
            ),
            vec!["tenants[0].default_resource"],
        ),
        (
            "TOML syntax error",
            format!("{base}\n[[tenants]\n"),
            vec!["gatehouse.toml"],
        ),
    ];
    for (what, config, needles) in cases {
        let out = serve_with_config(&config);
        let line = assert_one_line_error(&out, &needles);
        assert!(line.contains("gatehouse.toml"), "{what}: {line}");
    }
}

#[test]
fn bad_flag_gives_one_line_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        dir.path(),
        &[],
        &["serve", "--listen", "nonsense"],
        Duration::from_secs(30),
    );
    assert_one_line_error(&out, &["--listen"]);
    let out = run(
        dir.path(),
        &[],
        &["serve", "--listen", "127.0.0.1:99999"],
        Duration::from_secs(30),
    );
    assert_one_line_error(&out, &["--listen"]);
    let out = run(
        dir.path(),
        &[],
        &["serve", "--no-such-flag"],
        Duration::from_secs(30),
    );
    assert_one_line_error(&out, &["--no-such-flag"]);
    let out = run(
        dir.path(),
        &[("GATEHOUSE_LISTEN", "nonsense")],
        &["serve"],
        Duration::from_secs(30),
    );
    assert_one_line_error(&out, &["--listen"]);
}

#[test]
fn missing_required_flag_gives_one_line_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        dir.path(),
        &[("GATEHOUSE_KEY_ENCRYPTION_KEY", &kek())],
        &["clients", "add"],
        Duration::from_secs(30),
    );
    assert_one_line_error(&out, &["--client-id"]);
}

#[test]
fn bad_public_url_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for url in [
        "ftp://auth.example.com",
        "not a url",
        "https://auth.example.com/?x=1",
        "https://auth.example.com/#frag",
    ] {
        let listen = format!("127.0.0.1:{}", free_port());
        let out = run(
            dir.path(),
            &[("GATEHOUSE_KEY_ENCRYPTION_KEY", &kek())],
            &["serve", "--listen", &listen, "--public-url", url],
            Duration::from_secs(30),
        );
        assert_one_line_error(&out, &["--public-url"]);
    }
}

#[test]
fn unreadable_database_url_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing_dir = format!("sqlite://{}/no/such/dir/x.db", dir.path().display());
    for url in [
        "mysql://x",
        "nonsense",
        // Nothing listens on port 1.
        "postgres://postgres@127.0.0.1:1/gatehouse",
        missing_dir.as_str(),
    ] {
        let listen = format!("127.0.0.1:{}", free_port());
        let out = run(
            dir.path(),
            &[
                ("GATEHOUSE_KEY_ENCRYPTION_KEY", &kek()),
                ("GATEHOUSE_DATABASE_URL", url),
            ],
            &["serve", "--listen", &listen],
            Duration::from_secs(60),
        );
        assert_one_line_error(&out, &["--database-url"]);
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

async fn clients_add_list_show_delete(db: Db) {
    let mut server = Server::start(db).await;

    let out = admin(
        &server,
        &[
            "clients",
            "add",
            "--client-id",
            "svc-cli",
            "--name",
            "CLI service",
            "--grant-type",
            "client_credentials",
            "--resource",
            MCP,
        ],
    );
    let text = assert_success(&out);
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .unwrap_or_else(|| panic!("no secret printed: {text}"))
        .trim()
        .to_string();
    assert!(secret.len() >= 32, "weak secret {secret:?}");

    // The generated secret works, a wrong one does not.
    let (status, json) = client_credentials(&server, "svc-cli", &secret, MCP).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        jwt_claims(json["access_token"].as_str().unwrap())["sub"],
        "svc-cli"
    );
    let (status, json) =
        client_credentials(&server, "svc-cli", "wrong-secret-0123456789", MCP).await;
    assert_eq!(status, 401, "{json}");
    // Restricted to the resource it was given.
    let (status, json) = client_credentials(&server, "svc-cli", &secret, OTHER).await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"], "invalid_target", "{json}");

    // A second add with the same id is refused.
    let out = admin(
        &server,
        &[
            "clients",
            "add",
            "--client-id",
            "svc-cli",
            "--grant-type",
            "client_credentials",
        ],
    );
    assert_one_line_error(&out, &["svc-cli"]);

    let list = assert_success(&admin(&server, &["clients", "list"]));
    let ids: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for id in ["svc-cli", PUBLIC_CLIENT, SERVICE_CLIENT, WEB_CLIENT] {
        assert!(ids.contains(&id), "{id} not listed: {list}");
    }
    assert!(!list.contains(&secret), "list shows the secret");
    assert!(!list.contains("$argon2"), "list shows a hash");

    let out = admin(&server, &["clients", "show", "svc-cli"]);
    let shown = assert_success(&out);
    assert!(!shown.contains(&secret), "show prints the secret: {shown}");
    assert!(!shown.contains("$argon2"), "show prints the hash: {shown}");
    assert!(
        !stderr(&out).contains(&secret) && !stderr(&out).contains("$argon2"),
        "{}",
        stderr(&out)
    );
    let json: Value = serde_json::from_str(&shown).expect("show prints JSON");
    assert_eq!(json["client_id"], "svc-cli");
    assert_eq!(json["has_secret"], true);
    assert_eq!(json["metadata"]["client_name"], "CLI service");
    // Config clients with a configured plain secret do not leak either.
    let shown = assert_success(&admin(&server, &["clients", "show", WEB_CLIENT]));
    assert!(!shown.contains(WEB_SECRET), "{shown}");
    assert!(!shown.contains("$argon2"), "{shown}");

    // Delete, then the client is gone (restart: clients are cached briefly).
    let out = admin(&server, &["clients", "delete", "svc-cli"]);
    assert_success(&out);
    server.restart().await;
    let (status, json) = client_credentials(&server, "svc-cli", &secret, MCP).await;
    assert_eq!(status, 401, "{json}");
    assert_eq!(json["error"], "invalid_client", "{json}");
    let list = assert_success(&admin(&server, &["clients", "list"]));
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some("svc-cli")),
        "{list}"
    );
    let out = admin(&server, &["clients", "show", "svc-cli"]);
    assert_one_line_error(&out, &["svc-cli"]);

    // Deleting an unknown client fails with one line.
    let out = admin(&server, &["clients", "delete", "no-such-client"]);
    assert_one_line_error(&out, &["no-such-client"]);
}

async fn clients_add_refuses_bad_input(db: Db) {
    let server = Server::start(db).await;
    for (args, needle) in [
        (
            vec![
                "clients",
                "add",
                "--client-id",
                "x1",
                "--auth-method",
                "magic",
            ],
            "--auth-method",
        ),
        (
            vec![
                "clients",
                "add",
                "--client-id",
                "x2",
                "--auth-method",
                "none",
                "--redirect-uri",
                "http://evil.example.com/cb",
            ],
            "--redirect-uris",
        ),
        (
            vec![
                "clients",
                "add",
                "--client-id",
                "x3",
                "--grant-type",
                "client_credentials",
                "--resource",
                "https://unknown.example.com/mcp",
            ],
            "--resources",
        ),
    ] {
        let out = admin(&server, &args);
        assert_one_line_error(&out, &[needle]);
    }
    let list = assert_success(&admin(&server, &["clients", "list"]));
    assert!(!list.contains("x1") && !list.contains("x2") && !list.contains("x3"));
}

// ---------------------------------------------------------------------------
// Resources and tenants
// ---------------------------------------------------------------------------

async fn resources_add_and_list(db: Db) {
    let mut server = Server::start(db).await;
    let out = admin(
        &server,
        &[
            "resources",
            "add",
            "--uri",
            "HTTPS://Tools.Example.com:443/mcp",
            "--name",
            "Tools",
            "--scope",
            "tools:run",
            "--scope",
            "tools:admin",
            "--default-scope",
            "tools:run",
        ],
    );
    let text = assert_success(&out);
    let canonical = "https://tools.example.com/mcp";
    assert!(text.contains(canonical), "{text}");

    let list = assert_success(&admin(&server, &["resources", "list"]));
    let line = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some(canonical))
        .unwrap_or_else(|| panic!("{canonical} not listed: {list}"));
    assert!(
        line.contains("tools:run") && line.contains("tools:admin"),
        "{line}"
    );
    for r in [MCP, OTHER] {
        assert!(
            list.lines().any(|l| l.split_whitespace().next() == Some(r)),
            "{r} not listed: {list}"
        );
    }

    // A bad resource is refused with one line.
    let out = admin(
        &server,
        &[
            "resources",
            "add",
            "--uri",
            "https://tools.example.com/mcp#frag",
            "--scope",
            "x",
        ],
    );
    assert_one_line_error(&out, &["--uri"]);
    let out = admin(
        &server,
        &[
            "resources",
            "add",
            "--uri",
            "https://t2.example.com/mcp",
            "--scope",
            "a",
            "--default-scope",
            "b",
        ],
    );
    assert_one_line_error(&out, &["--default-scopes"]);

    // The server issues tokens for it (after a restart: tenants are cached).
    server.restart().await;
    let (status, json) =
        client_credentials(&server, SERVICE_CLIENT, SERVICE_SECRET, canonical).await;
    assert_eq!(status, 200, "{json}");
    let claims = jwt_claims(json["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], canonical);
    assert_eq!(claims["scope"], "tools:run");
}

async fn tenants_add_and_list(db: Db) {
    let server = Server::start(db).await;
    let out = admin(
        &server,
        &["tenants", "add", "acme", "--display-name", "Acme Inc"],
    );
    assert_success(&out);
    let list = assert_success(&admin(&server, &["tenants", "list"]));
    let ids: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(ids.contains(&"acme"), "{list}");
    assert!(ids.contains(&"default"), "{list}");
    assert!(list.contains("Acme Inc"), "{list}");

    // The running server serves the new tenant under its own issuer, with
    // its own keys.
    let meta: Value = reqwest::get(server.url("/t/acme/.well-known/oauth-authorization-server"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], format!("{}/t/acme", server.base));
    let jwks: Value = reqwest::get(server.url("/t/acme/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2), "{jwks}");
    let default_jwks: Value = reqwest::get(server.url("/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for k in jwks["keys"].as_array().unwrap() {
        assert!(
            !default_jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["kid"] == k["kid"]),
            "tenants share a key"
        );
    }

    // Adding it again fails.
    let out = admin(&server, &["tenants", "add", "acme"]);
    assert_one_line_error(&out, &["acme"]);
}

async fn invalid_tenant_id_is_refused(db: Db) {
    let server = Server::start(db).await;
    for id in ["Bad_ID", "-acme", "acme-", "a b", "acme/x", &"a".repeat(64)] {
        let out = admin(&server, &["tenants", "add", "--", id]);
        assert_one_line_error(&out, &["id"]);
    }
    let list = assert_success(&admin(&server, &["tenants", "list"]));
    let ids: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, vec!["default"], "{list}");
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

/// `keys list` as (kid, state) pairs.
fn key_states(server: &Server) -> Vec<(String, String)> {
    let text = assert_success(&admin(server, &["keys", "list"]));
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 3).then(|| (cols[0].to_string(), cols[2].to_string()))
        })
        .collect()
}

fn kid_in_state(states: &[(String, String)], state: &str) -> Vec<String> {
    states
        .iter()
        .filter(|(_, s)| s == state)
        .map(|(k, _)| k.clone())
        .collect()
}

async fn jwks_kids(server: &Server) -> Vec<String> {
    let jwks: Value = reqwest::get(server.url("/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect()
}

async fn signed_token(server: &Server) -> String {
    let (status, json) = client_credentials(server, SERVICE_CLIENT, SERVICE_SECRET, MCP).await;
    assert_eq!(status, 200, "{json}");
    json["access_token"].as_str().unwrap().to_string()
}

fn kid_of(token: &str) -> String {
    jwt_header(token)["kid"].as_str().expect("kid").to_string()
}

async fn keys_rotate_publishes_next_before_signing(db: Db) {
    let mut server = Server::start(db).await;

    let before = key_states(&server);
    let active = kid_in_state(&before, "active");
    let next = kid_in_state(&before, "next");
    assert_eq!(active.len(), 1, "{before:?}");
    assert_eq!(next.len(), 1, "{before:?}");
    let (old_active, old_next) = (active[0].clone(), next[0].clone());

    let published = jwks_kids(&server).await;
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(published.contains(&old_active), "{published:?}");
    assert!(
        published.contains(&old_next),
        "the next key must be published before it signs: {published:?}"
    );
    let old_token = signed_token(&server).await;
    assert_eq!(kid_of(&old_token), old_active);

    let out = admin(&server, &["keys", "rotate"]);
    let text = assert_success(&out);
    assert!(text.contains(&old_next), "{text}");

    server.restart().await;

    let token = signed_token(&server).await;
    assert_eq!(
        kid_of(&token),
        old_next,
        "after rotation the former next key signs"
    );
    let published = jwks_kids(&server).await;
    assert!(
        published.contains(&old_active),
        "the retired key stays published: {published:?}"
    );
    assert!(published.contains(&old_next), "{published:?}");
    let new_next: Vec<&String> = published
        .iter()
        .filter(|k| **k != old_active && **k != old_next)
        .collect();
    assert_eq!(new_next.len(), 1, "a new next key: {published:?}");

    assert_eq!(introspect(&server, &old_token).await["active"], true);
    assert_eq!(introspect(&server, &token).await["active"], true);

    let after = key_states(&server);
    assert_eq!(kid_in_state(&after, "active"), vec![old_next.clone()]);
    assert_eq!(kid_in_state(&after, "retired"), vec![old_active.clone()]);
    assert_eq!(kid_in_state(&after, "next"), vec![new_next[0].clone()]);
}

// ---------------------------------------------------------------------------
// migrate, hash-password
// ---------------------------------------------------------------------------

async fn migrate_is_idempotent(db: Db) {
    let mut server = Server::start(db).await;
    // Some data that must survive.
    let token = signed_token(&server).await;
    for _ in 0..2 {
        let out = admin(&server, &["migrate"]);
        let text = assert_success(&out);
        assert!(text.contains("migrations applied"), "{text}");
    }
    server.restart().await;
    assert_eq!(introspect(&server, &token).await["active"], true);
    signed_token(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_password_reads_stdin() {
    let server = Server::start(Db::Sqlite).await;
    let out = server.cli_with_stdin(&["hash-password"], "s3cret\n");
    let text = assert_success(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let hash = lines[0];
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("s3cret"));

    // Two runs salt differently.
    let again = assert_success(&server.cli_with_stdin(&["hash-password"], "s3cret\n"));
    assert_ne!(again.trim(), hash);

    // The hash is usable: a dev user with it signs in with "s3cret" (and the
    // trailing newline was not part of the password).
    let config = base_config("").replace(PASSWORD_HASH, hash);
    assert!(config.contains(hash));
    let other = Server::start_with(Db::Sqlite, &config).await;
    let p = pkce();
    let url = authorize_url(&other, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let outcome = Browser::new()
        .authorize(&other, &url, USER, "s3cret", true)
        .await;
    assert!(query_param(&outcome.redirect(), "code").is_some());

    // Nothing on stdin: one-line error.
    let out = server.cli_with_stdin(&["hash-password"], "");
    assert_one_line_error(&out, &[]);
}

on_both_databases!(
    clients_add_list_show_delete,
    clients_add_refuses_bad_input,
    resources_add_and_list,
    tenants_add_and_list,
    invalid_tenant_id_is_refused,
    keys_rotate_publishes_next_before_signing,
    migrate_is_idempotent,
);
