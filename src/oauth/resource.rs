//! Resource indicators (RFC 8707): the canonical URI of the protected
//! resource (MCP server) a token is requested for, used as the token's `aud`.

use url::Url;

/// Why a `resource` value was refused. `Display` is fit for
/// `error_description`; the value itself is never echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// Whitespace, control characters, non-ASCII, or one of `` "<>\^`{|} ``.
    #[error("resource contains a character that is not allowed in a URI")]
    InvalidCharacter,
    /// A relative reference (RFC 8707 §2: it must be an absolute URI).
    #[error("resource must be an absolute URI")]
    NotAbsolute,
    /// Not parseable as a URI (bad port, bad host, ...).
    #[error("resource is not a valid URI")]
    Malformed,
    /// A `#fragment`, even an empty one (RFC 8707 §2).
    #[error("resource must not contain a fragment")]
    Fragment,
    /// Neither `https` nor `http`.
    #[error("resource must be an https or http URI")]
    UnsupportedScheme,
    /// No `//host` after the scheme.
    #[error("resource must include a host")]
    MissingHost,
    /// `user:password@` in the authority.
    #[error("resource must not contain user information")]
    UserInfo,
}

/// Returns the canonical form of a resource URI, the form stored and put in `aud`.
///
/// The input must be an absolute `https` or `http` URI with a host, without
/// fragment or userinfo, made only of printable ASCII URI characters.
/// The canonical form is built as `scheme://host[:port][path][?query]` where
/// * scheme and host are lowercase (IP literals in their standard form,
///   internationalised names in punycode);
/// * the port is dropped when it is the scheme's default (443 for `https`,
///   80 for `http`);
/// * a root path (`/` or empty) is dropped, so `https://h`, `https://h/` and
///   `https://H:443/` all become `https://h`;
/// * any other path is kept as written, trailing slash included, so
///   `https://h/mcp` and `https://h/mcp/` are different resources; the only
///   change is the removal of `.` and `..` segments (RFC 3986 §5.2.4), and
///   neither case nor percent-encoding is altered;
/// * a non-empty query is kept (RFC 8707 discourages but allows it); an
///   empty one (a bare `?`) is dropped.
///
/// The function is idempotent: a canonical form canonicalises to itself.
pub fn canonicalize(resource: &str) -> Result<String, ResourceError> {
    if !resource.bytes().all(is_uri_char) {
        return Err(ResourceError::InvalidCharacter);
    }
    let url = Url::parse(resource).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => ResourceError::NotAbsolute,
        _ => ResourceError::Malformed,
    })?;
    if resource.contains('#') || url.fragment().is_some() {
        return Err(ResourceError::Fragment);
    }
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ResourceError::UnsupportedScheme);
    }
    let authority = resource
        .split_once(':')
        .and_then(|(_, rest)| rest.strip_prefix("//"))
        .map(|hier| hier.split(['/', '?']).next().unwrap_or_default())
        .filter(|authority| !authority.is_empty())
        .ok_or(ResourceError::MissingHost)?;
    if authority.contains('@') || !url.username().is_empty() || url.password().is_some() {
        return Err(ResourceError::UserInfo);
    }
    let host = url.host_str().ok_or(ResourceError::MissingHost)?;

    let mut canonical = format!("{}://{}", url.scheme(), host);
    if let Some(port) = url.port() {
        // `Url::port` is already `None` for the scheme's default port.
        canonical.push(':');
        canonical.push_str(&port.to_string());
    }
    if url.path() != "/" {
        canonical.push_str(url.path());
    }
    if let Some(query) = url.query().filter(|q| !q.is_empty()) {
        canonical.push('?');
        canonical.push_str(query);
    }
    Ok(canonical)
}

/// Whether two resource URIs name the same resource, i.e. have the same
/// [`canonicalize`] form. An invalid URI is the same as nothing.
pub fn same_resource(a: &str, b: &str) -> bool {
    matches!((canonicalize(a), canonicalize(b)), (Ok(a), Ok(b)) if a == b)
}

/// Printable ASCII allowed somewhere in an RFC 3986 URI.
fn is_uri_char(b: u8) -> bool {
    matches!(b, 0x21..=0x7E)
        && !matches!(
            b,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        canonicalize(s).unwrap()
    }

    #[test]
    fn root_without_slash_is_canonical() {
        assert_eq!(canon("https://mcp.example.com"), "https://mcp.example.com");
    }

    #[test]
    fn root_slash_is_dropped() {
        assert_eq!(canon("https://mcp.example.com/"), "https://mcp.example.com");
    }

    #[test]
    fn scheme_and_host_are_lowercased() {
        assert_eq!(
            canon("HTTPS://MCP.Example.COM/mcp"),
            "https://mcp.example.com/mcp"
        );
    }

    #[test]
    fn default_https_port_is_dropped() {
        assert_eq!(canon("https://H:443/"), "https://h");
    }

    #[test]
    fn default_http_port_is_dropped() {
        assert_eq!(canon("http://localhost:80/mcp"), "http://localhost/mcp");
    }

    #[test]
    fn other_port_is_kept() {
        assert_eq!(canon("https://h:8443/mcp"), "https://h:8443/mcp");
    }

    #[test]
    fn https_port_on_http_is_kept() {
        assert_eq!(canon("http://h:443"), "http://h:443");
    }

    #[test]
    fn non_root_path_is_kept() {
        assert_eq!(canon("https://h/mcp"), "https://h/mcp");
    }

    #[test]
    fn trailing_slash_on_non_root_path_is_kept() {
        assert_eq!(canon("https://h/mcp/"), "https://h/mcp/");
    }

    #[test]
    fn path_case_is_kept() {
        assert_eq!(canon("https://h/MCP"), "https://h/MCP");
    }

    #[test]
    fn percent_encoding_is_kept() {
        assert_eq!(canon("https://h/a%2fb"), "https://h/a%2fb");
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(canon("https://h/a/./b/../mcp"), "https://h/a/mcp");
    }

    #[test]
    fn query_is_kept() {
        assert_eq!(canon("https://h/mcp?tenant=a"), "https://h/mcp?tenant=a");
    }

    #[test]
    fn query_on_root_is_kept_without_slash() {
        assert_eq!(canon("https://h/?tenant=a"), "https://h?tenant=a");
    }

    #[test]
    fn empty_query_is_dropped() {
        assert_eq!(canon("https://h/mcp?"), "https://h/mcp");
    }

    #[test]
    fn ipv6_host_is_bracketed() {
        assert_eq!(canon("http://[::1]:8080/mcp"), "http://[::1]:8080/mcp");
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        for input in [
            "HTTPS://H:443/",
            "https://h/?q",
            "https://h:8443/mcp/",
            "http://[0:0::1]/x",
        ] {
            let once = canon(input);
            assert_eq!(canon(&once), once, "{input}");
        }
    }

    #[test]
    fn fragment_is_refused() {
        assert_eq!(
            canonicalize("https://h/mcp#x"),
            Err(ResourceError::Fragment)
        );
    }

    #[test]
    fn empty_fragment_is_refused() {
        assert_eq!(canonicalize("https://h/mcp#"), Err(ResourceError::Fragment));
    }

    #[test]
    fn relative_uri_is_refused() {
        assert_eq!(canonicalize("/mcp"), Err(ResourceError::NotAbsolute));
    }

    #[test]
    fn urn_is_refused() {
        assert_eq!(
            canonicalize("urn:example:mcp"),
            Err(ResourceError::UnsupportedScheme)
        );
    }

    #[test]
    fn missing_authority_is_refused() {
        assert_eq!(canonicalize("https:h/mcp"), Err(ResourceError::MissingHost));
    }

    #[test]
    fn empty_authority_is_refused() {
        assert_eq!(
            canonicalize("https:///h/mcp"),
            Err(ResourceError::MissingHost)
        );
    }

    #[test]
    fn userinfo_is_refused() {
        assert_eq!(
            canonicalize("https://user@h/mcp"),
            Err(ResourceError::UserInfo)
        );
    }

    #[test]
    fn whitespace_is_refused() {
        assert_eq!(
            canonicalize("https://h/mcp\n"),
            Err(ResourceError::InvalidCharacter)
        );
    }

    #[test]
    fn invalid_port_is_refused() {
        assert_eq!(
            canonicalize("https://h:99999/"),
            Err(ResourceError::Malformed)
        );
    }

    #[test]
    fn root_forms_are_the_same_resource() {
        assert!(same_resource("https://h", "https://H:443/"));
    }

    #[test]
    fn trailing_slash_makes_a_different_resource() {
        assert!(!same_resource("https://h/mcp", "https://h/mcp/"));
    }

    #[test]
    fn different_scheme_is_a_different_resource() {
        assert!(!same_resource("https://h/mcp", "http://h/mcp"));
    }

    #[test]
    fn invalid_uri_is_never_the_same_resource() {
        assert!(!same_resource("https://h/#", "https://h/#"));
    }

    #[test]
    fn error_descriptions_have_no_forbidden_characters() {
        let all = [
            ResourceError::InvalidCharacter,
            ResourceError::NotAbsolute,
            ResourceError::Malformed,
            ResourceError::Fragment,
            ResourceError::UnsupportedScheme,
            ResourceError::MissingHost,
            ResourceError::UserInfo,
        ];
        for err in all {
            let text = err.to_string();
            assert!(
                text.bytes()
                    .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
                "{text}"
            );
        }
    }
}
