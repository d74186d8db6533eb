//! The token endpoint's success response (RFC 6749 §5.1, RFC 8693 §2.2.1),
//! built by the grants and rendered by `endpoints::token`.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// RFC 8693 §2.2.1, token exchange only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// What `access_token` holds (for the metrics; never sent).
    #[serde(skip)]
    pub format: IssuedFormat,
}

/// The kind of token in a token response's `access_token` field: an access
/// token (JWT or opaque), or what a token exchange or ID-JAG request asked
/// for instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssuedFormat {
    Jwt,
    Opaque,
    IdJag,
    Refresh,
}

impl IssuedFormat {
    pub fn label(self) -> &'static str {
        match self {
            IssuedFormat::Jwt => "jwt",
            IssuedFormat::Opaque => "opaque",
            IssuedFormat::IdJag => "id_jag",
            IssuedFormat::Refresh => "refresh",
        }
    }
}

impl From<crate::tenants::TokenFormat> for IssuedFormat {
    fn from(f: crate::tenants::TokenFormat) -> Self {
        match f {
            crate::tenants::TokenFormat::Jwt => IssuedFormat::Jwt,
            crate::tenants::TokenFormat::Opaque => IssuedFormat::Opaque,
        }
    }
}

impl TokenResponse {
    /// A plain Bearer access token response: no refresh or ID token. Its
    /// `scope` is the access token's (RFC 6749 §5.1).
    pub fn bearer(access: super::MintedAccessToken, scope: &crate::oauth::scope::ScopeSet) -> Self {
        TokenResponse {
            access_token: access.token,
            token_type: "Bearer",
            expires_in: access.expires_in,
            scope: crate::oauth::scope::access_token_scope(scope).to_string(),
            refresh_token: None,
            id_token: None,
            issued_token_type: None,
            format: access.format.into(),
        }
    }
}
