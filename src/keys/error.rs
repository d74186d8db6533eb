//! The one error type of the `keys` layer.
//!
//! No variant carries key material: messages name keys by `kid` only, and
//! token errors describe what was wrong, never the token itself.

use std::path::PathBuf;

/// Everything that can go wrong generating, loading, rotating or using keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported signing algorithm {0:?} (expected one of ES256, EdDSA, RS256)")]
    UnsupportedAlg(String),

    #[error("invalid key-encryption key: {0}")]
    InvalidKek(String),

    #[error("key-encryption key file {path}: {source}")]
    KekIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("encrypting key material failed")]
    Encrypt,

    /// Wrong KEK, a blob moved to another record (the kid is the AAD), or corruption.
    #[error(
        "decrypting key material failed (wrong key-encryption key, or the record was altered)"
    )]
    Decrypt,

    #[error("key generation failed: {0}")]
    Generation(String),

    #[error("key record {kid:?} is invalid: {reason}")]
    InvalidRecord { kid: String, reason: String },

    #[error("key record {kid:?} belongs to tenant {found:?}, expected {expected:?}")]
    TenantMismatch {
        kid: String,
        expected: String,
        found: String,
    },

    #[error("no active signing key")]
    NoActiveKey,

    #[error("{0} keys are marked active; exactly one must be")]
    MultipleActiveKeys(usize),

    #[error(
        "no `next` key to promote: a key must be published in the JWKS as `next` \
         before it may sign, so rotation needs one created by an earlier rotation or at first start"
    )]
    NoNextKey,

    #[error("invalid rotation parameters: {0}")]
    InvalidRotation(String),

    #[error("signing failed: {0}")]
    Signing(String),

    // Token verification failures. Callers usually map all of these to
    // `invalid_token`; `is_token_error` tells them apart from server faults.
    #[error("malformed token: {0}")]
    MalformedToken(String),

    #[error("token key id {0:?} is missing or not in the key ring")]
    UnknownKid(Option<String>),

    #[error("token algorithm {got:?} is not the algorithm of its key ({expected})")]
    AlgorithmMismatch { expected: &'static str, got: String },

    #[error("token type {got:?} is not the expected {expected:?}")]
    TypMismatch {
        expected: String,
        got: Option<String>,
    },

    #[error("token signature is invalid")]
    InvalidSignature,

    #[error("token has expired")]
    Expired,

    #[error("token is not valid yet")]
    NotYetValid,

    #[error("token claims are invalid: {0}")]
    InvalidClaims(String),
}

impl KeyError {
    /// True when the error is about a presented token (a client problem,
    /// `invalid_token`), false when it is a server-side key problem.
    pub fn is_token_error(&self) -> bool {
        matches!(
            self,
            KeyError::MalformedToken(_)
                | KeyError::UnknownKid(_)
                | KeyError::AlgorithmMismatch { .. }
                | KeyError::TypMismatch { .. }
                | KeyError::InvalidSignature
                | KeyError::Expired
                | KeyError::NotYetValid
                | KeyError::InvalidClaims(_)
        )
    }
}
