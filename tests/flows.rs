//! End-to-end flows against the real binary: OIDC code flow with a real
//! client library, token formats, refresh rotation, introspection,
//! revocation, client authentication, SSO/prompt handling, restarts,
//! discovery and tenant isolation. Every test runs on SQLite and PostgreSQL.

mod common;
use common::*;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------

/// A non-following HTTP client, as the OAuth client libraries want.
fn http_client() -> reqwest::Client {
    reqwest::ClientBuilder::new()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

/// A raw back-channel response: status, headers and JSON body.
struct Raw {
    status: u16,
    headers: HeaderMap,
    json: Value,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// POSTs a form to any URL, optionally with HTTP Basic client credentials.
async fn post_form(url: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Raw {
    let mut req = http_client().post(url).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let res = req.send().await.expect("POST");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Raw {
        status,
        headers,
        json,
    }
}

async fn get_text(url: &str) -> String {
    let res = http_client().get(url).send().await.expect("GET");
    assert_eq!(res.status().as_u16(), 200, "GET {url}");
    res.text().await.expect("body")
}

async fn get_json(url: &str) -> Value {
    let res = http_client().get(url).send().await.expect("GET");
    assert_eq!(res.status().as_u16(), 200, "GET {url}");
    res.json().await.expect("json")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("'{key}' is not a string in {v}"))
}

/// Runs the browser part for the public client; returns (code, verifier).
async fn authorize_code(
    server: &Server,
    browser: &Browser,
    extra: &[(&str, &str)],
) -> (String, String) {
    let p = pkce();
    let url = authorize_url(server, PUBLIC_CLIENT, REDIRECT, &p.challenge, extra);
    let code = browser
        .authorize(server, &url, USER, PASSWORD, true)
        .await
        .code();
    (code, p.verifier)
}

/// Redeems a code for the public client, keeping the raw response.
async fn exchange_code(server: &Server, code: &str, verifier: &str) -> Raw {
    post_form(
        &server.url("/token"),
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

/// Refreshes as the public client; `extra` adds parameters (scope, resource).
async fn refresh(server: &Server, refresh_token: &str, extra: &[(&str, &str)]) -> Raw {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", PUBLIC_CLIENT),
    ];
    form.extend_from_slice(extra);
    post_form(&server.url("/token"), &form, None).await
}

/// Introspects `token` at `endpoint` authenticating as `client`.
async fn introspect_as(endpoint: &str, client: (&str, &str), token: &str) -> Value {
    let raw = post_form(endpoint, &[("token", token)], Some(client)).await;
    assert_eq!(raw.status, 200, "introspection: {}", raw.json);
    raw.json
}

/// Revokes `token` as the public client (which authenticates by id only).
async fn revoke_as_public(server: &Server, token: &str) -> u16 {
    post_form(
        &server.url("/revoke"),
        &[("token", token), ("client_id", PUBLIC_CLIENT)],
        None,
    )
    .await
    .status
}

/// client_credentials for a confidential client authenticating with Basic.
async fn client_credentials(token_endpoint: &str, client: (&str, &str), resource: &str) -> Raw {
    post_form(
        token_endpoint,
        &[("grant_type", "client_credentials"), ("resource", resource)],
        Some(client),
    )
    .await
}

/// The items of the consent page's `#scopes` list.
fn consent_scope_list(html: &str) -> String {
    let start = html
        .find("id=\"scopes\"")
        .unwrap_or_else(|| panic!("no #scopes list in {html}"));
    let end = html[start..].find("</ul>").expect("end of #scopes") + start;
    html[start..end].to_string()
}

fn assert_redirect_error(url: &str, server: &Server, error: &str) {
    assert!(url.starts_with(REDIRECT), "not sent to the client: {url}");
    assert_eq!(
        query_param(url, "error").as_deref(),
        Some(error),
        "redirect: {url}"
    );
    assert_eq!(
        query_param(url, "state").as_deref(),
        Some("xyz-state"),
        "redirect: {url}"
    );
    assert_eq!(
        query_param(url, "iss").as_deref(),
        Some(server.base.as_str()),
        "redirect: {url}"
    );
    assert!(query_param(url, "code").is_none(), "redirect: {url}");
}

// ---------------------------------------------------------------------------
// 1. OpenID Connect code flow with a real client library.
// ---------------------------------------------------------------------------

async fn openid_client_completes_code_flow_with_pkce_and_validates_id_token(db: Db) {
    use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType};
    use openidconnect::{
        AccessTokenHash, AuthenticationFlow, AuthorizationCode, ClientId, CsrfToken, IssuerUrl,
        Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
    };

    let server = Server::start(db).await;
    let http = http_client();
    let issuer = IssuerUrl::new(server.base.clone()).expect("issuer url");
    let metadata = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .expect("OIDC discovery");
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(PUBLIC_CLIENT.to_string()),
        None,
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.to_string()).expect("redirect url"));

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf, nonce) = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("mcp:read".into()))
        .add_extra_param("resource", MCP)
        .set_pkce_challenge(challenge)
        .url();

    let back = Browser::new()
        .authorize(&server, auth_url.as_str(), USER, PASSWORD, true)
        .await
        .redirect();
    assert!(back.starts_with(REDIRECT), "redirect: {back}");
    assert_eq!(
        query_param(&back, "state").as_deref(),
        Some(csrf.secret().as_str())
    );
    assert_eq!(
        query_param(&back, "iss").as_deref(),
        Some(server.base.as_str())
    );
    let code = query_param(&back, "code").expect("code");

    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .expect("token endpoint known")
        .set_pkce_verifier(verifier)
        .add_extra_param("resource", MCP)
        .request_async(&http)
        .await
        .expect("code exchange");

    let id_token = tokens.id_token().expect("an ID token for scope openid");
    let id_verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&id_verifier, &nonce)
        .expect("ID token verifies (signature, issuer, audience, nonce)");
    assert_eq!(claims.issuer().as_str(), server.base);
    assert!(
        claims
            .audiences()
            .iter()
            .any(|a| a.as_str() == PUBLIC_CLIENT),
        "aud: {:?}",
        claims.audiences()
    );
    assert_eq!(claims.nonce().map(|n| n.secret()), Some(nonce.secret()));
    let expected_at_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().expect("alg"),
        id_token.signing_key(&id_verifier).expect("key"),
    )
    .expect("at_hash");
    assert_eq!(claims.access_token_hash(), Some(&expected_at_hash));
    assert!(claims.auth_time().is_some(), "auth_time missing");
    let raw_claims = jwt_claims(&id_token.to_string());
    assert!(
        raw_claims["sid"].as_str().is_some_and(|s| !s.is_empty()),
        "sid missing: {raw_claims}"
    );

    let userinfo: Value = http
        .get(server.url("/userinfo"))
        .bearer_auth(tokens.access_token().secret())
        .send()
        .await
        .expect("userinfo")
        .json()
        .await
        .expect("userinfo json");
    assert_eq!(userinfo["sub"], claims.subject().as_str(), "{userinfo}");
    assert_eq!(userinfo["email"], USER, "{userinfo}");
}

// ---------------------------------------------------------------------------
// 2. RFC 9068 access tokens.
// ---------------------------------------------------------------------------

async fn access_token_is_rfc9068_jwt_signed_with_a_published_es256_key(db: Db) {
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};

    let server = Server::start(db).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let at = s(&tokens, "access_token");

    let header = jwt_header(at);
    assert_eq!(header["typ"], "at+jwt", "{header}");
    assert_eq!(header["alg"], "ES256", "{header}");
    let kid = s(&header, "kid");

    let jwks: JwkSet =
        serde_json::from_value(get_json(&server.url("/jwks.json")).await).expect("JWK set");
    let jwk = jwks
        .find(kid)
        .unwrap_or_else(|| panic!("kid {kid} is not in the JWKS"));
    let key = DecodingKey::from_jwk(jwk).expect("decoding key");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[MCP]);
    validation.set_issuer(&[&server.base]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
    let claims = decode::<Value>(at, &key, &validation)
        .expect("signature verifies against the JWKS key")
        .claims;

    assert_eq!(claims["iss"], server.base.as_str());
    assert!(!s(&claims, "sub").is_empty());
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["client_id"], PUBLIC_CLIENT);
    assert_eq!(claims["scope"], "mcp:read");
    assert!(!s(&claims, "jti").is_empty());
    let iat = claims["iat"].as_i64().expect("integer iat");
    let exp = claims["exp"].as_i64().expect("integer exp");
    assert_eq!(exp - iat, 600, "exp follows access_token_ttl");
}

// ---------------------------------------------------------------------------
// 3. client_credentials and client authentication with secrets.
// ---------------------------------------------------------------------------

async fn oauth2_crate_client_credentials(db: Db) {
    use oauth2::basic::{BasicClient, BasicTokenType};
    use oauth2::{ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};

    let server = Server::start(db).await;
    let client = BasicClient::new(ClientId::new(SERVICE_CLIENT.into()))
        .set_client_secret(ClientSecret::new(SERVICE_SECRET.into()))
        .set_token_uri(TokenUrl::new(server.url("/token")).expect("token url"));
    let res = client
        .exchange_client_credentials()
        .add_extra_param("resource", MCP)
        .request_async(&http_client())
        .await
        .expect("client_credentials with client_secret_basic");
    assert_eq!(*res.token_type(), BasicTokenType::Bearer);
    assert_eq!(res.expires_in(), Some(std::time::Duration::from_secs(600)));
    assert_eq!(res.scopes(), Some(&vec![Scope::new("mcp:read".into())]));
    assert!(res.refresh_token().is_none());
    let claims = jwt_claims(res.access_token().secret());
    assert_eq!(claims["sub"], SERVICE_CLIENT);
    assert_eq!(claims["aud"], MCP);
}

async fn client_secret_post_authenticates(db: Db) {
    let server = Server::start(db).await;
    let raw = post_form(
        &server.url("/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", SERVICE_CLIENT),
            ("client_secret", SERVICE_SECRET),
            ("resource", MCP),
        ],
        None,
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.json);
    assert_eq!(
        jwt_claims(s(&raw.json, "access_token"))["sub"],
        SERVICE_CLIENT
    );
}

async fn wrong_client_secret_is_invalid_client_with_www_authenticate(db: Db) {
    let server = Server::start(db).await;
    let raw = client_credentials(
        &server.url("/token"),
        (SERVICE_CLIENT, "not-the-service-secret"),
        MCP,
    )
    .await;
    assert_eq!(raw.status, 401, "{}", raw.json);
    assert_eq!(raw.json["error"], "invalid_client");
    assert!(
        raw.header("www-authenticate").is_some(),
        "401 without WWW-Authenticate: {:?}",
        raw.headers
    );
}

// ---------------------------------------------------------------------------
// 4. Refresh tokens.
// ---------------------------------------------------------------------------

async fn refresh_rotates_on_every_use(db: Db) {
    let server = Server::start(db).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let rt1 = s(&tokens, "refresh_token").to_string();

    let second = refresh(&server, &rt1, &[]).await;
    assert_eq!(second.status, 200, "{}", second.json);
    let rt2 = s(&second.json, "refresh_token").to_string();
    assert_ne!(rt2, rt1, "refresh token was not rotated");

    let third = refresh(&server, &rt2, &[]).await;
    assert_eq!(third.status, 200, "{}", third.json);
    let rt3 = s(&third.json, "refresh_token").to_string();
    assert_ne!(rt3, rt2, "refresh token was not rotated");
    assert_ne!(rt3, rt1);

    let old = refresh(&server, &rt1, &[]).await;
    assert_eq!(old.status, 400, "{}", old.json);
    assert_eq!(old.json["error"], "invalid_grant");
}

async fn refresh_reuse_revokes_family(db: Db) {
    let server = Server::start(db).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let at1 = s(&tokens, "access_token").to_string();
    let rt1 = s(&tokens, "refresh_token").to_string();

    let rotated = refresh(&server, &rt1, &[]).await;
    assert_eq!(rotated.status, 200, "{}", rotated.json);
    let at2 = s(&rotated.json, "access_token").to_string();
    let rt2 = s(&rotated.json, "refresh_token").to_string();
    assert_eq!(introspect(&server, &at2).await["active"], true);

    let reused = refresh(&server, &rt1, &[]).await;
    assert_eq!(reused.status, 400, "{}", reused.json);
    assert_eq!(reused.json["error"], "invalid_grant");

    let newest = refresh(&server, &rt2, &[]).await;
    assert_eq!(newest.status, 400, "newest refresh token still works");
    assert_eq!(newest.json["error"], "invalid_grant");
    for at in [&at1, &at2] {
        assert_eq!(
            introspect(&server, at).await,
            json!({"active": false}),
            "access token of a revoked family"
        );
    }
}

async fn refresh_may_narrow_scope(db: Db) {
    let server = Server::start(db).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read mcp:write").await;
    assert_eq!(tokens["scope"], "mcp:read mcp:write");
    let narrowed = refresh(
        &server,
        s(&tokens, "refresh_token"),
        &[("scope", "mcp:read")],
    )
    .await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.json);
    assert_eq!(narrowed.json["scope"], "mcp:read");
    assert_eq!(
        jwt_claims(s(&narrowed.json, "access_token"))["scope"],
        "mcp:read"
    );
}

async fn refresh_cannot_widen_scope(db: Db) {
    let server = Server::start(db).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let widened = refresh(
        &server,
        s(&tokens, "refresh_token"),
        &[("scope", "mcp:read mcp:write")],
    )
    .await;
    assert_eq!(widened.status, 400, "{}", widened.json);
    assert_eq!(widened.json["error"], "invalid_scope");
}

async fn refresh_cannot_switch_to_ungranted_resource(db: Db) {
    let server = Server::start(db).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let switched = refresh(&server, s(&tokens, "refresh_token"), &[("resource", OTHER)]).await;
    assert_eq!(switched.status, 400, "{}", switched.json);
    assert_eq!(switched.json["error"], "invalid_target");
}

// ---------------------------------------------------------------------------
// 5. Token response shape.
// ---------------------------------------------------------------------------

async fn every_token_response_is_no_store_bearer_with_integer_expires_in_and_scope(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let (code, verifier) = authorize_code(&server, &browser, &[]).await;
    let from_code = exchange_code(&server, &code, &verifier).await;
    let from_refresh = refresh(&server, s(&from_code.json, "refresh_token"), &[]).await;
    let from_cc_default =
        client_credentials(&server.url("/token"), (SERVICE_CLIENT, SERVICE_SECRET), MCP).await;
    let from_cc_scoped = post_form(
        &server.url("/token"),
        &[
            ("grant_type", "client_credentials"),
            ("resource", MCP),
            ("scope", "mcp:write"),
        ],
        Some((SERVICE_CLIENT, SERVICE_SECRET)),
    )
    .await;

    for (grant, raw) in [
        ("authorization_code", &from_code),
        ("refresh_token", &from_refresh),
        ("client_credentials", &from_cc_default),
        ("client_credentials with scope", &from_cc_scoped),
    ] {
        assert_eq!(raw.status, 200, "{grant}: {}", raw.json);
        assert_eq!(raw.header("cache-control"), Some("no-store"), "{grant}");
        assert_eq!(raw.json["token_type"], "Bearer", "{grant}: {}", raw.json);
        assert!(
            raw.json["expires_in"].is_u64(),
            "{grant}: expires_in is not an integer: {}",
            raw.json
        );
        assert!(
            raw.json["scope"].is_string(),
            "{grant}: scope missing: {}",
            raw.json
        );
    }
    assert_eq!(from_cc_scoped.json["scope"], "mcp:write");
}

// ---------------------------------------------------------------------------
// 6. Introspection (RFC 7662).
// ---------------------------------------------------------------------------

async fn introspection_of_active_token_shows_its_claims(db: Db) {
    let server = Server::start(db).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let at = s(&tokens, "access_token");
    let sub = jwt_claims(at)["sub"].clone();
    let info = introspect(&server, at).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], PUBLIC_CLIENT, "{info}");
    assert_eq!(info["sub"], sub, "{info}");
    assert_eq!(info["aud"], MCP, "{info}");
    assert_eq!(info["scope"], "mcp:read", "{info}");
    assert!(info["exp"].is_i64(), "{info}");
}

async fn introspection_of_garbage_token_is_only_active_false(db: Db) {
    let server = Server::start(db).await;
    for garbage in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
        assert_eq!(introspect(&server, garbage).await, json!({"active": false}));
    }
}

async fn introspection_without_client_authentication_is_invalid_client(db: Db) {
    let server = Server::start(db).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let raw = post_form(
        &server.url("/introspect"),
        &[("token", s(&tokens, "access_token"))],
        None,
    )
    .await;
    assert_eq!(raw.status, 401, "{}", raw.json);
    assert_eq!(raw.json["error"], "invalid_client");
}

async fn public_client_cannot_introspect(db: Db) {
    let server = Server::start(db).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let raw = post_form(
        &server.url("/introspect"),
        &[
            ("token", s(&tokens, "access_token")),
            ("client_id", PUBLIC_CLIENT),
        ],
        None,
    )
    .await;
    assert_eq!(raw.status, 401, "{}", raw.json);
    assert_eq!(raw.json["error"], "invalid_client");
    assert!(raw.json.get("active").is_none());
}

async fn expired_access_token_introspects_inactive(db: Db) {
    let server = Server::start(db).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let at = s(&tokens, "access_token");
    assert_eq!(introspect(&server, at).await["active"], true);
    server.advance_clock(601);
    assert_eq!(introspect(&server, at).await, json!({"active": false}));
}

// ---------------------------------------------------------------------------
// 7. Revocation (RFC 7009).
// ---------------------------------------------------------------------------

async fn revoking_refresh_token_revokes_its_family(db: Db) {
    let server = Server::start(db).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let at = s(&tokens, "access_token");
    let rt = s(&tokens, "refresh_token");
    assert_eq!(introspect(&server, at).await["active"], true);

    assert_eq!(revoke_as_public(&server, rt).await, 200);

    assert_eq!(introspect(&server, at).await, json!({"active": false}));
    let again = refresh(&server, rt, &[]).await;
    assert_eq!(again.status, 400, "{}", again.json);
    assert_eq!(again.json["error"], "invalid_grant");
}

async fn revoking_access_token_makes_it_inactive(db: Db) {
    let server = Server::start(db).await;
    // A user's token (tracked with its grant)...
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let at = s(&tokens, "access_token");
    assert_eq!(introspect(&server, at).await["active"], true);
    assert_eq!(revoke_as_public(&server, at).await, 200);
    assert_eq!(introspect(&server, at).await, json!({"active": false}));

    // ...and a service's client_credentials JWT.
    let cc = client_credentials(&server.url("/token"), (SERVICE_CLIENT, SERVICE_SECRET), MCP).await;
    let cc_at = s(&cc.json, "access_token");
    assert_eq!(introspect(&server, cc_at).await["active"], true);
    let revoked = post_form(
        &server.url("/revoke"),
        &[("token", cc_at)],
        Some((SERVICE_CLIENT, SERVICE_SECRET)),
    )
    .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(introspect(&server, cc_at).await, json!({"active": false}));
}

async fn revoking_unknown_token_returns_200(db: Db) {
    let server = Server::start(db).await;
    assert_eq!(revoke_as_public(&server, "no-such-token").await, 200);
    let as_service = post_form(
        &server.url("/revoke"),
        &[
            ("token", "no-such-token"),
            ("token_type_hint", "refresh_token"),
        ],
        Some((SERVICE_CLIENT, SERVICE_SECRET)),
    )
    .await;
    assert_eq!(as_service.status, 200);
}

async fn client_cannot_revoke_another_clients_token(db: Db) {
    let server = Server::start(db).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let at = s(&tokens, "access_token");
    let rt = s(&tokens, "refresh_token");
    for token in [at, rt] {
        post_form(
            &server.url("/revoke"),
            &[("token", token)],
            Some((SERVICE_CLIENT, SERVICE_SECRET)),
        )
        .await;
    }
    assert_eq!(introspect(&server, at).await["active"], true);
    let still = refresh(&server, rt, &[]).await;
    assert_eq!(still.status, 200, "{}", still.json);
}

// ---------------------------------------------------------------------------
// 8. Opaque access tokens.
// ---------------------------------------------------------------------------

const OPAQUE_CLIENT: &str = "opaque-svc";
const OPAQUE_SECRET: &str = "opaque-service-secret";

fn opaque_config() -> String {
    base_config(&format!(
        r#"
[[tenants.clients]]
client_id = "{OPAQUE_CLIENT}"
secret = "{OPAQUE_SECRET}"
grant_types = ["client_credentials"]
access_token_format = "opaque"
"#
    ))
}

async fn opaque_access_token_is_not_a_jwt_and_introspects_active(db: Db) {
    let server = Server::start_with(db, &opaque_config()).await;
    let raw = client_credentials(&server.url("/token"), (OPAQUE_CLIENT, OPAQUE_SECRET), MCP).await;
    assert_eq!(raw.status, 200, "{}", raw.json);
    let at = s(&raw.json, "access_token");
    assert!(!at.contains('.'), "opaque token looks like a JWT: {at}");
    let info = introspect(&server, at).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], OPAQUE_CLIENT, "{info}");
    assert_eq!(info["sub"], OPAQUE_CLIENT, "{info}");
    assert_eq!(info["aud"], MCP, "{info}");
    assert_eq!(info["scope"], "mcp:read", "{info}");
    assert_eq!(info["iss"], server.base.as_str(), "{info}");
    assert!(info["exp"].is_i64(), "{info}");
}

async fn revoked_opaque_access_token_introspects_inactive(db: Db) {
    let server = Server::start_with(db, &opaque_config()).await;
    let raw = client_credentials(&server.url("/token"), (OPAQUE_CLIENT, OPAQUE_SECRET), MCP).await;
    let at = s(&raw.json, "access_token");
    assert_eq!(introspect(&server, at).await["active"], true);
    let revoked = post_form(
        &server.url("/revoke"),
        &[("token", at)],
        Some((OPAQUE_CLIENT, OPAQUE_SECRET)),
    )
    .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(introspect(&server, at).await, json!({"active": false}));
}

// ---------------------------------------------------------------------------
// 9. private_key_jwt (RFC 7523).
// ---------------------------------------------------------------------------

const JWT_CLIENT: &str = "jwt-svc";

fn jwt_client_config(key: &p256::SecretKey) -> String {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let point = key.public_key().to_encoded_point(false);
    let x = URL_SAFE_NO_PAD.encode(point.x().expect("x"));
    let y = URL_SAFE_NO_PAD.encode(point.y().expect("y"));
    base_config(&format!(
        r#"
[[tenants.clients]]
client_id = "{JWT_CLIENT}"
grant_types = ["client_credentials"]
token_endpoint_auth_method = "private_key_jwt"
jwks = {{ keys = [ {{ kty = "EC", crv = "P-256", x = "{x}", y = "{y}", kid = "k1", alg = "ES256", use = "sig" }} ] }}
"#
    ))
}

fn client_assertion(key: &p256::SecretKey, audience: &str) -> String {
    use p256::pkcs8::EncodePrivateKey;
    let der = key.to_pkcs8_der().expect("pkcs8");
    let encoding = jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let t = now();
    let claims = json!({
        "iss": JWT_CLIENT,
        "sub": JWT_CLIENT,
        "aud": audience,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": t,
        "exp": t + 60,
    });
    jsonwebtoken::encode(&header, &claims, &encoding).expect("sign assertion")
}

async fn token_with_assertion(server: &Server, assertion: &str) -> Raw {
    post_form(
        &server.url("/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", JWT_CLIENT),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("resource", MCP),
        ],
        None,
    )
    .await
}

async fn private_key_jwt_authenticates_and_rejects_replayed_assertion(db: Db) {
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let server = Server::start_with(db, &jwt_client_config(&key)).await;
    // RFC 7523bis: the audience is the issuer identifier.
    let token_endpoint = server.base.clone();

    let assertion = client_assertion(&key, &token_endpoint);
    let first = token_with_assertion(&server, &assertion).await;
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(
        jwt_claims(s(&first.json, "access_token"))["sub"],
        JWT_CLIENT
    );

    let replay = token_with_assertion(&server, &assertion).await;
    assert_eq!(replay.status, 401, "replayed assertion: {}", replay.json);
    assert_eq!(replay.json["error"], "invalid_client");

    let other_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let forged =
        token_with_assertion(&server, &client_assertion(&other_key, &token_endpoint)).await;
    assert_eq!(forged.status, 401, "foreign key: {}", forged.json);
    assert_eq!(forged.json["error"], "invalid_client");
}

// ---------------------------------------------------------------------------
// 10-11. SSO, prompt values and consent.
// ---------------------------------------------------------------------------

async fn second_authorization_in_same_browser_skips_login_and_consent(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    login_public(&server, &browser, "mcp:read").await;

    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let res = browser.http.get(&url).send().await.expect("authorize");
    assert!(res.status().is_redirection(), "status {}", res.status());
    let to = location(&res);
    assert!(
        to.starts_with(REDIRECT),
        "expected straight back to the client, got {to}"
    );
    let code = query_param(&to, "code").unwrap_or_else(|| panic!("no code in {to}"));
    let tokens = exchange_code(&server, &code, &p.verifier).await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);
}

async fn prompt_login_shows_login_form_again(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    login_public(&server, &browser, "mcp:read").await;

    let p = pkce();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("prompt", "login")],
    );
    let res = browser.http.get(&url).send().await.expect("authorize");
    assert!(res.status().is_redirection(), "status {}", res.status());
    let to = location(&res);
    assert!(
        to.starts_with(&server.url("/login")),
        "expected the login page, got {to}"
    );
    let page = browser
        .http
        .get(&to)
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("body");
    assert!(page.contains("name=\"password\""), "{page}");
}

async fn prompt_consent_shows_consent_again(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    login_public(&server, &browser, "mcp:read").await;

    let p = pkce();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("prompt", "consent")],
    );
    let res = browser.http.get(&url).send().await.expect("authorize");
    assert_eq!(res.status().as_u16(), 200, "expected the consent page");
    let page = res.text().await.expect("body");
    assert!(page.contains("name=\"decision\""), "{page}");
    assert!(!page.contains("name=\"password\""), "{page}");
    // Shown again, but what was already allowed is listed as such, not as new.
    assert!(!consent_scope_list(&page).contains("mcp:read"), "{page}");
    let already = page
        .split("Already allowed:")
        .nth(1)
        .expect("already-allowed list");
    assert!(already.contains("mcp:read"), "{page}");
}

async fn prompt_none_without_session_redirects_login_required(db: Db) {
    let server = Server::start(db).await;
    let p = pkce();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("prompt", "none")],
    );
    let back = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .redirect();
    assert_redirect_error(&back, &server, "login_required");
}

async fn prompt_none_for_unconsented_scope_redirects_consent_required(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    login_public(&server, &browser, "mcp:read").await;

    let p = pkce();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("prompt", "none"), ("scope", "mcp:read mcp:write")],
    );
    let back = browser
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .redirect();
    assert_redirect_error(&back, &server, "consent_required");
}

async fn extra_scope_asks_consent_for_the_new_scope_only(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    login_public(&server, &browser, "mcp:read").await;

    let p = pkce();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("scope", "mcp:read mcp:write")],
    );
    let res = browser.http.get(&url).send().await.expect("authorize");
    assert_eq!(res.status().as_u16(), 200, "expected the consent page");
    let page = res.text().await.expect("body");
    assert!(page.contains("name=\"decision\""), "{page}");
    let asked = consent_scope_list(&page);
    assert!(asked.contains("mcp:write"), "{asked}");
    assert!(!asked.contains("mcp:read"), "already granted: {asked}");
}

async fn denying_consent_redirects_access_denied_with_state_and_iss(db: Db) {
    let server = Server::start(db).await;
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let back = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, false)
        .await
        .redirect();
    assert_redirect_error(&back, &server, "access_denied");
}

// ---------------------------------------------------------------------------
// 12. Restart.
// ---------------------------------------------------------------------------

async fn restart_keeps_tokens_and_keys(db: Db) {
    let mut server = Server::start(db).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let at = s(&tokens, "access_token").to_string();
    let rt = s(&tokens, "refresh_token").to_string();
    let jwks_before = get_text(&server.url("/jwks.json")).await;
    let before: Value = serde_json::from_str(&jwks_before).expect("JWKS json");
    assert!(before["keys"].as_array().is_some_and(|k| !k.is_empty()));

    server.restart().await;

    let jwks_after = get_text(&server.url("/jwks.json")).await;
    assert_eq!(jwks_after, jwks_before, "JWKS changed across a restart");
    assert_eq!(introspect(&server, &at).await["active"], true);
    let refreshed = refresh(&server, &rt, &[]).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.json);
}

// ---------------------------------------------------------------------------
// 13. Session cookie attributes.
// ---------------------------------------------------------------------------

async fn session_cookie_is_httponly_and_samesite_lax(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let res = browser.http.get(&url).send().await.expect("authorize");
    let login_url = location(&res);
    assert!(login_url.starts_with(&server.url("/login")), "{login_url}");
    let page = browser
        .http
        .get(&login_url)
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("body");
    let form = [
        ("pending", hidden_field(&page, "pending").expect("pending")),
        ("csrf", hidden_field(&page, "csrf").expect("csrf")),
        ("username", USER.to_string()),
        ("password", PASSWORD.to_string()),
    ];
    let res = browser
        .http
        .post(server.url("/login"))
        .form(&form)
        .send()
        .await
        .expect("login");
    let cookies: Vec<String> = res
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("gh_session") || c.starts_with("__Host-gh_session"))
        .unwrap_or_else(|| panic!("no session cookie set after login: {cookies:?}"));
    let attrs: Vec<String> = session
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(attrs.iter().any(|a| a == "httponly"), "{session}");
    assert!(attrs.iter().any(|a| a == "samesite=lax"), "{session}");
}

// ---------------------------------------------------------------------------
// 14. Discovery.
// ---------------------------------------------------------------------------

async fn discovery_documents_advertise_the_issuer_and_capabilities(db: Db) {
    let server = Server::start(db).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let m = get_json(&server.url(path)).await;
        assert_eq!(m["issuer"], server.base.as_str(), "{path}: {m}");
        assert!(!s(&m, "issuer").ends_with('/'), "{path}");
        assert_eq!(
            m["code_challenge_methods_supported"],
            json!(["S256"]),
            "{path}"
        );
        assert_eq!(m["response_types_supported"], json!(["code"]), "{path}");
        assert_eq!(
            m["authorization_response_iss_parameter_supported"], true,
            "{path}"
        );
        let scopes = m["scopes_supported"].as_array().expect("scopes_supported");
        assert!(scopes.contains(&json!("offline_access")), "{path}: {m}");
        let subject_types = m["subject_types_supported"]
            .as_array()
            .expect("subject_types_supported");
        assert!(!subject_types.is_empty(), "{path}");
        let algs = m["id_token_signing_alg_values_supported"]
            .as_array()
            .expect("id_token_signing_alg_values_supported");
        assert!(algs.contains(&json!("ES256")), "{path}: {m}");
        let jwks = get_json(s(&m, "jwks_uri")).await;
        assert!(
            jwks["keys"].as_array().is_some_and(|k| !k.is_empty()),
            "{path}: {jwks}"
        );
    }
}

// ---------------------------------------------------------------------------
// 15. Tenants.
// ---------------------------------------------------------------------------

const ACME_RESOURCE: &str = "https://acme.example.com/mcp";

fn run_cli(server: &Server, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(
        out.status.success(),
        "gatehouse {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates tenant `acme` with a resource and a client_credentials client
/// through the CLI; returns that client's secret.
fn add_acme_tenant(server: &Server) -> String {
    run_cli(server, &["tenants", "add", "acme"]);
    run_cli(
        server,
        &[
            "resources",
            "add",
            "--tenant",
            "acme",
            "--uri",
            ACME_RESOURCE,
            "--scope",
            "acme:read",
        ],
    );
    let out = run_cli(
        server,
        &[
            "clients",
            "add",
            "--tenant",
            "acme",
            "--client-id",
            "acme-svc",
            "--grant-type",
            "client_credentials",
            "--resource",
            ACME_RESOURCE,
        ],
    );
    out.lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .unwrap_or_else(|| panic!("no client_secret in: {out}"))
        .trim()
        .to_string()
}

async fn tenant_has_its_own_issuer_and_metadata(db: Db) {
    let server = Server::start(db).await;
    add_acme_tenant(&server);
    let issuer = server.url("/t/acme");
    for url in [
        server.url("/t/acme/.well-known/oauth-authorization-server"),
        server.url("/.well-known/oauth-authorization-server/t/acme"),
    ] {
        let m = get_json(&url).await;
        assert_eq!(m["issuer"], issuer.as_str(), "{url}: {m}");
        assert_eq!(m["token_endpoint"], format!("{issuer}/token"), "{url}: {m}");
    }
    let default = get_json(&server.url("/.well-known/oauth-authorization-server")).await;
    assert_eq!(default["issuer"], server.base.as_str());
}

async fn tokens_are_not_accepted_across_tenants(db: Db) {
    let server = Server::start(db).await;
    let acme_secret = add_acme_tenant(&server);
    let acme = ("acme-svc", acme_secret.as_str());

    let acme_token = client_credentials(&server.url("/t/acme/token"), acme, ACME_RESOURCE).await;
    assert_eq!(acme_token.status, 200, "{}", acme_token.json);
    let acme_at = s(&acme_token.json, "access_token");
    let at_acme = introspect_as(&server.url("/t/acme/introspect"), acme, acme_at).await;
    assert_eq!(at_acme["active"], true, "{at_acme}");
    assert_eq!(at_acme["iss"], server.url("/t/acme"));
    assert_eq!(introspect(&server, acme_at).await, json!({"active": false}));

    let default_token =
        client_credentials(&server.url("/token"), (SERVICE_CLIENT, SERVICE_SECRET), MCP).await;
    let default_at = s(&default_token.json, "access_token");
    assert_eq!(introspect(&server, default_at).await["active"], true);
    assert_eq!(
        introspect_as(&server.url("/t/acme/introspect"), acme, default_at).await,
        json!({"active": false})
    );
}

async fn tenant_client_cannot_authenticate_at_another_tenant(db: Db) {
    let server = Server::start(db).await;
    let acme_secret = add_acme_tenant(&server);
    let raw = client_credentials(
        &server.url("/token"),
        ("acme-svc", acme_secret.as_str()),
        MCP,
    )
    .await;
    assert_eq!(raw.status, 401, "{}", raw.json);
    assert_eq!(raw.json["error"], "invalid_client");
}

on_both_databases!(
    openid_client_completes_code_flow_with_pkce_and_validates_id_token,
    access_token_is_rfc9068_jwt_signed_with_a_published_es256_key,
    oauth2_crate_client_credentials,
    client_secret_post_authenticates,
    wrong_client_secret_is_invalid_client_with_www_authenticate,
    refresh_rotates_on_every_use,
    refresh_reuse_revokes_family,
    refresh_may_narrow_scope,
    refresh_cannot_widen_scope,
    refresh_cannot_switch_to_ungranted_resource,
    every_token_response_is_no_store_bearer_with_integer_expires_in_and_scope,
    introspection_of_active_token_shows_its_claims,
    introspection_of_garbage_token_is_only_active_false,
    introspection_without_client_authentication_is_invalid_client,
    public_client_cannot_introspect,
    expired_access_token_introspects_inactive,
    revoking_refresh_token_revokes_its_family,
    revoking_access_token_makes_it_inactive,
    revoking_unknown_token_returns_200,
    client_cannot_revoke_another_clients_token,
    opaque_access_token_is_not_a_jwt_and_introspects_active,
    revoked_opaque_access_token_introspects_inactive,
    private_key_jwt_authenticates_and_rejects_replayed_assertion,
    second_authorization_in_same_browser_skips_login_and_consent,
    prompt_login_shows_login_form_again,
    prompt_consent_shows_consent_again,
    prompt_none_without_session_redirects_login_required,
    prompt_none_for_unconsented_scope_redirects_consent_required,
    extra_scope_asks_consent_for_the_new_scope_only,
    denying_consent_redirects_access_denied_with_state_and_iss,
    restart_keeps_tokens_and_keys,
    session_cookie_is_httponly_and_samesite_lax,
    discovery_documents_advertise_the_issuer_and_capabilities,
    tenant_has_its_own_issuer_and_metadata,
    tokens_are_not_accepted_across_tenants,
    tenant_client_cannot_authenticate_at_another_tenant,
);

mod hosted_resource_metadata {
    use super::common::*;

    async fn gatehouse_hosts_metadata_for_a_registered_resource(db: Db) {
        let server = Server::start(db).await;
        let url = format!(
            "{}?resource={}",
            server.url("/resource-metadata"),
            "HTTP://127.0.0.1:8765/mcp"
        );
        let res = reqwest::get(&url).await.unwrap();
        assert_eq!(res.status(), 200);
        let doc: serde_json::Value = res.json().await.unwrap();
        assert_eq!(doc["resource"], MCP, "canonical resource URI");
        assert_eq!(
            doc["authorization_servers"],
            serde_json::json!([server.base])
        );
        assert_eq!(
            doc["scopes_supported"],
            serde_json::json!(["mcp:read", "mcp:write"])
        );
        assert_eq!(
            doc["bearer_methods_supported"],
            serde_json::json!(["header"])
        );
    }

    async fn unknown_resource_metadata_is_404(db: Db) {
        let server = Server::start(db).await;
        let res = reqwest::get(format!(
            "{}?resource=https://nope.example.com/mcp",
            server.url("/resource-metadata")
        ))
        .await
        .unwrap();
        assert_eq!(res.status(), 404);
        let res = reqwest::get(server.url("/resource-metadata"))
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
    }

    crate::on_both_databases!(
        gatehouse_hosts_metadata_for_a_registered_resource,
        unknown_resource_metadata_is_404
    );
}

mod resource_token_format {
    use super::common::*;

    const OPAQUE_RS: &str = "https://opaque.example.com/mcp";

    async fn a_resource_can_require_opaque_tokens(db: Db) {
        let config = base_config(&format!(
            "\n[[tenants.resources]]\nuri = \"{OPAQUE_RS}\"\nscopes = [\"op:read\"]\naccess_token_format = \"opaque\"\n"
        ));
        let server = Server::start_with(db, &config).await;
        let token_for = |resource: &'static str| {
            let server = &server;
            async move {
                let (status, json) = token_request(
                    server,
                    &[("grant_type", "client_credentials"), ("resource", resource)],
                    Some((SERVICE_CLIENT, SERVICE_SECRET)),
                )
                .await;
                assert_eq!(status, 200, "{json}");
                json["access_token"].as_str().unwrap().to_string()
            }
        };
        let opaque = token_for(OPAQUE_RS).await;
        assert!(
            !opaque.contains('.'),
            "the resource asked for opaque tokens: {opaque}"
        );
        let intro = introspect(&server, &opaque).await;
        assert_eq!(intro["active"], true);
        assert_eq!(intro["aud"], OPAQUE_RS);
        // The same client still gets JWTs for a resource that takes them.
        assert_eq!(token_for(MCP).await.matches('.').count(), 2);
    }

    crate::on_both_databases!(a_resource_can_require_opaque_tokens);
}

mod restricted_introspection {
    use super::common::*;

    /// A resource server registered with `resources = [...]` learns nothing
    /// about tokens minted for other resources.
    async fn restricted_caller_sees_only_its_resources_tokens(db: Db) {
        let config = base_config(&format!(
            "\n[[tenants.clients]]\nclient_id = \"other-rs\"\nsecret = \"other-rs-secret-0123456789\"\ngrant_types = [\"client_credentials\"]\nresources = [\"{OTHER}\"]\n"
        ));
        let server = Server::start_with(db, &config).await;
        let (status, json) = token_request(
            &server,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            Some((SERVICE_CLIENT, SERVICE_SECRET)),
        )
        .await;
        assert_eq!(status, 200, "{json}");
        let token = json["access_token"].as_str().unwrap();
        let as_other: serde_json::Value = reqwest::Client::new()
            .post(server.url("/introspect"))
            .basic_auth("other-rs", Some("other-rs-secret-0123456789"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            as_other,
            serde_json::json!({"active": false}),
            "a token for another resource"
        );
        // An unrestricted confidential client still sees it.
        assert_eq!(introspect(&server, token).await["active"], true);
    }

    crate::on_both_databases!(restricted_caller_sees_only_its_resources_tokens);
}
