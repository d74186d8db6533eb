//! Gatehouse's web pages in a real browser: headless Chromium (Debian's
//! `chromium` package) driven by `playwright-core` from the node scripts in
//! tests/browser. Each test starts the real binary (SQLite; for the
//! upstream logins also the real `oidc-provider` or SimpleSAMLphp), runs
//! one script with the URLs and credentials in its environment, and checks
//! its exit status and JSON result; the script checks what the pages show
//! (see tests/browser/README.md). Codes the browser brings back are redeemed
//! here at /token, and the tokens' claims checked.
//!
//! Needs Chromium at /usr/bin/chromium (or `CHROMIUM`) and the npm packages
//! of tests/browser (tests/browser/setup.sh; run here when missing).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use common::saml_idp::{self, SSP_PASSWORD};
use common::upstream::{self, Upstream, UPSTREAM_CLIENT, UPSTREAM_SECRET};
use common::*;

/// The scripts' own deadline, and ours a little later.
const SCRIPT_DEADLINE_MS: u64 = 60_000;
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// A public web client (a single-page app) whose redirect host never
/// resolves in the test browser: the script reads the redirect from the
/// navigation.
const APP: &str = "browser-app";
const APP_NAME: &str = "Browser Test App";
const APP_REDIRECT: &str = "https://app.example.com/callback";

const TV: &str = "tv-app";
const TV_NAME: &str = "Living-room TV";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn config() -> String {
    base_config(&format!(
        r#"
[[tenants.clients]]
client_id = "{APP}"
client_name = "{APP_NAME}"
redirect_uris = ["{APP_REDIRECT}"]
grant_types = ["authorization_code", "refresh_token"]
token_endpoint_auth_method = "none"

[[tenants.clients]]
client_id = "{TV}"
client_name = "{TV_NAME}"
token_endpoint_auth_method = "none"
grant_types = ["{DEVICE_GRANT}", "refresh_token"]
"#
    ))
}

// ---------------------------------------------------------------------------
// Running a browser script.
// ---------------------------------------------------------------------------

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Installs playwright-core (tests/browser/setup.sh) when it is missing,
/// and checks Chromium is there.
fn install_browser_suite() {
    install_node_project(&browser_dir(), "playwright-core");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is not at {chromium}: install Debian's chromium package \
         (apt-get install chromium; .ci/run does) or set CHROMIUM"
    );
}

/// One browser at a time: a headless Chromium is heavy and the tests share
/// few cores; scripts waiting on each other must not eat their deadlines.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `tests/browser/<script>` with `env` and Gatehouse's URL; returns its
/// JSON result, or fails the test with its output and the server's log.
async fn run_script(script: &str, server: &Server, env: &[(&str, &str)]) -> Value {
    install_browser_suite();
    let _turn = ONE_BROWSER.lock().await;
    let dir = browser_dir();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script))
        .current_dir(&dir)
        .env("GATEHOUSE_URL", &server.base)
        .env("BROWSER_TIMEOUT_MS", SCRIPT_DEADLINE_MS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start node (is it installed?)");
    let output = match tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.expect("wait for the browser script"),
        Err(_) => panic!(
            "{script} did not finish within {SCRIPT_TIMEOUT:?}\n--- gatehouse ---\n{}",
            server.log()
        ),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stderr}{stdout}\n--- gatehouse ---\n{}",
        output.status,
        server.log()
    );
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("{script} printed no JSON result:\n{stdout}{stderr}"));
    assert_eq!(result["ok"], true, "{script}: {result}");
    println!("{script}: {result}");
    result
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field} in {v}"))
}

/// Redeems a code the browser brought back; returns the access token's claims.
async fn redeem(
    server: &Server,
    client_id: &str,
    redirect_uri: &str,
    code: &str,
    p: &Pkce,
) -> Value {
    let tokens = redeem_code(server, client_id, redirect_uri, code, p).await;
    jwt_claims(text(&tokens, "access_token"))
}

/// The broker subject of the dev connector's user, from a login over HTTP.
async fn dev_user_subject(server: &Server) -> String {
    let tokens = login_public(server, &Browser::new(), "mcp:read").await;
    text(&jwt_claims(text(&tokens, "access_token")), "sub").to_string()
}

fn random_state() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

// ---------------------------------------------------------------------------
// 1. Login form and consent, Allow and Deny.
// ---------------------------------------------------------------------------

/// The web app's authorization request for `mcp:read mcp:write`: PKCE,
/// state and the /authorize URL.
fn app_request(server: &Server) -> (Pkce, String, String) {
    let p = pkce();
    let state = random_state();
    let url = authorize_url(
        server,
        APP,
        APP_REDIRECT,
        &p.challenge,
        &[("scope", "mcp:read mcp:write"), ("state", &state)],
    );
    (p, state, url)
}

/// The authorize.mjs inputs for the web app with `mcp:read mcp:write`.
fn app_flow<'a>(
    url: &'a str,
    decision: &'a str,
    wrong_password: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AUTHORIZE_URL", url),
        ("REDIRECT_URI", APP_REDIRECT),
        ("LOGIN_USER", USER),
        ("LOGIN_PASSWORD", PASSWORD),
        ("WRONG_PASSWORD", wrong_password),
        ("DECISION", decision),
        ("EXPECT_CLIENT_NAME", APP_NAME),
        ("EXPECT_REDIRECT_HOST", "app.example.com"),
        ("EXPECT_SCOPES", "mcp:read mcp:write"),
        ("EXPECT_RESOURCES", MCP),
        ("EXPECT_LOCALHOST_WARNING", "no"),
        ("EXPECT_UNVERIFIED_WARNING", "no"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_consent_in_chromium_redirect_with_a_code_for_the_resource() {
    let server = Server::start_with(Db::Sqlite, &config()).await;
    let (p, state, url) = app_request(&server);
    let out = run_script("authorize.mjs", &server, &app_flow(&url, "allow", "yes")).await;

    assert_eq!(out["login_error"], "Wrong email or password.", "{out}");
    let params = &out["params"];
    assert_eq!(params["state"], state.as_str(), "{out}");
    assert_eq!(params["iss"], server.base.as_str(), "{out}");
    assert!(params.get("error").is_none(), "{out}");
    let claims = redeem(&server, APP, APP_REDIRECT, text(params, "code"), &p).await;
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["client_id"], APP);
    assert_eq!(claims["scope"], "mcp:read mcp:write");
    assert_eq!(claims["sub"], dev_user_subject(&server).await.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_on_the_consent_page_in_chromium_redirects_with_access_denied() {
    let server = Server::start_with(Db::Sqlite, &config()).await;
    let (_, state, url) = app_request(&server);
    let out = run_script("authorize.mjs", &server, &app_flow(&url, "deny", "no")).await;
    let params = &out["params"];
    assert_eq!(params["error"], "access_denied", "{out}");
    assert_eq!(params["state"], state.as_str(), "{out}");
    assert!(params.get("code").is_none(), "{out}");
}

// ---------------------------------------------------------------------------
// 2. A loopback redirect URI: the localhost warning.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_page_in_chromium_warns_about_a_loopback_redirect() {
    let server = Server::start_with(Db::Sqlite, &config()).await;
    // A native app registers itself (RFC 7591) with a loopback redirect.
    let res = reqwest::Client::new()
        .post(server.url("/register"))
        .json(&serde_json::json!({
            "client_name": "Loopback CLI",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status().as_u16(), 201);
    let registered: Value = res.json().await.expect("json");
    let client_id = text(&registered, "client_id");

    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    let p = pkce();
    let state = random_state();
    let url = authorize_url(
        &server,
        client_id,
        &redirect,
        &p.challenge,
        &[("state", &state)],
    );
    let out = run_script(
        "authorize.mjs",
        &server,
        &[
            ("AUTHORIZE_URL", &url),
            ("REDIRECT_URI", &redirect),
            ("LOGIN_USER", USER),
            ("LOGIN_PASSWORD", PASSWORD),
            ("WRONG_PASSWORD", "no"),
            ("DECISION", "allow"),
            ("EXPECT_CLIENT_NAME", "Loopback CLI"),
            ("EXPECT_REDIRECT_HOST", "127.0.0.1"),
            ("EXPECT_SCOPES", "mcp:read"),
            ("EXPECT_RESOURCES", MCP),
            ("EXPECT_LOCALHOST_WARNING", "yes"),
            ("EXPECT_UNVERIFIED_WARNING", "yes"),
        ],
    )
    .await;
    assert_eq!(out["consent"]["localhost_warning"], true, "{out}");
    assert_eq!(out["params"]["state"], state.as_str(), "{out}");
    let claims = redeem(
        &server,
        client_id,
        &redirect,
        text(&out["params"], "code"),
        &p,
    )
    .await;
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["client_id"], client_id);
}

// ---------------------------------------------------------------------------
// 3. The device grant's pages.
// ---------------------------------------------------------------------------

async fn poll_device(server: &Server, device_code: &str) -> (u16, Value) {
    token_request(
        server,
        &[
            ("grant_type", DEVICE_GRANT),
            ("device_code", device_code),
            ("client_id", TV),
        ],
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_pages_in_chromium_connect_the_device() {
    let server = Server::start_with(Db::Sqlite, &config()).await;
    let res = reqwest::Client::new()
        .post(server.url("/device_authorization"))
        .form(&[("client_id", TV), ("resource", MCP), ("scope", "mcp:read")])
        .send()
        .await
        .expect("device authorization");
    assert_eq!(res.status().as_u16(), 200);
    let start: Value = res.json().await.expect("json");
    let device_code = text(&start, "device_code");
    let user_code = text(&start, "user_code");
    let (status, pending) = poll_device(&server, device_code).await;
    assert_eq!(
        (status, &pending["error"]),
        (400, &Value::from("authorization_pending"))
    );

    // Well formed, from the code alphabet, and not this device's code.
    let wrong = if user_code == "BCDF-GHJK" {
        "BCDF-GHJL"
    } else {
        "BCDF-GHJK"
    };
    let out = run_script(
        "device.mjs",
        &server,
        &[
            ("VERIFICATION_URI", text(&start, "verification_uri")),
            (
                "VERIFICATION_URI_COMPLETE",
                text(&start, "verification_uri_complete"),
            ),
            ("USER_CODE", user_code),
            ("WRONG_CODE", wrong),
            ("LOGIN_USER", USER),
            ("LOGIN_PASSWORD", PASSWORD),
            ("EXPECT_CLIENT_NAME", TV_NAME),
            ("EXPECT_SCOPES", "mcp:read"),
            ("EXPECT_RESOURCES", MCP),
        ],
    )
    .await;
    assert_eq!(out["consent"]["device_code"], user_code, "{out}");

    server.advance_clock(5);
    let (status, tokens) = poll_device(&server, device_code).await;
    assert_eq!(status, 200, "{tokens}");
    let claims = jwt_claims(text(&tokens, "access_token"));
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["client_id"], TV);
    assert_eq!(claims["sub"], dev_user_subject(&server).await.as_str());
}

// ---------------------------------------------------------------------------
// 4. Login at an upstream OpenID provider, cross-site.
// ---------------------------------------------------------------------------

/// A login of the public client through an upstream provider's pages:
/// runs `script` (with `env`, the provider's inputs) for an /authorize
/// request with PKCE, a state and a loopback redirect URI; the script
/// checks Gatehouse's consent page, this the state and issuer that came
/// back. Returns the script's result, the redirect URI and the PKCE pair
/// for redeeming the code.
async fn upstream_login(
    server: &Server,
    script: &str,
    env: &[(&str, &str)],
) -> (Value, String, Pkce) {
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    let p = pkce();
    let state = random_state();
    let scopes = "openid email profile mcp:read";
    let url = authorize_url(
        server,
        PUBLIC_CLIENT,
        &redirect,
        &p.challenge,
        &[("scope", scopes), ("state", &state)],
    );
    let mut inputs = vec![
        ("AUTHORIZE_URL", url.as_str()),
        ("REDIRECT_URI", redirect.as_str()),
        ("EXPECT_CLIENT_NAME", "Demo public client"),
        ("EXPECT_SCOPES", scopes),
        ("EXPECT_RESOURCES", MCP),
    ];
    inputs.extend_from_slice(env);
    let out = run_script(script, server, &inputs).await;
    assert_eq!(out["params"]["state"], state.as_str(), "{out}");
    assert_eq!(out["params"]["iss"], server.base.as_str(), "{out}");
    (out, redirect, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_login_in_chromium_through_the_providers_pages_cross_site() {
    // The provider on `localhost`, Gatehouse on 127.0.0.1: two sites.
    let port = free_port();
    let issuer = format!("http://localhost:{port}");
    let connector = format!(
        r#"
[[tenants.connectors]]
id = "corp"
type = "oidc"
display_name = "Corp SSO"
issuer = "{issuer}"
client_id = "{UPSTREAM_CLIENT}"
client_secret = "{UPSTREAM_SECRET}"
scopes = ["openid", "email", "profile"]
"#
    );
    let server = Server::start_with(Db::Sqlite, &upstream::config(&connector)).await;
    let provider = Upstream::start(
        port,
        &server.url("/callback/corp"),
        &[("UPSTREAM_HOST", "localhost")],
    );

    let (out, redirect, p) = upstream_login(
        &server,
        "upstream.mjs",
        &[("UPSTREAM_URL", &issuer), ("UPSTREAM_LOGIN", "alice")],
    )
    .await;
    // The flow cookie crossed the provider and back with SameSite=Lax.
    let cookies = out["cookies"].as_array().expect("cookies");
    assert!(
        cookies
            .iter()
            .any(|c| c["name"] == "gh_flow" && c["sameSite"] == "Lax" && c["httpOnly"] == true),
        "{out}"
    );

    let claims = redeem(
        &server,
        PUBLIC_CLIENT,
        &redirect,
        text(&out["params"], "code"),
        &p,
    )
    .await;
    assert_eq!(claims["aud"], MCP);
    let sub = text(&claims, "sub");
    assert_ne!(sub, "alice", "the broker subject is its own");
    // The same upstream user logging in over HTTP gets the same subject,
    // and the user's claims are the provider's.
    let again = upstream::login_upstream(&server, &provider, &Browser::new(), "alice").await;
    let again_access = text(&again, "access_token");
    assert_eq!(jwt_claims(again_access)["sub"], sub);
    let info = upstream::userinfo(&server, again_access).await;
    assert_eq!(info["email"], "alice@corp.example", "{info}");
    assert_eq!(info["name"], "Alice Upstream", "{info}");
}

// ---------------------------------------------------------------------------
// 5. SAML login at SimpleSAMLphp: the IdP's cross-site POST.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saml_login_through_simplesamlphp_in_chromium_survives_the_cross_site_post() {
    // The IdP on `localhost`, Gatehouse on 127.0.0.1: the IdP's page posts
    // the response cross-site, and Chromium withholds the Lax cookies.
    let (server, idp) = saml_idp::start_with_simplesamlphp(Db::Sqlite, "localhost").await;
    let (out, redirect, p) = upstream_login(
        &server,
        "saml.mjs",
        &[
            ("IDP_URL", &idp.base),
            ("ACS_URL", &saml_idp::acs(&server)),
            ("IDP_USER", "alice"),
            ("IDP_PASSWORD", SSP_PASSWORD),
        ],
    )
    .await;
    // The IdP's POST came without the login cookie and got the re-post
    // page, Gatehouse's re-post came with it (the script checks the
    // details).
    let posts = out["acs_posts"].as_array().expect("acs_posts");
    assert_eq!(posts.len(), 2, "{out}");
    let carried = |i: usize| {
        posts[i]["cookies"]
            .as_array()
            .expect("cookies")
            .contains(&Value::from("gh_login"))
    };
    assert!(!carried(0) && carried(1), "{out}");
    assert_eq!(posts[0]["fetch_site"], "cross-site", "{out}");
    assert_eq!(posts[1]["fetch_site"], "same-origin", "{out}");

    // The code is the SAML user's: redeemed with the verifier, its token
    // and userinfo carry the IdP's attributes as mapped.
    let tokens = redeem_code(
        &server,
        PUBLIC_CLIENT,
        &redirect,
        text(&out["params"], "code"),
        &p,
    )
    .await;
    let access = text(&tokens, "access_token");
    let claims = jwt_claims(access);
    assert_eq!(claims["iss"], server.base.as_str());
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["client_id"], PUBLIC_CLIENT);
    let sub = text(&claims, "sub");
    assert_ne!(sub, "alice", "the broker subject is its own");
    let info = upstream::userinfo(&server, access).await;
    assert_eq!(info["sub"], sub, "{info}");
    assert_eq!(info["email"], "alice@saml.example", "{info}");
    assert_eq!(info["name"], "Alice SAML", "{info}");
}

// ---------------------------------------------------------------------------
// 6. The error page.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_redirect_uri_shows_the_error_page_in_chromium_with_nothing_external() {
    let server = Server::start_with(Db::Sqlite, &config()).await;
    let evil = "https://app.example.com/steal";
    let p = pkce();
    let url = authorize_url(&server, APP, evil, &p.challenge, &[]);
    let out = run_script(
        "error_page.mjs",
        &server,
        &[
            ("AUTHORIZE_URL", &url),
            ("REDIRECT_URI", evil),
            ("EXPECT_ERROR_CODE", "invalid_request"),
            (
                "EXPECT_MESSAGE",
                "redirect_uri does not match any URI registered for this client",
            ),
        ],
    )
    .await;
    assert_eq!(out["status"], 400, "{out}");
    let requests = out["requests"].as_array().expect("requests");
    assert!(!requests.is_empty(), "{out}");
    for r in requests {
        assert!(
            text(r, "url").starts_with(&server.base),
            "a request left Gatehouse: {r}"
        );
    }
}

// ---------------------------------------------------------------------------
// 7. The login and consent pages refuse framing.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_consent_pages_refuse_framing_in_chromium() {
    let server = Server::start_with(Db::Sqlite, &config()).await;
    let p = pkce();
    let login = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let consent = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("state", "framed")],
    );
    let out = run_script(
        "framing.mjs",
        &server,
        &[
            ("LOGIN_AUTHORIZE_URL", &login),
            ("CONSENT_AUTHORIZE_URL", &consent),
            ("LOGIN_USER", USER),
            ("LOGIN_PASSWORD", PASSWORD),
        ],
    )
    .await;
    for page in ["login", "consent"] {
        assert_eq!(out[page]["status"], 200, "{out}");
        assert_eq!(out[page]["shown"], false, "{out}");
        assert_eq!(out[page]["x_frame_options"], "DENY", "{out}");
        assert!(
            text(&out[page], "content_security_policy").contains("frame-ancestors 'none'"),
            "{out}"
        );
    }
}
