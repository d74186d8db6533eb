//! RFC 6749 error responses. Every protocol failure becomes an `OAuthError`,
//! which renders itself as JSON (`error`, `error_description`) with the
//! status the RFC gives, and `Cache-Control: no-store`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    InvalidTarget,
    AccessDenied,
    ServerError,
    TemporarilyUnavailable,
    LoginRequired,
    ConsentRequired,
    InteractionRequired,
    InvalidToken,
    InsufficientScope,
    UnsupportedTokenType,
    NotFound,
    RequestNotSupported,
    RequestUriNotSupported,
    AuthorizationPending,
    SlowDown,
    ExpiredToken,
}

impl ErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::ConsentRequired => "consent_required",
            ErrorCode::InteractionRequired => "interaction_required",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RequestNotSupported => "request_not_supported",
            ErrorCode::RequestUriNotSupported => "request_uri_not_supported",
            ErrorCode::AuthorizationPending => "authorization_pending",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::ExpiredToken => "expired_token",
        }
    }

    fn default_status(&self) -> StatusCode {
        match self {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

#[derive(Clone, Debug)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    pub status: StatusCode,
    /// For 401s: the challenge to send (`Basic realm=...` or `Bearer ...`).
    pub challenge: Option<String>,
    /// For 429 and 503: seconds to send in `Retry-After` (RFC 6585 §4).
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl std::error::Error for OAuthError {}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        let description = sanitize(&description.into());
        Self {
            status: code.default_status(),
            code,
            description,
            challenge: None,
            retry_after: None,
        }
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, d)
    }
    pub fn invalid_client(d: impl Into<String>) -> Self {
        // RFC 6749 §5.2: a 401 names the scheme the client should use.
        let mut e = Self::new(ErrorCode::InvalidClient, d);
        e.challenge = Some("Basic realm=\"gatehouse\"".into());
        e
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, d)
    }
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnauthorizedClient, d)
    }
    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnsupportedGrantType, d)
    }
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidScope, d)
    }
    pub fn invalid_target(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidTarget, d)
    }
    pub fn access_denied(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::AccessDenied, d)
    }
    pub fn invalid_token(d: impl Into<String>) -> Self {
        let mut e = Self::new(ErrorCode::InvalidToken, d);
        e.challenge = Some("Bearer error=\"invalid_token\"".into());
        e
    }
    pub fn not_found(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, d)
    }
    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            "the service is temporarily unavailable; try again",
        )
    }
    pub fn server_error(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServerError, d)
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

/// Descriptions may quote client input: keep them to printable ASCII that
/// RFC 6749 allows (%x20-21 / %x23-5B / %x5D-7E) and a sane length.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .take(400)
        .collect()
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        if let StoreError::UnstorableInput(_) = e {
            // Input that should have been refused earlier: the client's
            // fault, not a database alarm.
            tracing::warn!(error = %e, "input refused by the database");
            return OAuthError::invalid_request("the request holds a value that cannot be used");
        }
        tracing::error!(error = %e, "storage failure");
        OAuthError::unavailable()
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: &'a str,
}

/// Left on a response that carries an OAuth error (JSON, error page or
/// error redirect), so the HTTP layer can count errors by code without
/// parsing bodies (`telemetry::http_metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorSent(pub &'static str);

impl OAuthError {
    /// Marks `res` as carrying this error (see [`ErrorSent`]).
    pub fn mark(&self, mut res: Response) -> Response {
        res.extensions_mut().insert(ErrorSent(self.code.as_str()));
        res
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code.as_str(),
            error_description: &self.description,
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        let headers = res.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(ch) = self
            .challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            // 401 names the scheme; 403 insufficient_scope names the scope (RFC 6750 §3).
            if self.status == StatusCode::UNAUTHORIZED || self.status == StatusCode::FORBIDDEN {
                headers.insert(header::WWW_AUTHENTICATE, ch);
            }
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        self.mark(res)
    }
}

pub type OAuthResult<T> = Result<T, OAuthError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_is_sanitized_for_rfc6749() {
        let e = OAuthError::invalid_request("bad \"x\"\n\u{7f}é");
        assert_eq!(e.description, "bad 'x'???");
    }

    #[test]
    fn invalid_client_is_401_with_challenge() {
        let res = OAuthError::invalid_client("nope").into_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers().get(header::WWW_AUTHENTICATE).is_some());
        assert_eq!(
            res.headers().get(header::CACHE_CONTROL).unwrap(),
            "no-store"
        );
    }
}
