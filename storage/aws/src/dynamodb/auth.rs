//! [`AuthStore`] on the auth table: users unique by email, refresh tokens rotated in families,
//! reuse revoking the family.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;

use crate::sdk_error;
use lfusys_core::clock::now_ms;
use storage::{
    AuthStore, RefreshRecord, RotateOutcome, StoreError, StoreResult, UserId, UserRecord,
};

use super::attrs::{built, get_n, get_s, n, opt_s, s, transact, TxOutcome};
use super::tables::check_table;
use super::{Item, TableNames, TOKEN_GRACE_SECS};

/// [`AuthStore`] on the auth table.
#[derive(Debug, Clone)]
pub struct DynamoAuthStore {
    client: Client,
    table: String,
}

fn pk(kind: &str, id: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(format!("{kind}#{id}")))])
}

fn user_item(kind: &str, id: &str, u: &UserRecord) -> Item {
    let mut item = pk(kind, id);
    item.extend([
        ("user_id".to_owned(), s(&u.user_id)),
        ("email".to_owned(), s(&u.email)),
        ("name".to_owned(), s(&u.name)),
        ("password_hash".to_owned(), s(&u.password_hash)),
        ("created_at_ms".to_owned(), n(u.created_at_ms)),
    ]);
    item
}

fn user_from(item: &Item) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        user_id: get_s(item, "user_id")?.into(),
        email: get_s(item, "email")?,
        name: get_s(item, "name")?,
        password_hash: get_s(item, "password_hash")?,
        created_at_ms: get_n(item, "created_at_ms")?,
    })
}

fn token_ttl(expires_at_ms: i64) -> i64 {
    expires_at_ms / 1000 + TOKEN_GRACE_SECS
}

impl DynamoAuthStore {
    pub fn new(sdk: &SdkConfig, table_prefix: &str) -> Self {
        Self::with_client(Client::new(sdk), TableNames::new(table_prefix).auth)
    }

    pub fn with_client(client: Client, table: String) -> Self {
        Self { client, table }
    }

    async fn get(&self, key: Item) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("DynamoDB GetItem {}", self.table), e))?;
        Ok(out.item().cloned())
    }

    fn put_token(&self, t: &RefreshRecord, family_id: &str, user_id: &str) -> StoreResult<Put> {
        let mut item = pk("token", &t.token_hash);
        item.extend([
            ("family_id".to_owned(), s(family_id)),
            ("user_id".to_owned(), s(user_id)),
            ("expires_at_ms".to_owned(), n(t.expires_at_ms)),
            ("ttl".to_owned(), n(token_ttl(t.expires_at_ms))),
        ]);
        built(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build(),
        )
    }

    /// Creates the family if new and keeps it (and its revocation) alive as long as its tokens.
    fn touch_family(
        &self,
        family_id: &str,
        user_id: &str,
        expires_at_ms: i64,
    ) -> StoreResult<Update> {
        built(
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(pk("family", family_id)))
                .update_expression(
                    "SET user_id = if_not_exists(user_id, :u), #ttl = if_not_exists(#ttl, :zero)",
                )
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":u", s(user_id))
                .expression_attribute_values(":zero", n(token_ttl(expires_at_ms)))
                .build(),
        )
    }

    async fn revoke(&self, family_id: &str, now_ms: i64) -> StoreResult<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(pk("family", family_id)))
            .update_expression("SET revoked_at_ms = if_not_exists(revoked_at_ms, :now)")
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB UpdateItem auth (revoke)", e))?;
        Ok(())
    }
}

#[async_trait]
impl AuthStore for DynamoAuthStore {
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()> {
        let put = |item: Item| {
            built(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .build(),
            )
        };
        let items = vec![
            TransactWriteItem::builder()
                .put(put(user_item("user", &user.user_id, user))?)
                .build(),
            TransactWriteItem::builder()
                .put(put(user_item("email", &user.email, user))?)
                .build(),
        ];
        match transact(
            &self.client,
            "DynamoDB TransactWriteItems (create user)",
            items,
        )
        .await?
        {
            TxOutcome::Done => Ok(()),
            TxOutcome::ConditionFailed(_) => Err(StoreError::Conflict(format!(
                "a user with email {} exists",
                user.email
            ))),
        }
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        self.get(pk("email", email))
            .await?
            .as_ref()
            .map(user_from)
            .transpose()
    }

    async fn user_by_id(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        self.get(pk("user", user_id))
            .await?
            .as_ref()
            .map(user_from)
            .transpose()
    }

    async fn insert_refresh(&self, token: &RefreshRecord) -> StoreResult<()> {
        let items = vec![
            TransactWriteItem::builder()
                .put(self.put_token(token, &token.family_id, &token.user_id)?)
                .build(),
            TransactWriteItem::builder()
                .update(self.touch_family(&token.family_id, &token.user_id, token.expires_at_ms)?)
                .build(),
        ];
        match transact(
            &self.client,
            "DynamoDB TransactWriteItems (refresh token)",
            items,
        )
        .await?
        {
            TxOutcome::Done => Ok(()),
            TxOutcome::ConditionFailed(_) => {
                Err(StoreError::Conflict("the refresh token exists".into()))
            }
        }
    }

    /// The new token joins the old token's family and user, whatever `new` names.
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now_ms: i64,
    ) -> StoreResult<RotateOutcome> {
        let Some(old) = self.get(pk("token", old_hash)).await? else {
            return Ok(RotateOutcome::Invalid);
        };
        let family_id = get_s(&old, "family_id")?;
        let user_id = get_s(&old, "user_id")?;
        let family = self.get(pk("family", &family_id)).await?;
        if family
            .as_ref()
            .is_some_and(|f| f.contains_key("revoked_at_ms"))
        {
            return Ok(RotateOutcome::Invalid);
        }
        if old.contains_key("spent_at_ms") {
            // A spent token presented again was stolen or replayed: end the family.
            self.revoke(&family_id, now_ms).await?;
            return Ok(RotateOutcome::Reused { family_id });
        }
        let expires_at_ms: i64 = get_n(&old, "expires_at_ms")?;
        if expires_at_ms <= now_ms {
            return Ok(RotateOutcome::Invalid);
        }
        let spend = built(
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(pk("token", old_hash)))
                .update_expression("SET spent_at_ms = :now")
                .condition_expression("attribute_exists(pk) AND attribute_not_exists(spent_at_ms)")
                .expression_attribute_values(":now", n(now_ms))
                .build(),
        )?;
        // The family must still be live; its TTL follows its newest token.
        let family_update = built(
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(pk("family", &family_id)))
                .update_expression("SET #ttl = :ttl")
                .condition_expression("attribute_not_exists(revoked_at_ms)")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":ttl", n(token_ttl(new.expires_at_ms)))
                .build(),
        )?;
        let items = vec![
            TransactWriteItem::builder().update(spend).build(),
            TransactWriteItem::builder()
                .put(self.put_token(new, &family_id, &user_id)?)
                .build(),
            TransactWriteItem::builder().update(family_update).build(),
        ];
        match transact(&self.client, "DynamoDB TransactWriteItems (rotate)", items).await? {
            TxOutcome::Done => Ok(RotateOutcome::Rotated {
                user_id: user_id.into(),
            }),
            TxOutcome::ConditionFailed(codes) => {
                // The old token was spent by a racing rotation (a replay): end the family.
                // Or the family was revoked meanwhile: the token is invalid.
                let revoked = codes.get(2).is_some_and(|c| c == "ConditionalCheckFailed")
                    || self
                        .get(pk("family", &family_id))
                        .await?
                        .is_some_and(|f| f.contains_key("revoked_at_ms"));
                if revoked {
                    return Ok(RotateOutcome::Invalid);
                }
                self.revoke(&family_id, now_ms).await?;
                Ok(RotateOutcome::Reused { family_id })
            }
        }
    }

    async fn family_of(&self, token_hash: &str) -> StoreResult<Option<String>> {
        Ok(self
            .get(pk("token", token_hash))
            .await?
            .and_then(|t| opt_s(&t, "family_id")))
    }

    async fn revoke_family(&self, family_id: &str) -> StoreResult<()> {
        self.revoke(family_id, now_ms()).await
    }

    async fn is_family_revoked(&self, family_id: &str) -> StoreResult<bool> {
        Ok(self
            .get(pk("family", family_id))
            .await?
            .is_some_and(|f| f.contains_key("revoked_at_ms")))
    }

    async fn check(&self) -> StoreResult<()> {
        check_table(&self.client, &self.table).await
    }
}
