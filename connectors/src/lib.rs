//! Upstream identity connectors for Gatehouse.
//!
//! A connector turns an upstream login (a password form for the development
//! connector; an OIDC code or SAML response for enterprise IdPs) into an
//! [`Identity`]. The broker maps that identity to its own stable subject.

pub mod dev;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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
}

/// How the user proves who they are to this connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginMethod {
    /// Gatehouse shows a username/password form and calls `password_login`.
    PasswordForm,
    /// The browser is sent to the upstream and comes back to a callback.
    Redirect,
}

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
}
