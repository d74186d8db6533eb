//! RFC 7662 introspection of opaque tokens, with a short positive cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use moka::Expiry;
use reqwest::header::HeaderValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::IntrospectionConfig;
use crate::error::VerifyError;
use crate::fetch;
use crate::token::VerifiedToken;

/// Most introspection answers kept at once.
const CACHE_CAPACITY: u64 = 10_000;

pub(crate) type CacheKey = [u8; 32];

#[derive(Clone)]
pub(crate) struct Cached {
    pub token: Arc<VerifiedToken>,
    pub ttl: Duration,
}

/// Each entry lives for its own TTL: min(cache_ttl, exp - now).
struct PerEntryTtl;

impl Expiry<CacheKey, Cached> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Cached,
        _at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub(crate) struct Introspector {
    endpoint: String,
    authorization: HeaderValue,
    pub cache_ttl: Duration,
    pub cache: Option<moka::future::Cache<CacheKey, Cached>>,
}

impl Introspector {
    pub fn new(endpoint: String, config: &IntrospectionConfig) -> Result<Self, VerifyError> {
        // RFC 6749 §2.3.1: form-urlencode both parts before base64.
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let credentials = format!(
            "{}:{}",
            encode(&config.client_id),
            encode(&config.client_secret)
        );
        let mut authorization =
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(credentials)))
                .map_err(|_| VerifyError::InvalidConfig("introspection credentials".into()))?;
        authorization.set_sensitive(true);
        let cache = (!config.cache_ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .expire_after(PerEntryTtl)
                .build()
        });
        Ok(Introspector {
            endpoint,
            authorization,
            cache_ttl: config.cache_ttl,
            cache,
        })
    }

    pub fn cache_key(token: &str) -> CacheKey {
        Sha256::digest(token.as_bytes()).into()
    }

    /// Asks the authorization server about `token`; returns the response
    /// members of an active token, [`VerifyError::Inactive`] otherwise.
    pub async fn introspect(
        &self,
        http: &reqwest::Client,
        token: &str,
    ) -> Result<Map<String, Value>, VerifyError> {
        let request = http
            .post(&self.endpoint)
            .header(reqwest::header::AUTHORIZATION, self.authorization.clone())
            .form(&[("token", token), ("token_type_hint", "access_token")]);
        let res = fetch::send_json(request, "introspection").await?;
        if !res.status.is_success() {
            // 401 here means our own client credentials were refused: a
            // server-side problem, not the caller's.
            return Err(VerifyError::upstream(format!(
                "introspection: HTTP {}",
                res.status.as_u16()
            )));
        }
        let body = res
            .body
            .map_err(|e| VerifyError::upstream(format!("introspection: {e}")))?;
        match body.get("active") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => return Err(VerifyError::Inactive),
            _ => {
                return Err(VerifyError::upstream(
                    "introspection: no boolean active member",
                ))
            }
        }
        // An active refresh token is not an access token.
        if let Some(kind) = body.get("token_type").and_then(Value::as_str) {
            let access = [
                "bearer",
                "access_token",
                "urn:ietf:params:oauth:token-type:access_token",
            ];
            if !access.iter().any(|a| kind.eq_ignore_ascii_case(a)) {
                return Err(VerifyError::WrongTyp);
            }
        }
        Ok(body)
    }
}
