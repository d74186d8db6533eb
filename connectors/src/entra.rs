//! Microsoft Entra ID (Azure AD) preset over the generic OIDC connector.
//!
//! ```toml
//! [[tenants.connectors]]
//! id = "entra"
//! type = "entra"
//! tenant = "11111111-2222-3333-4444-555555555555"  # or "common" / "organizations"
//! client_id = "Application (client) ID"
//! client_secret_env = "GATEHOUSE_ENTRA_SECRET"
//! allowed_tenants = ["11111111-2222-3333-4444-555555555555"]  # required for multi-tenant
//! issuer_version = "v2"                                      # or "v1"
//! # authority = "https://login.microsoftonline.com"          # tests, sovereign clouds
//! ```
//!
//! Single tenant: the issuer is `{authority}/{tid}/v2.0` (v2) or
//! `https://sts.windows.net/{tid}/` (v1), checked exactly. Multi-tenant:
//! discovery names the issuer with a literal `{tenantid}`; each ID token's
//! `iss` must be that template with the token's own `tid`, and `tid` must be
//! in `allowed_tenants`. The stable subject is `{tid}:{oid}`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::oidc::{ClaimNames, Discovery, OidcConnector, OidcSettings, Preset, TokenAuthMethod};
use crate::{ConnectorError, Identity};

pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const V1_ISSUER_BASE: &str = "https://sts.windows.net";
/// The placeholder multi-tenant discovery documents carry.
pub const TENANT_TEMPLATE: &str = "{tenantid}";

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IssuerVersion {
    V1,
    #[default]
    V2,
}

/// Deliberately not `Debug`: it may hold the client secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraSettings {
    /// A tenant GUID (single tenant), or `common` / `organizations`.
    pub tenant: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Tenant ids (`tid`) accepted; required for multi-tenant.
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
    #[serde(default)]
    pub issuer_version: IssuerVersion,
    /// Base URL of the login service (default `https://login.microsoftonline.com`).
    #[serde(default)]
    pub authority: Option<String>,
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

/// True for the 8-4-4-4-12 hexadecimal form of a GUID.
pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

struct EntraPreset {
    /// The issuer with `{tenantid}` in place of the tenant id.
    template: String,
    /// `Some(tid)` for a single-tenant connector.
    single: Option<String>,
    allowed: Vec<String>,
}

impl Preset for EntraPreset {
    fn kind(&self) -> &'static str {
        "entra"
    }

    fn checks_issuer(&self) -> bool {
        self.single.is_none()
    }

    /// Multi-tenant: the template with one of the allowed tenant ids.
    fn issues(&self, configured: &str, iss: &str) -> bool {
        match &self.single {
            Some(_) => configured == iss,
            None => self
                .allowed
                .iter()
                .any(|tid| self.template.replace(TENANT_TEMPLATE, tid) == iss),
        }
    }

    fn apply(
        &self,
        claims: &Map<String, Value>,
        identity: &mut Identity,
    ) -> Result<(), ConnectorError> {
        let tid = claims
            .get("tid")
            .and_then(Value::as_str)
            .filter(|t| is_guid(t))
            .ok_or_else(|| {
                ConnectorError::InvalidToken(
                    "it carries no Microsoft Entra tenant id (tid claim)".into(),
                )
            })?
            .to_ascii_lowercase();
        match &self.single {
            Some(own) => {
                if &tid != own {
                    return Err(ConnectorError::InvalidToken(format!(
                        "it comes from Microsoft Entra tenant '{tid}', not the configured tenant '{own}'"
                    )));
                }
            }
            None => {
                let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
                let expected = self.template.replace(TENANT_TEMPLATE, &tid);
                if iss != expected {
                    return Err(ConnectorError::InvalidToken(format!(
                        "its issuer does not match the multi-tenant issuer: Microsoft publishes '{}' for all tenants, so the token's iss must be exactly that with its own tenant id ({tid}) in place of {TENANT_TEMPLATE}, i.e. '{expected}'",
                        self.template
                    )));
                }
                if !self.allowed.contains(&tid) {
                    return Err(ConnectorError::InvalidToken(format!(
                        "it comes from Microsoft Entra tenant '{tid}', which is not in allowed_tenants: a multi-tenant app lets users of any organisation sign in, so Gatehouse accepts only the tenants listed there"
                    )));
                }
            }
        }
        identity.upstream_subject = format!("{tid}:{}", identity.upstream_subject);
        identity.claims.insert("tid".into(), Value::String(tid));
        let overage = claims
            .get("_claim_names")
            .and_then(Value::as_object)
            .is_some_and(|names| names.contains_key("groups"));
        if overage {
            tracing::warn!(
                connector = %identity.connector_id,
                subject = %identity.upstream_subject,
                "Microsoft Entra groups overage: the user is in more groups than fit in the ID token (_claim_names.groups), so no groups were received; assign groups to the application or emit app roles instead"
            );
            identity
                .claims
                .insert("groups_overage".into(), Value::Bool(true));
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
    s: EntraSettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<OidcConnector, ConnectorError> {
    let config = |m: String| ConnectorError::Config(m);
    let authority = s
        .authority
        .clone()
        .unwrap_or_else(|| DEFAULT_AUTHORITY.into())
        .trim_end_matches('/')
        .to_string();
    let tenant = s.tenant.trim().to_ascii_lowercase();
    let multi = match tenant.as_str() {
        "common" | "organizations" => true,
        "consumers" => {
            return Err(config(
                "tenant: 'consumers' (personal Microsoft accounts only) is not supported; use a tenant id, 'organizations' or 'common'".into(),
            ))
        }
        t if is_guid(t) => false,
        other => {
            return Err(config(format!(
                "tenant: '{other}' must be the directory (tenant) id, a GUID, or 'common' / 'organizations' for a multi-tenant app"
            )))
        }
    };
    let mut allowed = Vec::new();
    for t in &s.allowed_tenants {
        let t = t.trim().to_ascii_lowercase();
        if !is_guid(&t) {
            return Err(config(format!(
                "allowed_tenants: '{t}' is not a tenant id (a GUID)"
            )));
        }
        allowed.push(t);
    }
    if multi && allowed.is_empty() {
        return Err(config(format!(
            "allowed_tenants: required with tenant = '{tenant}': a multi-tenant app accepts users of any organisation, so list the tenant ids (GUIDs) allowed to sign in"
        )));
    }
    if !multi && allowed.iter().any(|t| t != &tenant) {
        return Err(config(format!(
            "allowed_tenants: a single-tenant connector accepts only its tenant '{tenant}'; use tenant = 'organizations' to accept several"
        )));
    }
    let tenant_in_issuer = if multi { TENANT_TEMPLATE } else { &tenant };
    let (discovery_base, issuer) = match s.issuer_version {
        IssuerVersion::V2 => (
            format!("{authority}/{tenant}/v2.0"),
            format!("{authority}/{tenant_in_issuer}/v2.0"),
        ),
        IssuerVersion::V1 => (
            format!("{authority}/{tenant}"),
            format!("{V1_ISSUER_BASE}/{tenant_in_issuer}/"),
        ),
    };
    let discovery = if multi || discovery_base != issuer {
        Discovery {
            base: Some(discovery_base),
            expected_issuer: Some(issuer.clone()),
        }
    } else {
        Discovery::default()
    };
    let settings = OidcSettings {
        issuer: issuer.clone(),
        client_id: s.client_id,
        client_secret: s.client_secret,
        client_secret_env: s.client_secret_env,
        scopes: s
            .scopes
            .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]),
        claims: ClaimNames {
            subject: "oid".into(),
            ..ClaimNames::default()
        },
        userinfo: false,
        timeout_secs: s.timeout_secs.unwrap_or(10),
        token_endpoint_auth_method: s.token_endpoint_auth_method,
        accepted_audiences: s.accepted_audiences,
        upstream_clients: s.upstream_clients,
        access_token_audiences: s.access_token_audiences,
    };
    let preset = EntraPreset {
        template: issuer,
        single: (!multi).then_some(tenant),
        allowed,
    };
    OidcConnector::with_preset(
        id,
        Some(display_name.unwrap_or("Microsoft")),
        settings,
        env,
        discovery,
        Arc::new(preset),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Connector;
    use serde_json::json;

    const TID: &str = "9f8e7d6c-1111-4222-8333-00000000abcd";
    const OTHER: &str = "0a0a0a0a-2222-4333-8444-555555555555";

    fn multi() -> EntraPreset {
        EntraPreset {
            template: "https://login.microsoftonline.com/{tenantid}/v2.0".into(),
            single: None,
            allowed: vec![TID.into()],
        }
    }

    fn identity() -> Identity {
        Identity {
            connector_id: "entra".into(),
            upstream_subject: "oid-1".into(),
            ..Identity::default()
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn multi_tenant_substitutes_the_tokens_tid_into_the_template() {
        let p = multi();
        assert!(p.checks_issuer());
        let mut id = identity();
        p.apply(
            &claims(json!({
                "iss": format!("https://login.microsoftonline.com/{TID}/v2.0"),
                "tid": TID,
                "oid": "oid-1",
            })),
            &mut id,
        )
        .unwrap();
        assert_eq!(id.upstream_subject, format!("{TID}:oid-1"));
        assert_eq!(id.claims["tid"], json!(TID));
        assert!(!id.claims.contains_key("groups_overage"));
    }

    #[test]
    fn multi_tenant_refuses_an_issuer_that_is_not_the_template_for_its_tid() {
        // A token whose tid is allowed but whose iss names another tenant.
        let e = multi()
            .apply(
                &claims(json!({
                    "iss": format!("https://login.microsoftonline.com/{OTHER}/v2.0"),
                    "tid": TID,
                })),
                &mut identity(),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("multi-tenant issuer"), "{e}");
        assert!(e.contains("{tenantid}"), "{e}");
        // The template itself is never a valid iss.
        let e = multi()
            .apply(
                &claims(json!({
                    "iss": "https://login.microsoftonline.com/{tenantid}/v2.0",
                    "tid": TID,
                })),
                &mut identity(),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("multi-tenant issuer"), "{e}");
    }

    #[test]
    fn multi_tenant_claims_the_issuers_of_allowed_tenants_only() {
        let p = multi();
        let template = "https://login.microsoftonline.com/{tenantid}/v2.0";
        let own = format!("https://login.microsoftonline.com/{TID}/v2.0");
        assert!(p.issues(template, &own));
        let other = "https://login.microsoftonline.com/0a0a0a0a-2222-4333-8444-555555555555/v2.0";
        assert!(!p.issues(template, other), "a tenant not allowed");
        assert!(!p.issues(template, template), "the template itself");
    }

    #[test]
    fn multi_tenant_refuses_unknown_tenants_and_missing_tid() {
        let e = multi()
            .apply(
                &claims(json!({
                    "iss": format!("https://login.microsoftonline.com/{OTHER}/v2.0"),
                    "tid": OTHER,
                })),
                &mut identity(),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("allowed_tenants") && e.contains(OTHER), "{e}");
        let e = multi()
            .apply(
                &claims(json!({"iss": "https://login.microsoftonline.com/x/v2.0"})),
                &mut identity(),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("tid"), "{e}");
    }

    #[test]
    fn single_tenant_checks_tid_and_reports_groups_overage() {
        let p = EntraPreset {
            template: format!("https://login.microsoftonline.com/{TID}/v2.0"),
            single: Some(TID.into()),
            allowed: vec![],
        };
        assert!(!p.checks_issuer());
        let mut id = identity();
        p.apply(
            &claims(json!({"tid": TID, "_claim_names": {"groups": "src1"}})),
            &mut id,
        )
        .unwrap();
        assert_eq!(id.claims["groups_overage"], json!(true));
        let e = p
            .apply(&claims(json!({"tid": OTHER})), &mut identity())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the configured tenant"), "{e}");
    }

    fn build(v: Value) -> Result<OidcConnector, String> {
        let s: EntraSettings = serde_json::from_value(v).map_err(|e| e.to_string())?;
        new("entra", None, s, |_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn settings_build_the_right_issuer_or_name_the_problem() {
        let c = build(json!({"tenant": TID, "client_id": "app", "client_secret": "s"})).unwrap();
        assert_eq!(
            c.issuer(),
            Some(format!("https://login.microsoftonline.com/{TID}/v2.0").as_str())
        );
        assert_eq!(c.kind(), "entra");
        let c = build(json!({"tenant": TID, "client_id": "app", "client_secret": "s", "issuer_version": "v1"}))
            .unwrap();
        assert_eq!(
            c.issuer(),
            Some(format!("https://sts.windows.net/{TID}/").as_str())
        );
        let c = build(json!({"tenant": "organizations", "client_id": "app", "client_secret": "s", "allowed_tenants": [TID]}))
            .unwrap();
        assert_eq!(
            c.issuer(),
            Some("https://login.microsoftonline.com/{tenantid}/v2.0")
        );
        let e = build(json!({"tenant": "common", "client_id": "app", "client_secret": "s"}))
            .err()
            .unwrap();
        assert!(e.contains("allowed_tenants"), "{e}");
        let e = build(json!({"tenant": "contoso.com", "client_id": "app", "client_secret": "s"}))
            .err()
            .unwrap();
        assert!(e.contains("tenant"), "{e}");
        let e = build(json!({"tenant": TID, "client_id": "app", "client_secret": "s", "allowed_tenants": [OTHER]}))
            .err()
            .unwrap();
        assert!(e.contains("single-tenant"), "{e}");
        let e = build(json!({"tenant": "organizations", "client_id": "app", "client_secret": "s", "allowed_tenants": ["nope"]}))
            .err()
            .unwrap();
        assert!(e.contains("nope"), "{e}");
    }
}
