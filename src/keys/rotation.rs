//! Key rotation as pure logic over records; the store applies the plan atomically.
//!
//! The rule: a key is published as `next` before it ever signs, so verifiers
//! that cache the JWKS already know it when it starts signing. Rotation
//! promotes `next` to `active`, retires the old active key (still published
//! until every token it signed has expired) and creates a new `next`.

use super::crypto::{generate_key, Alg, Kek, STATE_ACTIVE, STATE_NEXT, STATE_RETIRED};
use super::error::KeyError;
use crate::store::KeyRecord;

/// What one rotation changes. Apply it with `Store::rotate_keys` (or
/// [`RotationPlan::apply`] for in-memory records).
#[derive(Clone, Debug)]
pub struct RotationPlan {
    /// Kid of the `next` key that becomes `active`.
    pub promote: Option<String>,
    /// Kid of the `active` key that becomes `retired`.
    pub retire: Option<String>,
    /// The freshly generated `next` key to insert.
    pub new_next: KeyRecord,
    /// Until when the retired key stays in the JWKS: `now + max_token_lifetime`.
    pub publish_until: i64,
}

impl RotationPlan {
    /// The records after the rotation, as the store would leave them.
    pub fn apply(&self, records: &[KeyRecord], now: i64) -> Vec<KeyRecord> {
        let mut out: Vec<KeyRecord> = records
            .iter()
            .cloned()
            .map(|mut rec| {
                if self.promote.as_deref() == Some(rec.kid.as_str()) {
                    rec.state = STATE_ACTIVE.to_owned();
                    rec.activated_at = Some(now);
                } else if self.retire.as_deref() == Some(rec.kid.as_str()) {
                    rec.state = STATE_RETIRED.to_owned();
                    rec.retired_at = Some(now);
                    rec.publish_until = Some(self.publish_until);
                }
                rec
            })
            .collect();
        out.push(self.new_next.clone());
        out
    }
}

/// Plans a rotation of `tenant_id`'s keys at `now`.
///
/// `max_token_lifetime` (seconds) is the longest lifetime of any token the
/// keys sign; the retired key is published that long so none of its tokens
/// fails verification before it expires. `alg` is the algorithm of the new
/// `next` key, so an algorithm change takes effect one rotation later, after
/// the new key has been published.
///
/// Fails with [`KeyError::NoNextKey`] when there is no `next` key: promoting
/// a key nobody has seen in the JWKS would break verifiers with cached key sets.
pub fn plan_rotation(
    records: &[KeyRecord],
    alg: Alg,
    tenant_id: &str,
    kek: &Kek,
    now: i64,
    max_token_lifetime: i64,
) -> Result<RotationPlan, KeyError> {
    if max_token_lifetime < 0 {
        return Err(KeyError::InvalidRotation(
            "max_token_lifetime must not be negative".into(),
        ));
    }
    let publish_until = now
        .checked_add(max_token_lifetime)
        .ok_or_else(|| KeyError::InvalidRotation("now + max_token_lifetime overflows".into()))?;
    if let Some(rec) = records.iter().find(|r| r.tenant_id != tenant_id) {
        return Err(KeyError::TenantMismatch {
            kid: rec.kid.clone(),
            expected: tenant_id.to_owned(),
            found: rec.tenant_id.clone(),
        });
    }

    let actives: Vec<&KeyRecord> = records.iter().filter(|r| r.state == STATE_ACTIVE).collect();
    let retire = match actives.as_slice() {
        [] => None,
        [one] => Some(one.kid.clone()),
        many => return Err(KeyError::MultipleActiveKeys(many.len())),
    };
    // The oldest next key has been published longest.
    let promote = records
        .iter()
        .filter(|r| r.state == STATE_NEXT)
        .min_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)))
        .map(|r| r.kid.clone())
        .ok_or(KeyError::NoNextKey)?;

    let new_next = generate_key(alg, tenant_id, kek, now, STATE_NEXT)?;
    Ok(RotationPlan {
        promote: Some(promote),
        retire,
        new_next,
        publish_until,
    })
}

/// The keys for a tenant's first start: one `active` key and one `next` key,
/// so the first rotation already has a published key to promote. (The first
/// active key signs without a prior publication: no verifier can hold an
/// older JWKS of a tenant that had no keys.)
pub fn initial_keys(
    alg: Alg,
    tenant_id: &str,
    kek: &Kek,
    now: i64,
) -> Result<Vec<KeyRecord>, KeyError> {
    Ok(vec![
        generate_key(alg, tenant_id, kek, now, STATE_ACTIVE)?,
        generate_key(alg, tenant_id, kek, now, STATE_NEXT)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::super::ring::KeyRing;
    use super::*;
    use serde_json::{json, Value};

    const TENANT: &str = "t1";
    const T0: i64 = 1_700_000_000;
    const LIFETIME: i64 = 3600;

    fn kids(ring: &KeyRing) -> Vec<String> {
        ring.jwks()["keys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k["kid"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn initial_keys_are_one_active_and_one_next() {
        let kek = Kek::generate();
        let records = initial_keys(Alg::ES256, TENANT, &kek, T0).unwrap();
        let states: Vec<&str> = records.iter().map(|r| r.state.as_str()).collect();
        assert_eq!(states, [STATE_ACTIVE, STATE_NEXT]);
        assert_ne!(records[0].kid, records[1].kid);
        assert!(records.iter().all(|r| r.tenant_id == TENANT));
        let ring = KeyRing::load(&records, &kek, T0).unwrap();
        assert_eq!(ring.active().kid, records[0].kid);
        assert_eq!(
            kids(&ring),
            [records[0].kid.clone(), records[1].kid.clone()]
        );
    }

    #[test]
    fn rotation_promotes_next_and_retires_active() {
        let kek = Kek::generate();
        let records = initial_keys(Alg::ES256, TENANT, &kek, T0).unwrap();
        let (old_active, old_next) = (records[0].kid.clone(), records[1].kid.clone());
        let before = KeyRing::load(&records, &kek, T0).unwrap();
        let old_token = before
            .sign("at+jwt", &json!({"sub": "a", "exp": T0 + 100 + LIFETIME}))
            .unwrap();

        let now = T0 + 100;
        let plan = plan_rotation(&records, Alg::EdDSA, TENANT, &kek, now, LIFETIME).unwrap();
        assert_eq!(plan.promote.as_deref(), Some(old_next.as_str()));
        assert_eq!(plan.retire.as_deref(), Some(old_active.as_str()));
        assert_eq!(plan.publish_until, now + LIFETIME);
        assert_eq!(plan.new_next.state, STATE_NEXT);
        assert_eq!(plan.new_next.alg, "EdDSA");
        assert_eq!(plan.new_next.tenant_id, TENANT);

        let rotated = plan.apply(&records, now);
        let after = KeyRing::load(&rotated, &kek, now).unwrap();
        // The promoted key was already published before it signs.
        assert!(kids(&before).contains(&after.active().kid));
        assert_eq!(after.active().kid, old_next);
        assert_eq!(
            kids(&after),
            [
                old_next.clone(),
                plan.new_next.kid.clone(),
                old_active.clone()
            ]
        );
        // Tokens of the retired key keep verifying while they can be valid...
        assert!(after.verify::<Value>(&old_token, None, now + 10).is_ok());
        // ...and the key leaves the JWKS once none can be.
        let later = KeyRing::load(&rotated, &kek, now + LIFETIME).unwrap();
        assert!(!kids(&later).contains(&old_active));
        assert!(matches!(
            later.verify::<Value>(&old_token, None, now + LIFETIME),
            Err(KeyError::UnknownKid(_))
        ));

        // A second rotation promotes the key the first one published.
        let plan2 = plan_rotation(&rotated, Alg::EdDSA, TENANT, &kek, now + 1, LIFETIME).unwrap();
        assert_eq!(plan2.promote, Some(plan.new_next.kid.clone()));
        assert_eq!(plan2.retire, Some(old_next));
        let ring2 = KeyRing::load(&plan2.apply(&rotated, now + 1), &kek, now + 1).unwrap();
        assert_eq!(ring2.active().alg, Alg::EdDSA);
    }

    #[test]
    fn rotation_without_next_key_is_refused() {
        let kek = Kek::generate();
        let mut records = initial_keys(Alg::ES256, TENANT, &kek, T0).unwrap();
        records.truncate(1);
        assert!(matches!(
            plan_rotation(&records, Alg::ES256, TENANT, &kek, T0, LIFETIME),
            Err(KeyError::NoNextKey)
        ));
    }

    #[test]
    fn rotation_checks_its_inputs() {
        let kek = Kek::generate();
        let records = initial_keys(Alg::ES256, TENANT, &kek, T0).unwrap();
        assert!(matches!(
            plan_rotation(&records, Alg::ES256, "t2", &kek, T0, LIFETIME),
            Err(KeyError::TenantMismatch { .. })
        ));
        assert!(matches!(
            plan_rotation(&records, Alg::ES256, TENANT, &kek, T0, -1),
            Err(KeyError::InvalidRotation(_))
        ));
        let mut two_active = records.clone();
        two_active[1].state = STATE_ACTIVE.into();
        two_active.push(generate_key(Alg::ES256, TENANT, &kek, T0, STATE_NEXT).unwrap());
        assert!(matches!(
            plan_rotation(&two_active, Alg::ES256, TENANT, &kek, T0, LIFETIME),
            Err(KeyError::MultipleActiveKeys(2))
        ));
    }
}
