//! DynamoDB metadata and auth stores.
//!
//! Four tables, named `{prefix}uploads`, `{prefix}chunks`, `{prefix}files` and `{prefix}auth`
//! (the layout, keys, indexes and TTL are documented in `docs/aws.md`):
//!
//! - **uploads** — one item per upload session (key `upload_id`), with the count that
//!   completes it: `groups_left` (groups of chunks not yet complete) and `groups_done` (the
//!   set of complete group numbers, at most 313). Index `by_owner` (`owner_id`,
//!   `created_at_ms`, projects `state`) lists an owner's uploads; the sparse index `by_sweep`
//!   (`sweep_state`, `sweep_at`, keys only) holds only uploads that are uploading (at their
//!   expiry) or assembling (at their last change), for the sweeper. Cancelled, expired and
//!   failed uploads get a `ttl` 30 days on.
//! - **chunks** — the chunks of an upload by groups of 32, one item per group (key
//!   `upload_id`, `idx` = group number = chunk index / 32): chunk *i*'s lease `c{i}` (claim
//!   id) and `u{i}` (its end, ms) while a worker writes it, then its record `r{i}`
//!   (`"{sha256} {size} {etag}"`); `n`, the group's recorded chunks, `left`, those still
//!   missing, and `last`, its last chunk index. The group items are created with the upload
//!   and deleted when it stops taking chunks (cancelled, expired, failed) or its chunks are
//!   dropped: a claim needs its group's item, so they are also what closes an upload to
//!   chunks. An upload of 10,000 chunks is 313 items of at most ~3.5 KB (the limit is 400 KB).
//! - **files** — one item per File (key `file_id`); index `by_owner` (`owner_id`,
//!   `created_key` = zero-padded `created_at_ms#file_id`, all attributes) pages an owner's files
//!   newest first.
//! - **auth** — users (`user#{id}`, and `email#{email}` holding the same record so that emails
//!   are unique), refresh tokens (`token#{hash}`) and their families (`family#{id}`), with
//!   `ttl` a day after the token expires.
//!
//! Exactly-once completion in O(1) requests per chunk, reading no other chunk: a chunk is
//! recorded by one conditional update of its group's item — only if the caller still holds
//! its lease and the chunk is not recorded — which also does `n + 1`, `left - 1` and returns
//! them. The commit that takes `left` to 0 *promotes* the group: one conditional update of the
//! upload item adds the group number to `groups_done` and does `groups_left - 1`, unless the
//! set holds the number already (so a group counts once, whoever promotes it) or the upload is
//! no longer uploading. The promotion that takes `groups_left` to 0 moves the upload from
//! uploading to assembling with a conditional update, which succeeds for exactly one caller.
//! So a chunk costs two writes (its lease, its record) and no read; one chunk in 32 one more
//! write. A writer that dies between recording the last
//! chunk of a group and promoting it leaves the group uncounted: whoever touches a recorded
//! chunk of it next (the client's retry) promotes it, as does `recount` (the sessions service
//! calls it when an upload lists every chunk but still says uploading). A commit's `received`
//! is a lower bound (its group's count; every chunk once complete): an exact count would need
//! a shared counter on every commit. No `TransactWriteItems` on this hot path (they serialize
//! on shared items, and moto copies whole tables for each).
//!
//! Reads that decide are strongly consistent; listings through indexes are eventually
//! consistent (a brand-new upload may take a moment to show in `list_uploads`).

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::{BuildError, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
    TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::{error_code, poll_until, sdk_error};
use lfusys_core::clock::now_ms;
use lfusys_core::state::UploadState;
use storage::{
    decode_cursor, encode_cursor, AuthStore, ChunkRecord, ClaimOutcome, CommitOutcome, FilePage,
    FileRecord, MetadataStore, RefreshRecord, RotateOutcome, StoreError, StoreResult, UploadRecord,
    UserRecord,
};

type Item = HashMap<String, AttributeValue>;

const MAX_PAGE: u32 = 1000;
/// How long finished (cancelled, expired, failed) uploads are kept before DynamoDB's TTL
/// removes them.
const FINISHED_RETENTION_SECS: i64 = 30 * 86_400;
/// Refresh tokens and families outlive their expiry by this much (reuse detection).
const TOKEN_GRACE_SECS: i64 = 86_400;
const TX_ATTEMPTS: u32 = 12;

pub const UPLOADS_BY_OWNER: &str = "by_owner";
pub const UPLOADS_BY_SWEEP: &str = "by_sweep";
pub const FILES_BY_OWNER: &str = "by_owner";

/// The table names of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub uploads: String,
    pub chunks: String,
    pub files: String,
    pub auth: String,
}

impl TableNames {
    pub fn new(prefix: &str) -> Self {
        Self {
            uploads: format!("{prefix}uploads"),
            chunks: format!("{prefix}chunks"),
            files: format!("{prefix}files"),
            auth: format!("{prefix}auth"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attribute helpers

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn malformed(key: &str) -> StoreError {
    StoreError::Other(format!(
        "malformed DynamoDB item: attribute {key} is missing or invalid"
    ))
}

fn get_s(item: &Item, key: &str) -> StoreResult<String> {
    opt_s(item, key).ok_or_else(|| malformed(key))
}

fn opt_s(item: &Item, key: &str) -> Option<String> {
    match item.get(key) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

fn get_n<T: FromStr>(item: &Item, key: &str) -> StoreResult<T> {
    opt_n(item, key).ok_or_else(|| malformed(key))
}

fn opt_n<T: FromStr>(item: &Item, key: &str) -> Option<T> {
    match item.get(key) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

fn built<T>(r: Result<T, BuildError>) -> StoreResult<T> {
    r.map_err(|e| StoreError::Other(format!("building a DynamoDB request: {e}")))
}

/// Expression attribute names and values.
#[derive(Debug, Default, Clone)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    fn new() -> Self {
        Self::default()
    }
    fn name(mut self, placeholder: &str, attribute: &str) -> Self {
        self.names.insert(placeholder.into(), attribute.into());
        self
    }
    fn value(mut self, placeholder: &str, v: AttributeValue) -> Self {
        self.values.insert(placeholder.into(), v);
        self
    }
    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }
    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

fn is_condition_failed<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    error_code(e) == Some("ConditionalCheckFailedException")
}

/// How a transaction ended.
enum TxOutcome {
    Done,
    /// A condition failed; the cancellation reason code of each item (in order).
    ConditionFailed(Vec<String>),
}

/// Runs a transaction, retrying while it is cancelled by concurrent transactions.
async fn transact(
    client: &Client,
    what: &str,
    items: Vec<TransactWriteItem>,
) -> StoreResult<TxOutcome> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = client
            .transact_write_items()
            .set_transact_items(Some(items.clone()))
            .send()
            .await;
        let err: SdkError<TransactWriteItemsError, HttpResponse> = match result {
            Ok(_) => return Ok(TxOutcome::Done),
            Err(e) => e,
        };
        let mut conflict = matches!(
            error_code(&err),
            Some("TransactionConflictException" | "TransactionInProgressException")
        );
        if let Some(TransactWriteItemsError::TransactionCanceledException(c)) =
            err.as_service_error()
        {
            let codes: Vec<String> = c
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None").to_owned())
                .collect();
            if codes.iter().any(|c| c == "ConditionalCheckFailed") {
                return Ok(TxOutcome::ConditionFailed(codes));
            }
            // Moto (and older servers) may give no reasons for a failed condition.
            if codes.is_empty()
                && c.message()
                    .is_some_and(|m| m.contains("ConditionalCheckFailed"))
            {
                return Ok(TxOutcome::ConditionFailed(codes));
            }
            conflict = conflict
                || codes
                    .iter()
                    .any(|c| c == "TransactionConflict" || c == "ThrottlingError");
        }
        if !conflict || attempt >= TX_ATTEMPTS {
            return Err(sdk_error(what, &err));
        }
        // Jittered backoff: 5..=5*2^n ms, at most ~320 ms.
        let cap = 5u64 << attempt.min(6);
        let nap = 5 + rand::random::<u64>() % cap;
        tokio::time::sleep(Duration::from_millis(nap)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Table creation

/// One global secondary index: name, hash key, range key, projection, included attributes.
type IndexSpec<'a> = (
    &'a str,
    (&'a str, ScalarAttributeType),
    (&'a str, ScalarAttributeType),
    ProjectionType,
    Vec<&'a str>,
);

struct TableSpec<'a> {
    name: &'a str,
    hash: (&'a str, ScalarAttributeType),
    range: Option<(&'a str, ScalarAttributeType)>,
    /// (index name, hash, range, projection, included attributes)
    indexes: Vec<IndexSpec<'a>>,
    ttl: bool,
}

fn key(name: &str, kind: KeyType) -> StoreResult<KeySchemaElement> {
    built(
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build(),
    )
}

async fn create_table(client: &Client, spec: TableSpec<'_>) -> StoreResult<()> {
    let mut defs: Vec<(String, ScalarAttributeType)> =
        vec![(spec.hash.0.into(), spec.hash.1.clone())];
    if let Some((r, t)) = &spec.range {
        defs.push(((*r).into(), t.clone()));
    }
    let mut gsis = Vec::new();
    for (index, (h, ht), (r, rt), projection, include) in &spec.indexes {
        for (a, t) in [(h, ht), (r, rt)] {
            if !defs.iter().any(|(d, _)| d == *a) {
                defs.push(((*a).into(), t.clone()));
            }
        }
        let mut p = Projection::builder().projection_type(projection.clone());
        for attr in include {
            p = p.non_key_attributes(*attr);
        }
        gsis.push(built(
            GlobalSecondaryIndex::builder()
                .index_name(*index)
                .key_schema(key(h, KeyType::Hash)?)
                .key_schema(key(r, KeyType::Range)?)
                .projection(p.build())
                .build(),
        )?);
    }
    let mut req = client
        .create_table()
        .table_name(spec.name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(spec.hash.0, KeyType::Hash)?);
    if let Some((r, _)) = &spec.range {
        req = req.key_schema(key(r, KeyType::Range)?);
    }
    for (a, t) in defs {
        req = req.attribute_definitions(built(
            AttributeDefinition::builder()
                .attribute_name(a)
                .attribute_type(t)
                .build(),
        )?);
    }
    if !gsis.is_empty() {
        req = req.set_global_secondary_indexes(Some(gsis));
    }
    match req.send().await {
        Ok(_) => {}
        Err(e) if error_code(&e) == Some("ResourceInUseException") => {}
        Err(e) => {
            return Err(sdk_error(
                &format!("DynamoDB CreateTable {}", spec.name),
                &e,
            ))
        }
    }
    poll_until(Duration::from_secs(120), spec.name, || async {
        let out = client
            .describe_table()
            .table_name(spec.name)
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB DescribeTable", &e))?;
        let Some(t) = out.table() else {
            return Ok(None);
        };
        let indexes_ready = t
            .global_secondary_indexes()
            .iter()
            .all(|i| i.index_status().is_none_or(|s| s.as_str() == "ACTIVE"));
        Ok((t.table_status() == Some(&TableStatus::Active) && indexes_ready).then_some(()))
    })
    .await?;
    if spec.ttl {
        let result = client
            .update_time_to_live()
            .table_name(spec.name)
            .time_to_live_specification(built(
                TimeToLiveSpecification::builder()
                    .attribute_name("ttl")
                    .enabled(true)
                    .build(),
            )?)
            .send()
            .await;
        if let Err(e) = result {
            // "TimeToLive is already enabled" is a ValidationException.
            if error_code(&e) != Some("ValidationException") {
                return Err(sdk_error("DynamoDB UpdateTimeToLive", &e));
            }
        }
    }
    Ok(())
}

/// Creates the four tables (with their indexes and TTL) when missing and waits until they are
/// active.
pub async fn create_tables(sdk: &SdkConfig, names: &TableNames) -> StoreResult<()> {
    use ScalarAttributeType::{N, S};
    let client = Client::new(sdk);
    create_table(
        &client,
        TableSpec {
            name: &names.uploads,
            hash: ("upload_id", S),
            range: None,
            indexes: vec![
                (
                    UPLOADS_BY_OWNER,
                    ("owner_id", S),
                    ("created_at_ms", N),
                    ProjectionType::Include,
                    vec!["state"],
                ),
                (
                    UPLOADS_BY_SWEEP,
                    ("sweep_state", S),
                    ("sweep_at", N),
                    ProjectionType::KeysOnly,
                    vec![],
                ),
            ],
            ttl: true,
        },
    )
    .await?;
    create_table(
        &client,
        TableSpec {
            name: &names.chunks,
            hash: ("upload_id", S),
            range: Some(("idx", N)),
            indexes: vec![],
            ttl: false,
        },
    )
    .await?;
    create_table(
        &client,
        TableSpec {
            name: &names.files,
            hash: ("file_id", S),
            range: None,
            indexes: vec![(
                FILES_BY_OWNER,
                ("owner_id", S),
                ("created_key", S),
                ProjectionType::All,
                vec![],
            )],
            ttl: false,
        },
    )
    .await?;
    create_table(
        &client,
        TableSpec {
            name: &names.auth,
            hash: ("pk", S),
            range: None,
            indexes: vec![],
            ttl: true,
        },
    )
    .await?;
    Ok(())
}

/// Readiness of one table: it exists and is active.
async fn check_table(client: &Client, table: &str) -> StoreResult<()> {
    match client.describe_table().table_name(table).send().await {
        Ok(out) => match out.table().and_then(|t| t.table_status()) {
            Some(TableStatus::Active | TableStatus::Updating) => Ok(()),
            other => Err(StoreError::Unavailable(format!(
                "DynamoDB table {table} is not active ({})",
                other.map_or("unknown", TableStatus::as_str)
            ))),
        },
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {
            Err(StoreError::Unavailable(format!(
                "DynamoDB table {table} does not exist (create it, or start with --create-resources)"
            )))
        }
        Err(e) => Err(sdk_error(&format!("DynamoDB DescribeTable {table}"), &e)),
    }
}

/// Reads items by key in batches of 100 (strongly consistent), retrying unprocessed keys.
async fn batch_get(client: &Client, table: &str, keys: Vec<Item>) -> StoreResult<Vec<Item>> {
    let mut out = Vec::with_capacity(keys.len());
    for batch in keys.chunks(100) {
        let mut pending: Vec<Item> = batch.to_vec();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            attempt += 1;
            let req = built(
                KeysAndAttributes::builder()
                    .set_keys(Some(pending.clone()))
                    .consistent_read(true)
                    .build(),
            )?;
            let res = client
                .batch_get_item()
                .request_items(table, req)
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB BatchGetItem", &e))?;
            if let Some(items) = res.responses().and_then(|r| r.get(table)) {
                out.extend(items.iter().cloned());
            }
            pending = res
                .unprocessed_keys()
                .and_then(|u| u.get(table))
                .map(|k| k.keys().to_vec())
                .unwrap_or_default();
            if !pending.is_empty() {
                if attempt >= 10 {
                    return Err(StoreError::Unavailable(
                        "DynamoDB left keys unprocessed".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20 << attempt.min(5))).await;
            }
        }
    }
    Ok(out)
}

/// Writes requests in batches of 25, retrying unprocessed ones.
async fn batch_write(client: &Client, table: &str, requests: Vec<WriteRequest>) -> StoreResult<()> {
    for batch in requests.chunks(25) {
        let mut pending = batch.to_vec();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            attempt += 1;
            let res = client
                .batch_write_item()
                .request_items(table, pending.clone())
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB BatchWriteItem", &e))?;
            pending = res
                .unprocessed_items()
                .and_then(|u| u.get(table))
                .cloned()
                .unwrap_or_default();
            if !pending.is_empty() {
                if attempt >= 10 {
                    return Err(StoreError::Unavailable(
                        "DynamoDB left writes unprocessed".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20 << attempt.min(5))).await;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Metadata store

/// [`MetadataStore`] on the uploads, chunks and files tables.
#[derive(Debug, Clone)]
pub struct DynamoMetadataStore {
    client: Client,
    tables: TableNames,
}

fn upload_item(u: &UploadRecord) -> Item {
    let mut item: Item = [
        ("upload_id", s(&u.upload_id)),
        ("owner_id", s(&u.owner_id)),
        ("name", s(&u.name)),
        ("size", n(u.size)),
        ("content_type", s(&u.content_type)),
        ("chunk_size", n(u.chunk_size)),
        ("total_chunks", n(u.total_chunks)),
        ("state", s(u.state.as_str())),
        ("storage_handle", s(&u.storage_handle)),
        ("created_at_ms", n(u.created_at_ms)),
        ("updated_at_ms", n(u.updated_at_ms)),
        ("expires_at_ms", n(u.expires_at_ms)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(sha) = &u.sha256 {
        item.insert("sha256".into(), s(sha));
    }
    if let Some(e) = &u.error {
        item.insert("error".into(), s(e));
    }
    if let Some(f) = &u.file_id {
        item.insert("file_id".into(), s(f));
    }
    match u.state {
        UploadState::Uploading => {
            item.insert("sweep_state".into(), s(u.state.as_str()));
            item.insert("sweep_at".into(), n(u.expires_at_ms));
        }
        UploadState::Assembling => {
            item.insert("sweep_state".into(), s(u.state.as_str()));
            item.insert("sweep_at".into(), n(u.updated_at_ms));
        }
        _ => {}
    }
    item
}

fn upload_from(item: &Item) -> StoreResult<UploadRecord> {
    let state = get_s(item, "state")?;
    Ok(UploadRecord {
        upload_id: get_s(item, "upload_id")?,
        owner_id: get_s(item, "owner_id")?,
        name: get_s(item, "name")?,
        size: get_n(item, "size")?,
        content_type: get_s(item, "content_type")?,
        sha256: opt_s(item, "sha256"),
        chunk_size: get_n(item, "chunk_size")?,
        total_chunks: get_n(item, "total_chunks")?,
        state: UploadState::parse(&state).ok_or_else(|| malformed("state"))?,
        storage_handle: opt_s(item, "storage_handle").unwrap_or_default(),
        error: opt_s(item, "error"),
        file_id: opt_s(item, "file_id"),
        created_at_ms: get_n(item, "created_at_ms")?,
        updated_at_ms: get_n(item, "updated_at_ms")?,
        expires_at_ms: get_n(item, "expires_at_ms")?,
    })
}

fn file_item(f: &FileRecord) -> Item {
    let mut item: Item = [
        ("file_id", s(&f.file_id)),
        ("owner_id", s(&f.owner_id)),
        ("upload_id", s(&f.upload_id)),
        ("name", s(&f.name)),
        ("size", n(f.size)),
        ("content_type", s(&f.content_type)),
        ("blob_key", s(&f.blob_key)),
        ("created_at_ms", n(f.created_at_ms)),
        ("created_key", s(created_key(f.created_at_ms, &f.file_id))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // Absent when the client declared no whole-file SHA-256.
    if !f.sha256.is_empty() {
        item.insert("sha256".into(), s(&f.sha256));
    }
    item
}

fn file_from(item: &Item) -> StoreResult<FileRecord> {
    Ok(FileRecord {
        file_id: get_s(item, "file_id")?,
        owner_id: get_s(item, "owner_id")?,
        upload_id: get_s(item, "upload_id")?,
        name: get_s(item, "name")?,
        size: get_n(item, "size")?,
        content_type: get_s(item, "content_type")?,
        sha256: opt_s(item, "sha256").unwrap_or_default(),
        blob_key: get_s(item, "blob_key")?,
        created_at_ms: get_n(item, "created_at_ms")?,
    })
}

/// Sorts like (created_at_ms, file_id): the time zero-padded to 20 digits.
fn created_key(created_at_ms: i64, file_id: &str) -> String {
    format!("{:020}#{file_id}", created_at_ms.max(0))
}

/// Chunks per chunk-table item (a *group*): an upload of 10,000 chunks is 313 items of at most
/// ~3.5 KB.
pub const CHUNKS_PER_ITEM: u32 = 32;

/// The group (chunk-table item) of chunk `index`.
fn group_of(index: u32) -> u32 {
    index / CHUNKS_PER_ITEM
}

/// How many chunks group `group` of an upload of `total` chunks has.
fn group_len(group: u32, total: u32) -> u32 {
    total
        .saturating_sub(group.saturating_mul(CHUNKS_PER_ITEM))
        .min(CHUNKS_PER_ITEM)
}

/// How many groups an upload of `total` chunks has.
fn groups(total: u32) -> u32 {
    total.div_ceil(CHUNKS_PER_ITEM)
}

/// Attribute of chunk `index`'s record: `"{sha256} {size} {etag}"`.
fn record_attr(index: u32) -> String {
    format!("r{index}")
}

/// Attribute of the id of the lease on chunk `index`.
fn claim_attr(index: u32) -> String {
    format!("c{index}")
}

/// Attribute of the end (ms) of the lease on chunk `index`.
fn until_attr(index: u32) -> String {
    format!("u{index}")
}

fn record_value(chunk: &ChunkRecord) -> AttributeValue {
    s(format!("{} {} {}", chunk.sha256, chunk.size, chunk.etag))
}

fn record_from(index: u32, v: &AttributeValue) -> StoreResult<ChunkRecord> {
    let bad = || malformed(&record_attr(index));
    let AttributeValue::S(text) = v else {
        return Err(bad());
    };
    let mut parts = text.splitn(3, ' ');
    let sha256 = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
    let size = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    Ok(ChunkRecord {
        index,
        size,
        sha256: sha256.to_owned(),
        etag: parts.next().unwrap_or_default().to_owned(),
    })
}

/// Chunk `index`'s record in its group's item, if it is recorded.
fn record_in(item: &Item, index: u32) -> StoreResult<Option<ChunkRecord>> {
    item.get(&record_attr(index))
        .map(|v| record_from(index, v))
        .transpose()
}

/// Every record in a group's item.
fn records_in(item: &Item) -> StoreResult<Vec<ChunkRecord>> {
    item.iter()
        .filter_map(|(k, v)| {
            let digits = k.strip_prefix('r')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(digits.parse().ok().map(|index| record_from(index, v)))
        })
        .map(|r| r.unwrap_or_else(|| Err(malformed("r…"))))
        .collect()
}

/// How a conditional update ended: the attributes it asked for, or, when its condition did not
/// hold, the item as it was (empty when there was none).
type Conditional = Result<Item, Item>;

/// Sends a conditional update that returns the old item when its condition fails.
async fn conditional(req: UpdateItemFluentBuilder, what: &str) -> StoreResult<Conditional> {
    let result = req
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    match result {
        Ok(out) => Ok(Ok(out.attributes().cloned().unwrap_or_default())),
        Err(e) => {
            if let Some(UpdateItemError::ConditionalCheckFailedException(c)) = e.as_service_error()
            {
                return Ok(Err(c.item().cloned().unwrap_or_default()));
            }
            if is_condition_failed(&e) {
                return Ok(Err(Item::new()));
            }
            Err(sdk_error(what, &e))
        }
    }
}

/// The few upload attributes the chunk operations decide on.
struct UploadHead {
    state: UploadState,
    total: u32,
}

fn head_from(item: &Item) -> StoreResult<UploadHead> {
    let state = get_s(item, "state")?;
    Ok(UploadHead {
        state: UploadState::parse(&state).ok_or_else(|| malformed("state"))?,
        total: get_n(item, "total_chunks")?,
    })
}

/// What promoting a complete group said about its upload.
enum Promotion {
    /// The group is counted (now or before); `all` when every group is.
    Counted { all: bool, total: u32 },
    /// The upload no longer takes chunks.
    Closed(UploadState),
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
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
            .map_err(|e| sdk_error(&format!("DynamoDB GetItem {table}"), &e))?;
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
            .map_err(|e| sdk_error("DynamoDB GetItem uploads", &e))?;
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

    /// Moves the upload from uploading to assembling; true for exactly one caller.
    async fn mark_assembling(&self, upload_id: &str, now_ms: i64) -> StoreResult<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.uploads)
            .set_key(Some(Self::upload_key(upload_id)))
            .update_expression(
                "SET #st = :assembling, updated_at_ms = :now, sweep_state = :assembling, sweep_at = :now",
            )
            .condition_expression("#st = :uploading")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(":assembling", s(UploadState::Assembling.as_str()))
            .expression_attribute_values(":uploading", s(UploadState::Uploading.as_str()))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error("DynamoDB UpdateItem uploads (assembling)", &e)),
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
            Err(e) => Err(sdk_error("DynamoDB PutItem chunks (group)", &e)),
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
                .map_err(|e| sdk_error("DynamoDB Query chunks", &e))?;
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
                .map_err(|e| sdk_error("DynamoDB Query chunks", &e))?;
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
                .map_err(|e| sdk_error("DynamoDB Query uploads", &e))?;
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

    /// Lists uploads of the sparse sweep index in `state` whose `sweep_at` is before `before`.
    async fn swept(
        &self,
        state: UploadState,
        before: i64,
        limit: u32,
    ) -> StoreResult<Vec<UploadRecord>> {
        let expr = Expr::new()
            .value(":st", s(state.as_str()))
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
            Err(e) => return Err(sdk_error("DynamoDB PutItem uploads", &e)),
        }
        if let Err(e) = self
            .create_groups(&upload.upload_id, upload.total_chunks)
            .await
        {
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

    async fn get_upload(&self, upload_id: &str) -> StoreResult<Option<UploadRecord>> {
        self.get_item(&self.tables.uploads, Self::upload_key(upload_id))
            .await?
            .as_ref()
            .map(upload_from)
            .transpose()
    }

    /// An empty `states` means every state. Newest first.
    async fn list_uploads(
        &self,
        owner_id: &str,
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
            .filter(|u| u.owner_id == owner_id && (states.is_empty() || states.contains(&u.state)))
            .collect();
        uploads
            .sort_by(|a, b| (b.created_at_ms, &b.upload_id).cmp(&(a.created_at_ms, &a.upload_id)));
        Ok(uploads)
    }

    /// One query over the upload's group items (313 items, ~1 MB, for 10,000 chunks).
    async fn list_chunks(&self, upload_id: &str) -> StoreResult<Vec<ChunkRecord>> {
        let mut chunks = Vec::new();
        for item in self.group_items(upload_id, false).await? {
            chunks.extend(records_in(&item)?);
        }
        chunks.sort_by_key(|c| c.index);
        Ok(chunks)
    }

    /// The groups' counts (one query of small projections; not on the path of a chunk).
    async fn received_count(&self, upload_id: &str) -> StoreResult<u32> {
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
    async fn recount(&self, upload_id: &str) -> StoreResult<u32> {
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
    /// already recorded answers `AlreadyStored` / `DigestConflict` (also once the upload is
    /// assembling or completed).
    async fn claim_chunk(
        &self,
        upload_id: &str,
        index: u32,
        sha256: &str,
        claim_id: &str,
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
                if recorded.sha256 == sha256 {
                    self.heal(upload_id, index, &item).await?;
                    return Ok(ClaimOutcome::AlreadyStored);
                }
                return Ok(ClaimOutcome::DigestConflict);
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

    async fn release_chunk(&self, upload_id: &str, index: u32, claim_id: &str) -> StoreResult<()> {
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
            Err(e) => Err(sdk_error("DynamoDB UpdateItem chunks (release)", &e)),
        }
    }

    /// One write, the record and its group's counts together (conditional on the caller's
    /// lease), and one more for the chunk that completes its group (1 in 32). `received` is a
    /// lower bound here: the chunks recorded in this chunk's group, or all once complete.
    async fn commit_chunk(
        &self,
        upload_id: &str,
        chunk: &ChunkRecord,
        claim_id: &str,
        now_ms: i64,
    ) -> StoreResult<CommitOutcome> {
        let group = group_of(chunk.index);
        // Requiring the lease also keeps a record from outliving `delete_chunks`: that deletes
        // the group's item, and its leases with it.
        let req = self
            .client
            .update_item()
            .table_name(&self.tables.chunks)
            .set_key(Some(Self::group_key(upload_id, group)))
            .update_expression("SET #r = :rec REMOVE #c, #u ADD #n :one, #left :minus")
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
        let counts = match conditional(req, "DynamoDB UpdateItem chunks (record)").await? {
            Ok(new) => new,
            Err(old) => {
                // Recorded before (a retry), the lease was lost, or the upload moved on.
                if let Some(recorded) = record_in(&old, chunk.index)? {
                    if recorded.sha256 != chunk.sha256 {
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

    /// `error`, when given, replaces the stored reason; otherwise the reason is kept. Moving to
    /// cancelled, expired or failed also deletes the upload's group items, which closes it to
    /// claims and records.
    async fn transition(
        &self,
        upload_id: &str,
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
            UploadState::Assembling => set.extend(["sweep_state = :to", "sweep_at = :now"]),
            UploadState::Completed => remove.extend(["sweep_state", "sweep_at"]),
            UploadState::Cancelled | UploadState::Expired | UploadState::Failed => {
                remove.extend(["sweep_state", "sweep_at"]);
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
            Err(e) => Err(sdk_error("DynamoDB UpdateItem uploads (transition)", &e)),
        }
    }

    async fn list_expired(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<UploadRecord>> {
        let mut uploads: Vec<UploadRecord> = self
            .swept(UploadState::Uploading, now_ms, limit)
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
            .swept(UploadState::Assembling, before_ms, limit)
            .await?
            .into_iter()
            .filter(|u| u.state == UploadState::Assembling && u.updated_at_ms < before_ms)
            .collect();
        uploads.sort_by_key(|u| u.updated_at_ms);
        Ok(uploads)
    }

    async fn delete_chunks(&self, upload_id: &str) -> StoreResult<()> {
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

    async fn get_file(&self, file_id: &str) -> StoreResult<Option<FileRecord>> {
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
        owner_id: &str,
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
                .map_err(|e| sdk_error("DynamoDB Query files", &e))?;
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

    async fn delete_file(&self, file_id: &str) -> StoreResult<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.tables.files)
            .key("file_id", s(file_id))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB DeleteItem files", &e))?;
        Ok(out.attributes().is_some_and(|a| !a.is_empty()))
    }

    async fn check(&self) -> StoreResult<()> {
        check_table(&self.client, &self.tables.uploads).await?;
        check_table(&self.client, &self.tables.chunks).await?;
        check_table(&self.client, &self.tables.files).await
    }
}

// ---------------------------------------------------------------------------------------------
// Auth store

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
        user_id: get_s(item, "user_id")?,
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
            .map_err(|e| sdk_error(&format!("DynamoDB GetItem {}", self.table), &e))?;
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
            .map_err(|e| sdk_error("DynamoDB UpdateItem auth (revoke)", &e))?;
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

    async fn user_by_id(&self, user_id: &str) -> StoreResult<Option<UserRecord>> {
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
            TxOutcome::Done => Ok(RotateOutcome::Rotated { user_id }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_group_by_32_and_records_round_trip() {
        assert_eq!((group_of(0), group_of(31), group_of(32)), (0, 0, 1));
        assert_eq!(groups(10_000), 313);
        assert_eq!(groups(32), 1);
        assert_eq!(group_len(0, 10_000), 32);
        assert_eq!(group_len(312, 10_000), 16);
        assert_eq!(group_len(1, 40), 8);
        let chunk = ChunkRecord {
            index: 7,
            size: 1024,
            sha256: "ab".repeat(32),
            etag: "\"0a1b\"".into(),
        };
        assert_eq!(
            record_from(7, &record_value(&chunk)).ok(),
            Some(chunk.clone())
        );
        let no_etag = ChunkRecord {
            etag: String::new(),
            ..chunk
        };
        assert_eq!(
            record_from(7, &record_value(&no_etag)).ok(),
            Some(no_etag.clone())
        );
        assert!(record_from(7, &s("nonsense")).is_err());
        let item: Item = HashMap::from([
            ("r7".to_owned(), record_value(&no_etag)),
            ("c8".to_owned(), s("claim")),
            ("idx".to_owned(), n(0)),
            ("n".to_owned(), n(1)),
        ]);
        assert_eq!(records_in(&item).ok(), Some(vec![no_etag]));
    }

    #[test]
    fn created_keys_sort_like_time_then_id() {
        assert!(created_key(9, "b") < created_key(10, "a"));
        assert!(created_key(10, "a") < created_key(10, "b"));
        assert_eq!(created_key(1, "x"), "00000000000000000001#x");
        let f = FileRecord {
            file_id: "f".into(),
            owner_id: "o".into(),
            upload_id: "u".into(),
            name: "n".into(),
            size: 1,
            content_type: String::new(),
            sha256: String::new(),
            blob_key: String::new(),
            created_at_ms: 42,
        };
        assert_eq!(
            decode_cursor(&encode_cursor(&f)).ok(),
            Some((42, "f".into()))
        );
        assert!(decode_cursor("!!").is_err());
    }
}
