//! A tiny authorization server on loopback for the verifier tests: serves
//! RFC 8414 metadata, a JWKS and an introspection endpoint from state the
//! test controls, and counts requests. Keys are generated per test.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use gatehouse_verify::{IntrospectionConfig, Verifier, VerifierConfig};

pub const RESOURCE: &str = "https://mcp.example.com/mcp";
pub const RS_CLIENT: &str = "mcp-server";
pub const RS_SECRET: &str = "mcp server secret/+&=";

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A signing key with its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Value,
    /// The public key bytes a confused verifier might use as an HMAC secret.
    pub public_bytes: Vec<u8>,
}

impl TestKey {
    pub fn es256(kid: &str) -> TestKey {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::EncodePrivateKey;
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let der = secret.to_pkcs8_der().unwrap();
        let point = secret.public_key().to_encoded_point(false);
        let (x, y) = (point.x().unwrap(), point.y().unwrap());
        TestKey {
            kid: kid.to_string(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            }),
            public_bytes: point.as_bytes().to_vec(),
        }
    }

    pub fn ed25519(kid: &str) -> TestKey {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let der = signing.to_pkcs8_der().unwrap();
        let public = signing.verifying_key().to_bytes();
        TestKey {
            kid: kid.to_string(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            jwk: json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(public),
            }),
            public_bytes: public.to_vec(),
        }
    }

    /// A fixed 2048-bit test key (tests/fixtures/rsa-test-key.pem, made
    /// with `openssl genrsa -traditional 2048`): the SDK's tests need no RSA
    /// implementation of their own, and the `rsa` crate (RUSTSEC-2023-0071)
    /// stays out of the tree.
    pub fn rs256(kid: &str) -> TestKey {
        const PEM: &[u8] = include_bytes!("../fixtures/rsa-test-key.pem");
        const MODULUS_HEX: &str =
            "D1A2C95CA3FD1EDE4EC47A22A3B92894BA5F62F017D4CB61CF93F5987D91CD0A\
30B717BE1C37FD1C565E0BC3DBDB2949ECFA8837788A1FAD6B7896C4C36CABA0\
5576A66C9C35A86E8DAD8EC76A8229C86A55FC905C3B3FDE01870EA82EB9E06A\
5CE402FC2ECF2A18A67574E2EA88481A3E8E40BE524099F27C4CF8ADBF638D8E\
2B555B0A93BC6FCDFA91AC395090D3179D41EFE2D4FC21B7E91360C22F6FC102\
4A5603D101F0680D812F89FB3F12DD59897F36D454F8F828FFC09143F17CB94B\
5DD3436694B5348D884B0ECC377F0203E4778CF3C9A43CBE5586052669500891\
6A953C36AC49ABD5E43DA73CFC161E236975F446362986D1D8476200BECB8241";
        let n: Vec<u8> = (0..MODULUS_HEX.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&MODULUS_HEX[i..i + 2], 16).unwrap())
            .collect();
        TestKey {
            kid: kid.to_string(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(PEM).unwrap(),
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(&n),
                "e": URL_SAFE_NO_PAD.encode([1u8, 0, 1]),
            }),
            public_bytes: n,
        }
    }

    /// An RFC 9068 header for this key.
    pub fn header(&self) -> Header {
        let mut h = Header::new(self.alg);
        h.typ = Some("at+jwt".into());
        h.kid = Some(self.kid.clone());
        h
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(self.header(), claims)
    }

    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// Builds a compact JWS by hand (for headers jsonwebtoken will not write).
pub fn raw_jwt(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap()),
        signature
    )
}

#[derive(Default)]
pub struct Counters {
    pub rfc8414: AtomicUsize,
    pub openid: AtomicUsize,
    pub jwks: AtomicUsize,
    pub introspection: AtomicUsize,
}

pub struct IssuerState {
    /// The issuer the metadata document claims (tests may make it lie).
    pub advertised_issuer: Mutex<String>,
    pub serve_rfc8414: Mutex<bool>,
    pub jwks: Mutex<Vec<Value>>,
    pub jwks_cache_control: Mutex<String>,
    /// Introspection answers by token; unknown tokens are inactive.
    pub introspection: Mutex<HashMap<String, Value>>,
    pub counters: Counters,
    base: String,
    tenant_path: String,
}

/// The test authorization server.
pub struct TestIssuer {
    pub base: String,
    pub issuer: String,
    pub state: Arc<IssuerState>,
    pub key: TestKey,
}

impl TestIssuer {
    /// An issuer at the server root with one ES256 key (`kid-1`).
    pub async fn start() -> TestIssuer {
        Self::start_at("").await
    }

    /// An issuer with a path (`/t/acme`), discovered by path insertion.
    pub async fn start_at(tenant_path: &str) -> TestIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let issuer = format!("{base}{tenant_path}");
        let key = TestKey::es256("kid-1");
        let state = Arc::new(IssuerState {
            advertised_issuer: Mutex::new(issuer.clone()),
            serve_rfc8414: Mutex::new(true),
            jwks: Mutex::new(vec![key.jwk.clone()]),
            jwks_cache_control: Mutex::new("public, max-age=300".into()),
            introspection: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            base: base.clone(),
            tenant_path: tenant_path.to_string(),
        });
        let app = Router::new()
            .route("/.well-known/oauth-authorization-server", get(rfc8414_root))
            .route(
                "/.well-known/oauth-authorization-server/t/{tenant}",
                get(rfc8414_tenant),
            )
            .route("/.well-known/openid-configuration", get(openid))
            .route(
                "/t/{tenant}/.well-known/openid-configuration",
                get(openid_tenant),
            )
            .route("/jwks.json", get(jwks))
            .route("/introspect", post(introspect))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestIssuer {
            base,
            issuer,
            state,
            key,
        }
    }

    pub fn config(&self) -> VerifierConfig {
        VerifierConfig::new(&self.issuer, RESOURCE)
    }

    pub fn config_with_introspection(&self) -> VerifierConfig {
        self.config()
            .with_introspection(IntrospectionConfig::new(RS_CLIENT, RS_SECRET))
    }

    pub async fn verifier(&self) -> Verifier {
        Verifier::discover(self.config()).await.unwrap()
    }

    /// Valid RFC 9068 claims for this issuer and [`RESOURCE`].
    pub fn claims(&self) -> Value {
        let now = now();
        json!({
            "iss": self.issuer,
            "sub": "3f0c6f7e-7f3b-4a57-9a8e-2b1f3c4d5e6f",
            "aud": RESOURCE,
            "client_id": "demo-public",
            "scope": "mcp:read openid",
            "jti": format!("jti-{}", rand::random::<u64>()),
            "iat": now,
            "exp": now + 600,
            "auth_time": now - 5,
        })
    }

    /// A valid token signed with the default key.
    pub fn token(&self) -> String {
        self.key.sign(&self.claims())
    }

    pub fn publish(&self, key: &TestKey) {
        self.state.jwks.lock().unwrap().push(key.jwk.clone());
    }

    /// Registers an opaque token's introspection answer.
    pub fn set_introspection(&self, token: &str, answer: Value) {
        self.state
            .introspection
            .lock()
            .unwrap()
            .insert(token.to_string(), answer);
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.counters.jwks.load(Ordering::SeqCst)
    }

    pub fn introspection_hits(&self) -> usize {
        self.state.counters.introspection.load(Ordering::SeqCst)
    }
}

fn metadata(state: &IssuerState) -> Value {
    let issuer = state.advertised_issuer.lock().unwrap().clone();
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{}/jwks.json", state.base),
        "introspection_endpoint": format!("{}/introspect", state.base),
        "token_endpoint": format!("{}{}/token", state.base, state.tenant_path),
    })
}

async fn rfc8414_root(State(state): State<Arc<IssuerState>>) -> Response {
    state.counters.rfc8414.fetch_add(1, Ordering::SeqCst);
    if !*state.serve_rfc8414.lock().unwrap() || !state.tenant_path.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(metadata(&state)).into_response()
}

async fn rfc8414_tenant(
    State(state): State<Arc<IssuerState>>,
    Path(tenant): Path<String>,
) -> Response {
    state.counters.rfc8414.fetch_add(1, Ordering::SeqCst);
    if !*state.serve_rfc8414.lock().unwrap() || state.tenant_path != format!("/t/{tenant}") {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(metadata(&state)).into_response()
}

async fn openid(State(state): State<Arc<IssuerState>>) -> Response {
    state.counters.openid.fetch_add(1, Ordering::SeqCst);
    if !state.tenant_path.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(metadata(&state)).into_response()
}

async fn openid_tenant(
    State(state): State<Arc<IssuerState>>,
    Path(tenant): Path<String>,
) -> Response {
    state.counters.openid.fetch_add(1, Ordering::SeqCst);
    if state.tenant_path != format!("/t/{tenant}") {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(metadata(&state)).into_response()
}

async fn jwks(State(state): State<Arc<IssuerState>>) -> Response {
    state.counters.jwks.fetch_add(1, Ordering::SeqCst);
    let keys = state.jwks.lock().unwrap().clone();
    let cache_control = state.jwks_cache_control.lock().unwrap().clone();
    (
        [(header::CACHE_CONTROL, cache_control)],
        Json(json!({ "keys": keys })),
    )
        .into_response()
}

async fn introspect(
    State(state): State<Arc<IssuerState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    state.counters.introspection.fetch_add(1, Ordering::SeqCst);
    // client_secret_basic, with RFC 6749 §2.3.1 form-urlencoding.
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            form_encode(RS_CLIENT),
            form_encode(RS_SECRET)
        ))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let token = form.get("token").cloned().unwrap_or_default();
    if token == "explode" {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let answer = state
        .introspection
        .lock()
        .unwrap()
        .get(&token)
        .cloned()
        .unwrap_or_else(|| json!({"active": false}));
    Json(answer).into_response()
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
