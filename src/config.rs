//! Typed configuration: command-line flags and GATEHOUSE_* environment
//! variables for the server, a TOML file for tenants, connectors, clients and
//! resources. Every problem is reported as one line naming the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::oauth::{redirect_uri, resource, scope::ScopeSet};
use crate::tenants::{
    model::{
        AuthMethod, CimdPolicy, ClientAssertionPolicy, ClientMetadata, ConnectorSettings,
        ExchangeRule, RegistrationPolicy, TenantSettings, TokenFormat, TokenPolicy, TrustedIssuer,
    },
    validate_tenant_id, SUPPORTED_GRANTS,
};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub keys: KeysConfig,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Signing algorithm for new keys: ES256 (default), EdDSA or RS256.
    #[serde(default)]
    pub algorithm: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Host name the tenant is served at (its issuer's host).
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub default_resource: Option<String>,
    #[serde(default)]
    pub tokens: TokenPolicy,
    #[serde(default)]
    pub signing_alg: Option<String>,
    #[serde(default)]
    pub connectors: Vec<ConnectorSettings>,
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub registration: RegistrationPolicy,
    #[serde(default)]
    pub token_exchange: Vec<ExchangeRule>,
    #[serde(default)]
    pub trusted_issuers: Vec<TrustedIssuer>,
    #[serde(default)]
    pub client_id_metadata: CimdPolicy,
    #[serde(default)]
    pub client_assertion: ClientAssertionPolicy,
    #[serde(default)]
    pub access_token_claims: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    pub uri: String,
    #[serde(default)]
    pub name: Option<String>,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub default_scopes: Option<Vec<String>>,
    #[serde(default)]
    pub access_token_ttl: Option<i64>,
    #[serde(default)]
    pub access_token_format: Option<TokenFormat>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    #[serde(default)]
    pub client_name: Option<String>,
    /// Plain secret: for development configs only. Prefer `secret_hash`
    /// (argon2 PHC) or `secret_env` (name of an environment variable).
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_hash: Option<String>,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub grant_types: Option<Vec<String>>,
    #[serde(default)]
    pub token_endpoint_auth_method: Option<AuthMethod>,
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub default_scopes: Option<Vec<String>>,
    #[serde(default)]
    pub access_token_format: TokenFormat,
    #[serde(default)]
    pub access_token_ttl: Option<i64>,
    #[serde(default)]
    pub refresh_token_ttl: Option<i64>,
    #[serde(default)]
    pub skip_consent: bool,
    /// May introspect any token of the tenant (trusted infrastructure only).
    #[serde(default)]
    pub introspect_any: bool,
}

/// A client's secret as configured, before hashing.
#[derive(Clone)]
pub enum SecretSource {
    None,
    Plain(String),
    Hash(String),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecretSource::None => "None",
            SecretSource::Plain(_) => "Plain(***)",
            SecretSource::Hash(_) => "Hash(***)",
        })
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!("{}: cannot read config file: {e}", path.display()))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<FileConfig, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            let msg = inner.message().replace('\n', " ");
            if path == "." || path.is_empty() {
                ConfigError(format!("{origin}{line}: {msg}"))
            } else {
                ConfigError(format!("{origin}{line}: {path}: {msg}"))
            }
        })?;
        cfg.validate()
            .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(alg) = &self.keys.algorithm {
            alg.parse::<crate::keys::Alg>()
                .map_err(|e| format!("keys.algorithm: {e}"))?;
        }
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let at = format!("tenants[{i}]");
            validate_tenant_id(&t.id).map_err(|e| format!("{at}.id: {e}"))?;
            if !seen.insert(&t.id) {
                return Err(format!("{at}.id: tenant '{}' is defined twice", t.id));
            }
            t.validate(&at)?;
        }
        let domains = self
            .tenants
            .iter()
            .filter_map(|t| Some((t.id.as_str(), t.domain.as_deref()?)));
        crate::tenants::validate_domains(domains, None).map_err(|e| format!("tenants: {e}"))?;
        Ok(())
    }
}

impl TenantConfig {
    pub fn settings(&self) -> TenantSettings {
        TenantSettings {
            display_name: self.display_name.clone(),
            domain: self.domain.clone(),
            default_resource: self
                .default_resource
                .as_deref()
                .and_then(|r| resource::canonicalize(r).ok()),
            tokens: self.tokens.clone(),
            signing_alg: self.signing_alg.clone(),
            connectors: self.connectors.clone(),
            registration: self.registration.clone(),
            token_exchange: self.token_exchange.clone(),
            trusted_issuers: self.trusted_issuers.clone(),
            client_id_metadata: self.client_id_metadata.clone(),
            client_assertion: self.client_assertion.clone(),
            access_token_claims: self.access_token_claims.clone(),
        }
    }

    fn validate(&self, at: &str) -> Result<(), String> {
        if let Some(d) = &self.domain {
            crate::tenants::validate_domain(d).map_err(|e| format!("{at}.domain: {e}"))?;
        }
        self.tokens
            .validate()
            .map_err(|e| format!("{at}.tokens: {e}"))?;
        if let Some(alg) = &self.signing_alg {
            alg.parse::<crate::keys::Alg>()
                .map_err(|e| format!("{at}.signing_alg: {e}"))?;
        }
        self.registration
            .validate()
            .map_err(|e| format!("{at}.registration: {e}"))?;
        for (j, t) in self.trusted_issuers.iter().enumerate() {
            validate_trusted_issuer(t).map_err(|e| format!("{at}.trusted_issuers[{j}].{e}"))?;
        }
        for (j, rule) in self.token_exchange.iter().enumerate() {
            validate_exchange_rule(rule).map_err(|e| format!("{at}.token_exchange[{j}].{e}"))?;
        }
        validate_may_act(&self.token_exchange).map_err(|e| format!("{at}.token_exchange{e}"))?;
        crate::tenants::validate_access_token_claims(&self.access_token_claims)
            .map_err(|e| format!("{at}.access_token_claims: {e}"))?;
        crate::tenants::build_connectors(&self.settings())
            .map_err(|e| format!("{at}.connectors: {e}"))?;
        let mut canon = Vec::new();
        for (j, r) in self.resources.iter().enumerate() {
            let rat = format!("{at}.resources[{j}]");
            canon.push(validate_resource(r).map_err(|e| format!("{rat}.{e}"))?);
        }
        if let Some(m) = &self.registration.machine_clients {
            let known: Vec<(String, Vec<String>)> = canon
                .iter()
                .cloned()
                .zip(self.resources.iter().map(|r| r.scopes.clone()))
                .collect();
            m.validate(&known)
                .map_err(|e| format!("{at}.registration.machine_clients.{e}"))?;
        }
        if let Some(d) = &self.default_resource {
            let c = resource::canonicalize(d).map_err(|e| format!("{at}.default_resource: {e}"))?;
            if !canon.contains(&c) {
                return Err(format!(
                    "{at}.default_resource: '{d}' is not one of this tenant's resources"
                ));
            }
        }
        for (j, c) in self.clients.iter().enumerate() {
            let cat = format!("{at}.clients[{j}]");
            c.metadata(&canon).map_err(|e| format!("{cat}.{e}"))?;
            c.secret_source().map_err(|e| format!("{cat}.{e}"))?;
        }
        Ok(())
    }
}

pub fn validate_trusted_issuer(t: &TrustedIssuer) -> Result<(), String> {
    let url = url::Url::parse(&t.issuer).map_err(|e| format!("issuer: not a URL: {e}"))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err("issuer: must be an http(s) URL".into());
    }
    match (&t.jwks_uri, &t.jwks) {
        (Some(_), Some(_)) => return Err("jwks: give jwks_uri or jwks, not both".into()),
        (None, None) => {
            return Err("jwks_uri: the issuer's keys are needed (jwks_uri or jwks)".into())
        }
        (Some(uri), None) => {
            url::Url::parse(uri).map_err(|e| format!("jwks_uri: not a URL: {e}"))?;
        }
        (None, Some(jwks)) => {
            serde_json::from_value::<jsonwebtoken::jwk::JwkSet>(jwks.clone())
                .map_err(|e| format!("jwks: {e}"))?;
        }
    }
    for (i, alg) in t.algorithms.iter().flatten().enumerate() {
        if !["ES256", "ES384", "RS256", "PS256", "EdDSA"].contains(&alg.as_str()) {
            return Err(format!(
                "algorithms[{i}]: '{alg}' is not allowed (ES256, ES384, RS256, PS256, EdDSA)"
            ));
        }
    }
    Ok(())
}

pub fn validate_exchange_rule(rule: &ExchangeRule) -> Result<(), String> {
    use crate::grants::token_exchange::{TYPE_ACCESS_TOKEN, TYPE_ID_TOKEN, TYPE_JWT};
    if rule.clients.is_empty() {
        return Err("clients: name at least one client id (or \"*\")".into());
    }
    if rule.resources.is_empty() && rule.audiences.is_empty() {
        return Err(
            "resources: name at least one resource URI (or \"*\"), or audiences for ID-JAG".into(),
        );
    }
    for (i, t) in rule.subject_token_types.iter().enumerate() {
        if t != TYPE_ACCESS_TOKEN && t != TYPE_JWT && t != TYPE_ID_TOKEN {
            return Err(format!(
                "subject_token_types[{i}]: '{t}' is not supported (use {TYPE_ACCESS_TOKEN}, {TYPE_JWT} or {TYPE_ID_TOKEN})"
            ));
        }
    }
    for (i, r) in rule.resources.iter().enumerate() {
        if r != "*" {
            resource::canonicalize(r).map_err(|e| format!("resources[{i}]: {e}"))?;
        }
    }
    for (i, a) in rule.actors.iter().enumerate() {
        if a == "*" || a.trim().is_empty() {
            return Err(format!(
                "actors[{i}]: name each client whose tokens may be presented as actor_token (\"*\" is not allowed)"
            ));
        }
    }
    for (i, c) in rule.may_act_for.iter().enumerate() {
        if c == "*" || c.trim().is_empty() {
            return Err(format!(
                "may_act_for[{i}]: name each client whose tokens carry may_act (\"*\" is not allowed)"
            ));
        }
    }
    if !rule.may_act_for.is_empty() && (rule.clients.len() != 1 || rule.clients[0] == "*") {
        return Err(
            "may_act_for: may_act names one party (RFC 8693 §4.4): the rule must name exactly one client"
                .into(),
        );
    }
    Ok(())
}

/// A client's tokens name one party in `may_act`: at most one rule may list
/// it in `may_act_for`.
pub fn validate_may_act(rules: &[ExchangeRule]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (j, rule) in rules.iter().enumerate() {
        for c in &rule.may_act_for {
            if !seen.insert(c.as_str()) {
                return Err(format!(
                    "[{j}].may_act_for: '{c}' is named by two rules; its tokens can name only one party in may_act"
                ));
            }
        }
    }
    Ok(())
}

pub fn validate_resource(r: &ResourceConfig) -> Result<String, String> {
    let uri = resource::canonicalize(&r.uri).map_err(|e| format!("uri: {e}"))?;
    if r.scopes.is_empty() {
        return Err("scopes: a resource needs at least one scope".into());
    }
    let scopes = ScopeSet::parse(&r.scopes.join(" ")).map_err(|e| format!("scopes: {e}"))?;
    if let Some(d) = &r.default_scopes {
        let d = ScopeSet::parse(&d.join(" ")).map_err(|e| format!("default_scopes: {e}"))?;
        if !d.is_subset(&scopes) {
            return Err(
                "default_scopes: every default scope must be one of the resource's scopes".into(),
            );
        }
    }
    if let Some(ttl) = r.access_token_ttl {
        if !(1..=86_400).contains(&ttl) {
            return Err(format!(
                "access_token_ttl: must be between 1 and 86400 seconds (got {ttl})"
            ));
        }
    }
    Ok(uri)
}

impl ClientConfig {
    pub fn secret_source(&self) -> Result<SecretSource, String> {
        let given = [
            self.secret.is_some(),
            self.secret_hash.is_some(),
            self.secret_env.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given > 1 {
            return Err("secret: give only one of secret, secret_hash and secret_env".into());
        }
        if let Some(s) = &self.secret {
            if s.len() < 16 {
                return Err("secret: must be at least 16 characters".into());
            }
            return Ok(SecretSource::Plain(s.clone()));
        }
        if let Some(h) = &self.secret_hash {
            argon2::PasswordHash::new(h)
                .map_err(|e| format!("secret_hash: not an argon2 PHC string: {e}"))?;
            return Ok(SecretSource::Hash(h.clone()));
        }
        if let Some(var) = &self.secret_env {
            return match std::env::var(var) {
                Ok(s) if s.len() >= 16 => Ok(SecretSource::Plain(s)),
                Ok(_) => Err(format!(
                    "secret_env: the secret in ${var} must be at least 16 characters"
                )),
                Err(_) => Err(format!(
                    "secret_env: environment variable ${var} is not set"
                )),
            };
        }
        Ok(SecretSource::None)
    }

    pub fn metadata(&self, tenant_resources: &[String]) -> Result<ClientMetadata, String> {
        let has_secret =
            self.secret.is_some() || self.secret_hash.is_some() || self.secret_env.is_some();
        let method = match self.token_endpoint_auth_method {
            Some(m) => m,
            None if has_secret => AuthMethod::ClientSecretBasic,
            None if self.jwks.is_some() || self.jwks_uri.is_some() => AuthMethod::PrivateKeyJwt,
            None => AuthMethod::None,
        };
        let meta = ClientMetadata {
            client_name: self.client_name.clone(),
            redirect_uris: self.redirect_uris.clone(),
            grant_types: self.grant_types.clone().unwrap_or_else(|| {
                if method == AuthMethod::None || !self.redirect_uris.is_empty() {
                    crate::tenants::default_grant_types()
                } else {
                    vec!["client_credentials".into()]
                }
            }),
            token_endpoint_auth_method: method,
            jwks: self.jwks.clone(),
            jwks_uri: self.jwks_uri.clone(),
            resources: self.resources.clone(),
            scopes: self.scopes.clone(),
            default_scopes: self.default_scopes.clone(),
            access_token_format: self.access_token_format,
            access_token_ttl: self.access_token_ttl,
            refresh_token_ttl: self.refresh_token_ttl,
            skip_consent: self.skip_consent,
            dynamic: false,
            initial_access_token: false,
            introspect_any: self.introspect_any,
        };
        validate_client(&self.client_id, &meta, has_secret, tenant_resources)?;
        Ok(meta)
    }
}

/// Rules every client must satisfy, however it was created. The error names
/// the offending field.
pub fn validate_client(
    client_id: &str,
    meta: &ClientMetadata,
    has_secret: bool,
    tenant_resources: &[String],
) -> Result<(), String> {
    if client_id.is_empty()
        || client_id.len() > 255
        || client_id.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err("client_id: must be 1-255 visible characters without spaces".into());
    }
    for g in &meta.grant_types {
        if !SUPPORTED_GRANTS.contains(&g.as_str()) {
            return Err(format!(
                "grant_types: '{g}' is not supported (supported: {})",
                SUPPORTED_GRANTS.join(", ")
            ));
        }
    }
    if meta.grant_types.is_empty() {
        return Err("grant_types: at least one grant type is needed".into());
    }
    let method = meta.token_endpoint_auth_method;
    if method.uses_secret() && !has_secret {
        return Err(format!("secret: {} needs a secret", method.as_str()));
    }
    if !method.uses_secret() && has_secret {
        return Err(format!(
            "secret: a client using {} must not have a secret",
            method.as_str()
        ));
    }
    if method == AuthMethod::PrivateKeyJwt && meta.jwks.is_none() && meta.jwks_uri.is_none() {
        return Err(
            "jwks: private_key_jwt needs the client's public keys (jwks or jwks_uri)".into(),
        );
    }
    if meta.jwks.is_some() && meta.jwks_uri.is_some() {
        return Err("jwks_uri: give jwks or jwks_uri, not both".into());
    }
    if method == AuthMethod::None && meta.allows_grant("client_credentials") {
        return Err(
            "grant_types: client_credentials needs an authenticated (confidential) client".into(),
        );
    }
    if meta.allows_grant("authorization_code") {
        if meta.redirect_uris.is_empty() {
            return Err("redirect_uris: authorization_code needs at least one redirect URI".into());
        }
        for (i, uri) in meta.redirect_uris.iter().enumerate() {
            redirect_uri::validate_registered(uri, true)
                .map_err(|e| format!("redirect_uris[{i}]: {e}"))?;
        }
    }
    if let Some(rs) = &meta.resources {
        for (i, r) in rs.iter().enumerate() {
            let c = resource::canonicalize(r).map_err(|e| format!("resources[{i}]: {e}"))?;
            if !tenant_resources.is_empty() && !tenant_resources.contains(&c) {
                return Err(format!(
                    "resources[{i}]: '{r}' is not a resource of this tenant"
                ));
            }
        }
    }
    for (field, list) in [
        ("scopes", &meta.scopes),
        ("default_scopes", &meta.default_scopes),
    ] {
        if let Some(list) = list {
            ScopeSet::parse(&list.join(" ")).map_err(|e| format!("{field}: {e}"))?;
        }
    }
    for (field, ttl, max) in [
        ("access_token_ttl", meta.access_token_ttl, 86_400),
        ("refresh_token_ttl", meta.refresh_token_ttl, 365 * 86_400),
    ] {
        if let Some(t) = ttl {
            if !(1..=max).contains(&t) {
                return Err(format!(
                    "{field}: must be between 1 and {max} seconds (got {t})"
                ));
            }
        }
    }
    if meta.skip_consent && meta.dynamic {
        return Err("skip_consent: a self-registered client cannot skip consent".into());
    }
    if meta.introspect_any && meta.dynamic {
        return Err("introspect_any: a self-registered client cannot introspect any token".into());
    }
    if meta.introspect_any && method == AuthMethod::None {
        return Err("introspect_any: a public client cannot introspect".into());
    }
    if meta.initial_access_token && !meta.dynamic {
        return Err("initial_access_token: only self-registered clients carry it".into());
    }
    Ok(())
}

/// Server settings resolved from flags and environment.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub listen: std::net::SocketAddr,
    pub public_url: String,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub config_path: Option<PathBuf>,
    pub test_clock_file: Option<PathBuf>,
}

/// The public URL must be an absolute http(s) URL without query or fragment;
/// it becomes the default tenant's issuer.
pub fn normalize_public_url(s: &str) -> Result<String, ConfigError> {
    let url = url::Url::parse(s)
        .map_err(|e| ConfigError(format!("--public-url: '{s}' is not a URL: {e}")))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(ConfigError(format!(
            "--public-url: scheme must be http or https (got '{}')",
            url.scheme()
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError(
            "--public-url: must not have a query or fragment".into(),
        ));
    }
    if url.host_str().is_none() {
        return Err(ConfigError("--public-url: must have a host".into()));
    }
    Ok(s.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RS: &str =
        "[[tenants.resources]]\nuri = \"https://mcp.example.com/mcp\"\nscopes = [\"mcp:read\"]\n";

    fn machine(policy: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(
            &format!("[[tenants]]\nid = \"default\"\n{RS}[tenants.registration.machine_clients]\n{policy}\n"),
            "x.toml",
        )
    }

    #[test]
    fn machine_client_policy_is_checked_at_load() {
        assert!(
            machine("resources = [\"https://mcp.example.com/mcp\"]\nscopes = [\"mcp:read\"]")
                .is_ok()
        );
        assert!(machine("require_initial_access_token = true").is_ok());
        for (policy, named) in [
            ("", "resources"),
            ("resources = []", "resources"),
            (
                "resources = [\"https://other.example.com/mcp\"]",
                "resources[0]",
            ),
            (
                "resources = [\"https://mcp.example.com/mcp\"]\nscopes = [\"mcp:write\"]",
                "scopes[0]",
            ),
            ("require_initial_access_token = true\nscopes = []", "scopes"),
        ] {
            let err = machine(policy).unwrap_err().0;
            assert!(
                err.contains("registration") && err.contains(&format!("machine_clients.{named}")),
                "{policy}: {err}"
            );
        }
    }

    #[test]
    fn introspect_any_is_for_confidential_admin_clients() {
        let text = "[[tenants]]\nid = \"default\"\n[[tenants.clients]]\nclient_id = \"c\"\nredirect_uris = [\"http://127.0.0.1/cb\"]\nintrospect_any = true\n";
        let err = FileConfig::parse(text, "x.toml").unwrap_err();
        assert!(err.0.contains("introspect_any"), "{}", err.0);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err =
            FileConfig::parse("[[tenants]]\nid = \"default\"\nbogus = 1\n", "x.toml").unwrap_err();
        assert!(err.0.starts_with("x.toml:"), "{}", err.0);
        assert!(err.0.contains("bogus"), "{}", err.0);
        assert!(!err.0.contains('\n'));
    }

    #[test]
    fn wrong_type_names_the_key_path() {
        let err = FileConfig::parse(
            "[[tenants]]\nid = \"default\"\n[tenants.tokens]\ncode_ttl = \"x\"\n",
            "x.toml",
        )
        .unwrap_err();
        assert!(err.0.contains("tenants[0].tokens.code_ttl"), "{}", err.0);
    }

    #[test]
    fn bad_redirect_uri_names_the_client_field() {
        let text = "[[tenants]]\nid = \"default\"\n[[tenants.clients]]\nclient_id = \"c\"\nredirect_uris = [\"http://evil.example/cb\"]\n";
        let err = FileConfig::parse(text, "x.toml").unwrap_err();
        assert!(
            err.0.contains("tenants[0].clients[0].redirect_uris[0]"),
            "{}",
            err.0
        );
    }

    #[test]
    fn tenant_domains_are_checked_at_load() {
        let two = "[[tenants]]\nid = \"a\"\ndomain = \"x.example\"\n[[tenants]]\nid = \"b\"\ndomain = \"x.example\"\n";
        let err = FileConfig::parse(two, "x.toml").unwrap_err();
        assert!(
            err.0.contains("'x.example' already belongs to tenant 'a'"),
            "{}",
            err.0
        );
        let bad = "[[tenants]]\nid = \"a\"\ndomain = \"X.example:8080\"\n";
        let err = FileConfig::parse(bad, "x.toml").unwrap_err();
        assert!(err.0.contains("tenants[0].domain"), "{}", err.0);
        let default = "[[tenants]]\nid = \"default\"\ndomain = \"x.example\"\n";
        let err = FileConfig::parse(default, "x.toml").unwrap_err();
        assert!(err.0.contains("default tenant"), "{}", err.0);
    }

    #[test]
    fn public_client_cannot_use_client_credentials() {
        let text = "[[tenants]]\nid = \"default\"\n[[tenants.clients]]\nclient_id = \"c\"\ngrant_types = [\"client_credentials\"]\n";
        let err = FileConfig::parse(text, "x.toml").unwrap_err();
        assert!(err.0.contains("confidential"), "{}", err.0);
    }

    #[test]
    fn production_example_parses_with_its_secrets_set() {
        std::env::set_var(
            "GATEHOUSE_SECRET_REPORTING_SERVICE",
            "a-long-enough-secret-1",
        );
        std::env::set_var("GATEHOUSE_SECRET_MCP_SERVER", "a-long-enough-secret-2");
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/production.example.toml"
        );
        FileConfig::load(Path::new(path)).unwrap();
    }

    #[test]
    fn shipped_dev_config_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/dev.toml");
        FileConfig::load(Path::new(path)).unwrap();
    }
}
