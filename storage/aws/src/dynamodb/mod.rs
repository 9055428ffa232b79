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
//!   expiry) or assembling (at their last change), for the sweeper. An assembling upload's
//!   `sweep_state` is `assembling-job-unsent` from the write that made it assembling until its
//!   job is sent: that part of the index is the outbox of assembly jobs. An upload cancelled,
//!   expired or failed, or whose File was deleted, is `release-pending` there (at that change)
//!   until its storage is released: the outbox of releases. Cancelled, expired and failed
//!   uploads get a `ttl` 30 days on. `crc64nvme` (a number) is the whole-file CRC-64/NVME the
//!   client declared, absent until it does.
//! - **chunks** — the chunks of an upload by groups of 32, one item per group (key
//!   `upload_id`, `idx` = group number = chunk index / 32): chunk *i*'s lease `c{i}` (claim
//!   id) and `u{i}` (its end, ms) while a worker writes it, then its record `r{i}`
//!   (`"{crc64nvme} {size} {etag}"`, the CRC in 16 hex digits; records written before CRCs
//!   were kept begin with the chunk's SHA-256 and read as CRC 0); `n`, the group's recorded
//!   chunks, `left`, those still missing, and `last`, its last chunk index. The group items
//!   are created with the upload
//!   and deleted when it stops taking chunks (cancelled, expired, failed) or its chunks are
//!   dropped: a claim needs its group's item, so they are also what closes an upload to
//!   chunks. An upload of 10,000 chunks is 313 items of at most ~3.5 KB (the limit is 400 KB).
//! - **files** — one item per File (key `file_id`), with its verified `crc64nvme` (a number)
//!   and `sha256_source` (absent on Files published before: their SHA-256 is the server's);
//!   index `by_owner` (`owner_id`, `created_key` = zero-padded `created_at_ms#file_id`, all
//!   attributes) pages an owner's files newest first.
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
//!
//! Modules: `attrs` (attribute values, condition expressions, transactions), `tables`
//! (creation, checks, batched requests), `items` (the item codecs and chunk-group arithmetic),
//! `metadata` and `auth` (the two stores).

mod attrs;
mod auth;
mod items;
mod metadata;
mod tables;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

pub use auth::DynamoAuthStore;
pub use items::CHUNKS_PER_ITEM;
pub use metadata::DynamoMetadataStore;
pub use tables::create_tables;

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
/// The `sweep_state` of an assembling upload whose job is not sent yet (the outbox).
pub const JOB_UNSENT: &str = "assembling-job-unsent";
/// The `sweep_state` of an upload whose storage is to be released (the outbox of releases).
pub const RELEASE_PENDING: &str = "release-pending";
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
