//! The generic OpenID Connect connector: the browser is sent to the upstream
//! provider (authorization code flow with PKCE S256, `state` and `nonce`) and
//! comes back to the broker's callback, which hands the query to
//! [`OidcConnector::complete`]. The code is exchanged at the token endpoint and
//! the ID token validated: signature with the provider's published keys,
//! `iss` exactly the configured issuer, `aud` containing our client id (and
//! `azp` naming us when there are several audiences), `exp`/`iat` within
//! [`MAX_CLOCK_SKEW_SECS`], and the `nonce` we sent.
//!
//! Provider metadata (discovery) and the key set are fetched on first use and
//! shared by every connector of the process that talks to the same issuer, so
//! tenant reloads do not cause fetches. An ID token signed with a key we do not
//! know triggers one key-set refetch, at most every [`JWKS_REFRESH_INTERVAL`].
//!
//! Settings (the connector's table in the configuration):
//! ```toml
//! [[tenants.connectors]]
//! id = "corp"
//! type = "oidc"
//! display_name = "Corporate login"
//! issuer = "https://idp.example.com"          # exactly as the provider writes it
//! client_id = "gatehouse"
//! client_secret_env = "GATEHOUSE_CORP_SECRET" # or client_secret = "..." (tests, dev)
//! scopes = ["openid", "email", "profile"]     # the default
//! claims = { subject = "sub", email = "email", name = "name", groups = "groups" }
//! userinfo = false                            # also ask the userinfo endpoint
//! timeout_secs = 10                           # longest wait for the provider per step
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{
    CoreClient, CoreErrorResponseType, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreResponseType,
};
use openidconnect::{
    AccessToken, AuthType, AuthenticationFlow, AuthorizationCode, ClaimsVerificationError,
    ClientId, ClientSecret, CsrfToken, DiscoveryError, HttpClientError, IssuerUrl, JsonWebKeySet,
    JsonWebTokenType, Nonce, NormalizedJsonWebTokenType, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    SignatureVerificationError, StandardErrorResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::trace;
use crate::{is_loopback, Connector, ConnectorError, Identity, LoginMethod, RedirectLogin};

/// How far the upstream's clock may be from ours for `exp` and `iat`.
pub const MAX_CLOCK_SKEW_SECS: i64 = 60;
/// Unknown key ids refetch the key set at most this often (per issuer).
pub const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Provider metadata and keys are refetched after this long.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// Longest upstream subject accepted (it is stored and indexed).
const MAX_SUBJECT_LEN: usize = 255;
/// Largest userinfo response read.
const MAX_USERINFO_BYTES: usize = 256 * 1024;

/// Signature algorithms accepted for ID tokens: asymmetric only. (HMAC with
/// the client secret is allowed by the spec but would let anyone holding the
/// secret mint identities; `none` is never accepted.)
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Which claims carry what, by claim name.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimNames {
    pub subject: String,
    pub email: String,
    pub name: String,
    pub groups: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            email: "email".into(),
            name: "name".into(),
            groups: "groups".into(),
        }
    }
}

/// A connector's settings table as its typed settings (every connector type
/// reads its table this way; errors name the offending key).
pub fn parse_settings<T: serde::de::DeserializeOwned>(
    settings: &Map<String, Value>,
) -> Result<T, ConnectorError> {
    serde_json::from_value(Value::Object(settings.clone()))
        .map_err(|e| ConnectorError::Config(e.to_string()))
}

/// How the client authenticates at the upstream token endpoint.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

/// The connector's settings as configured. Deliberately not `Debug`: it may
/// hold the client secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The provider's issuer identifier, compared exactly with discovery and
    /// with every ID token's `iss`.
    pub issuer: String,
    pub client_id: String,
    /// The secret itself: for tests and development only.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The environment variable holding the secret (production).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: ClaimNames,
    /// Also fetch the userinfo endpoint and merge its claims.
    #[serde(default)]
    pub userinfo: bool,
    /// Longest wait for the provider in one step (start or callback).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub token_endpoint_auth_method: TokenAuthMethod,
    /// Replaced by `upstream_clients`; a non-empty list is a configuration
    /// error that says so (it accepted ID tokens from any presenting client).
    #[serde(default)]
    pub accepted_audiences: Vec<String>,
    /// Which Gatehouse client may present the provider's tokens (token
    /// exchange and ID-JAG subjects): the provider's client id a token was
    /// issued to (an ID token's `aud`/`azp`, an access token's `client_id`
    /// or `azp`) → the Gatehouse client id. A token whose client is not
    /// mapped to the client presenting it is refused; empty: none is accepted.
    #[serde(default)]
    pub upstream_clients: BTreeMap<String, String>,
    /// Audiences of the provider's JWT access tokens that clients may
    /// present to Gatehouse as token-exchange subjects (typically the
    /// identifier of an API registered at the provider for Gatehouse).
    /// Empty: no upstream access token is accepted.
    #[serde(default)]
    pub access_token_audiences: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

fn default_timeout() -> u64 {
    10
}

/// What `begin` keeps for `complete` (stored server side by the broker).
#[derive(Serialize, Deserialize)]
struct Kept {
    state: String,
    nonce: String,
    pkce_verifier: String,
}

/// Behaviour a provider preset (Entra ID, Cognito, Auth0) layers over the
/// generic connector: its own checks on the validated claims and its mapping.
pub trait Preset: Send + Sync {
    /// The connector type reported to the broker ("entra", ...).
    fn kind(&self) -> &'static str;
    /// True when the preset checks `iss` itself in [`Preset::apply`] (the
    /// issuer is not one fixed string, as for multi-tenant Entra ID); the
    /// generic exact `iss` check is then skipped.
    fn checks_issuer(&self) -> bool {
        false
    }
    /// Whether `iss` is an issuer of this provider, `configured` being the
    /// connector's (routing of presented tokens).
    fn issues(&self, configured: &str, iss: &str) -> bool {
        configured == iss
    }
    /// Called after the ID token was validated and mapped: further checks
    /// (refusing the sign-in) and further mapping.
    fn apply(
        &self,
        claims: &Map<String, Value>,
        identity: &mut Identity,
    ) -> Result<(), ConnectorError>;
}

/// Where a preset's provider metadata comes from, when it is not simply
/// `{issuer}/.well-known/openid-configuration` naming `issuer`.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    /// The URL the discovery document lives under (its
    /// `/.well-known/openid-configuration` is appended).
    pub base: Option<String>,
    /// The issuer the discovery document must name (for example the
    /// `{tenantid}` template of multi-tenant Entra ID).
    pub expected_issuer: Option<String>,
}

pub struct OidcConnector {
    preset: Option<Arc<dyn Preset>>,
    id: String,
    display_name: String,
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: ClientSecret,
    auth_type: AuthType,
    scopes: Vec<String>,
    claims: ClaimNames,
    userinfo: bool,
    timeout: Duration,
    upstream: Arc<Upstream>,
    upstream_clients: BTreeMap<String, String>,
    access_token_audiences: Vec<String>,
}

impl std::fmt::Debug for OidcConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConnector")
            .field("id", &self.id)
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id.as_str())
            .finish_non_exhaustive()
    }
}

impl OidcConnector {
    /// Builds the connector from its settings table. Errors name the setting.
    /// No network access happens here: discovery runs at first use.
    pub fn from_settings(
        id: &str,
        display_name: Option<&str>,
        settings: &Map<String, Value>,
    ) -> Result<Self, ConnectorError> {
        Self::new(id, display_name, parse_settings(settings)?, |name| {
            std::env::var(name).ok()
        })
    }

    /// Builds a preset connector: `s.issuer` is the issuer ID tokens carry
    /// (or, when the preset checks `iss` itself, the issuer as the provider
    /// documents it); `discovery` says where metadata comes from.
    pub fn with_preset(
        id: &str,
        display_name: Option<&str>,
        s: OidcSettings,
        env: impl Fn(&str) -> Option<String>,
        discovery: Discovery,
        preset: Arc<dyn Preset>,
    ) -> Result<Self, ConnectorError> {
        let issuer_text = s.issuer.clone();
        let base = discovery.base.clone();
        let mut c = Self::new(id, display_name, s, env)?;
        if base.is_some() || discovery.expected_issuer.is_some() {
            let base = base.unwrap_or(issuer_text.clone());
            let base = IssuerUrl::new(base.clone()).map_err(|e| {
                ConnectorError::Config(format!("discovery URL '{base}' is not a URL ({e})"))
            })?;
            let expected = discovery.expected_issuer.unwrap_or(issuer_text);
            c.upstream = Upstream::shared_with(&base, Some(expected), c.timeout)?;
        }
        c.preset = Some(preset);
        Ok(c)
    }

    fn preset_checks_issuer(&self) -> bool {
        self.preset.as_ref().is_some_and(|p| p.checks_issuer())
    }

    /// The generic mapping, then the preset's.
    fn mapped(&self, claims: &Map<String, Value>) -> Result<Identity, ConnectorError> {
        let mut identity = self.identity(claims)?;
        if let Some(preset) = &self.preset {
            preset.apply(claims, &mut identity)?;
        }
        Ok(identity)
    }

    /// Like [`OidcConnector::from_settings`], with the environment lookup
    /// given (tests).
    pub fn new(
        id: &str,
        display_name: Option<&str>,
        s: OidcSettings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConnectorError> {
        let config = |m: String| ConnectorError::Config(m);
        let issuer_url = url::Url::parse(&s.issuer)
            .map_err(|e| config(format!("issuer: '{}' is not a URL ({e})", s.issuer)))?;
        match issuer_url.scheme() {
            "https" => {}
            "http" if is_loopback(&issuer_url) => {}
            _ => {
                return Err(config(format!(
                "issuer: '{}' must be an https URL (http only for 127.0.0.1, [::1] or localhost)",
                s.issuer
            )))
            }
        }
        if issuer_url.query().is_some() || issuer_url.fragment().is_some() {
            return Err(config(format!(
                "issuer: '{}' must not have a query or fragment",
                s.issuer
            )));
        }
        let issuer = IssuerUrl::new(s.issuer.clone())
            .map_err(|e| config(format!("issuer: '{}' is not a URL ({e})", s.issuer)))?;
        if s.client_id.trim().is_empty() {
            return Err(config("client_id: must not be empty".into()));
        }
        let secret = match (&s.client_secret, &s.client_secret_env) {
            (Some(_), Some(_)) => {
                return Err(config(
                    "client_secret and client_secret_env: set only one of them".into(),
                ))
            }
            (Some(secret), None) => secret.clone(),
            (None, Some(var)) => env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                config(format!(
                    "client_secret_env: environment variable '{var}' is not set or empty"
                ))
            })?,
            (None, None) => {
                return Err(config(
                    "client_secret_env (or client_secret for development) is required".into(),
                ))
            }
        };
        if secret.is_empty() {
            return Err(config("client_secret: must not be empty".into()));
        }
        if !s.scopes.iter().any(|sc| sc == "openid") {
            return Err(config("scopes: must include \"openid\"".into()));
        }
        if let Some(bad) = s
            .scopes
            .iter()
            .find(|sc| sc.is_empty() || !sc.bytes().all(|b| b > 0x20 && b != b'"' && b != b'\\'))
        {
            return Err(config(format!("scopes: '{bad}' is not a valid scope")));
        }
        for (key, value) in [
            ("subject", &s.claims.subject),
            ("email", &s.claims.email),
            ("name", &s.claims.name),
            ("groups", &s.claims.groups),
        ] {
            if value.is_empty() {
                return Err(config(format!("claims.{key}: must not be empty")));
            }
        }
        if !s.accepted_audiences.is_empty() {
            return Err(config(
                "accepted_audiences: replaced by upstream_clients = { \"<the provider's client id>\" = \"<the Gatehouse client id that may present its tokens>\" }, which binds each audience to the one client allowed to present it".into(),
            ));
        }
        for (upstream, local) in &s.upstream_clients {
            if upstream.trim().is_empty() || local.trim().is_empty() {
                return Err(config(
                    "upstream_clients: client ids must not be empty".into(),
                ));
            }
        }
        if s.access_token_audiences.contains(&s.client_id) {
            // The connector's own ID tokens have that audience: they must
            // never pass as access tokens.
            return Err(config(
                "access_token_audiences: must not contain client_id (that is the audience of ID tokens)".into(),
            ));
        }
        if !(1..=120).contains(&s.timeout_secs) {
            return Err(config(format!(
                "timeout_secs: must be between 1 and 120 (got {})",
                s.timeout_secs
            )));
        }
        let timeout = Duration::from_secs(s.timeout_secs);
        let upstream = Upstream::shared(&issuer, timeout)?;
        Ok(Self {
            preset: None,
            id: id.to_string(),
            display_name: display_name.unwrap_or("Single sign-on").to_string(),
            issuer,
            client_id: ClientId::new(s.client_id),
            client_secret: ClientSecret::new(secret),
            auth_type: match s.token_endpoint_auth_method {
                TokenAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
                TokenAuthMethod::ClientSecretPost => AuthType::RequestBody,
            },
            scopes: s.scopes,
            claims: s.claims,
            userinfo: s.userinfo,
            timeout,
            upstream,
            upstream_clients: s.upstream_clients,
            access_token_audiences: s.access_token_audiences,
        })
    }

    /// Runs one step against the provider within the configured time.
    async fn bounded<T>(
        &self,
        step: impl Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, ConnectorError> {
        match tokio::time::timeout(self.timeout, step).await {
            Ok(result) => result,
            Err(_) => Err(ConnectorError::Unreachable(format!(
                "no answer within {} seconds",
                self.timeout.as_secs()
            ))),
        }
    }

    fn redirect_url(redirect_uri: &str) -> Result<RedirectUrl, ConnectorError> {
        RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| ConnectorError::Config(format!("callback URL '{redirect_uri}': {e}")))
    }

    async fn start(
        &self,
        redirect_uri: &str,
        login_hint: Option<&str>,
    ) -> Result<RedirectLogin, ConnectorError> {
        let provider = self.upstream.discovered(&self.id).await?;
        let client = CoreClient::from_provider_metadata(
            provider.metadata.clone(),
            self.client_id.clone(),
            Some(self.client_secret.clone()),
        )
        .set_redirect_uri(Self::redirect_url(redirect_uri)?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                || CsrfToken::new_random_len(32),
                || Nonce::new_random_len(32),
            )
            .set_pkce_challenge(challenge);
        // `openid` is always sent first by the library.
        for scope in self.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        // OIDC Core §3.1.2.1: a hint only; the provider still authenticates.
        if let Some(hint) = login_hint
            .map(str::trim)
            .filter(|h| !h.is_empty() && h.len() <= 254)
        {
            request = request.add_extra_param("login_hint", hint.to_string());
        }
        let (url, state, nonce) = request.url();
        let kept = Kept {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        };
        let kept = serde_json::to_value(kept)
            .map_err(|e| ConnectorError::Upstream(format!("could not keep sign-in state: {e}")))?;
        Ok(RedirectLogin {
            authorize_url: url.to_string(),
            kept,
        })
    }

    /// Checks the callback's query against what was kept; returns the code.
    fn check_callback<'p>(
        &self,
        kept: &Kept,
        params: &'p BTreeMap<String, String>,
    ) -> Result<&'p str, ConnectorError> {
        let presented = params.get("state").map(String::as_str).unwrap_or("");
        if !bool::from(presented.as_bytes().ct_eq(kept.state.as_bytes())) {
            return Err(ConnectorError::InvalidCallback(
                "it does not belong to this sign-in (the state parameter does not match); start again from the application".into(),
            ));
        }
        // RFC 9207: when the provider says who it is, it must be ours.
        if let Some(iss) = params.get("iss") {
            if iss.as_str() != self.issuer.as_str() && !self.preset_checks_issuer() {
                return Err(ConnectorError::InvalidCallback(
                    "it comes from a different identity provider (iss does not match)".into(),
                ));
            }
        }
        if let Some(error) = params.get("error") {
            return Err(ConnectorError::Refused(describe_oauth_error(
                error,
                params.get("error_description").map(String::as_str),
            )));
        }
        match params.get("code").map(String::as_str) {
            Some(code) if !code.is_empty() => Ok(code),
            _ => Err(ConnectorError::InvalidCallback(
                "it carries no authorization code".into(),
            )),
        }
    }

    async fn finish(
        &self,
        redirect_uri: &str,
        kept: &Kept,
        code: &str,
    ) -> Result<Identity, ConnectorError> {
        let provider = self.upstream.discovered(&self.id).await?;
        let client = CoreClient::from_provider_metadata(
            provider.metadata.clone(),
            self.client_id.clone(),
            Some(self.client_secret.clone()),
        )
        .set_auth_type(self.auth_type.clone())
        .set_redirect_uri(Self::redirect_url(redirect_uri)?);
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|_| {
                ConnectorError::Upstream("the provider publishes no token endpoint".into())
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(kept.pkce_verifier.clone()));
        let http = trace::Traced(&self.upstream.http);
        let token = trace::traced(
            trace::span("upstream.token", &self.id),
            request.request_async(&http),
        )
        .await
        .map_err(|e| token_error(e, self.timeout))?;
        let id_token = token.id_token().ok_or_else(|| {
            ConnectorError::InvalidToken("the token response carries no ID token".into())
        })?;
        let nonce = Nonce::new(kept.nonce.clone());
        let mut claims = self.verify_id_token(provider, id_token, &nonce).await?;
        if self.userinfo {
            let provider = self.upstream.discovered(&self.id).await?;
            let info = self
                .fetch_userinfo(&provider.metadata, token.access_token())
                .await?;
            if info.get("sub") != claims.get("sub") {
                return Err(ConnectorError::Upstream(
                    "the userinfo endpoint describes a different user than the ID token".into(),
                ));
            }
            for (k, v) in info {
                if !matches!(
                    k.as_str(),
                    "iss" | "aud" | "sub" | "exp" | "iat" | "nbf" | "nonce" | "azp"
                ) {
                    claims.insert(k, v);
                }
            }
        }
        let mut identity = self.mapped(&claims)?;
        identity.session.refresh_token = token.refresh_token().map(|rt| rt.secret().clone());
        Ok(identity)
    }

    /// Uses the refresh token kept from a login: the provider either still
    /// accepts the user's session (and may say who they are now, in a new ID
    /// token) or refuses it with `invalid_grant` (user disabled, removed,
    /// signed out, consent revoked).
    async fn refresh_upstream(&self, refresh_token: &str) -> Result<Identity, ConnectorError> {
        let provider = self.upstream.discovered(&self.id).await?;
        let client = CoreClient::from_provider_metadata(
            provider.metadata.clone(),
            self.client_id.clone(),
            Some(self.client_secret.clone()),
        )
        .set_auth_type(self.auth_type.clone());
        let refresh_token = RefreshToken::new(refresh_token.to_string());
        let request = client.exchange_refresh_token(&refresh_token).map_err(|_| {
            ConnectorError::Upstream("the provider publishes no token endpoint".into())
        })?;
        let http = trace::Traced(&self.upstream.http);
        let token = trace::traced(
            trace::span("upstream.refresh", &self.id),
            request.request_async(&http),
        )
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(r)
                if *r.error() == CoreErrorResponseType::InvalidGrant =>
            {
                ConnectorError::Refused(describe_oauth_error(
                    r.error().as_ref(),
                    r.error_description().map(String::as_str),
                ))
            }
            RequestTokenError::ServerResponse(r) => ConnectorError::Upstream(format!(
                "the token endpoint refused the refresh: {}",
                describe_oauth_error(
                    r.error().as_ref(),
                    r.error_description().map(String::as_str)
                )
            )),
            other => token_error(other, self.timeout),
        })?;
        let mut identity = match token.id_token() {
            // OIDC Core §12.2: a refreshed ID token names the same user; no nonce.
            Some(id_token) => {
                self.with_key_refresh(&provider, |metadata| {
                    let verifier = self.base_verifier(metadata);
                    id_token
                        .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                        .map(|_| ())
                })
                .await?;
                self.mapped(&raw_claims(&id_token.to_string())?)?
            }
            // Only "still allowed": the broker keeps the claims it has.
            None => Identity {
                connector_id: self.id.clone(),
                ..Identity::default()
            },
        };
        identity.session.refresh_token = token.refresh_token().map(|rt| rt.secret().clone());
        Ok(identity)
    }

    /// Validates the ID token; returns all its claims. An unknown signing key
    /// refetches the key set (rate-limited) and tries once more.
    async fn verify_id_token(
        &self,
        provider: Arc<Discovered>,
        token: &CoreIdToken,
        nonce: &Nonce,
    ) -> Result<Map<String, Value>, ConnectorError> {
        self.with_key_refresh(&provider, |metadata| {
            self.check_id_token(metadata, token, nonce)
        })
        .await?;
        raw_claims(&token.to_string())
    }

    /// What every ID-token check shares: the provider's keys, asymmetric
    /// algorithms only, the issuer (unless a preset checks it), and `exp`/`iat`
    /// within the allowed skew.
    fn base_verifier(&self, metadata: &CoreProviderMetadata) -> CoreIdTokenVerifier<'static> {
        let skew = chrono::Duration::seconds(MAX_CLOCK_SKEW_SECS);
        CoreIdTokenVerifier::new_public_client(
            self.client_id.clone(),
            self.issuer.clone(),
            metadata.jwks().clone(),
        )
        .set_allowed_algs(ALLOWED_ALGS)
        .require_issuer_match(!self.preset_checks_issuer())
        // Expired means `exp` more than the allowed skew in the past.
        .set_time_fn(move || chrono::Utc::now() - skew)
        .set_issue_time_verifier_fn(move |iat| {
            if iat > chrono::Utc::now() + skew {
                Err("it was issued in the future (check the clocks)".into())
            } else {
                Ok(())
            }
        })
    }

    /// Runs `check`; if the token is signed with a key the cached set lacks,
    /// refetches the provider's keys (rate-limited) and runs it once more.
    async fn with_key_refresh(
        &self,
        provider: &Arc<Discovered>,
        check: impl Fn(&CoreProviderMetadata) -> Result<(), ClaimsVerificationError>,
    ) -> Result<(), ConnectorError> {
        match check(&provider.metadata) {
            Ok(()) => Ok(()),
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => match self.upstream.refresh_jwks(provider, &self.id).await? {
                Some(fresh) => check(&fresh.metadata).map_err(id_token_error),
                None => Err(ConnectorError::InvalidToken(
                    "it is signed with a key the provider does not publish".into(),
                )),
            },
            Err(e) => Err(id_token_error(e)),
        }
    }

    fn check_id_token(
        &self,
        metadata: &CoreProviderMetadata,
        token: &CoreIdToken,
        nonce: &Nonce,
    ) -> Result<(), ClaimsVerificationError> {
        // Other audiences are allowed only when `azp` names us (below).
        let verifier = self
            .base_verifier(metadata)
            .set_other_audience_verifier_fn(|_| true);
        let claims = token.claims(&verifier, nonce)?;
        let several = claims.audiences().len() > 1;
        match claims.authorized_party() {
            Some(azp) if azp.as_str() != self.client_id.as_str() => {
                Err(ClaimsVerificationError::InvalidAudience(
                    "its authorized party (azp) is another client".into(),
                ))
            }
            None if several => Err(ClaimsVerificationError::InvalidAudience(
                "it has several audiences and no authorized party (azp)".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Checks an ID token a client presents (not one from our own login):
    /// signature, issuer and times; no nonce to compare. Who it was issued
    /// to is checked by [`OidcConnector::check_presenter_of_id_token`].
    fn check_presented_id_token(
        &self,
        metadata: &CoreProviderMetadata,
        token: &CoreIdToken,
    ) -> Result<(), ClaimsVerificationError> {
        // The audience is checked against the presenting client afterwards.
        let verifier = self.base_verifier(metadata).require_audience_match(false);
        token.claims(&verifier, |_: Option<&Nonce>| Ok(()))?;
        Ok(())
    }

    /// The Gatehouse client `upstream_clients` maps the provider's client
    /// `upstream` to, if any.
    fn maps_to(&self, upstream: &str, presenter: &str) -> bool {
        self.upstream_clients
            .get(upstream)
            .is_some_and(|local| local == presenter)
    }

    /// ID-JAG draft, IdP processing rules: the subject ID token's audience
    /// must be the client presenting it. Here: its `aud` names a provider
    /// client mapped to `presenter`; with several audiences `azp` is
    /// required; and `azp`, when present, is mapped to `presenter` too.
    fn check_presenter_of_id_token(
        &self,
        claims: &Map<String, Value>,
        presenter: &str,
    ) -> Result<(), ConnectorError> {
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let azp = claims.get("azp");
        if audiences.len() > 1 && azp.is_none() {
            return Err(ConnectorError::OtherClient(
                "it has several audiences and no authorized party (azp)".into(),
            ));
        }
        if let Some(azp) = azp {
            if !azp.as_str().is_some_and(|a| self.maps_to(a, presenter)) {
                return Err(ConnectorError::OtherClient(
                    "its authorized party (azp) is not mapped to this client in the connector's upstream_clients".into(),
                ));
            }
        }
        if !audiences.iter().any(|a| self.maps_to(a, presenter)) {
            return Err(ConnectorError::OtherClient(
                "its audience is not mapped to this client in the connector's upstream_clients"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The provider client an access token was issued to (RFC 9068
    /// `client_id`, or `azp`, Entra v1 `appid`, Okta `cid`) must be mapped
    /// to `presenter`. Where several are present they must agree.
    fn check_presenter_of_access_token(
        &self,
        claims: &Map<String, Value>,
        presenter: &str,
    ) -> Result<(), ConnectorError> {
        let named: Vec<Option<&str>> = ["client_id", "azp", "appid", "cid"]
            .iter()
            .filter_map(|k| claims.get(*k))
            .map(Value::as_str)
            .collect();
        let first = match named.first() {
            Some(Some(first)) => *first,
            _ => {
                return Err(ConnectorError::OtherClient(
                    "it does not say which client it was issued to (client_id or azp)".into(),
                ))
            }
        };
        if named.iter().any(|n| *n != Some(first)) {
            return Err(ConnectorError::OtherClient(
                "its client_id and azp disagree".into(),
            ));
        }
        if !self.maps_to(first, presenter) {
            return Err(ConnectorError::OtherClient(
                "the client it was issued to is not mapped to this client in the connector's upstream_clients".into(),
            ));
        }
        Ok(())
    }

    /// Checks a JWT access token a client presents: the provider's keys and
    /// issuer, `exp`/`iat`, a JOSE type of an access token (`at+jwt`, RFC
    /// 9068) or a plain JWT (Entra, Auth0), and an audience listed in
    /// `access_token_audiences`. ID tokens are refused here: their `typ`
    /// may be the same, so an ID token is told apart by its audience (the
    /// connector's client) not being an access-token audience.
    fn check_presented_access_token(
        &self,
        metadata: &CoreProviderMetadata,
        token: &CoreIdToken,
    ) -> Result<(), ClaimsVerificationError> {
        let verifier = self
            .base_verifier(metadata)
            .require_audience_match(false)
            .set_allowed_jose_types(access_token_jose_types());
        let claims = token.claims(&verifier, |_: Option<&Nonce>| Ok(()))?;
        let accepted = |aud: &str| self.access_token_audiences.iter().any(|a| a == aud);
        if claims.audiences().iter().any(|a| accepted(a.as_str())) {
            Ok(())
        } else {
            Err(ClaimsVerificationError::InvalidAudience(
                "its audience is not one of this connector's access_token_audiences".into(),
            ))
        }
    }

    async fn fetch_userinfo(
        &self,
        metadata: &CoreProviderMetadata,
        access_token: &AccessToken,
    ) -> Result<Map<String, Value>, ConnectorError> {
        let endpoint = metadata.userinfo_endpoint().ok_or_else(|| {
            ConnectorError::Config(
                "userinfo = true, but the provider publishes no userinfo endpoint".into(),
            )
        })?;
        trace::traced(
            trace::span("upstream.userinfo", &self.id),
            self.userinfo_from(endpoint.url().as_str(), access_token),
        )
        .await
    }

    async fn userinfo_from(
        &self,
        endpoint: &str,
        access_token: &AccessToken,
    ) -> Result<Map<String, Value>, ConnectorError> {
        let res = self
            .upstream
            .http
            .get(endpoint)
            .headers(trace::headers())
            .bearer_auth(access_token.secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unreachable(&e, self.timeout))?;
        trace::record_status(res.status().as_u16());
        let status = res.status();
        if !status.is_success() {
            return Err(ConnectorError::Upstream(format!(
                "the userinfo endpoint answered HTTP {}",
                status.as_u16()
            )));
        }
        let content_type = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("application/jwt") {
            return Err(ConnectorError::Upstream(
                "signed userinfo responses are not supported; configure the provider to answer JSON".into(),
            ));
        }
        if res.content_length().unwrap_or(0) > MAX_USERINFO_BYTES as u64 {
            return Err(ConnectorError::Upstream(
                "the userinfo response is too large".into(),
            ));
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| unreachable(&e, self.timeout))?;
        if body.len() > MAX_USERINFO_BYTES {
            return Err(ConnectorError::Upstream(
                "the userinfo response is too large".into(),
            ));
        }
        serde_json::from_slice::<Map<String, Value>>(&body).map_err(|_| {
            ConnectorError::Upstream("the userinfo response is not a JSON object".into())
        })
    }

    /// Maps the claims to an identity with the configured claim names.
    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, ConnectorError> {
        let names = &self.claims;
        let subject = claim_string(claims, &names.subject)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ConnectorError::InvalidToken(format!(
                    "the '{}' claim that identifies the user is missing",
                    names.subject
                ))
            })?;
        if subject.len() > MAX_SUBJECT_LEN {
            return Err(ConnectorError::InvalidToken(format!(
                "the '{}' claim is longer than {MAX_SUBJECT_LEN} characters",
                names.subject
            )));
        }
        let email = claim_string(claims, &names.email).filter(|s| !s.is_empty());
        // `email_verified` speaks about the standard `email` claim only.
        let verified = match claims.get("email_verified") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
        let email_verified = verified && email.is_some() && names.email == "email";
        let name = claim_string(claims, &names.name).filter(|s| !s.is_empty());
        let groups = match claims.get(&names.groups) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(one)) if !one.is_empty() => vec![one.clone()],
            _ => Vec::new(),
        };
        Ok(Identity {
            connector_id: self.id.clone(),
            upstream_subject: subject,
            email,
            email_verified,
            name,
            groups,
            claims: BTreeMap::new(),
            session: Default::default(),
        })
    }
}

#[async_trait]
impl Connector for OidcConnector {
    fn issuer(&self) -> Option<&str> {
        Some(self.issuer.as_str())
    }

    fn issues(&self, iss: &str) -> bool {
        match &self.preset {
            Some(preset) => preset.issues(self.issuer.as_str(), iss),
            None => self.issuer.as_str() == iss,
        }
    }

    async fn verify_presented_id_token(
        &self,
        token: &str,
        presenter: &str,
    ) -> Result<Identity, ConnectorError> {
        let provider = self.upstream.discovered(&self.id).await?;
        let id_token: CoreIdToken = token
            .parse()
            .map_err(|_| ConnectorError::InvalidToken("it is not a JWT".into()))?;
        self.with_key_refresh(&provider, |metadata| {
            self.check_presented_id_token(metadata, &id_token)
        })
        .await?;
        let claims = raw_claims(token)?;
        self.check_presenter_of_id_token(&claims, presenter)?;
        self.mapped(&claims)
    }

    async fn verify_presented_access_token(
        &self,
        token: &str,
        presenter: &str,
    ) -> Result<Identity, ConnectorError> {
        if self.access_token_audiences.is_empty() {
            return Err(ConnectorError::InvalidToken(
                "this connector accepts no access tokens of its provider (access_token_audiences is empty)".into(),
            ));
        }
        let provider = self.upstream.discovered(&self.id).await?;
        let access_token: CoreIdToken = token.parse().map_err(|_| {
            ConnectorError::InvalidToken(
                "it is not a JWT the connector can read (sub, aud, exp, iat are required)".into(),
            )
        })?;
        self.with_key_refresh(&provider, |metadata| {
            self.check_presented_access_token(metadata, &access_token)
        })
        .await?;
        let claims = raw_claims(token)?;
        self.check_presenter_of_access_token(&claims, presenter)?;
        self.mapped(&claims)
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        self.preset.as_ref().map_or("oidc", |p| p.kind())
    }

    fn display_name(&self) -> &str {
        &self.display_name
    }

    fn login_method(&self) -> LoginMethod {
        LoginMethod::Redirect
    }

    async fn begin(&self, redirect_uri: &str) -> Result<RedirectLogin, ConnectorError> {
        self.bounded(self.start(redirect_uri, None)).await
    }

    async fn begin_with_hint(
        &self,
        redirect_uri: &str,
        login_hint: Option<&str>,
    ) -> Result<RedirectLogin, ConnectorError> {
        self.bounded(self.start(redirect_uri, login_hint)).await
    }

    async fn complete(
        &self,
        redirect_uri: &str,
        kept: &Value,
        params: &BTreeMap<String, String>,
    ) -> Result<Identity, ConnectorError> {
        let kept: Kept = serde_json::from_value(kept.clone()).map_err(|_| {
            ConnectorError::InvalidCallback("this sign-in was not started here".into())
        })?;
        let code = self.check_callback(&kept, params)?;
        self.bounded(self.finish(redirect_uri, &kept, code)).await
    }

    async fn refresh(&self, refresh_token: &str) -> Result<Identity, ConnectorError> {
        self.bounded(self.refresh_upstream(refresh_token)).await
    }
}

fn claim_string(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The payload of a compact JWS whose signature was already verified.
/// JOSE `typ` values of upstream access tokens: RFC 9068's `at+jwt`, and
/// the plain JWT (or none) that Entra ID and Auth0 use by default.
fn access_token_jose_types() -> Vec<NormalizedJsonWebTokenType> {
    ["application/at+jwt", "application/jwt"]
        .into_iter()
        .filter_map(|t| JsonWebTokenType::new(t.to_string()).normalize().ok())
        .collect()
}

fn raw_claims(compact: &str) -> Result<Map<String, Value>, ConnectorError> {
    let unreadable = || ConnectorError::InvalidToken("its claims could not be read".into());
    let payload = compact.split('.').nth(1).ok_or_else(unreadable)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| unreadable())?;
    serde_json::from_slice(&bytes).map_err(|_| unreadable())
}

/// Upstream error codes and descriptions are shown on our page: keep them to
/// the characters RFC 6749 allows, and short.
fn clean(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| matches!(*c, ' '..='~') && *c != '"' && *c != '\\')
        .take(max)
        .collect()
}

fn describe_oauth_error(error: &str, description: Option<&str>) -> String {
    let error = clean(error, 64);
    let plain = match error.as_str() {
        "access_denied" => "the sign-in was cancelled or not allowed",
        "login_required" | "interaction_required" | "consent_required" => {
            "the provider needs the user to sign in or consent again"
        }
        "invalid_client" | "unauthorized_client" => {
            "the provider does not accept Gatehouse's client id or secret"
        }
        "invalid_grant" => "the authorization code was not accepted (expired or already used)",
        "invalid_scope" => "the provider does not allow the requested scopes",
        "temporarily_unavailable" | "server_error" => "the provider had a problem",
        _ => "the provider returned an error",
    };
    match description.map(|d| clean(d, 200)).filter(|d| !d.is_empty()) {
        Some(d) => format!("{plain} ({error}: {d})"),
        None => format!("{plain} ({error})"),
    }
}

fn unreachable(e: &reqwest::Error, timeout: Duration) -> ConnectorError {
    let host = e
        .url()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "the provider".into());
    let what = if e.is_timeout() {
        format!("{host} did not answer within {} seconds", timeout.as_secs())
    } else if e.is_connect() {
        format!("the connection to {host} failed")
    } else if e.is_redirect() {
        format!("{host} answered with a redirect, which is not followed")
    } else {
        format!("the request to {host} failed")
    };
    ConnectorError::Unreachable(what)
}

fn http_client_error(e: &HttpClientError<reqwest::Error>, timeout: Duration) -> ConnectorError {
    match e {
        HttpClientError::Reqwest(inner) => unreachable(inner, timeout),
        HttpClientError::Io(_) => ConnectorError::Unreachable("a network error occurred".into()),
        HttpClientError::Http(_) | HttpClientError::Other(_) => {
            ConnectorError::Upstream("the request could not be made".into())
        }
        _ => ConnectorError::Upstream("the request could not be made".into()),
    }
}

fn discovery_error(
    e: DiscoveryError<HttpClientError<reqwest::Error>>,
    what: &str,
    timeout: Duration,
) -> ConnectorError {
    match e {
        DiscoveryError::Request(inner) => http_client_error(&inner, timeout),
        DiscoveryError::Response(status, _, _) => {
            ConnectorError::Upstream(format!("its {what} answered HTTP {}", status.as_u16()))
        }
        DiscoveryError::Parse(_) => ConnectorError::Upstream(format!(
            "its {what} is not valid JSON of the expected shape"
        )),
        DiscoveryError::Validation(m) => {
            ConnectorError::Upstream(format!("its {what} is not valid: {}", clean(&m, 300)))
        }
        DiscoveryError::UrlParse(_) => ConnectorError::Config("the issuer is not a URL".into()),
        DiscoveryError::Other(m) => ConnectorError::Upstream(clean(&m, 200)),
        _ => ConnectorError::Upstream(format!("its {what} could not be fetched")),
    }
}

fn token_error(
    e: RequestTokenError<
        HttpClientError<reqwest::Error>,
        StandardErrorResponse<CoreErrorResponseType>,
    >,
    timeout: Duration,
) -> ConnectorError {
    match e {
        RequestTokenError::ServerResponse(r) => ConnectorError::Refused(describe_oauth_error(
            r.error().as_ref(),
            r.error_description().map(String::as_str),
        )),
        RequestTokenError::Request(inner) => http_client_error(&inner, timeout),
        // The body may hold tokens: never echo it.
        RequestTokenError::Parse(_, _) => ConnectorError::Upstream(
            "the token endpoint's answer could not be read (or its ID token is malformed)".into(),
        ),
        RequestTokenError::Other(m) => {
            ConnectorError::Upstream(format!("the token endpoint failed: {}", clean(&m, 200)))
        }
    }
}

fn id_token_error(e: ClaimsVerificationError) -> ConnectorError {
    let what = match e {
        ClaimsVerificationError::Expired(m) => {
            if m.contains("future") {
                m
            } else {
                "it has expired (check the clocks)".into()
            }
        }
        ClaimsVerificationError::InvalidAudience(m) => {
            if m.starts_with("it ") || m.starts_with("its ") {
                m
            } else {
                "it is meant for another client (aud does not contain our client_id)".into()
            }
        }
        ClaimsVerificationError::InvalidIssuer(_) => {
            "it was issued by someone else (iss does not match the configured issuer)".into()
        }
        ClaimsVerificationError::InvalidNonce(_) => {
            "it does not belong to this sign-in (nonce mismatch)".into()
        }
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        ) => "it is signed with a key the provider does not publish".into(),
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::DisallowedAlg(_)
            | SignatureVerificationError::UnsupportedAlg(_),
        ) => "it is signed with an algorithm that is not accepted".into(),
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoSignature) => {
            "it is not signed".into()
        }
        ClaimsVerificationError::SignatureVerification(_) => "its signature is not valid".into(),
        ClaimsVerificationError::Unsupported(_) => "it uses an unsupported format".into(),
        _ => "it failed validation".into(),
    };
    ConnectorError::InvalidToken(what)
}

/// Provider metadata with its key set, as fetched.
struct Discovered {
    metadata: CoreProviderMetadata,
    fetched_at: Instant,
}

/// What every connector of this process shares about one provider: the HTTP
/// client (no redirects, bounded time), metadata and keys.
struct Upstream {
    issuer: IssuerUrl,
    /// The issuer the discovery document must name, when not `issuer`.
    expected: Option<String>,
    http: reqwest::Client,
    timeout: Duration,
    current: RwLock<Option<Arc<Discovered>>>,
    /// Serialises fetches, so concurrent logins do not stampede the provider.
    fetching: tokio::sync::Mutex<()>,
    last_key_refresh: Mutex<Option<Instant>>,
}

type Registry = Mutex<HashMap<String, Arc<Upstream>>>;
static UPSTREAMS: LazyLock<Registry> = LazyLock::new(|| Mutex::new(HashMap::new()));

impl Upstream {
    fn shared(issuer: &IssuerUrl, timeout: Duration) -> Result<Arc<Upstream>, ConnectorError> {
        Self::shared_with(issuer, None, timeout)
    }

    fn shared_with(
        issuer: &IssuerUrl,
        expected: Option<String>,
        timeout: Duration,
    ) -> Result<Arc<Upstream>, ConnectorError> {
        let key = format!(
            "{}\n{}\n{}",
            issuer.as_str(),
            expected.as_deref().unwrap_or(""),
            timeout.as_secs()
        );
        let mut all = UPSTREAMS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = all.get(&key) {
            return Ok(found.clone());
        }
        let http = reqwest::Client::builder()
            // Never follow redirects: a provider (or whoever controls its
            // DNS) must not point our back-channel requests elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConnectorError::Config(format!("HTTP client: {e}")))?;
        let upstream = Arc::new(Upstream {
            issuer: issuer.clone(),
            expected,
            http,
            timeout,
            current: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
            last_key_refresh: Mutex::new(None),
        });
        all.insert(key, upstream.clone());
        Ok(upstream)
    }

    fn cached(&self) -> Option<Arc<Discovered>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn store(&self, d: Arc<Discovered>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(d);
    }

    /// Metadata and keys, fetched on first use and after [`DISCOVERY_TTL`].
    /// A failed refresh keeps serving what was fetched before.
    async fn discovered(&self, connector: &str) -> Result<Arc<Discovered>, ConnectorError> {
        if let Some(d) = self
            .cached()
            .filter(|d| d.fetched_at.elapsed() < DISCOVERY_TTL)
        {
            return Ok(d);
        }
        let _guard = self.fetching.lock().await;
        let stale = self.cached();
        if let Some(d) = stale
            .as_ref()
            .filter(|d| d.fetched_at.elapsed() < DISCOVERY_TTL)
        {
            return Ok(d.clone());
        }
        let fetch = async {
            match &self.expected {
                None => {
                    let http = trace::Traced(&self.http);
                    CoreProviderMetadata::discover_async(self.issuer.clone(), &http)
                        .await
                        .map_err(|e| {
                            discovery_error(e, "discovery document or key set", self.timeout)
                        })
                }
                Some(expected) => self.discover_expecting(expected).await,
            }
        };
        let fetched = trace::traced(trace::span("upstream.discovery", connector), fetch).await;
        match fetched {
            Ok(metadata) => {
                let d = Arc::new(Discovered {
                    metadata,
                    fetched_at: Instant::now(),
                });
                self.store(d.clone());
                Ok(d)
            }
            Err(e) => match stale {
                Some(d) => {
                    tracing::warn!(issuer = %self.issuer.as_str(), error = %e, "OIDC discovery refresh failed; using the previous metadata");
                    Ok(d)
                }
                None => Err(e),
            },
        }
    }

    /// Discovery whose document names `expected` rather than the URL it was
    /// fetched from (Entra ID's v1 issuer, its `{tenantid}` template).
    async fn discover_expecting(
        &self,
        expected: &str,
    ) -> Result<CoreProviderMetadata, ConnectorError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.as_str().trim_end_matches('/')
        );
        let res = self
            .http
            .get(&url)
            .headers(trace::headers())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unreachable(&e, self.timeout))?;
        trace::record_status(res.status().as_u16());
        let status = res.status();
        if !status.is_success() {
            return Err(ConnectorError::Upstream(format!(
                "its discovery document answered HTTP {}",
                status.as_u16()
            )));
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| unreachable(&e, self.timeout))?;
        let metadata: CoreProviderMetadata = serde_json::from_slice(&body).map_err(|_| {
            ConnectorError::Upstream(
                "its discovery document is not valid JSON of the expected shape".into(),
            )
        })?;
        let named = metadata
            .issuer()
            .as_str()
            .replace("%7B", "{")
            .replace("%7D", "}");
        if named != expected {
            return Err(ConnectorError::Upstream(format!(
                "its discovery document is not valid: it names the issuer '{}', expected '{}'",
                clean(&named, 200),
                clean(expected, 200)
            )));
        }
        let http = trace::Traced(&self.http);
        let jwks: CoreJsonWebKeySet = JsonWebKeySet::fetch_async(metadata.jwks_uri(), &http)
            .await
            .map_err(|e| discovery_error(e, "key set", self.timeout))?;
        Ok(metadata.set_jwks(jwks))
    }

    /// Refetches the key set after an unknown key id, at most once per
    /// [`JWKS_REFRESH_INTERVAL`]. `None` when it is too soon to ask again.
    async fn refresh_jwks(
        &self,
        seen: &Arc<Discovered>,
        connector: &str,
    ) -> Result<Option<Arc<Discovered>>, ConnectorError> {
        let _guard = self.fetching.lock().await;
        // Someone else may have refreshed while we waited.
        if let Some(current) = self.cached() {
            if !Arc::ptr_eq(&current, seen) {
                return Ok(Some(current));
            }
        }
        {
            let mut last = self
                .last_key_refresh
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < JWKS_REFRESH_INTERVAL) {
                return Ok(None);
            }
            *last = Some(Instant::now());
        }
        let http = trace::Traced(&self.http);
        let jwks: CoreJsonWebKeySet = trace::traced(
            trace::span("upstream.jwks", connector),
            JsonWebKeySet::fetch_async(seen.metadata.jwks_uri(), &http),
        )
        .await
        .map_err(|e| discovery_error(e, "key set", self.timeout))?;
        tracing::info!(issuer = %self.issuer.as_str(), "refetched the OIDC provider's key set after an unknown key id");
        let fresh = Arc::new(Discovered {
            metadata: seen.metadata.clone().set_jwks(jwks),
            fetched_at: seen.fetched_at,
        });
        self.store(fresh.clone());
        Ok(Some(fresh))
    }
}

#[cfg(test)]
mod tests {
    //! Validation against a mock provider served on loopback: discovery,
    //! keys, a token endpoint returning whatever ID token the test signed.

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    use serde_json::json;

    const CLIENT: &str = "gatehouse-test";
    const SECRET: &str = "upstream-secret-0123456789";
    const CALLBACK: &str = "http://127.0.0.1:9/callback/corp";

    struct Key {
        kid: String,
        encoding: EncodingKey,
        jwk: Value,
    }

    fn key(kid: &str) -> Key {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        let mut jwk = serde_json::to_value(secret.public_key().to_jwk()).unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!("ES256");
        Key {
            kid: kid.into(),
            encoding: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            jwk,
        }
    }

    fn sign(key: &Key, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    #[derive(Default)]
    struct Mock {
        issuer: String,
        /// What discovery says the issuer is (defaults to `issuer`).
        claimed_issuer: Mutex<Option<String>>,
        jwks: Mutex<Value>,
        id_token: Mutex<String>,
        token_error: Mutex<Option<(u16, Value)>>,
        userinfo: Mutex<Value>,
        jwks_hits: AtomicUsize,
        token_hits: AtomicUsize,
        /// (Authorization header, form body) of each token request.
        token_requests: Mutex<Vec<(String, String)>>,
    }

    type Shared = Arc<Mock>;

    async fn discovery(State(m): State<Shared>) -> Json<Value> {
        let iss = m
            .claimed_issuer
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(m.issuer.clone());
        let base = &m.issuer;
        Json(json!({
            "issuer": iss,
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"),
            "userinfo_endpoint": format!("{base}/userinfo"),
            "jwks_uri": format!("{base}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        }))
    }

    async fn jwks(State(m): State<Shared>) -> Json<Value> {
        m.jwks_hits.fetch_add(1, Ordering::SeqCst);
        Json(m.jwks.lock().unwrap().clone())
    }

    async fn token(State(m): State<Shared>, headers: HeaderMap, body: String) -> impl IntoResponse {
        m.token_hits.fetch_add(1, Ordering::SeqCst);
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        m.token_requests.lock().unwrap().push((auth, body));
        if let Some((status, body)) = m.token_error.lock().unwrap().clone() {
            return (StatusCode::from_u16(status).unwrap(), Json(body));
        }
        let id_token = m.id_token.lock().unwrap().clone();
        (
            StatusCode::OK,
            Json(json!({
                "access_token": "upstream-access-token",
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            })),
        )
    }

    async fn userinfo(State(m): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
        let ok = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "Bearer upstream-access-token");
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "invalid_token"})),
            );
        }
        (StatusCode::OK, Json(m.userinfo.lock().unwrap().clone()))
    }

    async fn mock(keys: &[&Key]) -> Shared {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let m = Arc::new(Mock {
            issuer: format!("http://127.0.0.1:{port}"),
            ..Default::default()
        });
        set_keys(&m, keys);
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(m.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        m
    }

    fn set_keys(m: &Mock, keys: &[&Key]) {
        *m.jwks.lock().unwrap() =
            json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    }

    fn settings(issuer: &str) -> OidcSettings {
        serde_json::from_value(json!({
            "issuer": issuer,
            "client_id": CLIENT,
            "client_secret": SECRET,
            "scopes": ["openid", "email", "profile", "groups"],
            "timeout_secs": 2,
        }))
        .unwrap()
    }

    fn connector(m: &Mock) -> OidcConnector {
        OidcConnector::new("corp", Some("Corp"), settings(&m.issuer), |_| None).unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    /// Standard valid claims for `nonce`.
    fn claims(m: &Mock, nonce: &str) -> Value {
        json!({
            "iss": m.issuer,
            "sub": "user-123",
            "aud": CLIENT,
            "exp": now() + 300,
            "iat": now(),
            "nonce": nonce,
            "email": "alice@corp.example",
            "email_verified": true,
            "name": "Alice",
            "groups": ["eng", "admins"],
        })
    }

    struct Started {
        kept: Value,
        state: String,
        nonce: String,
        url: url::Url,
    }

    async fn start(c: &OidcConnector) -> Started {
        let login = c.begin(CALLBACK).await.unwrap();
        let url = url::Url::parse(&login.authorize_url).unwrap();
        let q = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| panic!("no {name} in {url}"))
        };
        Started {
            state: q("state"),
            nonce: q("nonce"),
            kept: login.kept,
            url,
        }
    }

    fn callback(m: &Mock, state: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("code".to_string(), "the-code".to_string()),
            ("state".to_string(), state.to_string()),
            ("iss".to_string(), m.issuer.clone()),
        ])
    }

    /// A full round with the ID token `make` returns for the sent nonce.
    async fn login_with(
        m: &Mock,
        c: &OidcConnector,
        signer: &Key,
        make: impl FnOnce(Value) -> Value,
    ) -> Result<Identity, ConnectorError> {
        let s = start(c).await;
        *m.id_token.lock().unwrap() = sign(signer, &make(claims(m, &s.nonce)));
        c.complete(CALLBACK, &s.kept, &callback(m, &s.state)).await
    }

    fn rejected(r: Result<Identity, ConnectorError>, words: &str) {
        match r {
            Err(ConnectorError::InvalidToken(m)) => {
                assert!(m.contains(words), "'{m}' does not mention '{words}'")
            }
            other => panic!("expected an invalid ID token ({words}), got {other:?}"),
        }
    }

    #[tokio::test]
    async fn valid_login_maps_claims_and_uses_pkce_state_and_nonce() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = connector(&m);
        let s = start(&c).await;
        let q: BTreeMap<String, String> = s.url.query_pairs().into_owned().collect();
        assert!(s
            .url
            .as_str()
            .starts_with(&format!("{}/authorize?", m.issuer)));
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], CLIENT);
        assert_eq!(q["redirect_uri"], CALLBACK);
        assert_eq!(q["scope"], "openid email profile groups");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"].len(), 43);
        assert!(s.state.len() >= 43 && s.nonce.len() >= 43);
        // Nothing secret in the kept state leaks into the URL but the
        // challenge: the verifier stays here.
        let verifier = s.kept["pkce_verifier"].as_str().unwrap().to_string();
        assert!(!s.url.as_str().contains(&verifier));

        *m.id_token.lock().unwrap() = sign(&k, &claims(&m, &s.nonce));
        let id = c
            .complete(CALLBACK, &s.kept, &callback(&m, &s.state))
            .await
            .unwrap();
        assert_eq!(id.connector_id, "corp");
        assert_eq!(id.upstream_subject, "user-123");
        assert_eq!(id.email.as_deref(), Some("alice@corp.example"));
        assert!(id.email_verified);
        assert_eq!(id.name.as_deref(), Some("Alice"));
        assert_eq!(id.groups, vec!["eng", "admins"]);

        let requests = m.token_requests.lock().unwrap().clone();
        let (auth, body) = &requests[0];
        assert!(auth.starts_with("Basic "), "client_secret_basic: {auth}");
        let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(form["grant_type"], "authorization_code");
        assert_eq!(form["code"], "the-code");
        assert_eq!(form["code_verifier"], verifier);
        assert_eq!(form["redirect_uri"], CALLBACK);
    }

    #[tokio::test]
    async fn wrong_issuer_is_rejected() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = connector(&m);
        let r = login_with(&m, &c, &k, |mut v| {
            v["iss"] = json!(format!("{}/", m.issuer));
            v
        })
        .await;
        rejected(r, "iss");
    }

    #[tokio::test]
    async fn wrong_audience_is_rejected() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = connector(&m);
        let r = login_with(&m, &c, &k, |mut v| {
            v["aud"] = json!("someone-else");
            v
        })
        .await;
        rejected(r, "another client");
    }

    #[tokio::test]
    async fn several_audiences_need_azp_naming_us() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = connector(&m);
        let r = login_with(&m, &c, &k, |mut v| {
            v["aud"] = json!([CLIENT, "api"]);
            v
        })
        .await;
        rejected(r, "azp");
        let r = login_with(&m, &c, &k, |mut v| {
            v["aud"] = json!([CLIENT, "api"]);
            v["azp"] = json!("api");
            v
        })
        .await;
        rejected(r, "azp");
        let id = login_with(&m, &c, &k, |mut v| {
            v["aud"] = json!([CLIENT, "api"]);
            v["azp"] = json!(CLIENT);
            v
        })
        .await
        .unwrap();
        assert_eq!(id.upstream_subject, "user-123");
    }

    #[tokio::test]
    async fn wrong_nonce_is_rejected() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = connector(&m);
        let r = login_with(&m, &c, &k, |mut v| {
            v["nonce"] = json!("another-nonce");
            v
        })
        .await;
        rejected(r, "nonce");
        let r = login_with(&m, &c, &k, |mut v| {
            v.as_object_mut().unwrap().remove("nonce");
            v
        })
        .await;
        rejected(r, "nonce");
    }

    #[tokio::test]
    async fn expiry_allows_sixty_seconds_of_skew_and_no_more() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = connector(&m);
        let r = login_with(&m, &c, &k, |mut v| {
            v["exp"] = json!(now() - 120);
            v["iat"] = json!(now() - 400);
            v
        })
        .await;
        rejected(r, "expired");
        let ok = login_with(&m, &c, &k, |mut v| {
            v["exp"] = json!(now() - 30);
            v["iat"] = json!(now() - 300);
            v
        })
        .await;
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[tokio::test]
    async fn token_issued_in_the_future_is_rejected() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = connector(&m);
        let r = login_with(&m, &c, &k, |mut v| {
            v["iat"] = json!(now() + 300);
            v["exp"] = json!(now() + 900);
            v
        })
        .await;
        rejected(r, "future");
        let ok = login_with(&m, &c, &k, |mut v| {
            v["iat"] = json!(now() + 30);
            v
        })
        .await;
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[tokio::test]
    async fn bad_signature_is_rejected() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = connector(&m);
        // Another key claiming the published key's id.
        let forger = key("k1");
        let r = login_with(&m, &c, &forger, |v| v).await;
        rejected(r, "signature");
        // A token whose payload was changed after signing.
        let s = start(&c).await;
        let good = sign(&k, &claims(&m, &s.nonce));
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        let mut payload = claims(&m, &s.nonce);
        payload["sub"] = json!("admin");
        parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        *m.id_token.lock().unwrap() = parts.join(".");
        let r = c.complete(CALLBACK, &s.kept, &callback(&m, &s.state)).await;
        rejected(r, "signature");
    }

    #[tokio::test]
    async fn symmetric_and_unsigned_tokens_are_rejected() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = connector(&m);
        // HS256 keyed with the client secret: allowed by the spec, not here.
        let s = start(&c).await;
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(&m, &s.nonce),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        *m.id_token.lock().unwrap() = hs;
        let r = c.complete(CALLBACK, &s.kept, &callback(&m, &s.state)).await;
        rejected(r, "algorithm");
        // alg=none.
        let s = start(&c).await;
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims(&m, &s.nonce).to_string());
        *m.id_token.lock().unwrap() = format!("{header}.{payload}.");
        let r = c.complete(CALLBACK, &s.kept, &callback(&m, &s.state)).await;
        assert!(r.is_err(), "alg=none accepted: {r:?}");
    }

    #[tokio::test]
    async fn unknown_kid_refetches_keys_once_per_interval() {
        let k1 = key("k1");
        let m = mock(&[&k1]).await;
        let c = connector(&m);
        login_with(&m, &c, &k1, |v| v).await.unwrap();
        assert_eq!(
            m.jwks_hits.load(Ordering::SeqCst),
            1,
            "fetched at discovery"
        );

        // The provider rotates: the new key appears in its key set.
        let k2 = key("k2");
        set_keys(&m, &[&k1, &k2]);
        let id = login_with(&m, &c, &k2, |v| v).await.unwrap();
        assert_eq!(id.upstream_subject, "user-123");
        assert_eq!(m.jwks_hits.load(Ordering::SeqCst), 2, "refetched once");
        // Known keys need no fetch.
        login_with(&m, &c, &k2, |v| v).await.unwrap();
        assert_eq!(m.jwks_hits.load(Ordering::SeqCst), 2);

        // A key that is nowhere: one refetch already happened within the
        // interval, so no new fetch, and the token is refused.
        let k3 = key("k3");
        let r = login_with(&m, &c, &k3, |v| v).await;
        rejected(r, "key");
        assert_eq!(m.jwks_hits.load(Ordering::SeqCst), 2, "rate-limited");
    }

    #[tokio::test]
    async fn tampered_state_is_refused_before_any_token_request() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = connector(&m);
        let s = start(&c).await;
        *m.id_token.lock().unwrap() = sign(&k, &claims(&m, &s.nonce));
        let mut tampered = s.state.clone();
        tampered.replace_range(0..1, if tampered.starts_with('A') { "B" } else { "A" });
        for params in [
            callback(&m, &tampered),
            callback(&m, ""),
            BTreeMap::from([("code".to_string(), "the-code".to_string())]),
        ] {
            let r = c.complete(CALLBACK, &s.kept, &params).await;
            assert!(
                matches!(&r, Err(ConnectorError::InvalidCallback(msg)) if msg.contains("state")),
                "{r:?}"
            );
        }
        assert_eq!(m.token_hits.load(Ordering::SeqCst), 0);
        // The right state still works afterwards.
        c.complete(CALLBACK, &s.kept, &callback(&m, &s.state))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn callback_from_another_issuer_is_refused() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = connector(&m);
        let s = start(&c).await;
        let mut params = callback(&m, &s.state);
        params.insert("iss".into(), "https://evil.example".into());
        let r = c.complete(CALLBACK, &s.kept, &params).await;
        assert!(
            matches!(&r, Err(ConnectorError::InvalidCallback(msg)) if msg.contains("iss")),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn upstream_error_parameter_becomes_a_clear_refusal() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = connector(&m);
        let s = start(&c).await;
        let params = BTreeMap::from([
            ("error".to_string(), "access_denied".to_string()),
            (
                "error_description".to_string(),
                "End-User aborted <script>\"interaction\"".to_string(),
            ),
            ("state".to_string(), s.state.clone()),
        ]);
        let r = c.complete(CALLBACK, &s.kept, &params).await;
        match r {
            Err(e @ ConnectorError::Refused(_)) => {
                let msg = e.to_string();
                assert!(msg.contains("cancelled"), "{msg}");
                assert!(msg.contains("access_denied"), "{msg}");
                assert!(!msg.contains('"'), "{msg}");
                assert_eq!(e.reason(), "upstream_refused");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.token_hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn token_endpoint_refusal_is_reported() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = connector(&m);
        *m.token_error.lock().unwrap() = Some((
            401,
            json!({"error": "invalid_client", "error_description": "client authentication failed"}),
        ));
        let r = login_with(&m, &c, &k, |v| v).await;
        match r {
            Err(e @ ConnectorError::Refused(_)) => {
                let msg = e.to_string();
                assert!(msg.contains("invalid_client"), "{msg}");
                assert!(!msg.contains(SECRET));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn unreachable_provider_fails_fast_and_clearly() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = OidcConnector::new(
            "corp",
            None,
            settings(&format!("http://127.0.0.1:{port}")),
            |_| None,
        )
        .unwrap();
        let t = Instant::now();
        let e = c.begin(CALLBACK).await.unwrap_err();
        assert!(matches!(e, ConnectorError::Unreachable(_)), "{e:?}");
        assert!(e.to_string().contains("could not be reached"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn silent_provider_times_out_within_the_configured_time() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let mut s = settings(&format!("http://127.0.0.1:{port}"));
        s.timeout_secs = 1;
        let c = OidcConnector::new("corp", None, s, |_| None).unwrap();
        let t = Instant::now();
        let e = c.begin(CALLBACK).await.unwrap_err();
        assert!(matches!(e, ConnectorError::Unreachable(_)), "{e:?}");
        assert!(e.to_string().contains("1 second"), "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(2500),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn discovery_for_another_issuer_is_refused() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        *m.claimed_issuer.lock().unwrap() = Some("https://idp.example.com".into());
        let c = connector(&m);
        let e = c.begin(CALLBACK).await.unwrap_err();
        assert!(matches!(e, ConnectorError::Upstream(_)), "{e:?}");
        assert!(e.to_string().contains("not valid"), "{e}");
    }

    struct AnyIssuer;

    impl Preset for AnyIssuer {
        fn kind(&self) -> &'static str {
            "test"
        }
        fn checks_issuer(&self) -> bool {
            true
        }
        fn apply(
            &self,
            _claims: &Map<String, Value>,
            _identity: &mut Identity,
        ) -> Result<(), ConnectorError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn preset_discovery_accepts_only_the_expected_template_issuer() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let template = "https://login.example.com/{tenantid}/v2.0";
        *m.claimed_issuer.lock().unwrap() = Some(template.into());
        let build = |expected: &str| {
            let mut s = settings(&m.issuer);
            s.issuer = expected.to_string();
            OidcConnector::with_preset(
                "corp",
                None,
                s,
                |_| None,
                Discovery {
                    base: Some(m.issuer.clone()),
                    expected_issuer: Some(expected.to_string()),
                },
                Arc::new(AnyIssuer),
            )
            .unwrap()
        };
        let c = build(template);
        assert_eq!(c.kind(), "test");
        c.begin(CALLBACK).await.unwrap();
        let other = build("https://login.example.com/{tenantid}/v1.0");
        let e = other.begin(CALLBACK).await.unwrap_err().to_string();
        assert!(e.contains("names the issuer"), "{e}");
    }

    #[tokio::test]
    async fn userinfo_claims_are_merged_for_the_same_subject_only() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let mut s = settings(&m.issuer);
        s.userinfo = true;
        s.claims.groups = "roles".into();
        let c = OidcConnector::new("corp", None, s, |_| None).unwrap();
        *m.userinfo.lock().unwrap() = json!({
            "sub": "user-123",
            "email": "alice@corp.example",
            "email_verified": "true",
            "roles": "operator",
        });
        let strip = |mut v: Value| {
            for claim in ["email", "email_verified", "name", "groups"] {
                v.as_object_mut().unwrap().remove(claim);
            }
            v
        };
        let id = login_with(&m, &c, &k, strip).await.unwrap();
        assert_eq!(id.email.as_deref(), Some("alice@corp.example"));
        assert!(id.email_verified);
        assert_eq!(id.groups, vec!["operator"]);
        assert_eq!(id.name, None);

        *m.userinfo.lock().unwrap() = json!({"sub": "someone-else", "email": "x@y"});
        let r = login_with(&m, &c, &k, strip).await;
        assert!(
            matches!(&r, Err(ConnectorError::Upstream(msg)) if msg.contains("different user")),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn subject_comes_from_the_configured_claim() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let mut s = settings(&m.issuer);
        s.claims.subject = "oid".into();
        let c = OidcConnector::new("corp", None, s, |_| None).unwrap();
        let id = login_with(&m, &c, &k, |mut v| {
            v["oid"] = json!("00000000-aaaa");
            v
        })
        .await
        .unwrap();
        assert_eq!(id.upstream_subject, "00000000-aaaa");
        let r = login_with(&m, &c, &k, |v| v).await;
        rejected(r, "'oid' claim");
    }

    #[test]
    fn unverified_email_is_not_marked_verified() {
        let c = OidcConnector::new("corp", None, settings("http://127.0.0.1:1"), |_| None).unwrap();
        let claims = |v: Value| v.as_object().unwrap().clone();
        let id = c
            .identity(&claims(
                json!({"sub": 42, "email": "a@b", "email_verified": false}),
            ))
            .unwrap();
        assert_eq!(id.upstream_subject, "42");
        assert!(!id.email_verified);
        let id = c.identity(&claims(json!({"sub": "s"}))).unwrap();
        assert!(id.email.is_none() && !id.email_verified && id.groups.is_empty());
    }

    fn config_error(v: Value, env: Option<&str>) -> String {
        let s: OidcSettings = match serde_json::from_value(v) {
            Ok(s) => s,
            Err(e) => return e.to_string(),
        };
        match OidcConnector::new("corp", None, s, |_| env.map(str::to_string)) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn configuration_errors_name_the_setting() {
        let base = || json!({"issuer": "https://idp.example.com", "client_id": "gh", "client_secret": "s"});
        let with = |k: &str, v: Value| {
            let mut b = base();
            b[k] = v;
            b
        };
        let without = |k: &str| {
            let mut b = base();
            b.as_object_mut().unwrap().remove(k);
            b
        };
        assert!(config_error(without("client_id"), None).contains("client_id"));
        assert!(config_error(without("issuer"), None).contains("issuer"));
        assert!(config_error(with("isuer", json!("x")), None).contains("isuer"));
        assert!(
            config_error(with("issuer", json!("http://idp.example.com")), None).contains("https")
        );
        assert!(config_error(with("scopes", json!(["email"])), None).contains("openid"));
        assert!(config_error(with("timeout_secs", json!(0)), None).contains("timeout_secs"));
        assert!(
            config_error(with("client_secret_env", json!("GH_SECRET")), Some("x"))
                .contains("only one")
        );
        let mut env_only = without("client_secret");
        env_only["client_secret_env"] = json!("GH_SECRET");
        let msg = config_error(env_only.clone(), None);
        assert!(
            msg.contains("client_secret_env") && msg.contains("GH_SECRET"),
            "{msg}"
        );
        assert!(config_error(without("client_secret"), None).contains("client_secret_env"));
        // The secret from the environment is accepted.
        let s: OidcSettings = serde_json::from_value(env_only).unwrap();
        assert!(OidcConnector::new("corp", None, s, |_| Some("from-env".into())).is_ok());
        // http is fine on loopback (development and tests).
        let s: OidcSettings =
            serde_json::from_value(with("issuer", json!("http://localhost:8080"))).unwrap();
        assert!(OidcConnector::new("corp", None, s, |_| None).is_ok());
    }

    #[test]
    fn the_id_token_audience_cannot_be_an_access_token_audience() {
        let mut s = settings("https://idp.example.com");
        s.access_token_audiences = vec![CLIENT.to_string()];
        let e = OidcConnector::new("corp", None, s, |_| None).unwrap_err();
        assert!(
            e.to_string()
                .contains("access_token_audiences: must not contain client_id"),
            "{e}"
        );
        let mut s = settings("https://idp.example.com");
        s.access_token_audiences = vec!["api://gatehouse".into()];
        assert!(OidcConnector::new("corp", None, s, |_| None).is_ok());
    }

    // -----------------------------------------------------------------------
    // Tokens clients present: bound to the presenting Gatehouse client.
    // -----------------------------------------------------------------------

    const AGENT_AT_IDP: &str = "agent-at-idp";
    const AGENT: &str = "agent";

    fn presenting_connector(m: &Mock, access_audience: bool) -> OidcConnector {
        let mut s = settings(&m.issuer);
        s.upstream_clients = BTreeMap::from([(AGENT_AT_IDP.to_string(), AGENT.to_string())]);
        if access_audience {
            s.access_token_audiences = vec!["api://gatehouse".into()];
        }
        OidcConnector::new("corp", Some("Corp"), s, |_| None).unwrap()
    }

    fn presented_id_token(m: &Mock, k: &Key, edit: impl FnOnce(&mut Value)) -> String {
        let mut v = json!({
            "iss": m.issuer, "sub": "user-123", "aud": AGENT_AT_IDP,
            "exp": now() + 300, "iat": now(),
        });
        edit(&mut v);
        sign(k, &v)
    }

    fn other_client(r: Result<Identity, ConnectorError>, words: &str) {
        match r {
            Err(ConnectorError::OtherClient(m)) => {
                assert!(m.contains(words), "'{m}' does not mention '{words}'")
            }
            other => panic!("expected OtherClient ({words}), got {other:?}"),
        }
    }

    #[tokio::test]
    async fn presented_id_token_is_accepted_from_the_mapped_client_only() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = presenting_connector(&m, false);
        let token = presented_id_token(&m, &k, |_| {});
        let id = c.verify_presented_id_token(&token, AGENT).await.unwrap();
        assert_eq!(id.upstream_subject, "user-123");
        other_client(
            c.verify_presented_id_token(&token, "another-client").await,
            "audience",
        );
    }

    #[tokio::test]
    async fn presented_id_token_of_the_connectors_own_client_needs_a_mapping() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = presenting_connector(&m, false);
        let token = presented_id_token(&m, &k, |v| v["aud"] = json!(CLIENT));
        other_client(c.verify_presented_id_token(&token, AGENT).await, "audience");
        other_client(
            c.verify_presented_id_token(&token, CLIENT).await,
            "audience",
        );
    }

    #[tokio::test]
    async fn presented_id_token_with_several_audiences_needs_a_mapped_azp() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = presenting_connector(&m, false);
        let several = presented_id_token(&m, &k, |v| v["aud"] = json!([AGENT_AT_IDP, "other"]));
        other_client(c.verify_presented_id_token(&several, AGENT).await, "azp");
        let foreign_azp = presented_id_token(&m, &k, |v| {
            v["aud"] = json!([AGENT_AT_IDP, "other"]);
            v["azp"] = json!("other");
        });
        other_client(
            c.verify_presented_id_token(&foreign_azp, AGENT).await,
            "azp",
        );
        let ours = presented_id_token(&m, &k, |v| {
            v["aud"] = json!([AGENT_AT_IDP, "other"]);
            v["azp"] = json!(AGENT_AT_IDP);
        });
        assert!(c.verify_presented_id_token(&ours, AGENT).await.is_ok());
    }

    #[tokio::test]
    async fn presented_access_token_is_accepted_from_the_mapped_client_only() {
        let k = key("k1");
        let m = mock(&[&k]).await;
        let c = presenting_connector(&m, true);
        let at = |edit: &dyn Fn(&mut Value)| {
            let mut v = json!({
                "iss": m.issuer, "sub": "user-123", "aud": "api://gatehouse",
                "client_id": AGENT_AT_IDP, "exp": now() + 300, "iat": now(),
            });
            edit(&mut v);
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(k.kid.clone());
            header.typ = Some("at+jwt".into());
            jsonwebtoken::encode(&header, &v, &k.encoding).unwrap()
        };
        let good = at(&|_| {});
        assert!(c.verify_presented_access_token(&good, AGENT).await.is_ok());
        other_client(
            c.verify_presented_access_token(&good, "another-client")
                .await,
            "not mapped",
        );
        let unnamed = at(&|v| {
            v.as_object_mut().unwrap().remove("client_id");
        });
        other_client(
            c.verify_presented_access_token(&unnamed, AGENT).await,
            "which client",
        );
        let disagree = at(&|v| v["azp"] = json!("someone-else"));
        other_client(
            c.verify_presented_access_token(&disagree, AGENT).await,
            "disagree",
        );
        let by_azp = at(&|v| {
            v.as_object_mut().unwrap().remove("client_id");
            v["azp"] = json!(AGENT_AT_IDP);
        });
        assert!(c
            .verify_presented_access_token(&by_azp, AGENT)
            .await
            .is_ok());
    }

    #[test]
    fn accepted_audiences_is_replaced_by_upstream_clients() {
        let mut s = settings("https://idp.example.com");
        s.accepted_audiences = vec!["agent".into()];
        let e = OidcConnector::new("corp", None, s, |_| None).unwrap_err();
        assert!(e.to_string().contains("upstream_clients"), "{e}");
    }
}
