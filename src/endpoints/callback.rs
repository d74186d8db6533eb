//! Redirect logins at an upstream identity provider (OIDC and SAML
//! connectors).
//!
//! `start` (from GET /login) asks the connector for the upstream URL, keeps
//! what the connector needs later (PKCE verifier, nonce, state) in the pending
//! authorization, names that pending authorization in a short-lived
//! `gh_login` cookie, and sends the browser away.
//!
//! GET `{issuer}/callback/{connector_id}` is where the provider sends the
//! browser back. The pending authorization comes from the `gh_login` cookie
//! and must have been started by this browser (its `gh_flow` cookie), with
//! this connector; the connector checks `state` and validates the response;
//! then the user is signed in exactly as after the login form.
//!
//! SAML connectors receive their response at the same URL by HTTP-POST
//! (the Assertion Consumer Service). The IdP's page posts it cross-site, so
//! a browser withholds the `SameSite=Lax` cookies: a POST without the login
//! cookie gets a tiny page that posts the same fields again to the same
//! address, now same-site and with the cookies (once: the re-post carries
//! [`RESUBMITTED`]). A SAML assertion's ID is remembered until it expires,
//! and a second use is refused.
//!
//! Every failure ends on a page that says what went wrong, with an audit
//! event, within the connector's time limit.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawPathParams, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use gatehouse_connectors::{Connector, ConnectorError, LoginMethod};

use super::flow::{self, load_pending, with_cookies, Cookies, PendingData, UpstreamLogin};
use super::login::{pending_client, signed_in};
use crate::oauth::errors::{ErrorCode, OAuthError};
use crate::pages;
use crate::tenants::{Tenant, TenantCtx};
use crate::tokens::secret::{random_id, Handle};
use crate::AppState;

/// The callback URL of a connector: what the admin registers at the IdP.
pub fn callback_url(tenant: &Tenant, connector_id: &str) -> String {
    tenant.endpoint(&format!("/callback/{connector_id}"))
}

/// The page for a failed upstream login. Faults of the provider (or of its
/// configuration here) answer 502; a bad or refused response 400. Never 500.
fn failure_page(connector: &dyn Connector, e: &ConnectorError) -> Response {
    let (code, status) = match e {
        ConnectorError::Refused(_) => (ErrorCode::AccessDenied, StatusCode::BAD_REQUEST),
        ConnectorError::InvalidCallback(_) => (ErrorCode::InvalidRequest, StatusCode::BAD_REQUEST),
        ConnectorError::Unreachable(_) => {
            (ErrorCode::TemporarilyUnavailable, StatusCode::BAD_GATEWAY)
        }
        _ => (ErrorCode::ServerError, StatusCode::BAD_GATEWAY),
    };
    let title = format!("Sign-in with {} failed", connector.display_name());
    let message = format!("{}.", capitalise(&e.to_string()));
    pages::error_page_titled(&title, &OAuthError::new(code, message).with_status(status))
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn audit_failure(
    app: &AppState,
    tenant: &Tenant,
    client_id: Option<&str>,
    connector_id: &str,
    reason: &str,
    detail: &str,
) {
    crate::telemetry::metrics::metrics().sign_in(&tenant.id, connector_id, "failure");
    app.audit.record(
        tenant,
        "login",
        "failure",
        client_id,
        None,
        None,
        serde_json::json!({"connector": connector_id, "reason": reason, "detail": detail}),
    );
}

/// Sends the browser to the upstream provider for `connector`.
pub async fn start(
    app: &AppState,
    tenant: &Tenant,
    connector: &dyn Connector,
    handle: &Handle,
    mut pending: PendingData,
    login_hint: Option<&str>,
) -> Response {
    let login = match connector
        .begin_with_hint(&callback_url(tenant, connector.id()), login_hint)
        .await
    {
        Ok(login) => login,
        Err(e) => {
            tracing::warn!(tenant = %tenant.id, connector = connector.id(), error = %e, "upstream login could not start");
            audit_failure(
                app,
                tenant,
                Some(&pending.request.client_id),
                connector.id(),
                e.reason(),
                &e.to_string(),
            );
            return failure_page(connector, &e);
        }
    };
    pending.upstream = Some(UpstreamLogin {
        connector_id: connector.id().to_string(),
        kept: login.kept,
    });
    if let Err(e) = flow::save_pending(app, tenant, handle, &pending).await {
        return pages::error_page(&e);
    }
    let cookies = Cookies::new(app);
    let cookie = cookies.set(
        &cookies.login_name(),
        handle.expose(),
        tenant.policy().login_ttl,
    );
    let mut res = Redirect::to(&login.authorize_url).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    with_cookies(res, [cookie])
}

/// The form field a re-posted SAML response carries: it is re-posted once.
pub const RESUBMITTED: &str = "gh_resubmitted";

/// The callback's query or form, refusing repeated parameters.
fn parse_pairs(raw: &[u8]) -> Result<BTreeMap<String, String>, ConnectorError> {
    let mut params = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(raw) {
        if params.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(ConnectorError::InvalidCallback(
                "it repeats a parameter".into(),
            ));
        }
    }
    Ok(params)
}

/// The `{connector_id}` of the route.
pub fn connector_id(path: &RawPathParams) -> String {
    path.iter()
        .find(|(k, _)| *k == "connector_id")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

/// GET: the OIDC providers' redirect back.
pub async fn callback(
    State(app): State<AppState>,
    tenant: TenantCtx,
    headers: HeaderMap,
    path: RawPathParams,
    RawQuery(query): RawQuery,
) -> Response {
    let params = parse_pairs(query.as_deref().unwrap_or("").as_bytes());
    complete(&app, &tenant, &headers, &connector_id(&path), params, false).await
}

/// POST: a SAML IdP's response (HTTP-POST binding).
pub async fn callback_post(
    State(app): State<AppState>,
    tenant: TenantCtx,
    headers: HeaderMap,
    path: RawPathParams,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = match body {
        Ok(body) => parse_pairs(&body),
        Err(_) => Err(ConnectorError::InvalidCallback(
            "the posted response is too large or unreadable".into(),
        )),
    };
    complete(&app, &tenant, &headers, &connector_id(&path), params, true).await
}

/// SAML responses are posted; OIDC answers come in the query.
fn check_binding(connector: &dyn Connector, posted: bool) -> Result<(), ConnectorError> {
    match (connector.kind() == "saml", posted) {
        (true, false) => Err(ConnectorError::InvalidCallback(
            "SAML responses must be posted to this address (HTTP-POST binding); start again from the application".into(),
        )),
        (false, true) => Err(ConnectorError::InvalidCallback(
            "this sign-in method does not accept posted responses".into(),
        )),
        _ => Ok(()),
    }
}

/// The page that posts a SAML response again from this origin, so that the
/// browser sends its `SameSite=Lax` cookies with it.
fn repost_page(
    tenant: &Tenant,
    connector: &dyn Connector,
    params: &BTreeMap<String, String>,
) -> Response {
    let action = callback_url(tenant, connector.id());
    pages::render_repost(&pages::SamlRepostPage {
        connector_name: connector.display_name(),
        action: &action,
        saml_response: params.get("SAMLResponse").map(String::as_str).unwrap_or(""),
        relay_state: params.get("RelayState").map(String::as_str),
        marker: RESUBMITTED,
        script_nonce: &random_id(),
    })
}

/// A single-use upstream id (a SAML assertion ID) is remembered until it
/// expires; false when it was used before.
async fn first_use(
    app: &AppState,
    tenant: &Tenant,
    identity: &gatehouse_connectors::Identity,
) -> Result<bool, OAuthError> {
    let Some((id, until)) = &identity.session.one_time_id else {
        return Ok(true);
    };
    // Namespaced per connector: `saml:{connector_id}` + the assertion ID.
    let scope = format!("saml:{}", identity.connector_id);
    Ok(app
        .store
        .remember_jti(&tenant.id, &scope, id, *until, app.now())
        .await?)
}

async fn complete(
    app: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    connector_id: &str,
    params: Result<BTreeMap<String, String>, ConnectorError>,
    posted: bool,
) -> Response {
    let Some(connector) = tenant
        .connector(connector_id)
        .filter(|c| c.login_method() == LoginMethod::Redirect)
        .cloned()
    else {
        return pages::error_page(&OAuthError::not_found(
            "there is no sign-in method with this callback address",
        ));
    };
    let cookies = Cookies::new(app);
    let clear = cookies.set(&cookies.login_name(), "", 0);
    // A response that does not belong to this sign-in (forged, tampered,
    // stale) spends nothing: the login cookie stays, so the genuine answer
    // can still complete. Any other outcome ends this upstream login.
    let fail = |client_id: Option<&str>, e: ConnectorError| {
        tracing::warn!(tenant = %tenant.id, connector = %connector_id, error = %e, "upstream login failed");
        audit_failure(
            app,
            tenant,
            client_id,
            connector_id,
            e.reason(),
            &e.to_string(),
        );
        let page = failure_page(connector.as_ref(), &e);
        if matches!(e, ConnectorError::InvalidCallback(_)) {
            page
        } else {
            with_cookies(page, [clear.clone()])
        }
    };

    let mut params =
        match params.and_then(|p| check_binding(connector.as_ref(), posted).map(|()| p)) {
            Ok(p) => p,
            Err(e) => return fail(None, e),
        };
    let resubmitted = params.remove(RESUBMITTED).is_some();
    let Some(pending_handle) = Cookies::read(headers, &cookies.login_name()) else {
        if posted && !resubmitted {
            return repost_page(tenant, connector.as_ref(), &params);
        }
        return fail(
            None,
            ConnectorError::InvalidCallback(
                "this browser holds no sign-in for it (cookies blocked, another browser, or the sign-in expired); start again from the application".into(),
            ),
        );
    };
    let (handle, mut pending, browser) =
        match load_pending(app, tenant, headers, &pending_handle, None).await {
            Ok(p) => p,
            Err(page) => return page,
        };
    let client_id = pending.request.client_id.clone();
    let Some(upstream) = pending
        .upstream
        .take()
        .filter(|u| u.connector_id == connector_id)
    else {
        return fail(
            Some(&client_id),
            ConnectorError::InvalidCallback(
                "this sign-in was not started with this identity provider; start again from the application".into(),
            ),
        );
    };
    let identity = match connector
        .complete(&callback_url(tenant, connector_id), &upstream.kept, &params)
        .await
    {
        Ok(identity) => identity,
        Err(e) => return fail(Some(&client_id), e),
    };
    match first_use(app, tenant, &identity).await {
        Ok(true) => {}
        Ok(false) => {
            return fail(
                Some(&client_id),
                ConnectorError::InvalidToken(
                    "this SAML assertion was already used (a replayed sign-in response); start again from the application".into(),
                ),
            )
        }
        Err(e) => return with_cookies(pages::error_page(&e), [clear.clone()]),
    }
    let client = match pending_client(app, tenant, &pending).await {
        Ok(c) => c,
        Err(page) => return with_cookies(page, [clear.clone()]),
    };
    // `signed_in` drops the upstream state: the consent step keeps no
    // upstream secrets, and the callback cannot be replayed into this
    // authorization.
    let res = signed_in(
        app,
        tenant,
        &client,
        identity,
        &handle,
        pending,
        browser.as_str(),
    )
    .await;
    with_cookies(res, [clear])
}
