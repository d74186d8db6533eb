//! Recently checked active access tokens, so a resource server that
//! introspects the same token again is answered from memory.
//!
//! - **Keyed by a digest**: HMAC-SHA-256 under a key made at start, over
//!   tenant and token. The token itself is not kept, and one tenant's entry
//!   never answers another's.
//! - **Active answers only**: an unknown, expired or revoked token always
//!   takes the full path, so guessing cannot fill the cache.
//! - **Rechecked on every hit**: expiry against the clock, the issuer, and
//!   for JWTs that the signing key is still published; the full signature
//!   and revocation check ran when the entry was made.
//! - **Dropped on revocation**: an entry is served only while
//!   [`Changes::still_valid`] says no revocation was seen since it was
//!   checked, which holds revocations by any node to at most a second.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use moka::sync::Cache;
use rand::RngCore;
use sha2::Sha256;

use super::AccessClaims;
use crate::store::changes::{Changes, Checked};
use crate::telemetry::metrics::metrics;
use crate::tenants::Tenant;

/// Entries kept at most; each holds one token's claims (a few hundred bytes).
const CAPACITY: u64 = 50_000;

pub struct ActiveTokens {
    entries: Cache<[u8; 32], Arc<Entry>>,
    keyed: Hmac<Sha256>,
    changes: Arc<Changes>,
}

struct Entry {
    tenant_id: String,
    claims: Arc<AccessClaims>,
    /// The key a JWT was signed with; `None` for opaque tokens.
    kid: Option<String>,
    checked: Checked,
}

/// Where a lookup left off: the digest to store under, and what the
/// revocation state was before the full check began.
pub struct Miss {
    key: [u8; 32],
    checked: Checked,
}

impl ActiveTokens {
    pub fn new(changes: Arc<Changes>) -> ActiveTokens {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        // HMAC accepts keys of any length.
        let keyed = match Hmac::<Sha256>::new_from_slice(&secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        ActiveTokens {
            entries: Cache::builder().max_capacity(CAPACITY).build(),
            keyed,
            changes,
        }
    }

    /// The cached claims of `token` if it was active when last checked and
    /// still is as far as this node can tell; otherwise what
    /// [`ActiveTokens::remember`] needs after the full check.
    pub fn lookup(
        &self,
        tenant: &Tenant,
        token: &str,
        now: i64,
    ) -> Result<Arc<AccessClaims>, Miss> {
        let key = self.digest(&tenant.id, token);
        // Noted before the store is read by the caller (see `Changes`).
        let miss = |key| Miss {
            key,
            checked: self.changes.before_check(),
        };
        let Some(entry) = self.entries.get(&key) else {
            metrics().cache("active_tokens", false);
            return Err(miss(key));
        };
        let usable = entry.tenant_id == tenant.id
            && self.changes.still_valid(entry.checked)
            && entry.claims.exp > now
            && entry.claims.iss == tenant.issuer
            && entry
                .kid
                .as_deref()
                .is_none_or(|kid| tenant.keys.verifying_key(kid).is_some());
        metrics().cache("active_tokens", usable);
        if usable {
            Ok(entry.claims.clone())
        } else {
            self.entries.invalidate(&key);
            Err(miss(key))
        }
    }

    /// Keeps the claims of a token the full check found active.
    pub fn remember(
        &self,
        tenant: &Tenant,
        miss: Miss,
        claims: Arc<AccessClaims>,
        kid: Option<String>,
    ) {
        // Seen revoked in the meantime: the answer may already be stale.
        if !self.changes.still_valid(miss.checked) {
            return;
        }
        self.entries.insert(
            miss.key,
            Arc::new(Entry {
                tenant_id: tenant.id.clone(),
                claims,
                kid,
                checked: miss.checked,
            }),
        );
    }

    fn digest(&self, tenant_id: &str, token: &str) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(tenant_id.as_bytes());
        mac.update(&[0]);
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().into()
    }
}
