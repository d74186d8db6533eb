//! RFC 8414 authorization server metadata and OpenID Connect discovery.
//! Both advertise exactly what is implemented.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::tenants::{AuthMethod, RegistrationMode, Tenant, TenantCtx, SUPPORTED_GRANTS};
use crate::AppState;

const ASSERTION_ALGS: [&str; 6] = ["ES256", "ES384", "RS256", "RS384", "PS256", "EdDSA"];

pub fn metadata(tenant: &Tenant) -> Value {
    let mut doc = core_metadata(tenant);
    if tenant.settings.registration.mode != RegistrationMode::Disabled {
        doc["registration_endpoint"] = json!(tenant.endpoint("/register"));
    }
    doc
}

fn core_metadata(tenant: &Tenant) -> Value {
    let alg = tenant.keys.active().alg.as_str();
    let authenticated: Vec<&str> = AuthMethod::ALL
        .iter()
        .copied()
        .filter(|m| *m != "none")
        .collect();
    json!({
        "issuer": tenant.issuer,
        "authorization_endpoint": tenant.endpoint("/authorize"),
        "token_endpoint": tenant.endpoint("/token"),
        "jwks_uri": tenant.endpoint("/jwks.json"),
        "userinfo_endpoint": tenant.endpoint("/userinfo"),
        "introspection_endpoint": tenant.endpoint("/introspect"),
        "revocation_endpoint": tenant.endpoint("/revoke"),
        "device_authorization_endpoint": tenant.endpoint("/device_authorization"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": SUPPORTED_GRANTS,
        "token_endpoint_auth_methods_supported": AuthMethod::ALL,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "introspection_endpoint_auth_methods_supported": authenticated,
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "revocation_endpoint_auth_methods_supported": AuthMethod::ALL,
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "code_challenge_methods_supported": ["S256"],
        "authorization_grant_profiles_supported": ["urn:ietf:params:oauth:grant-profile:id-jag"],
        "scopes_supported": tenant.all_scopes(),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [alg],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "sid", "email", "email_verified", "name", "groups"],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": tenant.settings.client_id_metadata.enabled,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
    })
}

fn respond(v: Value) -> Response {
    let mut res = axum::Json(v).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    res.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    res
}

pub async fn oauth_metadata(State(_app): State<AppState>, tenant: TenantCtx) -> Response {
    respond(metadata(&tenant))
}

pub async fn openid_configuration(State(_app): State<AppState>, tenant: TenantCtx) -> Response {
    respond(metadata(&tenant))
}
