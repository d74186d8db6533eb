//! RFC 8628 device authorization: the device asks at POST
//! /device_authorization; the user enters the code at /device, signs in and
//! approves on the consent page (always shown: the user must see which
//! client and code they are connecting); the device polls /token.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Form, FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::flow::{
    self, browser_token, csrf_token, current_session, with_cookies, Cookies, SessionData,
};
use super::token::{parse_form, read_body};
use crate::http::SourceAddr;
use crate::limits;
use crate::oauth::authorization_request::{
    check_resource, check_scope, AuthorizationRequest, DeviceLink, Draft, Prompt,
};
use crate::oauth::client_auth::{self, Client};
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::scope::ScopeSet;
use crate::pages::{self, DeviceDonePage, DevicePage};
use crate::store::{DeviceRecord, SessionRecord};
use crate::tenants::{Tenant, TenantCtx, GRANT_DEVICE_CODE};
use crate::tokens::secret::{ct_eq, hash_str, Handle};
use crate::AppState;

/// RFC 8628 §6.1: 20 consonants, no vowels (no words), no look-alikes.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
const USER_CODE_LEN: usize = 8;
pub const DEVICE_CODE_TTL: i64 = 600;
pub const POLL_INTERVAL: i64 = 5;

/// What the device asked for, kept with its authorization.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceRequest {
    pub scope: String,
    pub resources: Vec<String>,
}

fn new_user_code() -> String {
    let mut rng = rand::rngs::OsRng;
    (0..USER_CODE_LEN)
        .map(|_| USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())] as char)
        .collect()
}

/// `WDJB-MJHT` for display.
fn display_code(code: &str) -> String {
    format!("{}-{}", &code[..4], &code[4..])
}

/// What the user typed, case and separators forgiven; None if it cannot be a code.
pub fn normalize_user_code(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)))
        .then_some(code)
}

fn user_code_hash(tenant: &Tenant, code: &str) -> String {
    hash_str(&format!("{}:{code}", tenant.id))
}

pub async fn device_authorization(
    State(app): State<AppState>,
    tenant: TenantCtx,
    headers: HeaderMap,
    source: SourceAddr,
    body: Body,
) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match start(&app, &tenant, &headers, source, &body).await {
        Ok(v) => {
            let mut res = axum::Json(v).into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(e) => e.into_response(),
    }
}

async fn start(
    app: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    source: SourceAddr,
    body: &[u8],
) -> OAuthResult<serde_json::Value> {
    let params = parse_form(headers, body, &["resource"])?;
    let client = client_auth::authenticate(app, tenant, headers, source, &params).await?;
    if !client.meta.allows_grant(GRANT_DEVICE_CODE) {
        return Err(OAuthError::unauthorized_client(
            "this client may not use the device authorization grant",
        ));
    }
    let mut draft = Draft {
        scope: None,
        resources: vec![],
        code_challenge: None,
        prompt: Prompt::default(),
        max_age: None,
    };
    check_resource(&params, &client, tenant, &mut draft)?;
    check_scope(&params, &client, tenant, &mut draft)?;
    let request = DeviceRequest {
        scope: draft.scope.unwrap_or_default().to_string(),
        resources: draft.resources,
    };
    let device_code = Handle::generate();
    let now = app.now();
    // A fresh user code collides with a live one at most rarely; try again then.
    for _ in 0..5 {
        let user_code = new_user_code();
        let record = DeviceRecord {
            device_code_hash: device_code.hash(),
            user_code_hash: user_code_hash(tenant, &user_code),
            tenant_id: tenant.id.clone(),
            client_id: client.client_id.clone(),
            data: serde_json::to_string(&request)
                .map_err(|e| OAuthError::server_error(e.to_string()))?,
            status: "pending".into(),
            subject: None,
            grant_id: None,
            interval_secs: POLL_INTERVAL,
            last_polled_at: None,
            created_at: now,
            expires_at: now + DEVICE_CODE_TTL,
        };
        if app.store.put_device(&record).await.is_ok() {
            let shown = display_code(&user_code);
            let verification_uri = tenant.endpoint("/device");
            return Ok(json!({
                "device_code": device_code.expose(),
                "user_code": shown,
                "verification_uri": verification_uri,
                "verification_uri_complete": format!("{verification_uri}?user_code={shown}"),
                "expires_in": DEVICE_CODE_TTL,
                "interval": POLL_INTERVAL,
            }));
        }
    }
    Err(OAuthError::unavailable())
}

#[derive(Deserialize)]
pub struct ShowQuery {
    #[serde(default)]
    user_code: Option<String>,
}

#[derive(Deserialize)]
pub struct EnterForm {
    csrf: String,
    user_code: String,
}

const CSRF_PURPOSE: &str = "device-code-entry";

fn entry_page(
    tenant: &Tenant,
    browser: &str,
    user_code: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let action = tenant.endpoint("/device");
    let csrf = csrf_token(browser, CSRF_PURPOSE);
    pages::render(
        status,
        &DevicePage {
            action: &action,
            csrf: &csrf,
            user_code,
            error,
        },
    )
}

pub async fn show(
    State(app): State<AppState>,
    tenant: TenantCtx,
    headers: HeaderMap,
    query: Result<Query<ShowQuery>, QueryRejection>,
) -> Response {
    let (browser, set_cookie) = browser_token(&app, &headers);
    // A malformed query only loses the code to fill in.
    let prefill = query
        .ok()
        .and_then(|Query(q)| q.user_code)
        .unwrap_or_default();
    let prefill: String = prefill
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(16)
        .collect();
    with_cookies(
        entry_page(&tenant, &browser, &prefill, None, StatusCode::OK),
        [set_cookie],
    )
}

pub async fn enter(
    State(app): State<AppState>,
    tenant: TenantCtx,
    source: SourceAddr,
    req: Request,
) -> Response {
    let headers = req.headers().clone();
    let Ok(Form(form)) = Form::<EnterForm>::from_request(req, &()).await else {
        return pages::error_page(&OAuthError::invalid_request("the form was incomplete"));
    };
    let cookies = Cookies::new(&app);
    let browser = Cookies::read(&headers, &cookies.flow_name()).unwrap_or_default();
    if browser.is_empty() || !ct_eq(&form.csrf, &csrf_token(&browser, CSRF_PURPOSE)) {
        return pages::error_page(&OAuthError::access_denied(
            "the form was not submitted from this page; open it again",
        ));
    }
    // Counted before the lookup: over the limit nothing is looked up at all.
    if let Err(limited) = limits::rate::device_code_entry(&app, source).await {
        return entry_page(
            &tenant,
            &browser,
            "",
            Some(limited.message),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let wrong = |msg: &str| {
        entry_page(
            &tenant,
            &browser,
            &form.user_code,
            Some(msg),
            StatusCode::BAD_REQUEST,
        )
    };
    let Some(code) = normalize_user_code(&form.user_code) else {
        return wrong("That is not a valid code. Check the code shown on your device.");
    };
    let record = match app
        .store
        .find_pending_device_by_user_code(&tenant.id, &user_code_hash(&tenant, &code), app.now())
        .await
    {
        Ok(Some(r)) => r,
        Ok(None) => {
            return wrong(
                "That code is not valid or has expired. Check the code shown on your device.",
            )
        }
        Err(e) => return pages::error_page(&e.into()),
    };
    let client = match app
        .clients
        .find(&app.store, &tenant.id, &record.client_id)
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => {
            return pages::error_page(&OAuthError::invalid_request("the client no longer exists"))
        }
        Err(e) => return pages::error_page(&e.into()),
    };
    let Ok(asked) = serde_json::from_str::<DeviceRequest>(&record.data) else {
        return pages::error_page(&OAuthError::server_error(
            "the device request is unreadable",
        ));
    };
    let request = AuthorizationRequest {
        client_id: client.client_id.clone(),
        redirect_uri: String::new(),
        redirect_uri_sent: false,
        state: None,
        scope: ScopeSet::parse(&asked.scope).unwrap_or_default(),
        resources: asked.resources,
        code_challenge: String::new(),
        nonce: None,
        // RFC 8628 §5.4: always ask, so a phished code is not approved silently.
        prompt: Prompt {
            consent: true,
            ..Prompt::default()
        },
        max_age: None,
        login_hint: None,
        device: Some(DeviceLink {
            device_code_hash: record.device_code_hash.clone(),
            user_code: display_code(&code),
        }),
    };
    let (handle, pending) = match flow::create_pending(&app, &tenant, request, &browser).await {
        Ok(p) => p,
        Err(e) => return pages::error_page(&e),
    };
    match current_session(&app, &tenant, &headers).await {
        Ok(Some(session)) => {
            flow::proceed(&app, &tenant, &client, &handle, pending, &browser, &session).await
        }
        Ok(None) => Redirect::to(&format!(
            "{}?pending={}",
            tenant.endpoint("/login"),
            handle.expose()
        ))
        .into_response(),
        Err(e) => pages::error_page(&e),
    }
}

/// The user allowed it: record the grant the device will redeem.
pub async fn approve(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    req: &AuthorizationRequest,
    device: &DeviceLink,
    session: &(SessionRecord, SessionData),
) -> Response {
    let now = app.now();
    let record = match super::flow::user_grant(app, tenant, client, req, session) {
        Ok((_, record)) => record,
        Err(e) => return pages::error_page(&e),
    };
    if let Err(e) = app.store.create_grant(&record).await {
        return pages::error_page(&e.into());
    }
    match app
        .store
        .decide_device(
            &tenant.id,
            &device.device_code_hash,
            "approved",
            &session.0.subject,
            Some(&record.id),
            now,
        )
        .await
    {
        Ok(true) => {
            app.audit.record(
                tenant,
                "device_authorization",
                "approved",
                Some(&client.client_id),
                Some(&session.0.subject),
                None,
                json!({"scope": req.scope.to_string()}),
            );
            done_page(client, true)
        }
        Ok(false) => pages::error_page(&OAuthError::invalid_request(
            "this device code has expired or was already used; start again on the device",
        )),
        Err(e) => pages::error_page(&e.into()),
    }
}

/// The user said no: the device's next poll gets access_denied.
pub async fn deny(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    device: &DeviceLink,
    subject: &str,
) -> Response {
    match app
        .store
        .decide_device(
            &tenant.id,
            &device.device_code_hash,
            "denied",
            subject,
            None,
            app.now(),
        )
        .await
    {
        Ok(_) => {
            app.audit.record(
                tenant,
                "device_authorization",
                "denied",
                Some(&client.client_id),
                Some(subject),
                None,
                json!({}),
            );
            done_page(client, false)
        }
        Err(e) => pages::error_page(&e.into()),
    }
}

fn done_page(client: &Client, approved: bool) -> Response {
    pages::render(
        StatusCode::OK,
        &DeviceDonePage {
            client_name: client.meta.display_name(&client.client_id),
            approved,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_use_the_unambiguous_alphabet() {
        for _ in 0..100 {
            let code = new_user_code();
            assert_eq!(code.len(), 8);
            assert!(code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)));
        }
    }

    #[test]
    fn typed_codes_are_forgiven_case_and_separators() {
        assert_eq!(
            normalize_user_code("wdjb-mjht").as_deref(),
            Some("WDJBMJHT")
        );
        assert_eq!(
            normalize_user_code(" WDJB MJHT ").as_deref(),
            Some("WDJBMJHT")
        );
        assert_eq!(normalize_user_code("WDJB-MJH"), None);
        assert_eq!(
            normalize_user_code("AAAA-AAAA"),
            None,
            "vowels are never in a code"
        );
    }
}
