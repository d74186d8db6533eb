//! The verifier: discovery, then per-token checks.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::challenge::Challenge;
use crate::config::{VerifierConfig, MAX_LEEWAY};
use crate::discovery::{self, ServerMetadata};
use crate::error::VerifyError;
use crate::fetch;
use crate::introspection::{Cached, Introspector};
use crate::jwks::JwksCache;
use crate::resource::{audience_matches, canonicalize, protected_resource_metadata_url};
use crate::token::{RawClaims, Strictness, VerifiedToken};

/// Longest token looked at; anything longer is refused unread.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Verifies Gatehouse access tokens for one resource (MCP server).
///
/// Build it once with [`Verifier::discover`], share it (`Arc<Verifier>`),
/// and call [`Verifier::verify`] per request. Keys and introspection
/// answers are cached inside.
pub struct Verifier {
    config: VerifierConfig,
    canonical_resource: String,
    leeway: i64,
    metadata_url: Arc<str>,
    metadata: ServerMetadata,
    http: reqwest::Client,
    jwks: JwksCache,
    introspector: Option<Introspector>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.config.issuer)
            .field("resource", &self.canonical_resource)
            .field("jwks_uri", &self.metadata.jwks_uri)
            .field("introspection", &self.introspector.is_some())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Reads the issuer's metadata (RFC 8414 path insertion first, then
    /// `/.well-known/openid-configuration`), checks that its `issuer` is the
    /// configured one exactly, and loads the JWKS.
    pub async fn discover(config: VerifierConfig) -> Result<Self, VerifyError> {
        let http = fetch::default_client()?;
        Self::discover_with_client(config, http).await
    }

    /// [`Verifier::discover`] with your own HTTP client (proxies, custom
    /// roots, timeouts). Prefer a client that does not follow redirects.
    pub async fn discover_with_client(
        config: VerifierConfig,
        http: reqwest::Client,
    ) -> Result<Self, VerifyError> {
        check_config(&config)?;
        let metadata = discovery::discover(&http, &config.issuer).await?;
        Self::from_metadata(config, metadata, http).await
    }

    /// Builds a verifier from already known endpoints, skipping discovery
    /// (the JWKS is still loaded). `metadata.issuer` must equal the
    /// configured issuer.
    pub async fn from_metadata(
        config: VerifierConfig,
        metadata: ServerMetadata,
        http: reqwest::Client,
    ) -> Result<Self, VerifyError> {
        let canonical_resource = check_config(&config)?;
        if metadata.issuer != config.issuer {
            return Err(VerifyError::InvalidConfig(
                "metadata issuer differs from the configured issuer".into(),
            ));
        }
        let introspector = match &config.introspection {
            None => None,
            Some(ic) => {
                let endpoint = metadata.introspection_endpoint.clone().ok_or_else(|| {
                    VerifyError::InvalidConfig(
                        "introspection is configured but the server has no introspection_endpoint"
                            .into(),
                    )
                })?;
                Some(Introspector::new(endpoint, ic)?)
            }
        };
        let metadata_url: Arc<str> = match &config.resource_metadata_url {
            Some(url) => url.as_str().into(),
            None => protected_resource_metadata_url(&config.resource)
                .ok_or_else(|| VerifyError::InvalidConfig("resource is not a URL".into()))?
                .into(),
        };
        let jwks = JwksCache::load(
            metadata.jwks_uri.clone(),
            http.clone(),
            allowed_algorithms(&config.algorithms),
            config.jwks_min_refresh_interval,
        )
        .await?;
        let leeway = config.leeway.min(MAX_LEEWAY).as_secs() as i64;
        Ok(Verifier {
            config,
            canonical_resource,
            leeway,
            metadata_url,
            metadata,
            http,
            jwks,
            introspector,
        })
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The canonical form of the configured resource URI (what `aud` must name).
    pub fn resource(&self) -> &str {
        &self.canonical_resource
    }

    /// The URL put in `resource_metadata` challenge parameters.
    pub fn resource_metadata_url(&self) -> &str {
        &self.metadata_url
    }

    /// Scopes the configuration requires on every request.
    pub fn required_scopes(&self) -> &[String] {
        &self.config.required_scopes
    }

    /// The endpoints found by discovery.
    pub fn server_metadata(&self) -> &ServerMetadata {
        &self.metadata
    }

    /// The configuration in force.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// The `kid`s of the signing keys currently cached, sorted.
    pub fn cached_key_ids(&self) -> Vec<String> {
        self.jwks.kids()
    }

    /// Verifies an access token (without the `Bearer ` prefix).
    ///
    /// A token that looks like a JWS (three dot-separated parts) is verified
    /// locally as an RFC 9068 access token; anything else is introspected if
    /// introspection is configured. Either way the issuer must be the
    /// configured one, the audience this resource, and the token current.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        if token.is_empty() {
            return Err(VerifyError::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::malformed("token too long"));
        }
        match token.bytes().filter(|&b| b == b'.').count() {
            2 => self.verify_jwt(token).await,
            0 => self.verify_opaque(token).await,
            _ => Err(VerifyError::malformed("not a signed JWT")),
        }
    }

    /// Authenticates and authorizes a request from its headers: reads the
    /// bearer token, verifies it, and checks the configured
    /// `required_scopes` plus `scopes`. `Err` is what to answer
    /// (see [`Challenge`]). Framework-neutral; the axum layer uses it too.
    pub async fn authorize(
        &self,
        headers: &http::HeaderMap,
        scopes: &[String],
    ) -> Result<VerifiedToken, Challenge> {
        match crate::bearer_token(headers) {
            Ok(token) => self.authorize_token(token, scopes).await,
            Err(e) => Err(self.challenge(&e, scopes)),
        }
    }

    /// [`Verifier::authorize`] for an already extracted token.
    pub async fn authorize_token(
        &self,
        token: &str,
        scopes: &[String],
    ) -> Result<VerifiedToken, Challenge> {
        let verified = self
            .verify(token)
            .await
            .map_err(|e| self.challenge(&e, scopes))?;
        let needed = self.needed_scopes(scopes);
        if needed.iter().all(|s| verified.has_scope(s)) {
            Ok(verified)
        } else {
            tracing::debug!(client_id = %verified.client_id, "token lacks required scopes");
            Err(Challenge::insufficient_scope(&needed, &self.metadata_url))
        }
    }

    /// The challenge for a verification failure, hinting at the scopes
    /// (configured plus `scopes`) a new token should carry.
    pub fn challenge(&self, error: &VerifyError, scopes: &[String]) -> Challenge {
        match error {
            VerifyError::Upstream(_) | VerifyError::InvalidConfig(_) => {
                tracing::warn!(error = %error, "cannot verify tokens right now");
            }
            _ => tracing::debug!(error = %error, "bearer token refused"),
        }
        Challenge::for_error(error, &self.metadata_url, &self.needed_scopes(scopes))
    }

    fn needed_scopes(&self, extra: &[String]) -> Vec<String> {
        let mut needed: Vec<String> = Vec::new();
        for s in self.config.required_scopes.iter().chain(extra) {
            if !needed.contains(s) {
                needed.push(s.clone());
            }
        }
        needed
    }

    async fn verify_jwt(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let Some((signing_input, signature)) = token.rsplit_once('.') else {
            return Err(VerifyError::malformed("not a signed JWT"));
        };
        let Some((header_b64, payload_b64)) = signing_input.split_once('.') else {
            return Err(VerifyError::malformed("not a signed JWT"));
        };
        if header_b64.is_empty() || payload_b64.is_empty() {
            return Err(VerifyError::malformed("empty JWT part"));
        }
        let header = decode_json_segment(header_b64, "header")?;
        // No JWS extension is understood here (RFC 7515 §4.1.11).
        if header.contains_key("crit") {
            return Err(VerifyError::malformed(
                "critical header parameters are not supported",
            ));
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(|name| name.parse::<Algorithm>().ok())
            .filter(|alg| is_asymmetric(*alg) && self.config.algorithms.contains(alg))
            .ok_or(VerifyError::DisallowedAlg)?;
        if !header
            .get("typ")
            .and_then(Value::as_str)
            .is_some_and(is_access_token_typ)
        {
            return Err(VerifyError::WrongTyp);
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or(VerifyError::UnknownKey)?;
        let key = self.jwks.key(kid).await?;
        if key.alg != alg {
            return Err(VerifyError::DisallowedAlg);
        }
        if signature.is_empty() {
            return Err(VerifyError::BadSignature);
        }
        match jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), &key.key, alg) {
            Ok(true) => {}
            Ok(false) | Err(_) => return Err(VerifyError::BadSignature),
        }
        let claims = decode_json_segment(payload_b64, "payload")?;
        self.check_claims(claims, Strictness::Jwt)
    }

    async fn verify_opaque(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let Some(introspector) = &self.introspector else {
            return Err(VerifyError::malformed(
                "not a JWT, and introspection is not configured",
            ));
        };
        if !token.bytes().all(is_token68_byte) {
            return Err(VerifyError::malformed("invalid characters in token"));
        }
        let Some(cache) = &introspector.cache else {
            return self
                .introspect(introspector, token)
                .await
                .map(|c| (*c.token).clone());
        };
        let cached = cache
            .try_get_with(
                Introspector::cache_key(token),
                self.introspect(introspector, token),
            )
            .await
            .map_err(|e| (*e).clone())?;
        // Entries expire by exp already; this only guards against a clock jump.
        if unix_now() >= cached.token.expires_at.saturating_add(self.leeway) {
            return Err(VerifyError::Expired);
        }
        Ok((*cached.token).clone())
    }

    async fn introspect(
        &self,
        introspector: &Introspector,
        token: &str,
    ) -> Result<Cached, VerifyError> {
        let response = introspector.introspect(&self.http, token).await?;
        let verified = self.check_claims(response, Strictness::Introspection)?;
        let remaining = verified.expires_at.saturating_sub(unix_now()).max(0) as u64;
        let ttl = introspector.cache_ttl.min(Duration::from_secs(remaining));
        Ok(Cached {
            token: Arc::new(verified),
            ttl,
        })
    }

    fn check_claims(
        &self,
        claims: Map<String, Value>,
        strictness: Strictness,
    ) -> Result<VerifiedToken, VerifyError> {
        let raw = RawClaims::read(&claims, strictness)?;
        if raw.iss != self.config.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        if !raw
            .aud
            .iter()
            .any(|aud| audience_matches(aud, &self.canonical_resource))
        {
            return Err(VerifyError::WrongAudience);
        }
        let now = unix_now();
        if now >= raw.exp.saturating_add(self.leeway) {
            return Err(VerifyError::Expired);
        }
        let latest = now.saturating_add(self.leeway);
        if raw.nbf.is_some_and(|nbf| nbf > latest) || raw.iat.is_some_and(|iat| iat > latest) {
            return Err(VerifyError::NotYetValid);
        }
        Ok(VerifiedToken {
            issuer: raw.iss,
            subject: raw.sub,
            client_id: raw.client_id,
            scopes: raw.scope,
            audience: self.canonical_resource.clone(),
            expires_at: raw.exp,
            issued_at: raw.iat,
            auth_time: raw.auth_time,
            jti: raw.jti,
            act: raw.act,
            claims: Value::Object(claims),
            resource_metadata_url: Arc::clone(&self.metadata_url),
        })
    }
}

/// Validates the configuration; returns the canonical resource URI.
fn check_config(config: &VerifierConfig) -> Result<String, VerifyError> {
    discovery::check_issuer(&config.issuer)?;
    if config.algorithms.iter().any(|a| !is_asymmetric(*a)) {
        return Err(VerifyError::InvalidConfig(
            "HS* algorithms are never accepted for access tokens".into(),
        ));
    }
    if config.algorithms.is_empty() {
        return Err(VerifyError::InvalidConfig("no algorithm allowed".into()));
    }
    if let Some(url) = &config.resource_metadata_url {
        if url.contains(['"', '\\']) || url::Url::parse(url).is_err() {
            return Err(VerifyError::InvalidConfig(
                "resource_metadata_url is not a URL".into(),
            ));
        }
    }
    canonicalize(&config.resource).ok_or_else(|| {
        VerifyError::InvalidConfig("resource must be an absolute https or http URI".into())
    })
}

fn allowed_algorithms(configured: &[Algorithm]) -> Vec<Algorithm> {
    configured
        .iter()
        .copied()
        .filter(|a| is_asymmetric(*a))
        .collect()
}

fn is_asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// `at+jwt`, compared case-insensitively, with or without `application/`
/// (RFC 9068 §2.1, RFC 7515 §4.1.9).
fn is_access_token_typ(typ: &str) -> bool {
    let bare = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    bare.eq_ignore_ascii_case("at+jwt")
}

fn decode_json_segment(segment: &str, what: &str) -> Result<Map<String, Value>, VerifyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| VerifyError::malformed(format!("JWT {what} is not base64url")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(VerifyError::malformed(format!(
            "JWT {what} is not a JSON object"
        ))),
    }
}

/// RFC 6750 §2.1 `b64token` characters.
fn is_token68_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_forms() {
        for ok in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+JWT",
        ] {
            assert!(is_access_token_typ(ok), "{ok}");
        }
        for bad in [
            "JWT",
            "jwt",
            "application/jwt",
            "at+jwt ",
            "",
            "application/",
            "xat+jwt",
        ] {
            assert!(!is_access_token_typ(bad), "{bad}");
        }
    }

    #[test]
    fn hs_algorithms_refused_in_config() {
        let config = VerifierConfig::new("https://a.example", "https://r.example/mcp")
            .with_algorithms([Algorithm::ES256, Algorithm::HS256]);
        assert!(matches!(
            check_config(&config),
            Err(VerifyError::InvalidConfig(_))
        ));
    }

    #[test]
    fn resource_is_canonicalised() {
        let config = VerifierConfig::new("https://a.example", "HTTPS://R.example:443/");
        assert_eq!(check_config(&config).unwrap(), "https://r.example");
    }
}
