//! RFC 9728 protected resource metadata, and reading bearer tokens.

use http::header::AUTHORIZATION;
use http::HeaderMap;
use serde_json::{json, Value};

use crate::error::VerifyError;

/// The RFC 9728 metadata document of an MCP server.
///
/// ```
/// let doc = gatehouse_verify::protected_resource_metadata(
///     "https://mcp.example.com/mcp",
///     ["https://auth.example.com/t/acme"],
///     ["tickets:read", "tickets:write"],
/// );
/// assert_eq!(doc["authorization_servers"][0], "https://auth.example.com/t/acme");
/// assert_eq!(doc["bearer_methods_supported"][0], "header");
/// ```
///
/// `resource` should be the URI registered at Gatehouse (the one clients
/// send as `resource`); `authorization_servers` the tenant's issuer exactly.
pub fn protected_resource_metadata<A, S>(
    resource: &str,
    authorization_servers: A,
    scopes_supported: S,
) -> Value
where
    A: IntoIterator,
    A::Item: AsRef<str>,
    S: IntoIterator,
    S::Item: AsRef<str>,
{
    let servers: Vec<String> = authorization_servers
        .into_iter()
        .map(|s| s.as_ref().to_string())
        .collect();
    let scopes: Vec<String> = scopes_supported
        .into_iter()
        .map(|s| s.as_ref().to_string())
        .collect();
    json!({
        "resource": resource,
        "authorization_servers": servers,
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
    })
}

/// The bearer token of a request's `Authorization` header (RFC 6750 §2.1).
///
/// Tokens in the query string or form body are not looked at (MCP allows
/// the header only). No `Authorization` header, or one with another
/// scheme, is [`VerifyError::MissingToken`]; several headers or an empty
/// or ill-formed token are [`VerifyError::Malformed`].
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, VerifyError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(VerifyError::MissingToken);
    };
    if values.next().is_some() {
        return Err(VerifyError::malformed("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| VerifyError::malformed("Authorization header is not ASCII"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(VerifyError::MissingToken);
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() {
        return Err(VerifyError::malformed("empty bearer token"));
    }
    let body = token.trim_end_matches('=');
    if body.is_empty()
        || !body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
    {
        return Err(VerifyError::malformed("invalid characters in bearer token"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(
            bearer_token(&headers(&["Bearer abc.def-_~+/="])),
            Ok("abc.def-_~+/=")
        );
        assert_eq!(bearer_token(&headers(&["bearer  abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&[])), Err(VerifyError::MissingToken));
        assert_eq!(
            bearer_token(&headers(&["Basic abc"])),
            Err(VerifyError::MissingToken)
        );
        assert!(matches!(
            bearer_token(&headers(&["Bearer"])),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            bearer_token(&headers(&["Bearer a b"])),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            bearer_token(&headers(&["Bearer a", "Bearer b"])),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn metadata_document() {
        let doc = protected_resource_metadata("https://h/mcp", ["https://a"], ["x", "y"]);
        assert_eq!(
            doc,
            json!({
                "resource": "https://h/mcp",
                "authorization_servers": ["https://a"],
                "scopes_supported": ["x", "y"],
                "bearer_methods_supported": ["header"],
            })
        );
    }
}
