//! Tenants: each has its own issuer, keys, connectors, clients, resources and
//! token policy. The registry loads them from the store and caches them
//! briefly, so a CLI change reaches running nodes within seconds.

pub mod model;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, RawPathParams};
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
    Ok(out)
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

#[derive(Clone)]
pub struct TenantRegistry {
    cache: Cache<String, Arc<Tenant>>,
}

impl TenantRegistry {
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
        }
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
            return Ok(t);
        }
        let tenant = Arc::new(load_tenant(store, kek, public_url, id, now).await?);
        self.cache.insert(id.to_string(), tenant.clone()).await;
        Ok(tenant)
    }

    pub async fn invalidate(&self, id: &str) {
        self.cache.invalidate(id).await;
    }
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
    Ok(Tenant {
        id: id.to_string(),
        issuer: issuer_for(public_url, id),
        settings,
        resources,
        connectors,
        keys,
    })
}

/// The tenant a request is for: `/t/{tenant}/...` or the default tenant.
pub struct TenantCtx(pub Arc<Tenant>);

impl std::ops::Deref for TenantCtx {
    type Target = Tenant;
    fn deref(&self) -> &Tenant {
        &self.0
    }
}

impl FromRequestParts<AppState> for TenantCtx {
    type Rejection = OAuthError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let id = match RawPathParams::from_request_parts(parts, app).await {
            Ok(params) => params
                .iter()
                .find(|(k, _)| *k == "tenant")
                .map(|(_, v)| v.to_string())
                .unwrap_or_else(|| DEFAULT_TENANT.to_string()),
            Err(_) => DEFAULT_TENANT.to_string(),
        };
        if validate_tenant_id(&id).is_err() {
            return Err(OAuthError::not_found("unknown tenant"));
        }
        match app.tenant(&id).await {
            Ok(t) => Ok(TenantCtx(t)),
            Err(TenantError::NotFound) => Err(OAuthError::not_found("unknown tenant")),
            Err(e) => {
                tracing::error!(tenant = %id, error = %e, "tenant could not be loaded");
                Err(OAuthError::unavailable())
            }
        }
    }
}
