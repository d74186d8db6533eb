//! GET /login picks the connector for a pending authorization (the only one,
//! the one for the `login_hint`'s email domain, or the user's answer on the
//! chooser page: an email address whose domain picks the connector, POSTed
//! to /login/email, or one of the listed methods). Password-form connectors
//! get the login form here; redirect connectors (OIDC) send the browser
//! upstream (see `callback`).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use gatehouse_connectors::{Connector, ConnectorError, Identity, LoginMethod};
use serde::Deserialize;

use super::flow::{self, csrf_token, load_pending, with_cookies, PendingData, SessionData};
use crate::http::SourceAddr;
use crate::limits::throttle;
use crate::oauth::client_auth::Client;
use crate::oauth::errors::OAuthError;
use crate::pages::{self, ChooserOption, ChooserPage, EmailForm, LoginPage};
use crate::telemetry::metrics::metrics;
use crate::tenants::{connector_for_email, identity, Tenant, TenantCtx};
use crate::tokens::secret::{random_id, Handle};
use crate::AppState;

#[derive(Deserialize)]
pub struct ShowQuery {
    pending: String,
    /// Picked on the chooser page.
    #[serde(default)]
    connector: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    pending: String,
    csrf: String,
    username: String,
    password: String,
    /// The password connector the form was shown for (the first one when
    /// absent).
    #[serde(default)]
    connector: Option<String>,
}

fn password_connector<'a>(
    tenant: &'a Tenant,
    wanted: Option<&str>,
) -> Option<&'a Arc<dyn Connector>> {
    tenant.connectors.iter().find(|c| {
        c.login_method() == LoginMethod::PasswordForm && wanted.is_none_or(|id| c.id() == id)
    })
}

enum Choice<'a> {
    One(&'a Arc<dyn Connector>),
    Ask,
    Nothing,
    Unknown,
}

/// Which connector signs this user in.
fn choose<'a>(tenant: &'a Tenant, pending: &PendingData, chosen: Option<&str>) -> Choice<'a> {
    if let Some(id) = chosen {
        return match tenant.connector(id) {
            Some(c) => Choice::One(c),
            None => Choice::Unknown,
        };
    }
    if let Some(c) = pending
        .request
        .login_hint
        .as_deref()
        .and_then(|hint| connector_for_email(tenant, hint))
    {
        return Choice::One(c);
    }
    match tenant.connectors.as_slice() {
        [] => Choice::Nothing,
        [only] => Choice::One(only),
        _ => Choice::Ask,
    }
}

/// What the chooser page shows besides the list of methods.
struct Ask<'a> {
    browser: &'a str,
    email: &'a str,
    error: Option<&'a str>,
    status: StatusCode,
}

/// The chooser: the email question (when any connector has email domains)
/// above the list of sign-in methods.
fn chooser_page(tenant: &Tenant, client_name: &str, pending: &str, ask: Ask<'_>) -> Response {
    let options: Vec<ChooserOption> = tenant
        .connectors
        .iter()
        .map(|c| {
            let mut url = url::Url::parse(&tenant.endpoint("/login")).ok();
            if let Some(u) = url.as_mut() {
                u.query_pairs_mut()
                    .append_pair("pending", pending)
                    .append_pair("connector", c.id());
            }
            ChooserOption {
                id: c.id().to_string(),
                name: c.display_name().to_string(),
                href: url.map(|u| u.to_string()).unwrap_or_default(),
            }
        })
        .collect();
    let action = tenant.endpoint("/login/email");
    let csrf = csrf_token(ask.browser, pending);
    let asks_email = tenant
        .settings
        .connectors
        .iter()
        .any(|c| !c.domains.is_empty());
    pages::render(
        ask.status,
        &ChooserPage {
            client_name,
            email_form: asks_email.then_some(EmailForm {
                action: &action,
                pending,
                csrf: &csrf,
                email: ask.email,
            }),
            error: ask.error,
            options,
        },
    )
}

/// Signs the user in with `connector`: upstream for redirect connectors,
/// the password form (with `email` filled in) otherwise.
async fn start_login(
    app: &AppState,
    tenant: &Tenant,
    connector: &dyn Connector,
    (handle, pending, browser): (&Handle, PendingData, &str),
    client_name: &str,
    email: &str,
) -> Response {
    if connector.login_method() == LoginMethod::Redirect {
        let hint = Some(email).filter(|e| !e.is_empty());
        return super::callback::start(app, tenant, connector, handle, pending, hint).await;
    }
    login_page(
        tenant,
        connector,
        client_name,
        handle.expose(),
        browser,
        email,
        None,
        StatusCode::OK,
    )
}

fn no_connector() -> Response {
    pages::error_page(&OAuthError::server_error(
        "no login method is configured for this tenant",
    ))
}

async fn client_name(app: &AppState, tenant: &Tenant, client_id: &str) -> String {
    match app
        .clients
        .find_or_fetch(&app.store, tenant, client_id)
        .await
    {
        Ok(Some(c)) => c.meta.display_name(&c.client_id).to_string(),
        _ => client_id.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
fn login_page(
    tenant: &Tenant,
    connector: &dyn Connector,
    client_name: &str,
    pending: &str,
    browser: &str,
    username: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let action = tenant.endpoint("/login");
    pages::render(
        status,
        &LoginPage {
            client_name,
            connector_name: connector.display_name(),
            action: &action,
            pending,
            csrf: &csrf_token(browser, pending),
            connector_id: connector.id(),
            username,
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
    let Ok(Query(q)) = query else {
        return pages::error_page(&OAuthError::invalid_request(
            "the sign-in link is incomplete; start again from the application",
        ));
    };
    let (handle, pending, browser) =
        match load_pending(&app, &tenant, &headers, &q.pending, None).await {
            Ok(p) => p,
            Err(page) => return page,
        };
    let name = client_name(&app, &tenant, &pending.request.client_id).await;
    let hint = pending.request.login_hint.clone().unwrap_or_default();
    let connector = match choose(&tenant, &pending, q.connector.as_deref()) {
        Choice::One(c) => c.clone(),
        Choice::Ask => {
            let ask = Ask {
                browser: &browser,
                email: &hint,
                error: None,
                status: StatusCode::OK,
            };
            return chooser_page(&tenant, &name, &q.pending, ask);
        }
        Choice::Nothing => return no_connector(),
        Choice::Unknown => {
            return pages::error_page(&OAuthError::invalid_request(
                "that sign-in method does not exist; start again from the application",
            ))
        }
    };
    start_login(
        &app,
        &tenant,
        connector.as_ref(),
        (&handle, pending, &browser),
        &name,
        &hint,
    )
    .await
}

#[derive(Deserialize)]
pub struct EmailAnswer {
    pending: String,
    csrf: String,
    email: String,
}

/// POST /login/email: the answer to the chooser's email question picks the
/// connector for the email's domain; an unknown domain shows the chooser
/// again with a message.
pub async fn email(
    State(app): State<AppState>,
    tenant: TenantCtx,
    headers: HeaderMap,
    form: Result<Form<EmailAnswer>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return pages::error_page(&OAuthError::invalid_request(
            "the sign-in form was incomplete",
        ));
    };
    let (handle, pending, browser) =
        match load_pending(&app, &tenant, &headers, &form.pending, Some(&form.csrf)).await {
            Ok(p) => p,
            Err(page) => return page,
        };
    let name = client_name(&app, &tenant, &pending.request.client_id).await;
    let email = form.email.trim();
    if let Some(connector) = connector_for_email(&tenant, email) {
        let connector = connector.clone();
        return start_login(
            &app,
            &tenant,
            connector.as_ref(),
            (&handle, pending, &browser),
            &name,
            email,
        )
        .await;
    }
    let message = match email.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => format!(
            "There is no sign-in method for {domain} addresses. Check the address, or choose how to sign in below."
        ),
        _ => "Enter your email address, like name@example.com, or choose how to sign in below."
            .to_string(),
    };
    let ask = Ask {
        browser: &browser,
        email,
        error: Some(&message),
        status: StatusCode::BAD_REQUEST,
    };
    chooser_page(&tenant, &name, &form.pending, ask)
}

pub async fn submit(
    State(app): State<AppState>,
    tenant: TenantCtx,
    source: SourceAddr,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return pages::error_page(&OAuthError::invalid_request(
            "the login form was incomplete",
        ));
    };
    let (handle, pending, browser) =
        match load_pending(&app, &tenant, &headers, &form.pending, Some(&form.csrf)).await {
            Ok(p) => p,
            Err(page) => return page,
        };
    // The form names the password connector it was shown for; anything
    // else (empty, unknown, a redirect connector) is a bad request.
    let Some(connector) = password_connector(&tenant, form.connector.as_deref()) else {
        return pages::error_page(&OAuthError::invalid_request(
            "that sign-in method does not exist or does not take a password; start again from the application",
        ));
    };
    let client = match pending_client(&app, &tenant, &pending).await {
        Ok(c) => c,
        Err(page) => return page,
    };
    let name = client.meta.display_name(&client.client_id).to_string();
    let page = |error: &str, status: StatusCode| {
        login_page(
            &tenant,
            connector.as_ref(),
            &name,
            &form.pending,
            &browser,
            &form.username,
            Some(error),
            status,
        )
    };
    let attempt = match check_login_throttle(&app, &tenant, &form.username, source).await {
        Ok(a) => a,
        Err(t) => {
            metrics().sign_in(&tenant.id, connector.id(), "throttled");
            let minutes = t.retry_after.div_ceil(60);
            let wait = if t.retry_after < 60 {
                format!("{} seconds", t.retry_after)
            } else {
                format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
            };
            let msg = format!("{} Sign-in is paused; try again in {wait}.", t.message);
            return with_retry_after(page(&msg, StatusCode::TOO_MANY_REQUESTS), t.retry_after);
        }
    };
    let result = connector
        .password_login(&form.username, &form.password)
        .await;
    let identity = match result {
        Ok(identity) => {
            attempt.succeeded(&app).await;
            identity
        }
        Err(ConnectorError::Busy) => {
            metrics().rate_limited("hash_queue");
            metrics().sign_in(&tenant.id, connector.id(), "throttled");
            let msg = "The server is busy; try again in a moment.";
            return with_retry_after(page(msg, StatusCode::SERVICE_UNAVAILABLE), 1);
        }
        Err(ConnectorError::InvalidCredentials) => {
            metrics().sign_in(&tenant.id, connector.id(), "failure");
            attempt.failed(&app, &tenant).await;
            app.audit.record(
                &tenant,
                "login",
                "failure",
                Some(&client.client_id),
                None,
                None,
                serde_json::json!({"connector": connector.id()}),
            );
            return page("Wrong email or password.", StatusCode::UNAUTHORIZED);
        }
        Err(e) => {
            metrics().sign_in(&tenant.id, connector.id(), "failure");
            tracing::warn!(connector = connector.id(), error = %e, "login failed upstream");
            return pages::error_page(&OAuthError::server_error(
                "the identity provider could not sign you in",
            ));
        }
    };
    signed_in(&app, &tenant, &client, identity, &handle, pending, &browser).await
}

/// Sign-in throttling (`limits::throttle`), keyed by the account as typed
/// (trimmed, lower-cased) and the source address: a refusal, or the
/// admitted attempt and its place among this source's password checks.
async fn check_login_throttle(
    app: &AppState,
    tenant: &Tenant,
    username: &str,
    source: SourceAddr,
) -> Result<throttle::Attempt, throttle::Throttled> {
    let account = username.trim().to_lowercase();
    throttle::begin(app, tenant, throttle::Kind::Login, &account, source).await
}

fn with_retry_after(mut res: Response, seconds: u64) -> Response {
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    res
}

/// The client of a pending authorization, or the page to show instead.
pub async fn pending_client(
    app: &AppState,
    tenant: &Tenant,
    pending: &PendingData,
) -> Result<Arc<Client>, Response> {
    match app
        .clients
        .find_or_fetch(&app.store, tenant, &pending.request.client_id)
        .await
    {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(pages::error_page(&OAuthError::invalid_request(
            "the client no longer exists",
        ))),
        Err(e) => Err(pages::error_page(&e.into())),
    }
}

/// A connector vouched for `identity`: map it to the broker subject, start
/// the SSO session and continue the authorization (consent or code). Shared
/// by the login form and the upstream callback.
pub async fn signed_in(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    identity: Identity,
    handle: &Handle,
    mut pending: PendingData,
    browser: &str,
) -> Response {
    // Whatever upstream login was under way is over: keep no secrets of it.
    pending.upstream = None;
    let user = identity::user_claims(&identity);
    let now = app.now();
    let subject = match identity::broker_subject(app, tenant, &identity).await {
        Ok(s) => s,
        Err(e) => return pages::error_page(&e),
    };
    if let Err(e) = identity::remember_upstream_session(app, tenant, &subject, &identity).await {
        return pages::error_page(&e);
    }
    let data = SessionData {
        connector_id: identity.connector_id.clone(),
        user,
        auth_time: now,
        sid: random_id(),
        not_after: identity.session.not_after,
    };
    let (session, cookie) = match flow::start_session(app, tenant, &subject, &data).await {
        Ok(s) => s,
        Err(e) => return pages::error_page(&e),
    };
    metrics().sign_in(&tenant.id, &identity.connector_id, "success");
    app.audit.record(
        tenant,
        "login",
        "success",
        Some(&client.client_id),
        Some(&subject),
        None,
        serde_json::json!({"connector": identity.connector_id}),
    );
    let res = flow::proceed(
        app,
        tenant,
        client,
        handle,
        pending,
        browser,
        &(session, data),
    )
    .await;
    with_cookies(res, [cookie])
}
