//! Security rules of the authorization server, one test per rule. Each test
//! drives the real binary over HTTP and fails if the rule is broken.

mod common;
use common::*;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------

/// An /authorize request for the public client that must end in an error
/// redirect back to `REDIRECT`: returns the redirect URL.
async fn expect_error_redirect(server: &Server, extra: &[(&str, &str)], error: &str) -> String {
    let p = pkce();
    let url = authorize_url(server, PUBLIC_CLIENT, REDIRECT, &p.challenge, extra);
    let to = match Browser::new()
        .authorize(server, &url, USER, PASSWORD, true)
        .await
    {
        Outcome::Redirect(to) => to,
        Outcome::Page(status, body) => {
            panic!("{extra:?}: expected an error redirect, got page {status}: {body}")
        }
    };
    assert!(
        to.starts_with(REDIRECT),
        "{extra:?}: redirected to {to}, not the client"
    );
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some(error),
        "{extra:?}: {to}"
    );
    assert!(
        query_param(&to, "error_description").is_some(),
        "{extra:?}: no error_description in {to}"
    );
    assert_eq!(query_param(&to, "code"), None, "{extra:?}: code in {to}");
    assert_eq!(
        query_param(&to, "state").as_deref(),
        Some("xyz-state"),
        "{extra:?}: {to}"
    );
    assert_eq!(
        query_param(&to, "iss").as_deref(),
        Some(server.base.as_str()),
        "{extra:?}: {to}"
    );
    to
}

/// An /authorize request that must end on an error page (400), never a
/// redirect to the client.
async fn expect_error_page(server: &Server, url: &str) -> String {
    match Browser::new()
        .authorize(server, url, USER, PASSWORD, true)
        .await
    {
        Outcome::Page(status, body) => {
            assert_eq!(status, 400, "{url}: {body}");
            assert!(
                body.contains("id=\"error-code\""),
                "{url}: not the error page: {body}"
            );
            body
        }
        Outcome::Redirect(to) => panic!("{url}: expected an error page, got a redirect to {to}"),
    }
}

/// A code for the public client (PKCE S256, resource MCP, scope mcp:read).
async fn public_code(server: &Server, browser: &Browser) -> (String, Pkce) {
    let p = pkce();
    let url = authorize_url(server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let code = browser
        .authorize(server, &url, USER, PASSWORD, true)
        .await
        .code();
    (code, p)
}

async fn redeem_public(server: &Server, code: &str, verifier: &str) -> (u16, Value) {
    token_request(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", PUBLIC_CLIENT),
            ("code_verifier", verifier),
            ("resource", MCP),
        ],
        None,
    )
    .await
}

fn assert_token_error(status: u16, json: &Value, code: &str) {
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"], code, "{json}");
    assert!(json.get("access_token").is_none(), "{json}");
}

fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

fn has_session_cookie(res: &reqwest::Response) -> bool {
    set_cookies(res).iter().any(|c| c.contains("gh_session"))
}

/// Starts an authorization in `browser` and returns the login page
/// (its HTML) after following the redirect to /login.
async fn open_login_page(server: &Server, browser: &Browser, url: &str) -> String {
    let res = browser.http.get(url).send().await.expect("authorize");
    assert_eq!(res.status().as_u16(), 303, "expected a redirect to /login");
    let to = location(&res);
    assert!(to.starts_with(&server.url("/login")), "redirected to {to}");
    let res = browser.http.get(&to).send().await.expect("login page");
    assert_eq!(res.status().as_u16(), 200);
    let html = res.text().await.expect("body");
    assert!(
        html.contains("name=\"password\""),
        "not the login page: {html}"
    );
    html
}

async fn post_login(
    server: &Server,
    browser: &Browser,
    form: &[(&str, &str)],
) -> reqwest::Response {
    browser
        .http
        .post(server.url("/login"))
        .form(form)
        .send()
        .await
        .expect("post login")
}

/// Signs in through the login form and returns the consent page HTML.
async fn open_consent_page(server: &Server, browser: &Browser, url: &str) -> String {
    let login = open_login_page(server, browser, url).await;
    let pending = hidden_field(&login, "pending").expect("pending");
    let csrf = hidden_field(&login, "csrf").expect("csrf");
    let res = post_login(
        server,
        browser,
        &[
            ("pending", &pending),
            ("csrf", &csrf),
            ("username", USER),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(res.status().as_u16(), 200);
    let html = res.text().await.expect("body");
    assert!(
        html.contains("name=\"decision\""),
        "not the consent page: {html}"
    );
    html
}

async fn post_consent(
    server: &Server,
    browser: &Browser,
    form: &[(&str, &str)],
) -> reqwest::Response {
    browser
        .http
        .post(server.url("/consent"))
        .form(form)
        .send()
        .await
        .expect("post consent")
}

// ---------------------------------------------------------------------------
// PKCE
// ---------------------------------------------------------------------------

async fn plain_pkce_is_refused(db: Db) {
    let server = Server::start(db).await;
    expect_error_redirect(
        &server,
        &[("code_challenge_method", "plain")],
        "invalid_request",
    )
    .await;
}

async fn missing_code_challenge_is_refused(db: Db) {
    let server = Server::start(db).await;
    expect_error_redirect(&server, &[("code_challenge", "")], "invalid_request").await;
}

async fn missing_challenge_method_is_refused(db: Db) {
    let server = Server::start(db).await;
    // Without a method the challenge would be `plain` (RFC 7636 §4.3).
    expect_error_redirect(&server, &[("code_challenge_method", "")], "invalid_request").await;
}

async fn wrong_code_verifier_is_refused(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let (code, _) = public_code(&server, &browser).await;
    // Well-formed (43+ unreserved characters) but not the right one.
    let other = pkce();
    let (status, json) = redeem_public(&server, &code, &other.verifier).await;
    assert_token_error(status, &json, "invalid_grant");
}

async fn missing_code_verifier_is_refused(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let (code, _) = public_code(&server, &browser).await;
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", PUBLIC_CLIENT),
            ("resource", MCP),
        ],
        None,
    )
    .await;
    assert_eq!(status, 400, "{json}");
    assert!(
        json["error"] == "invalid_grant" || json["error"] == "invalid_request",
        "{json}"
    );
    assert!(json.get("access_token").is_none(), "{json}");
}

// ---------------------------------------------------------------------------
// Authorization codes
// ---------------------------------------------------------------------------

async fn code_replay_fails_and_revokes_issued_tokens(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let (code, p) = public_code(&server, &browser).await;
    let (status, first) = redeem_public(&server, &code, &p.verifier).await;
    assert_eq!(status, 200, "{first}");
    let access = first["access_token"].as_str().expect("access_token");
    let refresh = first["refresh_token"].as_str().expect("refresh_token");
    assert_eq!(introspect(&server, access).await["active"], true);

    let (status, again) = redeem_public(&server, &code, &p.verifier).await;
    assert_token_error(status, &again, "invalid_grant");

    assert_eq!(
        introspect(&server, access).await["active"],
        false,
        "the access token from a replayed code must be revoked"
    );
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", PUBLIC_CLIENT),
        ],
        None,
    )
    .await;
    assert_token_error(status, &json, "invalid_grant");
}

/// A redemption that fails a check still spends the code (design notes):
/// the right verifier afterwards gets nothing, and the failed attempt
/// stored no tokens.
async fn a_failed_redemption_spends_the_code(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let (code, p) = public_code(&server, &browser).await;
    let (status, json) = redeem_public(&server, &code, &pkce().verifier).await;
    assert_token_error(status, &json, "invalid_grant");
    let (status, json) = redeem_public(&server, &code, &p.verifier).await;
    assert_token_error(status, &json, "invalid_grant");
}

/// A user revoked between the sign-in and the code's redemption (an admin,
/// or the upstream IdP's sign-out) gets no tokens from that code.
async fn a_code_of_a_revoked_user_yields_no_tokens(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let first = login_public(&server, &browser, "mcp:read").await;
    let sub = jwt_claims(first["access_token"].as_str().expect("access_token"))["sub"]
        .as_str()
        .expect("sub")
        .to_string();
    let (code, p) = public_code(&server, &Browser::new()).await;
    let out = server.cli(&["users", "revoke", &sub]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, json) = redeem_public(&server, &code, &p.verifier).await;
    assert_token_error(status, &json, "invalid_grant");
}

async fn code_issued_to_another_client_is_refused(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let (code, p) = public_code(&server, &browser).await;
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &p.verifier),
            ("resource", MCP),
        ],
        Some((WEB_CLIENT, WEB_SECRET)),
    )
    .await;
    assert_token_error(status, &json, "invalid_grant");
}

async fn expired_code_is_refused(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let (code, p) = public_code(&server, &browser).await;
    server.advance_clock(61); // code_ttl = 60
    let (status, json) = redeem_public(&server, &code, &p.verifier).await;
    assert_token_error(status, &json, "invalid_grant");
}

// ---------------------------------------------------------------------------
// Redirect URIs
// ---------------------------------------------------------------------------

async fn redirect_uri_must_match_exactly(db: Db) {
    let server = Server::start(db).await;
    let p = pkce();

    // Control: the registered URI itself works.
    let url = authorize_url(&server, WEB_CLIENT, WEB_REDIRECT, &p.challenge, &[]);
    let to = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .redirect();
    assert!(to.starts_with(&format!("{WEB_REDIRECT}?")), "{to}");
    assert!(query_param(&to, "code").is_some(), "{to}");

    for variant in [
        "https://app.example.com/callback/x",
        "https://app.example.com/callback/",
        "https://app.example.com/callback?a=1",
        "http://app.example.com/callback",
        "https://evil.example.com/callback",
        "https://app.example.com:8443/callback",
        "https://app.example.com/callback#fragment",
        "https://APP.example.com/callback",
    ] {
        let url = authorize_url(&server, WEB_CLIENT, variant, &p.challenge, &[]);
        expect_error_page(&server, &url).await;
    }

    // Loopback redirect URIs of a native client: any port, nothing else.
    let browser = Browser::new();
    for allowed in [
        "http://127.0.0.1:5000/callback",
        "http://localhost:7000/callback",
    ] {
        let url = authorize_url(&server, PUBLIC_CLIENT, allowed, &p.challenge, &[]);
        let to = browser
            .authorize(&server, &url, USER, PASSWORD, true)
            .await
            .redirect();
        assert!(to.starts_with(&format!("{allowed}?")), "{allowed}: {to}");
        assert!(query_param(&to, "code").is_some(), "{allowed}: {to}");
    }
    for refused in [
        "http://127.0.0.1:5000/callback/x",
        "http://127.0.0.2:5000/callback",
        "https://127.0.0.1/callback",
        "http://localhost.example.com:5000/callback",
    ] {
        let url = authorize_url(&server, PUBLIC_CLIENT, refused, &p.challenge, &[]);
        expect_error_page(&server, &url).await;
    }
}

async fn redirect_uri_at_token_must_match_authorization(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    // Another port (which /authorize would accept for a loopback URI) and
    // another path: at the token endpoint only the exact URI used matches.
    for other in [
        "http://127.0.0.1:53683/callback",
        "http://127.0.0.1:53682/other",
    ] {
        let (code, p) = public_code(&server, &browser).await;
        let (status, json) = token_request(
            &server,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", other),
                ("client_id", PUBLIC_CLIENT),
                ("code_verifier", &p.verifier),
                ("resource", MCP),
            ],
            None,
        )
        .await;
        assert_token_error(status, &json, "invalid_grant");
    }
}

async fn unknown_client_gets_error_page_not_redirect(db: Db) {
    let server = Server::start(db).await;
    let p = pkce();
    let url = authorize_url(&server, "no-such-client", REDIRECT, &p.challenge, &[]);
    let body = expect_error_page(&server, &url).await;
    assert!(body.contains("invalid_request"), "{body}");
    // Also without any redirect_uri.
    let url = authorize_url(
        &server,
        "no-such-client",
        REDIRECT,
        &p.challenge,
        &[("redirect_uri", "")],
    );
    expect_error_page(&server, &url).await;
}

// ---------------------------------------------------------------------------
// Scope and resource
// ---------------------------------------------------------------------------

async fn widened_scope_is_refused(db: Db) {
    let server = Server::start(db).await;
    expect_error_redirect(&server, &[("scope", "mcp:admin")], "invalid_scope").await;
    expect_error_redirect(&server, &[("scope", "mcp:read mcp:admin")], "invalid_scope").await;
    // A scope of another resource than the one requested.
    expect_error_redirect(&server, &[("scope", "other:read")], "invalid_scope").await;
}

async fn foreign_resource_is_refused(db: Db) {
    let server = Server::start(db).await;
    expect_error_redirect(
        &server,
        &[("resource", "https://evil.example.com/mcp")],
        "invalid_target",
    )
    .await;
}

async fn resource_is_compared_in_canonical_form(db: Db) {
    let server = Server::start(db).await;
    let p = pkce();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("resource", "HTTP://127.0.0.1:8765/mcp")],
    );
    let code = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .code();
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", PUBLIC_CLIENT),
            ("code_verifier", &p.verifier),
            ("resource", "HTTP://127.0.0.1:8765/mcp"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let claims = jwt_claims(json["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], MCP, "{claims}");
}

async fn missing_resource_is_refused_without_tenant_default(db: Db) {
    let server = Server::start(db).await;
    expect_error_redirect(&server, &[("resource", "")], "invalid_target").await;
}

async fn missing_resource_uses_tenant_default(db: Db) {
    let config = base_config("").replacen(
        "display_name = \"Test\"\n",
        &format!("display_name = \"Test\"\ndefault_resource = \"{MCP}\"\n"),
        1,
    );
    assert!(config.contains("default_resource"), "{config}");
    let server = Server::start_with(db, &config).await;
    let p = pkce();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("resource", "")],
    );
    assert!(!url.contains("resource="), "{url}");
    let code = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .code();
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", PUBLIC_CLIENT),
            ("code_verifier", &p.verifier),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let claims = jwt_claims(json["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], MCP, "{claims}");
}

async fn missing_scope_gets_default_scopes(db: Db) {
    let server = Server::start(db).await;
    let p = pkce();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("scope", "")],
    );
    assert!(!url.contains("scope="), "{url}");
    let code = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .code();
    let (status, json) = redeem_public(&server, &code, &p.verifier).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["scope"], "mcp:read", "{json}");
    let claims = jwt_claims(json["access_token"].as_str().unwrap());
    assert_eq!(claims["scope"], "mcp:read", "{claims}");
}

// ---------------------------------------------------------------------------
// state and iss (RFC 9207)
// ---------------------------------------------------------------------------

async fn issuer_of(server: &Server) -> String {
    let meta: Value = reqwest::get(server.url("/.well-known/oauth-authorization-server"))
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    meta["issuer"].as_str().expect("issuer").to_string()
}

async fn state_and_iss_returned_on_success(db: Db) {
    let server = Server::start(db).await;
    let issuer = issuer_of(&server).await;
    let p = pkce();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("state", "s-Ω 1&2=3")],
    );
    let to = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .redirect();
    assert!(to.starts_with(&format!("{REDIRECT}?")), "{to}");
    assert!(query_param(&to, "code").is_some(), "{to}");
    assert_eq!(query_param(&to, "state").as_deref(), Some("s-Ω 1&2=3"));
    assert_eq!(query_param(&to, "iss"), Some(issuer));
}

async fn iss_on_every_error_redirect(db: Db) {
    let server = Server::start(db).await;
    let issuer = issuer_of(&server).await;
    assert_eq!(issuer, server.base);
    // expect_error_redirect checks state and iss on each.
    for (extra, error) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("scope", "mcp:admin")], "invalid_scope"),
        (
            vec![("resource", "https://evil.example.com/mcp")],
            "invalid_target",
        ),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (
            vec![("request", "eyJhbGciOiJub25lIn0.e30.")],
            "request_not_supported",
        ),
        (vec![("prompt", "none")], "login_required"),
        (vec![("prompt", "bogus")], "invalid_request"),
    ] {
        expect_error_redirect(&server, &extra, error).await;
    }

    // The user denying consent.
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let to = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, false)
        .await
        .redirect();
    assert_eq!(query_param(&to, "error").as_deref(), Some("access_denied"));
    assert_eq!(query_param(&to, "state").as_deref(), Some("xyz-state"));
    assert_eq!(query_param(&to, "iss").as_deref(), Some(issuer.as_str()));

    // Without state, iss is still there.
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("state", ""), ("scope", "mcp:admin")],
    );
    let to = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .redirect();
    assert_eq!(query_param(&to, "error").as_deref(), Some("invalid_scope"));
    assert_eq!(query_param(&to, "state"), None);
    assert_eq!(query_param(&to, "iss").as_deref(), Some(issuer.as_str()));
}

// ---------------------------------------------------------------------------
// Audience
// ---------------------------------------------------------------------------

async fn access_token_audience_is_bound_to_resource(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let tokens = login_public(&server, &browser, "mcp:read").await;
    let access = tokens["access_token"].as_str().unwrap();
    let claims = jwt_claims(access);
    assert_eq!(claims["aud"], Value::String(MCP.into()), "{claims}");
    assert_eq!(introspect(&server, access).await["aud"], MCP);

    // Authorized for MCP only: a token for another resource is refused.
    let (code, p) = public_code(&server, &browser).await;
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", PUBLIC_CLIENT),
            ("code_verifier", &p.verifier),
            ("resource", OTHER),
        ],
        None,
    )
    .await;
    assert_token_error(status, &json, "invalid_target");

    // Nor can a refresh token obtained for MCP be turned into one for OTHER.
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", PUBLIC_CLIENT),
            ("resource", OTHER),
        ],
        None,
    )
    .await;
    assert_token_error(status, &json, "invalid_target");
}

// ---------------------------------------------------------------------------
// JWT verification
// ---------------------------------------------------------------------------

fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

async fn jwt_with_altered_signature_is_inactive(db: Db) {
    let server = Server::start(db).await;
    let token = service_token(&server).await;
    let other = service_token(&server).await;
    assert_eq!(introspect(&server, &token).await["active"], true);

    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let sig = parts[2];

    // One character of the signature changed (in the middle, so it is not
    // just base64 padding bits).
    let mid = sig.len() / 2;
    let flipped = if &sig[mid..mid + 1] == "A" { "B" } else { "A" };
    let altered = format!(
        "{}.{}.{}{}{}",
        parts[0],
        parts[1],
        &sig[..mid],
        flipped,
        &sig[mid + 1..]
    );
    assert_eq!(introspect(&server, &altered).await["active"], false);

    // A valid signature of another token by the same key.
    let spliced = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        other.split('.').nth(2).unwrap()
    );
    assert_eq!(introspect(&server, &spliced).await["active"], false);

    // The payload changed under the original signature.
    let mut claims = jwt_claims(&token);
    claims["scope"] = Value::String("mcp:read mcp:write".into());
    let tampered = format!("{}.{}.{}", parts[0], b64_json(&claims), sig);
    assert_eq!(introspect(&server, &tampered).await["active"], false);

    // No signature at all.
    let stripped = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(introspect(&server, &stripped).await["active"], false);
}

async fn jwt_signed_by_unknown_key_is_inactive(db: Db) {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use p256::pkcs8::EncodePrivateKey;

    let server = Server::start(db).await;
    let token = service_token(&server).await;
    assert_eq!(introspect(&server, &token).await["active"], true);
    let real_header = jwt_header(&token);
    assert_eq!(real_header["alg"], "ES256");
    let real_kid = real_header["kid"].as_str().expect("kid").to_string();
    let claims = jwt_claims(&token);

    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = secret.to_pkcs8_der().expect("pkcs8");
    let key = EncodingKey::from_ec_der(der.as_bytes());

    // Same kid as the server's signing key, and a kid the server never had.
    for kid in [real_kid.clone(), "attacker-key".to_string()] {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        header.typ = Some("at+jwt".into());
        let forged = jsonwebtoken::encode(&header, &claims, &key).expect("sign");
        let res = introspect(&server, &forged).await;
        assert_eq!(res["active"], false, "kid {kid}: {res}");
    }
}

async fn alg_none_token_is_inactive(db: Db) {
    let server = Server::start(db).await;
    let token = service_token(&server).await;
    let kid = jwt_header(&token)["kid"].clone();
    let claims = jwt_claims(&token);
    let sig = token.split('.').nth(2).unwrap().to_string();
    for alg in ["none", "None", "NONE"] {
        let header = serde_json::json!({"alg": alg, "typ": "at+jwt", "kid": kid});
        let unsigned = format!("{}.{}.", b64_json(&header), b64_json(&claims));
        assert_eq!(
            introspect(&server, &unsigned).await["active"],
            false,
            "alg {alg}"
        );
        let with_sig = format!("{}.{}.{}", b64_json(&header), b64_json(&claims), sig);
        assert_eq!(
            introspect(&server, &with_sig).await["active"],
            false,
            "alg {alg} with the original signature"
        );
    }
    // Without kid too.
    let header = serde_json::json!({"alg": "none", "typ": "at+jwt"});
    let unsigned = format!("{}.{}.", b64_json(&header), b64_json(&claims));
    assert_eq!(introspect(&server, &unsigned).await["active"], false);
}

// ---------------------------------------------------------------------------
// Client authentication
// ---------------------------------------------------------------------------

async fn client_credentials(server: &Server, id: &str, secret: &str) -> (u16, Value) {
    token_request(
        server,
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        Some((id, secret)),
    )
    .await
}

async fn client_secret_compared_correctly(db: Db) {
    let server = Server::start(db).await;
    // Control: the right secret works.
    let (status, json) = client_credentials(&server, SERVICE_CLIENT, SERVICE_SECRET).await;
    assert_eq!(status, 200, "{json}");
    let prefix = &SERVICE_SECRET[..SERVICE_SECRET.len() - 1];
    let longer = format!("{SERVICE_SECRET}x");
    let upper = SERVICE_SECRET.to_uppercase();
    for wrong in [prefix, "demo", "", longer.as_str(), upper.as_str()] {
        let (status, json) = client_credentials(&server, SERVICE_CLIENT, wrong).await;
        assert_eq!(status, 401, "secret {wrong:?}: {json}");
        assert_eq!(json["error"], "invalid_client", "secret {wrong:?}: {json}");
        assert!(json.get("access_token").is_none());
    }
    // client_secret_post with a prefix too.
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("resource", MCP),
            ("client_id", SERVICE_CLIENT),
            ("client_secret", prefix),
        ],
        None,
    )
    .await;
    assert_eq!(status, 401, "{json}");
    assert_eq!(json["error"], "invalid_client", "{json}");
    // Another client's secret.
    let (status, json) = client_credentials(&server, SERVICE_CLIENT, WEB_SECRET).await;
    assert_eq!(status, 401, "{json}");
}

async fn public_client_cannot_use_client_credentials(db: Db) {
    let server = Server::start(db).await;
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", PUBLIC_CLIENT),
            ("resource", MCP),
        ],
        None,
    )
    .await;
    assert!(
        (status == 400 && json["error"] == "unauthorized_client")
            || (status == 401 && json["error"] == "invalid_client"),
        "{status} {json}"
    );
    assert!(json.get("access_token").is_none(), "{json}");
}

async fn confidential_client_without_auth_is_refused(db: Db) {
    let server = Server::start(db).await;
    // client_credentials naming the client but not authenticating.
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", SERVICE_CLIENT),
            ("resource", MCP),
        ],
        None,
    )
    .await;
    assert_eq!(status, 401, "{json}");
    assert_eq!(json["error"], "invalid_client", "{json}");

    // A real code of the confidential web app, redeemed without its secret.
    let p = pkce();
    let url = authorize_url(&server, WEB_CLIENT, WEB_REDIRECT, &p.challenge, &[]);
    let code = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .code();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", WEB_REDIRECT),
        ("client_id", WEB_CLIENT),
        ("code_verifier", p.verifier.as_str()),
        ("resource", MCP),
    ];
    let (status, json) = token_request(&server, &form, None).await;
    assert_eq!(status, 401, "{json}");
    assert_eq!(json["error"], "invalid_client", "{json}");
    assert!(json.get("access_token").is_none());
    // Control: with its secret the same code works (it was not spent).
    let (status, json) = token_request(&server, &form, Some((WEB_CLIENT, WEB_SECRET))).await;
    assert_eq!(status, 200, "{json}");
}

// ---------------------------------------------------------------------------
// Login and consent forms
// ---------------------------------------------------------------------------

async fn login_form_rejects_missing_csrf(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let login = open_login_page(&server, &browser, &url).await;
    let pending = hidden_field(&login, "pending").expect("pending");
    let csrf = hidden_field(&login, "csrf").expect("csrf");

    // No csrf field at all.
    let res = post_login(
        &server,
        &browser,
        &[
            ("pending", &pending),
            ("username", USER),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(!has_session_cookie(&res), "{:?}", set_cookies(&res));
    assert!(location(&res).is_empty());

    // A wrong csrf value, and an empty one.
    let wrong = format!("{}x", &csrf[..csrf.len() - 1]);
    for bad in [wrong.as_str(), ""] {
        let res = post_login(
            &server,
            &browser,
            &[
                ("pending", &pending),
                ("csrf", bad),
                ("username", USER),
                ("password", PASSWORD),
            ],
        )
        .await;
        assert_eq!(res.status().as_u16(), 400, "csrf {bad:?}");
        assert!(!has_session_cookie(&res), "csrf {bad:?}");
        assert!(location(&res).is_empty(), "csrf {bad:?}");
        let body = res.text().await.unwrap();
        assert!(!body.contains("name=\"decision\""), "csrf {bad:?}: {body}");
    }
}

async fn login_form_from_another_browser_is_refused(db: Db) {
    let server = Server::start(db).await;
    let a = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let login = open_login_page(&server, &a, &url).await;
    let pending = hidden_field(&login, "pending").expect("pending");
    let csrf = hidden_field(&login, "csrf").expect("csrf");
    let form = [
        ("pending", pending.as_str()),
        ("csrf", csrf.as_str()),
        ("username", USER),
        ("password", PASSWORD),
    ];

    // Browser B without any cookie.
    let b = Browser::new();
    let res = post_login(&server, &b, &form).await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(!has_session_cookie(&res), "{:?}", set_cookies(&res));
    assert!(location(&res).is_empty(), "{}", location(&res));
    let body = res.text().await.unwrap();
    assert!(body.contains("id=\"error-code\""), "{body}");
    assert!(!body.contains("name=\"decision\""), "{body}");

    // Browser C with a flow cookie of its own (it started another sign-in).
    let c = Browser::new();
    let q = pkce();
    let own = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &q.challenge, &[]);
    open_login_page(&server, &c, &own).await;
    let res = post_login(&server, &c, &form).await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(!has_session_cookie(&res), "{:?}", set_cookies(&res));
    assert!(location(&res).is_empty(), "{}", location(&res));

    // Control: browser A itself can still complete it.
    let res = post_login(&server, &a, &form).await;
    assert_eq!(res.status().as_u16(), 200);
    assert!(has_session_cookie(&res));
}

async fn consent_form_rejects_wrong_csrf(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let consent = open_consent_page(&server, &browser, &url).await;
    let pending = hidden_field(&consent, "pending").expect("pending");
    let csrf = hidden_field(&consent, "csrf").expect("csrf");
    let wrong = format!("{}x", &csrf[..csrf.len() - 1]);
    for bad in [wrong.as_str(), ""] {
        let res = post_consent(
            &server,
            &browser,
            &[("pending", &pending), ("csrf", bad), ("decision", "allow")],
        )
        .await;
        assert_eq!(res.status().as_u16(), 400, "csrf {bad:?}");
        assert!(
            location(&res).is_empty(),
            "csrf {bad:?}: {}",
            location(&res)
        );
    }
    // Missing csrf.
    let res = post_consent(
        &server,
        &browser,
        &[("pending", &pending), ("decision", "allow")],
    )
    .await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(location(&res).is_empty());
    // Control: the right token completes it.
    let res = post_consent(
        &server,
        &browser,
        &[
            ("pending", &pending),
            ("csrf", &csrf),
            ("decision", "allow"),
        ],
    )
    .await;
    assert_eq!(res.status().as_u16(), 303);
    assert!(query_param(&location(&res), "code").is_some());
}

async fn wrong_password_shows_login_error(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let login = open_login_page(&server, &browser, &url).await;
    let pending = hidden_field(&login, "pending").expect("pending");
    let csrf = hidden_field(&login, "csrf").expect("csrf");
    for (user, password) in [(USER, "wrong-password"), ("nobody@example.com", PASSWORD)] {
        let res = post_login(
            &server,
            &browser,
            &[
                ("pending", &pending),
                ("csrf", &csrf),
                ("username", user),
                ("password", password),
            ],
        )
        .await;
        assert_eq!(res.status().as_u16(), 401, "{user}");
        assert!(!has_session_cookie(&res), "{user}: {:?}", set_cookies(&res));
        assert!(location(&res).is_empty());
        let body = res.text().await.unwrap();
        assert!(body.contains("id=\"login-error\""), "{body}");
        assert!(body.contains("name=\"password\""), "{body}");
        assert_eq!(hidden_field(&body, "pending").as_deref(), Some(&*pending));
        assert!(!body.contains("name=\"decision\""), "{body}");
    }
    // Still not signed in: a new authorization asks for the login again.
    let res = browser.http.get(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 303);
    assert!(location(&res).starts_with(&server.url("/login")));
}

async fn pending_authorization_is_single_use(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let consent = open_consent_page(&server, &browser, &url).await;
    let pending = hidden_field(&consent, "pending").expect("pending");
    let csrf = hidden_field(&consent, "csrf").expect("csrf");
    let form = [
        ("pending", pending.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", "allow"),
    ];
    let first = post_consent(&server, &browser, &form).await;
    assert_eq!(first.status().as_u16(), 303);
    assert!(query_param(&location(&first), "code").is_some());

    let second = post_consent(&server, &browser, &form).await;
    assert_eq!(second.status().as_u16(), 400);
    assert!(location(&second).is_empty(), "{}", location(&second));
    let body = second.text().await.unwrap();
    assert!(body.contains("id=\"error-code\""), "{body}");
    assert!(!body.contains("code="), "{body}");

    // Nor can the login form of that pending authorization be replayed.
    let res = post_login(
        &server,
        &browser,
        &[
            ("pending", &pending),
            ("csrf", &csrf),
            ("username", USER),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(location(&res).is_empty());
}

on_both_databases!(
    plain_pkce_is_refused,
    missing_code_challenge_is_refused,
    missing_challenge_method_is_refused,
    wrong_code_verifier_is_refused,
    missing_code_verifier_is_refused,
    code_replay_fails_and_revokes_issued_tokens,
    a_failed_redemption_spends_the_code,
    a_code_of_a_revoked_user_yields_no_tokens,
    code_issued_to_another_client_is_refused,
    expired_code_is_refused,
    redirect_uri_must_match_exactly,
    redirect_uri_at_token_must_match_authorization,
    unknown_client_gets_error_page_not_redirect,
    widened_scope_is_refused,
    foreign_resource_is_refused,
    resource_is_compared_in_canonical_form,
    missing_resource_is_refused_without_tenant_default,
    missing_resource_uses_tenant_default,
    missing_scope_gets_default_scopes,
    state_and_iss_returned_on_success,
    iss_on_every_error_redirect,
    access_token_audience_is_bound_to_resource,
    jwt_with_altered_signature_is_inactive,
    jwt_signed_by_unknown_key_is_inactive,
    alg_none_token_is_inactive,
    client_secret_compared_correctly,
    public_client_cannot_use_client_credentials,
    confidential_client_without_auth_is_refused,
    login_form_rejects_missing_csrf,
    login_form_from_another_browser_is_refused,
    consent_form_rejects_wrong_csrf,
    wrong_password_shows_login_error,
    pending_authorization_is_single_use,
);
