//! Amazon Cognito user pool preset over the generic OIDC connector.
//!
//! ```toml
//! [[tenants.connectors]]
//! id = "cognito"
//! type = "cognito"
//! region = "eu-west-1"
//! user_pool_id = "eu-west-1_AbCdEf123"
//! client_id = "app client id"
//! client_secret_env = "GATEHOUSE_COGNITO_SECRET"
//! domain = "auth.example.com"   # optional: the hosted UI domain (informational)
//! ```
//!
//! Issuer `https://cognito-idp.{region}.amazonaws.com/{user_pool_id}`,
//! groups from `cognito:groups`, subject `sub`; ID tokens must have
//! `token_use = "id"` when they say.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::oidc::{ClaimNames, Discovery, OidcConnector, OidcSettings, Preset, TokenAuthMethod};
use crate::{ConnectorError, Identity};

/// Deliberately not `Debug`: it may hold the client secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CognitoSettings {
    pub region: String,
    pub user_pool_id: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// The hosted UI domain (the authorize endpoint comes from discovery).
    #[serde(default)]
    pub domain: Option<String>,
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
}

struct CognitoPreset;

impl Preset for CognitoPreset {
    fn kind(&self) -> &'static str {
        "cognito"
    }

    fn apply(
        &self,
        claims: &Map<String, Value>,
        _identity: &mut Identity,
    ) -> Result<(), ConnectorError> {
        match claims.get("token_use").and_then(Value::as_str) {
            None | Some("id") => Ok(()),
            Some(other) => Err(ConnectorError::InvalidToken(format!(
                "it is a Cognito '{}' token, not an ID token",
                other.chars().take(16).collect::<String>()
            ))),
        }
    }
}

fn valid_region(r: &str) -> bool {
    !r.is_empty()
        && r.split('-').count() >= 3
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
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
    s: CognitoSettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<OidcConnector, ConnectorError> {
    let config = |m: String| ConnectorError::Config(m);
    if !valid_region(&s.region) {
        return Err(config(format!(
            "region: '{}' is not an AWS region such as 'eu-west-1'",
            s.region
        )));
    }
    let pool_ok = s
        .user_pool_id
        .strip_prefix(&format!("{}_", s.region))
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !pool_ok {
        return Err(config(format!(
            "user_pool_id: '{}' must look like '{}_AbCdEf123' (the pool's region, an underscore, its id)",
            s.user_pool_id, s.region
        )));
    }
    if let Some(d) = &s.domain {
        if d.contains("://") || d.contains('/') || d.is_empty() {
            return Err(config(format!(
                "domain: '{d}' must be a host name such as 'auth.example.com' (no scheme, no path)"
            )));
        }
    }
    let issuer = s.issuer.clone().unwrap_or_else(|| {
        format!(
            "https://cognito-idp.{}.amazonaws.com/{}",
            s.region, s.user_pool_id
        )
    });
    let settings = OidcSettings {
        issuer,
        client_id: s.client_id,
        client_secret: s.client_secret,
        client_secret_env: s.client_secret_env,
        scopes: s
            .scopes
            .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]),
        claims: ClaimNames {
            groups: "cognito:groups".into(),
            ..ClaimNames::default()
        },
        userinfo: false,
        timeout_secs: s.timeout_secs.unwrap_or(10),
        token_endpoint_auth_method: s.token_endpoint_auth_method,
        accepted_audiences: s.accepted_audiences,
        upstream_clients: s.upstream_clients,
        // Cognito access tokens carry no `aud` (only `client_id`), so they
        // cannot be bound to Gatehouse: present Cognito ID tokens instead.
        access_token_audiences: Vec::new(),
    };
    OidcConnector::with_preset(
        id,
        Some(display_name.unwrap_or("Amazon Cognito")),
        settings,
        env,
        Discovery::default(),
        Arc::new(CognitoPreset),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Connector;
    use serde_json::json;

    fn build(v: Value) -> Result<OidcConnector, String> {
        let s: CognitoSettings = serde_json::from_value(v).map_err(|e| e.to_string())?;
        new("cognito", None, s, |_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn issuer_comes_from_region_and_pool() {
        let c = build(json!({"region": "eu-west-1", "user_pool_id": "eu-west-1_AbC123", "client_id": "app", "client_secret": "s"}))
            .unwrap();
        assert_eq!(
            c.issuer(),
            Some("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123")
        );
        assert_eq!(c.kind(), "cognito");
        let e = build(json!({"region": "eu-west-1", "user_pool_id": "us-east-1_AbC123", "client_id": "app", "client_secret": "s"}))
            .err()
            .unwrap();
        assert!(e.contains("user_pool_id"), "{e}");
        let e = build(json!({"region": "Europe", "user_pool_id": "Europe_x", "client_id": "app", "client_secret": "s"}))
            .err()
            .unwrap();
        assert!(e.contains("region"), "{e}");
        let e = build(json!({"region": "eu-west-1", "user_pool_id": "eu-west-1_AbC123", "client_id": "app", "client_secret": "s", "domain": "https://x.auth.eu-west-1.amazoncognito.com"}))
            .err()
            .unwrap();
        assert!(e.contains("domain"), "{e}");
    }

    #[test]
    fn access_tokens_are_not_id_tokens() {
        let claims = json!({"token_use": "access"}).as_object().unwrap().clone();
        let e = CognitoPreset
            .apply(&claims, &mut Identity::default())
            .unwrap_err();
        assert!(e.to_string().contains("not an ID token"), "{e}");
    }
}
