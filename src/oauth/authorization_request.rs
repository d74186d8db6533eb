//! The authorization request (RFC 6749 §4.1.1 with OAuth 2.1, RFC 7636,
//! RFC 8707 and OIDC additions), validated by a list of small named checks
//! in the order the specifications give. Until the client and its redirect
//! URI are known good, errors must not redirect (RFC 6749 §4.1.2.1); for
//! clients whose redirect URIs no administrator vouched for, not until the
//! user approved the client either (RFC 9700 §4.11.2,
//! [`redirect_uri_trusted`]).

use serde::{Deserialize, Serialize};

use super::errors::{ErrorCode, OAuthError, OAuthResult};
use super::params::Params;
use super::scope::ScopeSet;
use super::{pkce, redirect_uri, resource};
use crate::oauth::client_auth::Client;
use crate::tenants::{Tenant, GRANT_AUTHORIZATION_CODE, OIDC_SCOPES};

/// A request that passed every check; what the pending authorization keeps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    /// The redirect URI to use (the one sent, or the only registered one).
    pub redirect_uri: String,
    /// Whether `redirect_uri` was sent, so the token request must repeat it.
    pub redirect_uri_sent: bool,
    pub state: Option<String>,
    pub scope: ScopeSet,
    pub resources: Vec<String>,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    /// Set when this is the user half of an RFC 8628 device authorization:
    /// it ends on a page, not with a redirect.
    #[serde(default)]
    pub device: Option<DeviceLink>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceLink {
    pub device_code_hash: String,
    /// As shown on the device, so the user can compare.
    pub user_code: String,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

/// Where errors may go once the redirect URI is trusted.
#[derive(Clone, Debug)]
pub struct ErrorRedirect {
    pub redirect_uri: String,
    pub state: Option<String>,
}

/// A failure, with whether it may be sent back to the client.
#[derive(Debug)]
pub enum AuthorizeError {
    /// Unknown client, unregistered redirect URI, or a redirect URI nobody
    /// vouched for ([`redirect_uri_trusted`]): show the user a page.
    Page(OAuthError),
    /// Safe to redirect with `error` (and `state`, `iss`).
    Redirect(OAuthError, ErrorRedirect),
}

/// RFC 9700 §4.11.2: whether an error found before the user approved the
/// client may be sent to the client's redirect URI. Only an administrator
/// vouches for redirect URIs (configured clients). A self-registered client
/// (RFC 7591) or a Client ID Metadata Document names URIs nobody checked:
/// redirecting errors there before the user signed in and approved the
/// client would make Gatehouse an open redirector, so the error is shown to
/// the user on a page instead.
pub fn redirect_uri_trusted(client: &Client) -> bool {
    !client.meta.dynamic
}

/// Steps 1-2: the client and the redirect URI. Nothing may redirect before
/// these pass.
pub fn resolve_redirect(params: &Params, client: &Client) -> Result<(String, bool), OAuthError> {
    match params.get("redirect_uri") {
        Some(uri) => {
            if client
                .meta
                .redirect_uris
                .iter()
                .any(|r| redirect_uri::matches(r, uri))
            {
                Ok((uri.to_string(), true))
            } else {
                Err(OAuthError::invalid_request(
                    "redirect_uri does not match any URI registered for this client",
                ))
            }
        }
        None => match client.meta.redirect_uris.as_slice() {
            [only] => Ok((only.clone(), false)),
            [] => Err(OAuthError::invalid_request(
                "this client has no registered redirect URI",
            )),
            _ => Err(OAuthError::invalid_request(
                "redirect_uri is required: this client registered more than one",
            )),
        },
    }
}

/// The draft the checks fill in.
pub struct Draft {
    pub scope: Option<ScopeSet>,
    pub resources: Vec<String>,
    pub code_challenge: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
}

pub type Check = fn(&Params, &Client, &Tenant, &mut Draft) -> OAuthResult<()>;

/// The checks, in order. Each is small and testable alone.
pub const CHECKS: [Check; 7] = [
    check_unsupported_features,
    check_response_type,
    check_client_may_use_code,
    check_pkce,
    check_resource,
    check_scope,
    check_prompt,
];

pub fn check_unsupported_features(
    p: &Params,
    _: &Client,
    _: &Tenant,
    _: &mut Draft,
) -> OAuthResult<()> {
    if p.contains("request") {
        return Err(OAuthError::new(
            ErrorCode::RequestNotSupported,
            "request objects are not supported",
        ));
    }
    if p.contains("request_uri") {
        return Err(OAuthError::new(
            ErrorCode::RequestUriNotSupported,
            "request_uri is not supported",
        ));
    }
    match p.get("response_mode") {
        None | Some("query") => Ok(()),
        Some(other) => Err(OAuthError::invalid_request(format!(
            "response_mode '{other}' is not supported; use query"
        ))),
    }
}

pub fn check_response_type(p: &Params, _: &Client, _: &Tenant, _: &mut Draft) -> OAuthResult<()> {
    match p.get("response_type") {
        Some("code") => Ok(()),
        Some(other) => Err(OAuthError::new(
            ErrorCode::UnsupportedResponseType,
            format!("response_type '{other}' is not supported; only 'code' is"),
        )),
        None => Err(OAuthError::invalid_request(
            "missing required parameter 'response_type'",
        )),
    }
}

pub fn check_client_may_use_code(
    _: &Params,
    c: &Client,
    _: &Tenant,
    _: &mut Draft,
) -> OAuthResult<()> {
    if c.meta.allows_grant(GRANT_AUTHORIZATION_CODE) {
        Ok(())
    } else {
        Err(OAuthError::unauthorized_client(
            "this client may not use the authorization code grant",
        ))
    }
}

pub fn check_pkce(p: &Params, _: &Client, _: &Tenant, d: &mut Draft) -> OAuthResult<()> {
    let challenge = pkce::check_challenge(p.get("code_challenge"), p.get("code_challenge_method"))
        .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    d.code_challenge = Some(challenge);
    Ok(())
}

/// RFC 8707: each resource must be the tenant's and allowed to the client.
pub fn check_resource(p: &Params, c: &Client, t: &Tenant, d: &mut Draft) -> OAuthResult<()> {
    let requested = p.get_all("resource");
    let resources = if requested.is_empty() {
        match &t.settings.default_resource {
            Some(default) => vec![default.clone()],
            None => {
                return Err(OAuthError::invalid_target(
                    "the resource parameter is required (RFC 8707)",
                ))
            }
        }
    } else {
        let mut out = Vec::new();
        for r in requested {
            let canon =
                resource::canonicalize(r).map_err(|e| OAuthError::invalid_target(e.to_string()))?;
            if !out.contains(&canon) {
                out.push(canon);
            }
        }
        out
    };
    for r in &resources {
        allowed_resource(t, c, r)?;
    }
    d.resources = resources;
    Ok(())
}

/// A canonical resource URI that the tenant knows and the client may use.
pub fn allowed_resource(t: &Tenant, c: &Client, canonical: &str) -> OAuthResult<()> {
    if t.resource(canonical).is_none() {
        return Err(OAuthError::invalid_target(format!(
            "'{canonical}' is not a resource of this authorization server"
        )));
    }
    if let Some(allowed) = &c.meta.resources {
        if !allowed
            .iter()
            .any(|a| resource::same_resource(a, canonical))
        {
            return Err(OAuthError::invalid_target(format!(
                "this client may not request tokens for '{canonical}'"
            )));
        }
    }
    Ok(())
}

/// Scopes the client may hold for these resources.
pub fn allowed_scopes(
    t: &Tenant,
    c: &Client,
    resources: &[String],
    include_oidc: bool,
) -> ScopeSet {
    let mut allowed: ScopeSet = resources
        .iter()
        .filter_map(|r| t.resource(r))
        .flat_map(|r| r.settings.scopes.iter().map(String::as_str))
        .collect();
    if include_oidc {
        allowed = allowed.union(&OIDC_SCOPES.iter().copied().collect());
    }
    match &c.meta.scopes {
        Some(client_scopes) => {
            allowed.intersection(&client_scopes.iter().map(String::as_str).collect())
        }
        None => allowed,
    }
}

/// What a request that names no scope gets (RFC 6749 §3.3): the client's
/// defaults, else each resource's defaults, else each resource's scopes.
pub fn default_scopes(t: &Tenant, c: &Client, resources: &[String]) -> ScopeSet {
    let allowed = allowed_scopes(t, c, resources, false);
    if let Some(d) = &c.meta.default_scopes {
        return d
            .iter()
            .map(String::as_str)
            .collect::<ScopeSet>()
            .intersection(&allowed);
    }
    let from_resources: ScopeSet = resources
        .iter()
        .filter_map(|r| t.resource(r))
        .flat_map(|r| {
            r.settings
                .default_scopes
                .as_ref()
                .unwrap_or(&r.settings.scopes)
                .iter()
                .map(String::as_str)
        })
        .collect();
    from_resources.intersection(&allowed)
}

pub fn check_scope(p: &Params, c: &Client, t: &Tenant, d: &mut Draft) -> OAuthResult<()> {
    let requested = match p.get("scope") {
        Some(s) => ScopeSet::parse(s).map_err(|e| OAuthError::invalid_scope(e.to_string()))?,
        None => ScopeSet::new(),
    };
    let allowed = allowed_scopes(t, c, &d.resources, true);
    let unknown = requested.difference(&allowed);
    if !unknown.is_empty() {
        return Err(OAuthError::invalid_scope(format!(
            "scope not allowed for this client and resource: {unknown}"
        )));
    }
    if requested.is_empty() {
        d.scope = Some(default_scopes(t, c, &d.resources));
    } else {
        d.scope = Some(requested);
    }
    Ok(())
}

pub fn check_prompt(p: &Params, _: &Client, _: &Tenant, d: &mut Draft) -> OAuthResult<()> {
    if let Some(prompt) = p.get("prompt") {
        for value in prompt.split(' ').filter(|v| !v.is_empty()) {
            match value {
                "none" => d.prompt.none = true,
                "login" | "select_account" => d.prompt.login = true,
                "consent" => d.prompt.consent = true,
                other => {
                    return Err(OAuthError::invalid_request(format!(
                        "unsupported prompt value '{other}'"
                    )))
                }
            }
        }
        if d.prompt.none && (d.prompt.login || d.prompt.consent) {
            return Err(OAuthError::invalid_request(
                "prompt=none cannot be combined with other values",
            ));
        }
    }
    if let Some(max_age) = p.get("max_age") {
        let v: i64 =
            max_age.parse().ok().filter(|v| *v >= 0).ok_or_else(|| {
                OAuthError::invalid_request("max_age must be a non-negative integer")
            })?;
        d.max_age = Some(v);
    }
    Ok(())
}

/// Runs every check; the caller already resolved client and redirect URI.
pub fn validate(
    params: &Params,
    client: &Client,
    tenant: &Tenant,
    redirect_uri: String,
    redirect_uri_sent: bool,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let state = params.get("state").map(str::to_string);
    let back = ErrorRedirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
    };
    let mut draft = Draft {
        scope: None,
        resources: vec![],
        code_challenge: None,
        prompt: Prompt::default(),
        max_age: None,
    };
    // Every failure here is found before the user signed in.
    let refuse = |e: OAuthError| {
        if redirect_uri_trusted(client) {
            AuthorizeError::Redirect(e, back.clone())
        } else {
            AuthorizeError::Page(e)
        }
    };
    for check in CHECKS {
        check(params, client, tenant, &mut draft).map_err(refuse)?;
    }
    let missing = |what: &str| refuse(OAuthError::server_error(format!("{what} was not set")));
    Ok(AuthorizationRequest {
        client_id: client.client_id.clone(),
        redirect_uri,
        redirect_uri_sent,
        state,
        scope: draft.scope.ok_or_else(|| missing("scope"))?,
        resources: draft.resources,
        code_challenge: draft
            .code_challenge
            .ok_or_else(|| missing("code_challenge"))?,
        nonce: params.get("nonce").map(str::to_string),
        prompt: draft.prompt,
        max_age: draft.max_age,
        login_hint: params.get("login_hint").map(str::to_string),
        device: None,
    })
}
