//! Key material: algorithms, the key-encryption key (KEK), key generation,
//! and the public-JWK handling shared by generation and loading.
//!
//! Private keys only ever exist in the database as PKCS#8 DER sealed with
//! AES-256-GCM under the KEK, with the key's `kid` as associated data so a
//! sealed blob cannot be moved onto another key record.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::str::FromStr;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::error::KeyError;
use crate::store::KeyRecord;

/// Length of the key-encryption key in bytes (AES-256).
pub const KEK_LEN: usize = 32;
/// AES-GCM nonce length; the nonce is stored in front of the ciphertext.
const NONCE_LEN: usize = 12;
/// AES-GCM tag length, appended to the ciphertext.
const TAG_LEN: usize = 16;
/// Name of the KEK file inside the data directory.
const KEK_FILE: &str = "kek";
/// RSA modulus size for new RS256 keys.
const RSA_BITS: usize = 2048;

/// Key states as stored in `KeyRecord::state`.
pub const STATE_NEXT: &str = "next";
pub const STATE_ACTIVE: &str = "active";
pub const STATE_RETIRED: &str = "retired";

// Operators paste KEKs from many tools: accept either alphabet, padded or not.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Overwrites a buffer that held secret bytes. `black_box` keeps the
/// otherwise dead stores from being optimised away (best effort, no unsafe).
pub(crate) fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(&*buf);
}

/// JWS signing algorithm of a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    /// ECDSA over P-256 with SHA-256: small, fast, widely supported.
    #[default]
    ES256,
    /// Ed25519.
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys, for verifiers that only do RSA.
    RS256,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::ES256, Alg::EdDSA, Alg::RS256];

    /// The JOSE name (`alg` header value).
    pub fn as_str(&self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
            Alg::RS256 => "RS256",
        }
    }

    pub fn to_jsonwebtoken(&self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::ES256 => jsonwebtoken::Algorithm::ES256,
            Alg::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Alg::RS256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

impl FromStr for Alg {
    type Err = KeyError;

    /// Exact JOSE names only: `alg` values are case-sensitive (RFC 7515 §4.1.1).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Alg::ALL
            .into_iter()
            .find(|alg| alg.as_str() == s)
            .ok_or_else(|| KeyError::UnsupportedAlg(s.to_owned()))
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The key-encryption key: 32 bytes that seal every private signing key at rest.
///
/// Deliberately not `Clone` (share it behind an `Arc`) and its `Debug` hides
/// the bytes. The bytes are overwritten on drop.
pub struct Kek([u8; KEK_LEN]);

impl Kek {
    /// A fresh random KEK from the operating system's generator.
    pub fn generate() -> Kek {
        let mut bytes = [0u8; KEK_LEN];
        OsRng.fill_bytes(&mut bytes);
        Kek(bytes)
    }

    /// Parses a KEK given as base64 (standard or URL-safe alphabet, padding
    /// optional, surrounding whitespace ignored). It must decode to exactly 32 bytes.
    pub fn from_base64(s: &str) -> Result<Kek, KeyError> {
        let s = s.trim();
        let mut decoded = STANDARD_LENIENT
            .decode(s)
            .or_else(|_| URL_SAFE_LENIENT.decode(s))
            .map_err(|_| {
                KeyError::InvalidKek("not valid base64 (standard or URL-safe alphabet)".into())
            })?;
        let result = <[u8; KEK_LEN]>::try_from(decoded.as_slice())
            .map(Kek)
            .map_err(|_| {
                KeyError::InvalidKek(format!(
                    "must decode to exactly {KEK_LEN} bytes, got {} (generate one with: head -c 32 /dev/urandom | base64)",
                    decoded.len()
                ))
            });
        wipe(&mut decoded);
        result
    }

    /// Standard base64 with padding, the form written to the KEK file.
    pub(crate) fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Reads `data_dir/kek`, or creates it (and `data_dir`) with a fresh KEK
    /// when it does not exist. Returns the KEK and whether it was generated.
    ///
    /// On unix the file is created with mode 0600 and the directory, when
    /// created here, with 0700. Losing this file makes every stored private
    /// key unreadable, so it is never overwritten.
    pub fn load_or_generate(data_dir: &Path) -> Result<(Kek, bool), KeyError> {
        let path = data_dir.join(KEK_FILE);
        if let Some(kek) = read_kek_file(&path)? {
            return Ok((kek, false));
        }
        create_private_dir(data_dir).map_err(|source| KeyError::KekIo {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let kek = Kek::generate();
        match create_private_file(&path) {
            Ok(mut file) => {
                let mut text = format!("{}\n", kek.to_base64());
                let written = file
                    .write_all(text.as_bytes())
                    .and_then(|()| file.sync_all());
                // The String held the secret in base64: wipe its buffer too.
                let mut bytes = std::mem::take(&mut text).into_bytes();
                wipe(&mut bytes);
                written.map_err(|source| KeyError::KekIo {
                    path: path.clone(),
                    source,
                })?;
                tracing::info!(path = %path.display(), "generated a new key-encryption key");
                Ok((kek, true))
            }
            // Another process won the race to create it: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_kek_file(&path)? {
                Some(kek) => Ok((kek, false)),
                None => Err(KeyError::KekIo { path, source: e }),
            },
            Err(source) => Err(KeyError::KekIo { path, source }),
        }
    }

    /// Seals `plaintext` with AES-256-GCM under a fresh random 96-bit nonce.
    /// Output: `nonce || ciphertext || tag`. `aad` is authenticated, not stored.
    ///
    /// Random nonces are safe here: the KEK seals a handful of keys, far
    /// below the 2^32 messages where nonce collisions become a concern.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let cipher = self.cipher();
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| KeyError::Encrypt)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a blob made by [`Kek::encrypt`] with the same `aad`.
    /// The result is secret: overwrite it when done with it.
    pub fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(KeyError::Decrypt);
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| KeyError::Decrypt)?;
        self.cipher()
            .decrypt(&Nonce::from(nonce), Payload { msg: sealed, aad })
            .map_err(|_| KeyError::Decrypt)
    }

    // Built per call rather than cached: the expanded AES key schedule is
    // not wiped on drop, so keep it alive only while it is used.
    fn cipher(&self) -> Aes256Gcm {
        // Borrowed, not copied: no stray copy of the KEK on the stack.
        Aes256Gcm::new(<&Key<Aes256Gcm>>::from(&self.0))
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(***)")
    }
}

impl Drop for Kek {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// `Ok(None)` when the file does not exist.
fn read_kek_file(path: &Path) -> Result<Option<Kek>, KeyError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KeyError::KekIo {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    warn_if_readable_by_others(path);
    let parsed = Kek::from_base64(&text);
    let mut bytes = text.into_bytes();
    wipe(&mut bytes);
    match parsed {
        Ok(kek) => Ok(Some(kek)),
        Err(KeyError::InvalidKek(reason)) => Err(KeyError::InvalidKek(format!(
            "{}: {reason}",
            path.display()
        ))),
        Err(other) => Err(other),
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "key-encryption key file is accessible by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// `create_new` so an existing KEK is never truncated.
#[cfg(unix)]
fn create_private_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// The public half of a signing key, validated, in raw form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// P-256 affine coordinates.
    Ec { x: [u8; 32], y: [u8; 32] },
    /// Ed25519 public key.
    Ed { x: [u8; 32] },
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl PublicKey {
    pub(crate) fn alg(&self) -> Alg {
        match self {
            PublicKey::Ec { .. } => Alg::ES256,
            PublicKey::Ed { .. } => Alg::EdDSA,
            PublicKey::Rsa { .. } => Alg::RS256,
        }
    }

    /// RFC 7638 thumbprint input: the required members only, in
    /// lexicographic order, no whitespace. Base64url needs no JSON escaping.
    fn thumbprint_input(&self) -> String {
        match self {
            PublicKey::Ec { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(x),
                URL_SAFE_NO_PAD.encode(y)
            ),
            PublicKey::Ed { x } => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(x)
            ),
            PublicKey::Rsa { n, e } => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(e),
                URL_SAFE_NO_PAD.encode(n)
            ),
        }
    }

    /// The kid: base64url of the first 16 bytes of the RFC 7638 SHA-256
    /// thumbprint. Deterministic, so a record's kid can be checked against its key.
    pub(crate) fn kid(&self) -> String {
        let digest = Sha256::digest(self.thumbprint_input().as_bytes());
        URL_SAFE_NO_PAD.encode(&digest[..16])
    }

    /// The public JWK as published in the JWKS. Built from a whitelist of
    /// members, so nothing private can ever leak through it.
    pub(crate) fn to_jwk(&self, kid: &str) -> Value {
        let alg = self.alg().as_str();
        match self {
            PublicKey::Ec { x, y } => json!({
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
                "kid": kid, "alg": alg, "use": "sig",
            }),
            PublicKey::Ed { x } => json!({
                "kty": "OKP", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(x),
                "kid": kid, "alg": alg, "use": "sig",
            }),
            PublicKey::Rsa { n, e } => json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e),
                "kid": kid, "alg": alg, "use": "sig",
            }),
        }
    }

    /// Parses and validates a stored public JWK for `alg`: key type, curve,
    /// sizes, and that the key is a valid point / modulus.
    pub(crate) fn from_jwk(alg: Alg, jwk: &Value) -> Result<PublicKey, String> {
        let member = |name: &str| -> Result<&str, String> {
            jwk.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("public JWK has no string member {name:?}"))
        };
        let bytes = |name: &str| -> Result<Vec<u8>, String> {
            URL_SAFE_NO_PAD
                .decode(member(name)?)
                .map_err(|_| format!("public JWK member {name:?} is not base64url"))
        };
        let fixed32 = |name: &str| -> Result<[u8; 32], String> {
            <[u8; 32]>::try_from(bytes(name)?.as_slice())
                .map_err(|_| format!("public JWK member {name:?} must be 32 bytes"))
        };
        if let Some(jwk_alg) = jwk.get("alg") {
            if jwk_alg.as_str() != Some(alg.as_str()) {
                return Err(format!("public JWK alg {jwk_alg} does not match {alg}"));
            }
        }
        match alg {
            Alg::ES256 => {
                if member("kty")? != "EC" || member("crv")? != "P-256" {
                    return Err("ES256 key must be kty EC, crv P-256".into());
                }
                let (x, y) = (fixed32("x")?, fixed32("y")?);
                let mut sec1 = [0u8; 65];
                sec1[0] = 0x04;
                sec1[1..33].copy_from_slice(&x);
                sec1[33..].copy_from_slice(&y);
                p256::PublicKey::from_sec1_bytes(&sec1)
                    .map_err(|_| "public JWK is not a point on P-256".to_owned())?;
                Ok(PublicKey::Ec { x, y })
            }
            Alg::EdDSA => {
                if member("kty")? != "OKP" || member("crv")? != "Ed25519" {
                    return Err("EdDSA key must be kty OKP, crv Ed25519".into());
                }
                let x = fixed32("x")?;
                ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| "public JWK is not a valid Ed25519 key".to_owned())?;
                Ok(PublicKey::Ed { x })
            }
            Alg::RS256 => {
                if member("kty")? != "RSA" {
                    return Err("RS256 key must be kty RSA".into());
                }
                let (n, e) = (bytes("n")?, bytes("e")?);
                check_rsa_public(&n, &e)?;
                Ok(PublicKey::Rsa { n, e })
            }
        }
    }

    /// The verification key jsonwebtoken needs, from the JWK components.
    pub(crate) fn decoding_key(&self) -> Result<jsonwebtoken::DecodingKey, String> {
        let key = match self {
            PublicKey::Ec { x, y } => jsonwebtoken::DecodingKey::from_ec_components(
                &URL_SAFE_NO_PAD.encode(x),
                &URL_SAFE_NO_PAD.encode(y),
            ),
            PublicKey::Ed { x } => {
                jsonwebtoken::DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(x))
            }
            PublicKey::Rsa { n, e } => jsonwebtoken::DecodingKey::from_rsa_components(
                &URL_SAFE_NO_PAD.encode(n),
                &URL_SAFE_NO_PAD.encode(e),
            ),
        };
        key.map_err(|e| format!("cannot build verification key: {e}"))
    }
}

/// Builds a jsonwebtoken signing key from decrypted PKCS#8 DER: the tests
/// forge tokens with it (the server signs with [`super::jws`]).
///
/// jsonwebtoken 9 wants PKCS#8 for EC and Ed25519 but PKCS#1 for RSA.
#[cfg(test)]
pub(crate) fn encoding_key_from_pkcs8(
    alg: Alg,
    pkcs8: &[u8],
) -> Result<jsonwebtoken::EncodingKey, String> {
    match alg {
        Alg::ES256 => Ok(jsonwebtoken::EncodingKey::from_ec_der(pkcs8)),
        Alg::EdDSA => Ok(jsonwebtoken::EncodingKey::from_ed_der(pkcs8)),
        Alg::RS256 => {
            // PKCS#8 wraps the PKCS#1 RSAPrivateKey as its privateKey octets.
            let info = p256::pkcs8::PrivateKeyInfo::try_from(pkcs8)
                .map_err(|_| "private key is not PKCS#8".to_owned())?;
            if info.algorithm.oid != RSA_ENCRYPTION {
                return Err("private key is not RSA PKCS#8".to_owned());
            }
            Ok(jsonwebtoken::EncodingKey::from_rsa_der(info.private_key))
        }
    }
}

/// rsaEncryption (RFC 8017 appendix C).
#[cfg(test)]
const RSA_ENCRYPTION: p256::pkcs8::ObjectIdentifier =
    p256::pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// What ring (the verifier) will accept of a published RSA key: a modulus of
/// at least 2048 bits (big-endian, no leading zero octet) and an odd public
/// exponent between 3 and 2^33.
fn check_rsa_public(n: &[u8], e: &[u8]) -> Result<(), String> {
    let n = strip_leading_zeros(n);
    let bits = match n.first() {
        Some(first) => n.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    };
    if bits < RSA_BITS {
        return Err("RSA modulus is shorter than 2048 bits".into());
    }
    if bits > 8192 || n.last().is_none_or(|b| b % 2 == 0) {
        return Err("public JWK is not a valid RSA key".into());
    }
    let e = strip_leading_zeros(e);
    let exponent = if e.len() <= 5 {
        e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    } else {
        u64::MAX
    };
    if !(3..=(1 << 33)).contains(&exponent) || exponent % 2 == 0 {
        return Err("public JWK is not a valid RSA key".into());
    }
    Ok(())
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[start..]
}

/// A fresh key pair: PKCS#8 DER of the private key (wiped on drop) and the public key.
fn generate_key_pair(alg: Alg) -> Result<(p256::pkcs8::SecretDocument, PublicKey), KeyError> {
    let failed = |what: &str| KeyError::Generation(format!("{alg}: {what}"));
    match alg {
        Alg::ES256 => {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            use p256::pkcs8::EncodePrivateKey;
            let secret = p256::SecretKey::random(&mut OsRng);
            let der = secret
                .to_pkcs8_der()
                .map_err(|_| failed("PKCS#8 encoding"))?;
            let point = secret.public_key().to_encoded_point(false);
            let coord = |c: Option<&p256::FieldBytes>| {
                c.map(|c| <[u8; 32]>::from(*c))
                    .ok_or_else(|| failed("public point encoding"))
            };
            let (x, y) = (coord(point.x())?, coord(point.y())?);
            Ok((der, PublicKey::Ec { x, y }))
        }
        Alg::EdDSA => {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            let secret = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let der = secret
                .to_pkcs8_der()
                .map_err(|_| failed("PKCS#8 encoding"))?;
            let x = secret.verifying_key().to_bytes();
            Ok((der, PublicKey::Ed { x }))
        }
        Alg::RS256 => {
            // OpenSSL generates the key (ring cannot); ring signs with it.
            let rsa =
                openssl::rsa::Rsa::generate(RSA_BITS as u32).map_err(|_| failed("RSA keygen"))?;
            let (n, e) = (rsa.n().to_vec(), rsa.e().to_vec());
            let pkey = openssl::pkey::PKey::from_rsa(rsa).map_err(|_| failed("RSA keygen"))?;
            let mut pkcs8 = pkey
                .private_key_to_pkcs8()
                .map_err(|_| failed("PKCS#8 encoding"))?;
            let der = p256::pkcs8::SecretDocument::try_from(pkcs8.as_slice())
                .map_err(|_| failed("PKCS#8 encoding"));
            wipe(&mut pkcs8);
            Ok((der?, PublicKey::Rsa { n, e }))
        }
    }
}

/// Generates a new key for `tenant_id` in `state` (`"next"` or `"active"`):
/// thumbprint-derived kid, public JWK, private key sealed under `kek` with
/// the kid as associated data.
pub fn generate_key(
    alg: Alg,
    tenant_id: &str,
    kek: &Kek,
    now: i64,
    state: &str,
) -> Result<KeyRecord, KeyError> {
    // A new key is never born retired, and "active" sets activated_at.
    let activated_at = match state {
        STATE_NEXT => None,
        STATE_ACTIVE => Some(now),
        other => {
            return Err(KeyError::Generation(format!(
                "a new key must be {STATE_NEXT:?} or {STATE_ACTIVE:?}, not {other:?}"
            )))
        }
    };
    let (der, public) = generate_key_pair(alg)?;
    let kid = public.kid();
    let private_enc = kek.encrypt(der.as_bytes(), kid.as_bytes())?;
    Ok(KeyRecord {
        public_jwk: public.to_jwk(&kid).to_string(),
        kid,
        tenant_id: tenant_id.to_owned(),
        alg: alg.as_str().to_owned(),
        private_enc,
        state: state.to_owned(),
        created_at: now,
        activated_at,
        retired_at: None,
        publish_until: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "default";

    #[test]
    fn alg_names_round_trip() {
        for alg in Alg::ALL {
            assert_eq!(alg.as_str().parse::<Alg>().ok(), Some(alg));
            assert_eq!(alg.to_string(), alg.as_str());
            let json = serde_json::to_string(&alg).ok();
            assert_eq!(json, Some(format!("\"{}\"", alg.as_str())));
        }
        assert_eq!(Alg::default(), Alg::ES256);
    }

    #[test]
    fn alg_parse_is_exact_and_lists_allowed() {
        for bad in ["es256", "HS256", "none", "", "EDDSA"] {
            let err = bad.parse::<Alg>().err().map(|e| e.to_string());
            let msg = err.unwrap_or_default();
            assert!(msg.contains("ES256, EdDSA, RS256"), "{bad}: {msg}");
        }
        assert!(serde_json::from_str::<Alg>("\"HS256\"").is_err());
    }

    #[test]
    fn kek_from_base64_accepts_both_alphabets_with_or_without_padding() {
        // 0xfb 0xff.. bytes encode to '+' and '/' in standard, '-' and '_' in URL-safe.
        let raw = [0xfbu8; KEK_LEN];
        let std_padded = base64::engine::general_purpose::STANDARD.encode(raw);
        let url_nopad = URL_SAFE_NO_PAD.encode(raw);
        assert!(std_padded.contains('+') && std_padded.ends_with('='));
        assert!(url_nopad.contains('-'));
        for text in [
            std_padded.clone(),
            std_padded.trim_end_matches('=').to_owned(),
            url_nopad.clone(),
            format!("  {url_nopad}\n"),
        ] {
            let kek = Kek::from_base64(&text);
            assert!(kek.is_ok(), "{text:?}");
            assert!(kek.is_ok_and(|k| k.0 == raw));
        }
    }

    #[test]
    fn kek_from_base64_rejects_wrong_length_and_garbage() {
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        let long = base64::engine::general_purpose::STANDARD.encode([1u8; 33]);
        for (text, needle) in [
            (short.as_str(), "exactly 32 bytes, got 16"),
            (long.as_str(), "exactly 32 bytes, got 33"),
            ("not base64 at all!", "not valid base64"),
            ("", "got 0"),
        ] {
            match Kek::from_base64(text) {
                Err(KeyError::InvalidKek(msg)) => assert!(msg.contains(needle), "{msg}"),
                other => panic!("{text:?}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn kek_debug_hides_bytes() {
        assert_eq!(format!("{:?}", Kek::generate()), "Kek(***)");
    }

    #[test]
    fn encrypt_decrypt_round_trip_and_binding() {
        let kek = Kek::generate();
        let blob = kek.encrypt(b"secret key", b"kid-1").unwrap();
        assert_eq!(blob.len(), NONCE_LEN + 10 + TAG_LEN);
        assert_eq!(kek.decrypt(&blob, b"kid-1").unwrap(), b"secret key");
        // Fresh nonce each time.
        assert_ne!(blob, kek.encrypt(b"secret key", b"kid-1").unwrap());
        // Wrong AAD (blob moved to another kid), wrong KEK, tampering, truncation.
        assert!(matches!(
            kek.decrypt(&blob, b"kid-2"),
            Err(KeyError::Decrypt)
        ));
        assert!(matches!(
            Kek::generate().decrypt(&blob, b"kid-1"),
            Err(KeyError::Decrypt)
        ));
        let mut tampered = blob.clone();
        tampered[NONCE_LEN] ^= 1;
        assert!(matches!(
            kek.decrypt(&tampered, b"kid-1"),
            Err(KeyError::Decrypt)
        ));
        assert!(matches!(
            kek.decrypt(&blob[..20], b"kid-1"),
            Err(KeyError::Decrypt)
        ));
    }

    #[test]
    fn load_or_generate_creates_then_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested").join("data");
        let (kek, generated) = Kek::load_or_generate(&data_dir).unwrap();
        assert!(generated);
        let blob = kek.encrypt(b"x", b"aad").unwrap();

        let (again, generated) = Kek::load_or_generate(&data_dir).unwrap();
        assert!(!generated);
        assert_eq!(again.decrypt(&blob, b"aad").unwrap(), b"x");

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(data_dir.join(KEK_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn load_or_generate_refuses_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEK_FILE), "c2hvcnQ=\n").unwrap();
        match Kek::load_or_generate(dir.path()) {
            Err(KeyError::InvalidKek(msg)) => assert!(msg.contains("exactly 32 bytes")),
            other => panic!("unexpected {other:?}"),
        }
        // The bad file is left for the operator, never replaced.
        assert_eq!(
            fs::read_to_string(dir.path().join(KEK_FILE)).unwrap(),
            "c2hvcnQ=\n"
        );
    }

    #[test]
    fn generated_keys_are_well_formed() {
        let kek = Kek::generate();
        for alg in Alg::ALL {
            let rec = generate_key(alg, TENANT, &kek, 100, STATE_NEXT).unwrap();
            assert_eq!(rec.alg, alg.as_str());
            assert_eq!(rec.state, STATE_NEXT);
            assert_eq!(rec.activated_at, None);
            let jwk: Value = serde_json::from_str(&rec.public_jwk).unwrap();
            assert_eq!(jwk["kid"], rec.kid.as_str());
            assert_eq!(jwk["alg"], alg.as_str());
            assert_eq!(jwk["use"], "sig");
            assert!(jwk.get("d").is_none());
            // kid is derived from the key, and the record passes load-time validation.
            let public = PublicKey::from_jwk(alg, &jwk).unwrap();
            assert_eq!(public.kid(), rec.kid);
            assert_eq!(rec.kid.len(), 22); // 16 bytes, base64url unpadded
                                           // The sealed PKCS#8 opens only with its own kid.
            let der = kek.decrypt(&rec.private_enc, rec.kid.as_bytes()).unwrap();
            assert!(super::super::jws::PrivateKey::from_pkcs8(alg, &der).is_ok());
            assert!(encoding_key_from_pkcs8(alg, &der).is_ok());
            assert!(kek.decrypt(&rec.private_enc, b"other").is_err());
        }
        let active = generate_key(Alg::ES256, TENANT, &kek, 7, STATE_ACTIVE).unwrap();
        assert_eq!(active.activated_at, Some(7));
        assert!(generate_key(Alg::ES256, TENANT, &kek, 7, STATE_RETIRED).is_err());
    }

    #[test]
    fn kid_matches_rfc7638_example() {
        // RFC 7638 §3.1: the RSA example's full thumbprint is
        // NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs; our kid is its first 16 bytes.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jwk = json!({"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256"});
        let public = PublicKey::from_jwk(Alg::RS256, &jwk).unwrap();
        let full = URL_SAFE_NO_PAD
            .decode("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
            .unwrap();
        assert_eq!(public.kid(), URL_SAFE_NO_PAD.encode(&full[..16]));
    }

    #[test]
    fn from_jwk_rejects_mismatched_or_invalid_keys() {
        let kek = Kek::generate();
        let rec = generate_key(Alg::ES256, TENANT, &kek, 0, STATE_NEXT).unwrap();
        let jwk: Value = serde_json::from_str(&rec.public_jwk).unwrap();
        assert!(PublicKey::from_jwk(Alg::RS256, &jwk).is_err());
        let mut off_curve = jwk.clone();
        off_curve["y"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert!(PublicKey::from_jwk(Alg::ES256, &off_curve).is_err());
        let mut no_x = jwk;
        no_x.as_object_mut().unwrap().remove("x");
        assert!(PublicKey::from_jwk(Alg::ES256, &no_x).is_err());
    }

    #[test]
    fn rsa_public_keys_below_2048_bits_or_malformed_are_refused() {
        let mut n = vec![0xffu8; 256];
        let e = [1u8, 0, 1];
        assert!(check_rsa_public(&n, &e).is_ok());
        // A leading zero octet does not make a short modulus long.
        let short: Vec<u8> = std::iter::once(0).chain([0xffu8; 255]).collect();
        assert!(check_rsa_public(&short, &e).unwrap_err().contains("2048"));
        assert!(check_rsa_public(&n, &[2]).is_err(), "even exponent");
        assert!(check_rsa_public(&n, &[1]).is_err(), "exponent 1");
        n[255] = 0xfe;
        assert!(check_rsa_public(&n, &e).is_err(), "even modulus");
    }

    #[test]
    fn generated_rsa_key_round_trips_through_pkcs8() {
        let kek = Kek::generate();
        let rec = generate_key(Alg::RS256, TENANT, &kek, 0, STATE_NEXT).unwrap();
        let jwk: Value = serde_json::from_str(&rec.public_jwk).unwrap();
        assert!(PublicKey::from_jwk(Alg::RS256, &jwk).is_ok());
        assert!(encoding_key_from_pkcs8(Alg::RS256, &[0x30, 0x00]).is_err());
    }
}
