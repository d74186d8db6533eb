//! What a tenant is made of, as stored (JSON documents in the store) and as
//! written in the config file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const DEFAULT_TENANT: &str = "default";

/// Token lifetimes, in seconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenPolicy {
    pub access_token_ttl: i64,
    pub refresh_token_ttl: i64,
    pub id_token_ttl: i64,
    pub code_ttl: i64,
    pub session_ttl: i64,
    /// How long a user may take between /authorize and consent.
    pub login_ttl: i64,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            access_token_ttl: 3600,
            refresh_token_ttl: 30 * 86_400,
            id_token_ttl: 3600,
            code_ttl: 60,
            session_ttl: 8 * 3600,
            login_ttl: 600,
        }
    }
}

impl TokenPolicy {
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            ("access_token_ttl", self.access_token_ttl, 1, 86_400),
            (
                "refresh_token_ttl",
                self.refresh_token_ttl,
                60,
                365 * 86_400,
            ),
            ("id_token_ttl", self.id_token_ttl, 1, 86_400),
            ("code_ttl", self.code_ttl, 1, 600),
            ("session_ttl", self.session_ttl, 60, 30 * 86_400),
            ("login_ttl", self.login_ttl, 30, 3600),
        ];
        for (name, value, min, max) in checks {
            if value < min || value > max {
                return Err(format!(
                    "{name} must be between {min} and {max} seconds (got {value})"
                ));
            }
        }
        Ok(())
    }

    /// The longest any token signed now can live: retired keys stay
    /// published at least this long.
    pub fn max_signed_lifetime(&self) -> i64 {
        self.access_token_ttl.max(self.id_token_ttl) + 300
    }
}

/// One upstream connector: its `type` picks the implementation, the rest of
/// the table is that implementation's settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ConnectorSettings {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Email domains whose users this connector signs in: a `login_hint`
    /// in one of them picks this connector without asking.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Seconds between re-checks of a user at the upstream (with the
    /// refresh token kept from their login) when their Gatehouse refresh
    /// token is used: a user disabled upstream loses access within this.
    #[serde(default = "default_upstream_check_interval")]
    pub upstream_check_interval: i64,
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

pub const DEFAULT_UPSTREAM_CHECK_INTERVAL: i64 = 300;

fn default_upstream_check_interval() -> i64 {
    DEFAULT_UPSTREAM_CHECK_INTERVAL
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    #[serde(default)]
    pub display_name: Option<String>,
    /// Host name this tenant is served at: its issuer is the public URL with
    /// the host replaced by this one, and requests whose `Host` is this name
    /// are this tenant's (see `issuer_of` and `TenantCtx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Resource used when an older client sends no `resource` parameter.
    #[serde(default)]
    pub default_resource: Option<String>,
    #[serde(default)]
    pub tokens: TokenPolicy,
    /// "ES256" (default), "EdDSA" or "RS256".
    #[serde(default)]
    pub signing_alg: Option<String>,
    #[serde(default)]
    pub connectors: Vec<ConnectorSettings>,
    /// Dynamic client registration (RFC 7591) policy.
    #[serde(default)]
    pub registration: RegistrationPolicy,
    /// Token exchange (RFC 8693) policy: nothing is allowed unless a rule says so.
    #[serde(default)]
    pub token_exchange: Vec<ExchangeRule>,
    /// Issuers whose ID-JAGs this tenant accepts (MCP enterprise-managed authorization).
    #[serde(default)]
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// Client ID Metadata Documents: `https` URL client ids fetched on use.
    #[serde(default)]
    pub client_id_metadata: CimdPolicy,
    /// What a private_key_jwt client assertion may name as its audience.
    #[serde(default)]
    pub client_assertion: ClientAssertionPolicy,
    /// User claims copied into access tokens: broker claim (`email`,
    /// `email_verified`, `name`, `groups`, or one a connector maps, such as
    /// `tid`, `roles`, `org_id`) → the claim's name in the token.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub access_token_claims: BTreeMap<String, String>,
}

/// Token claims Gatehouse sets itself: a copied claim may not take their name.
const RESERVED_ACCESS_TOKEN_CLAIMS: [&str; 21] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "act",
    "may_act",
    "auth_time",
    "cnf",
    "azp",
    "sid",
    "acr",
    "amr",
    "nonce",
    "typ",
    "token_type",
    "active",
];

/// Checks `[tenants.access_token_claims]`: names are plain claim names and
/// none shadows a claim Gatehouse sets.
pub fn validate_access_token_claims(map: &BTreeMap<String, String>) -> Result<(), String> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-:./".contains(&b))
    };
    let mut targets = std::collections::BTreeSet::new();
    for (source, target) in map {
        if !plain(source) || !plain(target) {
            return Err(format!(
                "'{source}' = '{target}': claim names are 1-100 characters of letters, digits and _-:./"
            ));
        }
        if RESERVED_ACCESS_TOKEN_CLAIMS.contains(&target.as_str()) {
            return Err(format!(
                "'{source}' = '{target}': '{target}' is set by Gatehouse and cannot be copied into"
            ));
        }
        if !targets.insert(target) {
            return Err(format!("'{target}' is the target of two claims"));
        }
    }
    Ok(())
}

/// Client ID Metadata Document settings of a tenant
/// (`[tenants.client_id_metadata]`). The address switches exist for tests
/// and closed networks: by default only public addresses are fetched.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CimdPolicy {
    /// Accept URL client ids and fetch their metadata documents.
    pub enabled: bool,
    /// Fetch from loopback addresses, and over plain `http` from a loopback
    /// host (for tests and local development only).
    pub allow_loopback: bool,
    /// Fetch from private-use addresses (10/8, 172.16/12, 192.168/16,
    /// 100.64/10, fc00::/7).
    pub allow_private_networks: bool,
}

impl Default for CimdPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_loopback: false,
            allow_private_networks: false,
        }
    }
}

/// Client assertion settings of a tenant (`[tenants.client_assertion]`).
/// By default an assertion's `aud` must be the tenant's issuer identifier
/// alone (draft-ietf-oauth-rfc7523bis), which is what the MCP SDKs send.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClientAssertionPolicy {
    /// Also accept the token endpoint URL as `aud` (RFC 7523 allowed it;
    /// older clients send it). A relaxation: logged at start.
    pub accept_token_endpoint_audience: bool,
}

/// One token-exchange permission: these clients may exchange these subject
/// token types for tokens to these resources.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRule {
    /// Client ids, or "*" for any confidential client allowed the grant.
    pub clients: Vec<String>,
    #[serde(default = "default_subject_token_types")]
    pub subject_token_types: Vec<String>,
    /// Target resource URIs, or "*" for any resource of the tenant.
    pub resources: Vec<String>,
    /// May the client ask for requested_token_type=refresh_token?
    #[serde(default)]
    pub allow_refresh_token: bool,
    /// For ID-JAG issuance (requested_token_type=…:id-jag): the issuers of
    /// the authorization servers these clients may get an ID-JAG for.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The client's id at those authorization servers (the ID-JAG's
    /// `client_id`); default: the same id as here.
    #[serde(default)]
    pub target_client_id: Option<String>,
    /// Clients whose access tokens these clients may present as
    /// `actor_token`, besides their own (never "*"). By default a client may
    /// only present a token issued to itself as the actor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actors: Vec<String>,
    /// Clients whose access tokens carry `may_act` (RFC 8693 §4.4) naming
    /// this rule's one client: only it may then exchange them, or act for
    /// them with its own actor token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub may_act_for: Vec<String>,
}

/// The `may_act` claim of access tokens issued to `client_id`: the one
/// client an exchange rule names for it in `may_act_for`, as RFC 8693 §4.4
/// identifies a party (`sub`, which for a client acting for itself is its
/// client id, and `client_id`). Config validation keeps it to one rule.
pub fn may_act_claim(rules: &[ExchangeRule], client_id: &str) -> Option<serde_json::Value> {
    let rule = rules
        .iter()
        .find(|r| r.may_act_for.iter().any(|c| c == client_id))?;
    match rule.clients.as_slice() {
        [actor] if actor != "*" => Some(serde_json::json!({"sub": actor, "client_id": actor})),
        _ => None,
    }
}

/// An issuer whose Identity Assertion JWT Authorization Grants (ID-JAG) this
/// tenant redeems at its token endpoint (RFC 7523 jwt-bearer grant).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// Exactly the `iss` of its assertions.
    pub issuer: String,
    /// Where its signing keys are published…
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// …or the keys themselves.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Allowed signature algorithms (default ES256, RS256, EdDSA).
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
}

pub fn default_subject_token_types() -> Vec<String> {
    vec!["urn:ietf:params:oauth:token-type:access_token".into()]
}

/// Who may register clients at `{issuer}/register`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    /// Anyone may register (what MCP clients expect).
    #[default]
    Open,
    /// Only with an initial access token from `gatehouse clients initial-token`.
    InitialAccessToken,
    /// No dynamic registration.
    Disabled,
}

/// Dynamic client registration settings of a tenant (`[tenants.registration]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationPolicy {
    pub mode: RegistrationMode,
    /// Registrations one source address may make per minute (burst).
    pub per_ip_per_minute: u32,
    /// Registrations the whole tenant accepts per minute, per node.
    pub per_tenant_per_minute: u32,
    /// Deprecated and ignored (a warning at start): `X-Forwarded-For` is
    /// believed only from `GATEHOUSE_TRUSTED_PROXIES` (`http::source`).
    pub trust_forwarded_for: bool,
    /// Self-registered clients never used for a token are deleted this many
    /// seconds after registration.
    pub unused_client_ttl: i64,
    /// Whether self-registered clients may use grants without a user
    /// (`client_credentials`, or an exchange whose subject is a client), and
    /// for what. Absent: they may not (`[tenants.registration.machine_clients]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_clients: Option<MachineClientPolicy>,
}

/// `[tenants.registration.machine_clients]`: what a self-registered client
/// may obtain with a grant that involves no user. Admin-configured clients
/// are not affected.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MachineClientPolicy {
    /// The only resources such tokens may be for. Required unless
    /// `require_initial_access_token` is set (then absent means any).
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    /// The only scopes such tokens may carry; absent: any scope of those
    /// resources.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Only clients that presented a valid initial access token when they
    /// registered (so never a Client ID Metadata Document client).
    #[serde(default)]
    pub require_initial_access_token: bool,
}

impl MachineClientPolicy {
    /// Checks the policy against the tenant's resources (canonical URIs)
    /// and their scopes.
    pub fn validate(&self, tenant_resources: &[(String, Vec<String>)]) -> Result<(), String> {
        if self.resources.is_none() && !self.require_initial_access_token {
            return Err(
                "resources: name the resources self-registered machine clients may get \
                 tokens for, or set require_initial_access_token = true"
                    .into(),
            );
        }
        let mut scopes_of_named: Vec<&str> = Vec::new();
        match &self.resources {
            Some(list) if list.is_empty() => {
                return Err("resources: an empty list allows nothing; remove the \
                     machine_clients table to refuse machine grants"
                    .into())
            }
            Some(list) => {
                for (i, r) in list.iter().enumerate() {
                    let canon = crate::oauth::resource::canonicalize(r)
                        .map_err(|e| format!("resources[{i}]: {e}"))?;
                    let known = tenant_resources.iter().find(|(uri, _)| *uri == canon);
                    match known {
                        Some((_, scopes)) => {
                            scopes_of_named.extend(scopes.iter().map(String::as_str))
                        }
                        None if tenant_resources.is_empty() => {}
                        None => {
                            return Err(format!(
                                "resources[{i}]: '{r}' is not a resource of this tenant"
                            ))
                        }
                    }
                }
            }
            None => {
                for (_, scopes) in tenant_resources {
                    scopes_of_named.extend(scopes.iter().map(String::as_str));
                }
            }
        }
        if let Some(scopes) = &self.scopes {
            if scopes.is_empty() {
                return Err(
                    "scopes: an empty list allows nothing; name scopes or leave it out".into(),
                );
            }
            for (i, s) in scopes.iter().enumerate() {
                if !tenant_resources.is_empty() && !scopes_of_named.contains(&s.as_str()) {
                    return Err(format!(
                        "scopes[{i}]: '{s}' is not a scope of the resources named here"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Default for RegistrationPolicy {
    fn default() -> Self {
        Self {
            mode: RegistrationMode::Open,
            per_ip_per_minute: 20,
            per_tenant_per_minute: 300,
            trust_forwarded_for: false,
            unused_client_ttl: 30 * 86_400,
            machine_clients: None,
        }
    }
}

impl RegistrationPolicy {
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("per_ip_per_minute", self.per_ip_per_minute),
            ("per_tenant_per_minute", self.per_tenant_per_minute),
        ] {
            if !(1..=100_000).contains(&value) {
                return Err(format!("{name} must be between 1 and 100000 (got {value})"));
            }
        }
        if let Some(m) = &self.machine_clients {
            m.validate(&[])
                .map_err(|e| format!("machine_clients.{e}"))?;
        }
        if !(3600..=3650 * 86_400).contains(&self.unused_client_ttl) {
            return Err(format!(
                "unused_client_ttl must be between 3600 and 315360000 seconds (got {})",
                self.unused_client_ttl
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceSettings {
    #[serde(default)]
    pub name: Option<String>,
    pub scopes: Vec<String>,
    /// Granted when a client asks for none and has no defaults of its own.
    #[serde(default)]
    pub default_scopes: Option<Vec<String>>,
    /// Overrides the tenant's access token lifetime for this resource.
    #[serde(default)]
    pub access_token_ttl: Option<i64>,
    /// The token format this MCP server accepts: `opaque` when it can only
    /// introspect. Takes precedence over the client's format.
    #[serde(default)]
    pub access_token_format: Option<TokenFormat>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormat {
    #[default]
    Jwt,
    Opaque,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

impl AuthMethod {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }

    pub fn uses_secret(&self) -> bool {
        matches!(
            self,
            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost
        )
    }

    pub const ALL: [&'static str; 4] = [
        "none",
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];
}

pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const SUPPORTED_GRANTS: [&str; 6] = [
    GRANT_AUTHORIZATION_CODE,
    GRANT_REFRESH_TOKEN,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
    GRANT_DEVICE_CODE,
    GRANT_JWT_BEARER,
];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientMetadata {
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default = "default_grant_types")]
    pub grant_types: Vec<String>,
    pub token_endpoint_auth_method: AuthMethod,
    /// Public keys for private_key_jwt…
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// …or where they are published (fetched with the tenant's address
    /// policy, cached five minutes, fetched again on an unknown `kid`).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Resources this client may get tokens for; `None` means any of the tenant's.
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    /// Scopes this client may ask for; `None` means any scope of its resources.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Scopes granted when a request names none.
    #[serde(default)]
    pub default_scopes: Option<Vec<String>>,
    #[serde(default)]
    pub access_token_format: TokenFormat,
    #[serde(default)]
    pub access_token_ttl: Option<i64>,
    #[serde(default)]
    pub refresh_token_ttl: Option<i64>,
    /// First-party clients configured by an admin may skip consent. Never
    /// honoured for clients that registered themselves.
    #[serde(default)]
    pub skip_consent: bool,
    /// True when the client registered itself (DCR or metadata document).
    #[serde(default)]
    pub dynamic: bool,
    /// A self-registered client that presented a valid initial access token
    /// when it registered (the tenant's machine-client policy may require it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub initial_access_token: bool,
    /// Admin-configured only: may introspect tokens of any audience and any
    /// client of the tenant (otherwise only its `resources`' and its own).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub introspect_any: bool,
}

pub fn default_grant_types() -> Vec<String> {
    vec![GRANT_AUTHORIZATION_CODE.into(), GRANT_REFRESH_TOKEN.into()]
}

impl ClientMetadata {
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    pub fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == AuthMethod::None
    }

    pub fn display_name<'a>(&'a self, client_id: &'a str) -> &'a str {
        self.client_name.as_deref().unwrap_or(client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn copied_claims_may_not_shadow_gatehouse_claims() {
        assert!(validate_access_token_claims(&claims(&[("tid", "entra_tid")])).is_ok());
        for reserved in ["sub", "aud", "scope", "client_id", "act", "active"] {
            let err = validate_access_token_claims(&claims(&[("email", reserved)])).unwrap_err();
            assert!(err.contains("set by Gatehouse"), "{reserved}: {err}");
        }
    }

    #[test]
    fn copied_claims_have_plain_distinct_names() {
        assert!(validate_access_token_claims(&claims(&[("email", "e mail")])).is_err());
        assert!(validate_access_token_claims(&claims(&[("", "x")])).is_err());
        let twice = claims(&[("email", "who"), ("name", "who")]);
        assert!(validate_access_token_claims(&twice)
            .unwrap_err()
            .contains("two claims"));
    }
}
