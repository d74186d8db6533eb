//! Auth0 preset over the generic OIDC connector.
//!
//! ```toml
//! [[tenants.connectors]]
//! id = "auth0"
//! type = "auth0"
//! domain = "example.eu.auth0.com"          # or the custom domain
//! client_id = "Auth0 application Client ID"
//! client_secret_env = "GATEHOUSE_AUTH0_SECRET"
//! claims_namespace = "https://example.com/" # custom claims {ns}groups, {ns}roles
//! allowed_organizations = ["org_abc123"]    # optional: org_id must be one of these
//! ```
//!
//! Issuer `https://{domain}/`. Groups come from `{ns}groups`; roles from
//! `{ns}roles` become the `roles` claim; `org_id` becomes the `org_id` claim.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::oidc::{ClaimNames, Discovery, OidcConnector, OidcSettings, Preset, TokenAuthMethod};
use crate::{ConnectorError, Identity};

/// Deliberately not `Debug`: it may hold the client secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth0Settings {
    pub domain: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Prefix of the custom claims an Auth0 Action adds (e.g. `https://example.com/`).
    #[serde(default)]
    pub claims_namespace: Option<String>,
    /// When set, the ID token's `org_id` must be one of these.
    #[serde(default)]
    pub allowed_organizations: Vec<String>,
    /// Replaces the computed issuer (tests).
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub token_endpoint_auth_method: TokenAuthMethod,
    /// Replaced by `upstream_clients` (a configuration error if set).
    #[serde(default)]
    pub accepted_audiences: Vec<String>,
    /// The provider's client ids → the Gatehouse client that may present
    /// tokens issued to them (see `OidcSettings::upstream_clients`).
    #[serde(default)]
    pub upstream_clients: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub access_token_audiences: Vec<String>,
}

struct Auth0Preset {
    roles_claim: Option<String>,
    allowed_organizations: Vec<String>,
}

impl Preset for Auth0Preset {
    fn kind(&self) -> &'static str {
        "auth0"
    }

    fn apply(
        &self,
        claims: &Map<String, Value>,
        identity: &mut Identity,
    ) -> Result<(), ConnectorError> {
        let org = claims.get("org_id").and_then(Value::as_str);
        if !self.allowed_organizations.is_empty() {
            match org {
                Some(o) if self.allowed_organizations.iter().any(|a| a == o) => {}
                Some(o) => {
                    return Err(ConnectorError::InvalidToken(format!(
                        "the user signed in through Auth0 organization '{}', which is not in allowed_organizations",
                        o.chars().take(64).collect::<String>()
                    )))
                }
                None => {
                    return Err(ConnectorError::InvalidToken(
                        "it names no Auth0 organization (org_id), and allowed_organizations is set"
                            .into(),
                    ))
                }
            }
        }
        if let Some(o) = org {
            identity
                .claims
                .insert("org_id".into(), Value::String(o.to_string()));
        }
        if let Some(name) = &self.roles_claim {
            let roles: Vec<Value> = match claims.get(name) {
                Some(Value::Array(items)) => {
                    items.iter().filter(|v| v.is_string()).cloned().collect()
                }
                Some(Value::String(one)) if !one.is_empty() => vec![Value::String(one.clone())],
                _ => Vec::new(),
            };
            if !roles.is_empty() {
                identity.claims.insert("roles".into(), Value::Array(roles));
            }
        }
        Ok(())
    }
}

pub fn from_settings(
    id: &str,
    display_name: Option<&str>,
    settings: &Map<String, Value>,
) -> Result<OidcConnector, ConnectorError> {
    new(
        id,
        display_name,
        crate::oidc::parse_settings(settings)?,
        |name| std::env::var(name).ok(),
    )
}

pub fn new(
    id: &str,
    display_name: Option<&str>,
    s: Auth0Settings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<OidcConnector, ConnectorError> {
    let config = |m: String| ConnectorError::Config(m);
    let domain = s.domain.trim();
    if domain.is_empty() || domain.contains("://") || domain.trim_end_matches('/').contains('/') {
        return Err(config(format!(
            "domain: '{domain}' must be the tenant or custom domain, such as 'example.eu.auth0.com' (no https://, no path)"
        )));
    }
    let domain = domain.trim_end_matches('/');
    if let Some(ns) = &s.claims_namespace {
        if ns.is_empty() {
            return Err(config("claims_namespace: must not be empty".into()));
        }
    }
    let ns = s.claims_namespace.clone().unwrap_or_default();
    let groups = if ns.is_empty() {
        "groups".to_string()
    } else {
        format!("{ns}groups")
    };
    let issuer = s
        .issuer
        .clone()
        .unwrap_or_else(|| format!("https://{domain}/"));
    let settings = OidcSettings {
        issuer,
        client_id: s.client_id,
        client_secret: s.client_secret,
        client_secret_env: s.client_secret_env,
        scopes: s
            .scopes
            .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]),
        claims: ClaimNames {
            groups,
            ..ClaimNames::default()
        },
        userinfo: false,
        timeout_secs: s.timeout_secs.unwrap_or(10),
        token_endpoint_auth_method: s.token_endpoint_auth_method,
        accepted_audiences: s.accepted_audiences,
        upstream_clients: s.upstream_clients,
        access_token_audiences: s.access_token_audiences,
    };
    let preset = Auth0Preset {
        roles_claim: (!ns.is_empty()).then(|| format!("{ns}roles")),
        allowed_organizations: s.allowed_organizations,
    };
    OidcConnector::with_preset(
        id,
        Some(display_name.unwrap_or("Auth0")),
        settings,
        env,
        Discovery::default(),
        Arc::new(preset),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Connector;
    use serde_json::json;

    fn preset() -> Auth0Preset {
        Auth0Preset {
            roles_claim: Some("https://example.com/roles".into()),
            allowed_organizations: vec!["org_a".into()],
        }
    }

    #[test]
    fn organizations_are_checked_and_roles_mapped() {
        let mut id = Identity::default();
        let claims = json!({"org_id": "org_a", "https://example.com/roles": ["editor"]});
        preset()
            .apply(claims.as_object().unwrap(), &mut id)
            .unwrap();
        assert_eq!(id.claims["roles"], json!(["editor"]));
        assert_eq!(id.claims["org_id"], json!("org_a"));
        for claims in [json!({"org_id": "org_b"}), json!({})] {
            let e = preset()
                .apply(claims.as_object().unwrap(), &mut Identity::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("allowed_organizations"), "{e}");
        }
    }

    #[test]
    fn issuer_is_the_domain_with_a_slash() {
        let s: Auth0Settings = serde_json::from_value(
            json!({"domain": "acme.eu.auth0.com", "client_id": "app", "client_secret": "s"}),
        )
        .unwrap();
        let c = new("auth0", None, s, |_| None).unwrap();
        assert_eq!(c.issuer(), Some("https://acme.eu.auth0.com/"));
        assert_eq!(c.kind(), "auth0");
        let s: Auth0Settings = serde_json::from_value(
            json!({"domain": "https://acme.eu.auth0.com", "client_id": "app", "client_secret": "s"}),
        )
        .unwrap();
        let e = new("auth0", None, s, |_| None).unwrap_err().to_string();
        assert!(e.contains("domain"), "{e}");
    }
}
