//! Signing keys: generation, encryption at rest, rotation, JWKS, and JWT
//! signing/verification with them.
//!
//! - [`crypto`]: algorithms, the key-encryption key ([`Kek`]), key generation.
//! - [`ring`]: a tenant's loaded [`KeyRing`]: sign, verify, publish the JWKS.
//! - [`rotation`]: pure rotation planning over stored [`KeyRecord`](crate::store::KeyRecord)s.

pub mod crypto;
mod error;
mod jws;
pub mod ring;
pub mod rotation;

pub use crypto::{generate_key, Alg, Kek, KEK_LEN, STATE_ACTIVE, STATE_NEXT, STATE_RETIRED};
pub use error::KeyError;
pub use ring::{KeyRing, SigningKey, VerifyingKey};
pub use rotation::{initial_keys, plan_rotation, RotationPlan};
