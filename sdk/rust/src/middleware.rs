//! axum / tower integration: the [`RequireBearer`] layer, the
//! [`Authenticated`] extractor, per-tool scope checks and the RFC 9728
//! metadata router.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower::{Layer, Service};

use crate::challenge::Challenge;
use crate::metadata::protected_resource_metadata;
use crate::resource::protected_resource_metadata_url;
use crate::token::VerifiedToken;
use crate::verifier::Verifier;

/// Tower layer that lets through only requests with a valid Gatehouse
/// access token (and the required scopes), putting the
/// [`VerifiedToken`] in the request extensions.
///
/// Refusals: `401` with `WWW-Authenticate: Bearer resource_metadata="…"`
/// (plus `error="invalid_token"` when a token was sent but is not valid),
/// `403` with `error="insufficient_scope"` when scopes are missing, `503`
/// when the authorization server cannot be reached.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use axum::{routing::post, Router};
/// use gatehouse_verify::{Authenticated, RequireBearer, Verifier, VerifierConfig};
///
/// let verifier = Arc::new(
///     Verifier::discover(VerifierConfig::new("https://auth.example.com", "https://mcp.example.com/mcp")).await?,
/// );
/// let app: Router = Router::new()
///     .route("/mcp", post(|Authenticated(token): Authenticated| async move { token.subject }))
///     .layer(RequireBearer::new(verifier).with_scopes(["mcp:read"]));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RequireBearer {
    verifier: Arc<Verifier>,
    scopes: Arc<[String]>,
}

impl RequireBearer {
    /// Requires a valid token, with the scopes of the verifier's
    /// configuration (`required_scopes`).
    pub fn new(verifier: Arc<Verifier>) -> Self {
        RequireBearer {
            verifier,
            scopes: Arc::from(Vec::new()),
        }
    }

    /// Also requires these scopes on every request through this layer.
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        self.scopes = Arc::from(scopes);
        self
    }
}

impl<S> Layer<S> for RequireBearer {
    type Service = RequireBearerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireBearerService {
            inner,
            verifier: Arc::clone(&self.verifier),
            scopes: Arc::clone(&self.scopes),
        }
    }
}

/// The service [`RequireBearer`] wraps around an inner service.
#[derive(Clone, Debug)]
pub struct RequireBearerService<S> {
    inner: S,
    verifier: Arc<Verifier>,
    scopes: Arc<[String]>,
}

impl<S, B> Service<Request<B>> for RequireBearerService<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is not ready; keep it and use the instance polled ready.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let verifier = Arc::clone(&self.verifier);
        let scopes = Arc::clone(&self.scopes);
        let presented = crate::bearer_token(request.headers()).map(str::to_owned);
        Box::pin(async move {
            let outcome = match presented {
                Ok(token) => verifier.authorize_token(&token, &scopes).await,
                Err(e) => Err(verifier.challenge(&e, &scopes)),
            };
            match outcome {
                Ok(token) => {
                    request.extensions_mut().insert(token);
                    inner.call(request).await.map(IntoResponse::into_response)
                }
                Err(challenge) => Ok(challenge_response(&challenge)),
            }
        })
    }
}

/// Turns a [`Challenge`] into a response: the status, the
/// `WWW-Authenticate` header, and a small JSON body.
pub fn challenge_response(challenge: &Challenge) -> Response {
    let body = match challenge.error {
        Some(code) => json!({ "error": code, "error_description": challenge.description }),
        None if challenge.status == StatusCode::UNAUTHORIZED => {
            json!({ "error_description": challenge.description })
        }
        None if challenge.status == StatusCode::SERVICE_UNAVAILABLE => {
            json!({ "error": "temporarily_unavailable", "error_description": challenge.description })
        }
        None => json!({ "error": "server_error", "error_description": challenge.description }),
    };
    let mut response = (challenge.status, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Some(value) = challenge
        .www_authenticate
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    if challenge.status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The verified token of a request that went through [`RequireBearer`].
///
/// Using it on a route without the layer is a programming error and
/// answers 500. `Option<Authenticated>` never fails.
#[derive(Debug, Clone)]
pub struct Authenticated(pub VerifiedToken);

impl Deref for Authenticated {
    type Target = VerifiedToken;

    fn deref(&self) -> &VerifiedToken {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<VerifiedToken>() {
            Some(token) => Ok(Authenticated(token.clone())),
            None => {
                tracing::error!("Authenticated extractor used on a route without RequireBearer");
                Err((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "authentication is not set up for this route",
                )
                    .into_response())
            }
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Authenticated {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<VerifiedToken>()
            .cloned()
            .map(Authenticated))
    }
}

/// For per-tool checks inside a handler: `Err` is the `403
/// insufficient_scope` response to return when `token` lacks `scope`.
///
/// ```
/// # use gatehouse_verify::{require_scope, VerifiedToken};
/// # use axum::response::Response;
/// fn delete_ticket(token: &VerifiedToken) -> Result<&'static str, Response> {
///     require_scope(token, "tickets:write")?;
///     Ok("deleted")
/// }
/// ```
// The error is the response itself so handlers can `?` it.
#[allow(clippy::result_large_err)]
pub fn require_scope(token: &VerifiedToken, scope: &str) -> Result<(), Response> {
    require_scopes(token, [scope])
}

/// Like [`require_scope`] for several scopes; the challenge names them all.
#[allow(clippy::result_large_err)]
pub fn require_scopes<'a, I>(token: &VerifiedToken, scopes: I) -> Result<(), Response>
where
    I: IntoIterator<Item = &'a str>,
{
    let needed: Vec<String> = scopes.into_iter().map(str::to_string).collect();
    if needed.iter().all(|s| token.has_scope(s)) {
        return Ok(());
    }
    Err(challenge_response(&Challenge::insufficient_scope(
        &needed,
        token.resource_metadata_url(),
    )))
}

/// A router serving the RFC 9728 metadata of `resource` at
/// `/.well-known/oauth-protected-resource` and, for a resource with a path,
/// at the path-suffixed URL (`/.well-known/oauth-protected-resource/mcp`
/// for `https://h/mcp`). Merge it into your app outside [`RequireBearer`].
///
/// ```
/// use axum::Router;
/// let app: Router = gatehouse_verify::protected_resource_router(
///     "https://mcp.example.com/mcp",
///     ["https://auth.example.com"],
///     ["mcp:read", "mcp:write"],
/// );
/// ```
pub fn protected_resource_router<St, A, S>(
    resource: &str,
    authorization_servers: A,
    scopes_supported: S,
) -> Router<St>
where
    St: Clone + Send + Sync + 'static,
    A: IntoIterator,
    A::Item: AsRef<str>,
    S: IntoIterator,
    S::Item: AsRef<str>,
{
    let doc = Arc::new(protected_resource_metadata(
        resource,
        authorization_servers,
        scopes_supported,
    ));
    let serve = move || {
        let doc = Arc::clone(&doc);
        async move {
            let mut response = Json(doc.as_ref().clone()).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            response
        }
    };
    const ROOT: &str = "/.well-known/oauth-protected-resource";
    let mut router = Router::new().route(ROOT, get(serve.clone()));
    let suffixed = protected_resource_metadata_url(resource)
        .and_then(|url| url::Url::parse(&url).ok())
        .map(|url| url.path().to_string())
        .filter(|path| path != ROOT);
    if let Some(path) = suffixed {
        // axum reserves `{`, `}`, and segments starting with `:` or `*`.
        let routable = path
            .split('/')
            .all(|seg| !seg.starts_with([':', '*']) && !seg.contains(['{', '}']));
        if routable {
            router = router.route(&path, get(serve));
        } else {
            tracing::warn!(%path, "cannot route the path-suffixed metadata URL; serve it yourself");
        }
    }
    router
}

/// [`protected_resource_router`] for a verifier: its configured resource and
/// issuer.
pub fn protected_resource_router_for<St, S>(verifier: &Verifier, scopes_supported: S) -> Router<St>
where
    St: Clone + Send + Sync + 'static,
    S: IntoIterator,
    S::Item: AsRef<str>,
{
    protected_resource_router(
        &verifier.config().resource,
        [verifier.issuer()],
        scopes_supported,
    )
}
