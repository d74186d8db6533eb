//! Access token scope (RFC 6749 §3.3): a set of case-sensitive scope tokens,
//! written as a space-delimited list.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most distinct scopes [`ScopeSet::parse`] accepts.
pub const MAX_SCOPES: usize = 64;
/// Longest scope token, in characters (tokens are ASCII).
pub const MAX_SCOPE_LEN: usize = 128;

/// Why a `scope` value was refused. `Display` is fit for `error_description`;
/// the value itself is never echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A character outside `%x21 / %x23-5B / %x5D-7E`.
    #[error("scope contains a character that is not allowed in a scope value")]
    InvalidCharacter,
    /// A token longer than [`MAX_SCOPE_LEN`].
    #[error("each scope value may be at most 128 characters long")]
    TooLong,
    /// More than [`MAX_SCOPES`] distinct tokens.
    #[error("at most 64 scopes may be requested at once")]
    TooMany,
}

/// A set of scope tokens, kept sorted. Every token in it is a valid
/// `scope-token`; the only ways in are [`ScopeSet::parse`], the set
/// operations, [`FromIterator`] and deserialisation.
///
/// `Display` and serde use the space-joined form (`"a b c"`, sorted; the
/// empty set is `""`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(BTreeSet<String>);

impl ScopeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a `scope` parameter: space-delimited tokens of
    /// `%x21 / %x23-5B / %x5D-7E`, each at most [`MAX_SCOPE_LEN`] characters,
    /// at most [`MAX_SCOPES`] distinct ones. Duplicates collapse; runs of
    /// spaces and leading or trailing spaces are tolerated; the empty string
    /// is the empty set.
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        Self::parse_limited(s, MAX_SCOPES)
    }

    fn parse_limited(s: &str, max: usize) -> Result<Self, ScopeError> {
        let mut set = BTreeSet::new();
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            check_token(token)?;
            if !set.contains(token) {
                if set.len() >= max {
                    return Err(ScopeError::TooMany);
                }
                set.insert(token.to_owned());
            }
        }
        Ok(Self(set))
    }

    /// Whether `scope` is in the set.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    /// Whether the set has no scope.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of scopes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The scopes, in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.iter().map(String::as_str)
    }

    /// Whether every scope of `self` is in `other`.
    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// Scopes in both sets.
    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    /// Scopes in either set.
    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.union(&other.0).cloned().collect())
    }

    /// Scopes in `self` but not in `other`.
    pub fn difference(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.difference(&other.0).cloned().collect())
    }
}

/// Scopes about the grant, not about any resource: `offline_access` asks
/// that the authorization outlive the session (OIDC Core §11). It decides
/// whether a refresh token is issued and stays in the grant, but an access
/// token is for one resource and carries only what that resource may act
/// on, so it never holds these (RFC 6749 §5.1: the response's `scope` is the
/// access token's).
pub const GRANT_ONLY_SCOPES: [&str; 1] = ["offline_access"];

/// The scope an access token may carry out of `scope`: without the
/// grant-only scopes.
pub fn access_token_scope(scope: &ScopeSet) -> ScopeSet {
    scope.difference(&GRANT_ONLY_SCOPES.iter().copied().collect())
}

/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`, at most [`MAX_SCOPE_LEN`].
fn check_token(token: &str) -> Result<(), ScopeError> {
    if !token
        .bytes()
        .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
    {
        return Err(ScopeError::InvalidCharacter);
    }
    if token.len() > MAX_SCOPE_LEN {
        return Err(ScopeError::TooLong);
    }
    Ok(())
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope)?;
        }
        Ok(())
    }
}

impl FromStr for ScopeSet {
    type Err = ScopeError;

    /// Same as [`ScopeSet::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Builds a set from trusted values (configuration, stored grants).
/// Tokens that are not valid `scope-token`s (empty, containing a space or
/// another disallowed character, too long) are left out; there is no limit
/// on the number of scopes.
impl<'a> FromIterator<&'a str> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .filter(|t| !t.is_empty() && check_token(t).is_ok())
                .map(str::to_owned)
                .collect(),
        )
    }
}

/// Same rules as the `&str` version.
impl FromIterator<String> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .filter(|t| !t.is_empty() && check_token(t).is_ok())
                .collect(),
        )
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Parses the space-joined form with the rules of [`ScopeSet::parse`], but
/// without the limit on the number of scopes, so that every serialised set
/// reads back.
impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse_limited(&s, usize::MAX).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap()
    }

    #[test]
    fn offline_access_never_reaches_an_access_token() {
        assert_eq!(
            access_token_scope(&set("openid offline_access mcp:read")),
            set("openid mcp:read")
        );
    }

    #[test]
    fn empty_string_is_the_empty_set() {
        assert!(set("").is_empty());
    }

    #[test]
    fn single_scope_is_parsed() {
        assert_eq!(set("mcp:read").iter().collect::<Vec<_>>(), ["mcp:read"]);
    }

    #[test]
    fn display_is_sorted_and_space_joined() {
        assert_eq!(set("write read admin").to_string(), "admin read write");
    }

    #[test]
    fn empty_set_displays_as_empty_string() {
        assert_eq!(ScopeSet::new().to_string(), "");
    }

    #[test]
    fn duplicates_collapse() {
        assert_eq!(set("read read write").len(), 2);
    }

    #[test]
    fn extra_spaces_are_ignored() {
        assert_eq!(set("  read   write ").to_string(), "read write");
    }

    #[test]
    fn scopes_are_case_sensitive() {
        assert_eq!(set("Read read").len(), 2);
    }

    #[test]
    fn double_quote_is_refused() {
        assert_eq!(ScopeSet::parse("a\"b"), Err(ScopeError::InvalidCharacter));
    }

    #[test]
    fn backslash_is_refused() {
        assert_eq!(ScopeSet::parse("a\\b"), Err(ScopeError::InvalidCharacter));
    }

    #[test]
    fn tab_separator_is_refused() {
        assert_eq!(
            ScopeSet::parse("read\twrite"),
            Err(ScopeError::InvalidCharacter)
        );
    }

    #[test]
    fn non_ascii_is_refused() {
        assert_eq!(
            ScopeSet::parse("lecture\u{e9}"),
            Err(ScopeError::InvalidCharacter)
        );
    }

    #[test]
    fn scope_of_128_chars_is_accepted() {
        assert_eq!(set(&"a".repeat(128)).len(), 1);
    }

    #[test]
    fn scope_of_129_chars_is_refused() {
        assert_eq!(ScopeSet::parse(&"a".repeat(129)), Err(ScopeError::TooLong));
    }

    fn numbered(n: usize) -> String {
        (0..n)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn sixty_four_scopes_are_accepted() {
        assert_eq!(set(&numbered(64)).len(), 64);
    }

    #[test]
    fn sixty_five_scopes_are_refused() {
        assert_eq!(ScopeSet::parse(&numbered(65)), Err(ScopeError::TooMany));
    }

    #[test]
    fn duplicates_do_not_count_toward_the_limit() {
        let input = format!("{} s0 s1 s2", numbered(64));
        assert_eq!(set(&input).len(), 64);
    }

    #[test]
    fn from_str_parses() {
        assert_eq!("b a".parse::<ScopeSet>(), Ok(set("a b")));
    }

    #[test]
    fn subset_is_detected() {
        assert!(set("read").is_subset(&set("read write")));
    }

    #[test]
    fn superset_is_not_a_subset() {
        assert!(!set("read write").is_subset(&set("read")));
    }

    #[test]
    fn empty_set_is_a_subset_of_anything() {
        assert!(ScopeSet::new().is_subset(&set("read")));
    }

    #[test]
    fn intersection_keeps_common_scopes() {
        assert_eq!(set("a b c").intersection(&set("b c d")), set("b c"));
    }

    #[test]
    fn union_keeps_all_scopes() {
        assert_eq!(set("a b").union(&set("b c")), set("a b c"));
    }

    #[test]
    fn difference_removes_other_scopes() {
        assert_eq!(set("a b c").difference(&set("b")), set("a c"));
    }

    #[test]
    fn contains_finds_member() {
        assert!(set("read write").contains("write"));
    }

    #[test]
    fn contains_is_exact() {
        assert!(!set("read write").contains("writ"));
    }

    #[test]
    fn from_iter_of_str_builds_set() {
        let scopes: ScopeSet = ["b", "a", "b"].into_iter().collect();
        assert_eq!(scopes, set("a b"));
    }

    #[test]
    fn from_iter_of_string_builds_set() {
        let scopes: ScopeSet = vec!["b".to_owned(), "a".to_owned()].into_iter().collect();
        assert_eq!(scopes, set("a b"));
    }

    #[test]
    fn from_iter_drops_invalid_tokens() {
        let scopes: ScopeSet = ["ok", "", "two words", "quo\"te"].into_iter().collect();
        assert_eq!(scopes, set("ok"));
    }

    #[test]
    fn serializes_as_space_joined_string() {
        assert_eq!(serde_json::to_string(&set("b a")).unwrap(), "\"a b\"");
    }

    #[test]
    fn deserializes_from_space_joined_string() {
        let scopes: ScopeSet = serde_json::from_str("\"b a\"").unwrap();
        assert_eq!(scopes, set("a b"));
    }

    #[test]
    fn deserialize_refuses_invalid_scope() {
        assert!(serde_json::from_str::<ScopeSet>("\"a\\\\b\"").is_err());
    }

    #[test]
    fn large_set_round_trips_through_serde() {
        let big: ScopeSet = (0..100).map(|i| format!("s{i}")).collect();
        let json = serde_json::to_string(&big).unwrap();
        assert_eq!(serde_json::from_str::<ScopeSet>(&json).unwrap(), big);
    }

    #[test]
    fn error_descriptions_have_no_forbidden_characters() {
        for err in [
            ScopeError::InvalidCharacter,
            ScopeError::TooLong,
            ScopeError::TooMany,
        ] {
            let text = err.to_string();
            assert!(
                text.bytes()
                    .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
                "{text}"
            );
        }
    }
}
