//! RFC 9728 protected-resource metadata, hosted by Gatehouse for a resource
//! (MCP server) that cannot serve its own. The MCP server points its
//! `WWW-Authenticate: Bearer resource_metadata="…"` at
//! `{issuer}/resource-metadata?resource=<its resource URI>`.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::oauth::errors::OAuthError;
use crate::oauth::params::Params;
use crate::oauth::resource;
use crate::tenants::{Tenant, TenantCtx};
use crate::AppState;

/// The document for one of the tenant's resources.
pub fn document(tenant: &Tenant, uri: &str) -> Option<serde_json::Value> {
    let r = tenant.resource(uri)?;
    let mut doc = json!({
        "resource": r.uri,
        "authorization_servers": [tenant.issuer],
        "scopes_supported": r.settings.scopes,
        "bearer_methods_supported": ["header"],
    });
    if let (Some(name), Some(obj)) = (&r.settings.name, doc.as_object_mut()) {
        obj.insert("resource_name".into(), name.clone().into());
    }
    Some(doc)
}

pub async fn resource_metadata(
    State(_app): State<AppState>,
    tenant: TenantCtx,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.unwrap_or_default().as_bytes(), &[]) {
        Ok(p) => p,
        Err(e) => return OAuthError::invalid_request(e.to_string()).into_response(),
    };
    let Some(requested) = params.get("resource") else {
        return OAuthError::invalid_request("missing required parameter 'resource'")
            .into_response();
    };
    let found = resource::canonicalize(requested)
        .ok()
        .and_then(|canon| document(&tenant, &canon));
    match found {
        Some(doc) => {
            let mut res = axum::Json(doc).into_response();
            res.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            res
        }
        None => OAuthError::not_found("no such resource is registered here").into_response(),
    }
}
