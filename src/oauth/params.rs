//! Request parameters of `/authorize` (query string) and `/token`,
//! `/introspect`, `/revoke` (`application/x-www-form-urlencoded` body),
//! parsed with the rules of RFC 6749 §3.1 and §3.2:
//!
//! * a parameter sent without a value is treated as omitted;
//! * a parameter must not be sent more than once, except the ones the
//!   endpoint declares repeatable (such as `resource`, RFC 8707 §2);
//! * unknown parameters are kept but ignored by the endpoints.
//!
//! Names and values must not hold control characters (C0 including NUL,
//! DEL, C1): no OAuth parameter, identifier or token has one, and NUL is
//! refused by PostgreSQL, so such input is answered `invalid_request` here
//! and never reaches the database (see [`has_control`]).
//!
//! Sizes are bounded so that a request cannot make the server do unbounded
//! work: at most [`MAX_PARAMS`] parameters, names of at most
//! [`MAX_NAME_LEN`] bytes and values of at most [`MAX_VALUE_LEN`] bytes
//! (after percent-decoding).

use std::collections::BTreeMap;
use std::fmt;

/// Most `name=value` pairs in one request (empty ones included).
pub const MAX_PARAMS: usize = 64;
/// Longest parameter name, in bytes after decoding.
pub const MAX_NAME_LEN: usize = 64;
/// Longest parameter value, in bytes after decoding.
pub const MAX_VALUE_LEN: usize = 4096;

/// Why request parameters were refused. `Display` is fit for
/// `error_description`: parameter names are shown with any character that is
/// not allowed there replaced by `?`, and values are never shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A non-repeatable parameter appeared more than once (holds the name).
    #[error("parameter '{}' was sent more than once", display_name(.0))]
    Repeated(String),
    /// A required parameter is absent or empty (holds the name).
    #[error("missing required parameter '{}'", display_name(.0))]
    Missing(String),
    /// More than [`MAX_PARAMS`] parameters.
    #[error("the request has more than 64 parameters")]
    TooMany,
    /// A name longer than [`MAX_NAME_LEN`] bytes.
    #[error("a parameter name is longer than 64 bytes")]
    NameTooLong,
    /// A value longer than [`MAX_VALUE_LEN`] bytes (holds the name).
    #[error("the value of parameter '{}' is longer than 4096 bytes", display_name(.0))]
    ValueTooLong(String),
    /// A name or value is not UTF-8 once percent-decoded.
    #[error("the request parameters are not valid UTF-8")]
    InvalidUtf8,
    /// A name or value holds a control character (holds the name).
    #[error("parameter '{}' contains a control character", display_name(.0))]
    ControlCharacter(String),
    /// The body is not `application/x-www-form-urlencoded`.
    #[error("the request body must be sent as application/x-www-form-urlencoded")]
    UnsupportedContentType,
}

/// Decoded request parameters. Only parameters with a non-empty value are
/// kept. `Debug` shows the names only, since values carry secrets
/// (`client_secret`, `code`, `code_verifier`, `refresh_token`, ...).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Params {
    map: BTreeMap<String, Vec<String>>,
}

impl Params {
    /// Parses a query string or `application/x-www-form-urlencoded` body
    /// (without the leading `?`).
    ///
    /// `+` decodes to a space and `%XX` to a byte; a `%` not followed by two
    /// hex digits is kept as is (WHATWG URL). Empty pairs (`&&`) are skipped;
    /// a pair without `=` has an empty value; pairs with an empty name or
    /// value are treated as omitted. Parameters named in `repeatable` may
    /// appear several times; any other name twice is an error.
    pub fn parse(input: &[u8], repeatable: &[&str]) -> Result<Params, ParamError> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (index, pair) in input
            .split(|&b| b == b'&')
            .filter(|pair| !pair.is_empty())
            .enumerate()
        {
            if index >= MAX_PARAMS {
                return Err(ParamError::TooMany);
            }
            let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            let name = percent_decode(raw_name);
            if name.len() > MAX_NAME_LEN {
                return Err(ParamError::NameTooLong);
            }
            let name = String::from_utf8(name).map_err(|_| ParamError::InvalidUtf8)?;
            let value = percent_decode(raw_value);
            if value.len() > MAX_VALUE_LEN {
                return Err(ParamError::ValueTooLong(name));
            }
            let value = String::from_utf8(value).map_err(|_| ParamError::InvalidUtf8)?;
            if has_control(&name) || has_control(&value) {
                return Err(ParamError::ControlCharacter(name));
            }
            if name.is_empty() || value.is_empty() {
                continue;
            }
            match map.get_mut(&name) {
                Some(values) if repeatable.contains(&name.as_str()) => values.push(value),
                Some(_) => return Err(ParamError::Repeated(name)),
                None => {
                    map.insert(name, vec![value]);
                }
            }
        }
        Ok(Params { map })
    }

    /// The value of `name`, or its first value if it is repeatable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map
            .get(name)
            .and_then(|values| values.first())
            .map(String::as_str)
    }

    /// Every value of `name`, in the order sent; empty if absent.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.map
            .get(name)
            .map(|values| values.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The value of `name`, or [`ParamError::Missing`].
    pub fn require(&self, name: &str) -> Result<&str, ParamError> {
        self.get(name)
            .ok_or_else(|| ParamError::Missing(name.to_owned()))
    }

    /// Whether `name` was sent with a non-empty value.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Params")
            .field("names", &self.map.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Whether `s` holds a control character (C0 including NUL, DEL, C1). No
/// client id, token, code, handle, URI or other protocol value has one;
/// input that does is refused before any lookup (PostgreSQL refuses NUL in
/// text, which would otherwise surface as a storage failure).
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Checks a `Content-Type` header value for a form body:
/// `application/x-www-form-urlencoded`, case-insensitive, optionally followed
/// by parameters such as `; charset=UTF-8`.
pub fn check_form_content_type(content_type: Option<&str>) -> Result<(), ParamError> {
    let essence = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|essence| essence.trim_matches(|c| c == ' ' || c == '\t'))
        .unwrap_or_default();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(())
    } else {
        Err(ParamError::UnsupportedContentType)
    }
}

/// `application/x-www-form-urlencoded` byte decoding: `+` is a space, `%XX`
/// a byte, anything else (including a stray `%`) itself.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input
                    .get(i + 1..i + 3)
                    .and_then(|h| Some((hex_value(h[0])? << 4) | hex_value(h[1])?));
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A parameter name as it may appear in `error_description`
/// (RFC 6749 §5.2 allows %x20-21 / %x23-5B / %x5D-7E): printable ASCII other
/// than quotes and backslash, every other character shown as `?`, at most
/// [`MAX_NAME_LEN`] characters.
fn display_name(name: &str) -> String {
    name.chars()
        .take(MAX_NAME_LEN)
        .map(|c| match c {
            '"' | '\'' | '\\' => '?',
            c if c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPEATABLE: &[&str] = &["resource"];

    fn parse(input: &str) -> Result<Params, ParamError> {
        Params::parse(input.as_bytes(), REPEATABLE)
    }

    fn is_error_description(text: &str) -> bool {
        text.bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
    }

    #[test]
    fn parameters_are_parsed() {
        let params = parse("response_type=code&client_id=abc").unwrap();
        assert_eq!(params.get("client_id"), Some("abc"));
    }

    #[test]
    fn percent_escapes_and_plus_are_decoded() {
        let params = parse("redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb&scope=a+b").unwrap();
        assert_eq!(params.get("redirect_uri"), Some("http://127.0.0.1/cb"));
    }

    #[test]
    fn plus_is_decoded_as_space() {
        assert_eq!(parse("scope=a+b").unwrap().get("scope"), Some("a b"));
    }

    #[test]
    fn encoded_plus_is_kept() {
        assert_eq!(parse("x=a%2Bb").unwrap().get("x"), Some("a+b"));
    }

    #[test]
    fn malformed_percent_escape_is_kept_literally() {
        assert_eq!(parse("x=%zz%4").unwrap().get("x"), Some("%zz%4"));
    }

    #[test]
    fn names_are_decoded() {
        assert_eq!(parse("client%5Fid=a").unwrap().get("client_id"), Some("a"));
    }

    #[test]
    fn repeated_parameter_is_refused() {
        let err = parse("scope=a&scope=b").unwrap_err();
        assert_eq!(err, ParamError::Repeated("scope".to_owned()));
        assert_eq!(err.to_string(), "parameter 'scope' was sent more than once");
    }

    #[test]
    fn repeated_unknown_parameter_is_refused() {
        assert_eq!(
            parse("foo=a&foo=b"),
            Err(ParamError::Repeated("foo".to_owned()))
        );
    }

    #[test]
    fn repeated_parameter_with_same_value_is_refused() {
        assert_eq!(
            parse("code=a&code=a"),
            Err(ParamError::Repeated("code".to_owned()))
        );
    }

    #[test]
    fn repeatable_parameter_may_repeat() {
        let params = parse("resource=https%3A%2F%2Fa&resource=https%3A%2F%2Fb").unwrap();
        assert_eq!(params.get_all("resource"), ["https://a", "https://b"]);
    }

    #[test]
    fn get_returns_first_value_of_repeatable_parameter() {
        let params = parse("resource=a&resource=b").unwrap();
        assert_eq!(params.get("resource"), Some("a"));
    }

    #[test]
    fn get_all_of_absent_parameter_is_empty() {
        assert!(parse("a=1").unwrap().get_all("resource").is_empty());
    }

    #[test]
    fn empty_value_is_treated_as_omitted() {
        let params = parse("state=&client_id=abc").unwrap();
        assert!(!params.contains("state"));
    }

    #[test]
    fn parameter_without_equals_is_treated_as_omitted() {
        assert_eq!(parse("state&a=1").unwrap().get("state"), None);
    }

    #[test]
    fn empty_value_does_not_count_as_a_repeat() {
        assert_eq!(
            parse("scope=&scope=read").unwrap().get("scope"),
            Some("read")
        );
    }

    #[test]
    fn empty_name_is_ignored() {
        assert_eq!(parse("=x&a=1").unwrap(), parse("a=1").unwrap());
    }

    #[test]
    fn empty_pairs_are_skipped() {
        assert_eq!(parse("&a=1&&b=2&").unwrap().get("b"), Some("2"));
    }

    #[test]
    fn empty_input_has_no_parameters() {
        assert_eq!(parse("").unwrap(), Params::default());
    }

    fn many(n: usize) -> String {
        (0..n)
            .map(|i| format!("p{i}=v"))
            .collect::<Vec<_>>()
            .join("&")
    }

    #[test]
    fn sixty_four_parameters_are_accepted() {
        assert!(parse(&many(64)).unwrap().contains("p63"));
    }

    #[test]
    fn sixty_five_parameters_are_refused() {
        assert_eq!(parse(&many(65)), Err(ParamError::TooMany));
    }

    #[test]
    fn name_of_64_bytes_is_accepted() {
        let name = "n".repeat(64);
        assert!(parse(&format!("{name}=v")).unwrap().contains(&name));
    }

    #[test]
    fn name_longer_than_64_bytes_is_refused() {
        assert_eq!(
            parse(&format!("{}=v", "n".repeat(65))),
            Err(ParamError::NameTooLong)
        );
    }

    #[test]
    fn value_of_4096_bytes_is_accepted() {
        let value = "v".repeat(4096);
        assert_eq!(
            parse(&format!("state={value}")).unwrap().get("state"),
            Some(value.as_str())
        );
    }

    #[test]
    fn value_longer_than_4096_bytes_is_refused() {
        let err = parse(&format!("state={}", "v".repeat(4097))).unwrap_err();
        assert_eq!(err, ParamError::ValueTooLong("state".to_owned()));
    }

    #[test]
    fn value_length_is_measured_after_decoding() {
        let params = parse(&format!("state={}", "%41".repeat(4096))).unwrap();
        assert_eq!(params.get("state").map(str::len), Some(4096));
    }

    #[test]
    fn invalid_utf8_escape_is_refused() {
        assert_eq!(parse("state=%FF"), Err(ParamError::InvalidUtf8));
    }

    #[test]
    fn invalid_utf8_raw_byte_is_refused() {
        assert_eq!(
            Params::parse(b"state=\xff", REPEATABLE),
            Err(ParamError::InvalidUtf8)
        );
    }

    #[test]
    fn nul_in_a_value_is_refused() {
        assert_eq!(
            parse("client_id=a%00b"),
            Err(ParamError::ControlCharacter("client_id".to_owned()))
        );
    }

    #[test]
    fn raw_control_characters_are_refused() {
        for input in [&b"state=a\x01"[..], b"code=\x7f", b"x=\xc2\x85", b"a\x00=1"] {
            assert!(
                matches!(
                    Params::parse(input, REPEATABLE),
                    Err(ParamError::ControlCharacter(_))
                ),
                "{input:?}"
            );
        }
    }

    #[test]
    fn escaped_newline_and_tab_are_refused() {
        for input in ["state=a%0Ab", "scope=a%09b", "redirect_uri=x%0D"] {
            assert!(
                matches!(parse(input), Err(ParamError::ControlCharacter(_))),
                "{input}"
            );
        }
    }

    #[test]
    fn unicode_letters_are_not_control_characters() {
        assert_eq!(
            parse("login_hint=%C3%A9").unwrap().get("login_hint"),
            Some("\u{e9}")
        );
    }

    #[test]
    fn utf8_escape_is_decoded() {
        assert_eq!(parse("state=%C3%A9").unwrap().get("state"), Some("\u{e9}"));
    }

    #[test]
    fn require_returns_present_value() {
        assert_eq!(parse("code=xyz").unwrap().require("code"), Ok("xyz"));
    }

    #[test]
    fn require_names_missing_parameter() {
        let err = parse("a=1").unwrap().require("code").unwrap_err();
        assert_eq!(err.to_string(), "missing required parameter 'code'");
    }

    #[test]
    fn require_treats_empty_value_as_missing() {
        assert_eq!(
            parse("code=").unwrap().require("code"),
            Err(ParamError::Missing("code".to_owned()))
        );
    }

    #[test]
    fn repeated_name_with_odd_characters_is_not_echoed() {
        let err = parse("a%22%5Cb=1&a%22%5Cb=2").unwrap_err();
        assert_eq!(err.to_string(), "parameter 'a??b' was sent more than once");
    }

    #[test]
    fn name_with_control_characters_is_not_echoed() {
        let err = parse("a%0A%22b=1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter 'a??b' contains a control character"
        );
    }

    #[test]
    fn error_descriptions_have_no_forbidden_characters() {
        let odd = "\u{e9}\"\\'\n\t\u{7f}x".to_owned();
        for err in [
            ParamError::Repeated(odd.clone()),
            ParamError::Missing(odd.clone()),
            ParamError::TooMany,
            ParamError::NameTooLong,
            ParamError::ValueTooLong(odd),
            ParamError::InvalidUtf8,
            ParamError::ControlCharacter("a\u{0}b".to_owned()),
            ParamError::UnsupportedContentType,
        ] {
            let text = err.to_string();
            assert!(is_error_description(&text), "{text}");
        }
    }

    #[test]
    fn debug_does_not_show_values() {
        let params = parse("client_secret=hunter2").unwrap();
        let debug = format!("{params:?}");
        assert!(debug.contains("client_secret") && !debug.contains("hunter2"));
    }

    #[test]
    fn form_content_type_is_accepted() {
        assert_eq!(
            check_form_content_type(Some("application/x-www-form-urlencoded")),
            Ok(())
        );
    }

    #[test]
    fn form_content_type_is_case_insensitive() {
        assert_eq!(
            check_form_content_type(Some("Application/X-WWW-Form-URLEncoded")),
            Ok(())
        );
    }

    #[test]
    fn form_content_type_may_have_charset() {
        assert_eq!(
            check_form_content_type(Some("application/x-www-form-urlencoded ; charset=UTF-8")),
            Ok(())
        );
    }

    #[test]
    fn missing_content_type_is_refused() {
        assert_eq!(
            check_form_content_type(None),
            Err(ParamError::UnsupportedContentType)
        );
    }

    #[test]
    fn json_content_type_is_refused() {
        assert_eq!(
            check_form_content_type(Some("application/json")),
            Err(ParamError::UnsupportedContentType)
        );
    }

    #[test]
    fn content_type_prefix_is_not_enough() {
        assert_eq!(
            check_form_content_type(Some("application/x-www-form-urlencodedx")),
            Err(ParamError::UnsupportedContentType)
        );
    }
}
