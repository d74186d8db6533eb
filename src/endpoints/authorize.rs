//! GET/POST /authorize (RFC 6749 §4.1.1, OAuth 2.1, OIDC Core §3.1.2).

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::flow::{self, browser_token, current_session, with_cookies};
use crate::oauth::authorization_request::{self, AuthorizeError};
use crate::oauth::errors::{ErrorCode, OAuthError};
use crate::oauth::params::Params;
use crate::pages;
use crate::tenants::TenantCtx;
use crate::AppState;

/// Parameters that may legitimately repeat (RFC 8707 §2).
const REPEATABLE: [&str; 1] = ["resource"];

pub async fn authorize(
    State(app): State<AppState>,
    tenant: TenantCtx,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.unwrap_or_default().as_bytes(), &REPEATABLE) {
        Ok(p) => p,
        Err(e) => return pages::error_page(&OAuthError::invalid_request(e.to_string())),
    };
    run(app, tenant, headers, params).await
}

pub async fn authorize_post(
    State(app): State<AppState>,
    tenant: TenantCtx,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match super::token::read_body(body).await {
        Ok(b) => b,
        Err(e) => return pages::error_page(&e),
    };
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = crate::oauth::params::check_form_content_type(content_type) {
        return pages::error_page(&OAuthError::invalid_request(e.to_string()));
    }
    let params = match Params::parse(&body, &REPEATABLE) {
        Ok(p) => p,
        Err(e) => return pages::error_page(&OAuthError::invalid_request(e.to_string())),
    };
    run(app, tenant, headers, params).await
}

async fn run(app: AppState, tenant: TenantCtx, headers: HeaderMap, params: Params) -> Response {
    // 1. The client. Unknown clients get a page, never a redirect.
    let Some(client_id) = params.get("client_id") else {
        return pages::error_page(&OAuthError::invalid_request(
            "missing required parameter 'client_id'",
        ));
    };
    let client = match app
        .clients
        .find_or_fetch(&app.store, &tenant, client_id)
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => return pages::error_page(&OAuthError::invalid_request("unknown client_id")),
        Err(e) => return pages::error_page(&e.into()),
    };
    // 2. The redirect URI. A mismatch gets a page: redirecting would make us an open redirector.
    let (redirect_uri, sent) = match authorization_request::resolve_redirect(&params, &client) {
        Ok(r) => r,
        Err(e) => return pages::error_page(&e),
    };
    // 3. Everything else. Errors are redirected back with state and iss
    // only to a redirect URI an administrator vouched for; before the user
    // signed in, a self-registered client's get a page (RFC 9700 §4.11.2).
    let req = match authorization_request::validate(&params, &client, &tenant, redirect_uri, sent) {
        Ok(r) => r,
        Err(AuthorizeError::Page(e)) => return pages::error_page(&e),
        Err(AuthorizeError::Redirect(e, back)) => return flow::error_redirect(&tenant, &back, &e),
    };
    let back = authorization_request::ErrorRedirect {
        redirect_uri: req.redirect_uri.clone(),
        state: req.state.clone(),
    };

    let session = match current_session(&app, &tenant, &headers).await {
        Ok(s) => s,
        Err(e) => return flow::early_error(&tenant, &client, &back, &e),
    };
    let now = app.now();
    let session = session.filter(|(_, data)| {
        !req.prompt.login && req.max_age.is_none_or(|max| now - data.auth_time <= max)
    });
    if session.is_none() && req.prompt.none {
        // Nobody signed in, so nobody approved the client: only a trusted
        // redirect URI hears about it.
        return flow::early_error(
            &tenant,
            &client,
            &back,
            &OAuthError::new(ErrorCode::LoginRequired, "the user is not signed in"),
        );
    }

    let (browser, set_flow_cookie) = browser_token(&app, &headers);
    let (handle, pending) = match flow::create_pending(&app, &tenant, req, &browser).await {
        Ok(p) => p,
        Err(e) => return flow::early_error(&tenant, &client, &back, &e),
    };
    let res = match session {
        Some(session) => {
            flow::proceed(&app, &tenant, &client, &handle, pending, &browser, &session).await
        }
        None => {
            let to = format!("{}?pending={}", tenant.endpoint("/login"), handle.expose());
            axum::response::IntoResponse::into_response(axum::response::Redirect::to(&to))
        }
    };
    with_cookies(res, [set_flow_cookie])
}
