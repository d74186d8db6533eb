//! Server-rendered pages for browsers: errors, login, consent. askama
//! escapes every value; pages forbid framing (clickjacking on consent).

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use crate::oauth::errors::OAuthError;

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub code: &'a str,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub client_name: &'a str,
    pub connector_name: &'a str,
    pub action: &'a str,
    pub pending: &'a str,
    pub csrf: &'a str,
    pub connector_id: &'a str,
    pub username: &'a str,
    pub error: Option<&'a str>,
}

/// One sign-in method on the chooser page.
pub struct ChooserOption {
    pub id: String,
    pub name: String,
    pub href: String,
}

/// The email question of the chooser page (home-realm discovery).
pub struct EmailForm<'a> {
    pub action: &'a str,
    pub pending: &'a str,
    pub csrf: &'a str,
    pub email: &'a str,
}

/// Shown when a tenant has several connectors and nothing picks one: the
/// email question when connectors have domains, and the list of methods.
#[derive(Template)]
#[template(path = "choose.html")]
pub struct ChooserPage<'a> {
    pub client_name: &'a str,
    pub email_form: Option<EmailForm<'a>>,
    pub error: Option<&'a str>,
    pub options: Vec<ChooserOption>,
}

/// A scope on the consent page, with the resource it is for when the
/// request names several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeLine {
    pub scope: String,
    pub resource: Option<String>,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage<'a> {
    pub client_name: &'a str,
    pub user: &'a str,
    pub redirect_host: &'a str,
    pub loopback_only: bool,
    /// The user code, when this consent connects a device (RFC 8628).
    pub device_code: Option<&'a str>,
    pub dynamic: bool,
    pub new_scopes: Vec<ScopeLine>,
    pub already_granted: Vec<ScopeLine>,
    pub resources: &'a [String],
    pub action: &'a str,
    pub pending: &'a str,
    pub csrf: &'a str,
}

/// The same-origin re-post of a SAML response that arrived cross-site
/// without the browser's `SameSite=Lax` cookies (see `endpoints::callback`).
#[derive(Template)]
#[template(path = "saml_repost.html")]
pub struct SamlRepostPage<'a> {
    pub connector_name: &'a str,
    pub action: &'a str,
    pub saml_response: &'a str,
    pub relay_state: Option<&'a str>,
    pub marker: &'a str,
    pub script_nonce: &'a str,
}

/// Renders the re-post page: like [`render`], with one inline script
/// allowed by its nonce and forms allowed only to this origin.
pub fn render_repost(page: &SamlRepostPage) -> Response {
    let mut res = render(StatusCode::OK, page);
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        page.script_nonce
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    res
}

pub fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    let mut res = match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "page rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "page rendering failed").into_response()
        }
    };
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"),
    );
    res
}

/// A protocol error shown to the person in the browser, for failures that
/// must not be redirected to the client.
pub fn error_page(e: &OAuthError) -> Response {
    error_page_titled("This sign-in request cannot continue", e)
}

/// Like [`error_page`] with its own heading.
pub fn error_page_titled(title: &str, e: &OAuthError) -> Response {
    let status = if e.status.is_server_error() {
        e.status
    } else {
        StatusCode::BAD_REQUEST
    };
    e.mark(render(
        status,
        &ErrorPage {
            title,
            message: &e.description,
            code: e.code.as_str(),
        },
    ))
}

#[derive(Template)]
#[template(path = "device.html")]
pub struct DevicePage<'a> {
    pub action: &'a str,
    pub csrf: &'a str,
    pub user_code: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "device_done.html")]
pub struct DeviceDonePage<'a> {
    pub client_name: &'a str,
    pub approved: bool,
}
