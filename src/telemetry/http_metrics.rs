//! The layer that counts every request: by route template, method and
//! status, with its duration, and the OAuth error it ended with, if any.
//! Endpoint files contain none of this.

use std::collections::HashSet;
use std::sync::{OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::oauth::errors::ErrorSent;
use crate::telemetry::metrics::metrics;

/// Route label of requests no route matched (404s, scanners): one value,
/// whatever the path, so a caller cannot mint label values.
pub const UNMATCHED: &str = "unmatched";

pub async fn record(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(route_label);
    let mut pending = Pending {
        route,
        method: method_label(req.method()),
        started: Instant::now(),
        answered: false,
    };
    let res = next.run(req).await;
    pending.answered = true;
    pending.observe(res.status().as_u16());
    if let Some(ErrorSent(code)) = res.extensions().get::<ErrorSent>() {
        metrics().oauth_error(endpoint_label(pending.route), code);
    }
    res
}

/// A request being answered. The layer sits outside the panic layer, so a
/// handler's panic is counted as the 500 it is answered with. Requests run
/// to their end even when the caller goes away (`http::serve`); one that
/// is dropped unanswered all the same (the runtime stopping) is counted as
/// 499 (client closed).
struct Pending {
    route: Option<&'static str>,
    method: &'static str,
    started: Instant,
    answered: bool,
}

impl Pending {
    fn observe(&self, status: u16) {
        metrics().http_request(
            self.route.unwrap_or(UNMATCHED),
            self.method,
            status,
            self.started.elapsed(),
        );
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.answered {
            self.observe(499);
        }
    }
}

/// The route template as a label that lives for the process. Templates are
/// the router's own (a few dozen, never a caller's path), so each is copied
/// once on first use and every later request borrows it.
fn route_label(path: &MatchedPath) -> &'static str {
    static ROUTES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(Default::default);
    let template = path.as_str();
    if let Some(known) = routes
        .read()
        .ok()
        .and_then(|set| set.get(template).copied())
    {
        return known;
    }
    let Ok(mut set) = routes.write() else {
        return UNMATCHED;
    };
    if let Some(known) = set.get(template) {
        return known;
    }
    let leaked: &'static str = Box::leak(template.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// Methods are a closed set; anything else a caller sends is `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The endpoint of an OAuth error: the route template without the tenant
/// prefix (`/t/{tenant}/token` and `/token` are both `/token`).
fn endpoint_label(route: Option<&str>) -> &'static str {
    const ENDPOINTS: &[&str] = &[
        "/authorize",
        "/token",
        "/device_authorization",
        "/introspect",
        "/revoke",
        "/userinfo",
        "/register",
        "/register/{client_id}",
        "/login",
        "/login/email",
        "/callback/{connector_id}",
        "/consent",
        "/device",
    ];
    let Some(route) = route else {
        return UNMATCHED;
    };
    let route = route.strip_prefix("/t/{tenant}").unwrap_or(route);
    ENDPOINTS
        .iter()
        .find(|e| **e == route)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_prefix_is_one_endpoint() {
        assert_eq!(endpoint_label(Some("/t/{tenant}/token")), "/token");
        assert_eq!(endpoint_label(Some("/token")), "/token");
        assert_eq!(endpoint_label(None), UNMATCHED);
        assert_eq!(endpoint_label(Some("/jwks.json")), "other");
    }

    #[test]
    fn invented_methods_share_one_label() {
        let m = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&m), "other");
        assert_eq!(method_label(&Method::POST), "POST");
    }
}
