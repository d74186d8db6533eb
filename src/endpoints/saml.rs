//! GET `{issuer}/saml/{connector_id}/metadata`: a SAML connector's service
//! provider metadata (an `EntityDescriptor` with an `SPSSODescriptor`: our
//! entity id, the ACS URL `{issuer}/callback/{connector_id}` with the
//! HTTP-POST binding, the NameID format), to load into the IdP.

use axum::extract::RawPathParams;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::callback::{callback_url, connector_id};
use crate::oauth::errors::OAuthError;
use crate::tenants::TenantCtx;

pub const CONTENT_TYPE: &str = "application/samlmetadata+xml";

pub async fn metadata(tenant: TenantCtx, path: RawPathParams) -> Response {
    let id = connector_id(&path);
    let document = tenant
        .connector(&id)
        .and_then(|c| c.service_provider_metadata(&callback_url(&tenant, &id)));
    match document {
        Some(Ok(xml)) => {
            let mut res = (StatusCode::OK, xml).into_response();
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            res
        }
        Some(Err(e)) => {
            tracing::warn!(tenant = %tenant.id, connector = %id, error = %e, "SAML SP metadata could not be built");
            OAuthError::server_error("the SAML metadata could not be built").into_response()
        }
        None => OAuthError::not_found("there is no SAML connector with this id").into_response(),
    }
}
