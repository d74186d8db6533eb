//! What a [`Verifier`](crate::Verifier) is configured with.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::Algorithm;

/// The most leeway a verifier applies to `exp`, `nbf` and `iat`, whatever
/// is configured.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Configuration of a [`Verifier`](crate::Verifier).
///
/// ```
/// use gatehouse_verify::VerifierConfig;
///
/// let config = VerifierConfig::new("https://auth.example.com/t/acme", "https://mcp.example.com/mcp")
///     .with_required_scopes(["tickets:read"]);
/// assert_eq!(config.leeway.as_secs(), 60);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct VerifierConfig {
    /// The tenant's issuer, exactly as Gatehouse writes it in `iss` and in
    /// its metadata (`https://auth.example.com` or
    /// `https://auth.example.com/t/acme`, no trailing slash).
    pub issuer: String,
    /// The canonical URI of this MCP server, as registered at Gatehouse.
    /// Any spelling that canonicalises to the same URI works.
    pub resource: String,
    /// Accepted signing algorithms. Default `[ES256, EdDSA, RS256]`; narrow
    /// it to the tenant's algorithm if you can. `HS*` is always refused.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`. Default 60 s; values
    /// above [`MAX_LEEWAY`] are capped.
    pub leeway: Duration,
    /// A token with an unknown `kid` makes the verifier refetch the JWKS at
    /// most once per this interval. Default 30 s.
    pub jwks_min_refresh_interval: Duration,
    /// How to introspect opaque tokens; `None` refuses them.
    pub introspection: Option<IntrospectionConfig>,
    /// Scopes every request through [`RequireBearer`](crate::RequireBearer)
    /// needs (in addition to the layer's own). Default none.
    pub required_scopes: Vec<String>,
    /// Where this server publishes its RFC 9728 metadata, for the
    /// `resource_metadata` challenge parameter. Default: derived from
    /// `resource` by path insertion
    /// (`https://h/mcp` → `https://h/.well-known/oauth-protected-resource/mcp`).
    pub resource_metadata_url: Option<String>,
}

impl VerifierConfig {
    /// A configuration with the defaults described on each field.
    pub fn new(issuer: impl Into<String>, resource: impl Into<String>) -> Self {
        VerifierConfig {
            issuer: issuer.into(),
            resource: resource.into(),
            algorithms: vec![Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256],
            leeway: Duration::from_secs(60),
            jwks_min_refresh_interval: Duration::from_secs(30),
            introspection: None,
            required_scopes: Vec::new(),
            resource_metadata_url: None,
        }
    }

    /// Replaces the algorithm allow-list.
    pub fn with_algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Sets the clock-skew leeway (capped at [`MAX_LEEWAY`]).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Sets the minimum interval between JWKS refetches for unknown `kid`s.
    pub fn with_jwks_min_refresh_interval(mut self, interval: Duration) -> Self {
        self.jwks_min_refresh_interval = interval;
        self
    }

    /// Enables introspection of opaque tokens.
    pub fn with_introspection(mut self, introspection: IntrospectionConfig) -> Self {
        self.introspection = Some(introspection);
        self
    }

    /// Scopes required on every request through the layer.
    pub fn with_required_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Overrides the URL put in `resource_metadata` challenge parameters.
    pub fn with_resource_metadata_url(mut self, url: impl Into<String>) -> Self {
        self.resource_metadata_url = Some(url.into());
        self
    }
}

impl fmt::Debug for VerifierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierConfig")
            .field("issuer", &self.issuer)
            .field("resource", &self.resource)
            .field("algorithms", &self.algorithms)
            .field("leeway", &self.leeway)
            .field("jwks_min_refresh_interval", &self.jwks_min_refresh_interval)
            .field("introspection", &self.introspection)
            .field("required_scopes", &self.required_scopes)
            .field("resource_metadata_url", &self.resource_metadata_url)
            .finish()
    }
}

/// Credentials of the confidential client this MCP server introspects as
/// (`client_secret_basic`), and how long to cache positive answers.
#[derive(Clone)]
#[non_exhaustive]
pub struct IntrospectionConfig {
    pub client_id: String,
    pub client_secret: String,
    /// How long an `active: true` answer is reused. Default 30 s; never
    /// beyond the token's `exp`. Zero disables the cache. The longer the
    /// cache, the later a revocation takes effect here.
    pub cache_ttl: Duration,
}

impl IntrospectionConfig {
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        IntrospectionConfig {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            cache_ttl: Duration::from_secs(30),
        }
    }

    /// Sets how long positive answers are cached.
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }
}

impl fmt::Debug for IntrospectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}
