//! Proof Key for Code Exchange (RFC 7636), `S256` only.
//!
//! OAuth 2.1 requires PKCE for every authorization code grant, and RFC 9700
//! §2.1.1 recommends `S256`; the `plain` method offers no protection when the
//! authorization request leaks, so it is refused outright.
//!
//! * [`check_challenge`] runs at `/authorize` on `code_challenge` and
//!   `code_challenge_method`.
//! * [`verify`] runs at `/token` on `code_verifier` against the stored challenge.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of a base64url (no padding) encoded SHA-256 digest.
const CHALLENGE_LEN: usize = 43;
/// Shortest allowed `code_verifier` (RFC 7636 §4.1).
const VERIFIER_MIN_LEN: usize = 43;
/// Longest allowed `code_verifier` (RFC 7636 §4.1).
const VERIFIER_MAX_LEN: usize = 128;

/// Why a PKCE parameter was refused. `Display` is fit for `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    /// No `code_challenge` was sent.
    #[error("code_challenge is required")]
    MissingChallenge,
    /// No `code_challenge_method` was sent, which means `plain` (RFC 7636 §4.3).
    #[error("code_challenge_method is required: without it the method is plain, and only S256 is supported")]
    MissingMethod,
    /// `code_challenge_method=plain`.
    #[error("code_challenge_method plain is not supported, only S256 is supported")]
    PlainMethod,
    /// Any other method than `S256` or `plain`.
    #[error("code_challenge_method is not supported, only S256 is supported")]
    UnsupportedMethod,
    /// The challenge is not a base64url-encoded SHA-256 digest.
    #[error("code_challenge must be a base64url-encoded SHA-256 digest of 43 characters")]
    MalformedChallenge,
    /// The verifier is too short, too long, or uses characters outside `[A-Za-z0-9-._~]`.
    #[error(
        "code_verifier must be 43 to 128 characters from A-Z, a-z, 0-9, '-', '.', '_' and '~'"
    )]
    MalformedVerifier,
    /// The verifier does not hash to the challenge.
    #[error("code_verifier does not match the code_challenge")]
    Mismatch,
}

/// Checks the PKCE parameters of an authorization request and returns the
/// challenge to store with the authorization code.
///
/// The challenge is required; the method is required and must be exactly
/// `S256` (a missing method means `plain`, RFC 7636 §4.3, and is refused).
/// The challenge must be 43 characters of the base64url alphabet that decode
/// to 32 bytes, i.e. a base64url SHA-256 digest without padding.
pub fn check_challenge(challenge: Option<&str>, method: Option<&str>) -> Result<String, PkceError> {
    let challenge = challenge.ok_or(PkceError::MissingChallenge)?;
    match method {
        None => return Err(PkceError::MissingMethod),
        Some("S256") => {}
        Some("plain") => return Err(PkceError::PlainMethod),
        Some(_) => return Err(PkceError::UnsupportedMethod),
    }
    if !is_sha256_base64url(challenge) {
        return Err(PkceError::MalformedChallenge);
    }
    Ok(challenge.to_owned())
}

/// Verifies a `code_verifier` against the stored `S256` challenge.
///
/// The verifier must be 43 to 128 characters of `[A-Za-z0-9-._~]`
/// (RFC 7636 §4.1). `BASE64URL(SHA256(verifier))` is compared with the
/// challenge in constant time.
pub fn verify(verifier: &str, challenge: &str) -> Result<(), PkceError> {
    if !(VERIFIER_MIN_LEN..=VERIFIER_MAX_LEN).contains(&verifier.len())
        || !verifier.bytes().all(is_unreserved)
    {
        return Err(PkceError::MalformedVerifier);
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
        Ok(())
    } else {
        Err(PkceError::Mismatch)
    }
}

/// `unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"` (RFC 3986 §2.3).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// 43 base64url characters that decode (canonically, no padding) to 32 bytes.
fn is_sha256_base64url(s: &str) -> bool {
    s.len() == CHALLENGE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && URL_SAFE_NO_PAD
            .decode(s)
            .is_ok_and(|digest| digest.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const RFC_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn s256_challenge_is_accepted_and_returned() {
        assert_eq!(
            check_challenge(Some(RFC_CHALLENGE), Some("S256")),
            Ok(RFC_CHALLENGE.to_owned())
        );
    }

    #[test]
    fn missing_challenge_is_refused() {
        assert_eq!(
            check_challenge(None, Some("S256")),
            Err(PkceError::MissingChallenge)
        );
    }

    #[test]
    fn missing_method_is_refused_as_plain() {
        let err = check_challenge(Some(RFC_CHALLENGE), None).unwrap_err();
        assert_eq!(err, PkceError::MissingMethod);
        assert!(err.to_string().contains("only S256 is supported"));
    }

    #[test]
    fn plain_method_is_refused() {
        let err = check_challenge(Some(RFC_CHALLENGE), Some("plain")).unwrap_err();
        assert_eq!(err, PkceError::PlainMethod);
        assert!(err.to_string().contains("only S256 is supported"));
    }

    #[test]
    fn method_is_case_sensitive() {
        assert_eq!(
            check_challenge(Some(RFC_CHALLENGE), Some("s256")),
            Err(PkceError::UnsupportedMethod)
        );
    }

    #[test]
    fn unknown_method_is_refused_without_echoing_it() {
        let err = check_challenge(Some(RFC_CHALLENGE), Some("S512\n<x>")).unwrap_err();
        assert_eq!(err, PkceError::UnsupportedMethod);
        assert!(!err.to_string().contains("S512"));
    }

    #[test]
    fn short_challenge_is_refused() {
        assert_eq!(
            check_challenge(Some(&RFC_CHALLENGE[..42]), Some("S256")),
            Err(PkceError::MalformedChallenge)
        );
    }

    #[test]
    fn long_challenge_is_refused() {
        let long = format!("{RFC_CHALLENGE}A");
        assert_eq!(
            check_challenge(Some(&long), Some("S256")),
            Err(PkceError::MalformedChallenge)
        );
    }

    #[test]
    fn challenge_outside_base64url_alphabet_is_refused() {
        let padded_std = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM";
        assert_eq!(
            check_challenge(Some(padded_std), Some("S256")),
            Err(PkceError::MalformedChallenge)
        );
    }

    #[test]
    fn challenge_with_nonzero_trailing_bits_is_refused() {
        // Same digest prefix, but the last character carries bits beyond 256.
        let non_canonical = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN";
        assert_eq!(
            check_challenge(Some(non_canonical), Some("S256")),
            Err(PkceError::MalformedChallenge)
        );
    }

    #[test]
    fn rfc7636_appendix_b_verifier_matches() {
        assert_eq!(verify(RFC_VERIFIER, RFC_CHALLENGE), Ok(()));
    }

    #[test]
    fn wrong_verifier_is_refused() {
        let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj";
        assert_eq!(verify(wrong, RFC_CHALLENGE), Err(PkceError::Mismatch));
    }

    #[test]
    fn verifier_equal_to_challenge_is_refused() {
        // What a client using `plain` would send.
        assert_eq!(
            verify(RFC_CHALLENGE, RFC_CHALLENGE),
            Err(PkceError::Mismatch)
        );
    }

    #[test]
    fn verifier_of_42_chars_is_refused() {
        assert_eq!(
            verify(&"a".repeat(42), RFC_CHALLENGE),
            Err(PkceError::MalformedVerifier)
        );
    }

    #[test]
    fn verifier_of_129_chars_is_refused() {
        assert_eq!(
            verify(&"a".repeat(129), RFC_CHALLENGE),
            Err(PkceError::MalformedVerifier)
        );
    }

    #[test]
    fn verifier_of_128_chars_is_accepted() {
        let verifier = "~._-".repeat(32);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        assert_eq!(verify(&verifier, &challenge), Ok(()));
    }

    #[test]
    fn verifier_outside_unreserved_set_is_refused() {
        let verifier = format!("{}+", &RFC_VERIFIER[..42]);
        assert_eq!(
            verify(&verifier, RFC_CHALLENGE),
            Err(PkceError::MalformedVerifier)
        );
    }

    #[test]
    fn error_descriptions_have_no_forbidden_characters() {
        let all = [
            PkceError::MissingChallenge,
            PkceError::MissingMethod,
            PkceError::PlainMethod,
            PkceError::UnsupportedMethod,
            PkceError::MalformedChallenge,
            PkceError::MalformedVerifier,
            PkceError::Mismatch,
        ];
        for err in all {
            let text = err.to_string();
            // RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E.
            assert!(
                text.bytes()
                    .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
                "{text}"
            );
        }
    }
}
