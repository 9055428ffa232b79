//! [`MetadataStore`] on the uploads, chunks and files tables: leases, exactly-once completion by
//! group promotion (see the crate-level description in `mod.rs`), files and the sweeper's listings.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValue, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;

use crate::sdk_error;
use lfusys_core::digest::Crc64;
use lfusys_core::state::UploadState;
use storage::{
    decode_cursor, encode_cursor, ChunkRecord, ClaimId, ClaimOutcome, CommitOutcome, FileId,
    FilePage, FileRecord, MetadataStore, SizeDeclared, StoreError, StoreResult, UploadId,
    UploadRecord, UserId,
};

use super::attrs::{
    built, get_n, get_s, is_condition_failed, n, opt_n, s, transact, Expr, TxOutcome,
};
use super::items::{
    chain_attr, claim_attr, conditional, created_key, file_from, file_item, group_len, group_of,
    groups, head_from, lease_ms, partial_value, record_attr, record_in, record_value, records_in,
    until_attr, upload_from, upload_item, Promotion, UploadHead, CHUNKS_PER_ITEM, CONCAT,
    LENGTH_DEFERRED,
};
use super::tables::{batch_get, batch_write, check_table};
use super::{
    Item, TableNames, FILES_BY_OWNER, FINISHED_RETENTION_SECS, JOB_UNSENT, MAX_PAGE,
    RELEASE_PENDING, UPLOADS_BY_OWNER, UPLOADS_BY_SWEEP,
};

/// [`MetadataStore`] on the uploads, chunks and files tables.
#[derive(Debug, Clone)]
pub struct DynamoMetadataStore {
    client: Client,
    tables: TableNames,
}

impl DynamoMetadataStore {
    pub fn new(sdk: &SdkConfig, table_prefix: &str) -> Self {
        Self::with_client(Client::new(sdk), TableNames::new(table_prefix))
    }

    pub fn with_client(client: Client, tables: TableNames) -> Self {
        Self { client, tables }
    }

    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    fn upload_key(upload_id: &str) -> Item {
        HashMap::from([("upload_id".to_owned(), s(upload_id))])
    }

    /// Key of the chunk-table item of group `group` of an upload.
    fn group_key(upload_id: &str, group: u32) -> Item {
        HashMap::from([
            ("upload_id".to_owned(), s(upload_id)),
            ("idx".to_owned(), n(group)),
        ])
    }

    async fn get_item(&self, table: &str, key: Item) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("DynamoDB GetItem {table}"), e))?;
        Ok(out.item().cloned())
    }

    async fn head(&self, upload_id: &str) -> StoreResult<Option<UploadHead>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.uploads)
            .set_key(Some(Self::upload_key(upload_id)))
            .consistent_read(true)
            .projection_expression("#st, total_chunks")
            .expression_attribute_names("#st", "state")
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB GetItem uploads", e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        head_from(item).map(Some)
    }

    async fn head_or_not_found(&self, upload_id: &str) -> StoreResult<UploadHead> {
        self.head(upload_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("upload {upload_id}")))
    }

    /// Counts a complete group once: its number joins the upload's `groups_done` set and
    /// `groups_left` goes down by one, in one conditional update of the upload item (only
    /// while it is uploading). Idempotent.
    async fn promote(&self, upload_id: &str, group: u32) -> StoreResult<Promotion> {
        let req = self
            .client
            .update_item()
            .table_name(&self.tables.uploads)
            .set_key(Some(Self::upload_key(upload_id)))
            .update_expression("ADD #done :group, #left :minus")
            .condition_expression("#st = :uploading AND NOT contains(#done, :g)")
            .expression_attribute_names("#done", "groups_done")
            .expression_attribute_names("#left", "groups_left")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(":group", AttributeValue::Ns(vec![group.to_string()]))
            .expression_attribute_values(":g", n(group))
            .expression_attribute_values(":minus", n(-1))
            .expression_attribute_values(":uploading", s(UploadState::Uploading.as_str()))
            .return_values(ReturnValue::AllNew);
        let (item, applied) = match conditional(req, "DynamoDB UpdateItem uploads (count)").await? {
            Ok(new) => (new, true),
            Err(old) if old.is_empty() => {
                return Err(StoreError::NotFound(format!("upload {upload_id}")))
            }
            Err(old) => (old, false),
        };
        let head = head_from(&item)?;
        let done = match item.get("groups_done") {
            Some(AttributeValue::Ns(v)) => v.iter().any(|x| x.parse() == Ok(group)),
            _ => false,
        };
        if !applied && !done {
            return Ok(Promotion::Closed(head.state));
        }
        Ok(Promotion::Counted {
            all: opt_n::<i64>(&item, "groups_left").is_some_and(|left| left <= 0),
            total: head.total,
        })
    }

    /// Moves the upload from uploading to assembling, into the outbox; true for exactly one
    /// caller. A partial upload (tus concatenation) is not moved (false): a final upload takes
    /// it with `transition`.
    async fn mark_assembling(&self, upload_id: &str, now_ms: i64) -> StoreResult<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.uploads)
            .set_key(Some(Self::upload_key(upload_id)))
            .update_expression(
                "SET #st = :assembling, updated_at_ms = :now, sweep_state = :unsent, sweep_at = :now",
            )
            .condition_expression(
                "#st = :uploading AND (attribute_not_exists(#cc) OR #cc <> :partial)",
            )
            .expression_attribute_names("#st", "state")
            .expression_attribute_names("#cc", CONCAT)
            .expression_attribute_values(":assembling", s(UploadState::Assembling.as_str()))
            .expression_attribute_values(":uploading", s(UploadState::Uploading.as_str()))
            .expression_attribute_values(":partial", partial_value())
            .expression_attribute_values(":unsent", s(JOB_UNSENT))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error("DynamoDB UpdateItem uploads (assembling)", e)),
        }
    }

    /// A recorded chunk met again (a retry, possibly after a writer died between recording and
    /// counting): makes sure its group is counted if complete. Answers a lower bound of the
    /// received count (every chunk once the upload is complete).
    async fn heal(&self, upload_id: &str, index: u32, item: &Item) -> StoreResult<u32> {
        let recorded = opt_n(item, "n").unwrap_or(0);
        if opt_n::<i64>(item, "left") != Some(0) {
            return Ok(recorded);
        }
        Ok(match self.promote(upload_id, group_of(index)).await? {
            Promotion::Counted { all: true, total } => total,
            _ => recorded,
        })
    }

    /// The items of an upload's groups, created with the upload: `left` = the group's length,
    /// `last` = its last chunk index. A claim needs its group's item: deleting them (when the
    /// upload stops taking chunks, or its chunks are dropped) closes the upload to chunks.
    async fn create_groups(&self, upload_id: &str, total: u32) -> StoreResult<()> {
        let puts = (0..groups(total))
            .map(|group| {
                let mut item = Self::group_key(upload_id, group);
                item.insert("left".into(), n(group_len(group, total)));
                item.insert(
                    "last".into(),
                    n(group * CHUNKS_PER_ITEM + group_len(group, total) - 1),
                );
                Ok(WriteRequest::builder()
                    .put_request(built(
                        aws_sdk_dynamodb::types::PutRequest::builder()
                            .set_item(Some(item))
                            .build(),
                    )?)
                    .build())
            })
            .collect::<StoreResult<Vec<_>>>()?;
        batch_write(&self.client, &self.tables.chunks, puts).await
    }

    /// The last group of an upload whose length was just declared (`total` chunks): its
    /// `last` and `left` cut to its new length if it was made for the larger bound, and the
    /// group promoted once complete. Answers whether this moved the upload to assembling.
    async fn cut_last_group(&self, upload_id: &str, total: u32, now_ms: i64) -> StoreResult<bool> {
        let group = group_of(total - 1);
        let Some(item) = self
            .get_item(&self.tables.chunks, Self::group_key(upload_id, group))
            .await?
        else {
            // Made when its first chunk is claimed, from the new total.
            return Ok(false);
        };
        let new_last = total - 1;
        let mut left = opt_n::<i64>(&item, "left").unwrap_or(1);
        if let Some(old_last) = opt_n::<u32>(&item, "last").filter(|&l| l > new_last) {
            let req = self
                .client
                .update_item()
                .table_name(&self.tables.chunks)
                .set_key(Some(Self::group_key(upload_id, group)))
                .update_expression("SET #last = :new ADD #left :minus")
                .condition_expression("#last = :old")
                .expression_attribute_names("#last", "last")
                .expression_attribute_names("#left", "left")
                .expression_attribute_values(":new", n(new_last))
                .expression_attribute_values(":old", n(old_last))
                .expression_attribute_values(":minus", n(-i64::from(old_last - new_last)))
                .return_values(ReturnValue::AllNew);
            left = match conditional(req, "DynamoDB UpdateItem chunks (cut)").await? {
                Ok(new) | Err(new) => opt_n::<i64>(&new, "left").unwrap_or(1),
            };
        }
        if left > 0 {
            return Ok(false);
        }
        match self.promote(upload_id, group).await? {
            Promotion::Counted { all: true, .. } => self.mark_assembling(upload_id, now_ms).await,
            _ => Ok(false),
        }
    }

    /// Creates a group's item again if it is missing while the upload is uploading (what a
    /// crash during `insert_upload`, or `delete_chunks` of an upload still uploading, leaves).
    async fn restore_group(&self, upload_id: &str, group: u32, total: u32) -> StoreResult<()> {
        let mut item = Self::group_key(upload_id, group);
        item.insert("left".into(), n(group_len(group, total)));
        item.insert(
            "last".into(),
            n(group * CHUNKS_PER_ITEM + group_len(group, total) - 1),
        );
        match self
            .client
            .put_item()
            .table_name(&self.tables.chunks)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(upload_id)")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk_error("DynamoDB PutItem chunks (group)", e)),
        }
    }

    /// Deletes the items of an upload's groups (records, leases and counts).
    async fn delete_groups(&self, upload_id: &str) -> StoreResult<()> {
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.tables.chunks)
                .key_condition_expression("upload_id = :u")
                .projection_expression("upload_id, idx")
                .expression_attribute_values(":u", s(upload_id))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB Query chunks", e))?;
            let mut deletes = Vec::new();
            for item in out.items() {
                let group: i64 = get_n(item, "idx")?;
                let key = HashMap::from([
                    ("upload_id".to_owned(), s(upload_id)),
                    ("idx".to_owned(), n(group)),
                ]);
                deletes.push(
                    WriteRequest::builder()
                        .delete_request(built(
                            aws_sdk_dynamodb::types::DeleteRequest::builder()
                                .set_key(Some(key))
                                .build(),
                        )?)
                        .build(),
                );
            }
            batch_write(&self.client, &self.tables.chunks, deletes).await?;
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(())
    }

    /// Every item of an upload's groups, all pages (about 3.5 KB per 32 chunks).
    async fn group_items(&self, upload_id: &str, counts_only: bool) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.tables.chunks)
                .key_condition_expression("upload_id = :u")
                .expression_attribute_values(":u", s(upload_id))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if counts_only {
                req = req
                    .projection_expression("idx, #n, #left")
                    .expression_attribute_names("#n", "n")
                    .expression_attribute_names("#left", "left");
            }
            let out = req
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB Query chunks", e))?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(items)
    }

    /// Upload ids from an index query (every page).
    async fn query_upload_ids(
        &self,
        index: &str,
        key_condition: &str,
        filter: Option<String>,
        expr: Expr,
        forward: bool,
        limit: Option<u32>,
    ) -> StoreResult<Vec<String>> {
        let mut ids = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.tables.uploads)
                .index_name(index)
                .key_condition_expression(key_condition)
                .set_filter_expression(filter.clone())
                .set_expression_attribute_names(expr.names())
                .set_expression_attribute_values(expr.values())
                .scan_index_forward(forward)
                .set_limit(limit.map(|l| l as i32))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB Query uploads", e))?;
            for item in out.items() {
                ids.push(get_s(item, "upload_id")?);
            }
            if limit.is_some_and(|l| ids.len() >= l as usize) {
                ids.truncate(limit.unwrap_or(u32::MAX) as usize);
                break;
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(ids)
    }

    async fn uploads_by_id(&self, ids: Vec<String>) -> StoreResult<Vec<UploadRecord>> {
        let keys = ids.iter().map(|id| Self::upload_key(id)).collect();
        batch_get(&self.client, &self.tables.uploads, keys)
            .await?
            .iter()
            .map(upload_from)
            .collect()
    }

    /// Lists uploads of the sparse sweep index whose `sweep_state` is `sweep_state` and whose
    /// `sweep_at` is before `before`.
    async fn swept(
        &self,
        sweep_state: &str,
        before: i64,
        limit: u32,
    ) -> StoreResult<Vec<UploadRecord>> {
        let expr = Expr::new()
            .value(":st", s(sweep_state))
            .value(":before", n(before));
        let ids = self
            .query_upload_ids(
                UPLOADS_BY_SWEEP,
                "sweep_state = :st AND sweep_at < :before",
                None,
                expr,
                true,
                Some(limit.max(1)),
            )
            .await?;
        self.uploads_by_id(ids).await
    }

    /// The File published for an upload, if any, as the upload records it.
    async fn published_file(
        &self,
        upload_id: &str,
    ) -> StoreResult<Option<(UploadState, Option<FileRecord>)>> {
        let Some(item) = self
            .get_item(&self.tables.uploads, Self::upload_key(upload_id))
            .await?
        else {
            return Ok(None);
        };
        let upload = upload_from(&item)?;
        let file = match &upload.file_id {
            Some(id) => self.get_file(id).await?,
            None => None,
        };
        Ok(Some((upload.state, file)))
    }
}

#[async_trait]
impl MetadataStore for DynamoMetadataStore {
    async fn insert_upload(&self, upload: &UploadRecord) -> StoreResult<()> {
        let mut item = upload_item(upload);
        item.insert("groups_left".into(), n(groups(upload.total_chunks)));
        match self
            .client
            .put_item()
            .table_name(&self.tables.uploads)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(upload_id)")
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if is_condition_failed(&e) => {
                return Err(StoreError::Conflict(format!(
                    "upload {} exists",
                    upload.upload_id
                )))
            }
            Err(e) => return Err(sdk_error("DynamoDB PutItem uploads", e)),
        }
        // An upload whose length is deferred gets its groups one by one as chunks are claimed
        // (`restore_group`): it may end far below the most it may hold.
        let groups_made = if upload.length_deferred {
            Ok(())
        } else {
            self.create_groups(&upload.upload_id, upload.total_chunks)
                .await
        };
        if let Err(e) = groups_made {
            // Nothing refers to the upload yet: take it back rather than leave it half made.
            let _ = self
                .client
                .delete_item()
                .table_name(&self.tables.uploads)
                .set_key(Some(Self::upload_key(&upload.upload_id)))
                .send()
                .await;
            return Err(e);
        }
        Ok(())
    }

    async fn get_upload(&self, upload_id: &UploadId) -> StoreResult<Option<UploadRecord>> {
        self.get_item(&self.tables.uploads, Self::upload_key(upload_id))
            .await?
            .as_ref()
            .map(upload_from)
            .transpose()
    }

    /// An empty `states` means every state. Newest first.
    async fn list_uploads(
        &self,
        owner_id: &UserId,
        states: &[UploadState],
    ) -> StoreResult<Vec<UploadRecord>> {
        let mut expr = Expr::new().value(":o", s(owner_id));
        let filter = if states.is_empty() {
            None
        } else {
            let mut placeholders = Vec::new();
            for (i, st) in states.iter().enumerate() {
                let p = format!(":s{i}");
                expr = expr.value(&p, s(st.as_str()));
                placeholders.push(p);
            }
            expr = expr.name("#st", "state");
            Some(format!("#st IN ({})", placeholders.join(", ")))
        };
        let ids = self
            .query_upload_ids(UPLOADS_BY_OWNER, "owner_id = :o", filter, expr, false, None)
            .await?;
        let mut uploads: Vec<UploadRecord> = self
            .uploads_by_id(ids)
            .await?
            .into_iter()
            // The index may lag behind the table: decide on the item itself.
            .filter(|u| u.owner_id == *owner_id && (states.is_empty() || states.contains(&u.state)))
            .collect();
        uploads
            .sort_by(|a, b| (b.created_at_ms, &b.upload_id).cmp(&(a.created_at_ms, &a.upload_id)));
        Ok(uploads)
    }

    /// One query over the upload's group items (313 items, ~1 MB, for 10,000 chunks).
    async fn list_chunks(&self, upload_id: &UploadId) -> StoreResult<Vec<ChunkRecord>> {
        let mut chunks = Vec::new();
        for item in self.group_items(upload_id, false).await? {
            chunks.extend(records_in(&item)?);
        }
        chunks.sort_by_key(|c| c.index);
        Ok(chunks)
    }

    /// One projected read of the chunk's group item.
    async fn get_chunk(
        &self,
        upload_id: &UploadId,
        index: u32,
    ) -> StoreResult<Option<ChunkRecord>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.chunks)
            .set_key(Some(Self::group_key(upload_id, group_of(index))))
            .consistent_read(true)
            .projection_expression("#r, #h")
            .expression_attribute_names("#r", record_attr(index))
            .expression_attribute_names("#h", chain_attr(index))
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB GetItem chunks", e))?;
        match out.item() {
            Some(item) => record_in(item, index),
            None => Ok(None),
        }
    }

    /// The groups' counts (one query of small projections; not on the path of a chunk).
    async fn received_count(&self, upload_id: &UploadId) -> StoreResult<u32> {
        Ok(self
            .group_items(upload_id, true)
            .await?
            .iter()
            .filter_map(|i| opt_n::<u32>(i, "n"))
            .sum())
    }

    /// Counts every complete group that is not counted yet (what a writer that died between
    /// recording and counting left undone); answers the received count, 0 once the upload no
    /// longer takes chunks (it completes nothing then).
    async fn recount(&self, upload_id: &UploadId) -> StoreResult<u32> {
        let mut received = 0;
        for item in self.group_items(upload_id, true).await? {
            received += opt_n::<u32>(&item, "n").unwrap_or(0);
            let (Some(group), Some(0)) = (opt_n::<u32>(&item, "idx"), opt_n::<i64>(&item, "left"))
            else {
                continue;
            };
            if let Promotion::Closed(_) = self.promote(upload_id, group).await? {
                return Ok(0);
            }
        }
        Ok(received)
    }

    /// One conditional write on the chunk's group item, which exists only while the upload
    /// takes chunks; a refused claim reads the upload to say why. As the SQLite store: a chunk
    /// already recorded answers `AlreadyStored` with its CRC (also once the upload is
    /// assembling or completed).
    async fn claim_chunk(
        &self,
        upload_id: &UploadId,
        index: u32,
        claim_id: &ClaimId,
        lease: Duration,
        now_ms: i64,
    ) -> StoreResult<ClaimOutcome> {
        let lease_until_ms = now_ms.saturating_add(lease_ms(lease));
        let group = group_of(index);
        let mut restored = false;
        loop {
            let req = self
                .client
                .update_item()
                .table_name(&self.tables.chunks)
                .set_key(Some(Self::group_key(upload_id, group)))
                .update_expression("SET #c = :c, #u = :until")
                .condition_expression(
                    "attribute_exists(#left) AND :i <= #last AND attribute_not_exists(#r) AND (attribute_not_exists(#c) OR #c = :c OR #u <= :now)",
                )
                .expression_attribute_names("#c", claim_attr(index))
                .expression_attribute_names("#u", until_attr(index))
                .expression_attribute_names("#r", record_attr(index))
                .expression_attribute_names("#left", "left")
                .expression_attribute_names("#last", "last")
                .expression_attribute_values(":c", s(claim_id))
                .expression_attribute_values(":i", n(index))
                .expression_attribute_values(":until", n(lease_until_ms))
                .expression_attribute_values(":now", n(now_ms));
            let Err(item) = conditional(req, "DynamoDB UpdateItem chunks (claim)").await? else {
                return Ok(ClaimOutcome::Claimed { lease_until_ms });
            };
            if let Some(recorded) = record_in(&item, index)? {
                self.heal(upload_id, index, &item).await?;
                return Ok(ClaimOutcome::AlreadyStored {
                    crc64nvme: recorded.crc64nvme,
                });
            }
            if item.contains_key("left") && opt_n::<u32>(&item, "last").is_some_and(|l| index <= l)
            {
                return Ok(ClaimOutcome::InProgress);
            }
            // No group item, or the index is past the group's end.
            let head = self.head_or_not_found(upload_id).await?;
            if index >= head.total {
                return Err(StoreError::Conflict(format!(
                    "chunk {index} is out of range (0..{})",
                    head.total
                )));
            }
            if head.state != UploadState::Uploading || restored {
                return Ok(ClaimOutcome::NotAccepting(head.state));
            }
            self.restore_group(upload_id, group, head.total).await?;
            restored = true;
        }
    }

    async fn release_chunk(
        &self,
        upload_id: &UploadId,
        index: u32,
        claim_id: &ClaimId,
    ) -> StoreResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.chunks)
            .set_key(Some(Self::group_key(upload_id, group_of(index))))
            .update_expression("REMOVE #c, #u")
            .condition_expression("#c = :c")
            .expression_attribute_names("#c", claim_attr(index))
            .expression_attribute_names("#u", until_attr(index))
            .expression_attribute_values(":c", s(claim_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk_error("DynamoDB UpdateItem chunks (release)", e)),
        }
    }

    /// One write, the record and its group's counts together (conditional on the caller's
    /// lease), and one more for the chunk that completes its group (1 in 32). `received` is a
    /// lower bound here: the chunks recorded in this chunk's group, or all once complete.
    async fn commit_chunk(
        &self,
        upload_id: &UploadId,
        chunk: &ChunkRecord,
        claim_id: &ClaimId,
        now_ms: i64,
    ) -> StoreResult<CommitOutcome> {
        let group = group_of(chunk.index);
        let set = if chunk.sha256_chain.is_some() {
            "SET #r = :rec, #h = :h"
        } else {
            "SET #r = :rec"
        };
        // Requiring the lease also keeps a record from outliving `delete_chunks`: that deletes
        // the group's item, and its leases with it.
        let mut req = self
            .client
            .update_item()
            .table_name(&self.tables.chunks)
            .set_key(Some(Self::group_key(upload_id, group)))
            .update_expression(format!("{set} REMOVE #c, #u ADD #n :one, #left :minus"))
            .condition_expression("#c = :c AND attribute_not_exists(#r)")
            .expression_attribute_names("#r", record_attr(chunk.index))
            .expression_attribute_names("#c", claim_attr(chunk.index))
            .expression_attribute_names("#u", until_attr(chunk.index))
            .expression_attribute_names("#n", "n")
            .expression_attribute_names("#left", "left")
            .expression_attribute_values(":rec", record_value(chunk))
            .expression_attribute_values(":c", s(claim_id))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":minus", n(-1))
            .return_values(ReturnValue::UpdatedNew);
        if let Some(chain) = &chunk.sha256_chain {
            req = req
                .expression_attribute_names("#h", chain_attr(chunk.index))
                .expression_attribute_values(":h", AttributeValue::B(Blob::new(chain.clone())));
        }
        let counts = match conditional(req, "DynamoDB UpdateItem chunks (record)").await? {
            Ok(new) => new,
            Err(old) => {
                // Recorded before (a retry), the lease was lost, or the upload moved on.
                if let Some(recorded) = record_in(&old, chunk.index)? {
                    if recorded.crc64nvme != chunk.crc64nvme {
                        return Ok(CommitOutcome::DigestConflict);
                    }
                    let received = self.heal(upload_id, chunk.index, &old).await?;
                    return Ok(CommitOutcome::AlreadyStored { received });
                }
                let head = self.head_or_not_found(upload_id).await?;
                if chunk.index >= head.total {
                    return Err(StoreError::Conflict(format!(
                        "chunk {} is out of range (0..{})",
                        chunk.index, head.total
                    )));
                }
                return Ok(CommitOutcome::NotAccepting(head.state));
            }
        };
        let recorded: u32 = get_n(&counts, "n")?;
        if get_n::<i64>(&counts, "left")? > 0 {
            return Ok(CommitOutcome::Stored {
                received: recorded,
                completed_set: false,
            });
        }
        match self.promote(upload_id, group).await? {
            Promotion::Counted { all: true, total } => Ok(CommitOutcome::Stored {
                received: total,
                completed_set: self.mark_assembling(upload_id, now_ms).await?,
            }),
            Promotion::Counted { all: false, .. } => Ok(CommitOutcome::Stored {
                received: recorded,
                completed_set: false,
            }),
            // Cancelled or expired meanwhile: its storage (this record too) is being released.
            Promotion::Closed(state) => Ok(CommitOutcome::NotAccepting(state)),
        }
    }

    /// One conditional update of the upload item; an unknown upload is not applied (`false`),
    /// as in `transition`.
    async fn declare_checksums(
        &self,
        upload_id: &UploadId,
        sha256: Option<&str>,
        crc64nvme: Crc64,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let mut expr = Expr::new()
            .name("#st", "state")
            .value(":uploading", s(UploadState::Uploading.as_str()))
            .value(":crc", n(crc64nvme))
            .value(":now", n(now_ms));
        let mut set = vec!["crc64nvme = :crc", "updated_at_ms = :now"];
        if let Some(sha) = sha256 {
            expr = expr.value(":sha", s(sha));
            set.push("sha256 = if_not_exists(sha256, :sha)");
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.uploads)
            .set_key(Some(Self::upload_key(upload_id)))
            .update_expression(format!("SET {}", set.join(", ")))
            .condition_expression(
                "attribute_exists(upload_id) AND #st = :uploading AND attribute_not_exists(crc64nvme)",
            )
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error("DynamoDB UpdateItem uploads (checksums)", e)),
        }
    }

    /// Two steps, each conditional and safe to repeat: the upload item takes the size (and
    /// gives up the groups past the new end from `groups_left`), then the new last group, if
    /// it exists, is cut to its new length — and promoted when that leaves it complete. A
    /// retry after a crash between them finds the size set and does the second step again.
    async fn declare_size(
        &self,
        upload_id: &UploadId,
        size: u64,
        total_chunks: u32,
        now_ms: i64,
    ) -> StoreResult<SizeDeclared> {
        let Some(item) = self
            .get_item(&self.tables.uploads, Self::upload_key(upload_id))
            .await?
        else {
            return Ok(SizeDeclared::NotApplied);
        };
        let current = upload_from(&item)?;
        if current.state != UploadState::Uploading
            || total_chunks > current.total_chunks
            || (!current.length_deferred && current.size != size)
        {
            return Ok(SizeDeclared::NotApplied);
        }
        if current.length_deferred {
            let cut = groups(current.total_chunks) - groups(total_chunks);
            let req = self
                .client
                .update_item()
                .table_name(&self.tables.uploads)
                .set_key(Some(Self::upload_key(upload_id)))
                .update_expression(
                    "SET #size = :size, total_chunks = :total, updated_at_ms = :now \
                     ADD groups_left :cut REMOVE #deferred",
                )
                .condition_expression(
                    "#st = :uploading AND #deferred = :yes AND total_chunks = :bound",
                )
                .expression_attribute_names("#size", "size")
                .expression_attribute_names("#st", "state")
                .expression_attribute_names("#deferred", LENGTH_DEFERRED)
                .expression_attribute_values(":size", n(size))
                .expression_attribute_values(":total", n(total_chunks))
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":cut", n(-i64::from(cut)))
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .expression_attribute_values(":bound", n(current.total_chunks))
                .expression_attribute_values(":uploading", s(UploadState::Uploading.as_str()));
            if conditional(req, "DynamoDB UpdateItem uploads (size)")
                .await?
                .is_err()
            {
                // Declared or closed meanwhile: the caller reads again.
                return Ok(SizeDeclared::NotApplied);
            }
        }
        let completed_set = self.cut_last_group(upload_id, total_chunks, now_ms).await?;
        Ok(SizeDeclared::Applied { completed_set })
    }

    /// `error`, when given, replaces the stored reason; otherwise the reason is kept. Moving to
    /// cancelled, expired or failed also deletes the upload's group items, which closes it to
    /// claims and records.
    async fn transition(
        &self,
        upload_id: &UploadId,
        from: &[UploadState],
        to: UploadState,
        error: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<bool> {
        if from.is_empty() {
            return Ok(false);
        }
        let mut expr = Expr::new()
            .name("#st", "state")
            .value(":to", s(to.as_str()))
            .value(":now", n(now_ms));
        let mut set = vec!["#st = :to", "updated_at_ms = :now"];
        let mut remove = Vec::new();
        if let Some(e) = error {
            expr = expr.name("#err", "error").value(":err", s(e));
            set.push("#err = :err");
        }
        match to {
            UploadState::Uploading => set.extend(["sweep_state = :to", "sweep_at = expires_at_ms"]),
            UploadState::Assembling => {
                expr = expr.value(":unsent", s(JOB_UNSENT));
                set.extend(["sweep_state = :unsent", "sweep_at = :now"]);
            }
            UploadState::Completed => remove.extend(["sweep_state", "sweep_at"]),
            UploadState::Cancelled | UploadState::Expired | UploadState::Failed => {
                expr = expr.value(":release", s(RELEASE_PENDING));
                set.extend(["sweep_state = :release", "sweep_at = :now"]);
                expr = expr
                    .name("#ttl", "ttl")
                    .value(":ttl", n(now_ms / 1000 + FINISHED_RETENTION_SECS));
                set.push("#ttl = :ttl");
            }
        }
        let mut placeholders = Vec::new();
        for (i, st) in from.iter().enumerate() {
            let p = format!(":from{i}");
            expr = expr.value(&p, s(st.as_str()));
            placeholders.push(p);
        }
        let mut update = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            update.push_str(" REMOVE ");
            update.push_str(&remove.join(", "));
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.uploads)
            .set_key(Some(Self::upload_key(upload_id)))
            .update_expression(update)
            .condition_expression(format!(
                "attribute_exists(upload_id) AND #st IN ({})",
                placeholders.join(", ")
            ))
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .send()
            .await;
        match result {
            Ok(_) => {
                if matches!(
                    to,
                    UploadState::Cancelled | UploadState::Expired | UploadState::Failed
                ) {
                    // Its groups go: no claim or record is taken from now on. (If this fails,
                    // releasing the upload's storage, which follows, deletes them.)
                    if let Err(e) = self.delete_groups(upload_id).await {
                        tracing::warn!(%upload_id, error = %e, "cannot drop the chunk groups of a finished upload yet");
                    }
                }
                Ok(true)
            }
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error("DynamoDB UpdateItem uploads (transition)", e)),
        }
    }

    async fn list_expired(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<UploadRecord>> {
        let mut uploads: Vec<UploadRecord> = self
            .swept(UploadState::Uploading.as_str(), now_ms, limit)
            .await?
            .into_iter()
            .filter(|u| u.state == UploadState::Uploading && u.expires_at_ms < now_ms)
            .collect();
        uploads.sort_by_key(|u| u.expires_at_ms);
        Ok(uploads)
    }

    async fn list_stale_assembling(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<UploadRecord>> {
        let mut uploads: Vec<UploadRecord> = self
            .swept(UploadState::Assembling.as_str(), before_ms, limit)
            .await?
            .into_iter()
            .filter(|u| u.state == UploadState::Assembling && u.updated_at_ms < before_ms)
            .collect();
        uploads.sort_by_key(|u| u.updated_at_ms);
        Ok(uploads)
    }

    async fn list_unsent_jobs(&self, limit: u32) -> StoreResult<Vec<UploadRecord>> {
        let mut uploads: Vec<UploadRecord> = self
            .swept(JOB_UNSENT, i64::MAX, limit)
            .await?
            .into_iter()
            .filter(|u| u.state == UploadState::Assembling)
            .collect();
        uploads.sort_by_key(|u| u.updated_at_ms);
        Ok(uploads)
    }

    async fn mark_job_sent(&self, upload_id: &UploadId) -> StoreResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.uploads)
            .set_key(Some(Self::upload_key(upload_id)))
            .update_expression("SET sweep_state = :assembling")
            .condition_expression("#st = :assembling AND sweep_state = :unsent")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(":assembling", s(UploadState::Assembling.as_str()))
            .expression_attribute_values(":unsent", s(JOB_UNSENT))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Not in the outbox (marked before, moved on, or unknown): nothing to do.
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk_error("DynamoDB UpdateItem uploads (job sent)", e)),
        }
    }

    async fn list_pending_releases(&self, limit: u32) -> StoreResult<Vec<UploadRecord>> {
        let mut uploads = self.swept(RELEASE_PENDING, i64::MAX, limit).await?;
        uploads.sort_by_key(|u| u.updated_at_ms);
        Ok(uploads)
    }

    async fn mark_released(&self, upload_id: &UploadId) -> StoreResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.uploads)
            .set_key(Some(Self::upload_key(upload_id)))
            .update_expression("REMOVE sweep_state, sweep_at")
            .condition_expression("sweep_state = :release")
            .expression_attribute_values(":release", s(RELEASE_PENDING))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Not in the outbox (released before, or unknown): nothing to do.
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk_error("DynamoDB UpdateItem uploads (released)", e)),
        }
    }

    async fn delete_chunks(&self, upload_id: &UploadId) -> StoreResult<()> {
        self.delete_groups(upload_id).await
    }

    /// Idempotent: the File already published for this upload is returned unchanged. An upload
    /// that completed but whose File was deleted since is a `Conflict` (it is not recreated).
    async fn publish_file(&self, file: &FileRecord, now_ms: i64) -> StoreResult<FileRecord> {
        for _ in 0..2 {
            let Some((state, existing)) = self.published_file(&file.upload_id).await? else {
                return Err(StoreError::NotFound(format!("upload {}", file.upload_id)));
            };
            if let Some(existing) = existing {
                return Ok(existing);
            }
            if state != UploadState::Assembling {
                return Err(StoreError::Conflict(format!(
                    "upload {} is {state}, not assembling",
                    file.upload_id
                )));
            }
            let put = built(
                Put::builder()
                    .table_name(&self.tables.files)
                    .set_item(Some(file_item(file)))
                    .condition_expression("attribute_not_exists(file_id)")
                    .build(),
            )?;
            let complete = built(
                Update::builder()
                    .table_name(&self.tables.uploads)
                    .set_key(Some(Self::upload_key(&file.upload_id)))
                    .update_expression(
                        "SET #st = :completed, file_id = :f, updated_at_ms = :now REMOVE sweep_state, sweep_at",
                    )
                    .condition_expression("#st = :assembling")
                    .expression_attribute_names("#st", "state")
                    .expression_attribute_values(":completed", s(UploadState::Completed.as_str()))
                    .expression_attribute_values(":assembling", s(UploadState::Assembling.as_str()))
                    .expression_attribute_values(":f", s(&file.file_id))
                    .expression_attribute_values(":now", n(now_ms))
                    .build(),
            )?;
            match transact(
                &self.client,
                "DynamoDB TransactWriteItems (publish file)",
                vec![
                    TransactWriteItem::builder().put(put).build(),
                    TransactWriteItem::builder().update(complete).build(),
                ],
            )
            .await?
            {
                TxOutcome::Done => return Ok(file.clone()),
                // A racing publisher won, or the upload moved on: look again.
                TxOutcome::ConditionFailed(_) => {}
            }
        }
        Err(StoreError::Conflict(format!(
            "upload {} changed while its file was being published",
            file.upload_id
        )))
    }

    async fn get_file(&self, file_id: &FileId) -> StoreResult<Option<FileRecord>> {
        self.get_item(
            &self.tables.files,
            HashMap::from([("file_id".to_owned(), s(file_id))]),
        )
        .await?
        .as_ref()
        .map(file_from)
        .transpose()
    }

    /// Newest first. `limit` is clamped to 1..=1000; a malformed cursor is a `Conflict`.
    async fn list_files(
        &self,
        owner_id: &UserId,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<FilePage> {
        let after = cursor.map(decode_cursor).transpose()?;
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let mut expr = Expr::new().value(":o", s(owner_id));
        let condition = match &after {
            Some((ms, id)) => {
                expr = expr.value(":after", s(created_key(*ms, id)));
                "owner_id = :o AND created_key < :after"
            }
            None => "owner_id = :o",
        };
        let mut items: Vec<FileRecord> = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.tables.files)
                .index_name(FILES_BY_OWNER)
                .key_condition_expression(condition)
                .set_expression_attribute_values(expr.values())
                .scan_index_forward(false)
                .limit((limit + 1 - items.len()) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB Query files", e))?;
            for item in out.items() {
                items.push(file_from(item)?);
            }
            if items.len() > limit {
                break;
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(encode_cursor)
        } else {
            None
        };
        Ok(FilePage { items, next_cursor })
    }

    /// One transaction deletes the File's item and puts its upload into the outbox of releases.
    /// A File whose upload item is gone (none is, but older data may be) is deleted alone.
    async fn delete_file(&self, file_id: &FileId, now_ms: i64) -> StoreResult<bool> {
        let Some(file) = self.get_file(file_id).await? else {
            return Ok(false);
        };
        let delete = built(
            Delete::builder()
                .table_name(&self.tables.files)
                .set_key(Some(HashMap::from([("file_id".to_owned(), s(file_id))])))
                .condition_expression("attribute_exists(file_id)")
                .build(),
        )?;
        let release = built(
            Update::builder()
                .table_name(&self.tables.uploads)
                .set_key(Some(Self::upload_key(&file.upload_id)))
                .update_expression("SET sweep_state = :release, sweep_at = :now")
                .condition_expression("attribute_exists(upload_id)")
                .expression_attribute_values(":release", s(RELEASE_PENDING))
                .expression_attribute_values(":now", n(now_ms))
                .build(),
        )?;
        let outcome = transact(
            &self.client,
            "DynamoDB TransactWriteItems (delete file)",
            vec![
                TransactWriteItem::builder().delete(delete).build(),
                TransactWriteItem::builder().update(release).build(),
            ],
        )
        .await?;
        if matches!(outcome, TxOutcome::Done) {
            return Ok(true);
        }
        if self.get_file(file_id).await?.is_none() {
            // Deleted meanwhile by another caller.
            return Ok(false);
        }
        // The File is there, so its upload item is gone: nothing to release with it.
        let out = self
            .client
            .delete_item()
            .table_name(&self.tables.files)
            .key("file_id", s(file_id))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB DeleteItem files", e))?;
        Ok(out.attributes().is_some_and(|a| !a.is_empty()))
    }

    async fn check(&self) -> StoreResult<()> {
        check_table(&self.client, &self.tables.uploads).await?;
        check_table(&self.client, &self.tables.chunks).await?;
        check_table(&self.client, &self.tables.files).await
    }
}
