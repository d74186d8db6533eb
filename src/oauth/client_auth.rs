//! Client authentication at the token, introspection and revocation
//! endpoints: client_secret_basic, client_secret_post, private_key_jwt
//! (RFC 7523) and `none` for public clients.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use gatehouse_connectors::password::{self, Busy};
use hmac::{Hmac, Mac};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::future::Cache;
use rand::RngCore;
use serde::Deserialize;
use sha2::Sha256;

use super::client_metadata_document::{DocumentCache, LookupError};
use super::errors::{ErrorCode, OAuthError, OAuthResult};
use super::params::{has_control, Params};
use crate::http::SourceAddr;
use crate::limits::throttle::{self, Kind, Throttled};
use crate::store::{ClientRecord, DynStore, StoreError};
use crate::telemetry::metrics::metrics;
use crate::tenants::{AuthMethod, ClientMetadata, Tenant};

pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Clone, Debug)]
pub struct Client {
    pub tenant_id: String,
    pub client_id: String,
    pub secret_hash: Option<String>,
    pub meta: ClientMetadata,
    pub source: String,
}

impl Client {
    pub fn from_record(rec: ClientRecord) -> Result<Client, StoreError> {
        let meta: ClientMetadata = serde_json::from_str(&rec.metadata)?;
        Ok(Client {
            tenant_id: rec.tenant_id,
            client_id: rec.client_id,
            secret_hash: rec.secret_hash,
            meta,
            source: rec.source,
        })
    }
}

/// Clients by id, and secrets already verified. The secret cache is keyed by
/// an HMAC (with a per-process random key) over the client, its current
/// secret hash and the presented secret, so it never holds a secret and a
/// rotated secret misses at once.
#[derive(Clone)]
pub struct ClientCache {
    clients: Cache<(String, String), Arc<Client>>,
    /// Clients whose client_id is a metadata document URL; never stored.
    documents: DocumentCache,
    verified: Cache<[u8; 32], Arc<Verified>>,
    /// HMAC-SHA-256 keyed once with a per-process random key.
    mac: Hmac<Sha256>,
}

/// How long a verified secret is remembered.
const VERIFIED_TTL: Duration = Duration::from_secs(600);
/// After this, one request re-verifies while the others still hit, so a
/// busy client's entry is renewed before it expires instead of every
/// concurrent request missing (and hashing) at the same moment.
const VERIFIED_REFRESH_AFTER: Duration = Duration::from_secs(540);

struct Verified {
    at: std::time::Instant,
    refreshing: std::sync::atomic::AtomicBool,
}

impl Verified {
    fn new() -> Arc<Verified> {
        Arc::new(Verified {
            at: std::time::Instant::now(),
            refreshing: Default::default(),
        })
    }

    fn fresh(&self) -> bool {
        self.at.elapsed() < VERIFIED_REFRESH_AFTER
    }
}

impl ClientCache {
    pub fn new(ttl: Duration) -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let mac = match Hmac::<Sha256>::new_from_slice(&key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        Self {
            clients: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            documents: DocumentCache::new(),
            verified: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(VERIFIED_TTL)
                .build(),
            mac,
        }
    }

    pub async fn find(
        &self,
        store: &DynStore,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<Arc<Client>>, StoreError> {
        // No client id holds a control character (the configuration and
        // registration refuse them): never look one up.
        if has_control(client_id) {
            return Ok(None);
        }
        let key = (tenant_id.to_string(), client_id.to_string());
        let cached = self.clients.get(&key).await;
        metrics().cache("clients", cached.is_some());
        if let Some(c) = cached {
            return Ok(Some(c));
        }
        // Misses are not cached: a client registered on another node must
        // work here at once.
        match store.get_client(tenant_id, client_id).await? {
            Some(rec) => {
                let client = Arc::new(Client::from_record(rec)?);
                self.clients.insert(key, client.clone()).await;
                Ok(Some(client))
            }
            None => Ok(None),
        }
    }

    /// Like `find`, and a URL client_id the store does not know is looked
    /// up as a Client ID Metadata Document (from memory, or fetched).
    pub async fn find_or_fetch(
        &self,
        store: &DynStore,
        tenant: &Tenant,
        client_id: &str,
    ) -> Result<Option<Arc<Client>>, LookupError> {
        if has_control(client_id) {
            return Ok(None);
        }
        match self.find(store, &tenant.id, client_id).await? {
            Some(client) => Ok(Some(client)),
            None => Ok(self.documents.find(tenant, client_id).await?),
        }
    }

    pub async fn invalidate(&self, tenant_id: &str, client_id: &str) {
        self.clients
            .invalidate(&(tenant_id.to_string(), client_id.to_string()))
            .await;
    }

    /// Whether this exact secret was verified for this client recently
    /// (no hashing needed).
    pub async fn verified_recently(&self, client: &Client, presented: &str) -> bool {
        let Some(phc) = client.secret_hash.as_deref() else {
            return false;
        };
        let digest = self.digest(client, phc, presented);
        let hit = match self.verified.get(&digest).await {
            // Near its end, the first caller to see it renews it.
            Some(v) => v.fresh() || v.refreshing.swap(true, std::sync::atomic::Ordering::AcqRel),
            None => false,
        };
        metrics().cache("verified_secrets", hit);
        hit
    }

    /// Checks the secret with argon2 on the process's bounded hashing pool
    /// (`gatehouse_connectors::password`); `Busy` when the pool is full.
    pub async fn verify_secret(&self, client: &Client, presented: &str) -> Result<bool, Busy> {
        let Some(phc) = client.secret_hash.as_deref() else {
            return Ok(false);
        };
        let digest = self.digest(client, phc, presented);
        if self.verified.get(&digest).await.is_some_and(|v| v.fresh()) {
            return Ok(true);
        }
        let ok = password::verify(presented, phc).await?;
        if ok {
            self.verified.insert(digest, Verified::new()).await;
        }
        Ok(ok)
    }

    fn digest(&self, client: &Client, phc: &str, presented: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        for part in [
            client.tenant_id.as_str(),
            client.client_id.as_str(),
            phc,
            presented,
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }
}

/// What the request presented, before any lookup.
#[derive(Debug)]
enum Presented {
    Basic {
        client_id: String,
        secret: String,
    },
    Post {
        client_id: String,
        secret: String,
    },
    Assertion {
        client_id: Option<String>,
        assertion: String,
    },
    PublicId {
        client_id: String,
    },
}

fn presented(headers: &HeaderMap, params: &Params) -> OAuthResult<Presented> {
    let basic = basic_credentials(headers)?;
    let body_secret = params.get("client_secret");
    let assertion = params.get("client_assertion");
    let body_id = params.get("client_id");
    let methods = [basic.is_some(), body_secret.is_some(), assertion.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if methods > 1 {
        return Err(OAuthError::invalid_request(
            "use exactly one client authentication method",
        ));
    }
    if let Some((id, secret)) = basic {
        if let Some(body_id) = body_id {
            if body_id != id {
                return Err(OAuthError::invalid_request(
                    "client_id in the body does not match the Authorization header",
                ));
            }
        }
        return Ok(Presented::Basic {
            client_id: id,
            secret,
        });
    }
    if let Some(secret) = body_secret {
        let id =
            body_id.ok_or_else(|| OAuthError::invalid_request("client_secret needs client_id"))?;
        return Ok(Presented::Post {
            client_id: id.to_string(),
            secret: secret.to_string(),
        });
    }
    if let Some(assertion) = assertion {
        if params.get("client_assertion_type") != Some(JWT_BEARER_ASSERTION) {
            return Err(OAuthError::invalid_request(format!(
                "client_assertion_type must be {JWT_BEARER_ASSERTION}"
            )));
        }
        return Ok(Presented::Assertion {
            client_id: body_id.map(str::to_string),
            assertion: assertion.to_string(),
        });
    }
    match body_id {
        Some(id) => Ok(Presented::PublicId {
            client_id: id.to_string(),
        }),
        None => Err(OAuthError::invalid_client(
            "client authentication is required",
        )),
    }
}

/// RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
fn basic_credentials(headers: &HeaderMap) -> OAuthResult<Option<(String, String)>> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| OAuthError::invalid_client("malformed Authorization header"))?;
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Err(OAuthError::invalid_client("malformed Authorization header"));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "only the Basic scheme authenticates clients here",
        ));
    }
    let decoded = STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (id, secret) = (unescape(id), unescape(secret));
    if id.is_empty() || has_control(&id) || has_control(&secret) {
        return Err(OAuthError::invalid_client("malformed Basic credentials"));
    }
    Ok(Some((id, secret)))
}

/// Authenticates the calling client, returning it. The same rules hold at
/// every endpoint that authenticates clients (token, introspection,
/// revocation, device authorization): a private_key_jwt assertion's `aud`
/// is checked by [`super::audience::client_assertion_audiences`].
/// Failures are throttled per (client id, source) and per source
/// (`limits::throttle`): over the limit the answer is 429 `invalid_client`
/// with `Retry-After`, before the client is looked up or a hash computed.
pub async fn authenticate(
    app: &crate::AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    source: SourceAddr,
    params: &Params,
) -> OAuthResult<Arc<Client>> {
    let presented = presented(headers, params)?;
    if let Some(client) = recently_verified(app, tenant, &presented).await {
        return Ok(client);
    }
    let claimed_id = claimed_id(&presented)?;
    let attempt = throttle::begin(app, tenant, Kind::ClientAuth, &claimed_id, source)
        .await
        .map_err(throttled)?;
    let result = check_client(app, tenant, presented, &claimed_id, &attempt).await;
    match &result {
        Ok(_) => attempt.succeeded(app).await,
        Err(e) if e.code == ErrorCode::InvalidClient => attempt.failed(app, tenant).await,
        // Busy or storage trouble: not the client's failure.
        Err(_) => {}
    }
    result
}

/// A client secret this node verified recently (`ClientCache::verified_recently`)
/// is the right one: nothing is being guessed, so the throttle's counters
/// (a Redis round trip each with `GATEHOUSE_REDIS_URL`) are not consulted,
/// and a client's every token request costs no limits I/O. Anything else
/// takes the throttled path.
async fn recently_verified(
    app: &crate::AppState,
    tenant: &Tenant,
    presented: &Presented,
) -> Option<Arc<Client>> {
    let (Presented::Basic { client_id, secret } | Presented::Post { client_id, secret }) =
        presented
    else {
        return None;
    };
    let client = app
        .clients
        .find(&app.store, &tenant.id, client_id)
        .await
        .ok()??;
    let verified = client.meta.token_endpoint_auth_method.uses_secret()
        && app.clients.verified_recently(&client, secret).await;
    verified.then_some(client)
}

/// RFC 6585 §4 429 with `Retry-After`, carrying the RFC 6749 §5.2 error
/// `invalid_client` (the client was not authenticated), so standard clients
/// read it and back off.
fn throttled(t: Throttled) -> OAuthError {
    let mut e = OAuthError::invalid_client(format!(
        "{} Client authentication is refused for {} seconds.",
        t.message, t.retry_after
    ))
    .with_status(axum::http::StatusCode::TOO_MANY_REQUESTS)
    .with_retry_after(t.retry_after);
    e.challenge = None;
    e
}

fn busy() -> OAuthError {
    crate::telemetry::metrics::metrics().rate_limited("hash_queue");
    OAuthError::unavailable().with_retry_after(1)
}

fn claimed_id(presented: &Presented) -> OAuthResult<String> {
    Ok(match presented {
        Presented::Basic { client_id, .. }
        | Presented::Post { client_id, .. }
        | Presented::PublicId { client_id } => client_id.clone(),
        Presented::Assertion {
            client_id,
            assertion,
        } => match client_id {
            Some(id) => id.clone(),
            None => assertion_subject(assertion)?,
        },
    })
}

async fn check_client(
    app: &crate::AppState,
    tenant: &Tenant,
    presented: Presented,
    claimed_id: &str,
    attempt: &throttle::Attempt,
) -> OAuthResult<Arc<Client>> {
    let client = app
        .clients
        .find_or_fetch(&app.store, tenant, claimed_id)
        .await?
        .ok_or_else(|| {
            OAuthError::invalid_client("client authentication failed: unknown client")
        })?;
    let method = client.meta.token_endpoint_auth_method;
    match presented {
        Presented::Basic { secret, .. } | Presented::Post { secret, .. } => {
            if !method.uses_secret() {
                return Err(OAuthError::invalid_client(format!(
                    "this client authenticates with {}, not a client secret",
                    method.as_str()
                )));
            }
            // A secret seen recently costs no hash; otherwise hashing is
            // bounded per source and per process.
            let _slot = if app.clients.verified_recently(&client, &secret).await {
                None
            } else {
                attempt.hashing_slot(app, tenant).await.map_err(throttled)?
            };
            if !app
                .clients
                .verify_secret(&client, &secret)
                .await
                .map_err(|_| busy())?
            {
                return Err(OAuthError::invalid_client("client authentication failed"));
            }
        }
        Presented::Assertion { assertion, .. } => {
            if method != AuthMethod::PrivateKeyJwt {
                return Err(OAuthError::invalid_client(format!(
                    "this client authenticates with {}, not private_key_jwt",
                    method.as_str()
                )));
            }
            verify_assertion(app, tenant, &client, &assertion).await?;
        }
        Presented::PublicId { .. } => {
            if method != AuthMethod::None {
                return Err(OAuthError::invalid_client(format!(
                    "client authentication is required ({})",
                    method.as_str()
                )));
            }
        }
    }
    Ok(client)
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    aud: Option<serde_json::Value>,
    jti: Option<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
}

fn assertion_subject(assertion: &str) -> OAuthResult<String> {
    // Only to find which client's keys to check the signature with.
    let payload = assertion
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .ok_or_else(|| OAuthError::invalid_client("client_assertion is not a JWT"))?;
    payload
        .get("sub")
        .and_then(|s| s.as_str())
        .map(str::to_string)
        .ok_or_else(|| OAuthError::invalid_client("client_assertion has no sub"))
}

const ASSERTION_ALGS: [Algorithm; 6] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::EdDSA,
    Algorithm::RS384,
];
const MAX_ASSERTION_LIFETIME: i64 = 3600;
const SKEW: i64 = 60;

async fn verify_assertion(
    app: &crate::AppState,
    tenant: &Tenant,
    client: &Client,
    assertion: &str,
) -> OAuthResult<()> {
    let fail = |why: &str| OAuthError::invalid_client(format!("client_assertion rejected: {why}"));
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| fail("malformed JWT"))?;
    if !ASSERTION_ALGS.contains(&header.alg) {
        return Err(fail("signature algorithm not allowed"));
    }
    let jwks: JwkSet = client_keys(tenant, client, header.kid.as_deref())
        .await
        .map_err(|why| fail(&why))?;
    let candidates: Vec<_> = match &header.kid {
        Some(kid) => jwks
            .keys
            .iter()
            .filter(|k| k.common.key_id.as_deref() == Some(kid))
            .collect(),
        None => jwks.keys.iter().collect(),
    };
    let mut claims: Option<AssertionClaims> = None;
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let mut v = Validation::new(header.alg);
        v.validate_exp = false; // checked below against the server clock
        v.validate_nbf = false;
        // Checked below: one audience, this server's (not "any of").
        v.validate_aud = false;
        v.required_spec_claims = ["aud", "iss", "sub"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Ok(data) = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &v) {
            claims = Some(data.claims);
            break;
        }
    }
    let claims = claims.ok_or_else(|| fail("the signature did not verify"))?;
    super::audience::check_sole_audience(
        claims.aud.as_ref(),
        &super::audience::client_assertion_audiences(tenant),
    )
    .map_err(fail)?;
    if claims.iss != client.client_id || claims.sub != client.client_id {
        return Err(fail("iss and sub must both be the client_id"));
    }
    let now = app.now();
    let exp = claims.exp.ok_or_else(|| fail("exp is required"))?;
    if exp + SKEW <= now {
        return Err(fail("expired"));
    }
    if exp - now > MAX_ASSERTION_LIFETIME {
        return Err(fail("exp is too far in the future"));
    }
    if claims.nbf.is_some_and(|nbf| nbf - SKEW > now)
        || claims.iat.is_some_and(|iat| iat - SKEW > now)
    {
        return Err(fail("not yet valid"));
    }
    let jti = claims.jti.ok_or_else(|| fail("jti is required"))?;
    if has_control(&jti) {
        return Err(fail("jti holds a control character"));
    }
    let scope = format!("client_assertion:{}", client.client_id);
    if !app
        .store
        .remember_jti(&tenant.id, &scope, &jti, exp + SKEW, now)
        .await?
    {
        crate::telemetry::metrics::metrics().replay_detected(&tenant.id, "assertion_replay");
        return Err(fail("jti was already used"));
    }
    Ok(())
}

/// Keys fetched from clients' `jwks_uri`, and which URIs were fetched in the
/// last 30 s (an unknown `kid` refetches at most that often).
fn fetched_keys() -> &'static (Cache<String, JwkSet>, Cache<String, ()>) {
    static CACHES: std::sync::OnceLock<(Cache<String, JwkSet>, Cache<String, ()>)> =
        std::sync::OnceLock::new();
    CACHES.get_or_init(|| {
        (
            Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
        )
    })
}

/// The most a client's key set may weigh.
const MAX_JWKS_BYTES: usize = 64 * 1024;

/// The client's public keys: registered inline, or fetched from its
/// `jwks_uri` under the tenant's address policy (no redirects, bounded size
/// and time, resolved addresses checked), cached five minutes.
async fn client_keys(
    tenant: &Tenant,
    client: &Client,
    kid: Option<&str>,
) -> Result<JwkSet, String> {
    if let Some(jwks) = &client.meta.jwks {
        return serde_json::from_value(jwks.clone())
            .map_err(|_| "the client's registered keys are unusable".to_string());
    }
    let Some(uri) = &client.meta.jwks_uri else {
        return Err("the client has no registered keys".into());
    };
    let (keys, recent) = fetched_keys();
    // Per tenant: each tenant's address policy decides what may be fetched.
    let cache_key = format!("{}\n{uri}", tenant.id);
    let cached = keys.get(&cache_key).await;
    metrics().cache("client_jwks", cached.is_some());
    if let Some(cached) = cached {
        let has_kid = kid.is_none_or(|k| cached.find(k).is_some());
        if has_kid || recent.get(&cache_key).await.is_some() {
            return Ok(cached);
        }
    }
    use super::client_metadata_document as fetch;
    let policy = &tenant.settings.client_id_metadata;
    let url = fetch::check_client_id_url(uri, policy).map_err(|e| format!("jwks_uri: {}", e.0))?;
    let addrs = fetch::resolve_checked(&url, policy)
        .await
        .map_err(|e| format!("jwks_uri: {}", e.0))?;
    let got = fetch::fetch_limited(&url, &addrs, MAX_JWKS_BYTES, "the client's jwks_uri")
        .await
        .map_err(|e| e.0)?;
    let set: JwkSet = serde_json::from_slice(&got.body)
        .map_err(|_| "the client's jwks_uri is not a JWK Set".to_string())?;
    keys.insert(cache_key.clone(), set.clone()).await;
    recent.insert(cache_key, ()).await;
    Ok(set)
}
