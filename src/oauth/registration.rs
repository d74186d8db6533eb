//! Client metadata for dynamic client registration (RFC 7591 §2, with the
//! `application_type` of OpenID Connect Dynamic Client Registration §2),
//! validated by a list of small named checks. The same checks serve
//! registration (`POST /register`) and update (`PUT /register/{client_id}`,
//! RFC 7592 §2.2).
//!
//! Fields this server does not know are ignored (RFC 7591 §2); a JSON `null`
//! counts as an omitted field (RFC 7592 §2.2). Known fields with a wrong
//! type or value are refused, never silently replaced.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use super::params::has_control;
use super::redirect_uri;
use super::scope::ScopeSet;
use crate::tenants::{
    AuthMethod, ClientMetadata, TokenFormat, GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN, GRANT_TOKEN_EXCHANGE, OIDC_SCOPES, SUPPORTED_GRANTS,
};

/// Most redirect URIs one client may register.
pub const MAX_REDIRECT_URIS: usize = 20;
/// Longest URI accepted in any metadata field.
pub const MAX_URI_LEN: usize = 2000;
/// Longest free-text value (`client_name`, `software_id`, ...).
pub const MAX_TEXT_LEN: usize = 256;
/// Most `contacts` entries.
pub const MAX_CONTACTS: usize = 10;
/// Most keys in an inline `jwks`.
pub const MAX_JWKS_KEYS: usize = 10;

/// The two error codes of RFC 7591 §3.2.2 this server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataErrorCode {
    InvalidClientMetadata,
    InvalidRedirectUri,
}

impl MetadataErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            MetadataErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            MetadataErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
        }
    }
}

/// Why metadata was refused. `description` names the field and never echoes
/// a submitted URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataError {
    pub code: MetadataErrorCode,
    pub description: String,
}

impl MetadataError {
    pub fn metadata(d: impl Into<String>) -> Self {
        Self {
            code: MetadataErrorCode::InvalidClientMetadata,
            description: d.into(),
        }
    }

    pub fn redirect(d: impl Into<String>) -> Self {
        Self {
            code: MetadataErrorCode::InvalidRedirectUri,
            description: d.into(),
        }
    }
}

impl std::fmt::Display for MetadataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl std::error::Error for MetadataError {}

pub type MetadataResult<T> = Result<T, MetadataError>;

/// OIDC Dynamic Client Registration §2 `application_type`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationType {
    /// Redirect URIs are https on a real host.
    Web,
    /// Redirect URIs are http on a loopback host or a private-use scheme.
    Native,
}

/// The metadata as registered, in RFC 7591 names: stored with the
/// registration and returned by registration, read and update.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RegisteredMetadata {
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: AuthMethod,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub application_type: ApplicationType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
}

impl RegisteredMetadata {
    /// The client as the rest of Gatehouse sees it. A self-registered client
    /// may use any resource of the tenant and any scope of those resources;
    /// its registered `scope` becomes its default scopes (OIDC scopes are
    /// never defaults, so they are left out).
    pub fn client_metadata(&self) -> ClientMetadata {
        let defaults: Vec<String> = self
            .scope
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty() && !OIDC_SCOPES.contains(s))
            .map(str::to_string)
            .collect();
        ClientMetadata {
            client_name: self.client_name.clone(),
            redirect_uris: self.redirect_uris.clone(),
            grant_types: self.grant_types.clone(),
            token_endpoint_auth_method: self.token_endpoint_auth_method,
            jwks: self.jwks.clone(),
            jwks_uri: self.jwks_uri.clone(),
            resources: None,
            scopes: None,
            default_scopes: (!defaults.is_empty()).then_some(defaults),
            access_token_format: TokenFormat::Jwt,
            access_token_ttl: None,
            refresh_token_ttl: None,
            skip_consent: false,
            dynamic: true,
            initial_access_token: false,
            introspect_any: false,
        }
    }
}

/// What the checks need to know about the tenant.
pub struct Policy<'a> {
    /// Every scope a client of this tenant may register: the resources'
    /// scopes and the OIDC ones.
    pub tenant_scopes: &'a [String],
}

/// What the checks fill in, in order.
#[derive(Debug, Default)]
pub struct Draft {
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub method: Option<AuthMethod>,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    pub redirect_uris: Vec<String>,
    pub application_type: Option<ApplicationType>,
    pub scope: Option<String>,
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub tos_uri: Option<String>,
    pub policy_uri: Option<String>,
    pub contacts: Option<Vec<String>>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
}

pub type Check = fn(&Map<String, Value>, &Policy<'_>, &mut Draft) -> MetadataResult<()>;

/// The checks, in order: later ones read what earlier ones decided
/// (response types follow grant types; the redirect URI rules follow the
/// application type, which may be inferred from the redirect URIs).
pub const CHECKS: [Check; 13] = [
    check_no_control_characters,
    check_grant_types,
    check_response_types,
    check_auth_method,
    check_keys,
    check_redirect_uris,
    check_application_type,
    check_redirect_uri_rules,
    check_scope,
    check_client_name,
    check_informational_uris,
    check_contacts,
    check_software,
];

/// No member name or string anywhere in the document may hold a control
/// character (NUL included): none belongs in client metadata, and such
/// input must not reach storage or the consent page.
pub fn check_no_control_characters(
    doc: &Map<String, Value>,
    _: &Policy<'_>,
    _: &mut Draft,
) -> MetadataResult<()> {
    fn clean(v: &Value) -> bool {
        match v {
            Value::String(s) => !has_control(s),
            Value::Array(items) => items.iter().all(clean),
            Value::Object(members) => members.iter().all(|(k, v)| !has_control(k) && clean(v)),
            _ => true,
        }
    }
    if doc.iter().all(|(k, v)| !has_control(k) && clean(v)) {
        Ok(())
    } else {
        Err(MetadataError::metadata(
            "the client metadata contains a control character",
        ))
    }
}

/// Validates a registration (or update) request body.
pub fn validate(body: &Value, policy: &Policy<'_>) -> MetadataResult<RegisteredMetadata> {
    let doc = body
        .as_object()
        .ok_or_else(|| MetadataError::metadata("the request body must be a JSON object"))?;
    let mut d = Draft::default();
    for check in CHECKS {
        check(doc, policy, &mut d)?;
    }
    Ok(RegisteredMetadata {
        redirect_uris: d.redirect_uris,
        token_endpoint_auth_method: d.method.unwrap_or(AuthMethod::ClientSecretBasic),
        grant_types: d.grant_types,
        response_types: d.response_types,
        application_type: d.application_type.unwrap_or(ApplicationType::Web),
        client_name: d.client_name,
        client_uri: d.client_uri,
        logo_uri: d.logo_uri,
        tos_uri: d.tos_uri,
        policy_uri: d.policy_uri,
        scope: d.scope,
        contacts: d.contacts,
        software_id: d.software_id,
        software_version: d.software_version,
        jwks: d.jwks,
        jwks_uri: d.jwks_uri,
    })
}

// ---------------------------------------------------------------------------
// Field readers
// ---------------------------------------------------------------------------

/// A field's value; `null` counts as absent.
fn field<'a>(doc: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    doc.get(name).filter(|v| !v.is_null())
}

fn is_clean_text(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// An optional string of at most `max` characters without control
/// characters; an empty string counts as absent.
fn opt_string(doc: &Map<String, Value>, name: &str, max: usize) -> MetadataResult<Option<String>> {
    match field(doc, name) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            if s.chars().count() > max {
                return Err(MetadataError::metadata(format!(
                    "{name} must be at most {max} characters"
                )));
            }
            if !is_clean_text(s) {
                return Err(MetadataError::metadata(format!(
                    "{name} must not contain control characters"
                )));
            }
            Ok(Some(s.clone()))
        }
        Some(_) => Err(MetadataError::metadata(format!("{name} must be a string"))),
    }
}

/// An optional array of strings (duplicates removed, order kept).
fn opt_string_array(
    doc: &Map<String, Value>,
    name: &str,
    max_items: usize,
    max_len: usize,
) -> MetadataResult<Option<Vec<String>>> {
    let Some(value) = field(doc, name) else {
        return Ok(None);
    };
    let items = value
        .as_array()
        .ok_or_else(|| MetadataError::metadata(format!("{name} must be an array of strings")))?;
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let s = item.as_str().ok_or_else(|| {
            MetadataError::metadata(format!("{name} must be an array of strings"))
        })?;
        if s.is_empty() || s.chars().count() > max_len || !is_clean_text(s) {
            return Err(MetadataError::metadata(format!(
                "each {name} value must be 1-{max_len} characters without control characters"
            )));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    if out.len() > max_items {
        return Err(MetadataError::metadata(format!(
            "{name} may have at most {max_items} values"
        )));
    }
    Ok(Some(out))
}

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == value)
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

/// `grant_types`: default `["authorization_code"]` (RFC 7591 §2); only the
/// grants a self-registered client may use (token exchange needs an admin
/// to name the client in the tenant's exchange policy, so it is not
/// self-service); `refresh_token` only with a grant that issues one
/// (authorization code or device code).
pub fn check_grant_types(
    doc: &Map<String, Value>,
    _: &Policy<'_>,
    d: &mut Draft,
) -> MetadataResult<()> {
    let grants = opt_string_array(doc, "grant_types", SUPPORTED_GRANTS.len() * 2, 200)?
        .unwrap_or_else(|| vec![GRANT_AUTHORIZATION_CODE.to_string()]);
    if grants.is_empty() {
        return Err(MetadataError::metadata(
            "grant_types must name at least one grant type",
        ));
    }
    for g in &grants {
        if !SUPPORTED_GRANTS.contains(&g.as_str()) || g == GRANT_TOKEN_EXCHANGE {
            return Err(MetadataError::metadata(format!(
                "grant_types: '{g}' is not available to self-registered clients (available: {})",
                SUPPORTED_GRANTS
                    .iter()
                    .filter(|g| **g != GRANT_TOKEN_EXCHANGE)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    if has(&grants, GRANT_REFRESH_TOKEN)
        && !has(&grants, GRANT_AUTHORIZATION_CODE)
        && !has(&grants, GRANT_DEVICE_CODE)
    {
        return Err(MetadataError::metadata(
            "grant_types: refresh_token needs authorization_code or the device grant (only they issue refresh tokens)",
        ));
    }
    d.grant_types = grants;
    Ok(())
}

/// `response_types`: only `code`, and exactly when the client has the
/// `authorization_code` grant (RFC 7591 §2.1). Default: `["code"]` for
/// such clients, none otherwise.
pub fn check_response_types(
    doc: &Map<String, Value>,
    _: &Policy<'_>,
    d: &mut Draft,
) -> MetadataResult<()> {
    let uses_code = has(&d.grant_types, GRANT_AUTHORIZATION_CODE);
    let Some(types) = opt_string_array(doc, "response_types", 10, 200)? else {
        d.response_types = if uses_code {
            vec!["code".to_string()]
        } else {
            vec![]
        };
        return Ok(());
    };
    if let Some(other) = types.iter().find(|t| *t != "code") {
        return Err(MetadataError::metadata(format!(
            "response_types: '{other}' is not supported (only code)"
        )));
    }
    match (has(&types, "code"), uses_code) {
        (true, false) => Err(MetadataError::metadata(
            "response_types: code needs the authorization_code grant in grant_types",
        )),
        (false, true) => Err(MetadataError::metadata(
            "response_types: the authorization_code grant needs the code response type",
        )),
        _ => {
            d.response_types = types;
            Ok(())
        }
    }
}

/// `token_endpoint_auth_method`: default `client_secret_basic` (RFC 7591
/// §2); a public client (`none`) may not use `client_credentials`.
pub fn check_auth_method(
    doc: &Map<String, Value>,
    _: &Policy<'_>,
    d: &mut Draft,
) -> MetadataResult<()> {
    let method = match opt_string(doc, "token_endpoint_auth_method", 200)? {
        None => AuthMethod::ClientSecretBasic,
        Some(m) => match m.as_str() {
            "none" => AuthMethod::None,
            "client_secret_basic" => AuthMethod::ClientSecretBasic,
            "client_secret_post" => AuthMethod::ClientSecretPost,
            "private_key_jwt" => AuthMethod::PrivateKeyJwt,
            other => {
                return Err(MetadataError::metadata(format!(
                    "token_endpoint_auth_method: '{other}' is not supported (supported: {})",
                    AuthMethod::ALL.join(", ")
                )))
            }
        },
    };
    if method == AuthMethod::None && has(&d.grant_types, GRANT_CLIENT_CREDENTIALS) {
        return Err(MetadataError::metadata(
            "grant_types: client_credentials needs a confidential client; \
             token_endpoint_auth_method none is a public client",
        ));
    }
    d.method = Some(method);
    Ok(())
}

/// `jwks` / `jwks_uri` (RFC 7591 §2: one or the other): the public keys for
/// `private_key_jwt`, inline or at an https URL (http only on a loopback
/// host; the tenant's address policy applies when the keys are fetched).
pub fn check_keys(doc: &Map<String, Value>, _: &Policy<'_>, d: &mut Draft) -> MetadataResult<()> {
    match (field(doc, "jwks"), field(doc, "jwks_uri")) {
        (Some(_), Some(_)) => {
            return Err(MetadataError::metadata(
                "jwks and jwks_uri must not both be given",
            ));
        }
        (Some(jwks), None) => {
            check_jwks(jwks)?;
            d.jwks = Some(jwks.clone());
        }
        (None, Some(uri)) => {
            let uri = uri
                .as_str()
                .ok_or_else(|| MetadataError::metadata("jwks_uri must be a string"))?;
            check_jwks_uri(uri)?;
            d.jwks_uri = Some(uri.to_string());
        }
        (None, None) if d.method == Some(AuthMethod::PrivateKeyJwt) => {
            return Err(MetadataError::metadata(
                "jwks: private_key_jwt needs the client's public keys (jwks or jwks_uri)",
            ));
        }
        (None, None) => {}
    }
    if (d.jwks.is_some() || d.jwks_uri.is_some()) && d.method != Some(AuthMethod::PrivateKeyJwt) {
        return Err(MetadataError::metadata(
            "jwks/jwks_uri are only for token_endpoint_auth_method private_key_jwt",
        ));
    }
    Ok(())
}

fn check_jwks_uri(uri: &str) -> MetadataResult<()> {
    let bad = |why: &str| MetadataError::metadata(format!("jwks_uri {why}"));
    let url = url::Url::parse(uri).map_err(|_| bad("is not an absolute URL"))?;
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must have no fragment and no user information"));
    }
    let loopback = matches!(
        url.host_str(),
        Some("127.0.0.1") | Some("[::1]") | Some("localhost")
    );
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(bad("must be https")),
    }
}

/// Members that only a private or symmetric key has.
const PRIVATE_KEY_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

fn check_jwks(jwks: &Value) -> MetadataResult<()> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| MetadataError::metadata("jwks must be a JWK Set: {\"keys\": [...]}"))?;
    if keys.is_empty() || keys.len() > MAX_JWKS_KEYS {
        return Err(MetadataError::metadata(format!(
            "jwks must hold 1-{MAX_JWKS_KEYS} keys"
        )));
    }
    for (i, key) in keys.iter().enumerate() {
        let obj = key
            .as_object()
            .ok_or_else(|| MetadataError::metadata(format!("jwks.keys[{i}] must be a JWK")))?;
        if PRIVATE_KEY_MEMBERS.iter().any(|m| obj.contains_key(*m)) {
            return Err(MetadataError::metadata(format!(
                "jwks.keys[{i}] holds private or symmetric key material; register public keys only"
            )));
        }
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.clone()).map_err(|_| {
            MetadataError::metadata(format!("jwks.keys[{i}] is not a supported public JWK"))
        })?;
        jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|_| {
            MetadataError::metadata(format!("jwks.keys[{i}] is not a usable public key"))
        })?;
    }
    Ok(())
}

/// `redirect_uris`: an array of strings; at least one for the
/// `authorization_code` grant.
pub fn check_redirect_uris(
    doc: &Map<String, Value>,
    _: &Policy<'_>,
    d: &mut Draft,
) -> MetadataResult<()> {
    let uris = opt_string_array(doc, "redirect_uris", MAX_REDIRECT_URIS, MAX_URI_LEN)
        .map_err(|e| MetadataError::redirect(e.description))?
        .unwrap_or_default();
    if uris.is_empty() && has(&d.grant_types, GRANT_AUTHORIZATION_CODE) {
        return Err(MetadataError::redirect(
            "redirect_uris: the authorization_code grant needs at least one redirect URI",
        ));
    }
    d.redirect_uris = uris;
    Ok(())
}

/// Whether a redirect URI is of the kind a native app uses: `http` on a
/// loopback host, or a private-use scheme (RFC 8252 §7.1, §7.3).
pub fn is_native_redirect(uri: &str) -> bool {
    match Url::parse(uri) {
        Ok(url) => match url.scheme() {
            "http" => redirect_uri::is_loopback_only(uri),
            "https" => false,
            _ => true,
        },
        Err(_) => false,
    }
}

/// `application_type`: `web` or `native`. When omitted (as MCP clients
/// usually do), `native` if every redirect URI is a native kind (loopback
/// `http` or a private-use scheme), else `web`, the OIDC default.
pub fn check_application_type(
    doc: &Map<String, Value>,
    _: &Policy<'_>,
    d: &mut Draft,
) -> MetadataResult<()> {
    let explicit = match opt_string(doc, "application_type", 200)?.as_deref() {
        None => None,
        Some("web") => Some(ApplicationType::Web),
        Some("native") => Some(ApplicationType::Native),
        Some(other) => {
            return Err(MetadataError::metadata(format!(
                "application_type: '{other}' is not supported (web or native)"
            )))
        }
    };
    d.application_type = Some(explicit.unwrap_or_else(|| {
        if !d.redirect_uris.is_empty() && d.redirect_uris.iter().all(|u| is_native_redirect(u)) {
            ApplicationType::Native
        } else {
            ApplicationType::Web
        }
    }));
    Ok(())
}

/// Each redirect URI passes `redirect_uri::validate_registered` (private-use
/// schemes only for native clients) and suits the application type
/// (OIDC Dynamic Client Registration §2): a web client uses https on a
/// non-loopback host; a native client uses loopback `http` or a private-use
/// scheme.
pub fn check_redirect_uri_rules(
    _: &Map<String, Value>,
    _: &Policy<'_>,
    d: &mut Draft,
) -> MetadataResult<()> {
    let native = d.application_type == Some(ApplicationType::Native);
    for (i, uri) in d.redirect_uris.iter().enumerate() {
        redirect_uri::validate_registered(uri, native)
            .map_err(|e| MetadataError::redirect(format!("redirect_uris[{i}]: {e}")))?;
        let https = Url::parse(uri).is_ok_and(|u| u.scheme() == "https");
        if native && https {
            return Err(MetadataError::redirect(format!(
                "redirect_uris[{i}]: a native client uses http on a loopback host or a private-use \
                 scheme; register https redirect URIs with application_type web"
            )));
        }
        if !native && !https {
            return Err(MetadataError::redirect(format!(
                "redirect_uris[{i}]: a web client must use https; loopback http redirect URIs \
                 are for native clients (application_type native)"
            )));
        }
        if !native && redirect_uri::is_loopback_only(uri) {
            return Err(MetadataError::redirect(format!(
                "redirect_uris[{i}]: a web client must not use a loopback host"
            )));
        }
    }
    Ok(())
}

/// `scope`: space-delimited; each value a scope of one of the tenant's
/// resources or an OIDC scope.
pub fn check_scope(doc: &Map<String, Value>, p: &Policy<'_>, d: &mut Draft) -> MetadataResult<()> {
    let Some(raw) = opt_string(doc, "scope", 64 * 130)? else {
        return Ok(());
    };
    let set = ScopeSet::parse(&raw).map_err(|e| MetadataError::metadata(format!("scope: {e}")))?;
    let known: ScopeSet = p.tenant_scopes.iter().map(String::as_str).collect();
    let unknown = set.difference(&known);
    if !unknown.is_empty() {
        return Err(MetadataError::metadata(format!(
            "scope: not scopes of this authorization server: {unknown}"
        )));
    }
    d.scope = (!set.is_empty()).then(|| set.to_string());
    Ok(())
}

pub fn check_client_name(
    doc: &Map<String, Value>,
    _: &Policy<'_>,
    d: &mut Draft,
) -> MetadataResult<()> {
    d.client_name = opt_string(doc, "client_name", MAX_TEXT_LEN)?;
    Ok(())
}

/// `client_uri`, `logo_uri`, `tos_uri`, `policy_uri`: absolute http(s) URLs
/// without user information. Stored and returned, never fetched.
pub fn check_informational_uris(
    doc: &Map<String, Value>,
    _: &Policy<'_>,
    d: &mut Draft,
) -> MetadataResult<()> {
    let read = |name: &str| -> MetadataResult<Option<String>> {
        let Some(s) = opt_string(doc, name, MAX_URI_LEN)? else {
            return Ok(None);
        };
        let ok = Url::parse(&s).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.username().is_empty()
                && u.password().is_none()
        });
        if !ok {
            return Err(MetadataError::metadata(format!(
                "{name} must be an absolute http or https URL"
            )));
        }
        Ok(Some(s))
    };
    let client_uri = read("client_uri")?;
    let logo_uri = read("logo_uri")?;
    let tos_uri = read("tos_uri")?;
    let policy_uri = read("policy_uri")?;
    d.client_uri = client_uri;
    d.logo_uri = logo_uri;
    d.tos_uri = tos_uri;
    d.policy_uri = policy_uri;
    Ok(())
}

pub fn check_contacts(
    doc: &Map<String, Value>,
    _: &Policy<'_>,
    d: &mut Draft,
) -> MetadataResult<()> {
    d.contacts = opt_string_array(doc, "contacts", MAX_CONTACTS, 320)?;
    Ok(())
}

pub fn check_software(
    doc: &Map<String, Value>,
    _: &Policy<'_>,
    d: &mut Draft,
) -> MetadataResult<()> {
    d.software_id = opt_string(doc, "software_id", MAX_TEXT_LEN)?;
    d.software_version = opt_string(doc, "software_version", MAX_TEXT_LEN)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scopes() -> Vec<String> {
        ["openid", "profile", "email", "offline_access", "mcp:read"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn run(body: Value) -> MetadataResult<RegisteredMetadata> {
        let s = scopes();
        validate(&body, &Policy { tenant_scopes: &s })
    }

    fn err(body: Value) -> MetadataError {
        run(body).expect_err("should be refused")
    }

    #[test]
    fn mcp_style_public_client_is_native() {
        let m = run(json!({
            "redirect_uris": ["http://127.0.0.1:3334/callback", "http://localhost/cb"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_name": "Some MCP client",
            "unknown_field": {"ignored": true}
        }))
        .unwrap();
        assert_eq!(m.application_type, ApplicationType::Native);
        assert_eq!(m.token_endpoint_auth_method, AuthMethod::None);
        let c = m.client_metadata();
        assert!(c.dynamic && !c.skip_consent && c.is_public());
    }

    #[test]
    fn defaults_follow_rfc_7591() {
        let m = run(json!({"redirect_uris": ["https://app.example.com/cb"]})).unwrap();
        assert_eq!(m.token_endpoint_auth_method, AuthMethod::ClientSecretBasic);
        assert_eq!(m.grant_types, vec!["authorization_code"]);
        assert_eq!(m.response_types, vec!["code"]);
        assert_eq!(m.application_type, ApplicationType::Web);
    }

    #[test]
    fn http_non_loopback_is_invalid_redirect_uri() {
        let e = err(json!({"redirect_uris": ["http://app.example.com/cb"]}));
        assert_eq!(e.code, MetadataErrorCode::InvalidRedirectUri, "{e}");
    }

    #[test]
    fn fragment_is_invalid_redirect_uri() {
        let e = err(json!({"redirect_uris": ["http://127.0.0.1/cb#x"]}));
        assert_eq!(e.code, MetadataErrorCode::InvalidRedirectUri, "{e}");
        assert!(e.description.contains("fragment"), "{e}");
    }

    #[test]
    fn web_client_may_not_use_loopback() {
        let e = err(json!({
            "application_type": "web",
            "redirect_uris": ["http://127.0.0.1/cb"]
        }));
        assert_eq!(e.code, MetadataErrorCode::InvalidRedirectUri, "{e}");
        let e = err(json!({
            "application_type": "web",
            "redirect_uris": ["https://localhost/cb"]
        }));
        assert_eq!(e.code, MetadataErrorCode::InvalidRedirectUri, "{e}");
    }

    #[test]
    fn native_client_may_not_use_https() {
        let e = err(json!({
            "application_type": "native",
            "redirect_uris": ["https://app.example.com/cb"]
        }));
        assert_eq!(e.code, MetadataErrorCode::InvalidRedirectUri, "{e}");
    }

    #[test]
    fn private_use_scheme_makes_a_native_client() {
        let m = run(json!({
            "redirect_uris": ["com.example.app:/oauth2redirect"],
            "token_endpoint_auth_method": "none"
        }))
        .unwrap();
        assert_eq!(m.application_type, ApplicationType::Native);
    }

    #[test]
    fn mixed_loopback_and_https_is_a_web_client_and_refused() {
        let e = err(json!({
            "redirect_uris": ["https://app.example.com/cb", "http://127.0.0.1/cb"]
        }));
        assert_eq!(e.code, MetadataErrorCode::InvalidRedirectUri, "{e}");
    }

    #[test]
    fn code_grant_needs_redirect_uris() {
        let e = err(json!({"token_endpoint_auth_method": "none"}));
        assert_eq!(e.code, MetadataErrorCode::InvalidRedirectUri, "{e}");
    }

    #[test]
    fn unsupported_grant_type_is_refused() {
        let e = err(json!({
            "redirect_uris": ["https://app.example.com/cb"],
            "grant_types": ["authorization_code", "implicit"]
        }));
        assert_eq!(e.code, MetadataErrorCode::InvalidClientMetadata);
        assert!(e.description.contains("implicit"), "{e}");
    }

    #[test]
    fn refresh_token_alone_is_refused() {
        let e = err(json!({"grant_types": ["refresh_token"]}));
        assert_eq!(e.code, MetadataErrorCode::InvalidClientMetadata, "{e}");
    }

    #[test]
    fn response_type_token_is_refused() {
        let e = err(json!({
            "redirect_uris": ["https://app.example.com/cb"],
            "response_types": ["token"]
        }));
        assert_eq!(e.code, MetadataErrorCode::InvalidClientMetadata, "{e}");
    }

    #[test]
    fn response_types_must_match_grant_types() {
        let e = err(json!({
            "grant_types": ["client_credentials"],
            "response_types": ["code"]
        }));
        assert_eq!(e.code, MetadataErrorCode::InvalidClientMetadata, "{e}");
    }

    #[test]
    fn public_client_cannot_use_client_credentials() {
        let e = err(json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "none"
        }));
        assert!(e.description.contains("confidential"), "{e}");
    }

    #[test]
    fn confidential_service_needs_no_redirect_uri() {
        let m = run(json!({"grant_types": ["client_credentials"]})).unwrap();
        assert!(m.response_types.is_empty());
        assert!(m.redirect_uris.is_empty());
        assert!(m.token_endpoint_auth_method.uses_secret());
    }

    #[test]
    fn unknown_auth_method_is_refused() {
        let e = err(json!({
            "redirect_uris": ["https://app.example.com/cb"],
            "token_endpoint_auth_method": "tls_client_auth"
        }));
        assert_eq!(e.code, MetadataErrorCode::InvalidClientMetadata, "{e}");
    }

    #[test]
    fn jwks_uri_is_accepted_for_private_key_jwt() {
        let m = run(json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": "https://app.example.com/jwks.json"
        }))
        .expect("accepted");
        assert_eq!(
            m.jwks_uri.as_deref(),
            Some("https://app.example.com/jwks.json")
        );
    }

    #[test]
    fn jwks_uri_over_plain_http_is_refused() {
        let e = err(json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": "http://app.example.com/jwks.json"
        }));
        assert!(e.description.contains("https"), "{e}");
    }

    #[test]
    fn jwks_and_jwks_uri_together_are_refused() {
        let e = err(json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": "https://app.example.com/jwks.json",
            "jwks": {"keys": []}
        }));
        assert!(e.description.contains("both"), "{e}");
    }

    #[test]
    fn private_key_jwt_needs_jwks() {
        let e = err(json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt"
        }));
        assert!(e.description.contains("jwks"), "{e}");
    }

    #[test]
    fn private_key_material_is_refused() {
        let e = err(json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}
        }));
        assert!(e.description.contains("private"), "{e}");
    }

    #[test]
    fn public_ec_key_is_accepted() {
        let m = run(json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [{
                "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
            }]}
        }))
        .unwrap();
        assert!(m.jwks.is_some());
    }

    #[test]
    fn unknown_scope_is_refused_and_known_become_defaults() {
        let e = err(json!({
            "redirect_uris": ["https://app.example.com/cb"],
            "scope": "mcp:read admin"
        }));
        assert!(e.description.contains("admin"), "{e}");
        let m = run(json!({
            "redirect_uris": ["https://app.example.com/cb"],
            "scope": "openid mcp:read"
        }))
        .unwrap();
        assert_eq!(m.scope.as_deref(), Some("mcp:read openid"));
        assert_eq!(
            m.client_metadata().default_scopes,
            Some(vec!["mcp:read".to_string()])
        );
    }

    #[test]
    fn wrong_types_are_invalid_client_metadata() {
        for body in [
            json!({"grant_types": "authorization_code"}),
            json!({"redirect_uris": ["https://a.example/cb"], "client_name": 5}),
            json!({"redirect_uris": ["https://a.example/cb"], "contacts": [1]}),
            json!({"redirect_uris": ["https://a.example/cb"], "application_type": "desktop"}),
            json!({"redirect_uris": ["https://a.example/cb"], "logo_uri": "javascript:x"}),
            json!([1, 2]),
        ] {
            assert_eq!(
                err(body.clone()).code,
                MetadataErrorCode::InvalidClientMetadata,
                "{body}"
            );
        }
        assert_eq!(
            err(json!({"redirect_uris": "https://a.example/cb"})).code,
            MetadataErrorCode::InvalidRedirectUri
        );
    }

    #[test]
    fn null_counts_as_absent() {
        let m = run(json!({
            "redirect_uris": ["https://app.example.com/cb"],
            "client_name": null,
            "jwks_uri": null
        }))
        .unwrap();
        assert_eq!(m.client_name, None);
    }

    #[test]
    fn registered_metadata_passes_the_general_client_rules() {
        let m = run(json!({
            "redirect_uris": ["http://127.0.0.1/cb"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"]
        }))
        .unwrap();
        crate::config::validate_client("dcr_x", &m.client_metadata(), false, &[]).unwrap();
    }
}
