//! Storage properties that the protocol relies on, checked directly against
//! both implementations: single-use codes and refresh rotation under
//! concurrency, family revocation, one-time jti.

mod common;

use common::Db;
use gatehouse::store::*;

struct Fixture {
    store: DynStore,
    _dir: tempfile::TempDir,
    _db: Option<DropDb>,
}

struct DropDb(String);
impl Drop for DropDb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0),
            ])
            .output();
    }
}

async fn fixture(db: Db) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (url, drop) = match db {
        Db::Sqlite => (
            format!("sqlite://{}", dir.path().join("s.db").display()),
            None,
        ),
        Db::Postgres => {
            let name = format!("gh_store_{}", uuid::Uuid::new_v4().simple());
            let out = std::process::Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-qc",
                    &format!("CREATE DATABASE {name}"),
                ])
                .output()
                .unwrap();
            assert!(out.status.success());
            (
                format!("postgres://postgres@127.0.0.1:5432/{name}"),
                Some(DropDb(name)),
            )
        }
    };
    let store = connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store
        .upsert_tenant(&TenantRecord {
            id: "t".into(),
            settings: "{}".into(),
            created_at: 0,
        })
        .await
        .unwrap();
    Fixture {
        store,
        _dir: dir,
        _db: drop,
    }
}

fn grant(id: &str) -> GrantRecord {
    GrantRecord {
        id: id.into(),
        tenant_id: "t".into(),
        client_id: "c".into(),
        subject: "s".into(),
        data: "{}".into(),
        created_at: 0,
        expires_at: 10_000,
        revoked_at: None,
        parent_id: None,
    }
}

fn code(hash: &str, grant_id: &str) -> CodeRecord {
    CodeRecord {
        code_hash: hash.into(),
        tenant_id: "t".into(),
        client_id: "c".into(),
        grant_id: grant_id.into(),
        data: "{}".into(),
        expires_at: 10_000,
    }
}

fn access(jti: &str, grant_id: &str) -> AccessTokenRecord {
    AccessTokenRecord {
        jti: jti.into(),
        tenant_id: "t".into(),
        client_id: "c".into(),
        grant_id: Some(grant_id.into()),
        token_hash: None,
        claims: None,
        expires_at: 10_000,
    }
}

fn refresh(hash: &str, grant_id: &str) -> RefreshRecord {
    RefreshRecord {
        token_hash: hash.into(),
        tenant_id: "t".into(),
        client_id: "c".into(),
        grant_id: grant_id.into(),
        data: "{}".into(),
        created_at: 0,
        expires_at: 10_000,
    }
}

async fn concurrent_code_redemption_succeeds_once(db: Db) {
    let f = fixture(db).await;
    f.store
        .create_grant_with_code(&grant("g1"), &code("h1", "g1"))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = f.store.clone();
            tokio::spawn(async move {
                // Each redemption would issue its own tokens.
                let issue = move |code: &CodeRecord, grant: Option<&GrantRecord>| {
                    assert_eq!(code.grant_id, "g1");
                    assert_eq!(grant.map(|g| g.id.as_str()), Some("g1"));
                    IssuedRows {
                        access: Some(access(&format!("j-{i}"), "g1")),
                        refresh: Some(refresh(&format!("r-{i}"), "g1")),
                    }
                };
                (i, s.redeem_code("t", "h1", 100, &issue).await.unwrap())
            })
        })
        .collect();
    let redeemed = winners(tasks, |o| matches!(o, CodeRedemption::Redeemed(_))).await;
    assert_eq!(
        redeemed.len(),
        1,
        "exactly one concurrent redemption may succeed"
    );
    // Only the winner's tokens were written, in the redemption's commit.
    for i in 0..8 {
        let access_row = f
            .store
            .access_token_grant_id("t", &format!("j-{i}"))
            .await
            .unwrap();
        let refresh_row = f.store.get_refresh("t", &format!("r-{i}")).await.unwrap();
        let won = redeemed == [i];
        assert_eq!(access_row.is_some(), won, "access row of redemption {i}");
        assert_eq!(refresh_row.is_some(), won, "refresh row of redemption {i}");
    }
}

/// The numbers of the concurrent tasks whose outcome won.
async fn winners<T>(
    tasks: Vec<tokio::task::JoinHandle<(usize, T)>>,
    won: impl Fn(&T) -> bool,
) -> Vec<usize> {
    let mut winners = Vec::new();
    for t in tasks {
        let (i, outcome) = t.await.unwrap();
        if won(&outcome) {
            winners.push(i);
        }
    }
    winners
}

/// What a redemption that issues nothing writes with it.
fn nothing(_: &CodeRecord, _: Option<&GrantRecord>) -> IssuedRows {
    IssuedRows::default()
}

async fn code_replay_revokes_grant_and_its_tokens(db: Db) {
    let f = fixture(db).await;
    f.store
        .create_grant_with_code(&grant("g1"), &code("h1", "g1"))
        .await
        .unwrap();
    // The code grant's first refresh token and access-token row, written
    // with the redemption.
    let issue = |_: &CodeRecord, _: Option<&GrantRecord>| IssuedRows {
        access: Some(access("j1", "g1")),
        refresh: Some(refresh("r1", "g1")),
    };
    assert!(matches!(
        f.store.redeem_code("t", "h1", 100, &issue).await.unwrap(),
        CodeRedemption::Redeemed(_)
    ));
    assert_eq!(
        f.store.access_token_state("t", "j1", 100).await.unwrap(),
        AccessTokenState::Active
    );

    assert!(matches!(
        f.store.redeem_code("t", "h1", 101, &nothing).await.unwrap(),
        CodeRedemption::Replayed { .. }
    ));
    assert_eq!(
        f.store.access_token_state("t", "j1", 101).await.unwrap(),
        AccessTokenState::Revoked
    );
    let (_, rotated_at) = f.store.get_refresh("t", "r1").await.unwrap().unwrap();
    assert!(rotated_at.is_some(), "the refresh token is revoked too");
    assert!(f
        .store
        .get_grant("g1")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
}

async fn concurrent_refresh_rotation_succeeds_once(db: Db) {
    let f = fixture(db).await;
    f.store.create_grant(&grant("g1")).await.unwrap();
    f.store.put_refresh(&refresh("r0", "g1")).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = f.store.clone();
            tokio::spawn(async move {
                let at = access(&format!("j-{i}"), "g1");
                let outcome = s
                    .rotate_refresh(
                        "t",
                        "r0",
                        &refresh(&format!("r1-{i}"), "g1"),
                        Some(&at),
                        100,
                    )
                    .await
                    .unwrap();
                (i, outcome)
            })
        })
        .collect();
    let rotated = winners(tasks, |o| matches!(o, RefreshRotation::Rotated { .. })).await;
    assert_eq!(
        rotated.len(),
        1,
        "exactly one concurrent rotation may succeed"
    );
    // The access-token row is written with the rotation, and only by the
    // winner.
    for i in 0..8 {
        let row = f
            .store
            .access_token_grant_id("t", &format!("j-{i}"))
            .await
            .unwrap();
        assert_eq!(row.is_some(), rotated == [i], "access row of rotation {i}");
    }
    // The losers were reuse: the family is revoked.
    assert!(f
        .store
        .get_grant("g1")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
}

async fn unknown_code_and_refresh_are_unknown(db: Db) {
    let f = fixture(db).await;
    assert!(matches!(
        f.store.redeem_code("t", "nope", 1, &nothing).await.unwrap(),
        CodeRedemption::Unknown
    ));
    assert!(matches!(
        f.store
            .rotate_refresh("t", "nope", &refresh("x", "g"), None, 1)
            .await
            .unwrap(),
        RefreshRotation::Unknown
    ));
}

async fn codes_are_tenant_scoped(db: Db) {
    let f = fixture(db).await;
    f.store
        .upsert_tenant(&TenantRecord {
            id: "other".into(),
            settings: "{}".into(),
            created_at: 0,
        })
        .await
        .unwrap();
    f.store
        .create_grant_with_code(&grant("g1"), &code("h1", "g1"))
        .await
        .unwrap();
    assert!(matches!(
        f.store
            .redeem_code("other", "h1", 1, &nothing)
            .await
            .unwrap(),
        CodeRedemption::Unknown
    ));
    assert!(matches!(
        f.store.redeem_code("t", "h1", 1, &nothing).await.unwrap(),
        CodeRedemption::Redeemed(_)
    ));
}

async fn jti_is_remembered_until_expiry(db: Db) {
    let f = fixture(db).await;
    assert!(f
        .store
        .remember_jti("t", "client_assertion:c", "j", 200, 100)
        .await
        .unwrap());
    assert!(!f
        .store
        .remember_jti("t", "client_assertion:c", "j", 200, 150)
        .await
        .unwrap());
    // After expiry the entry is gone and the value may be seen again.
    assert!(f
        .store
        .remember_jti("t", "client_assertion:c", "j", 400, 300)
        .await
        .unwrap());
}

async fn pending_authorization_is_taken_once(db: Db) {
    let f = fixture(db).await;
    let p = HandleRecord {
        hash: "p".into(),
        tenant_id: "t".into(),
        data: "{}".into(),
        expires_at: 1000,
    };
    f.store.put_pending(&p).await.unwrap();
    assert!(f.store.take_pending("t", "p", 10).await.unwrap().is_some());
    assert!(f.store.take_pending("t", "p", 10).await.unwrap().is_none());
}

async fn identity_mapping_is_stable(db: Db) {
    let f = fixture(db).await;
    let rec = |subject: &str| IdentityRecord {
        tenant_id: "t".into(),
        connector_id: "dev".into(),
        upstream_subject: "u@x".into(),
        subject: subject.into(),
        claims: "{}".into(),
    };
    let first = f.store.map_identity(&rec("s-1"), 1).await.unwrap();
    let second = f.store.map_identity(&rec("s-2"), 2).await.unwrap();
    assert_eq!(first, "s-1");
    assert_eq!(second, "s-1", "a returning user keeps their broker subject");
}

async fn purge_removes_only_expired(db: Db) {
    let f = fixture(db).await;
    f.store
        .put_pending(&HandleRecord {
            hash: "old".into(),
            tenant_id: "t".into(),
            data: "{}".into(),
            expires_at: 10,
        })
        .await
        .unwrap();
    f.store
        .put_pending(&HandleRecord {
            hash: "new".into(),
            tenant_id: "t".into(),
            data: "{}".into(),
            expires_at: 1000,
        })
        .await
        .unwrap();
    f.store.purge_expired(100).await.unwrap();
    assert!(f
        .store
        .get_pending("t", "new", 100)
        .await
        .unwrap()
        .is_some());
    assert!(f.store.take_pending("t", "old", 0).await.unwrap().is_none());
}

async fn audit_batches_are_written_and_listed(db: Db) {
    let f = fixture(db).await;
    let events: Vec<AuditRecord> = (0..700)
        .map(|i| AuditRecord {
            id: format!("e{i}"),
            tenant_id: "t".into(),
            at: i,
            kind: "token".into(),
            outcome: "success".into(),
            client_id: Some("c".into()),
            subject: None,
            source_ip: None,
            detail: "{}".into(),
        })
        .collect();
    f.store.insert_audit(&events).await.unwrap();
    let listed = f.store.list_audit("t", 1000).await.unwrap();
    assert_eq!(listed.len(), 700);
    assert_eq!(listed[0].at, 699, "newest first");
}

fn audit_event(i: i64, at: i64) -> AuditRecord {
    AuditRecord {
        id: format!("e{i}"),
        tenant_id: "t".into(),
        at,
        kind: "token".into(),
        outcome: "success".into(),
        client_id: Some("c".into()),
        subject: None,
        source_ip: Some("127.0.0.1".into()),
        detail: r#"{"grant_type":"client_credentials"}"#.into(),
    }
}

/// A writer batch larger than one statement's bind limit goes in whole,
/// and writing it again (a spill replayed after a crash) adds nothing.
async fn audit_batches_are_idempotent_and_may_exceed_one_statement(db: Db) {
    let f = fixture(db).await;
    let events: Vec<AuditRecord> = (0..4500).map(|i| audit_event(i, i)).collect();
    f.store.insert_audit(&events).await.unwrap();
    f.store.insert_audit(&events[1000..3000]).await.unwrap();
    let mut more = events[4000..].to_vec();
    more.push(audit_event(9999, 9999));
    f.store.insert_audit(&more).await.unwrap();
    let listed = f.store.list_audit("t", 100_000).await.unwrap();
    assert_eq!(listed.len(), 4501, "each id once");
}

/// Retention deletes exactly the events before the cutoff, across
/// several bounded statements.
async fn audit_purge_removes_only_old_events(db: Db) {
    let f = fixture(db).await;
    // 12,000 old (more than two purge statements) and 300 recent.
    let events: Vec<AuditRecord> = (0..12_300)
        .map(|i| audit_event(i, if i < 12_000 { 1_000 + i } else { 50_000 + i }))
        .collect();
    f.store.insert_audit(&events).await.unwrap();
    let removed = f.store.purge_audit_before(50_000).await.unwrap();
    assert_eq!(removed, 12_000);
    let left = f.store.list_audit("t", 100_000).await.unwrap();
    assert_eq!(left.len(), 300);
    assert!(left.iter().all(|e| e.at >= 50_000));
    assert_eq!(f.store.purge_audit_before(50_000).await.unwrap(), 0);
}

async fn revoking_a_grant_revokes_derived_grants(db: Db) {
    let f = fixture(db).await;
    f.store.create_grant(&grant("user")).await.unwrap();
    let child = GrantRecord {
        parent_id: Some("user".into()),
        ..grant("child")
    };
    let grandchild = GrantRecord {
        parent_id: Some("child".into()),
        ..grant("grandchild")
    };
    f.store.create_grant(&child).await.unwrap();
    f.store.create_grant(&grandchild).await.unwrap();
    f.store.create_grant(&grant("unrelated")).await.unwrap();
    f.store
        .put_refresh(&refresh("r-grandchild", "grandchild"))
        .await
        .unwrap();
    f.store.revoke_grant("user", 50).await.unwrap();
    for id in ["user", "child", "grandchild"] {
        assert!(
            f.store
                .get_grant(id)
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some(),
            "{id} revoked"
        );
    }
    assert!(f
        .store
        .get_grant("unrelated")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    let (_, rotated) = f
        .store
        .get_refresh("t", "r-grandchild")
        .await
        .unwrap()
        .unwrap();
    assert!(rotated.is_some(), "the derived refresh token is dead");
}

on_both_databases!(
    revoking_a_grant_revokes_derived_grants,
    audit_batches_are_written_and_listed,
    audit_batches_are_idempotent_and_may_exceed_one_statement,
    audit_purge_removes_only_old_events,
    concurrent_code_redemption_succeeds_once,
    code_replay_revokes_grant_and_its_tokens,
    concurrent_refresh_rotation_succeeds_once,
    unknown_code_and_refresh_are_unknown,
    codes_are_tenant_scoped,
    jti_is_remembered_until_expiry,
    pending_authorization_is_taken_once,
    identity_mapping_is_stable,
    purge_removes_only_expired,
);
