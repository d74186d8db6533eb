//! Tenants: each has its own issuer, keys, connectors, clients, resources and
//! token policy. The registry loads them from the store and caches them
//! briefly, so a CLI change reaches running nodes within seconds.

pub mod identity;
pub mod model;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::header;
use axum::http::request::Parts;
use gatehouse_connectors::dev::{DevConnector, DevUser};
use gatehouse_connectors::oidc::OidcConnector;
use gatehouse_connectors::{Connector, ConnectorError};
use moka::future::Cache;

pub use model::*;

use crate::keys::{Kek, KeyRing};
use crate::oauth::errors::OAuthError;
use crate::store::{DynStore, StoreError};
use crate::AppState;

/// A registered resource (MCP server), by canonical URI.
#[derive(Clone, Debug)]
pub struct Resource {
    pub uri: String,
    pub settings: ResourceSettings,
}

/// Everything a request needs to know about its tenant.
pub struct Tenant {
    pub id: String,
    /// Exactly the `iss` of every token and the `issuer` of discovery.
    pub issuer: String,
    pub settings: TenantSettings,
    pub resources: Vec<Resource>,
    pub connectors: Vec<Arc<dyn Connector>>,
    pub keys: KeyRing,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl Tenant {
    pub fn policy(&self) -> &TokenPolicy {
        &self.settings.tokens
    }

    /// The settings that loosen a safe default, in words, for the log at
    /// start.
    pub fn relaxations(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self
            .settings
            .client_assertion
            .accept_token_endpoint_audience
        {
            out.push(
                "client_assertion.accept_token_endpoint_audience: private_key_jwt assertions may name the token endpoint URL as aud (RFC 7523bis prefers the issuer alone)".to_string(),
            );
        }
        if let Some(m) = &self.settings.registration.machine_clients {
            out.push(format!(
                "registration.machine_clients: self-registered clients may obtain tokens without a user (resources: {}, scopes: {}, initial access token required: {})",
                m.resources.as_ref().map_or("any".to_string(), |r| r.join(" ")),
                m.scopes.as_ref().map_or("any".to_string(), |s| s.join(" ")),
                m.require_initial_access_token,
            ));
        }
        out
    }

    pub fn resource(&self, canonical_uri: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.uri == canonical_uri)
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    pub fn connector(&self, id: &str) -> Option<&Arc<dyn Connector>> {
        self.connectors.iter().find(|c| c.id() == id)
    }

    /// Every scope any resource of this tenant defines, plus the OIDC ones.
    pub fn all_scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = OIDC_SCOPES.iter().map(|s| s.to_string()).collect();
        for r in &self.resources {
            for s in &r.settings.scopes {
                if !scopes.contains(s) {
                    scopes.push(s.clone());
                }
            }
        }
        scopes
    }
}

/// Scopes about the user and the session rather than about a resource.
pub const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// The issuer of a tenant: the public URL for the default tenant, a path under
/// it for the others.
pub fn issuer_for(public_url: &str, tenant_id: &str) -> String {
    let base = public_url.trim_end_matches('/');
    if tenant_id == DEFAULT_TENANT {
        base.to_string()
    } else {
        format!("{base}/t/{tenant_id}")
    }
}

/// The issuer of a tenant with a `domain`: the public URL with its host
/// replaced by the domain (scheme, port and path kept), so that one listener
/// behind one proxy serves every host the same way.
pub fn host_issuer(public_url: &str, domain: &str) -> Result<String, String> {
    let mut url = url::Url::parse(public_url).map_err(|e| format!("public URL: {e}"))?;
    url.set_host(Some(domain))
        .map_err(|e| format!("domain '{domain}': {e}"))?;
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The issuer of a tenant from its settings: the host issuer when it has a
/// domain, else `issuer_for`.
pub fn issuer_of(public_url: &str, id: &str, settings: &TenantSettings) -> Result<String, String> {
    match &settings.domain {
        Some(domain) => host_issuer(public_url, domain),
        None => Ok(issuer_for(public_url, id)),
    }
}

/// A tenant's `domain`: a lowercase DNS host name of at least two labels,
/// without scheme, port, trailing dot or wildcard; never an IP address.
/// Requests pick a tenant by comparing `Host` to it exactly.
pub fn validate_domain(domain: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let labels: Vec<&str> = domain.split('.').collect();
    let ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| label_ok(l))
        && labels
            .last()
            .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{domain}' must be a lowercase host name like 'login.example.com' (no scheme, port or trailing dot)"
        ))
    }
}

/// The domains of several tenants, checked together: each valid, none used
/// twice, none the public URL's own host (that is the default tenant's), and
/// never on the default tenant. `tenants` are (id, domain) pairs.
pub fn validate_domains<'a>(
    tenants: impl IntoIterator<Item = (&'a str, &'a str)>,
    public_host: Option<&str>,
) -> Result<(), String> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (id, domain) in tenants {
        validate_domain(domain).map_err(|e| format!("tenant '{id}': domain: {e}"))?;
        if id == DEFAULT_TENANT {
            return Err(format!(
                "tenant '{id}': domain: the default tenant is served at the public URL; set --public-url instead"
            ));
        }
        if public_host.is_some_and(|h| h.eq_ignore_ascii_case(domain)) {
            return Err(format!(
                "tenant '{id}': domain: '{domain}' is the public URL's host, which serves the default tenant"
            ));
        }
        if let Some((other, _)) = seen.iter().find(|(_, d)| *d == domain) {
            return Err(format!(
                "tenant '{id}': domain: '{domain}' already belongs to tenant '{other}'"
            ));
        }
        seen.push((id, domain));
    }
    Ok(())
}

/// Tenant ids appear in URLs and issuers: keep them boring.
pub fn validate_tenant_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant id '{id}' must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        ))
    }
}

/// Connector ids appear in callback URLs: keep them boring.
fn validate_connector_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "connector id '{id}' must be 1-63 characters of a-z, 0-9, '-' and '_'"
        ))
    }
}

pub fn build_connectors(settings: &TenantSettings) -> Result<Vec<Arc<dyn Connector>>, String> {
    let mut out: Vec<Arc<dyn Connector>> = Vec::new();
    let mut domains: Vec<(&str, &str)> = Vec::new();
    for c in &settings.connectors {
        validate_connector_id(&c.id)?;
        if out.iter().any(|other| other.id() == c.id) {
            return Err(format!("connector '{}': the id is used twice", c.id));
        }
        for d in &c.domains {
            let valid = !d.is_empty()
                && d.len() <= 253
                && d == &d.to_ascii_lowercase()
                && !d.contains('@')
                && d.contains('.');
            if !valid {
                return Err(format!(
                    "connector '{}': domains: '{d}' must be a lowercase domain like 'example.com'",
                    c.id
                ));
            }
            if let Some((other, _)) = domains.iter().find(|(_, seen)| seen == d) {
                return Err(format!(
                    "connector '{}': domains: '{d}' already belongs to connector '{other}'",
                    c.id
                ));
            }
            domains.push((&c.id, d));
        }
        if !(0..=86_400).contains(&c.upstream_check_interval) {
            return Err(format!(
                "connector '{}': upstream_check_interval must be between 0 and 86400 seconds (got {})",
                c.id, c.upstream_check_interval
            ));
        }
        // Connector errors name the connector (and the setting, in `m`).
        let named = |e: ConnectorError| match e {
            ConnectorError::Config(m) => format!("connector '{}': {m}", c.id),
            other => format!("connector '{}': {other}", c.id),
        };
        match c.kind.as_str() {
            "dev" => {
                let users_value = c
                    .settings
                    .get("users")
                    .cloned()
                    .unwrap_or(serde_json::Value::Array(vec![]));
                let users: Vec<DevUser> = serde_json::from_value(users_value)
                    .map_err(|e| format!("connector '{}': users: {e}", c.id))?;
                let connector = DevConnector::new(&c.id, c.display_name.as_deref(), users)
                    .map_err(|e| format!("connector '{}': {e}", c.id))?;
                out.push(Arc::new(connector));
            }
            "oidc" => {
                let connector =
                    OidcConnector::from_settings(&c.id, c.display_name.as_deref(), &c.settings)
                        .map_err(named)?;
                out.push(Arc::new(connector));
            }
            kind @ ("entra" | "cognito" | "auth0") => {
                let build = match kind {
                    "entra" => gatehouse_connectors::entra::from_settings,
                    "cognito" => gatehouse_connectors::cognito::from_settings,
                    _ => gatehouse_connectors::auth0::from_settings,
                };
                let connector =
                    build(&c.id, c.display_name.as_deref(), &c.settings).map_err(named)?;
                out.push(Arc::new(connector));
            }
            "saml" => {
                let connector = gatehouse_connectors::saml::SamlConnector::from_settings(
                    &c.id,
                    c.display_name.as_deref(),
                    &c.settings,
                )
                .map_err(named)?;
                out.push(Arc::new(connector));
            }
            other => {
                return Err(format!(
                    "connector '{}': unknown type '{other}' (supported: dev, oidc, entra, cognito, auth0, saml)",
                    c.id
                ))
            }
        }
    }
    Ok(out
        .into_iter()
        .map(crate::telemetry::upstream::Observed::wrap)
        .collect())
}

/// The connector configured for an email domain (from `login_hint`).
pub fn connector_for_email<'a>(tenant: &'a Tenant, email: &str) -> Option<&'a Arc<dyn Connector>> {
    let (_, domain) = email.trim().rsplit_once('@')?;
    let domain = domain.to_ascii_lowercase();
    let settings = tenant
        .settings
        .connectors
        .iter()
        .find(|c| c.domains.contains(&domain))?;
    tenant.connector(&settings.id)
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("unknown tenant")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("tenant '{0}' is misconfigured: {1}")]
    Invalid(String, String),
}

/// Configured tenant domains: host name → tenant id.
type HostMap = Arc<HashMap<String, String>>;

#[derive(Clone)]
pub struct TenantRegistry {
    cache: Cache<String, Arc<Tenant>>,
    /// One entry (key `()`): the host map, reloaded with the same lifetime
    /// as tenants so a domain set by the CLI reaches running nodes.
    hosts: Cache<(), HostMap>,
}

impl TenantRegistry {
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            hosts: Cache::builder().max_capacity(1).time_to_live(ttl).build(),
        }
    }

    /// The tenant whose `domain` is `host` (already lowercased, without
    /// port), if an administrator configured one.
    pub async fn id_for_host(
        &self,
        store: &DynStore,
        host: &str,
    ) -> Result<Option<String>, TenantError> {
        let map = match self.hosts.get(&()).await {
            Some(map) => map,
            None => {
                let map = Arc::new(load_host_map(store).await?);
                self.hosts.insert((), map.clone()).await;
                map
            }
        };
        Ok(map.get(host).cloned())
    }

    pub async fn get(
        &self,
        store: &DynStore,
        kek: &Kek,
        public_url: &str,
        id: &str,
        now: i64,
    ) -> Result<Arc<Tenant>, TenantError> {
        if let Some(t) = self.cache.get(id).await {
            crate::telemetry::metrics::metrics().cache("tenants", true);
            return Ok(t);
        }
        crate::telemetry::metrics::metrics().cache("tenants", false);
        // Requests that miss together wait for one load (keys decrypted and
        // probed once), instead of each loading the tenant when it expires.
        let mut failure = None;
        let entry = self
            .cache
            .entry_by_ref(id)
            .or_optionally_insert_with(async {
                match load_tenant(store, kek, public_url, id, now).await {
                    Ok(tenant) => Some(Arc::new(tenant)),
                    Err(e) => {
                        failure = Some(e);
                        None
                    }
                }
            })
            .await;
        match (entry, failure) {
            (Some(entry), _) => Ok(entry.into_value()),
            (None, Some(e)) => Err(e),
            // Another request's load failed: try for ourselves.
            (None, None) => Ok(Arc::new(
                load_tenant(store, kek, public_url, id, now).await?,
            )),
        }
    }

    pub async fn invalidate(&self, id: &str) {
        self.cache.invalidate(id).await;
        self.hosts.invalidate(&()).await;
    }
}

/// Every tenant's domain. A domain two stored tenants claim (only possible
/// by editing the database: the config and the CLI refuse it) maps to
/// neither, so no request can pick one of them by guessing.
async fn load_host_map(store: &DynStore) -> Result<HashMap<String, String>, TenantError> {
    let mut map: HashMap<String, String> = HashMap::new();
    let mut ambiguous = Vec::new();
    for rec in store.list_tenants().await? {
        let Ok(settings) = serde_json::from_str::<TenantSettings>(&rec.settings) else {
            continue;
        };
        let Some(domain) = settings.domain else {
            continue;
        };
        if let Some(other) = map.insert(domain.clone(), rec.id.clone()) {
            tracing::error!(domain = %domain, tenants = %format!("{other}, {}", rec.id), "two tenants claim one domain; serving it as neither");
            ambiguous.push(domain);
        }
    }
    for d in ambiguous {
        map.remove(&d);
    }
    Ok(map)
}

pub async fn load_tenant(
    store: &DynStore,
    kek: &Kek,
    public_url: &str,
    id: &str,
    now: i64,
) -> Result<Tenant, TenantError> {
    let rec = store.get_tenant(id).await?.ok_or(TenantError::NotFound)?;
    let settings: TenantSettings = serde_json::from_str(&rec.settings)
        .map_err(|e| TenantError::Invalid(id.into(), e.to_string()))?;
    let mut resources = Vec::new();
    for r in store.list_resources(id).await? {
        let settings: ResourceSettings = serde_json::from_str(&r.settings)
            .map_err(|e| TenantError::Invalid(id.into(), format!("resource {}: {e}", r.uri)))?;
        resources.push(Resource {
            uri: r.uri,
            settings,
        });
    }
    let connectors = build_connectors(&settings).map_err(|e| TenantError::Invalid(id.into(), e))?;
    let key_records = store.list_keys(id).await?;
    let keys = KeyRing::load(&key_records, kek, now)
        .map_err(|e| TenantError::Invalid(id.into(), e.to_string()))?;
    let issuer = issuer_of(public_url, id, &settings)
        .and_then(|issuer| {
            settings
                .domain
                .as_deref()
                .map_or(Ok(()), validate_domain)
                .map(|_| issuer)
        })
        .map_err(|e| TenantError::Invalid(id.into(), e))?;
    Ok(Tenant {
        id: id.to_string(),
        issuer,
        settings,
        resources,
        connectors,
        keys,
    })
}

/// The tenant a request is for. On a host an administrator gave to a tenant
/// (`domain`), that tenant at the root paths and nothing under `/t/`.
/// Elsewhere, `/t/{tenant}/...` for tenants without a domain, and the default
/// tenant at the root. A tenant with a domain has exactly one issuer, so its
/// `/t/{id}` paths answer 404 on every host.
pub struct TenantCtx(pub Arc<Tenant>);

impl std::ops::Deref for TenantCtx {
    type Target = Tenant;
    fn deref(&self) -> &Tenant {
        &self.0
    }
}

/// The host a request was sent to, lowercased and without port: the
/// request target's authority (HTTP/2, absolute-form) or the `Host` header.
/// Never `X-Forwarded-Host`: a proxy must pass the original `Host` on.
pub fn request_host(parts: &Parts) -> Option<String> {
    let authority = match parts.uri.authority() {
        Some(a) => a.clone(),
        None => {
            let value = parts.headers.get(header::HOST)?.to_str().ok()?;
            value.parse::<axum::http::uri::Authority>().ok()?
        }
    };
    let host = authority.host();
    // An IPv6 literal is never a tenant domain.
    (!host.starts_with('[')).then(|| host.to_ascii_lowercase())
}

impl FromRequestParts<AppState> for TenantCtx {
    type Rejection = OAuthError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unknown = || OAuthError::not_found("unknown tenant");
        let unavailable = |id: &str, e: TenantError| {
            tracing::error!(tenant = %id, error = %e, "tenant could not be loaded");
            OAuthError::unavailable()
        };
        let in_path = match RawPathParams::from_request_parts(parts, app).await {
            Ok(params) => params
                .iter()
                .find(|(k, _)| *k == "tenant")
                .map(|(_, v)| v.to_string()),
            Err(_) => None,
        };
        let by_host = match request_host(parts) {
            Some(host) => app
                .tenants
                .id_for_host(&app.store, &host)
                .await
                .map_err(|e| unavailable(&host, e))?,
            None => None,
        };
        let id = match (&in_path, by_host) {
            (Some(_), Some(_)) => return Err(unknown()),
            (Some(id), None) => id.clone(),
            (None, Some(id)) => id,
            (None, None) => DEFAULT_TENANT.to_string(),
        };
        if validate_tenant_id(&id).is_err() {
            return Err(unknown());
        }
        let tenant = match app.tenant(&id).await {
            Ok(t) => t,
            Err(TenantError::NotFound) => return Err(unknown()),
            Err(e) => return Err(unavailable(&id, e)),
        };
        if in_path.is_some() && tenant.settings.domain.is_some() {
            return Err(unknown());
        }
        Ok(TenantCtx(tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_issuer_replaces_only_the_host() {
        let cases = [
            (
                "https://auth.example.com",
                "login.acme.example",
                "https://login.acme.example",
            ),
            (
                "http://127.0.0.1:8080",
                "acme.localhost",
                "http://acme.localhost:8080",
            ),
            (
                "https://example.com/auth",
                "id.acme.example",
                "https://id.acme.example/auth",
            ),
        ];
        for (public_url, domain, issuer) in cases {
            assert_eq!(host_issuer(public_url, domain).unwrap(), issuer);
        }
    }

    #[test]
    fn domain_must_be_a_lowercase_host_name() {
        for ok in ["login.acme.example", "acme.localhost", "a-1.b2.example"] {
            assert!(validate_domain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "acme",
            "Login.acme.example",
            "acme.example.",
            "acme.example:443",
            "https://acme.example",
            "*.acme.example",
            "-acme.example",
            "acme..example",
            "10.0.0.1",
            "acme.example/path",
        ] {
            assert!(validate_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains_are_unique_and_never_the_default_tenants() {
        let err = validate_domains([("a", "x.example"), ("b", "x.example")], None).unwrap_err();
        assert!(err.contains("already belongs to tenant 'a'"), "{err}");
        let err = validate_domains([(DEFAULT_TENANT, "x.example")], None).unwrap_err();
        assert!(err.contains("default tenant"), "{err}");
        let err = validate_domains([("a", "auth.example")], Some("AUTH.example")).unwrap_err();
        assert!(err.contains("public URL"), "{err}");
        assert!(validate_domains(
            [("a", "a.example"), ("b", "b.example")],
            Some("auth.example")
        )
        .is_ok());
    }
}
