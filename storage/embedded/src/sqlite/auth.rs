//! Users and rotating refresh-token families.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row};

use super::{immediate, Db, DbResult, Durability};
use storage::{AuthStore, RefreshRecord, RotateOutcome, StoreResult, UserId, UserRecord};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    user_id       TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS families (
    family_id     TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    revoked_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash    TEXT PRIMARY KEY,
    family_id     TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    spent_at_ms   INTEGER
);
CREATE INDEX IF NOT EXISTS refresh_tokens_by_family ON refresh_tokens (family_id);
";

const USER_COLUMNS: &str = "user_id, email, name, password_hash, created_at_ms";

/// [`AuthStore`] on one SQLite file (`auth.db`).
#[derive(Debug, Clone)]
pub struct SqliteAuthStore {
    db: Db,
}

impl SqliteAuthStore {
    pub fn open(path: &Path) -> StoreResult<Self> {
        Ok(Self {
            db: Db::open(path, &[SCHEMA], Durability::Normal)?,
        })
    }
}

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user_id: r.get::<_, String>(0)?.into(),
        email: r.get(1)?,
        name: r.get(2)?,
        password_hash: r.get(3)?,
        created_at_ms: r.get(4)?,
    })
}

#[async_trait]
impl AuthStore for SqliteAuthStore {
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()> {
        let u = user.clone();
        self.db
            .call(move |c| {
                c.execute(
                    &format!("INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                    params![
                        u.user_id.as_str(),
                        u.email,
                        u.name,
                        u.password_hash,
                        u.created_at_ms
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        let email = email.to_owned();
        self.db
            .call(move |c| {
                Ok(c.query_row(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?1"),
                    [email],
                    user_from_row,
                )
                .optional()?)
            })
            .await
    }

    async fn user_by_id(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        let id = user_id.to_string();
        self.db
            .call(move |c| {
                Ok(c.query_row(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1"),
                    [id],
                    user_from_row,
                )
                .optional()?)
            })
            .await
    }

    /// Creates the token's family when it is new.
    async fn insert_refresh(&self, token: &RefreshRecord) -> StoreResult<()> {
        let t = token.clone();
        self.db
            .call(move |c| {
                immediate(c, |tx| {
                    tx.execute(
                        "INSERT INTO families (family_id, user_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                        params![t.family_id, t.user_id.as_str()],
                    )?;
                    tx.execute(
                        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at_ms) \
                         VALUES (?1, ?2, ?3, ?4)",
                        params![t.token_hash, t.family_id, t.user_id.as_str(), t.expires_at_ms],
                    )?;
                    Ok(())
                })
            })
            .await
    }

    /// The new token joins the old token's family and user, whatever `new` names.
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now_ms: i64,
    ) -> StoreResult<RotateOutcome> {
        let (old_hash, new) = (old_hash.to_owned(), new.clone());
        self.db
            .call(move |c| {
                immediate(c, |tx| {
                    let old: Option<(String, String, i64, Option<i64>, Option<i64>)> = tx
                        .query_row(
                            "SELECT t.family_id, t.user_id, t.expires_at_ms, t.spent_at_ms, f.revoked_at_ms \
                             FROM refresh_tokens t LEFT JOIN families f ON f.family_id = t.family_id \
                             WHERE t.token_hash = ?1",
                            [&old_hash],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                        )
                        .optional()?;
                    let Some((family_id, user_id, expires_at_ms, spent_at_ms, revoked_at_ms)) = old else {
                        return Ok(RotateOutcome::Invalid);
                    };
                    if revoked_at_ms.is_some() {
                        return Ok(RotateOutcome::Invalid);
                    }
                    if spent_at_ms.is_some() {
                        // A spent token presented again was stolen or replayed: end the family.
                        revoke(tx, &family_id, &user_id, now_ms)?;
                        return Ok(RotateOutcome::Reused { family_id });
                    }
                    if expires_at_ms <= now_ms {
                        return Ok(RotateOutcome::Invalid);
                    }
                    tx.execute(
                        "UPDATE refresh_tokens SET spent_at_ms = ?2 WHERE token_hash = ?1",
                        params![old_hash, now_ms],
                    )?;
                    tx.execute(
                        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at_ms) \
                         VALUES (?1, ?2, ?3, ?4)",
                        params![new.token_hash, family_id, user_id, new.expires_at_ms],
                    )?;
                    Ok(RotateOutcome::Rotated {
                        user_id: user_id.into(),
                    })
                })
            })
            .await
    }

    async fn family_of(&self, token_hash: &str) -> StoreResult<Option<String>> {
        let hash = token_hash.to_owned();
        self.db
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT family_id FROM refresh_tokens WHERE token_hash = ?1",
                    [hash],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await
    }

    async fn revoke_family(&self, family_id: &str) -> StoreResult<()> {
        let id = family_id.to_owned();
        self.db
            .call(move |c| {
                immediate(c, |tx| {
                    let user: Option<String> = tx
                        .query_row(
                            "SELECT user_id FROM families WHERE family_id = ?1",
                            [&id],
                            |r| r.get(0),
                        )
                        .optional()?;
                    revoke(
                        tx,
                        &id,
                        user.as_deref().unwrap_or_default(),
                        lfusys_core::clock::now_ms(),
                    )
                })
            })
            .await
    }

    async fn is_family_revoked(&self, family_id: &str) -> StoreResult<bool> {
        let id = family_id.to_owned();
        self.db
            .call(move |c| {
                let revoked: Option<Option<i64>> = c
                    .query_row(
                        "SELECT revoked_at_ms FROM families WHERE family_id = ?1",
                        [id],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok(matches!(revoked, Some(Some(_))))
            })
            .await
    }

    async fn check(&self) -> StoreResult<()> {
        self.db.check().await
    }
}

/// Marks the family revoked (recording it even when unknown, so a later insert cannot revive it).
fn revoke(tx: &rusqlite::Connection, family_id: &str, user_id: &str, now_ms: i64) -> DbResult<()> {
    tx.execute(
        "INSERT INTO families (family_id, user_id, revoked_at_ms) VALUES (?1, ?2, ?3) \
         ON CONFLICT (family_id) DO UPDATE SET revoked_at_ms = COALESCE(revoked_at_ms, excluded.revoked_at_ms)",
        params![family_id, user_id, now_ms],
    )?;
    Ok(())
}
