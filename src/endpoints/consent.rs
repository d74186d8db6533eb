//! POST /consent: the user's answer to the consent page.

use axum::extract::{Form, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::flow::{self, current_session, load_pending};
use crate::oauth::authorization_request::ErrorRedirect;
use crate::oauth::errors::OAuthError;
use crate::pages;
use crate::tenants::TenantCtx;
use crate::tokens::secret::ct_eq;
use crate::AppState;

#[derive(Deserialize)]
pub struct ConsentForm {
    pending: String,
    csrf: String,
    decision: String,
}

pub async fn submit(
    State(app): State<AppState>,
    tenant: TenantCtx,
    headers: HeaderMap,
    form: Result<Form<ConsentForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return pages::error_page(&OAuthError::invalid_request(
            "the consent form was incomplete",
        ));
    };
    let (handle, pending, _) =
        match load_pending(&app, &tenant, &headers, &form.pending, Some(&form.csrf)).await {
            Ok(p) => p,
            Err(page) => return page,
        };
    let req = pending.request.clone();
    let back = ErrorRedirect {
        redirect_uri: req.redirect_uri.clone(),
        state: req.state.clone(),
    };
    // The same signed-in user who was shown the page must answer it.
    let session = match current_session(&app, &tenant, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return pages::error_page(&OAuthError::access_denied(
                "you are no longer signed in; start again from the application",
            ))
        }
        Err(e) => return pages::error_page(&e),
    };
    match &pending.subject {
        Some(subject) if ct_eq(subject, &session.0.subject) => {}
        _ => {
            return pages::error_page(&OAuthError::access_denied(
                "this consent page belongs to another sign-in",
            ))
        }
    }
    let client = match app
        .clients
        .find_or_fetch(&app.store, &tenant, &req.client_id)
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => {
            return pages::error_page(&OAuthError::invalid_request("the client no longer exists"))
        }
        Err(e) => return pages::error_page(&e.into()),
    };
    match form.decision.as_str() {
        "allow" => {
            if let Err(e) =
                flow::remember_consent(&app, &tenant, &client.client_id, &session.0.subject, &req)
                    .await
            {
                return flow::error_redirect(&tenant, &back, &e);
            }
            flow::finish(&app, &tenant, &client, &handle, &req, &session).await
        }
        _ => {
            let _ = app
                .store
                .take_pending(&tenant.id, &handle.hash(), app.now())
                .await;
            app.audit.record(
                &tenant,
                "consent",
                "denied",
                Some(&client.client_id),
                Some(&session.0.subject),
                None,
                serde_json::json!({}),
            );
            if let Some(device) = &req.device {
                return super::device::deny(&app, &tenant, &client, device, &session.0.subject)
                    .await;
            }
            flow::error_redirect(
                &tenant,
                &back,
                &OAuthError::access_denied("the user denied the request"),
            )
        }
    }
}
