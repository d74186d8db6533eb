//! Calls to upstream identity providers, counted and timed by connector:
//! a connector that talks to its IdP over the back channel (OIDC and its
//! presets: discovery, token, JWKS, userinfo, refresh) is wrapped in
//! [`Observed`] when its tenant is loaded. SAML and dev connectors are not:
//! a SAML response arrives through the browser, and the dev connector has no
//! upstream.
//!
//! An operation counts as an `error` when the upstream failed or could not be
//! reached ([`ConnectorError::is_upstream_fault`]); a refused callback or a
//! wrong token is the caller's fault, not the IdP's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use gatehouse_connectors::{Connector, ConnectorError, Identity, LoginMethod, RedirectLogin};

use crate::telemetry::metrics::metrics;

pub struct Observed(pub Arc<dyn Connector>);

impl Observed {
    /// Wraps `connector` when it makes back-channel calls.
    pub fn wrap(connector: Arc<dyn Connector>) -> Arc<dyn Connector> {
        match connector.kind() {
            "dev" | "saml" => connector,
            _ => Arc::new(Observed(connector)),
        }
    }

    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, ConnectorError> {
        let started = Instant::now();
        let result = call.await;
        let ok = match &result {
            Ok(_) => true,
            Err(e) => !e.is_upstream_fault(),
        };
        metrics().upstream_request(self.0.id(), ok, started.elapsed());
        result
    }
}

#[async_trait]
impl Connector for Observed {
    fn id(&self) -> &str {
        self.0.id()
    }
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn display_name(&self) -> &str {
        self.0.display_name()
    }
    fn login_method(&self) -> LoginMethod {
        self.0.login_method()
    }
    async fn password_login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Identity, ConnectorError> {
        self.timed(self.0.password_login(username, password)).await
    }
    async fn begin(&self, redirect_uri: &str) -> Result<RedirectLogin, ConnectorError> {
        self.timed(self.0.begin(redirect_uri)).await
    }
    async fn begin_with_hint(
        &self,
        redirect_uri: &str,
        login_hint: Option<&str>,
    ) -> Result<RedirectLogin, ConnectorError> {
        self.timed(self.0.begin_with_hint(redirect_uri, login_hint))
            .await
    }
    async fn complete(
        &self,
        redirect_uri: &str,
        kept: &serde_json::Value,
        params: &BTreeMap<String, String>,
    ) -> Result<Identity, ConnectorError> {
        self.timed(self.0.complete(redirect_uri, kept, params))
            .await
    }
    fn service_provider_metadata(
        &self,
        callback_url: &str,
    ) -> Option<Result<String, ConnectorError>> {
        self.0.service_provider_metadata(callback_url)
    }
    fn issuer(&self) -> Option<&str> {
        self.0.issuer()
    }
    fn issues(&self, iss: &str) -> bool {
        self.0.issues(iss)
    }
    async fn verify_presented_id_token(
        &self,
        token: &str,
        presenter: &str,
    ) -> Result<Identity, ConnectorError> {
        self.timed(self.0.verify_presented_id_token(token, presenter))
            .await
    }
    async fn verify_presented_access_token(
        &self,
        token: &str,
        presenter: &str,
    ) -> Result<Identity, ConnectorError> {
        self.timed(self.0.verify_presented_access_token(token, presenter))
            .await
    }
    async fn refresh(&self, refresh_token: &str) -> Result<Identity, ConnectorError> {
        self.timed(self.0.refresh(refresh_token)).await
    }
}
