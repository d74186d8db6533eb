//! `WWW-Authenticate: Bearer` challenges (RFC 6750 §3, RFC 9728 §5.1) for
//! any HTTP framework.

use std::fmt::Write as _;

use http::StatusCode;

use crate::error::VerifyError;

/// The status and `WWW-Authenticate` value to answer a refused request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub status: StatusCode,
    /// `None` for 503/500 answers, which carry no challenge.
    pub www_authenticate: Option<String>,
    /// The RFC 6750 error code, if any (`invalid_token`, `insufficient_scope`).
    pub error: Option<&'static str>,
    /// A short human-readable reason, safe to show to the client.
    pub description: String,
}

impl Challenge {
    /// The answer for a token refused by [`Verifier::verify`](crate::Verifier::verify).
    ///
    /// * missing token: `401`, `Bearer resource_metadata="…"` (plus `scope`
    ///   when `scopes` is not empty, as MCP 2025-11-25 suggests);
    /// * bad token: `401`, `Bearer resource_metadata="…", error="invalid_token",
    ///   error_description="…"`;
    /// * authorization server unavailable: `503`, no challenge.
    pub fn for_error(error: &VerifyError, resource_metadata_url: &str, scopes: &[String]) -> Self {
        let status = error.status();
        let description = match error {
            // Details of upstream failures are for the logs, not the client.
            VerifyError::Upstream(_) => "the authorization server is unavailable".to_string(),
            VerifyError::InvalidConfig(_) => "server misconfiguration".to_string(),
            other => other.to_string(),
        };
        if status != StatusCode::UNAUTHORIZED {
            return Challenge {
                status,
                www_authenticate: None,
                error: None,
                description,
            };
        }
        let mut value = String::from("Bearer ");
        push_param(&mut value, "resource_metadata", resource_metadata_url);
        let code = error.oauth_error();
        if let Some(code) = code {
            push_param(&mut value, "error", code);
            push_param(&mut value, "error_description", &description);
        }
        if !scopes.is_empty() {
            push_param(&mut value, "scope", &scope_list(scopes));
        }
        Challenge {
            status,
            www_authenticate: Some(value),
            error: code,
            description,
        }
    }

    /// `403` for a valid token without the scopes an operation `needs`:
    /// `Bearer error="insufficient_scope", scope="…", resource_metadata="…"`.
    /// `scope` lists everything the operation needs, so a client that
    /// re-authorizes with it gets a token that works.
    pub fn insufficient_scope(needs: &[String], resource_metadata_url: &str) -> Self {
        let scope = scope_list(needs);
        let description = format!("this operation needs the scope {scope}");
        let mut value = String::from("Bearer ");
        push_param(&mut value, "error", "insufficient_scope");
        push_param(&mut value, "scope", &scope);
        push_param(&mut value, "resource_metadata", resource_metadata_url);
        push_param(&mut value, "error_description", &description);
        Challenge {
            status: StatusCode::FORBIDDEN,
            www_authenticate: Some(value),
            error: Some("insufficient_scope"),
            description,
        }
    }
}

fn scope_list(scopes: &[String]) -> String {
    let mut out = String::new();
    for s in scopes {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(s);
    }
    out
}

/// Appends `name="value"`, keeping only characters RFC 6750 allows inside
/// the quoted strings (printable ASCII except `"` and `\`).
fn push_param(out: &mut String, name: &str, value: &str) {
    if !out.ends_with(' ') {
        out.push_str(", ");
    }
    let clean: String = value
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '?',
        })
        .collect();
    let _ = write!(out, "{name}=\"{clean}\"");
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = "https://h/.well-known/oauth-protected-resource/mcp";

    #[test]
    fn missing_token_has_no_error_attributes() {
        let c = Challenge::for_error(&VerifyError::MissingToken, META, &[]);
        assert_eq!(c.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            c.www_authenticate.as_deref(),
            Some(format!("Bearer resource_metadata=\"{META}\"").as_str())
        );
    }

    #[test]
    fn invalid_token_names_the_error() {
        let c = Challenge::for_error(&VerifyError::Expired, META, &[]);
        assert_eq!(
            c.www_authenticate.as_deref(),
            Some(
                format!("Bearer resource_metadata=\"{META}\", error=\"invalid_token\", error_description=\"token expired\"")
                    .as_str()
            )
        );
    }

    #[test]
    fn upstream_is_503_without_challenge() {
        let c = Challenge::for_error(&VerifyError::Upstream("down".into()), META, &[]);
        assert_eq!(c.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(c.www_authenticate.is_none());
        assert!(!c.description.contains("down"));
    }

    #[test]
    fn insufficient_scope_lists_scopes() {
        let c = Challenge::insufficient_scope(&["mcp:read".into(), "mcp:write".into()], META);
        assert_eq!(c.status, StatusCode::FORBIDDEN);
        let v = c.www_authenticate.unwrap();
        assert!(v.starts_with("Bearer error=\"insufficient_scope\", scope=\"mcp:read mcp:write\", resource_metadata=\""), "{v}");
    }

    #[test]
    fn quotes_are_neutralised() {
        let c = Challenge::for_error(&VerifyError::Malformed("a\"b\\c\n".into()), META, &[]);
        let v = c.www_authenticate.unwrap();
        assert!(
            v.contains("error_description=\"malformed token: a?b?c?\""),
            "{v}"
        );
    }
}
