//! Issue 9, attack paths closed by rules: anonymous machine tokens (1),
//! introspection as an oracle (5), private_key_jwt and ID-JAG audience
//! injection (6), `offline_access` in access tokens (11), and the signed
//! security webhook that reports refresh-token reuse and code replay.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const WEBHOOK_SECRET: &str = "webhook-secret-0123456789-0123456789";

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64
}

/// POST /register with a JSON body, optionally with an initial access token.
async fn register(server: &Server, body: &Value, iat: Option<&str>) -> (u16, Value) {
    let mut req = http().post(server.url("/register")).json(body);
    if let Some(t) = iat {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("register");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn machine_metadata() -> Value {
    json!({"client_name": "Nightly job", "grant_types": ["client_credentials"]})
}

fn machine_policy(body: &str) -> String {
    format!("\n[tenants.registration.machine_clients]\n{body}\n")
}

async fn client_credentials(
    server: &Server,
    client: (&str, &str),
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let mut form = vec![("grant_type", "client_credentials")];
    form.extend_from_slice(extra);
    token_request(server, &form, Some(client)).await
}

fn error_of(json: &Value) -> &str {
    json["error"].as_str().unwrap_or_default()
}

// ---------------------------------------------------------------------------
// 1. Anonymous machine tokens
// ---------------------------------------------------------------------------

/// With the default settings a self-registered client cannot ask for
/// client_credentials at all; the administrator's service client still can.
async fn self_registered_client_cannot_register_client_credentials_by_default(db: Db) {
    let server = Server::start(db).await;
    let (status, json) = register(&server, &machine_metadata(), None).await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(error_of(&json), "invalid_client_metadata", "{json}");
    assert!(
        json["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("client_credentials"),
        "{json}"
    );

    let (status, json) = client_credentials(
        &server,
        (SERVICE_CLIENT, SERVICE_SECRET),
        &[("resource", MCP)],
    )
    .await;
    assert_eq!(status, 200, "admin-configured client: {json}");
}

/// A client registered while the tenant allowed machine clients loses the
/// grant when the policy goes: the rule is enforced at the token endpoint.
async fn machine_grant_is_refused_at_use_for_clients_registered_earlier(db: Db) {
    let allowing = base_config(&machine_policy(&format!("resources = [\"{MCP}\"]")));
    let mut server = Server::start_with(db, &allowing).await;
    let (status, reg) = register(&server, &machine_metadata(), None).await;
    assert_eq!(status, 201, "{reg}");
    let client = (
        reg["client_id"].as_str().unwrap().to_string(),
        reg["client_secret"].as_str().unwrap().to_string(),
    );
    let (status, json) =
        client_credentials(&server, (&client.0, &client.1), &[("resource", MCP)]).await;
    assert_eq!(status, 200, "allowed by policy: {json}");

    std::fs::write(&server.config_path, base_config("")).unwrap();
    server.restart().await;
    let (status, json) =
        client_credentials(&server, (&client.0, &client.1), &[("resource", MCP)]).await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(error_of(&json), "unauthorized_client", "{json}");
}

/// When allowed, only the named resources and scopes: a request for another
/// resource is invalid_target, for another scope invalid_scope, and a
/// request naming no scope gets no more than the policy's.
async fn machine_policy_bounds_resources_and_scopes(db: Db) {
    let config = base_config(&machine_policy(&format!(
        "resources = [\"{MCP}\"]\nscopes = [\"mcp:read\"]"
    )));
    let server = Server::start_with(db, &config).await;
    let (status, reg) = register(&server, &machine_metadata(), None).await;
    assert_eq!(status, 201, "{reg}");
    let client = (
        reg["client_id"].as_str().unwrap(),
        reg["client_secret"].as_str().unwrap(),
    );

    let (status, json) = client_credentials(&server, client, &[("resource", MCP)]).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["scope"], "mcp:read", "{json}");
    assert_eq!(
        jwt_claims(json["access_token"].as_str().unwrap())["scope"],
        "mcp:read"
    );

    let (status, json) = client_credentials(
        &server,
        client,
        &[("resource", MCP), ("scope", "mcp:read mcp:write")],
    )
    .await;
    assert_eq!((status, error_of(&json)), (400, "invalid_scope"), "{json}");

    let (status, json) = client_credentials(&server, client, &[("resource", OTHER)]).await;
    assert_eq!((status, error_of(&json)), (400, "invalid_target"), "{json}");
}

/// With `require_initial_access_token`, registration without one is
/// refused early, and a client registered with one may use the grant.
async fn machine_policy_can_require_an_initial_access_token(db: Db) {
    let config = base_config(&machine_policy("require_initial_access_token = true"));
    let server = Server::start_with(db, &config).await;
    let (status, json) = register(&server, &machine_metadata(), None).await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(error_of(&json), "invalid_client_metadata", "{json}");

    let out = server.cli(&["clients", "initial-token", "--ttl", "3600"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let iat = stdout
        .lines()
        .find_map(|l| l.strip_prefix("initial_access_token: "))
        .expect("initial access token printed")
        .trim()
        .to_string();
    let (status, reg) = register(&server, &machine_metadata(), Some(&iat)).await;
    assert_eq!(status, 201, "{reg}");
    let (status, json) = client_credentials(
        &server,
        (
            reg["client_id"].as_str().unwrap(),
            reg["client_secret"].as_str().unwrap(),
        ),
        &[("resource", MCP)],
    )
    .await;
    assert_eq!(status, 200, "{json}");
}

// ---------------------------------------------------------------------------
// 5. Introspection as an oracle
// ---------------------------------------------------------------------------

const OPAQUE_SVC: &str = "opaque-svc";
const OPAQUE_SVC_SECRET: &str = "opaque-svc-secret-0123456789";
const PLAIN_SVC: &str = "plain-svc";
const PLAIN_SVC_SECRET: &str = "plain-svc-secret-0123456789";
const MCP_RS: &str = "mcp-rs";
const MCP_RS_SECRET: &str = "mcp-rs-secret-0123456789";

fn introspection_config() -> String {
    base_config(&format!(
        r#"
[[tenants.clients]]
client_id = "{OPAQUE_SVC}"
secret = "{OPAQUE_SVC_SECRET}"
grant_types = ["client_credentials"]
access_token_format = "opaque"

[[tenants.clients]]
client_id = "{PLAIN_SVC}"
secret = "{PLAIN_SVC_SECRET}"
grant_types = ["client_credentials"]

[[tenants.clients]]
client_id = "{MCP_RS}"
secret = "{MCP_RS_SECRET}"
grant_types = ["client_credentials"]
resources = ["{MCP}"]
"#
    ))
}

async fn introspect_with(server: &Server, caller: (&str, &str), token: &str) -> Value {
    let res = http()
        .post(server.url("/introspect"))
        .basic_auth(caller.0, Some(caller.1))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect");
    assert_eq!(res.status().as_u16(), 200);
    res.json().await.expect("json")
}

/// A self-registered confidential client learns nothing about other
/// clients' tokens (JWT, opaque, refresh); an admin-configured client with
/// no `resources` list no longer sees every token either; the resource
/// server registered for the audience, and the token's own client, do.
async fn introspection_shows_a_token_only_to_its_client_or_its_resource(db: Db) {
    let server = Server::start_with(db, &introspection_config()).await;
    let browser = Browser::new();
    let user = login_public(&server, &browser, "mcp:read").await;
    let user_jwt = user["access_token"].as_str().unwrap().to_string();
    let user_refresh = user["refresh_token"].as_str().unwrap().to_string();
    let (status, opaque) = client_credentials(
        &server,
        (OPAQUE_SVC, OPAQUE_SVC_SECRET),
        &[("resource", MCP)],
    )
    .await;
    assert_eq!(status, 200, "{opaque}");
    let opaque = opaque["access_token"].as_str().unwrap().to_string();
    assert!(!opaque.contains('.'), "an opaque token");

    // A confidential client anyone can register (a web app).
    let (status, reg) = register(
        &server,
        &json!({
            "client_name": "Curious app",
            "redirect_uris": ["https://curious.example.com/cb"],
            "token_endpoint_auth_method": "client_secret_basic",
        }),
        None,
    )
    .await;
    assert_eq!(status, 201, "{reg}");
    let curious = (
        reg["client_id"].as_str().unwrap(),
        reg["client_secret"].as_str().unwrap(),
    );
    for (what, token) in [
        ("user JWT", &user_jwt),
        ("opaque", &opaque),
        ("refresh", &user_refresh),
    ] {
        assert_eq!(
            introspect_with(&server, curious, token).await,
            json!({"active": false}),
            "self-registered client introspecting another's {what} token"
        );
        assert_eq!(
            introspect_with(&server, (PLAIN_SVC, PLAIN_SVC_SECRET), token).await,
            json!({"active": false}),
            "unrestricted admin client introspecting another's {what} token"
        );
    }
    for token in [&user_jwt, &opaque] {
        let seen = introspect_with(&server, (MCP_RS, MCP_RS_SECRET), token).await;
        assert_eq!(seen["active"], true, "the resource server: {seen}");
    }
    let own = introspect_with(&server, (OPAQUE_SVC, OPAQUE_SVC_SECRET), &opaque).await;
    assert_eq!(own["active"], true, "its own token: {own}");
}

// ---------------------------------------------------------------------------
// 6. Audience of client assertions and ID-JAGs
// ---------------------------------------------------------------------------

const JWT_CLIENT: &str = "jwt-svc";
const IDP: &str = "https://idp.example.com";

fn public_jwk(key: &p256::SecretKey) -> Value {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let point = key.public_key().to_encoded_point(false);
    json!({
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    })
}

fn sign(key: &p256::SecretKey, typ: &str, claims: &Value) -> String {
    use p256::pkcs8::EncodePrivateKey;
    let der = key.to_pkcs8_der().expect("pkcs8");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    header.typ = Some(typ.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
    )
    .expect("sign")
}

fn audience_config(client_key: &p256::SecretKey, idp_key: &p256::SecretKey, extra: &str) -> String {
    let jwks = |k| json!({"keys": [public_jwk(k)]}).to_string();
    base_config(&format!(
        r#"
[[tenants.clients]]
client_id = "{JWT_CLIENT}"
grant_types = ["client_credentials", "{JWT_BEARER}"]
token_endpoint_auth_method = "private_key_jwt"
jwks = {client_jwks}

[[tenants.trusted_issuers]]
issuer = "{IDP}"
jwks = {idp_jwks}
{extra}"#,
        client_jwks = toml_inline(&jwks(client_key)),
        idp_jwks = toml_inline(&jwks(idp_key)),
    ))
}

/// A JSON object as a TOML inline table (strings and arrays only).
fn toml_inline(json_text: &str) -> String {
    fn conv(v: &Value) -> String {
        match v {
            Value::Object(m) => format!(
                "{{ {} }}",
                m.iter()
                    .map(|(k, v)| format!("{k} = {}", conv(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Array(a) => format!("[{}]", a.iter().map(conv).collect::<Vec<_>>().join(", ")),
            other => other.to_string(),
        }
    }
    conv(&serde_json::from_str(json_text).expect("json"))
}

fn client_assertion(key: &p256::SecretKey, aud: Value) -> String {
    let t = now();
    sign(
        key,
        "JWT",
        &json!({
            "iss": JWT_CLIENT, "sub": JWT_CLIENT, "aud": aud,
            "jti": uuid::Uuid::new_v4().to_string(), "iat": t, "exp": t + 60,
        }),
    )
}

async fn post_with_assertion(
    server: &Server,
    path: &str,
    form: &[(&str, &str)],
    assertion: &str,
) -> (u16, Value) {
    let mut form = form.to_vec();
    form.extend_from_slice(&[
        ("client_id", JWT_CLIENT),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
    ]);
    let res = http()
        .post(server.url(path))
        .form(&form)
        .send()
        .await
        .expect("post");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn token_with_assertion(server: &Server, assertion: &str) -> (u16, Value) {
    post_with_assertion(
        server,
        "/token",
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        assertion,
    )
    .await
}

/// RFC 7523bis: `aud` must be the issuer alone. An array naming another
/// server beside us, the token endpoint URL (by default) and another
/// endpoint's URL are refused at the token endpoint and at introspection;
/// the issuer, as a string or a one-element array, is accepted.
async fn client_assertion_audience_must_be_the_issuer_alone(db: Db) {
    let client_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let idp_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    // Many refused assertions in a row: lift the client-authentication
    // throttle, which is not what this test is about.
    let server = Server::start_with_env(
        db,
        &audience_config(&client_key, &idp_key, ""),
        &[
            ("GATEHOUSE_MAX_FAILURES", "1000"),
            ("GATEHOUSE_MAX_FAILURES_PER_SOURCE", "1000"),
        ],
    )
    .await;
    let issuer = server.base.clone();
    for aud in [
        json!(["https://attacker.example.com", issuer]),
        json!([issuer, "https://attacker.example.com"]),
        json!(server.url("/token")),
        json!(server.url("/introspect")),
        json!("https://attacker.example.com"),
    ] {
        let (status, json) =
            token_with_assertion(&server, &client_assertion(&client_key, aud.clone())).await;
        assert_eq!(
            (status, error_of(&json)),
            (401, "invalid_client"),
            "aud {aud}: {json}"
        );
        let (status, json) = post_with_assertion(
            &server,
            "/introspect",
            &[("token", "x")],
            &client_assertion(&client_key, aud.clone()),
        )
        .await;
        assert_eq!(status, 401, "introspection with aud {aud}: {json}");
    }
    for aud in [json!(issuer), json!([issuer])] {
        let (status, json) =
            token_with_assertion(&server, &client_assertion(&client_key, aud.clone())).await;
        assert_eq!(status, 200, "aud {aud}: {json}");
    }
    let (status, json) = post_with_assertion(
        &server,
        "/introspect",
        &[("token", "x")],
        &client_assertion(&client_key, json!(issuer)),
    )
    .await;
    assert_eq!(status, 200, "introspection with the issuer: {json}");
}

/// `accept_token_endpoint_audience` lets older clients name the token
/// endpoint URL; arrays stay refused.
async fn token_endpoint_audience_only_where_the_tenant_allows_it(db: Db) {
    let client_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let idp_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let extra = "\n[tenants.client_assertion]\naccept_token_endpoint_audience = true\n";
    let server = Server::start_with(db, &audience_config(&client_key, &idp_key, extra)).await;
    let token_endpoint = server.url("/token");
    let (status, json) = token_with_assertion(
        &server,
        &client_assertion(&client_key, json!(token_endpoint)),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let (status, json) = token_with_assertion(
        &server,
        &client_assertion(
            &client_key,
            json!(["https://attacker.example.com", token_endpoint]),
        ),
    )
    .await;
    assert_eq!((status, error_of(&json)), (401, "invalid_client"), "{json}");
}

/// The ID-JAG redeemed with the jwt-bearer grant: same rule, its `aud`
/// must be our issuer alone.
async fn id_jag_audience_must_be_the_issuer_alone(db: Db) {
    let client_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let idp_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let server = Server::start_with(db, &audience_config(&client_key, &idp_key, "")).await;
    let id_jag = |aud: Value| {
        let t = now();
        sign(
            &idp_key,
            "oauth-id-jag+jwt",
            &json!({
                "iss": IDP, "sub": "alice", "aud": aud, "client_id": JWT_CLIENT,
                "jti": uuid::Uuid::new_v4().to_string(), "iat": t, "exp": t + 300,
                "resource": MCP, "scope": "mcp:read",
            }),
        )
    };
    let redeem = |assertion: String| {
        let server = &server;
        let client_key = &client_key;
        async move {
            post_with_assertion(
                server,
                "/token",
                &[("grant_type", JWT_BEARER), ("assertion", &assertion)],
                &client_assertion(client_key, json!(server.base)),
            )
            .await
        }
    };
    let (status, json) = redeem(id_jag(json!(["https://attacker.example.com", server.base]))).await;
    assert_eq!((status, error_of(&json)), (400, "invalid_grant"), "{json}");
    let (status, json) = redeem(id_jag(json!(server.base))).await;
    assert_eq!(status, 200, "{json}");
}

// ---------------------------------------------------------------------------
// 11. offline_access belongs to the grant
// ---------------------------------------------------------------------------

/// `offline_access` still yields a refresh token, but neither the access
/// token, nor the token response's `scope`, nor introspection, nor a
/// refreshed token carries it.
async fn offline_access_stays_out_of_access_tokens(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let tokens = login_public(&server, &browser, "openid offline_access mcp:read").await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().expect("a refresh token");
    assert_eq!(tokens["scope"], "mcp:read openid", "{tokens}");
    assert_eq!(jwt_claims(access)["scope"], "mcp:read openid");
    assert_eq!(
        introspect(&server, access).await["scope"],
        "mcp:read openid"
    );

    let (status, refreshed) = token_request(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", PUBLIC_CLIENT),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(refreshed["scope"], "mcp:read openid", "{refreshed}");
    assert_eq!(
        jwt_claims(refreshed["access_token"].as_str().unwrap())["scope"],
        "mcp:read openid"
    );
}

// ---------------------------------------------------------------------------
// Security webhook
// ---------------------------------------------------------------------------

/// One delivery the receiver saw.
#[derive(Clone, Debug)]
struct Delivery {
    signature: String,
    event_id: String,
    body: Vec<u8>,
    answered: u16,
}

/// The operator's endpoint: a real HTTP listener in this process that
/// answers `fail_first` deliveries with 500, then 200.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        use axum::body::Bytes;
        use axum::http::HeaderMap;
        let seen: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let state = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let seen = state.clone();
                async move {
                    let mut seen = seen.lock().unwrap();
                    let answered = if seen.len() < fail_first { 500 } else { 200 };
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    seen.push(Delivery {
                        signature: header("gatehouse-signature"),
                        event_id: header("gatehouse-event-id"),
                        body: body.to_vec(),
                        answered,
                    });
                    axum::http::StatusCode::from_u16(answered).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Receiver { url, seen }
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("GATEHOUSE_SECURITY_WEBHOOK_URL", self.url.as_str()),
            ("GATEHOUSE_SECURITY_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ]
    }

    /// Waits (bounded) until a delivery answered 200 carries an event of `kind`.
    async fn accepted(&self, kind: &str) -> (Delivery, Value) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.seen.lock().unwrap().iter().find_map(|d| {
                let event: Value = serde_json::from_slice(&d.body).ok()?;
                (d.answered == 200 && event["kind"] == kind).then(|| (d.clone(), event))
            });
            if let Some(found) = found {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} event accepted; saw {:?}",
                self.seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn deliveries_of(&self, event_id: &str) -> Vec<Delivery> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.event_id == event_id)
            .cloned()
            .collect()
    }
}

/// What a receiver does: recompute HMAC-SHA256 over "<t>.<body>" and
/// compare, in constant time, with the v1 value.
fn verify_signature(delivery: &Delivery) {
    use hmac::{Hmac, Mac};
    let (mut t, mut v1) = (None, None);
    for part in delivery.signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_string()),
            Some(("v1", value)) => v1 = Some(value.to_string()),
            _ => {}
        }
    }
    let (t, v1) = (t.expect("t="), v1.expect("v1="));
    assert!(
        (now() - t.parse::<i64>().unwrap()).abs() < 300,
        "fresh timestamp"
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&delivery.body);
    let expected: Vec<u8> = (0..v1.len() / 2)
        .map(|i| u8::from_str_radix(&v1[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    mac.verify_slice(&expected).expect("signature verifies");
}

/// Refresh-token reuse reaches the operator's webhook: signed, with the
/// event's kind, severity, tenant, client, subject, source, time and id,
/// and delivered again after the receiver first answered 500.
async fn refresh_reuse_reaches_the_security_webhook_signed_and_retried(db: Db) {
    let receiver = Receiver::start(1).await;
    let server = Server::start_with_env(db, &base_config(""), &receiver.env()).await;
    let browser = Browser::new();
    let tokens = login_public(&server, &browser, "mcp:read").await;
    let first = tokens["refresh_token"].as_str().unwrap();
    let refresh = |rt: String| {
        let server = &server;
        async move {
            token_request(
                server,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", PUBLIC_CLIENT),
                ],
                None,
            )
            .await
        }
    };
    let (status, json) = refresh(first.to_string()).await;
    assert_eq!(status, 200, "{json}");
    let (status, json) = refresh(first.to_string()).await;
    assert_eq!(
        (status, error_of(&json)),
        (400, "invalid_grant"),
        "reuse: {json}"
    );

    let (delivery, event) = receiver.accepted("refresh_reuse").await;
    verify_signature(&delivery);
    assert_eq!(event["class"], "security", "{event}");
    assert_eq!(event["severity"], "high", "{event}");
    assert_eq!(event["tenant"], "default", "{event}");
    assert_eq!(event["client_id"], PUBLIC_CLIENT, "{event}");
    assert_eq!(
        event["subject"],
        jwt_claims(tokens["access_token"].as_str().unwrap())["sub"],
        "{event}"
    );
    assert_eq!(event["source"], "127.0.0.1", "{event}");
    assert!(
        event["time"]
            .as_i64()
            .is_some_and(|t| (now() - t).abs() < 300),
        "{event}"
    );
    assert_eq!(event["id"], delivery.event_id.as_str(), "{event}");
    let attempts = receiver.deliveries_of(&delivery.event_id);
    assert!(
        attempts.len() >= 2 && attempts[0].answered == 500,
        "a retry after the 500: {attempts:?}"
    );
    assert!(
        attempts.iter().all(|d| d.body == delivery.body),
        "the same event each time"
    );
}

/// A replayed authorization code reaches the webhook as `code_replay`.
async fn code_replay_reaches_the_security_webhook(db: Db) {
    let receiver = Receiver::start(0).await;
    let server = Server::start_with_env(db, &base_config(""), &receiver.env()).await;
    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[]);
    let code = browser
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .code();
    redeem_code(&server, PUBLIC_CLIENT, REDIRECT, &code, &p).await;
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
    assert_eq!((status, error_of(&json)), (400, "invalid_grant"), "{json}");
    let (delivery, event) = receiver.accepted("code_replay").await;
    verify_signature(&delivery);
    assert_eq!(event["severity"], "high", "{event}");
    assert_eq!(event["client_id"], PUBLIC_CLIENT, "{event}");
}

/// A refused machine grant is a low-severity security event.
async fn refused_machine_grant_reaches_the_security_webhook(db: Db) {
    let receiver = Receiver::start(0).await;
    let allowing = base_config(&machine_policy(&format!(
        "resources = [\"{MCP}\"]\nscopes = [\"mcp:read\"]"
    )));
    let server = Server::start_with_env(db, &allowing, &receiver.env()).await;
    let (status, reg) = register(&server, &machine_metadata(), None).await;
    assert_eq!(status, 201, "{reg}");
    let (status, json) = client_credentials(
        &server,
        (
            reg["client_id"].as_str().unwrap(),
            reg["client_secret"].as_str().unwrap(),
        ),
        &[("resource", MCP), ("scope", "mcp:write")],
    )
    .await;
    assert_eq!((status, error_of(&json)), (400, "invalid_scope"), "{json}");
    let (delivery, event) = receiver.accepted("machine_grant_refused").await;
    verify_signature(&delivery);
    assert_eq!(event["severity"], "low", "{event}");
    assert_eq!(event["client_id"], reg["client_id"], "{event}");
    assert_eq!(event["detail"]["reason"], "scope_not_allowed", "{event}");
}

on_both_databases!(
    self_registered_client_cannot_register_client_credentials_by_default,
    machine_grant_is_refused_at_use_for_clients_registered_earlier,
    machine_policy_bounds_resources_and_scopes,
    machine_policy_can_require_an_initial_access_token,
    introspection_shows_a_token_only_to_its_client_or_its_resource,
    client_assertion_audience_must_be_the_issuer_alone,
    token_endpoint_audience_only_where_the_tenant_allows_it,
    id_jag_audience_must_be_the_issuer_alone,
    offline_access_stays_out_of_access_tokens,
    refresh_reuse_reaches_the_security_webhook_signed_and_retried,
    code_replay_reaches_the_security_webhook,
    refused_machine_grant_reaches_the_security_webhook,
);
