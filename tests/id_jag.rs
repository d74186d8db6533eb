//! MCP enterprise-managed authorization: the enterprise side (the default
//! tenant) exchanges a user's ID token for an ID-JAG; the MCP side (tenant
//! `mcp`, trusting the first as an issuer) redeems it with the JWT bearer
//! grant for an access token to its MCP server.

mod common;

use common::*;
use serde_json::Value;

const AGENT: &str = "enterprise-agent";
const SECRET: &str = "enterprise-agent-secret-01";
const OTHER_AGENT: &str = "other-agent";
const OTHER_SECRET: &str = "other-agent-secret-0123";
const TARGET_RESOURCE: &str = "https://mcp.example.com/mcp";
const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";
const REDIRECT: &str = "http://127.0.0.1:53682/callback";

fn config(base: &str) -> String {
    let trusted = if base.is_empty() {
        String::new()
    } else {
        format!(
            "[[tenants.trusted_issuers]]\nissuer = \"{base}\"\njwks_uri = \"{base}/jwks.json\"\n"
        )
    };
    base_config(&format!(
        r#"
[[tenants.clients]]
client_id = "{AGENT}"
client_name = "Enterprise agent"
secret = "{SECRET}"
redirect_uris = ["http://127.0.0.1/callback"]
grant_types = ["authorization_code", "refresh_token", "{TE}"]

[[tenants.token_exchange]]
clients = ["{AGENT}"]
subject_token_types = ["{ID_TOKEN}"]
resources = []
audiences = ["{base}/t/mcp", "https://elsewhere.example.com"]

[[tenants]]
id = "mcp"

[[tenants.resources]]
uri = "{TARGET_RESOURCE}"
scopes = ["mcp:read", "mcp:write"]

[[tenants.clients]]
client_id = "{AGENT}"
secret = "{SECRET}"
grant_types = ["{JWT_BEARER}"]

[[tenants.clients]]
client_id = "{OTHER_AGENT}"
secret = "{OTHER_SECRET}"
grant_types = ["{JWT_BEARER}"]

{trusted}"#
    ))
}

/// Starts the server, then writes the trust (which needs the server's URL)
/// and restarts it.
async fn start(db: Db) -> Server {
    let mut server = Server::start_with(db, &config("")).await;
    std::fs::write(&server.config_path, config(&server.base)).unwrap();
    server.restart().await;
    server
}

/// The user signs in to the enterprise agent with `openid`: its ID token.
async fn id_token(server: &Server) -> String {
    let p = pkce();
    let url = authorize_url(
        server,
        AGENT,
        REDIRECT,
        &p.challenge,
        &[("scope", "openid mcp:read")],
    );
    let code = Browser::new()
        .authorize(server, &url, USER, PASSWORD, true)
        .await
        .code();
    let (status, json) = token_request(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &p.verifier),
            ("resource", MCP),
        ],
        Some((AGENT, SECRET)),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    json["id_token"].as_str().unwrap().to_string()
}

async fn get_id_jag(server: &Server, subject: &str, audience: &str) -> (u16, Value) {
    token_request(
        server,
        &[
            ("grant_type", TE),
            ("subject_token", subject),
            ("subject_token_type", ID_TOKEN),
            ("requested_token_type", ID_JAG),
            ("audience", audience),
            ("resource", TARGET_RESOURCE),
            ("scope", "mcp:read"),
        ],
        Some((AGENT, SECRET)),
    )
    .await
}

async fn redeem(server: &Server, assertion: &str, client: (&str, &str)) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(server.url("/t/mcp/token"))
        .basic_auth(client.0, Some(client.1))
        .form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", assertion),
            ("resource", TARGET_RESOURCE),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn error_of(json: &Value) -> &str {
    json["error"].as_str().unwrap_or_default()
}

async fn id_token_becomes_an_id_jag_then_an_access_token(db: Db) {
    let server = start(db).await;
    let id_token = id_token(&server).await;
    let target_issuer = format!("{}/t/mcp", server.base);
    let (status, json) = get_id_jag(&server, &id_token, &target_issuer).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["issued_token_type"], ID_JAG);
    assert_eq!(json["token_type"], "N_A");
    let jag = json["access_token"].as_str().unwrap().to_string();
    assert_eq!(jwt_header(&jag)["typ"], "oauth-id-jag+jwt");
    let claims = jwt_claims(&jag);
    assert_eq!(claims["iss"], server.base);
    assert_eq!(claims["aud"], target_issuer);
    assert_eq!(claims["client_id"], AGENT);
    assert_eq!(claims["sub"], jwt_claims(&id_token)["sub"]);
    assert_eq!(claims["resource"], TARGET_RESOURCE);
    assert_eq!(claims["scope"], "mcp:read");
    assert!(claims["jti"].is_string() && claims["exp"].is_i64());

    let (status, tokens) = redeem(&server, &jag, (AGENT, SECRET)).await;
    assert_eq!(status, 200, "{tokens}");
    assert!(
        tokens.get("refresh_token").is_none(),
        "no refresh token for an ID-JAG"
    );
    let access = jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["iss"], target_issuer);
    assert_eq!(access["aud"], TARGET_RESOURCE);
    assert_eq!(access["scope"], "mcp:read");
    assert_eq!(access["client_id"], AGENT);

    let (status, replay) = redeem(&server, &jag, (AGENT, SECRET)).await;
    assert_eq!(
        (status, error_of(&replay)),
        (400, "invalid_grant"),
        "a replayed ID-JAG is refused: {replay}"
    );
}

async fn id_jag_for_another_audience_is_refused(db: Db) {
    let server = start(db).await;
    let id_token = id_token(&server).await;
    let (status, json) = get_id_jag(&server, &id_token, "https://elsewhere.example.com").await;
    assert_eq!(status, 200, "{json}");
    let (status, refused) = redeem(
        &server,
        json["access_token"].as_str().unwrap(),
        (AGENT, SECRET),
    )
    .await;
    assert_eq!(
        (status, error_of(&refused)),
        (400, "invalid_grant"),
        "{refused}"
    );
}

async fn id_jag_for_another_client_is_refused(db: Db) {
    let server = start(db).await;
    let id_token = id_token(&server).await;
    let (_, json) = get_id_jag(&server, &id_token, &format!("{}/t/mcp", server.base)).await;
    let (status, refused) = redeem(
        &server,
        json["access_token"].as_str().unwrap(),
        (OTHER_AGENT, OTHER_SECRET),
    )
    .await;
    assert_eq!(
        (status, error_of(&refused)),
        (400, "invalid_grant"),
        "{refused}"
    );
}

async fn expired_id_jag_is_refused(db: Db) {
    let server = start(db).await;
    let id_token = id_token(&server).await;
    let (_, json) = get_id_jag(&server, &id_token, &format!("{}/t/mcp", server.base)).await;
    server.advance_clock(400);
    let (status, refused) = redeem(
        &server,
        json["access_token"].as_str().unwrap(),
        (AGENT, SECRET),
    )
    .await;
    assert_eq!(
        (status, error_of(&refused)),
        (400, "invalid_grant"),
        "{refused}"
    );
}

async fn assertion_that_is_not_an_id_jag_is_refused(db: Db) {
    let server = start(db).await;
    let id_token = id_token(&server).await;
    // An ID token is signed by a trusted issuer, but its typ is not an ID-JAG's.
    let (status, refused) = redeem(&server, &id_token, (AGENT, SECRET)).await;
    assert_eq!(
        (status, error_of(&refused)),
        (400, "invalid_grant"),
        "{refused}"
    );
}

async fn assertion_from_an_untrusted_issuer_is_refused(db: Db) {
    use p256::pkcs8::EncodePrivateKey;
    let server = start(db).await;
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = key.to_pkcs8_der().unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("oauth-id-jag+jwt".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let forged = jsonwebtoken::encode(
        &header,
        &serde_json::json!({
            "iss": "https://untrusted.example.com", "sub": "mallory", "aud": format!("{}/t/mcp", server.base),
            "client_id": AGENT, "jti": "x1", "iat": now, "exp": now + 60, "resource": TARGET_RESOURCE, "scope": "mcp:read",
        }),
        &jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
    )
    .unwrap();
    let (status, refused) = redeem(&server, &forged, (AGENT, SECRET)).await;
    assert_eq!(
        (status, error_of(&refused)),
        (400, "invalid_grant"),
        "{refused}"
    );
}

async fn enterprise_side_refusals(db: Db) {
    let server = start(db).await;
    let id_token = id_token(&server).await;
    let target = format!("{}/t/mcp", server.base);
    // No audience.
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", TE),
            ("subject_token", &id_token),
            ("subject_token_type", ID_TOKEN),
            ("requested_token_type", ID_JAG),
        ],
        Some((AGENT, SECRET)),
    )
    .await;
    assert_eq!((status, error_of(&json)), (400, "invalid_target"), "{json}");
    // An audience the policy does not name.
    let (status, json) = get_id_jag(&server, &id_token, "https://unknown.example.com").await;
    assert_eq!((status, error_of(&json)), (400, "invalid_target"), "{json}");
    // Not an ID token.
    let (status, json) = get_id_jag(&server, "not-a-token", &target).await;
    assert_eq!(
        (status, error_of(&json)),
        (400, "invalid_request"),
        "{json}"
    );
    // An ID token issued to another client.
    let tokens = login_public(&server, &Browser::new(), "openid mcp:read").await;
    let (status, json) = get_id_jag(&server, tokens["id_token"].as_str().unwrap(), &target).await;
    assert_eq!(
        (status, error_of(&json)),
        (400, "invalid_request"),
        "{json}"
    );
}

async fn discovery_advertises_the_id_jag_profile(db: Db) {
    let server = start(db).await;
    let meta: Value = reqwest::get(server.url("/t/mcp/.well-known/oauth-authorization-server"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["authorization_grant_profiles_supported"],
        serde_json::json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );
    assert!(meta["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == JWT_BEARER));
}

on_both_databases!(
    id_token_becomes_an_id_jag_then_an_access_token,
    id_jag_for_another_audience_is_refused,
    id_jag_for_another_client_is_refused,
    expired_id_jag_is_refused,
    assertion_that_is_not_an_id_jag_is_refused,
    assertion_from_an_untrusted_issuer_is_refused,
    enterprise_side_refusals,
    discovery_advertises_the_id_jag_profile,
);
