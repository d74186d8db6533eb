//! Resource URIs (RFC 8707) and well-known URLs (RFC 8414 §3.1, RFC 9728 §3.1).
//!
//! Gatehouse puts the *canonical* form of the resource URI in `aud`. The
//! rules here are the server's, so a verifier configured with any spelling
//! of its URI (`https://H:443/` or `https://h`) matches the tokens.

use url::Url;

/// Returns the canonical form of an `https`/`http` resource URI, or `None`
/// when it is not one Gatehouse would accept as a resource.
///
/// * scheme and host lowercase (IP literals normalised, IDNs in punycode);
/// * the scheme's default port dropped;
/// * a root path (`/` or empty) dropped: `https://h/` becomes `https://h`;
/// * any other path kept exactly (case, percent-encoding, trailing slash),
///   except that `.` and `..` segments are resolved;
/// * a non-empty query kept, an empty one dropped;
/// * userinfo, fragments, whitespace and non-ASCII refused.
///
/// The canonical form canonicalises to itself.
pub fn canonicalize(resource: &str) -> Option<String> {
    if !resource.bytes().all(allowed_in_uri) || resource.contains('#') {
        return None;
    }
    let url = Url::parse(resource).ok()?;
    if !matches!(url.scheme(), "https" | "http") || url.fragment().is_some() {
        return None;
    }
    // The URL parser is lenient about `https:h` and `https:///h`; a resource
    // needs a real authority after `//`.
    let (_, after_scheme) = resource.split_once(':')?;
    let authority = after_scheme
        .strip_prefix("//")?
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    if authority.is_empty()
        || authority.contains('@')
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let host = url.host_str()?;

    let mut out = String::with_capacity(resource.len());
    out.push_str(url.scheme());
    out.push_str("://");
    out.push_str(host);
    // `Url::port` is `None` for the scheme's default port.
    if let Some(port) = url.port() {
        out.push(':');
        out.push_str(&port.to_string());
    }
    if url.path() != "/" {
        out.push_str(url.path());
    }
    if let Some(query) = url.query().filter(|q| !q.is_empty()) {
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

/// Printable ASCII that may appear somewhere in an RFC 3986 URI.
fn allowed_in_uri(b: u8) -> bool {
    (0x21..=0x7E).contains(&b)
        && !matches!(
            b,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

/// Inserts `/.well-known/{suffix}` between the authority and the path of
/// `base` (RFC 9728 §3.1; RFC 8414 §3.1 once the issuer's terminating `/`
/// is removed). A root path adds nothing after the suffix, any other path
/// is kept as written (trailing slash included), and a query stays at the end.
///
/// `https://h/t/acme` + `oauth-authorization-server` gives
/// `https://h/.well-known/oauth-authorization-server/t/acme`.
pub fn well_known_url(base: &str, suffix: &str) -> Option<String> {
    let url = Url::parse(base).ok()?;
    if url.cannot_be_a_base() || url.host_str().is_none() {
        return None;
    }
    let mut out = format!("{}://{}", url.scheme(), url.host_str()?);
    if let Some(port) = url.port() {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.push_str("/.well-known/");
    out.push_str(suffix);
    let path = url.path();
    if path != "/" {
        out.push_str(path);
    }
    if let Some(query) = url.query().filter(|q| !q.is_empty()) {
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

/// The RFC 9728 metadata URL of a protected resource:
/// `https://h/mcp` → `https://h/.well-known/oauth-protected-resource/mcp`.
pub fn protected_resource_metadata_url(resource: &str) -> Option<String> {
    well_known_url(resource, "oauth-protected-resource")
}

/// Whether `claim` (one `aud` value) names the resource whose canonical
/// form is `canonical`.
pub(crate) fn audience_matches(claim: &str, canonical: &str) -> bool {
    claim == canonical || canonicalize(claim).is_some_and(|c| c == canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        canonicalize(s).unwrap_or_else(|| panic!("{s} refused"))
    }

    #[test]
    fn root_forms_share_one_canonical_form() {
        for s in [
            "https://h",
            "https://h/",
            "HTTPS://H:443/",
            "https://H",
            "https://h:443",
        ] {
            assert_eq!(canon(s), "https://h", "{s}");
        }
    }

    #[test]
    fn default_http_port_dropped_other_ports_kept() {
        assert_eq!(canon("http://localhost:80/mcp"), "http://localhost/mcp");
        assert_eq!(canon("https://h:8443/mcp"), "https://h:8443/mcp");
        assert_eq!(canon("http://h:443"), "http://h:443");
    }

    #[test]
    fn paths_are_kept_exactly() {
        assert_eq!(canon("https://h/mcp"), "https://h/mcp");
        assert_eq!(canon("https://h/mcp/"), "https://h/mcp/");
        assert_eq!(canon("https://h/MCP"), "https://h/MCP");
        assert_eq!(canon("https://h/a%2fb"), "https://h/a%2fb");
        assert_eq!(canon("https://h/a/./b/../mcp"), "https://h/a/mcp");
    }

    #[test]
    fn queries() {
        assert_eq!(canon("https://h/mcp?t=a"), "https://h/mcp?t=a");
        assert_eq!(canon("https://h/?t=a"), "https://h?t=a");
        assert_eq!(canon("https://h/mcp?"), "https://h/mcp");
    }

    #[test]
    fn ipv6_literal() {
        assert_eq!(canon("http://[::1]:8080/mcp"), "http://[::1]:8080/mcp");
    }

    #[test]
    fn fixed_point() {
        for s in ["HTTPS://H:443/", "https://h/?q", "https://h:8443/mcp/"] {
            let once = canon(s);
            assert_eq!(canon(&once), once);
        }
    }

    #[test]
    fn refused() {
        for s in [
            "https://h/mcp#x",
            "https://h/mcp#",
            "/mcp",
            "urn:example:mcp",
            "https:h/mcp",
            "https:///h/mcp",
            "https://user@h/mcp",
            "https://h/mcp\n",
            "https://h:99999/",
            "ftp://h/mcp",
        ] {
            assert_eq!(canonicalize(s), None, "{s:?}");
        }
    }

    #[test]
    fn audience_comparison_is_canonical() {
        assert!(audience_matches("https://H/", "https://h"));
        assert!(audience_matches("https://h", "https://h"));
        assert!(!audience_matches("https://h/mcp/", "https://h/mcp"));
        assert!(!audience_matches("http://h/mcp", "https://h/mcp"));
    }

    #[test]
    fn well_known_path_insertion() {
        assert_eq!(
            well_known_url("https://h/t/acme", "oauth-authorization-server").as_deref(),
            Some("https://h/.well-known/oauth-authorization-server/t/acme")
        );
        assert_eq!(
            well_known_url("https://h", "oauth-authorization-server").as_deref(),
            Some("https://h/.well-known/oauth-authorization-server")
        );
        assert_eq!(
            well_known_url("http://127.0.0.1:8080/", "oauth-authorization-server").as_deref(),
            Some("http://127.0.0.1:8080/.well-known/oauth-authorization-server")
        );
    }

    #[test]
    fn protected_resource_metadata_urls() {
        assert_eq!(
            protected_resource_metadata_url("https://h/mcp").as_deref(),
            Some("https://h/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(
            protected_resource_metadata_url("https://h/mcp/").as_deref(),
            Some("https://h/.well-known/oauth-protected-resource/mcp/")
        );
        assert_eq!(
            protected_resource_metadata_url("https://h/").as_deref(),
            Some("https://h/.well-known/oauth-protected-resource")
        );
        assert_eq!(
            protected_resource_metadata_url("http://127.0.0.1:8765/mcp").as_deref(),
            Some("http://127.0.0.1:8765/.well-known/oauth-protected-resource/mcp")
        );
    }
}
