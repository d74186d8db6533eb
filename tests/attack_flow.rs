//! Attacks on the browser flow and on input handling (issue 9, items 2, 3,
//! 8 and the first half of 9), against the real binary on SQLite and
//! PostgreSQL:
//!
//! * an authorization server must not be an open redirector (RFC 9700
//!   §4.11.2): errors for clients whose redirect URIs nobody vouched for
//!   (self-registered, metadata documents) are shown on a page until the
//!   user signed in and approved the client;
//! * remembered consent is per (client, resource, scope);
//! * a login form naming a connector that takes no password is a 400 page;
//! * NUL and other control characters never reach the database: each entry
//!   point answers a 4xx in its protocol's format, and the log shows no
//!   storage failure.

mod common;
use common::*;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const EVIL: &str = "https://evil.example/cb";
/// A second MCP server that also has `mcp:read` and `mcp:write`.
const B: &str = "https://b.example.com/mcp";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn config() -> String {
    base_config(&format!(
        r#"
[[tenants.resources]]
uri = "{B}"
name = "Server B"
scopes = ["mcp:read", "mcp:write"]

[tenants.client_id_metadata]
allow_loopback = true
"#
    ))
}

/// Registers a public client (RFC 7591) whose redirect URI is `redirect`.
async fn register_client(server: &Server, redirect: &str) -> String {
    let res = http()
        .post(server.url("/register"))
        .json(&json!({
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
            "client_name": "Looks Legit",
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status().as_u16(), 201);
    let json: Value = res.json().await.expect("json");
    json["client_id"].as_str().expect("client_id").to_string()
}

/// Serves one Client ID Metadata Document at any path on loopback; returns
/// its URL (the client id).
async fn serve_document(redirect: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://127.0.0.1:{}/client.json",
        listener.local_addr().expect("addr").port()
    );
    let doc = json!({
        "client_id": url,
        "client_name": "Metadata Client",
        "redirect_uris": [redirect],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
    .to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let doc = doc.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{doc}",
                    doc.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    url
}

/// The ways an authorization request can be wrong after the client and its
/// redirect URI are known, with the error each one is.
/// What is wrong, the parameters that make it so, and the error it is.
type Broken = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static str,
);

fn broken_requests() -> Vec<Broken> {
    vec![
        (
            "bogus response_type",
            vec![("response_type", "bogus")],
            "unsupported_response_type",
        ),
        (
            "missing PKCE",
            vec![("code_challenge", ""), ("code_challenge_method", "")],
            "invalid_request",
        ),
        (
            "plain PKCE",
            vec![("code_challenge_method", "plain")],
            "invalid_request",
        ),
        ("bad scope", vec![("scope", "mcp:admin")], "invalid_scope"),
        (
            "bad resource",
            vec![("resource", "https://nowhere.example/mcp")],
            "invalid_target",
        ),
        (
            "unsupported prompt",
            vec![("prompt", "bogus")],
            "invalid_request",
        ),
        (
            "request object",
            vec![("request", "eyJhbGciOiJub25lIn0.e30.")],
            "request_not_supported",
        ),
        (
            "request_uri",
            vec![("request_uri", "urn:x")],
            "request_uri_not_supported",
        ),
        (
            "response_mode",
            vec![("response_mode", "form_post")],
            "invalid_request",
        ),
        ("bad max_age", vec![("max_age", "-1")], "invalid_request"),
        (
            "prompt=none without a session",
            vec![("prompt", "none")],
            "login_required",
        ),
    ]
}

/// GET /authorize once; the status, the Location (if any) and the body.
async fn authorize_once(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    let res = client.get(url).send().await.expect("authorize");
    let status = res.status().as_u16();
    let to = location(&res);
    let body = res.text().await.unwrap_or_default();
    (status, to, body)
}

fn assert_error_page(what: &str, (status, to, body): &(u16, String, String), error: &str) {
    assert_eq!(
        *status, 400,
        "{what}: expected the error page, got {status} {to}"
    );
    assert!(to.is_empty(), "{what}: redirected to {to}");
    assert!(body.contains("<html"), "{what}: not an HTML page: {body}");
    assert!(
        body.contains(error),
        "{what}: page should name {error}: {body}"
    );
}

async fn assert_pages_for(server: &Server, client_id: &str, redirect: &str, who: &str) {
    let p = pkce();
    for (what, extra, error) in broken_requests() {
        let url = authorize_url(server, client_id, redirect, &p.challenge, &extra);
        let got = authorize_once(&http(), &url).await;
        assert_error_page(&format!("{who}, {what}"), &got, error);
    }
}

// ---------------------------------------------------------------------------
// Item 2: no open redirector
// ---------------------------------------------------------------------------

async fn self_registered_client_errors_before_sign_in_show_a_page(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let client_id = register_client(&server, EVIL).await;
    assert_pages_for(&server, &client_id, EVIL, "DCR client").await;
}

async fn metadata_document_client_errors_before_sign_in_show_a_page(db: Db) {
    let client_id = serve_document(EVIL).await;
    let server = Server::start_with(db, &config()).await;
    assert_pages_for(&server, &client_id, EVIL, "metadata document client").await;
}

async fn admin_configured_client_errors_are_redirected(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let p = pkce();
    for (what, extra, error) in broken_requests() {
        let url = authorize_url(&server, WEB_CLIENT, WEB_REDIRECT, &p.challenge, &extra);
        let (status, to, _) = authorize_once(&http(), &url).await;
        assert_eq!(status, 303, "{what}: {to}");
        assert!(to.starts_with(WEB_REDIRECT), "{what}: {to}");
        assert_eq!(query_param(&to, "error").as_deref(), Some(error), "{what}");
        assert_eq!(query_param(&to, "state").as_deref(), Some("xyz-state"));
        assert_eq!(
            query_param(&to, "iss").as_deref(),
            Some(server.base.as_str())
        );
    }
}

/// A signed-in user who follows an attacker's broken link for a client it
/// never approved is not sent away either.
async fn self_registered_client_errors_show_a_page_to_a_signed_in_user(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let browser = Browser::new();
    login_public(&server, &browser, "mcp:read").await;
    let client_id = register_client(&server, EVIL).await;
    let p = pkce();
    for (what, extra, error) in broken_requests() {
        if error == "login_required" {
            continue;
        }
        let url = authorize_url(&server, &client_id, EVIL, &p.challenge, &extra);
        let got = authorize_once(&browser.http, &url).await;
        assert_error_page(&format!("signed in, {what}"), &got, error);
    }
}

/// prompt=none for a client the user never approved: a page, even with a
/// session (RFC 9700 §4.11.2, attack 3).
async fn prompt_none_for_an_unapproved_self_registered_client_shows_a_page(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let browser = Browser::new();
    login_public(&server, &browser, "mcp:read").await;
    let client_id = register_client(&server, EVIL).await;
    let p = pkce();
    let url = authorize_url(
        &server,
        &client_id,
        EVIL,
        &p.challenge,
        &[("prompt", "none")],
    );
    let got = authorize_once(&browser.http, &url).await;
    assert_error_page("prompt=none, unapproved", &got, "consent_required");
}

/// Once the user approved the client, its redirect URI is the user's
/// choice: prompt=none answers there (a code, or consent_required).
async fn prompt_none_after_the_user_approved_the_client_redirects(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let client_id = register_client(&server, REDIRECT).await;
    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, &client_id, REDIRECT, &p.challenge, &[]);
    browser
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .code();

    let url = authorize_url(
        &server,
        &client_id,
        REDIRECT,
        &p.challenge,
        &[("prompt", "none")],
    );
    let (status, to, _) = authorize_once(&browser.http, &url).await;
    assert_eq!(status, 303, "{to}");
    assert!(query_param(&to, "code").is_some(), "{to}");

    let url = authorize_url(
        &server,
        &client_id,
        REDIRECT,
        &p.challenge,
        &[("prompt", "none"), ("scope", "mcp:read mcp:write")],
    );
    let (status, to, _) = authorize_once(&browser.http, &url).await;
    assert_eq!(status, 303, "{to}");
    assert!(to.starts_with(REDIRECT), "{to}");
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("consent_required")
    );
}

/// After signing in and seeing the consent page, a user who denies is sent
/// back to the client with access_denied: that is the client's answer.
async fn denying_a_self_registered_client_redirects_access_denied(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let client_id = register_client(&server, REDIRECT).await;
    let p = pkce();
    let url = authorize_url(&server, &client_id, REDIRECT, &p.challenge, &[]);
    let to = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, false)
        .await
        .redirect();
    assert!(to.starts_with(REDIRECT), "{to}");
    assert_eq!(query_param(&to, "error").as_deref(), Some("access_denied"));
}

// ---------------------------------------------------------------------------
// Item 3: consent per (client, resource, scope)
// ---------------------------------------------------------------------------

/// Signs in once and allows `scope` on `resource` for the public client.
async fn allow(server: &Server, browser: &Browser, resource: &str, scope: &str) -> Value {
    let p = pkce();
    let url = authorize_url(
        server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("resource", resource), ("scope", scope)],
    );
    let code = browser
        .authorize(server, &url, USER, PASSWORD, true)
        .await
        .code();
    let (status, json) = token_request(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", PUBLIC_CLIENT),
            ("code_verifier", &p.verifier),
            ("resource", resource),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{json}");
    json
}

async fn silent(server: &Server, browser: &Browser, resource: &str, scope: &str) -> String {
    let p = pkce();
    let url = authorize_url(
        server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("resource", resource), ("scope", scope), ("prompt", "none")],
    );
    let (status, to, body) = authorize_once(&browser.http, &url).await;
    assert_eq!(status, 303, "{body}");
    to
}

async fn consent_to_write_on_b_does_not_allow_write_on_a(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let browser = Browser::new();
    allow(&server, &browser, MCP, "mcp:read").await;
    allow(&server, &browser, B, "mcp:write").await;

    let to = silent(&server, &browser, MCP, "mcp:write").await;
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("consent_required"),
        "{to}"
    );
    assert!(query_param(&to, "code").is_none(), "{to}");
    // Asked interactively, mcp:write is new for A.
    let p = pkce();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("scope", "mcp:read mcp:write")],
    );
    let res = browser.http.get(&url).send().await.expect("authorize");
    let page = res.text().await.expect("page");
    let list_start = page.find("id=\"scopes\"").expect("scope list");
    let list = &page[list_start..list_start + page[list_start..].find("</ul>").expect("end")];
    assert!(list.contains("mcp:write"), "{list}");
    assert!(!list.contains("mcp:read"), "{list}");
}

async fn consent_to_a_does_not_allow_b(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let browser = Browser::new();
    allow(&server, &browser, MCP, "mcp:read").await;
    let to = silent(&server, &browser, B, "mcp:read").await;
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("consent_required"),
        "{to}"
    );
}

async fn prompt_none_within_the_consented_resource_and_scope_returns_a_code(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let browser = Browser::new();
    allow(&server, &browser, MCP, "mcp:read mcp:write").await;
    allow(&server, &browser, B, "mcp:read").await;
    let to = silent(&server, &browser, MCP, "mcp:write").await;
    assert!(query_param(&to, "code").is_some(), "{to}");
    let to = silent(&server, &browser, B, "mcp:read").await;
    assert!(query_param(&to, "code").is_some(), "{to}");
}

/// Runs SQL against the server's database.
fn sql(server: &Server, statement: &str) {
    let out = match server.db {
        Db::Sqlite => std::process::Command::new("sqlite3")
            .arg(
                server
                    .database_url
                    .strip_prefix("sqlite://")
                    .expect("sqlite path"),
            )
            .arg(statement)
            .output(),
        Db::Postgres => std::process::Command::new("psql")
            .args([
                "-d",
                &server.database_url,
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                statement,
            ])
            .output(),
    }
    .expect("run sql");
    assert!(
        out.status.success(),
        "{statement}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Consents stored in the earlier flat format said which scopes and which
/// resources, not which scope went with which resource: with several
/// resources they grant nothing; with one, their scopes for it.
async fn consent_in_the_old_format_grants_no_mixed_resources(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let browser = Browser::new();
    let tokens = allow(&server, &browser, MCP, "mcp:read").await;
    let subject = jwt_claims(tokens["access_token"].as_str().expect("at"))["sub"]
        .as_str()
        .expect("sub")
        .to_string();
    let set_old = |items: &str| {
        sql(
            &server,
            &format!(
                "UPDATE consents SET scopes = '{items}' WHERE subject = '{subject}' AND client_id = '{PUBLIC_CLIENT}'"
            ),
        )
    };
    set_old(&format!(
        r#"["mcp:read","mcp:write","resource:{MCP}","resource:{B}"]"#
    ));
    for (resource, scope) in [(MCP, "mcp:write"), (MCP, "mcp:read"), (B, "mcp:write")] {
        let to = silent(&server, &browser, resource, scope).await;
        assert_eq!(
            query_param(&to, "error").as_deref(),
            Some("consent_required"),
            "{resource} {scope}: {to}"
        );
    }
    set_old(&format!(r#"["mcp:read","resource:{MCP}"]"#));
    let to = silent(&server, &browser, MCP, "mcp:read").await;
    assert!(query_param(&to, "code").is_some(), "{to}");
    let to = silent(&server, &browser, MCP, "mcp:write").await;
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("consent_required")
    );
}

// ---------------------------------------------------------------------------
// Item 8: a login form for a connector that takes no password
// ---------------------------------------------------------------------------

async fn login_with_a_connector_that_takes_no_password_is_a_400_page(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let res = browser.http.get(&url).send().await.expect("authorize");
    let login = location(&res);
    let page = browser
        .http
        .get(&login)
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("body");
    let pending = hidden_field(&page, "pending").expect("pending");
    let csrf = hidden_field(&page, "csrf").expect("csrf");
    let long = "x".repeat(5000);
    for connector in ["", "unknown", "dev\0", "\0", "dév", "dev ", long.as_str()] {
        let res = browser
            .http
            .post(server.url("/login"))
            .form(&[
                ("pending", pending.as_str()),
                ("csrf", csrf.as_str()),
                ("username", USER),
                ("password", PASSWORD),
                ("connector", connector),
            ])
            .send()
            .await
            .expect("login");
        let status = res.status().as_u16();
        let body = res.text().await.expect("body");
        assert_eq!(status, 400, "connector {connector:?}: {body}");
        assert!(body.contains("<html"), "connector {connector:?}: {body}");
        assert!(body.contains("invalid_request"), "{body}");
    }
    // The form still works with the connector it was shown for.
    let res = browser
        .http
        .post(server.url("/login"))
        .form(&[
            ("pending", pending.as_str()),
            ("csrf", csrf.as_str()),
            ("username", USER),
            ("password", PASSWORD),
            ("connector", "dev"),
        ])
        .send()
        .await
        .expect("login");
    assert!(res.status().is_success(), "{}", res.status());
}

// ---------------------------------------------------------------------------
// Item 9a: NUL and control characters never reach the database
// ---------------------------------------------------------------------------

fn assert_clean_log(server: &Server, what: &str) {
    let log = server.log();
    assert!(!log.contains("storage failure"), "{what}: {log}");
    assert!(!log.contains("refused by the database"), "{what}: {log}");
}

async fn expect_json(res: reqwest::Response, status: u16, error: &str, what: &str) {
    assert_eq!(res.status().as_u16(), status, "{what}");
    let json: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(json["error"], error, "{what}: {json}");
}

async fn expect_page(res: reqwest::Response, status: u16, what: &str) {
    assert_eq!(res.status().as_u16(), status, "{what}");
    assert!(location(&res).is_empty(), "{what}");
    let body = res.text().await.expect("body");
    assert!(body.contains("<html"), "{what}: {body}");
}

const NUL_ID: &str = "demo-service\0";

async fn nul_in_back_channel_parameters_is_invalid_request(db: Db) {
    let server = Server::start_with(db, &config()).await;
    for path in ["/token", "/introspect", "/revoke", "/device_authorization"] {
        for form in [
            vec![("grant_type", "client_credentials"), ("client_id", NUL_ID)],
            vec![("token", "abc\0"), ("client_id", PUBLIC_CLIENT)],
            vec![
                ("grant_type", "authorization_code"),
                ("code", "\0"),
                ("client_id", PUBLIC_CLIENT),
            ],
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "r\u{1}"),
                ("client_id", PUBLIC_CLIENT),
            ],
            vec![
                ("grant_type", "client_credentials"),
                ("resource", "https://a\0/mcp"),
                ("client_id", PUBLIC_CLIENT),
            ],
        ] {
            let res = http()
                .post(server.url(path))
                .form(&form)
                .send()
                .await
                .expect("post");
            expect_json(res, 400, "invalid_request", &format!("{path} {form:?}")).await;
        }
    }
    assert_clean_log(&server, "back channel");
}

async fn nul_in_basic_credentials_is_invalid_client(db: Db) {
    let server = Server::start_with(db, &config()).await;
    for path in ["/token", "/introspect", "/revoke", "/device_authorization"] {
        for (id, secret) in [
            (NUL_ID, SERVICE_SECRET),
            (SERVICE_CLIENT, "x\0"),
            ("%00", "s"),
        ] {
            let res = http()
                .post(server.url(path))
                .basic_auth(id, Some(secret))
                .form(&[("grant_type", "client_credentials"), ("token", "t")])
                .send()
                .await
                .expect("post");
            expect_json(res, 401, "invalid_client", &format!("{path} {id:?}")).await;
        }
    }
    assert_clean_log(&server, "basic");
}

fn unsigned_jwt(claims: &Value) -> String {
    format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

async fn nul_in_a_client_assertion_is_invalid_client(db: Db) {
    let server = Server::start_with(db, &config()).await;
    // The subject names which client to look up.
    let assertion = unsigned_jwt(&json!({"iss": NUL_ID, "sub": NUL_ID, "aud": server.base}));
    let res = http()
        .post(server.url("/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ])
        .send()
        .await
        .expect("post");
    expect_json(res, 401, "invalid_client", "assertion sub").await;

    // A genuine private_key_jwt client signing a jti with NUL in it.
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::EncodePrivateKey;
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let point = key.public_key().to_encoded_point(false);
    let res = http()
        .post(server.url("/register"))
        .json(&json!({
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [{
                "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
                "x": URL_SAFE_NO_PAD.encode(point.x().expect("x")),
                "y": URL_SAFE_NO_PAD.encode(point.y().expect("y")),
            }]},
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status().as_u16(), 201);
    let client_id = res.json::<Value>().await.expect("json")["client_id"]
        .as_str()
        .expect("id")
        .to_string();
    let der = key.to_pkcs8_der().expect("pkcs8");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let claims = json!({
        "iss": client_id, "sub": client_id, "aud": server.base,
        "jti": "j\0ti", "iat": now, "exp": now + 60,
    });
    let assertion = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
    )
    .expect("sign");
    let res = http()
        .post(server.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "c"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ])
        .send()
        .await
        .expect("post");
    expect_json(res, 401, "invalid_client", "assertion jti").await;
    assert_clean_log(&server, "assertions");
}

async fn nul_in_registration_metadata_is_invalid_client_metadata(db: Db) {
    let server = Server::start_with(db, &config()).await;
    for doc in [
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "client_name": "a\u{0}b"}),
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "software_id": "\u{0}"}),
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "contacts": ["a@b\u{0}"]}),
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "x\u{0}": 1}),
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "extra": {"k": ["\u{7}"]}}),
    ] {
        let res = http()
            .post(server.url("/register"))
            .json(&doc)
            .send()
            .await
            .expect("register");
        expect_json(res, 400, "invalid_client_metadata", &doc.to_string()).await;
    }
    assert_clean_log(&server, "registration");
}

async fn nul_in_paths_names_nothing(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let client_id = register_client(&server, REDIRECT).await;
    for path in [
        "/register/dcr_%00".to_string(),
        format!("/register/{client_id}%00"),
        "/t/%00/token".to_string(),
        "/t/acme%00/authorize".to_string(),
        "/callback/%00".to_string(),
        "/saml/%00/metadata".to_string(),
        "/.well-known/oauth-authorization-server/t/%00".to_string(),
        "/register/%FF".to_string(),
    ] {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
        ] {
            let res = http()
                .request(method.clone(), server.url(&path))
                .bearer_auth("registration-token")
                .json(&json!({}))
                .send()
                .await
                .expect("request");
            expect_json(res, 404, "not_found", &format!("{method} {path}")).await;
        }
    }
    assert_clean_log(&server, "paths");
}

async fn nul_in_browser_parameters_shows_a_page(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let get = |path: &str| http().get(server.url(path)).send();
    expect_page(
        get("/authorize?client_id=%00").await.expect("get"),
        400,
        "authorize",
    )
    .await;
    expect_page(
        get("/authorize?client_id=demo-public&state=%00")
            .await
            .expect("get"),
        400,
        "authorize state",
    )
    .await;
    expect_page(get("/login?pending=%00").await.expect("get"), 400, "login").await;
    let post = |path: &str, form: &[(&str, &str)]| http().post(server.url(path)).form(form).send();
    expect_page(
        post("/authorize", &[("client_id", NUL_ID)])
            .await
            .expect("post"),
        400,
        "authorize post",
    )
    .await;
    for path in ["/login", "/login/email", "/consent"] {
        let res = post(
            path,
            &[
                ("pending", "\0"),
                ("csrf", "\0"),
                ("username", "\0"),
                ("password", "\0"),
                ("email", "a@\0"),
                ("decision", "allow"),
            ],
        )
        .await
        .expect("post");
        assert!(res.status().is_client_error(), "{path}: {}", res.status());
        assert!(res.text().await.expect("body").contains("<html"), "{path}");
    }
    let res = get("/resource-metadata?resource=%00").await.expect("get");
    assert!(res.status().is_client_error(), "resource-metadata");
    assert!(res.json::<Value>().await.expect("json")["error"].is_string());
    assert_clean_log(&server, "browser");
}

on_both_databases!(
    self_registered_client_errors_before_sign_in_show_a_page,
    metadata_document_client_errors_before_sign_in_show_a_page,
    admin_configured_client_errors_are_redirected,
    self_registered_client_errors_show_a_page_to_a_signed_in_user,
    prompt_none_for_an_unapproved_self_registered_client_shows_a_page,
    prompt_none_after_the_user_approved_the_client_redirects,
    denying_a_self_registered_client_redirects_access_denied,
    consent_to_write_on_b_does_not_allow_write_on_a,
    consent_to_a_does_not_allow_b,
    prompt_none_within_the_consented_resource_and_scope_returns_a_code,
    consent_in_the_old_format_grants_no_mixed_resources,
    login_with_a_connector_that_takes_no_password_is_a_400_page,
    nul_in_back_channel_parameters_is_invalid_request,
    nul_in_basic_credentials_is_invalid_client,
    nul_in_a_client_assertion_is_invalid_client,
    nul_in_registration_metadata_is_invalid_client_metadata,
    nul_in_paths_names_nothing,
    nul_in_browser_parameters_shows_a_page,
);
