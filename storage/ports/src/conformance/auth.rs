//! Conformance cases of [`AuthStore`]: users, and refresh tokens with their families.

use std::future::Future;

use crate::{AuthStore, RefreshRecord, RotateOutcome, StoreError, UserId, UserRecord};

/// Opens auth stores of one backend for the cases.
pub trait AuthHarness: Sync {
    type Store: AuthStore;
    /// Where a store keeps its data (a directory, a table prefix); the case drops it at its end.
    type Place: Send + Sync;
    /// Fresh, empty data that nothing else uses.
    fn place(&self) -> impl Future<Output = Self::Place> + Send;
    /// A store on `place`. Every call is another connection (or client), as another process
    /// would open.
    fn open(&self, place: &Self::Place) -> impl Future<Output = Self::Store> + Send;
}

const T0: i64 = 1_700_000_000_000;

/// A store on fresh data, and that data.
async fn fresh<H: AuthHarness>(h: &H) -> (H::Place, H::Store) {
    let place = h.place().await;
    let store = h.open(&place).await;
    (place, store)
}

fn user(id: &str, email: &str) -> UserRecord {
    UserRecord {
        user_id: id.into(),
        email: email.into(),
        name: "Ada".into(),
        password_hash: "$argon2id$v=19$...".into(),
        created_at_ms: T0,
    }
}

fn token(hash: &str, family: &str, expires_at_ms: i64) -> RefreshRecord {
    RefreshRecord {
        token_hash: hash.into(),
        family_id: family.into(),
        user_id: "u1".into(),
        expires_at_ms,
    }
}

pub async fn users_are_unique_by_email(h: &impl AuthHarness) {
    let (_place, s) = fresh(h).await;
    let u = user("u1", "ada@example.com");
    s.create_user(&u).await.unwrap();
    assert!(matches!(
        s.create_user(&user("u2", "ada@example.com")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.user_by_email("ada@example.com").await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(s.user_by_id(&UserId::from("u1")).await.unwrap(), Some(u));
    assert_eq!(s.user_by_email("bob@example.com").await.unwrap(), None);
    assert_eq!(s.user_by_id(&UserId::from("u2")).await.unwrap(), None);
    s.check().await.unwrap();
}

pub async fn refresh_tokens_rotate_and_reuse_revokes_the_family(h: &impl AuthHarness) {
    let (_place, s) = fresh(h).await;
    let exp = T0 + 3_600_000;
    s.insert_refresh(&token("h1", "fam", exp)).await.unwrap();
    assert_eq!(s.family_of("h1").await.unwrap().as_deref(), Some("fam"));
    assert!(!s.is_family_revoked("fam").await.unwrap());
    assert_eq!(
        s.rotate_refresh("h1", &token("h2", "fam", exp), T0)
            .await
            .unwrap(),
        RotateOutcome::Rotated {
            user_id: "u1".into()
        }
    );
    assert_eq!(
        s.rotate_refresh("h2", &token("h3", "fam", exp), T0 + 1)
            .await
            .unwrap(),
        RotateOutcome::Rotated {
            user_id: "u1".into()
        }
    );
    // h1 is presented again: theft. The family ends, h3 included.
    assert_eq!(
        s.rotate_refresh("h1", &token("h4", "fam", exp), T0 + 2)
            .await
            .unwrap(),
        RotateOutcome::Reused {
            family_id: "fam".into()
        }
    );
    assert!(s.is_family_revoked("fam").await.unwrap());
    assert_eq!(
        s.rotate_refresh("h3", &token("h5", "fam", exp), T0 + 3)
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );
    assert_eq!(
        s.family_of("h4").await.unwrap(),
        None,
        "nothing stored on reuse"
    );
    assert_eq!(
        s.rotate_refresh("nope", &token("h6", "x", exp), T0)
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );
}

pub async fn expired_and_revoked_tokens_are_invalid(h: &impl AuthHarness) {
    let (_place, s) = fresh(h).await;
    s.insert_refresh(&token("old", "f1", T0)).await.unwrap();
    assert_eq!(
        s.rotate_refresh("old", &token("n", "f1", T0 + 10), T0)
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );
    s.insert_refresh(&token("live", "f2", T0 + 1000))
        .await
        .unwrap();
    s.insert_refresh(&token("live2", "f2", T0 + 1000))
        .await
        .unwrap();
    s.revoke_family("f2").await.unwrap();
    s.revoke_family("f2").await.unwrap();
    assert!(s.is_family_revoked("f2").await.unwrap());
    assert_eq!(
        s.rotate_refresh("live", &token("n2", "f2", T0 + 10), T0)
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );
    assert!(!s.is_family_revoked("unknown").await.unwrap());
    // Duplicate token hashes are refused.
    assert!(matches!(
        s.insert_refresh(&token("live", "f3", T0)).await,
        Err(StoreError::Conflict(_))
    ));
}
