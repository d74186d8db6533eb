//! The issuer's signing keys: fetched from `jwks_uri`, cached, refetched
//! when stale (in the background) or when a token names an unknown `kid`
//! (at most once per minimum interval).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::VerifyError;
use crate::fetch;

/// JWKS freshness: the server's `max-age` (Gatehouse: 300 s), or this
/// default without one, bounded below by the minimum refresh interval (and
/// [`FLOOR`]) and above by [`MAX_MAX_AGE`]. After a failed background
/// refresh the old keys are kept for the minimum interval before retrying.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const FLOOR: Duration = Duration::from_secs(1);

/// One usable public key.
pub(crate) struct VerificationKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

#[derive(Clone)]
struct KeySet {
    keys: Arc<HashMap<String, Arc<VerificationKey>>>,
    /// When a background refresh should be started.
    stale_at: Instant,
}

pub(crate) struct JwksCache {
    inner: Arc<Inner>,
}

struct Inner {
    uri: String,
    http: reqwest::Client,
    allowed: Vec<Algorithm>,
    min_refresh_interval: Duration,
    current: RwLock<KeySet>,
    /// Serialises fetches; holds when the last unknown-kid refresh started.
    miss_refresh: Mutex<Option<Instant>>,
    background_running: AtomicBool,
}

impl JwksCache {
    /// Fetches the key set once; fails if it cannot be loaded.
    pub async fn load(
        uri: String,
        http: reqwest::Client,
        allowed: Vec<Algorithm>,
        min_refresh_interval: Duration,
    ) -> Result<Self, VerifyError> {
        let set = fetch_keys(&http, &uri, &allowed, min_refresh_interval).await?;
        Ok(JwksCache {
            inner: Arc::new(Inner {
                uri,
                http,
                allowed,
                min_refresh_interval,
                current: RwLock::new(set),
                miss_refresh: Mutex::new(None),
                background_running: AtomicBool::new(false),
            }),
        })
    }

    /// The key named `kid`, refreshing the set if it is unknown and a
    /// refresh is allowed.
    pub async fn key(&self, kid: &str) -> Result<Arc<VerificationKey>, VerifyError> {
        let set = self.inner.snapshot();
        if Instant::now() >= set.stale_at {
            self.refresh_in_background();
        }
        if let Some(key) = set.keys.get(kid) {
            return Ok(Arc::clone(key));
        }
        self.refresh_for_unknown(kid).await
    }

    /// The kids currently cached (for diagnostics and tests).
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.inner.snapshot().keys.keys().cloned().collect();
        kids.sort();
        kids
    }

    async fn refresh_for_unknown(&self, kid: &str) -> Result<Arc<VerificationKey>, VerifyError> {
        let mut last = self.inner.miss_refresh.lock().await;
        // Another task may have refreshed while this one waited.
        if let Some(key) = self.inner.snapshot().keys.get(kid) {
            return Ok(Arc::clone(key));
        }
        if let Some(at) = *last {
            if at.elapsed() < self.inner.min_refresh_interval {
                return Err(VerifyError::UnknownKey);
            }
        }
        *last = Some(Instant::now());
        tracing::debug!(uri = %self.inner.uri, "unknown kid: refetching the JWKS");
        let set = self.inner.fetch().await?;
        let found = set.keys.get(kid).cloned();
        self.inner.install(set);
        found.ok_or(VerifyError::UnknownKey)
    }

    fn refresh_in_background(&self) {
        if self.inner.background_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            // One fetch at a time, so an older answer never replaces a newer one.
            let guard = inner.miss_refresh.lock().await;
            match inner.fetch().await {
                Ok(set) => inner.install(set),
                Err(e) => {
                    tracing::warn!(uri = %inner.uri, error = %e, "JWKS refresh failed; keeping the cached keys");
                    let mut current = inner.snapshot();
                    current.stale_at = Instant::now() + inner.min_refresh_interval.max(FLOOR);
                    inner.install(current);
                }
            }
            drop(guard);
            inner.background_running.store(false, Ordering::Release);
        });
    }
}

impl Inner {
    async fn fetch(&self) -> Result<KeySet, VerifyError> {
        fetch_keys(
            &self.http,
            &self.uri,
            &self.allowed,
            self.min_refresh_interval,
        )
        .await
    }

    fn snapshot(&self) -> KeySet {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn install(&self, set: KeySet) {
        match self.current.write() {
            Ok(mut guard) => *guard = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }
}

async fn fetch_keys(
    http: &reqwest::Client,
    uri: &str,
    allowed: &[Algorithm],
    min_refresh_interval: Duration,
) -> Result<KeySet, VerifyError> {
    let (doc, headers) = fetch::get_json(http, uri, "JWKS").await?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| VerifyError::upstream("JWKS: no keys array"))?;
    let mut keys = HashMap::new();
    for entry in entries {
        let Some(jwk) = entry.as_object() else {
            continue;
        };
        match parse_jwk(jwk, allowed) {
            Ok(Some((kid, key))) => {
                keys.insert(kid, Arc::new(key));
            }
            Ok(None) => {}
            Err(reason) => {
                tracing::warn!(uri, reason, "skipping an unusable JWKS entry");
            }
        }
    }
    let max_age = fetch::max_age(&headers)
        .unwrap_or(DEFAULT_MAX_AGE)
        .clamp(min_refresh_interval.clamp(FLOOR, MAX_MAX_AGE), MAX_MAX_AGE);
    Ok(KeySet {
        keys: Arc::new(keys),
        stale_at: Instant::now() + max_age,
    })
}

/// A JWK usable for verification with one of the `allowed` algorithms:
/// `Ok(None)` for keys that are simply not for us (encryption keys,
/// algorithms not allowed), `Err` for broken ones.
fn parse_jwk(
    jwk: &Map<String, Value>,
    allowed: &[Algorithm],
) -> Result<Option<(String, VerificationKey)>, &'static str> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    if member("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let Some(kid) = member("kid") else {
        return Err("no kid");
    };
    let kty = member("kty").ok_or("no kty")?;
    if jwk.contains_key("d") || kty == "oct" {
        // Private or symmetric key material is never a verification key.
        return Ok(None);
    }
    let crv = member("crv");
    let alg = match member("alg") {
        Some(name) => match name.parse::<Algorithm>() {
            Ok(alg) => alg,
            Err(_) => return Ok(None),
        },
        // Without alg, infer it from the key type where that is unambiguous.
        None => match (kty, crv) {
            ("EC", Some("P-256")) => Algorithm::ES256,
            ("EC", Some("P-384")) => Algorithm::ES384,
            ("OKP", Some("Ed25519")) => Algorithm::EdDSA,
            ("RSA", _) => Algorithm::RS256,
            _ => return Ok(None),
        },
    };
    if !allowed.contains(&alg) {
        return Ok(None);
    }
    let b64 = |name: &str| -> Result<Vec<u8>, &'static str> {
        let value = member(name).ok_or("missing key member")?;
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| "key member is not base64url")
    };
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            let (want_crv, len) = if alg == Algorithm::ES256 {
                ("P-256", 32)
            } else {
                ("P-384", 48)
            };
            if kty != "EC" || crv != Some(want_crv) {
                return Err("EC key type or curve does not match alg");
            }
            if b64("x")?.len() != len || b64("y")?.len() != len {
                return Err("EC coordinates have the wrong size");
            }
            DecodingKey::from_ec_components(
                member("x").unwrap_or_default(),
                member("y").unwrap_or_default(),
            )
            .map_err(|_| "invalid EC key")?
        }
        Algorithm::EdDSA => {
            if kty != "OKP" || crv != Some("Ed25519") {
                return Err("OKP key type or curve does not match alg");
            }
            if b64("x")?.len() != 32 {
                return Err("Ed25519 key has the wrong size");
            }
            DecodingKey::from_ed_components(member("x").unwrap_or_default())
                .map_err(|_| "invalid Ed25519 key")?
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            if kty != "RSA" {
                return Err("key type does not match alg");
            }
            let (n, e) = (b64("n")?, b64("e")?);
            let n_bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if n_bits < 2048 || e.is_empty() {
                return Err("RSA key shorter than 2048 bits");
            }
            DecodingKey::from_rsa_raw_components(&n, &e)
        }
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return Ok(None),
    };
    Ok(Some((kid.to_string(), VerificationKey { alg, key })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    const ALL: [Algorithm; 3] = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256];

    #[test]
    fn symmetric_and_private_keys_ignored() {
        let oct = obj(json!({"kty": "oct", "k": "c2VjcmV0", "kid": "a", "alg": "HS256"}));
        assert!(matches!(parse_jwk(&oct, &ALL), Ok(None)));
        let private =
            obj(json!({"kty": "EC", "crv": "P-256", "x": "", "y": "", "d": "x", "kid": "b"}));
        assert!(matches!(parse_jwk(&private, &ALL), Ok(None)));
    }

    #[test]
    fn encryption_keys_ignored() {
        let enc = obj(json!({"kty": "RSA", "use": "enc", "kid": "a", "n": "AQAB", "e": "AQAB"}));
        assert!(matches!(parse_jwk(&enc, &ALL), Ok(None)));
    }

    #[test]
    fn mismatched_curve_refused() {
        let x = URL_SAFE_NO_PAD.encode([1u8; 32]);
        let bad =
            obj(json!({"kty": "EC", "crv": "P-384", "x": x, "y": x, "kid": "a", "alg": "ES256"}));
        assert!(parse_jwk(&bad, &ALL).is_err());
    }

    #[test]
    fn disallowed_alg_skipped() {
        let x = URL_SAFE_NO_PAD.encode([1u8; 32]);
        let ed = obj(json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "a", "alg": "EdDSA"}));
        assert!(matches!(parse_jwk(&ed, &[Algorithm::ES256]), Ok(None)));
        assert!(matches!(parse_jwk(&ed, &ALL), Ok(Some(_))));
    }
}
