//! Redirect URI rules: what a client may register, and when a requested
//! `redirect_uri` matches a registered one.
//!
//! Matching is exact string comparison (OAuth 2.1 §4.1.3, RFC 9700 §4.1.3),
//! with one exception from RFC 8252 §7.3: a native app listening on a loopback
//! interface picks its port at run time, so for an `http` URI on a loopback
//! host literal the port is ignored. Nothing else is normalised: no case
//! folding, no path or percent-encoding normalisation.

use std::net::{Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Why a redirect URI cannot be registered. `Display` is fit for
/// `error_description`; the URI itself is never echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    /// Whitespace, control characters, non-ASCII, or one of `` "<>\^`{|} ``.
    #[error("redirect URI contains a character that is not allowed in a URI")]
    InvalidCharacter,
    /// A relative reference.
    #[error("redirect URI must be an absolute URI")]
    NotAbsolute,
    /// Not parseable as a URI (bad port, bad host, ...).
    #[error("redirect URI is not a valid URI")]
    Malformed,
    /// A `#fragment`, even an empty one.
    #[error("redirect URI must not contain a fragment")]
    Fragment,
    /// A `*` anywhere, e.g. `https://*.example.com/cb`.
    #[error("redirect URI must not contain a wildcard")]
    Wildcard,
    /// `user:password@` in the authority.
    #[error("redirect URI must not contain user information")]
    UserInfo,
    /// `http` or `https` without `//host`.
    #[error("redirect URI must include a host")]
    MissingHost,
    /// `http` on a host that is not a loopback literal.
    #[error("http redirect URIs are allowed only for the loopback hosts 127.0.0.1, [::1] and localhost; use https")]
    HttpNotLoopback,
    /// Neither `https` nor `http`, and private-use schemes are not allowed for this client.
    #[error("redirect URI must use https, or http on a loopback host")]
    SchemeNotAllowed,
    /// A private-use scheme that is not a reverse domain name.
    #[error(
        "a private-use redirect URI scheme must be a reverse domain name such as com.example.app"
    )]
    PrivateSchemeWithoutDot,
}

/// Checks a redirect URI a client wants to register.
///
/// Accepted: an absolute URI without fragment, userinfo or `*`, made only of
/// printable ASCII URI characters, whose scheme is
/// * `https` with a host;
/// * `http` whose host is written as a loopback literal: an IPv4 address in
///   `127.0.0.0/8` in dotted-decimal form, `[::1]`, or `localhost`
///   (RFC 8252 §7.3, §8.3);
/// * when `native_ok`, a private-use scheme containing a dot, i.e. a reverse
///   domain name such as `com.example.app:/callback` (RFC 8252 §7.1).
pub fn validate_registered(uri: &str, native_ok: bool) -> Result<(), RedirectUriError> {
    if !uri.bytes().all(is_uri_char) {
        return Err(RedirectUriError::InvalidCharacter);
    }
    let url = Url::parse(uri).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => RedirectUriError::NotAbsolute,
        _ => RedirectUriError::Malformed,
    })?;
    if uri.contains('#') || url.fragment().is_some() {
        return Err(RedirectUriError::Fragment);
    }
    if uri.contains('*') || url.host_str().is_some_and(|h| h.contains('*')) {
        return Err(RedirectUriError::Wildcard);
    }
    let raw = RawUri::split(uri).ok_or(RedirectUriError::NotAbsolute)?;
    if raw.authority.is_some_and(|a| a.contains('@'))
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(RedirectUriError::UserInfo);
    }
    let raw_host = raw
        .authority
        .map(|authority| split_host_port(authority).0)
        .filter(|host| !host.is_empty());
    match (url.scheme(), raw_host) {
        ("https" | "http", None) => return Err(RedirectUriError::MissingHost),
        ("http", Some(host)) if !is_loopback_literal(host) => {
            return Err(RedirectUriError::HttpNotLoopback)
        }
        ("https" | "http", Some(_)) => {}
        _ if !native_ok => return Err(RedirectUriError::SchemeNotAllowed),
        (scheme, _) if !scheme.contains('.') => {
            return Err(RedirectUriError::PrivateSchemeWithoutDot)
        }
        _ => {}
    }
    Ok(())
}

/// Whether a requested `redirect_uri` matches a registered one.
///
/// Exact string comparison, except that when the registered URI is `http`
/// on a loopback host literal (`127.0.0.1` or another `127.x.y.z`, `[::1]`,
/// `localhost`), the requested port may differ, be added or be left out;
/// scheme, host literal, path and query must still be byte-for-byte
/// identical (`localhost` does not match `127.0.0.1`). A requested URI with
/// userinfo or a fragment never matches.
pub fn matches(registered: &str, requested: &str) -> bool {
    let Some(req) = RawUri::split(requested) else {
        return false;
    };
    if requested.contains('#')
        || !requested.bytes().all(is_uri_char)
        || req.authority.is_some_and(|a| a.contains('@'))
    {
        return false;
    }
    registered == requested || loopback_matches(registered, &req)
}

/// The part of the URI to show a user ("you will be sent to ..."): the host
/// for `http`/`https` (lowercased, IDNs in punycode), the scheme for
/// private-use schemes, or an empty string if `uri` does not parse.
pub fn host_for_display(uri: &str) -> String {
    match Url::parse(uri) {
        Ok(url) => match url.scheme() {
            "http" | "https" => url.host_str().unwrap_or_default().to_owned(),
            scheme => scheme.to_owned(),
        },
        Err(_) => String::new(),
    }
}

/// Whether the URI is `http` or `https` on a loopback host (`127.0.0.0/8`,
/// `::1`, `localhost`): a redirect that never leaves the user's machine.
pub fn is_loopback_only(uri: &str) -> bool {
    let Ok(url) = Url::parse(uri) else {
        return false;
    };
    matches!(url.scheme(), "http" | "https")
        && match url.host() {
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip == Ipv6Addr::LOCALHOST,
            Some(Host::Domain(name)) => name == "localhost",
            None => false,
        }
}

/// RFC 8252 §7.3: port-agnostic comparison for loopback `http` URIs.
fn loopback_matches(registered: &str, req: &RawUri<'_>) -> bool {
    let Some(reg) = RawUri::split(registered) else {
        return false;
    };
    let (Some(reg_authority), Some(req_authority)) = (reg.authority, req.authority) else {
        return false;
    };
    let (reg_host, reg_port) = split_host_port(reg_authority);
    let (req_host, req_port) = split_host_port(req_authority);
    reg.scheme.eq_ignore_ascii_case("http")
        && is_loopback_literal(reg_host)
        && reg_port.is_none_or(is_valid_port)
        && req.scheme == reg.scheme
        && req_host == reg_host
        && req_port.is_none_or(is_valid_port)
        && req.rest == reg.rest
}

/// A URI cut at its raw delimiters, without any decoding or normalisation.
struct RawUri<'a> {
    scheme: &'a str,
    /// What follows `//` up to the next `/`, `?` or `#`, if there is a `//`.
    authority: Option<&'a str>,
    /// Path, query and fragment, exactly as written.
    rest: &'a str,
}

impl<'a> RawUri<'a> {
    fn split(uri: &'a str) -> Option<Self> {
        let (scheme, after) = uri.split_once(':')?;
        if scheme.is_empty() {
            return None;
        }
        Some(match after.strip_prefix("//") {
            Some(hier) => {
                let end = hier.find(['/', '?', '#']).unwrap_or(hier.len());
                let (authority, rest) = hier.split_at(end);
                RawUri {
                    scheme,
                    authority: Some(authority),
                    rest,
                }
            }
            None => RawUri {
                scheme,
                authority: None,
                rest: after,
            },
        })
    }
}

/// Splits a raw authority (without userinfo) into host and optional port.
/// A malformed bracketed host is returned whole, so it matches nothing special.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        if let Some(close) = authority.find(']') {
            let (host, tail) = authority.split_at(close + 1);
            if tail.is_empty() {
                return (host, None);
            }
            if let Some(port) = tail.strip_prefix(':') {
                return (host, Some(port));
            }
        }
        return (authority, None);
    }
    match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

/// `localhost`, `[::1]`, or a dotted-decimal IPv4 literal in `127.0.0.0/8`.
fn is_loopback_literal(host: &str) -> bool {
    host == "localhost"
        || host == "[::1]"
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// 1 to 5 digits with a value in 1..=65535.
fn is_valid_port(port: &str) -> bool {
    (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0)
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

    fn native(uri: &str) -> Result<(), RedirectUriError> {
        validate_registered(uri, true)
    }

    fn web(uri: &str) -> Result<(), RedirectUriError> {
        validate_registered(uri, false)
    }

    // validate_registered

    #[test]
    fn https_uri_is_accepted() {
        assert_eq!(web("https://app.example.com/callback?x=1"), Ok(()));
    }

    #[test]
    fn http_loopback_ipv4_is_accepted() {
        assert_eq!(web("http://127.0.0.1/callback"), Ok(()));
    }

    #[test]
    fn http_other_127_address_is_accepted() {
        assert_eq!(web("http://127.10.20.30:8080/callback"), Ok(()));
    }

    #[test]
    fn http_ipv6_loopback_is_accepted() {
        assert_eq!(web("http://[::1]:5000/callback"), Ok(()));
    }

    #[test]
    fn http_localhost_is_accepted() {
        assert_eq!(web("http://localhost/callback"), Ok(()));
    }

    #[test]
    fn http_non_loopback_is_refused() {
        assert_eq!(
            web("http://app.example.com/callback"),
            Err(RedirectUriError::HttpNotLoopback)
        );
    }

    #[test]
    fn http_localhost_lookalike_is_refused() {
        assert_eq!(
            web("http://localhost.example.com/callback"),
            Err(RedirectUriError::HttpNotLoopback)
        );
    }

    #[test]
    fn http_loopback_in_shorthand_form_is_refused() {
        assert_eq!(
            web("http://127.1/callback"),
            Err(RedirectUriError::HttpNotLoopback)
        );
    }

    #[test]
    fn http_non_loopback_ipv6_is_refused() {
        assert_eq!(
            web("http://[::2]/callback"),
            Err(RedirectUriError::HttpNotLoopback)
        );
    }

    #[test]
    fn relative_uri_is_refused() {
        assert_eq!(web("/callback"), Err(RedirectUriError::NotAbsolute));
    }

    #[test]
    fn invalid_port_is_refused() {
        assert_eq!(
            web("https://app.example.com:99999/callback"),
            Err(RedirectUriError::Malformed)
        );
    }

    #[test]
    fn fragment_is_refused() {
        assert_eq!(
            web("https://app.example.com/callback#x"),
            Err(RedirectUriError::Fragment)
        );
    }

    #[test]
    fn empty_fragment_is_refused() {
        assert_eq!(
            web("https://app.example.com/callback#"),
            Err(RedirectUriError::Fragment)
        );
    }

    #[test]
    fn userinfo_is_refused() {
        assert_eq!(
            web("https://user:pass@app.example.com/callback"),
            Err(RedirectUriError::UserInfo)
        );
    }

    #[test]
    fn empty_userinfo_is_refused() {
        assert_eq!(
            web("https://@app.example.com/callback"),
            Err(RedirectUriError::UserInfo)
        );
    }

    #[test]
    fn wildcard_host_is_refused() {
        assert_eq!(
            web("https://*.example.com/callback"),
            Err(RedirectUriError::Wildcard)
        );
    }

    #[test]
    fn percent_encoded_wildcard_host_is_refused() {
        assert_eq!(
            web("https://%2A.example.com/callback"),
            Err(RedirectUriError::Wildcard)
        );
    }

    #[test]
    fn wildcard_path_is_refused() {
        assert_eq!(
            web("https://app.example.com/*"),
            Err(RedirectUriError::Wildcard)
        );
    }

    #[test]
    fn whitespace_is_refused() {
        assert_eq!(
            web("https://app.example.com/call back"),
            Err(RedirectUriError::InvalidCharacter)
        );
    }

    #[test]
    fn control_character_is_refused() {
        assert_eq!(
            web("https://app.example.com/call\nback"),
            Err(RedirectUriError::InvalidCharacter)
        );
    }

    #[test]
    fn backslash_is_refused() {
        assert_eq!(
            web("https://evil.example\\@app.example.com/"),
            Err(RedirectUriError::InvalidCharacter)
        );
    }

    #[test]
    fn non_ascii_is_refused() {
        assert_eq!(
            web("https://bücher.example/callback"),
            Err(RedirectUriError::InvalidCharacter)
        );
    }

    #[test]
    fn https_without_authority_is_refused() {
        assert_eq!(
            web("https:app.example.com/callback"),
            Err(RedirectUriError::MissingHost)
        );
    }

    #[test]
    fn https_with_empty_authority_is_refused() {
        assert_eq!(
            web("https:///app.example.com/callback"),
            Err(RedirectUriError::MissingHost)
        );
    }

    #[test]
    fn private_use_scheme_with_dot_is_accepted_for_native_clients() {
        assert_eq!(native("com.example.app:/oauth2redirect"), Ok(()));
    }

    #[test]
    fn private_use_scheme_is_refused_for_web_clients() {
        assert_eq!(
            web("com.example.app:/oauth2redirect"),
            Err(RedirectUriError::SchemeNotAllowed)
        );
    }

    #[test]
    fn private_use_scheme_without_dot_is_refused() {
        assert_eq!(
            native("myapp:/oauth2redirect"),
            Err(RedirectUriError::PrivateSchemeWithoutDot)
        );
    }

    #[test]
    fn javascript_scheme_is_refused() {
        assert_eq!(
            native("javascript:alert(1)"),
            Err(RedirectUriError::PrivateSchemeWithoutDot)
        );
    }

    #[test]
    fn private_use_scheme_with_userinfo_is_refused() {
        assert_eq!(
            native("com.example.app://user@callback/"),
            Err(RedirectUriError::UserInfo)
        );
    }

    #[test]
    fn error_descriptions_have_no_forbidden_characters() {
        let all = [
            RedirectUriError::InvalidCharacter,
            RedirectUriError::NotAbsolute,
            RedirectUriError::Malformed,
            RedirectUriError::Fragment,
            RedirectUriError::Wildcard,
            RedirectUriError::UserInfo,
            RedirectUriError::MissingHost,
            RedirectUriError::HttpNotLoopback,
            RedirectUriError::SchemeNotAllowed,
            RedirectUriError::PrivateSchemeWithoutDot,
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

    // matches

    #[test]
    fn identical_uris_match() {
        assert!(matches(
            "https://app.example.com/cb?x=1",
            "https://app.example.com/cb?x=1"
        ));
    }

    #[test]
    fn https_port_must_not_differ() {
        assert!(!matches(
            "https://app.example.com/cb",
            "https://app.example.com:8443/cb"
        ));
    }

    #[test]
    fn https_default_port_is_not_equivalent() {
        assert!(!matches(
            "https://app.example.com/cb",
            "https://app.example.com:443/cb"
        ));
    }

    #[test]
    fn https_loopback_port_must_not_differ() {
        assert!(!matches(
            "https://127.0.0.1/cb",
            "https://127.0.0.1:8443/cb"
        ));
    }

    #[test]
    fn non_loopback_http_port_must_not_differ() {
        assert!(!matches(
            "http://app.example.com/cb",
            "http://app.example.com:8080/cb"
        ));
    }

    #[test]
    fn host_case_must_be_identical() {
        assert!(!matches(
            "https://app.example.com/cb",
            "https://APP.example.com/cb"
        ));
    }

    #[test]
    fn loopback_port_may_differ() {
        assert!(matches(
            "http://127.0.0.1:1234/cb",
            "http://127.0.0.1:49152/cb"
        ));
    }

    #[test]
    fn loopback_port_may_be_added() {
        assert!(matches("http://127.0.0.1/cb", "http://127.0.0.1:49152/cb"));
    }

    #[test]
    fn loopback_port_may_be_left_out() {
        assert!(matches("http://127.0.0.1:1234/cb", "http://127.0.0.1/cb"));
    }

    #[test]
    fn other_127_address_port_may_differ() {
        assert!(matches("http://127.0.0.2/cb", "http://127.0.0.2:49152/cb"));
    }

    #[test]
    fn ipv6_loopback_port_may_differ() {
        assert!(matches("http://[::1]/cb", "http://[::1]:49152/cb"));
    }

    #[test]
    fn localhost_port_may_differ() {
        assert!(matches("http://localhost/cb", "http://localhost:49152/cb"));
    }

    #[test]
    fn loopback_without_path_port_may_differ() {
        assert!(matches("http://127.0.0.1", "http://127.0.0.1:49152"));
    }

    #[test]
    fn localhost_does_not_match_127_0_0_1() {
        assert!(!matches("http://localhost/cb", "http://127.0.0.1:49152/cb"));
    }

    #[test]
    fn loopback_host_must_be_identical() {
        assert!(!matches("http://127.0.0.1/cb", "http://127.0.0.2/cb"));
    }

    #[test]
    fn loopback_scheme_must_be_identical() {
        assert!(!matches("http://127.0.0.1/cb", "https://127.0.0.1/cb"));
    }

    #[test]
    fn loopback_trailing_slash_must_be_identical() {
        assert!(!matches("http://127.0.0.1/cb", "http://127.0.0.1/cb/"));
    }

    #[test]
    fn loopback_query_must_be_identical() {
        assert!(!matches("http://127.0.0.1/cb", "http://127.0.0.1/cb?x=1"));
    }

    #[test]
    fn loopback_path_is_not_normalised() {
        assert!(!matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5000/x/../cb"
        ));
    }

    #[test]
    fn loopback_percent_encoding_is_not_normalised() {
        assert!(!matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5000/%63b"
        ));
    }

    #[test]
    fn loopback_port_must_be_numeric() {
        assert!(!matches("http://127.0.0.1/cb", "http://127.0.0.1:80x/cb"));
    }

    #[test]
    fn loopback_empty_port_does_not_match() {
        assert!(!matches("http://127.0.0.1/cb", "http://127.0.0.1:/cb"));
    }

    #[test]
    fn loopback_port_out_of_range_does_not_match() {
        assert!(!matches("http://127.0.0.1/cb", "http://127.0.0.1:65536/cb"));
    }

    #[test]
    fn requested_fragment_never_matches() {
        assert!(!matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5000/cb#x"
        ));
    }

    #[test]
    fn identical_uris_with_fragment_do_not_match() {
        assert!(!matches(
            "https://app.example.com/cb#x",
            "https://app.example.com/cb#x"
        ));
    }

    #[test]
    fn requested_userinfo_never_matches() {
        assert!(!matches(
            "http://127.0.0.1/cb",
            "http://u@127.0.0.1:5000/cb"
        ));
    }

    #[test]
    fn requested_port_followed_by_userinfo_never_matches() {
        assert!(!matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:80@evil.example/cb"
        ));
    }

    #[test]
    fn requested_backslash_never_matches() {
        assert!(!matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:80\\@evil.example/cb"
        ));
    }

    // host_for_display / is_loopback_only

    #[test]
    fn display_host_is_the_https_host() {
        assert_eq!(
            host_for_display("https://App.Example.com:8443/cb"),
            "app.example.com"
        );
    }

    #[test]
    fn display_host_of_private_use_scheme_is_the_scheme() {
        assert_eq!(
            host_for_display("com.example.app:/oauth2redirect"),
            "com.example.app"
        );
    }

    #[test]
    fn display_host_of_idn_is_punycode() {
        assert_eq!(
            host_for_display("https://bücher.example/cb"),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn display_host_of_invalid_uri_is_empty() {
        assert_eq!(host_for_display("not a uri"), "");
    }

    #[test]
    fn loopback_ipv4_is_loopback_only() {
        assert!(is_loopback_only("http://127.0.0.1:5000/cb"));
    }

    #[test]
    fn ipv6_loopback_is_loopback_only() {
        assert!(is_loopback_only("http://[::1]/cb"));
    }

    #[test]
    fn localhost_is_loopback_only() {
        assert!(is_loopback_only("http://localhost/cb"));
    }

    #[test]
    fn public_host_is_not_loopback_only() {
        assert!(!is_loopback_only("https://app.example.com/cb"));
    }

    #[test]
    fn private_use_scheme_is_not_loopback_only() {
        assert!(!is_loopback_only("com.example.app:/cb"));
    }
}
