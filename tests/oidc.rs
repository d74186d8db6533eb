//! The generic OIDC connector end to end: Gatehouse sends the browser to a
//! real OpenID Connect provider (panva/oidc-provider, tests/upstream), the
//! test plays the user on its development login and consent pages, and the
//! browser comes back to Gatehouse's callback, consent and code. Negative
//! cases are the failures a real provider produces honestly (wrong client
//! secret, cancelled login, provider down or silent) and tampering on our
//! side of the callback. ID-token validation failures that need a provider
//! to misbehave are unit tests in connectors/src/oidc.rs.
//! Every test runs on SQLite and PostgreSQL.

mod common;
use common::upstream::*;
use common::*;

use std::time::{Duration, Instant};

use serde_json::Value;

const CONNECTOR: &str = "corp";
const CONNECTOR_NAME: &str = "Corp SSO";

/// The OIDC connector table for a provider at `issuer`; `extra` lines are
/// added to it.
fn oidc_connector(issuer: &str, extra: &str) -> String {
    format!(
        r#"
[[tenants.connectors]]
id = "{CONNECTOR}"
type = "oidc"
display_name = "{CONNECTOR_NAME}"
issuer = "{issuer}"
client_id = "{UPSTREAM_CLIENT}"
scopes = ["openid", "email", "profile", "groups"]
{extra}
"#
    )
}

fn dev_connector() -> String {
    format!(
        r#"
[[tenants.connectors]]
id = "dev"
type = "dev"
users = [ {{ email = "{USER}", password_hash = "{PASSWORD_HASH}", name = "Ada Admin" }} ]
"#
    )
}

/// A Gatehouse with one OIDC connector and a running provider for it.
async fn start_pair(
    db: Db,
    connector_extra: &str,
    upstream_env: &[(&str, &str)],
) -> (Server, Upstream) {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let extra = if connector_extra.contains("client_secret") {
        connector_extra.to_string()
    } else {
        format!("client_secret = \"{UPSTREAM_SECRET}\"\n{connector_extra}")
    };
    let server = Server::start_with(db, &config(&oidc_connector(&issuer, &extra))).await;
    let upstream = Upstream::start(port, &server.url("/callback/corp"), upstream_env);
    (server, upstream)
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

async fn upstream_login_issues_tokens_with_a_stable_subject(db: Db) {
    let (server, upstream) = start_pair(db, "", &[]).await;

    let first = login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    let access = first["access_token"].as_str().expect("access token");
    let claims = jwt_claims(access);
    assert_eq!(claims["iss"], server.base.as_str());
    assert_eq!(claims["aud"], MCP);
    let sub = claims["sub"].as_str().expect("sub").to_string();
    assert_ne!(
        sub, "alice",
        "the broker subject is its own, not upstream's"
    );

    let info = userinfo(&server, access).await;
    assert_eq!(info["sub"], sub.as_str());
    assert_eq!(info["email"], "alice@corp.example", "{info}");
    assert_eq!(info["email_verified"], true, "{info}");
    assert_eq!(info["name"], "Alice Upstream", "{info}");

    // Another browser, another login: the same person, the same subject.
    let again = login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    let again_sub = jwt_claims(again["access_token"].as_str().expect("token"))["sub"].clone();
    assert_eq!(again_sub, sub.as_str());

    // Somebody else gets another subject, and an unverified email stays so.
    let bob = login_upstream(&server, &upstream, &Browser::new(), "bob").await;
    let bob_access = bob["access_token"].as_str().expect("token");
    assert_ne!(jwt_claims(bob_access)["sub"], sub.as_str());
    let bob_info = userinfo(&server, bob_access).await;
    assert_eq!(bob_info["email"], "bob@corp.example");
    assert_eq!(bob_info["email_verified"], false, "{bob_info}");
}

async fn sso_session_skips_the_provider_on_the_next_authorization(db: Db) {
    let (server, upstream) = start_pair(db, "", &[]).await;
    let browser = Browser::new();
    let first = login_upstream(&server, &upstream, &browser, "alice").await;
    let sub = jwt_claims(first["access_token"].as_str().expect("token"))["sub"].clone();
    // Same browser, consent already given: straight back to the client.
    let p = pkce();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("scope", "openid email profile mcp:read")],
    );
    let code = browser.authorize(&server, &url, "", "", true).await.code();
    let tokens = redeem(&server, &code, &p).await;
    assert_eq!(
        jwt_claims(tokens["access_token"].as_str().expect("token"))["sub"],
        sub
    );
}

async fn claims_come_from_userinfo_when_the_id_token_has_none(db: Db) {
    let (server, upstream) = start_pair(
        db,
        "userinfo = true",
        &[("UPSTREAM_CLAIMS_AT_USERINFO", "1")],
    )
    .await;
    let tokens = login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    let info = userinfo(&server, tokens["access_token"].as_str().expect("token")).await;
    assert_eq!(info["email"], "alice@corp.example", "{info}");
    assert_eq!(info["name"], "Alice Upstream", "{info}");
}

async fn wrong_client_secret_ends_on_an_error_page(db: Db) {
    let (server, upstream) = start_pair(
        db,
        "client_secret = \"not-the-secret-at-all-0123456789\"",
        &[],
    )
    .await;
    let browser = Browser::new();
    let (start, _) = to_upstream(&server, &browser, &[]).await;
    let callback = at_upstream(
        &browser,
        &server,
        &start,
        "alice",
        AtUpstream::SignInAndConsent,
    )
    .await;
    let (status, body) = error_page(back_at_gatehouse(&server, &browser, &callback).await);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Sign-in with Corp SSO failed"), "{body}");
    assert!(body.contains("refused"), "{body}");
    assert!(body.contains("invalid_client"), "{body}");
    assert!(!body.contains("not-the-secret"), "{body}");
    let failures = login_failures(&server).await;
    assert!(
        failures
            .iter()
            .any(|f| f["reason"] == "upstream_refused" && f["connector"] == CONNECTOR),
        "{failures:?}; upstream log: {}",
        upstream.log()
    );
}

async fn cancelling_at_the_provider_ends_on_an_error_page(db: Db) {
    let (server, _upstream) = start_pair(db, "", &[]).await;
    let browser = Browser::new();
    let (start, _) = to_upstream(&server, &browser, &[]).await;
    let callback = at_upstream(&browser, &server, &start, "alice", AtUpstream::Cancel).await;
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("access_denied")
    );
    let (status, body) = error_page(back_at_gatehouse(&server, &browser, &callback).await);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("cancelled"), "{body}");
}

async fn provider_down_ends_on_an_error_page_quickly(db: Db) {
    // Nothing listens on the issuer's port.
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let server = Server::start_with(
        db,
        &config(&oidc_connector(
            &issuer,
            &format!("client_secret = \"{UPSTREAM_SECRET}\"\ntimeout_secs = 5"),
        )),
    )
    .await;
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let started = Instant::now();
    let (status, body) = error_page(Browser::new().authorize(&server, &url, "", "", true).await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("could not be reached"), "{body}");
    let failures = login_failures(&server).await;
    assert!(
        failures
            .iter()
            .any(|f| f["reason"] == "upstream_unreachable"),
        "{failures:?}"
    );
}

async fn silent_provider_ends_on_an_error_page_within_the_timeout(db: Db) {
    // Accepts connections, never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let _hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let server = Server::start_with(
        db,
        &config(&oidc_connector(
            &issuer,
            &format!("client_secret = \"{UPSTREAM_SECRET}\"\ntimeout_secs = 1"),
        )),
    )
    .await;
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let started = Instant::now();
    let (status, body) = error_page(Browser::new().authorize(&server, &url, "", "", true).await);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("1 second"), "{body}");
}

async fn tampered_state_is_refused_and_the_genuine_answer_still_works(db: Db) {
    let (server, upstream) = start_pair(db, "", &[]).await;
    let browser = Browser::new();
    let (start, p) = to_upstream(&server, &browser, &[]).await;
    let callback = at_upstream(
        &browser,
        &server,
        &start,
        "alice",
        AtUpstream::SignInAndConsent,
    )
    .await;
    let state = query_param(&callback, "state").expect("state");
    let tampered = callback.replace(
        &format!("state={state}"),
        &format!("state={}", state.chars().rev().collect::<String>()),
    );
    assert_ne!(tampered, callback);
    let (status, body) = error_page(back_at_gatehouse(&server, &browser, &tampered).await);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("state"), "{body}");

    // Nothing was spent: the genuine answer still completes the sign-in.
    let code = back_at_gatehouse(&server, &browser, &callback).await.code();
    let tokens = redeem(&server, &code, &p).await;
    assert!(tokens["access_token"].is_string(), "{}", upstream.log());
    // And it cannot be replayed.
    let (status, _) = error_page(back_at_gatehouse(&server, &browser, &callback).await);
    assert_eq!(status, 400);
}

async fn callback_without_the_login_cookie_is_refused(db: Db) {
    let (server, _upstream) = start_pair(db, "", &[]).await;
    let browser = Browser::new();
    let (start, _) = to_upstream(&server, &browser, &[]).await;
    let callback = at_upstream(
        &browser,
        &server,
        &start,
        "alice",
        AtUpstream::SignInAndConsent,
    )
    .await;
    // Opened in another browser (no cookies at all).
    let other = Browser::new();
    let (status, body) = error_page(back_at_gatehouse(&server, &other, &callback).await);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("start again"), "{body}");
    // A callback for a connector that does not exist.
    let res = browser
        .http
        .get(server.url("/callback/nope?code=x&state=y"))
        .send()
        .await
        .expect("callback");
    assert_eq!(res.status().as_u16(), 400);
    let body = res.text().await.expect("body");
    assert!(body.contains("no sign-in method"), "{body}");
}

async fn several_connectors_offer_a_choice_or_follow_the_email_domain(db: Db) {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let connectors = format!(
        "{}{}",
        dev_connector(),
        oidc_connector(
            &issuer,
            &format!("client_secret = \"{UPSTREAM_SECRET}\"\ndomains = [\"corp.example\"]"),
        )
    );
    let server = Server::start_with(db, &config(&connectors)).await;
    let upstream = Upstream::start(port, &server.url("/callback/corp"), &[]);

    // No hint: a chooser listing both.
    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let Outcome::Page(200, chooser) = browser.authorize(&server, &url, "", "", true).await else {
        panic!("expected the chooser page");
    };
    assert!(chooser.contains("Development login"), "{chooser}");
    assert!(chooser.contains(CONNECTOR_NAME), "{chooser}");
    // Choosing the provider sends the browser there.
    let corp = link_to(&chooser, CONNECTOR_NAME).expect("corp link");
    let res = browser.http.get(&corp).send().await.expect("choose");
    let start = location(&res);
    assert!(start.starts_with(&issuer), "{start}");
    let callback = at_upstream(
        &browser,
        &server,
        &start,
        "alice",
        AtUpstream::SignInAndConsent,
    )
    .await;
    let code = back_at_gatehouse(&server, &browser, &callback).await.code();
    redeem(&server, &code, &p).await;

    // A hint in the provider's domain goes straight there.
    let (start, _) = to_upstream(
        &server,
        &Browser::new(),
        &[("login_hint", "alice@corp.example")],
    )
    .await;
    assert!(start.starts_with(&issuer), "{start}");
    assert_eq!(
        query_param(&start, "login_hint").as_deref(),
        Some("alice@corp.example"),
        "the hint is passed on to the provider: {start}"
    );

    // A hint in no connector's domain gets the chooser; the password
    // connector chosen there works as before.
    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("login_hint", USER)],
    );
    let Outcome::Page(200, chooser) = browser.authorize(&server, &url, "", "", true).await else {
        panic!("expected the chooser page");
    };
    let dev = link_to(&chooser, "Development login").expect("dev link");
    let res = browser.http.get(&dev).send().await.expect("choose");
    let code = browser
        .follow(&server, res, USER, PASSWORD, true)
        .await
        .code();
    redeem(&server, &code, &p).await;
    drop(upstream);
}

// ---------------------------------------------------------------------------
// An upstream ID token as a token-exchange subject: MCP enterprise-managed
// authorization with the enterprise's own identity provider.
// ---------------------------------------------------------------------------

const AGENT: &str = "enterprise-agent";
const AGENT_SECRET: &str = "enterprise-agent-secret-01";

/// Plays a client of the provider itself (the connector's client, whose
/// secret the test knows): signs `login` in and returns the provider's ID token.
async fn upstream_id_token(server: &Server, issuer: &str, login: &str) -> String {
    let json = upstream_tokens(
        server,
        issuer,
        "/callback/corp",
        login,
        "openid email profile",
        &[],
    )
    .await;
    json["id_token"]
        .as_str()
        .expect("id_token from the provider")
        .to_string()
}

/// The connector lets the agent present the provider's tokens issued to
/// the provider client the tests play (`gatehouse`).
fn agent_mapping() -> String {
    format!("upstream_clients = {{ \"{UPSTREAM_CLIENT}\" = \"{AGENT}\" }}")
}

async fn upstream_id_token_is_exchanged_for_an_id_jag_and_redeemed(db: Db) {
    let (mut server, _upstream) = start_pair(db, &agent_mapping(), &[]).await;
    let issuer = configured_issuer(&server);
    // The enterprise side (default tenant) may issue ID-JAGs for the MCP
    // side (tenant `mcp`), which trusts it.
    let mut cfg = std::fs::read_to_string(&server.config_path).unwrap();
    let base = server.base.clone();
    cfg.push_str(&format!(
        r#"
[[tenants.clients]]
client_id = "{AGENT}"
secret = "{AGENT_SECRET}"
grant_types = ["urn:ietf:params:oauth:grant-type:token-exchange"]

[[tenants.token_exchange]]
clients = ["{AGENT}"]
subject_token_types = ["urn:ietf:params:oauth:token-type:id_token"]
resources = ["{MCP}"]
audiences = ["{base}/t/mcp"]

[[tenants]]
id = "mcp"

[[tenants.resources]]
uri = "https://mcp.example.com/mcp"
scopes = ["mcp:read"]

[[tenants.clients]]
client_id = "{AGENT}"
secret = "{AGENT_SECRET}"
grant_types = ["urn:ietf:params:oauth:grant-type:jwt-bearer"]

[[tenants.trusted_issuers]]
issuer = "{base}"
jwks_uri = "{base}/jwks.json"
"#
    ));
    std::fs::write(&server.config_path, cfg).unwrap();
    server.restart().await;

    let id_token = upstream_id_token(&server, &issuer, "alice").await;
    assert_eq!(
        jwt_claims(&id_token)["iss"],
        issuer,
        "a token of the upstream provider"
    );
    let exchange = |subject: String| {
        let server = &server;
        async move {
            token_request(
                server,
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("subject_token", &subject),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:id_token",
                    ),
                    (
                        "requested_token_type",
                        "urn:ietf:params:oauth:token-type:id-jag",
                    ),
                    ("audience", &format!("{}/t/mcp", server.base)),
                    ("resource", "https://mcp.example.com/mcp"),
                    ("scope", "mcp:read"),
                ],
                Some((AGENT, AGENT_SECRET)),
            )
            .await
        }
    };
    let (status, json) = exchange(id_token.clone()).await;
    assert_eq!(status, 200, "{json}");
    let jag = json["access_token"].as_str().unwrap().to_string();
    let claims = jwt_claims(&jag);
    assert_eq!(
        claims["iss"], server.base,
        "Gatehouse, the enterprise side, issues the ID-JAG"
    );
    assert_eq!(jwt_header(&jag)["typ"], "oauth-id-jag+jwt");
    assert!(
        claims["sub"].is_string() && claims["sub"] != jwt_claims(&id_token)["sub"],
        "a broker subject"
    );

    let redeem = |assertion: String| {
        let server = &server;
        async move {
            let res = reqwest::Client::new()
                .post(server.url("/t/mcp/token"))
                .basic_auth(AGENT, Some(AGENT_SECRET))
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                    ("resource", "https://mcp.example.com/mcp"),
                ])
                .send()
                .await
                .unwrap();
            (
                res.status().as_u16(),
                res.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, tokens) = redeem(jag.clone()).await;
    assert_eq!(status, 200, "{tokens}");
    let access = jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["aud"], "https://mcp.example.com/mcp");
    assert_eq!(access["iss"], format!("{}/t/mcp", server.base));
    let (status, replay) = redeem(jag).await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (400, Some("invalid_grant")),
        "replayed ID-JAG: {replay}"
    );

    // The same upstream ID token exchanged for an access token to this
    // tenant's own MCP server: the user's broker subject, the agent's client.
    let (status, json) = token_request(
        &server,
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", &id_token),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            ),
            ("resource", MCP),
            ("scope", "mcp:read"),
        ],
        Some((AGENT, AGENT_SECRET)),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let access = jwt_claims(json["access_token"].as_str().unwrap());
    assert_eq!(access["aud"], MCP);
    assert_eq!(
        access["sub"], claims["sub"],
        "the same broker subject as in the ID-JAG"
    );
    assert_eq!(access["client_id"], AGENT);
    assert_eq!(access["scope"], "mcp:read");

    // An ID token this tenant neither issued nor can verify upstream is refused.
    let mut forged = id_token.clone();
    forged.push('x');
    let (status, json) = exchange(forged).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_request")),
        "{json}"
    );
    let (status, json) = exchange(format!(
        "{}.{}.sig",
        "eyJhbGciOiJFUzI1NiJ9",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r#"{"iss":"https://unknown.example.com","sub":"x"}"#
        )
    ))
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_request")),
        "unknown upstream issuer: {json}"
    );
}

// ---------------------------------------------------------------------------
// An upstream JWT access token as a token-exchange subject.
// ---------------------------------------------------------------------------

/// The API the provider issues JWT access tokens for, and which the connector
/// lists in `access_token_audiences`.
const UPSTREAM_API: &str = "https://api.corp.example/gatehouse";

/// The issuer in the server's connector table.
fn configured_issuer(server: &Server) -> String {
    let cfg = std::fs::read_to_string(&server.config_path).unwrap();
    let at = cfg.find("issuer = \"").unwrap() + "issuer = \"".len();
    cfg[at..at + cfg[at..].find('"').unwrap()].to_string()
}

/// Lets the agent exchange access tokens for the demo MCP server.
fn allow_agent_access_token_exchange(server: &Server) {
    let mut cfg = std::fs::read_to_string(&server.config_path).unwrap();
    cfg.push_str(&format!(
        r#"
[[tenants.clients]]
client_id = "{AGENT}"
secret = "{AGENT_SECRET}"
grant_types = ["urn:ietf:params:oauth:grant-type:token-exchange"]

[[tenants.token_exchange]]
clients = ["{AGENT}"]
subject_token_types = ["urn:ietf:params:oauth:token-type:access_token"]
resources = ["{MCP}"]
"#
    ));
    std::fs::write(&server.config_path, cfg).unwrap();
}

async fn exchange_access_token(server: &Server, subject: &str) -> (u16, Value) {
    token_request(
        server,
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("resource", MCP),
            ("scope", "mcp:read"),
        ],
        Some((AGENT, AGENT_SECRET)),
    )
    .await
}

async fn upstream_jwt_access_token_is_exchanged_for_a_gatehouse_token(db: Db) {
    let (mut server, _upstream) = start_pair(
        db,
        &format!(
            "access_token_audiences = [\"{UPSTREAM_API}\"]\n{}",
            agent_mapping()
        ),
        &[("UPSTREAM_RESOURCE", UPSTREAM_API)],
    )
    .await;
    allow_agent_access_token_exchange(&server);
    server.restart().await;
    let issuer = configured_issuer(&server);

    let upstream = upstream_tokens(
        &server,
        &issuer,
        "/callback/corp",
        "alice",
        "openid email api:read",
        &[("resource", UPSTREAM_API)],
    )
    .await;
    let upstream_access = upstream["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        jwt_header(&upstream_access)["typ"],
        "at+jwt",
        "the provider issued an RFC 9068 access token"
    );
    assert_eq!(jwt_claims(&upstream_access)["aud"], UPSTREAM_API);
    assert_eq!(jwt_claims(&upstream_access)["iss"], issuer);

    let (status, json) = exchange_access_token(&server, &upstream_access).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        json["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let access = jwt_claims(json["access_token"].as_str().unwrap());
    assert_eq!(access["iss"], server.base.as_str(), "a Gatehouse token");
    assert_eq!(access["aud"], MCP);
    assert_eq!(access["client_id"], AGENT);
    assert_eq!(access["scope"], "mcp:read");
    // The broker subject Gatehouse keeps for alice at this connector: the
    // same one her own login there gets.
    let login = login_upstream(&server, &_upstream, &Browser::new(), "alice").await;
    let own = jwt_claims(login["access_token"].as_str().unwrap());
    assert_eq!(access["sub"], own["sub"], "one broker subject for alice");
    assert_ne!(access["sub"], "alice", "not the upstream subject");

    // The provider's ID token is not an access token, though signed alike.
    let id_token = upstream["id_token"].as_str().unwrap().to_string();
    let (status, json) = exchange_access_token(&server, &id_token).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_request")),
        "an ID token presented as an access token: {json}"
    );
    assert!(
        json["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("access_token_audiences"),
        "{json}"
    );

    // A tampered signature is refused.
    let mut parts: Vec<String> = upstream_access.split('.').map(str::to_string).collect();
    parts[2] = format!("{}AA", &parts[2][..parts[2].len() - 2]);
    let (status, json) = exchange_access_token(&server, &parts.join(".")).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_request")),
        "bad signature: {json}"
    );
    // A token of an issuer that is neither Gatehouse nor a connector.
    let (status, json) = exchange_access_token(
        &server,
        &format!(
            "eyJhbGciOiJSUzI1NiIsInR5cCI6ImF0K2p3dCJ9.{}.c2ln",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                format!(
                    r#"{{"iss":"https://elsewhere.example","sub":"x","aud":"{UPSTREAM_API}"}}"#
                )
            )
        ),
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_request")),
        "unknown upstream issuer: {json}"
    );
}

async fn upstream_access_tokens_are_refused_unless_the_connector_lists_their_audience(db: Db) {
    // The same provider and token, but the connector accepts no access
    // tokens (though it lets the agent present the provider's ID tokens).
    let (mut server, _upstream) =
        start_pair(db, &agent_mapping(), &[("UPSTREAM_RESOURCE", UPSTREAM_API)]).await;
    allow_agent_access_token_exchange(&server);
    server.restart().await;
    let issuer = configured_issuer(&server);
    let upstream = upstream_tokens(
        &server,
        &issuer,
        "/callback/corp",
        "alice",
        "openid api:read",
        &[("resource", UPSTREAM_API)],
    )
    .await;
    let (status, json) =
        exchange_access_token(&server, upstream["access_token"].as_str().unwrap()).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_request")),
        "{json}"
    );
}

// ---------------------------------------------------------------------------
// Upstream session binding: a user disabled at the provider loses access at
// the next re-check of their Gatehouse refresh token.
// ---------------------------------------------------------------------------

async fn refresh(server: &Server, refresh_token: &str) -> (u16, Value) {
    token_request(
        server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", PUBLIC_CLIENT),
        ],
        None,
    )
    .await
}

async fn introspect_active(server: &Server, token: &str) -> bool {
    let res = reqwest::Client::new()
        .post(server.url("/introspect"))
        .basic_auth(SERVICE_CLIENT, Some(SERVICE_SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect");
    let json: Value = res.json().await.expect("json");
    json["active"] == true
}

async fn user_disabled_upstream_loses_access_at_the_next_recheck(db: Db) {
    let (server, upstream) = start_pair(
        db,
        "upstream_check_interval = 60",
        &[("UPSTREAM_REFRESH", "1")],
    )
    .await;
    let tokens = login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    let mut rt = tokens["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_string();

    // Within the interval the provider is not asked.
    let (status, json) = refresh(&server, &rt).await;
    assert_eq!(status, 200, "{json}");
    rt = json["refresh_token"].as_str().unwrap().to_string();

    // After it, the provider is asked and still accepts alice.
    server.advance_clock(61);
    let (status, json) = refresh(&server, &rt).await;
    assert_eq!(status, 200, "re-checked upstream: {json}");
    rt = json["refresh_token"].as_str().unwrap().to_string();
    let access = json["access_token"].as_str().unwrap().to_string();

    // An admin disables alice at the provider.
    let port = configured_issuer(&server)
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/__test/disable/alice"))
        .send()
        .await
        .expect("disable");
    assert_eq!(res.status().as_u16(), 204);

    // Checked less than the interval ago: still served (at most every 60 s).
    let (status, json) = refresh(&server, &rt).await;
    assert_eq!(status, 200, "{json}");
    rt = json["refresh_token"].as_str().unwrap().to_string();

    server.advance_clock(61);
    let (status, json) = refresh(&server, &rt).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_grant")),
        "the provider refused alice: {json}"
    );
    assert!(
        !introspect_active(&server, &access).await,
        "the grant is revoked with its access tokens"
    );
    let (status, _) = refresh(&server, &rt).await;
    assert_eq!(status, 400, "and stays refused");
}

async fn unreadable_upstream_session_means_signing_in_again(db: Db) {
    let (server, upstream) = start_pair(
        db,
        "upstream_check_interval = 60",
        &[("UPSTREAM_REFRESH", "1")],
    )
    .await;
    let tokens = login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    let sub = jwt_claims(tokens["access_token"].as_str().unwrap())["sub"]
        .as_str()
        .unwrap()
        .to_string();
    // The stored session is altered (or was sealed under another KEK).
    let store = gatehouse::store::connect(&server.database_url)
        .await
        .expect("store");
    let stored = store
        .get_upstream_session("default", &sub)
        .await
        .expect("read")
        .expect("an upstream session was kept at sign-in");
    let altered = stored.replace("\"refresh_token\":\"", "\"refresh_token\":\"AAAA");
    store
        .put_upstream_session("default", &sub, Some(&altered))
        .await
        .expect("write");
    server.advance_clock(61);
    let (status, json) = refresh(&server, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_grant")),
        "no 500, and no access without a check: {json}"
    );
}

async fn unreachable_provider_at_recheck_spends_nothing(db: Db) {
    let (server, upstream) = start_pair(
        db,
        "upstream_check_interval = 60\ntimeout_secs = 2",
        &[("UPSTREAM_REFRESH", "1")],
    )
    .await;
    let tokens = login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    let rt = tokens["refresh_token"].as_str().unwrap().to_string();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    drop(upstream);
    server.advance_clock(61);
    let (status, json) = refresh(&server, &rt).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{json}"
    );
    assert!(
        introspect_active(&server, &access).await,
        "an unreachable provider revokes nothing"
    );
}

on_both_databases!(
    upstream_jwt_access_token_is_exchanged_for_a_gatehouse_token,
    upstream_access_tokens_are_refused_unless_the_connector_lists_their_audience,
    user_disabled_upstream_loses_access_at_the_next_recheck,
    unreachable_provider_at_recheck_spends_nothing,
    unreadable_upstream_session_means_signing_in_again,
    upstream_id_token_is_exchanged_for_an_id_jag_and_redeemed,
    upstream_login_issues_tokens_with_a_stable_subject,
    sso_session_skips_the_provider_on_the_next_authorization,
    claims_come_from_userinfo_when_the_id_token_has_none,
    wrong_client_secret_ends_on_an_error_page,
    cancelling_at_the_provider_ends_on_an_error_page,
    provider_down_ends_on_an_error_page_quickly,
    silent_provider_ends_on_an_error_page_within_the_timeout,
    tampered_state_is_refused_and_the_genuine_answer_still_works,
    callback_without_the_login_cookie_is_refused,
    several_connectors_offer_a_choice_or_follow_the_email_domain,
);
