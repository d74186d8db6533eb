//! Random handles (codes, refresh tokens, opaque tokens, session ids) and how
//! they are stored: only their SHA-256, compared in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A 256-bit random value rendered as base64url. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Handle(String);

impl Handle {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Handle(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn from_presented(s: &str) -> Self {
        Handle(s.to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database keeps. SHA-256 suffices: the input has 256 bits of
    /// entropy, so there is nothing to brute-force.
    pub fn hash(&self) -> String {
        hash_str(&self.0)
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handle(***)")
    }
}

pub fn hash_str(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(s.as_bytes()))
}

/// Constant-time equality of two strings (length may leak, content not).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A 128-bit identifier (`jti`, grant and session ids): unique and
/// unguessable, from the thread's CSPRNG (ChaCha, seeded and reseeded from
/// the OS) without a system call each time. Secrets use [`Handle`].
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// argon2id hash (PHC string) of a client secret or password.
pub fn argon2_hash(secret: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

pub fn argon2_verify(secret: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(phc) {
        Ok(hash) => argon2::Argon2::default()
            .verify_password(secret.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_unique_and_256_bit() {
        let a = Handle::generate();
        let b = Handle::generate();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose()).unwrap().len(), 32);
    }

    #[test]
    fn debug_hides_the_value() {
        let h = Handle::generate();
        assert!(!format!("{h:?}").contains(h.expose()));
    }

    #[test]
    fn hash_is_stable_and_not_the_value() {
        let h = Handle::from_presented("abc");
        assert_eq!(h.hash(), hash_str("abc"));
        assert_ne!(h.hash(), "abc");
    }
}
