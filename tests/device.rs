//! RFC 8628 device authorization grant, end to end through the dev login.

mod common;

use common::*;
use serde_json::Value;

const TV: &str = "tv-app";
const GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn config() -> String {
    base_config(&format!(
        r#"
[[tenants.clients]]
client_id = "{TV}"
client_name = "Living-room TV"
token_endpoint_auth_method = "none"
grant_types = ["{GRANT}", "refresh_token"]
"#
    ))
}

async fn start_device(server: &Server, client_id: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(server.url("/device_authorization"))
        .form(&[
            ("client_id", client_id),
            ("resource", MCP),
            ("scope", "mcp:read"),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn poll(server: &Server, client_id: &str, device_code: &str) -> (u16, Value) {
    token_request(
        server,
        &[
            ("grant_type", GRANT),
            ("device_code", device_code),
            ("client_id", client_id),
        ],
        None,
    )
    .await
}

/// The user's side: open the verification page, type the code, sign in, answer consent.
async fn user_enters(server: &Server, browser: &Browser, user_code: &str, allow: bool) -> Outcome {
    let page = browser
        .http
        .get(server.url("/device"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&page, "csrf").expect("csrf on device page");
    let res = browser
        .http
        .post(server.url("/device"))
        .form(&[("csrf", csrf.as_str()), ("user_code", user_code)])
        .send()
        .await
        .unwrap();
    browser.follow(server, res, USER, PASSWORD, allow).await
}

fn error_of(json: &Value) -> &str {
    json["error"].as_str().unwrap_or_default()
}

async fn device_flow_issues_tokens_after_approval(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let (status, start) = start_device(&server, TV).await;
    assert_eq!(status, 200, "{start}");
    let device_code = start["device_code"].as_str().unwrap();
    let user_code = start["user_code"].as_str().unwrap();
    assert_eq!(start["interval"], 5);
    assert_eq!(start["verification_uri"], server.url("/device"));
    assert!(start["verification_uri_complete"]
        .as_str()
        .unwrap()
        .contains(user_code));

    let (status, pending) = poll(&server, TV, device_code).await;
    assert_eq!((status, error_of(&pending)), (400, "authorization_pending"));

    // Lower-case and without the dash: people type codes that way.
    let typed = user_code.replace('-', "").to_lowercase();
    match user_enters(&server, &Browser::new(), &typed, true).await {
        Outcome::Page(200, body) => assert!(body.contains("device-approved"), "{body}"),
        other => panic!("expected the approval page, got {other:?}"),
    }
    server.advance_clock(5);
    let (status, tokens) = poll(&server, TV, device_code).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["refresh_token"].is_string());
    let claims = jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["client_id"], TV);
    assert_eq!(claims["scope"], "mcp:read");

    server.advance_clock(5);
    let (status, again) = poll(&server, TV, device_code).await;
    assert_eq!(
        (status, error_of(&again)),
        (400, "invalid_grant"),
        "the approval is redeemed once"
    );
}

/// A user revoked between approving the device and its next poll (an
/// admin, the upstream IdP's sign-out) gets the device no tokens.
async fn a_device_approved_by_a_revoked_user_gets_no_tokens(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let first = login_public(&server, &Browser::new(), "mcp:read").await;
    let sub = jwt_claims(first["access_token"].as_str().unwrap())["sub"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, start) = start_device(&server, TV).await;
    assert_eq!(status, 200, "{start}");
    let device_code = start["device_code"].as_str().unwrap();
    let user_code = start["user_code"].as_str().unwrap();
    match user_enters(&server, &Browser::new(), user_code, true).await {
        Outcome::Page(200, body) => assert!(body.contains("device-approved"), "{body}"),
        other => panic!("expected the approval page, got {other:?}"),
    }
    let out = server.cli(&["users", "revoke", &sub]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.advance_clock(5);
    let (status, json) = poll(&server, TV, device_code).await;
    assert_eq!((status, error_of(&json)), (400, "invalid_grant"), "{json}");
}

async fn consent_page_shows_the_device_code(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let (_, start) = start_device(&server, TV).await;
    let user_code = start["user_code"].as_str().unwrap();
    let browser = Browser::new();
    // Sign in first so the next step lands straight on the consent page.
    login_public(&server, &browser, "mcp:read").await;
    let page = browser
        .http
        .get(server.url("/device"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&page, "csrf").unwrap();
    let res = browser
        .http
        .post(server.url("/device"))
        .form(&[("csrf", csrf.as_str()), ("user_code", user_code)])
        .send()
        .await
        .unwrap();
    let body = res.text().await.unwrap();
    assert!(
        body.contains("name=\"decision\""),
        "consent is always asked for a device: {body}"
    );
    assert!(
        body.contains(user_code),
        "the page shows the code to compare"
    );
    assert!(body.contains("Living-room TV"));
}

async fn polling_too_fast_gets_slow_down(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let (_, start) = start_device(&server, TV).await;
    let device_code = start["device_code"].as_str().unwrap();
    let (_, first) = poll(&server, TV, device_code).await;
    assert_eq!(error_of(&first), "authorization_pending");
    let (_, second) = poll(&server, TV, device_code).await;
    assert_eq!(error_of(&second), "slow_down");
    // The interval grew to 10 s: 5 s later is still too fast, and each
    // slow_down adds another 5 s (RFC 8628 §3.5), so now it is 15 s.
    server.advance_clock(5);
    let (_, third) = poll(&server, TV, device_code).await;
    assert_eq!(error_of(&third), "slow_down");
    server.advance_clock(15);
    let (_, fourth) = poll(&server, TV, device_code).await;
    assert_eq!(error_of(&fourth), "authorization_pending");
}

async fn expired_device_code_gets_expired_token(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let (_, start) = start_device(&server, TV).await;
    let device_code = start["device_code"].as_str().unwrap();
    server.advance_clock(601);
    let (status, json) = poll(&server, TV, device_code).await;
    assert_eq!((status, error_of(&json)), (400, "expired_token"));
    // And the user can no longer enter the code.
    match user_enters(
        &server,
        &Browser::new(),
        start["user_code"].as_str().unwrap(),
        true,
    )
    .await
    {
        Outcome::Page(400, body) => assert!(body.contains("not valid or has expired")),
        other => panic!("expected the code to be refused, got {other:?}"),
    }
}

async fn denied_device_gets_access_denied(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let (_, start) = start_device(&server, TV).await;
    let device_code = start["device_code"].as_str().unwrap();
    match user_enters(
        &server,
        &Browser::new(),
        start["user_code"].as_str().unwrap(),
        false,
    )
    .await
    {
        Outcome::Page(200, body) => assert!(body.contains("device-denied"), "{body}"),
        other => panic!("expected the denial page, got {other:?}"),
    }
    server.advance_clock(5);
    let (status, json) = poll(&server, TV, device_code).await;
    assert_eq!((status, error_of(&json)), (400, "access_denied"));
}

async fn wrong_user_code_is_refused(db: Db) {
    let server = Server::start_with(db, &config()).await;
    start_device(&server, TV).await;
    match user_enters(&server, &Browser::new(), "BCDF-GHJK", true).await {
        Outcome::Page(400, body) => assert!(body.contains("device-error")),
        other => panic!("expected an error page, got {other:?}"),
    }
}

async fn device_code_of_another_client_is_refused(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let (_, start) = start_device(&server, TV).await;
    let (status, json) = poll(
        &server,
        PUBLIC_CLIENT,
        start["device_code"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        ["invalid_grant", "unauthorized_client"].contains(&error_of(&json)),
        "{json}"
    );
}

async fn client_without_device_grant_is_unauthorized(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let (status, json) = start_device(&server, PUBLIC_CLIENT).await;
    assert_eq!((status, error_of(&json)), (400, "unauthorized_client"));
}

async fn device_form_needs_its_csrf_token(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let (_, start) = start_device(&server, TV).await;
    let browser = Browser::new();
    browser
        .http
        .get(server.url("/device"))
        .send()
        .await
        .unwrap();
    let res = browser
        .http
        .post(server.url("/device"))
        .form(&[
            ("csrf", "forged"),
            ("user_code", start["user_code"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("not submitted from this page"));
}

async fn discovery_advertises_the_device_endpoint(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let meta: Value = reqwest::get(server.url("/.well-known/oauth-authorization-server"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["device_authorization_endpoint"],
        server.url("/device_authorization")
    );
    assert!(meta["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == GRANT));
}

on_both_databases!(
    device_flow_issues_tokens_after_approval,
    a_device_approved_by_a_revoked_user_gets_no_tokens,
    consent_page_shows_the_device_code,
    polling_too_fast_gets_slow_down,
    expired_device_code_gets_expired_token,
    denied_device_gets_access_denied,
    wrong_user_code_is_refused,
    device_code_of_another_client_is_refused,
    client_without_device_grant_is_unauthorized,
    device_form_needs_its_csrf_token,
    discovery_advertises_the_device_endpoint,
);
