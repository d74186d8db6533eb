//! Compact JWS signing with a private key parsed once.
//!
//! jsonwebtoken re-parses the PKCS#8 document on every signature, and for
//! P-256 that parse derives the public point: a second scalar multiplication
//! as costly as the signature itself. Here the key is parsed into ring's key
//! pair when the key ring loads, the protected header of access tokens is
//! rendered once, and a token is built in one buffer.
//!
//! Verification stays with jsonwebtoken (see [`super::ring`]), which is also
//! ring underneath, so every token this module signs is checked by an
//! independent encoder's counterpart in the tests.

use std::fmt;

use ::ring::rand::SystemRandom;
use ::ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use super::crypto::Alg;
use super::error::KeyError;

/// A private key ready to sign, for one algorithm.
pub(crate) enum PrivateKey {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Rs256(RsaKeyPair),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(***)")
    }
}

impl PrivateKey {
    /// Parses decrypted PKCS#8 DER for `alg`. Ed25519 keys may be PKCS#8 v1
    /// (no public key inside, as ed25519-dalek writes them).
    pub(crate) fn from_pkcs8(alg: Alg, pkcs8: &[u8]) -> Result<PrivateKey, String> {
        let rng = SystemRandom::new();
        match alg {
            Alg::ES256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                .map(PrivateKey::Es256)
                .map_err(|e| format!("not a P-256 PKCS#8 private key: {e}")),
            Alg::EdDSA => Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
                .map(PrivateKey::EdDsa)
                .map_err(|e| format!("not an Ed25519 PKCS#8 private key: {e}")),
            Alg::RS256 => RsaKeyPair::from_pkcs8(pkcs8)
                .map(PrivateKey::Rs256)
                .map_err(|e| format!("not an RSA PKCS#8 private key: {e}")),
        }
    }

    /// The raw JWS signature over `message` (RFC 7518 §3.4 fixed-width for ES256).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let failed = |_| KeyError::Signing("the signing primitive failed".into());
        match self {
            PrivateKey::Es256(k) => k
                .sign(&SystemRandom::new(), message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(failed),
            PrivateKey::EdDsa(k) => Ok(k.sign(message).as_ref().to_vec()),
            PrivateKey::Rs256(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
        }
    }
}

/// Signs compact JWS tokens with one key: `alg` and `kid` fixed, `typ` per token.
pub(crate) struct Signer {
    alg: Alg,
    kid: String,
    key: PrivateKey,
    /// base64url of the protected header for `typ` = [`Signer::COMMON_TYP`].
    common_header: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Header<'a> {
    typ: &'a str,
    alg: &'a str,
    kid: &'a str,
}

impl Signer {
    /// The `typ` nearly every token carries (RFC 9068 access tokens); its
    /// header is rendered once.
    pub(crate) const COMMON_TYP: &'static str = "at+jwt";

    pub(crate) fn new(alg: Alg, kid: &str, key: PrivateKey) -> Signer {
        let common_header = encoded_header(alg, kid, Self::COMMON_TYP);
        Signer {
            alg,
            kid: kid.to_owned(),
            key,
            common_header,
        }
    }

    /// `base64url(header) . base64url(claims) . base64url(signature)`.
    pub(crate) fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        let payload = serde_json::to_vec(claims).map_err(|e| KeyError::Signing(e.to_string()))?;
        let rendered;
        let header = if typ == Self::COMMON_TYP {
            &self.common_header
        } else {
            rendered = encoded_header(self.alg, &self.kid, typ);
            &rendered
        };
        // Header, payload and an ES256 signature (86 characters) in one allocation.
        let mut out = String::with_capacity(header.len() + payload.len() * 4 / 3 + 96);
        out.push_str(header);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
        let signature = self.key.sign(out.as_bytes())?;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut out);
        Ok(out)
    }
}

fn encoded_header(alg: Alg, kid: &str, typ: &str) -> String {
    let header = Header {
        typ,
        alg: alg.as_str(),
        kid,
    };
    // Serialising three string fields cannot fail.
    let json = serde_json::to_vec(&header).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::crypto::{generate_key, Kek};
    use serde_json::{json, Value};

    fn signer(alg: Alg) -> (Signer, jsonwebtoken::DecodingKey, String) {
        let kek = Kek::generate();
        let rec = generate_key(alg, "t", &kek, 0, "active").unwrap();
        let der = kek.decrypt(&rec.private_enc, rec.kid.as_bytes()).unwrap();
        let key = PrivateKey::from_pkcs8(alg, &der).unwrap();
        let jwk: Value = serde_json::from_str(&rec.public_jwk).unwrap();
        let public = crate::keys::crypto::PublicKey::from_jwk(alg, &jwk).unwrap();
        let decoding = public.decoding_key().unwrap();
        (Signer::new(alg, &rec.kid, key), decoding, rec.kid)
    }

    /// jsonwebtoken, an independent decoder, accepts what we sign, for each
    /// algorithm and for the pre-rendered and the per-call header.
    #[test]
    fn jsonwebtoken_verifies_what_we_sign() {
        for alg in Alg::ALL {
            let (signer, decoding, kid) = signer(alg);
            for typ in ["at+jwt", "JWT", "oauth-id-jag+jwt"] {
                let claims = json!({"sub": "alice", "exp": 4_000_000_000_i64, "n": "ü\"\\"});
                let token = signer.sign(typ, &claims).unwrap();
                let mut validation = jsonwebtoken::Validation::new(alg.to_jsonwebtoken());
                validation.validate_aud = false;
                let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation)
                    .unwrap_or_else(|e| panic!("{alg} {typ}: {e}"));
                assert_eq!(data.claims, claims);
                assert_eq!(data.header.kid.as_deref(), Some(kid.as_str()));
                assert_eq!(data.header.typ.as_deref(), Some(typ));
                assert_eq!(data.header.alg, alg.to_jsonwebtoken());
            }
        }
    }

    #[test]
    fn a_key_of_another_algorithm_is_refused() {
        let kek = Kek::generate();
        let rec = generate_key(Alg::EdDSA, "t", &kek, 0, "active").unwrap();
        let der = kek.decrypt(&rec.private_enc, rec.kid.as_bytes()).unwrap();
        assert!(PrivateKey::from_pkcs8(Alg::ES256, &der).is_err());
        assert!(PrivateKey::from_pkcs8(Alg::RS256, &der).is_err());
        assert!(PrivateKey::from_pkcs8(Alg::EdDSA, b"not der").is_err());
    }

    #[test]
    fn debug_hides_the_key() {
        let (signer, _, _) = signer(Alg::ES256);
        let shown = format!("{signer:?} {:?}", signer.key);
        assert!(shown.contains("PrivateKey(***)"), "{shown}");
        assert!(!shown.contains("EcdsaKeyPair"), "{shown}");
    }
}
