//! Upstream identity connectors for Gatehouse.
//!
//! A connector turns an upstream login (a password form for the development
//! connector; an OIDC code or SAML response for enterprise IdPs) into an
//! [`Identity`]. The broker maps that identity to its own stable subject.

pub mod auth0;
pub mod cognito;
pub mod dev;
pub mod entra;
pub mod oidc;
pub mod password;
pub mod saml;
#[cfg(any(test, feature = "test-idp"))]
pub mod saml_test_idp;
mod trace;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A loopback host (127.0.0.0/8, ::1, localhost): the only hosts where a
/// connector accepts plain `http` endpoints (tests, local development).
pub(crate) fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Who the upstream says logged in.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    /// The connector that vouched for this identity.
    pub connector_id: String,
    /// The upstream's stable subject for the user.
    pub upstream_subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// Further mapped claims, by broker claim name.
    pub claims: BTreeMap<String, serde_json::Value>,
    /// What the broker needs to keep this login tied to the upstream session.
    #[serde(default)]
    pub session: UpstreamSession,
}

/// The upstream side of a login, as far as the broker can follow it.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UpstreamSession {
    /// A refresh token the upstream granted. Secret: never logged; the
    /// broker stores it encrypted and uses it to re-check the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When the upstream session ends at the latest (SAML
    /// `SessionNotOnOrAfter`, or a connector's maximum session lifetime),
    /// in Unix seconds: the broker's session and grants end no later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
    /// A one-time upstream id (a SAML assertion ID) and when it expires: the
    /// broker remembers it until then and refuses a second use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_id: Option<(String, i64)>,
}

impl std::fmt::Debug for UpstreamSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSession")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .field("not_after", &self.not_after)
            .field("one_time_id", &self.one_time_id)
            .finish()
    }
}

/// How the user proves who they are to this connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginMethod {
    /// Gatehouse shows a username/password form and calls `password_login`.
    PasswordForm,
    /// The browser is sent to the upstream and comes back to a callback.
    Redirect,
}

/// Where to send the browser for a redirect login, and what the broker must
/// keep (server side, bound to that browser) until the callback comes back.
#[derive(Clone, Debug)]
pub struct RedirectLogin {
    /// The upstream authorization URL.
    pub authorize_url: String,
    /// Opaque to the broker; handed back to [`Connector::complete`]. Holds
    /// secrets (PKCE verifier, nonce, state): never log it.
    pub kept: serde_json::Value,
}

/// Why a login at a connector failed. The messages are written for the person
/// in front of the browser (and the admin reading the audit log): plain words,
/// never a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Wrong username or password. Deliberately says nothing about which.
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("this connector does not support {0}")]
    Unsupported(&'static str),
    #[error("connector configuration error: {0}")]
    Config(String),
    #[error("upstream identity provider error: {0}")]
    Upstream(String),
    /// No answer from the identity provider (connection failed, timeout).
    #[error("the identity provider could not be reached: {0}")]
    Unreachable(String),
    /// The identity provider answered with an OAuth error (the user
    /// cancelled, the client credentials are wrong, ...).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    /// The browser came back with a response that does not belong to this
    /// sign-in (wrong state, wrong issuer, no code).
    #[error("the sign-in response is not valid: {0}")]
    InvalidCallback(String),
    /// The ID token (or SAML assertion) failed validation (signature,
    /// issuer, audience, time, nonce) or lacks the claims the connector needs.
    #[error("the identity provider's ID token or SAML assertion was rejected: {0}")]
    InvalidToken(String),
    /// A token a client presented is valid, but the provider issued it to
    /// another client than the one presenting it (its `aud`/`azp`, or an
    /// access token's `client_id`, is not mapped to the presenting client).
    #[error("the token was issued to another client: {0}")]
    OtherClient(String),
    /// Too many password checks are under way on this node (see
    /// [`password`]); the user may try again in a moment.
    #[error("the server is too busy to check the password; try again shortly")]
    Busy,
}

impl ConnectorError {
    /// A short, stable word for audit records and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectorError::InvalidCredentials => "invalid_credentials",
            ConnectorError::Unsupported(_) => "unsupported",
            ConnectorError::Config(_) => "configuration",
            ConnectorError::Upstream(_) => "upstream_error",
            ConnectorError::Unreachable(_) => "upstream_unreachable",
            ConnectorError::Refused(_) => "upstream_refused",
            ConnectorError::InvalidCallback(_) => "invalid_callback",
            ConnectorError::InvalidToken(_) => "invalid_id_token",
            ConnectorError::OtherClient(_) => "other_client",
            ConnectorError::Busy => "busy",
        }
    }

    /// True when the identity provider (or its configuration here) is at
    /// fault rather than the request the browser brought.
    pub fn is_upstream_fault(&self) -> bool {
        matches!(
            self,
            ConnectorError::Config(_)
                | ConnectorError::Upstream(_)
                | ConnectorError::Unreachable(_)
                | ConnectorError::InvalidToken(_)
        )
    }
}

#[async_trait]
pub trait Connector: Send + Sync {
    /// Identifier unique within its tenant, as configured.
    fn id(&self) -> &str;
    /// The connector type, e.g. "dev", "oidc", "saml".
    fn kind(&self) -> &'static str;
    /// Label shown on login pages.
    fn display_name(&self) -> &str;
    fn login_method(&self) -> LoginMethod;

    /// Checks a username and password (PasswordForm connectors only).
    async fn password_login(
        &self,
        _username: &str,
        _password: &str,
    ) -> Result<Identity, ConnectorError> {
        Err(ConnectorError::Unsupported("password login"))
    }

    /// Starts a redirect login (Redirect connectors only). `redirect_uri` is
    /// the broker's callback for this connector.
    async fn begin(&self, _redirect_uri: &str) -> Result<RedirectLogin, ConnectorError> {
        Err(ConnectorError::Unsupported("redirect login"))
    }

    /// [`Connector::begin`], passing on the address the user typed (or the
    /// client's `login_hint`) where the upstream can use it to skip its own
    /// account question. Connectors that cannot ignore it.
    async fn begin_with_hint(
        &self,
        redirect_uri: &str,
        _login_hint: Option<&str>,
    ) -> Result<RedirectLogin, ConnectorError> {
        self.begin(redirect_uri).await
    }

    /// Finishes a redirect login from the callback's query parameters and
    /// what [`Connector::begin`] asked to keep.
    async fn complete(
        &self,
        _redirect_uri: &str,
        _kept: &serde_json::Value,
        _params: &BTreeMap<String, String>,
    ) -> Result<Identity, ConnectorError> {
        Err(ConnectorError::Unsupported("redirect login"))
    }

    /// The service provider metadata this connector publishes for its
    /// callback URL (SAML connectors: an `EntityDescriptor` naming the
    /// callback as the Assertion Consumer Service); `None` for others.
    fn service_provider_metadata(
        &self,
        _callback_url: &str,
    ) -> Option<Result<String, ConnectorError>> {
        None
    }

    /// The upstream issuer whose tokens this connector can verify, if any.
    fn issuer(&self) -> Option<&str> {
        None
    }

    /// Whether a presented token claiming issuer `iss` is this connector's
    /// to verify (only routing: the verification checks `iss` again). Most
    /// connectors have one issuer; a multi-tenant Entra ID connector has one
    /// per allowed tenant.
    fn issues(&self, iss: &str) -> bool {
        self.issuer() == Some(iss)
    }

    /// Verifies an ID token that the upstream issued and the Gatehouse
    /// client `presenter` presents (token exchange and ID-JAG subject):
    /// signature against the upstream's keys, `iss`, expiry, and that the
    /// upstream issued it to a client this connector maps to `presenter`
    /// (its `aud`, and its `azp`; [`ConnectorError::OtherClient`] if not).
    async fn verify_presented_id_token(
        &self,
        _token: &str,
        _presenter: &str,
    ) -> Result<Identity, ConnectorError> {
        Err(ConnectorError::Unsupported("verifying presented ID tokens"))
    }

    /// Verifies a JWT access token that the upstream issued and the
    /// Gatehouse client `presenter` presents (token exchange subject):
    /// signature against the upstream's keys, `iss`, expiry, an audience
    /// this connector accepts, and that the upstream issued it to a client
    /// this connector maps to `presenter` ([`ConnectorError::OtherClient`]).
    async fn verify_presented_access_token(
        &self,
        _token: &str,
        _presenter: &str,
    ) -> Result<Identity, ConnectorError> {
        Err(ConnectorError::Unsupported(
            "verifying presented access tokens",
        ))
    }

    /// Re-checks the user at the upstream with the refresh token kept from
    /// the login (as Dex's connectors do on refresh). `Ok` carries the user
    /// as the upstream sees them now, and a rotated refresh token if the
    /// upstream issued one; an error means the user may no longer sign in
    /// (`Refused`) or the upstream could not answer.
    async fn refresh(&self, _refresh_token: &str) -> Result<Identity, ConnectorError> {
        Err(ConnectorError::Unsupported("refreshing upstream sessions"))
    }
}
