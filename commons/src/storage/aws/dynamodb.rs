//! DynamoDB metadata and auth stores.
//!
//! Four tables, named `{prefix}uploads`, `{prefix}chunks`, `{prefix}files` and `{prefix}auth`
//! (the layout, keys, indexes and TTL are documented in `docs/aws.md`):
//!
//! - **uploads** — one item per upload session (key `upload_id`).
//!   Index `by_owner` (`owner_id`, `created_at_ms`, projects `state`) lists an owner's uploads;
//!   the sparse index `by_sweep` (`sweep_state`, `sweep_at`, keys only) holds only uploads that
//!   are uploading (at their expiry) or assembling (at their last change), for the sweeper.
//!   Cancelled, expired and failed uploads get a `ttl` 30 days on.
//! - **chunks** — one item per chunk (key `upload_id`, `idx`): first the lease of the worker
//!   writing it (`claim_id`, `lease_until_ms`), then its record (`size`, `sha256`, `etag`). An
//!   upload of 10,000 chunks is 10,000 small items, never one big one (items are at most 400 KB),
//!   plus its tally (`idx` -1): the set of counted indexes (~30 KB at most) and their number.
//! - **files** — one item per File (key `file_id`); index `by_owner` (`owner_id`,
//!   `created_key` = zero-padded `created_at_ms#file_id`, all attributes) pages an owner's files
//!   newest first.
//! - **auth** — users (`user#{id}`, and `email#{email}` holding the same record so that emails
//!   are unique), refresh tokens (`token#{hash}`) and their families (`family#{id}`), with
//!   `ttl` a day after the token expires.
//!
//! Exactly-once completion: a chunk is recorded by a conditional update of its item (only if
//! the caller still holds its lease and it is not recorded yet); then one conditional update of
//! the upload's *tally* item (in the chunks table, sort key `-1`) counts it: `ADD recorded
//! :index, received :1` unless the index is in `recorded`, so each chunk is counted once,
//! whoever counts it. The caller that sees `received >= total_chunks` moves the upload from
//! uploading to assembling with a conditional update, which succeeds for exactly one caller. A
//! worker that dies between recording and counting leaves a recorded chunk uncounted: whoever
//! touches that chunk next (the client's retry) counts it. No `TransactWriteItems` on this hot
//! path, and the upload item itself stays small (the tally holds up to 10,000 small numbers).
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
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, Put, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{error_code, poll_until, sdk_error};
use crate::clock::now_ms;
use crate::state::UploadState;
use crate::storage::{
    AuthStore, ChunkRecord, ClaimOutcome, CommitOutcome, FilePage, FileRecord, MetadataStore,
    RefreshRecord, RotateOutcome, StoreError, StoreResult, UploadRecord, UserRecord,
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
    [
        ("file_id", s(&f.file_id)),
        ("owner_id", s(&f.owner_id)),
        ("upload_id", s(&f.upload_id)),
        ("name", s(&f.name)),
        ("size", n(f.size)),
        ("content_type", s(&f.content_type)),
        ("sha256", s(&f.sha256)),
        ("blob_key", s(&f.blob_key)),
        ("created_at_ms", n(f.created_at_ms)),
        ("created_key", s(created_key(f.created_at_ms, &f.file_id))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn file_from(item: &Item) -> StoreResult<FileRecord> {
    Ok(FileRecord {
        file_id: get_s(item, "file_id")?,
        owner_id: get_s(item, "owner_id")?,
        upload_id: get_s(item, "upload_id")?,
        name: get_s(item, "name")?,
        size: get_n(item, "size")?,
        content_type: get_s(item, "content_type")?,
        sha256: get_s(item, "sha256")?,
        blob_key: get_s(item, "blob_key")?,
        created_at_ms: get_n(item, "created_at_ms")?,
    })
}

/// Sorts like (created_at_ms, file_id): the time zero-padded to 20 digits.
fn created_key(created_at_ms: i64, file_id: &str) -> String {
    format!("{:020}#{file_id}", created_at_ms.max(0))
}

fn encode_cursor(file: &FileRecord) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", file.created_at_ms, file.file_id))
}

fn decode_cursor(cursor: &str) -> StoreResult<(i64, String)> {
    let bad = || StoreError::Conflict("invalid page cursor".into());
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (ms, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((ms.parse().map_err(|_| bad())?, id.to_owned()))
}

/// The chunk item's record part, when it is recorded.
fn chunk_from(item: &Item) -> StoreResult<Option<ChunkRecord>> {
    let Some(sha256) = opt_s(item, "sha256") else {
        return Ok(None);
    };
    Ok(Some(ChunkRecord {
        index: get_n(item, "idx")?,
        size: get_n(item, "size")?,
        sha256,
        etag: opt_s(item, "etag").unwrap_or_default(),
    }))
}

/// The few upload attributes the chunk operations decide on.
struct UploadHead {
    state: UploadState,
    total: u32,
}

/// What counting one chunk did.
struct Counting {
    received: u32,
    completed_set: bool,
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

    fn chunk_key(upload_id: &str, index: u32) -> Item {
        HashMap::from([
            ("upload_id".to_owned(), s(upload_id)),
            ("idx".to_owned(), n(index)),
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
        let state = get_s(item, "state")?;
        Ok(Some(UploadHead {
            state: UploadState::parse(&state).ok_or_else(|| malformed("state"))?,
            total: get_n(item, "total_chunks")?,
        }))
    }

    /// The key of an upload's tally item in the chunks table (sort key -1, before chunk 0).
    fn tally_key(upload_id: &str) -> Item {
        HashMap::from([
            ("upload_id".to_owned(), s(upload_id)),
            ("idx".to_owned(), n(-1)),
        ])
    }

    /// How many chunks of the upload are counted.
    async fn received(&self, upload_id: &str) -> StoreResult<u32> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.chunks)
            .set_key(Some(Self::tally_key(upload_id)))
            .consistent_read(true)
            .projection_expression("received")
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB GetItem chunks (tally)", &e))?;
        Ok(out.item().and_then(|i| opt_n(i, "received")).unwrap_or(0))
    }

    /// Counts a recorded chunk once (its index joins the tally's `recorded` set and
    /// `received` grows by one, in one conditional update), and moves the upload to
    /// assembling when every chunk is counted: `completed_set` is true for exactly one caller.
    async fn count_chunk(
        &self,
        upload_id: &str,
        index: u32,
        total: u32,
        now_ms: i64,
    ) -> StoreResult<Counting> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.chunks)
            .set_key(Some(Self::tally_key(upload_id)))
            .update_expression("ADD recorded :idx, received :one")
            .condition_expression("NOT contains(recorded, :i)")
            .expression_attribute_values(":idx", AttributeValue::Ns(vec![index.to_string()]))
            .expression_attribute_values(":i", n(index))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e) if is_condition_failed(&e) => {}
            Err(e) => return Err(sdk_error("DynamoDB UpdateItem chunks (tally)", &e)),
        }
        let received = self.received(upload_id).await?;
        let mut completed_set = false;
        if received >= total {
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
            completed_set = match result {
                Ok(_) => true,
                Err(e) if is_condition_failed(&e) => false,
                Err(e) => return Err(sdk_error("DynamoDB UpdateItem uploads (assembling)", &e)),
            };
        }
        Ok(Counting {
            received,
            completed_set,
        })
    }

    /// A recorded chunk met again (a retry): makes sure it is counted, and answers with the
    /// received count.
    async fn heal(
        &self,
        upload_id: &str,
        index: u32,
        head: &UploadHead,
        now_ms: i64,
    ) -> StoreResult<u32> {
        if head.state == UploadState::Uploading {
            return Ok(self
                .count_chunk(upload_id, index, head.total, now_ms)
                .await?
                .received);
        }
        self.received(upload_id).await
    }

    async fn head_or_not_found(&self, upload_id: &str) -> StoreResult<UploadHead> {
        self.head(upload_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("upload {upload_id}")))
    }

    async fn chunk_item(&self, upload_id: &str, index: u32) -> StoreResult<Option<Item>> {
        self.get_item(&self.tables.chunks, Self::chunk_key(upload_id, index))
            .await
    }

    /// The recorded digest of a chunk, if it is recorded.
    async fn recorded_digest(&self, upload_id: &str, index: u32) -> StoreResult<Option<String>> {
        Ok(self
            .chunk_item(upload_id, index)
            .await?
            .and_then(|i| opt_s(&i, "sha256")))
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

    /// The answer to a commit of a chunk that is recorded already.
    async fn settled(
        &self,
        upload_id: &str,
        chunk: &ChunkRecord,
        digest: &str,
        head: &UploadHead,
        now_ms: i64,
    ) -> StoreResult<CommitOutcome> {
        if digest != chunk.sha256 {
            return Ok(CommitOutcome::DigestConflict);
        }
        let received = self.heal(upload_id, chunk.index, head, now_ms).await?;
        Ok(CommitOutcome::AlreadyStored { received })
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
        match self
            .client
            .put_item()
            .table_name(&self.tables.uploads)
            .set_item(Some(upload_item(upload)))
            .condition_expression("attribute_not_exists(upload_id)")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StoreError::Conflict(format!(
                "upload {} exists",
                upload.upload_id
            ))),
            Err(e) => Err(sdk_error("DynamoDB PutItem uploads", &e)),
        }
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

    async fn list_chunks(&self, upload_id: &str) -> StoreResult<Vec<ChunkRecord>> {
        let mut chunks = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.tables.chunks)
                .key_condition_expression("upload_id = :u")
                .filter_expression("attribute_exists(sha256)")
                .projection_expression("idx, #size, sha256, etag")
                .expression_attribute_names("#size", "size")
                .expression_attribute_values(":u", s(upload_id))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB Query chunks", &e))?;
            for item in out.items() {
                if let Some(c) = chunk_from(item)? {
                    chunks.push(c);
                }
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        // Only counted chunks: a chunk recorded by a worker that died before counting it is
        // listed as missing, so the client sends it again and that retry counts it.
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.chunks)
            .set_key(Some(Self::tally_key(upload_id)))
            .consistent_read(true)
            .projection_expression("recorded")
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB GetItem chunks (tally)", &e))?;
        let counted: std::collections::HashSet<u32> =
            match out.item().and_then(|i| i.get("recorded")) {
                Some(AttributeValue::Ns(v)) => v.iter().filter_map(|x| x.parse().ok()).collect(),
                _ => std::collections::HashSet::new(),
            };
        chunks.retain(|c| counted.contains(&c.index));
        chunks.sort_by_key(|c| c.index);
        Ok(chunks)
    }

    /// The tally's count: no listing of the chunks.
    async fn received_count(&self, upload_id: &str) -> StoreResult<u32> {
        self.received(upload_id).await
    }

    /// As the SQLite store: a chunk already recorded in an upload that is assembling or
    /// completed answers `AlreadyStored` / `DigestConflict`.
    async fn claim_chunk(
        &self,
        upload_id: &str,
        index: u32,
        sha256: &str,
        claim_id: &str,
        lease: Duration,
        now_ms: i64,
    ) -> StoreResult<ClaimOutcome> {
        let head = self.head_or_not_found(upload_id).await?;
        let answer = |digest: &str| {
            if digest == sha256 {
                ClaimOutcome::AlreadyStored
            } else {
                ClaimOutcome::DigestConflict
            }
        };
        // While uploading, the claim's condition tells whether the chunk is recorded: only
        // a refused claim reads the chunk.
        let answers_recorded =
            matches!(head.state, UploadState::Assembling | UploadState::Completed);
        if answers_recorded {
            if let Some(digest) = self.recorded_digest(upload_id, index).await? {
                if digest == sha256 {
                    self.heal(upload_id, index, &head, now_ms).await?;
                }
                return Ok(answer(&digest));
            }
        }
        if head.state != UploadState::Uploading {
            return Ok(ClaimOutcome::NotAccepting(head.state));
        }
        if index >= head.total {
            return Err(StoreError::Conflict(format!(
                "chunk {index} is out of range (0..{})",
                head.total
            )));
        }
        let lease_until_ms = now_ms.saturating_add(lease_ms(lease));
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.chunks)
            .set_key(Some(Self::chunk_key(upload_id, index)))
            .update_expression("SET claim_id = :c, claim_sha = :sha, lease_until_ms = :until")
            .condition_expression(
                "attribute_not_exists(sha256) AND (attribute_not_exists(claim_id) OR claim_id = :c OR lease_until_ms <= :now)",
            )
            .expression_attribute_values(":c", s(claim_id))
            .expression_attribute_values(":sha", s(sha256))
            .expression_attribute_values(":until", n(lease_until_ms))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match result {
            Ok(_) => Ok(ClaimOutcome::Claimed { lease_until_ms }),
            Err(e) if is_condition_failed(&e) => {
                Ok(match self.recorded_digest(upload_id, index).await? {
                    Some(digest) => {
                        if digest == sha256 {
                            self.heal(upload_id, index, &head, now_ms).await?;
                        }
                        answer(&digest)
                    }
                    None => ClaimOutcome::InProgress,
                })
            }
            Err(e) => Err(sdk_error("DynamoDB UpdateItem chunks (claim)", &e)),
        }
    }

    async fn release_chunk(&self, upload_id: &str, index: u32, claim_id: &str) -> StoreResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.chunks)
            .set_key(Some(Self::chunk_key(upload_id, index)))
            .update_expression("REMOVE claim_id, claim_sha, lease_until_ms")
            .condition_expression("claim_id = :c")
            .expression_attribute_values(":c", s(claim_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk_error("DynamoDB UpdateItem chunks (release)", &e)),
        }
    }

    async fn commit_chunk(
        &self,
        upload_id: &str,
        chunk: &ChunkRecord,
        claim_id: &str,
        now_ms: i64,
    ) -> StoreResult<CommitOutcome> {
        // The record is conditional on the caller's lease, which is only granted while the
        // upload is uploading and for a chunk in range: only a refused record reads more.
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.chunks)
            .set_key(Some(Self::chunk_key(upload_id, chunk.index)))
            .update_expression(
                "SET #size = :size, sha256 = :sha, etag = :etag REMOVE claim_id, claim_sha, lease_until_ms",
            )
            .condition_expression("claim_id = :c AND attribute_not_exists(sha256)")
            .expression_attribute_names("#size", "size")
            .expression_attribute_values(":size", n(chunk.size))
            .expression_attribute_values(":sha", s(&chunk.sha256))
            .expression_attribute_values(":etag", s(&chunk.etag))
            .expression_attribute_values(":c", s(claim_id))
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e) if is_condition_failed(&e) => {
                // Recorded before (a retry), the lease was lost, or the upload moved on.
                let head = self.head_or_not_found(upload_id).await?;
                if let Some(digest) = self.recorded_digest(upload_id, chunk.index).await? {
                    return self.settled(upload_id, chunk, &digest, &head, now_ms).await;
                }
                if chunk.index >= head.total {
                    return Err(StoreError::Conflict(format!(
                        "chunk {} is out of range (0..{})",
                        chunk.index, head.total
                    )));
                }
                return Ok(CommitOutcome::NotAccepting(head.state));
            }
            Err(e) => return Err(sdk_error("DynamoDB UpdateItem chunks (record)", &e)),
        }
        let head = self.head_or_not_found(upload_id).await?;
        if matches!(head.state, UploadState::Assembling | UploadState::Completed) {
            // A retry of this very chunk counted it meanwhile, and that completed the set.
            return Ok(CommitOutcome::Stored {
                received: self.received(upload_id).await?,
                completed_set: false,
            });
        }
        if head.state != UploadState::Uploading {
            // The upload stopped taking chunks (cancelled, expired) while this one was being
            // recorded: drop the record, the upload's storage is being released.
            self.client
                .delete_item()
                .table_name(&self.tables.chunks)
                .set_key(Some(Self::chunk_key(upload_id, chunk.index)))
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB DeleteItem chunks", &e))?;
            return Ok(CommitOutcome::NotAccepting(head.state));
        }
        let counting = self
            .count_chunk(upload_id, chunk.index, head.total, now_ms)
            .await?;
        Ok(CommitOutcome::Stored {
            received: counting.received,
            completed_set: counting.completed_set,
        })
    }

    /// `error`, when given, replaces the stored reason; otherwise the reason is kept.
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
            Ok(_) => Ok(true),
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
            // Chunk items and the tally item alike.
            for item in out.items() {
                let index: i64 = get_n(item, "idx")?;
                let key = HashMap::from([
                    ("upload_id".to_owned(), s(upload_id)),
                    ("idx".to_owned(), n(index)),
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
