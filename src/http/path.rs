//! Requests whose path cannot name anything: a segment that is not UTF-8
//! once percent-decoded, or that holds a control character (NUL included).
//! Path segments become tenant ids, client ids (RFC 7592) and connector ids;
//! no such id has a control character, and PostgreSQL refuses NUL in text.
//! Such a path is answered like any other path that names nothing (404
//! `not_found`), before routing, so it never reaches a handler or the
//! database.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::oauth::errors::OAuthError;

/// Whether every percent-decoded segment of `path` is UTF-8 without
/// control characters.
pub fn is_clean_path(path: &str) -> bool {
    // A request path is ASCII; without `%` there is nothing to decode.
    if !path.contains('%') {
        return !crate::oauth::params::has_control(path);
    }
    match percent_encoding::percent_decode_str(path).decode_utf8() {
        Ok(s) => !crate::oauth::params::has_control(&s),
        Err(_) => false,
    }
}

pub async fn refuse_malformed_path(req: Request, next: Next) -> Response {
    if is_clean_path(req.uri().path()) {
        next.run(req).await
    } else {
        OAuthError::not_found("no such endpoint").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_are_clean() {
        for p in [
            "/token",
            "/t/acme/register/dcr_abc",
            "/callback/entra",
            "/register/https%3A%2F%2Fapp.example%2Fid",
            "/t/%C3%A9",
            "/100%",
        ] {
            assert!(is_clean_path(p), "{p}");
        }
    }

    #[test]
    fn nul_and_control_characters_are_not() {
        for p in [
            "/register/a%00b",
            "/t/%0A/token",
            "/callback/%7F",
            "/x/%C2%85",
        ] {
            assert!(!is_clean_path(p), "{p}");
        }
    }

    #[test]
    fn invalid_utf8_is_not() {
        for p in ["/register/%FF", "/t/%C3/token", "/callback/%E2%82"] {
            assert!(!is_clean_path(p), "{p}");
        }
    }
}
