//! The login page in front of a password-form connector (the development
//! connector for now). Redirect connectors (OIDC, SAML) plug in here.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use gatehouse_connectors::{Connector, ConnectorError, LoginMethod};
use serde::Deserialize;

use super::flow::{self, csrf_token, load_pending, with_cookies, SessionData};
use crate::oauth::errors::OAuthError;
use crate::pages::{self, LoginPage};
use crate::store::IdentityRecord;
use crate::tenants::{Tenant, TenantCtx};
use crate::tokens::secret::random_id;
use crate::tokens::UserClaims;
use crate::AppState;

#[derive(Deserialize)]
pub struct ShowQuery {
    pending: String,
}

#[derive(Deserialize)]
pub struct LoginForm {
    pending: String,
    csrf: String,
    username: String,
    password: String,
}

fn password_connector(tenant: &Tenant) -> Option<&std::sync::Arc<dyn Connector>> {
    tenant
        .connectors
        .iter()
        .find(|c| c.login_method() == LoginMethod::PasswordForm)
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
            username,
            error,
        },
    )
}

pub async fn show(
    State(app): State<AppState>,
    tenant: TenantCtx,
    headers: HeaderMap,
    Query(q): Query<ShowQuery>,
) -> Response {
    let (_, pending, browser) = match load_pending(&app, &tenant, &headers, &q.pending, None).await
    {
        Ok(p) => p,
        Err(page) => return page,
    };
    let Some(connector) = password_connector(&tenant) else {
        return no_connector();
    };
    let name = client_name(&app, &tenant, &pending.request.client_id).await;
    let hint = pending.request.login_hint.clone().unwrap_or_default();
    login_page(
        &tenant,
        connector.as_ref(),
        &name,
        &q.pending,
        &browser,
        &hint,
        None,
        StatusCode::OK,
    )
}

pub async fn submit(
    State(app): State<AppState>,
    tenant: TenantCtx,
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
    let Some(connector) = password_connector(&tenant) else {
        return no_connector();
    };
    let client = match app
        .clients
        .find_or_fetch(&app.store, &tenant, &pending.request.client_id)
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => {
            return pages::error_page(&OAuthError::invalid_request("the client no longer exists"))
        }
        Err(e) => return pages::error_page(&e.into()),
    };
    let identity = match connector
        .password_login(&form.username, &form.password)
        .await
    {
        Ok(identity) => identity,
        Err(ConnectorError::InvalidCredentials) => {
            app.audit.record(
                &tenant,
                "login",
                "failure",
                Some(&client.client_id),
                None,
                None,
                serde_json::json!({"connector": connector.id()}),
            );
            let name = client.meta.display_name(&client.client_id).to_string();
            return login_page(
                &tenant,
                connector.as_ref(),
                &name,
                &form.pending,
                &browser,
                &form.username,
                Some("Wrong email or password."),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(e) => {
            tracing::warn!(connector = connector.id(), error = %e, "login failed upstream");
            return pages::error_page(&OAuthError::server_error(
                "the identity provider could not sign you in",
            ));
        }
    };
    let user = UserClaims {
        email: identity.email.clone(),
        email_verified: identity.email_verified,
        name: identity.name.clone(),
        groups: identity.groups.clone(),
    };
    let now = app.now();
    let mapping = IdentityRecord {
        tenant_id: tenant.id.clone(),
        connector_id: identity.connector_id.clone(),
        upstream_subject: identity.upstream_subject.clone(),
        subject: uuid::Uuid::new_v4().to_string(),
        claims: serde_json::to_string(&user).unwrap_or_else(|_| "{}".into()),
    };
    let subject = match app.store.map_identity(&mapping, now).await {
        Ok(s) => s,
        Err(e) => return pages::error_page(&e.into()),
    };
    let data = SessionData {
        connector_id: identity.connector_id,
        user,
        auth_time: now,
        sid: random_id(),
    };
    let (session, cookie) = match flow::start_session(&app, &tenant, &subject, &data).await {
        Ok(s) => s,
        Err(e) => return pages::error_page(&e),
    };
    app.audit.record(
        &tenant,
        "login",
        "success",
        Some(&client.client_id),
        Some(&subject),
        None,
        serde_json::json!({"connector": connector.id()}),
    );
    let res = flow::proceed(
        &app,
        &tenant,
        &client,
        &handle,
        pending,
        &browser,
        &(session, data),
    )
    .await;
    with_cookies(res, [cookie])
}
