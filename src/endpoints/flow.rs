//! The browser part of an authorization: pending authorizations bound to the
//! browser that started them, the SSO session, consent, and finally the code.
//! Shared by /authorize, /login and /consent.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::oauth::authorization_request::{
    redirect_uri_trusted, AuthorizationRequest, ErrorRedirect,
};
use crate::oauth::client_auth::Client;
use crate::oauth::consent::{self, ConsentItem, ConsentItems};
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::redirect_uri;
use crate::pages::{self, ConsentPage, ScopeLine};
use crate::store::{CodeRecord, GrantRecord, HandleRecord, SessionRecord};
use crate::tenants::Tenant;
use crate::tokens::secret::{ct_eq, hash_str, random_id, Handle};
use crate::tokens::{CodeData, GrantData, UserClaims};
use crate::AppState;

/// What the server keeps between /authorize and the code.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingData {
    pub request: AuthorizationRequest,
    /// Hash of the browser's flow cookie: only that browser can finish it.
    pub browser_hash: String,
    /// Set once the user is known (consent step).
    #[serde(default)]
    pub subject: Option<String>,
    /// Set while the browser is away at an upstream identity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamLogin>,
}

/// A redirect login in progress: which connector, and what it asked to keep
/// (PKCE verifier, nonce, state: secrets, never logged).
#[derive(Clone, Serialize, Deserialize)]
pub struct UpstreamLogin {
    pub connector_id: String,
    pub kept: serde_json::Value,
}

impl std::fmt::Debug for UpstreamLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamLogin")
            .field("connector_id", &self.connector_id)
            .field("kept", &"***")
            .finish()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionData {
    pub connector_id: String,
    pub user: UserClaims,
    pub auth_time: i64,
    /// Public session id (OIDC `sid`), distinct from the cookie secret.
    pub sid: String,
    /// The upstream session ends then at the latest (SAML): so do this
    /// session and every grant made from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
}

pub struct Cookies {
    secure: bool,
}

impl Cookies {
    pub fn new(app: &AppState) -> Self {
        Self {
            secure: app.secure_cookies,
        }
    }

    fn name(&self, base: &str) -> String {
        // __Host- pins the cookie to this exact origin, https only, Path=/.
        if self.secure {
            format!("__Host-{base}")
        } else {
            base.to_string()
        }
    }

    pub fn session_name(&self, tenant: &Tenant) -> String {
        self.name(&format!("gh_session_{}", tenant.id))
    }

    pub fn flow_name(&self) -> String {
        self.name("gh_flow")
    }

    /// Names the pending authorization while the browser is at an upstream
    /// identity provider, so the callback can find it.
    pub fn login_name(&self) -> String {
        self.name("gh_login")
    }

    pub fn read(headers: &HeaderMap, name: &str) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    pub fn set(&self, name: &str, value: &str, max_age: i64) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
        ))
        .ok()
    }
}

/// The browser's flow token (cookie), created when missing.
pub fn browser_token(app: &AppState, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    let cookies = Cookies::new(app);
    match Cookies::read(headers, &cookies.flow_name()).filter(|v| v.len() == 43) {
        Some(existing) => (existing, None),
        None => {
            let token = Handle::generate().expose().to_string();
            let set = cookies.set(&cookies.flow_name(), &token, 3600);
            (token, set)
        }
    }
}

/// CSRF token for forms of one pending authorization: an HMAC keyed by the
/// browser's flow cookie, so a page cannot be submitted from another browser
/// or by a cross-site form.
pub fn csrf_token(browser_token: &str, pending: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(browser_token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(pending.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

pub async fn create_pending(
    app: &AppState,
    tenant: &Tenant,
    request: AuthorizationRequest,
    browser_token: &str,
) -> OAuthResult<(Handle, PendingData)> {
    let handle = Handle::generate();
    let data = PendingData {
        request,
        browser_hash: hash_str(browser_token),
        subject: None,
        upstream: None,
    };
    save_pending(app, tenant, &handle, &data).await?;
    Ok((handle, data))
}

pub async fn save_pending(
    app: &AppState,
    tenant: &Tenant,
    handle: &Handle,
    data: &PendingData,
) -> OAuthResult<()> {
    let rec = HandleRecord {
        hash: handle.hash(),
        tenant_id: tenant.id.clone(),
        data: serde_json::to_string(data).map_err(|e| OAuthError::server_error(e.to_string()))?,
        expires_at: app.now() + tenant.policy().login_ttl,
    };
    app.store.put_pending(&rec).await?;
    Ok(())
}

/// Loads a pending authorization and proves this browser started it and
/// (for form posts) that the CSRF token is right.
pub async fn load_pending(
    app: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    pending: &str,
    csrf: Option<&str>,
) -> Result<(Handle, PendingData, String), Response> {
    let expired = || {
        pages::error_page(&OAuthError::invalid_request(
            "this sign-in request has expired or was already completed; start again from the application",
        ))
    };
    let handle = Handle::from_presented(pending);
    let rec = match app
        .store
        .get_pending(&tenant.id, &handle.hash(), app.now())
        .await
    {
        Ok(Some(rec)) => rec,
        Ok(None) => return Err(expired()),
        Err(e) => return Err(pages::error_page(&OAuthError::from(e))),
    };
    let data: PendingData = serde_json::from_str(&rec.data).map_err(|_| expired())?;
    let cookies = Cookies::new(app);
    let browser = Cookies::read(headers, &cookies.flow_name()).unwrap_or_default();
    if browser.is_empty() || !ct_eq(&hash_str(&browser), &data.browser_hash) {
        return Err(pages::error_page(&OAuthError::access_denied(
            "this sign-in request was started in another browser; start again from the application",
        )));
    }
    if let Some(csrf) = csrf {
        if !ct_eq(csrf, &csrf_token(&browser, pending)) {
            return Err(pages::error_page(&OAuthError::access_denied(
                "the form was not submitted from this sign-in page",
            )));
        }
    }
    Ok((handle, data, browser))
}

/// The SSO session from the cookie, if valid.
pub async fn current_session(
    app: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
) -> OAuthResult<Option<(SessionRecord, SessionData)>> {
    let cookies = Cookies::new(app);
    let Some(value) = Cookies::read(headers, &cookies.session_name(tenant)) else {
        return Ok(None);
    };
    let handle = Handle::from_presented(&value);
    let Some(rec) = app
        .store
        .get_session(&tenant.id, &handle.hash(), app.now())
        .await?
    else {
        return Ok(None);
    };
    match serde_json::from_str::<SessionData>(&rec.data) {
        Ok(data) => Ok(Some((rec, data))),
        Err(_) => Ok(None),
    }
}

/// Starts an SSO session; returns its Set-Cookie header.
pub async fn start_session(
    app: &AppState,
    tenant: &Tenant,
    subject: &str,
    data: &SessionData,
) -> OAuthResult<(SessionRecord, Option<HeaderValue>)> {
    let handle = Handle::generate();
    let now = app.now();
    // Never outlive the upstream session it rests on.
    let ttl = match data.not_after {
        Some(end) => tenant.policy().session_ttl.min(end - now).max(1),
        None => tenant.policy().session_ttl,
    };
    let rec = SessionRecord {
        id_hash: handle.hash(),
        tenant_id: tenant.id.clone(),
        subject: subject.to_string(),
        data: serde_json::to_string(data).map_err(|e| OAuthError::server_error(e.to_string()))?,
        created_at: now,
        expires_at: now + ttl,
    };
    app.store.put_session(&rec).await?;
    let cookies = Cookies::new(app);
    Ok((
        rec,
        cookies.set(&cookies.session_name(tenant), handle.expose(), ttl),
    ))
}

/// Consent is remembered per subject and client, as items per
/// (resource, scope) and the user scopes per client (`oauth::consent`).
async fn granted_consent(
    app: &AppState,
    tenant: &Tenant,
    subject: &str,
    client_id: &str,
) -> OAuthResult<ConsentItems> {
    Ok(app
        .store
        .get_consent(&tenant.id, subject, client_id)
        .await?
        .map(|s| consent::decode(&s))
        .unwrap_or_default())
}

pub struct ConsentNeed {
    /// Items this request asks for that the user has not allowed yet.
    pub new_items: ConsentItems,
    /// Everything the user allowed this client before.
    pub granted: ConsentItems,
}

pub async fn consent_needed(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    subject: &str,
    req: &AuthorizationRequest,
) -> OAuthResult<Option<ConsentNeed>> {
    let granted = granted_consent(app, tenant, subject, &client.client_id).await?;
    let wanted = consent::requested_items(tenant, req);
    // Admin-configured first-party clients may skip consent; a client that
    // registered itself never may (MCP's confused-deputy rule).
    let skip = client.meta.skip_consent && !client.meta.dynamic;
    if req.prompt.consent || (!skip && !wanted.is_subset(&granted)) {
        // prompt=consent shows the page again, but what was already
        // allowed is listed as such, not as new.
        let new_items = wanted.difference(&granted).cloned().collect();
        Ok(Some(ConsentNeed { new_items, granted }))
    } else {
        Ok(None)
    }
}

pub async fn remember_consent(
    app: &AppState,
    tenant: &Tenant,
    client_id: &str,
    subject: &str,
    req: &AuthorizationRequest,
) -> OAuthResult<()> {
    let mut all = granted_consent(app, tenant, subject, client_id).await?;
    all.extend(consent::requested_items(tenant, req));
    let json = consent::encode(&all).map_err(|e| OAuthError::server_error(e.to_string()))?;
    app.store
        .put_consent(&tenant.id, subject, client_id, &json, app.now())
        .await?;
    Ok(())
}

/// The consent page's lines for `items`: each scope once, with the
/// resource it is for when the request names several.
fn scope_lines<'a>(
    items: impl IntoIterator<Item = &'a ConsentItem>,
    req: &AuthorizationRequest,
) -> Vec<ScopeLine> {
    let several = req.resources.len() > 1;
    let mut lines: Vec<ScopeLine> = Vec::new();
    for item in items {
        let Some(scope) = item.scope() else { continue };
        let line = ScopeLine {
            scope: scope.to_string(),
            resource: item.resource().filter(|_| several).map(str::to_string),
        };
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    lines
}

/// RFC 6749 §4.1.2 / RFC 9207: redirect with `iss` always.
pub fn redirect_with(redirect_uri: &str, pairs: &[(&str, &str)]) -> Response {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            let mut res = Redirect::to(url.as_str()).into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(_) => pages::error_page(&OAuthError::invalid_request(
            "the redirect URI is malformed",
        )),
    }
}

pub fn error_redirect(tenant: &Tenant, back: &ErrorRedirect, e: &OAuthError) -> Response {
    if back.redirect_uri.is_empty() {
        // A device authorization has no redirect URI: tell the user here.
        return pages::error_page(e);
    }
    let mut pairs = vec![
        ("error", e.code.as_str()),
        ("error_description", e.description.as_str()),
    ];
    if let Some(state) = &back.state {
        pairs.push(("state", state));
    }
    pairs.push(("iss", &tenant.issuer));
    e.mark(redirect_with(&back.redirect_uri, &pairs))
}

/// An error found before the user approved the client (signed in and
/// consented, now or earlier): redirected to the client only when its
/// redirect URI is trusted, else shown on a page (RFC 9700 §4.11.2).
pub fn early_error(
    tenant: &Tenant,
    client: &Client,
    back: &ErrorRedirect,
    e: &OAuthError,
) -> Response {
    if redirect_uri_trusted(client) {
        error_redirect(tenant, back, e)
    } else {
        pages::error_page(e)
    }
}

fn back_of(req: &AuthorizationRequest) -> ErrorRedirect {
    ErrorRedirect {
        redirect_uri: req.redirect_uri.clone(),
        state: req.state.clone(),
    }
}

/// With the user known: consent if needed, else the code.
pub async fn proceed(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    handle: &Handle,
    mut pending: PendingData,
    browser: &str,
    session: &(SessionRecord, SessionData),
) -> Response {
    let req = pending.request.clone();
    let subject = session.0.subject.clone();
    let need = match consent_needed(app, tenant, client, &subject, &req).await {
        Ok(n) => n,
        Err(e) => return early_error(tenant, client, &back_of(&req), &e),
    };
    match need {
        Some(need) if req.prompt.none => {
            let _ = app
                .store
                .take_pending(&tenant.id, &handle.hash(), app.now())
                .await;
            let e = OAuthError::new(
                crate::oauth::errors::ErrorCode::ConsentRequired,
                "the user has not yet allowed this",
            );
            // The user signed in; a redirect URI nobody else vouched for
            // is trusted once this user allowed this client something.
            if need.granted.is_empty() {
                early_error(tenant, client, &back_of(&req), &e)
            } else {
                error_redirect(tenant, &back_of(&req), &e)
            }
        }
        Some(need) => {
            pending.subject = Some(subject);
            if let Err(e) = save_pending(app, tenant, handle, &pending).await {
                return pages::error_page(&e);
            }
            let user = session
                .1
                .user
                .email
                .clone()
                .or(session.1.user.name.clone())
                .unwrap_or_else(|| session.0.subject.clone());
            let wanted = consent::requested_items(tenant, &req);
            let already = scope_lines(wanted.intersection(&need.granted), &req);
            let action = tenant.endpoint("/consent");
            let csrf = csrf_token(browser, handle.expose());
            pages::render(
                StatusCode::OK,
                &ConsentPage {
                    client_name: client.meta.display_name(&client.client_id),
                    user: &user,
                    redirect_host: &redirect_uri::host_for_display(&req.redirect_uri),
                    loopback_only: req.device.is_none()
                        && redirect_uri::is_loopback_only(&req.redirect_uri),
                    device_code: req.device.as_ref().map(|d| d.user_code.as_str()),
                    dynamic: client.meta.dynamic,
                    new_scopes: scope_lines(&need.new_items, &req),
                    already_granted: already,
                    resources: &req.resources,
                    action: &action,
                    pending: handle.expose(),
                    csrf: &csrf,
                },
            )
        }
        None => finish(app, tenant, client, handle, &req, session).await,
    }
}

/// Issues the code and sends the browser back to the client. The pending
/// authorization is consumed first, so it completes at most once.
pub async fn finish(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    handle: &Handle,
    req: &AuthorizationRequest,
    session: &(SessionRecord, SessionData),
) -> Response {
    let back = back_of(req);
    match app.store.take_pending(&tenant.id, &handle.hash(), app.now()).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return pages::error_page(&OAuthError::invalid_request(
                "this sign-in request has expired or was already completed; start again from the application",
            ))
        }
        Err(e) => return error_redirect(tenant, &back, &e.into()),
    }
    if let Some(device) = &req.device {
        return super::device::approve(app, tenant, client, req, device, session).await;
    }
    match issue_code(app, tenant, client, req, session).await {
        Ok(code) => {
            let mut pairs = vec![("code", code.expose())];
            if let Some(state) = &req.state {
                pairs.push(("state", state));
            }
            pairs.push(("iss", &tenant.issuer));
            app.audit.record(
                tenant,
                "authorization",
                "success",
                Some(&client.client_id),
                Some(&session.0.subject),
                None,
                serde_json::json!({"scope": req.scope.to_string(), "resources": req.resources}),
            );
            redirect_with(&req.redirect_uri, &pairs)
        }
        Err(e) => error_redirect(tenant, &back, &e),
    }
}

async fn issue_code(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    req: &AuthorizationRequest,
    session: &(SessionRecord, SessionData),
) -> OAuthResult<Handle> {
    let now = app.now();
    let (grant, grant_rec) = user_grant(app, tenant, client, req, session)?;
    let code = Handle::generate();
    let data = CodeData {
        redirect_uri: req.redirect_uri.clone(),
        redirect_uri_sent: req.redirect_uri_sent,
        code_challenge: req.code_challenge.clone(),
        nonce: req.nonce.clone(),
        subject: session.0.subject.clone(),
        grant,
    };
    let code_rec = CodeRecord {
        code_hash: code.hash(),
        tenant_id: tenant.id.clone(),
        client_id: client.client_id.clone(),
        grant_id: grant_rec.id.clone(),
        data: serde_json::to_string(&data).map_err(|e| OAuthError::server_error(e.to_string()))?,
        expires_at: now + tenant.policy().code_ttl,
    };
    app.store
        .create_grant_with_code(&grant_rec, &code_rec)
        .await?;
    Ok(code)
}

/// The grant a signed-in user gives `client` for `req` (the code and device
/// flows): it lives as long as the client's refresh tokens may, at least as
/// long as a code, and never past the end of the upstream session.
pub fn user_grant(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    req: &AuthorizationRequest,
    session: &(SessionRecord, SessionData),
) -> OAuthResult<(GrantData, GrantRecord)> {
    let now = app.now();
    let grant = GrantData {
        scope: req.scope.to_string(),
        resources: req.resources.clone(),
        auth_time: session.1.auth_time,
        sid: Some(session.1.sid.clone()),
        user: session.1.user.clone(),
        connector_id: Some(session.1.connector_id.clone()),
    };
    let refresh_ttl = client
        .meta
        .refresh_token_ttl
        .unwrap_or(tenant.policy().refresh_token_ttl);
    let mut expires_at = now + refresh_ttl;
    if let Some(end) = session.1.not_after {
        expires_at = expires_at.min(end);
    }
    let record = GrantRecord {
        id: random_id(),
        tenant_id: tenant.id.clone(),
        client_id: client.client_id.clone(),
        subject: session.0.subject.clone(),
        data: serde_json::to_string(&grant).map_err(|e| OAuthError::server_error(e.to_string()))?,
        created_at: now,
        expires_at: expires_at.max(now + tenant.policy().code_ttl),
        revoked_at: None,
        parent_id: None,
    };
    Ok((grant, record))
}

/// Adds Set-Cookie headers to a response.
pub fn with_cookies(
    mut res: Response,
    cookies: impl IntoIterator<Item = Option<HeaderValue>>,
) -> Response {
    for c in cookies.into_iter().flatten() {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}
