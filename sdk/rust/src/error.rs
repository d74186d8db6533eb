//! Why a token was refused, and how that maps onto HTTP.

use http::StatusCode;

/// Why [`Verifier::verify`](crate::Verifier::verify) (or
/// [`Verifier::discover`](crate::Verifier::discover)) failed.
///
/// `Display` never echoes token contents, so it is safe to log and to use
/// as an `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The request carried no bearer token at all.
    #[error("no bearer token")]
    MissingToken,
    /// Not a well-formed token, or a required claim is missing or has the
    /// wrong type. The text says what.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The signature does not verify with the key named by `kid`.
    #[error("invalid token signature")]
    BadSignature,
    /// `iss` is not the configured issuer.
    #[error("token was issued by another issuer")]
    WrongIssuer,
    /// `aud` does not name this resource.
    #[error("token is for another resource")]
    WrongAudience,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// The JWT header's `typ` is not `at+jwt` (e.g. an ID token).
    #[error("token is not an access token")]
    WrongTyp,
    /// `alg` is not in the allow-list, or differs from the key's algorithm.
    #[error("token signing algorithm is not allowed")]
    DisallowedAlg,
    /// No key with the token's `kid` in the issuer's JWKS, even after a
    /// refresh (or a refresh was not allowed yet).
    #[error("token was signed with an unknown key")]
    UnknownKey,
    /// Introspection answered `active: false` (revoked, expired, unknown,
    /// or not visible to this resource server).
    #[error("token is not active")]
    Inactive,
    /// The authorization server could not be reached or answered nonsense
    /// (discovery, JWKS or introspection). Not the client's fault: 503.
    #[error("authorization server unavailable: {0}")]
    Upstream(String),
    /// The [`VerifierConfig`](crate::VerifierConfig) is unusable.
    #[error("invalid verifier configuration: {0}")]
    InvalidConfig(String),
}

impl VerifyError {
    /// The HTTP status a resource server should answer with: 401 for every
    /// problem with the token, 503 when the authorization server is
    /// unavailable, 500 for a configuration error.
    pub fn status(&self) -> StatusCode {
        match self {
            VerifyError::Upstream(_) => StatusCode::SERVICE_UNAVAILABLE,
            VerifyError::InvalidConfig(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The RFC 6750 §3.1 error code: `None` for a missing token (the
    /// challenge then carries no error attributes) and for server-side
    /// failures, `invalid_token` otherwise.
    pub fn oauth_error(&self) -> Option<&'static str> {
        match self {
            VerifyError::MissingToken
            | VerifyError::Upstream(_)
            | VerifyError::InvalidConfig(_) => None,
            _ => Some("invalid_token"),
        }
    }

    /// Whether the failure is on the server side (retrying later may help).
    pub fn is_upstream(&self) -> bool {
        matches!(self, VerifyError::Upstream(_))
    }

    pub(crate) fn malformed(what: impl Into<String>) -> Self {
        VerifyError::Malformed(what.into())
    }

    pub(crate) fn upstream(what: impl Into<String>) -> Self {
        VerifyError::Upstream(what.into())
    }
}
