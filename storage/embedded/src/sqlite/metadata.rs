//! Upload sessions, chunk records, chunk claims and files.
//!
//! A chunk is recorded with the CRC-64/NVME its worker computed (`chunks.crc64nvme`, the u64's
//! bit pattern as SQLite's signed INTEGER); two writes of a chunk are the same chunk when their
//! CRCs are equal. The `sha256` columns of `chunks` and `claims` predate that and hold `''`.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, OptionalExtension, Row};

use super::{immediate, Db, DbResult, Durability};
use lfusys_core::digest::Crc64;
use lfusys_core::state::UploadState;
use storage::{
    decode_cursor, encode_cursor, ChunkRecord, ClaimId, ClaimOutcome, CommitOutcome, Concat,
    FileId, FilePage, FileRecord, MetadataStore, Sha256Source, SizeDeclared, StoreError,
    StoreResult, UploadId, UploadRecord, UserId,
};

/// The schema's steps, oldest first (see `Db::open`).
const MIGRATIONS: &[&str] = &[
    SCHEMA,
    OUTBOX,
    CHECKSUMS,
    SHA256_CHAIN,
    LENGTH_DEFERRED,
    CONCAT,
];
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS uploads (
    upload_id      TEXT PRIMARY KEY,
    owner_id       TEXT NOT NULL,
    name           TEXT NOT NULL,
    size           INTEGER NOT NULL,
    content_type   TEXT NOT NULL,
    sha256         TEXT,
    chunk_size     INTEGER NOT NULL,
    total_chunks   INTEGER NOT NULL,
    state          TEXT NOT NULL,
    storage_handle TEXT NOT NULL,
    error          TEXT,
    file_id        TEXT,
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_by_owner ON uploads (owner_id, created_at_ms DESC);
CREATE INDEX IF NOT EXISTS uploads_by_expiry ON uploads (state, expires_at_ms);
CREATE INDEX IF NOT EXISTS uploads_by_update ON uploads (state, updated_at_ms);
CREATE TABLE IF NOT EXISTS chunks (
    upload_id TEXT NOT NULL,
    idx       INTEGER NOT NULL,
    size      INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    etag      TEXT NOT NULL,
    PRIMARY KEY (upload_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims (
    upload_id      TEXT NOT NULL,
    idx            INTEGER NOT NULL,
    claim_id       TEXT NOT NULL,
    sha256         TEXT NOT NULL,
    lease_until_ms INTEGER NOT NULL,
    PRIMARY KEY (upload_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    file_id       TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL,
    upload_id     TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    content_type  TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    blob_key      TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_owner ON files (owner_id, created_at_ms DESC, file_id DESC);
";
/// Version 2: the outboxes. `job_unsent` is 1 from the write that moves an upload to
/// assembling until its job is sent; `release_pending` from the write that cancels, expires or
/// fails an upload, or deletes its File, until its storage is released. (Uploads already
/// assembling when a file is upgraded count as sent: the sweeper's stale check covers them, as
/// before.)
const OUTBOX: &str = "
ALTER TABLE uploads ADD COLUMN job_unsent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN release_pending INTEGER NOT NULL DEFAULT 0;
CREATE INDEX uploads_with_unsent_jobs ON uploads (updated_at_ms) WHERE job_unsent = 1;
CREATE INDEX uploads_with_pending_releases ON uploads (updated_at_ms) WHERE release_pending = 1;
";
/// Version 3: CRC-64/NVME checksums. `chunks.crc64nvme` is the chunk's identity from now on;
/// chunks recorded before it are NULL there and read as CRC 0 (see `crc_from_sql`), so an
/// upload in progress across the upgrade cannot be verified and fails at assembly rather
/// than publish unverified bytes. `uploads.crc64nvme` is the client's declared whole-file CRC;
/// `files.crc64nvme` the verified one. Files published before had their SHA-256 computed by
/// the server (the assembler read the blob back): their source is `server`.
const CHECKSUMS: &str = "
ALTER TABLE uploads ADD COLUMN crc64nvme INTEGER;
ALTER TABLE chunks ADD COLUMN crc64nvme INTEGER;
ALTER TABLE files ADD COLUMN crc64nvme INTEGER;
ALTER TABLE files ADD COLUMN sha256_source TEXT;
UPDATE files SET sha256_source = 'server' WHERE sha256 <> '';
";
/// Version 4: the file's running SHA-256 after a chunk (`ChunkRecord::sha256_chain`), NULL for
/// a chunk stored without one.
const SHA256_CHAIN: &str = "
ALTER TABLE chunks ADD COLUMN sha256_chain BLOB;
";
/// Version 5: an upload whose length is deferred (`UploadRecord::length_deferred`).
const LENGTH_DEFERRED: &str = "
ALTER TABLE uploads ADD COLUMN length_deferred INTEGER NOT NULL DEFAULT 0;
";
/// Version 6: how an upload takes part in a parallel upload (`UploadRecord::concat`, in
/// `Concat::to_stored`'s form: `''` for none, `'partial'`, or `'final:'` and the parts' ids).
/// A partial upload is never moved to assembling by its chunks (`commit_chunk`,
/// `declare_size`).
const CONCAT: &str = "
ALTER TABLE uploads ADD COLUMN concat TEXT NOT NULL DEFAULT '';
";
/// The columns `chunk_from_row` reads.
const CHUNK_COLUMNS: &str = "idx, size, crc64nvme, etag, sha256_chain";

const UPLOAD_COLUMNS: &str =
    "upload_id, owner_id, name, size, content_type, sha256, chunk_size, total_chunks, \
     state, storage_handle, error, file_id, created_at_ms, updated_at_ms, expires_at_ms, \
     crc64nvme, length_deferred, concat";
const FILE_COLUMNS: &str =
    "file_id, owner_id, upload_id, name, size, content_type, sha256, blob_key, created_at_ms, \
     crc64nvme, sha256_source";

const MAX_PAGE: u32 = 1000;

/// [`MetadataStore`] on one SQLite file (`sessions.db`). Commits are fully synchronous: an
/// acknowledged chunk must survive a power loss.
#[derive(Debug, Clone)]
pub struct SqliteMetadataStore {
    db: Db,
}

impl SqliteMetadataStore {
    pub fn open(path: &Path) -> StoreResult<Self> {
        Ok(Self {
            db: Db::open(path, MIGRATIONS, Durability::Full)?,
        })
    }
}

fn state_of(s: &str) -> rusqlite::Result<UploadState> {
    UploadState::parse(s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown state {s:?}").into(),
        )
    })
}

fn upload_from_row(r: &Row<'_>) -> rusqlite::Result<UploadRecord> {
    Ok(UploadRecord {
        upload_id: r.get::<_, String>(0)?.into(),
        owner_id: r.get::<_, String>(1)?.into(),
        name: r.get(2)?,
        size: r.get(3)?,
        content_type: r.get(4)?,
        sha256: r.get(5)?,
        chunk_size: r.get(6)?,
        total_chunks: r.get(7)?,
        state: state_of(&r.get::<_, String>(8)?)?,
        storage_handle: none_if_empty(r.get(9)?),
        error: r.get(10)?,
        file_id: r.get::<_, Option<String>>(11)?.map(FileId::from),
        created_at_ms: r.get(12)?,
        updated_at_ms: r.get(13)?,
        expires_at_ms: r.get(14)?,
        crc64nvme: r.get::<_, Option<i64>>(15)?.map(i64::cast_unsigned),
        length_deferred: r.get(16)?,
        concat: concat_of(&r.get::<_, String>(17)?)?,
    })
}

/// An upload's stored `concat` (see [`CONCAT`]).
fn concat_of(s: &str) -> rusqlite::Result<Concat> {
    Concat::from_stored(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(17, rusqlite::types::Type::Text, e.into())
    })
}

fn file_from_row(r: &Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        file_id: r.get::<_, String>(0)?.into(),
        owner_id: r.get::<_, String>(1)?.into(),
        upload_id: r.get::<_, String>(2)?.into(),
        name: r.get(3)?,
        size: r.get(4)?,
        content_type: r.get(5)?,
        sha256: none_if_empty(r.get(6)?),
        blob_key: r.get(7)?,
        created_at_ms: r.get(8)?,
        crc64nvme: r.get::<_, Option<i64>>(9)?.map(i64::cast_unsigned),
        sha256_source: r
            .get::<_, Option<String>>(10)?
            .as_deref()
            .map(sha256_source_of)
            .transpose()?,
    })
}

fn sha256_source_of(s: &str) -> rusqlite::Result<Sha256Source> {
    Sha256Source::parse(s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            10,
            rusqlite::types::Type::Text,
            format!("unknown sha256_source {s:?}").into(),
        )
    })
}

fn chunk_from_row(r: &Row<'_>) -> rusqlite::Result<ChunkRecord> {
    Ok(ChunkRecord {
        index: r.get(0)?,
        size: r.get(1)?,
        crc64nvme: crc_from_sql(r.get(2)?),
        etag: none_if_empty(r.get(3)?),
        sha256_chain: r.get(4)?,
    })
}

/// A CRC as SQLite stores it: the u64's bit pattern as a signed INTEGER (SQLite has no
/// unsigned 64-bit integer, and rusqlite refuses a u64 above `i64::MAX`).
fn crc_to_sql(crc: Crc64) -> i64 {
    crc.cast_signed()
}

/// A chunk's stored CRC; a chunk recorded before CRCs were kept (NULL) reads as 0, which no
/// worker's CRC of a body matches in practice, so it is never taken for a retry's chunk.
fn crc_from_sql(stored: Option<i64>) -> Crc64 {
    stored.map_or(0, i64::cast_unsigned)
}

/// The `storage_handle`, `etag` and files' `sha256` columns are `NOT NULL` (the schema predates
/// optional values) and hold `''` for none; existing databases keep working unchanged.
fn none_if_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

fn empty_if_none(value: Option<&str>) -> &str {
    value.unwrap_or_default()
}

fn upload_state(tx: &rusqlite::Connection, upload_id: &str) -> DbResult<(UploadState, u32)> {
    let row: Option<(String, u32)> = tx
        .query_row(
            "SELECT state, total_chunks FROM uploads WHERE upload_id = ?1",
            [upload_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (state, total) = row.ok_or_else(|| StoreError::NotFound(format!("upload {upload_id}")))?;
    Ok((state_of(&state)?, total))
}

/// The CRC chunk `index` was recorded with, if it is recorded.
fn recorded_crc(tx: &rusqlite::Connection, upload_id: &str, index: u32) -> DbResult<Option<Crc64>> {
    Ok(tx
        .query_row(
            "SELECT crc64nvme FROM chunks WHERE upload_id = ?1 AND idx = ?2",
            params![upload_id, index],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .map(crc_from_sql))
}

fn received(tx: &rusqlite::Connection, upload_id: &str) -> DbResult<u32> {
    Ok(tx.query_row(
        "SELECT COUNT(*) FROM chunks WHERE upload_id = ?1",
        [upload_id],
        |r| r.get(0),
    )?)
}

fn file_by_upload(tx: &rusqlite::Connection, upload_id: &str) -> DbResult<Option<FileRecord>> {
    Ok(tx
        .query_row(
            &format!("SELECT {FILE_COLUMNS} FROM files WHERE upload_id = ?1"),
            [upload_id],
            file_from_row,
        )
        .optional()?)
}

fn placeholders(n: usize, first: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl MetadataStore for SqliteMetadataStore {
    async fn insert_upload(&self, upload: &UploadRecord) -> StoreResult<()> {
        let u = upload.clone();
        self.db
            .call(move |c| {
                c.execute(
                    &format!(
                        "INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES \
                         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
                    ),
                    params![
                        u.upload_id.as_str(),
                        u.owner_id.as_str(),
                        u.name,
                        u.size,
                        u.content_type,
                        u.sha256,
                        u.chunk_size,
                        u.total_chunks,
                        u.state.as_str(),
                        empty_if_none(u.storage_handle.as_deref()),
                        u.error,
                        u.file_id.as_deref(),
                        u.created_at_ms,
                        u.updated_at_ms,
                        u.expires_at_ms,
                        u.crc64nvme.map(crc_to_sql),
                        u.length_deferred,
                        u.concat.to_stored()
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn get_upload(&self, upload_id: &UploadId) -> StoreResult<Option<UploadRecord>> {
        let id = upload_id.to_string();
        self.db
            .call(move |c| {
                Ok(c.query_row(
                    &format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id = ?1"),
                    [id],
                    upload_from_row,
                )
                .optional()?)
            })
            .await
    }

    /// An empty `states` means every state.
    async fn list_uploads(
        &self,
        owner_id: &UserId,
        states: &[UploadState],
    ) -> StoreResult<Vec<UploadRecord>> {
        let owner = owner_id.to_string();
        let states: Vec<&'static str> = states.iter().map(|s| s.as_str()).collect();
        self.db
            .call(move |c| {
                let filter = if states.is_empty() {
                    String::new()
                } else {
                    format!(" AND state IN ({})", placeholders(states.len(), 2))
                };
                let sql = format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE owner_id = ?1{filter} \
                     ORDER BY created_at_ms DESC, upload_id DESC"
                );
                let mut stmt = c.prepare(&sql)?;
                let args = std::iter::once(owner.as_str()).chain(states.iter().copied());
                let rows = stmt.query_map(params_from_iter(args), upload_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn list_chunks(&self, upload_id: &UploadId) -> StoreResult<Vec<ChunkRecord>> {
        let id = upload_id.to_string();
        self.db
            .call(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {CHUNK_COLUMNS} FROM chunks WHERE upload_id = ?1 ORDER BY idx"
                ))?;
                let rows = stmt.query_map([id], chunk_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn get_chunk(
        &self,
        upload_id: &UploadId,
        index: u32,
    ) -> StoreResult<Option<ChunkRecord>> {
        let id = upload_id.to_string();
        self.db
            .call(move |c| {
                Ok(c.query_row(
                    &format!(
                        "SELECT {CHUNK_COLUMNS} FROM chunks WHERE upload_id = ?1 AND idx = ?2"
                    ),
                    params![id, index],
                    chunk_from_row,
                )
                .optional()?)
            })
            .await
    }

    /// Besides the contract: a chunk already recorded in an upload that is assembling or
    /// completed answers `AlreadyStored` with its CRC (an idempotent retry after the last
    /// chunk landed is a success), not `NotAccepting`.
    async fn claim_chunk(
        &self,
        upload_id: &UploadId,
        index: u32,
        claim_id: &ClaimId,
        lease: Duration,
        now_ms: i64,
    ) -> StoreResult<ClaimOutcome> {
        let (upload_id, claim_id) = (upload_id.to_string(), claim_id.to_string());
        let lease_until_ms = now_ms.saturating_add(lease_ms(lease));
        self.db
            .call(move |c| {
                immediate(c, |tx| {
                    let (state, total) = upload_state(tx, &upload_id)?;
                    let recorded = recorded_crc(tx, &upload_id, index)?;
                    let answer_recorded = matches!(
                        state,
                        UploadState::Uploading | UploadState::Assembling | UploadState::Completed
                    );
                    if let (Some(crc64nvme), true) = (recorded, answer_recorded) {
                        return Ok(ClaimOutcome::AlreadyStored { crc64nvme });
                    }
                    if state != UploadState::Uploading {
                        return Ok(ClaimOutcome::NotAccepting(state));
                    }
                    if index >= total {
                        return Err(StoreError::Conflict(format!("chunk {index} is out of range (0..{total})")).into());
                    }
                    let holder: Option<(String, i64)> = tx
                        .query_row(
                            "SELECT claim_id, lease_until_ms FROM claims WHERE upload_id = ?1 AND idx = ?2",
                            params![upload_id, index],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()?;
                    if let Some((holder, until)) = holder {
                        if holder != claim_id && until > now_ms {
                            return Ok(ClaimOutcome::InProgress);
                        }
                    }
                    tx.execute(
                        "INSERT INTO claims (upload_id, idx, claim_id, sha256, lease_until_ms) \
                         VALUES (?1, ?2, ?3, '', ?4) \
                         ON CONFLICT (upload_id, idx) DO UPDATE SET \
                         claim_id = excluded.claim_id, lease_until_ms = excluded.lease_until_ms",
                        params![upload_id, index, claim_id, lease_until_ms],
                    )?;
                    Ok(ClaimOutcome::Claimed { lease_until_ms })
                })
            })
            .await
    }

    async fn release_chunk(
        &self,
        upload_id: &UploadId,
        index: u32,
        claim_id: &ClaimId,
    ) -> StoreResult<()> {
        let (upload_id, claim_id) = (upload_id.to_string(), claim_id.to_string());
        self.db
            .call(move |c| {
                c.execute(
                    "DELETE FROM claims WHERE upload_id = ?1 AND idx = ?2 AND claim_id = ?3",
                    params![upload_id, index, claim_id],
                )?;
                Ok(())
            })
            .await
    }

    async fn commit_chunk(
        &self,
        upload_id: &UploadId,
        chunk: &ChunkRecord,
        claim_id: &ClaimId,
        now_ms: i64,
    ) -> StoreResult<CommitOutcome> {
        let (upload_id, chunk, claim_id) =
            (upload_id.to_string(), chunk.clone(), claim_id.to_string());
        self.db
            .call(move |c| {
                immediate(c, |tx| {
                    let (state, total) = upload_state(tx, &upload_id)?;
                    if let Some(crc) = recorded_crc(tx, &upload_id, chunk.index)? {
                        return Ok(if crc == chunk.crc64nvme {
                            CommitOutcome::AlreadyStored {
                                received: received(tx, &upload_id)?,
                            }
                        } else {
                            CommitOutcome::DigestConflict
                        });
                    }
                    if state != UploadState::Uploading {
                        return Ok(CommitOutcome::NotAccepting(state));
                    }
                    if chunk.index >= total {
                        return Err(StoreError::Conflict(format!(
                            "chunk {} is out of range (0..{total})",
                            chunk.index
                        )).into());
                    }
                    // The claim must still be ours (an expired lease nobody took is fine): if
                    // another writer took it over, its bytes may have replaced ours.
                    let holder: Option<String> = tx
                        .query_row(
                            "SELECT claim_id FROM claims WHERE upload_id = ?1 AND idx = ?2",
                            params![upload_id, chunk.index],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if holder.as_deref() != Some(claim_id.as_str()) {
                        return Ok(CommitOutcome::NotAccepting(UploadState::Uploading));
                    }
                    tx.execute(
                        "INSERT INTO chunks (upload_id, idx, size, sha256, etag, crc64nvme, sha256_chain) \
                         VALUES (?1, ?2, ?3, '', ?4, ?5, ?6)",
                        params![
                            upload_id,
                            chunk.index,
                            chunk.size,
                            empty_if_none(chunk.etag.as_deref()),
                            crc_to_sql(chunk.crc64nvme),
                            chunk.sha256_chain
                        ],
                    )?;
                    tx.execute(
                        "DELETE FROM claims WHERE upload_id = ?1 AND idx = ?2",
                        params![upload_id, chunk.index],
                    )?;
                    let count = received(tx, &upload_id)?;
                    let completed_set = count == total
                        && tx.execute(
                            "UPDATE uploads SET state = 'assembling', updated_at_ms = ?2, job_unsent = 1 \
                             WHERE upload_id = ?1 AND state = 'uploading' AND concat <> 'partial'",
                            params![upload_id, now_ms],
                        )? == 1;
                    Ok(CommitOutcome::Stored {
                        received: count,
                        completed_set,
                    })
                })
            })
            .await
    }

    /// One conditional update; an unknown upload is not applied (`false`), as in `transition`.
    async fn declare_checksums(
        &self,
        upload_id: &UploadId,
        sha256: Option<&str>,
        crc64nvme: Crc64,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let (upload_id, sha256) = (upload_id.to_string(), sha256.map(str::to_owned));
        self.db
            .call(move |c| {
                Ok(c.execute(
                    "UPDATE uploads SET crc64nvme = ?2, sha256 = COALESCE(sha256, ?3), \
                     updated_at_ms = ?4 \
                     WHERE upload_id = ?1 AND state = 'uploading' AND crc64nvme IS NULL",
                    params![upload_id, crc_to_sql(crc64nvme), sha256, now_ms],
                )? > 0)
            })
            .await
    }

    /// One transaction: the size, and the move to assembling when every chunk is recorded.
    async fn declare_size(
        &self,
        upload_id: &UploadId,
        size: u64,
        total_chunks: u32,
        now_ms: i64,
    ) -> StoreResult<SizeDeclared> {
        let upload_id = upload_id.to_string();
        self.db
            .call(move |c| {
                immediate(c, |tx| {
                    let row: Option<(String, u64, u32, bool)> = tx
                        .query_row(
                            "SELECT state, size, total_chunks, length_deferred FROM uploads \
                             WHERE upload_id = ?1",
                            params![upload_id],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                        )
                        .optional()?;
                    let Some((state, current, bound, deferred)) = row else {
                        return Ok(SizeDeclared::NotApplied);
                    };
                    if state != UploadState::Uploading.as_str() || total_chunks > bound {
                        return Ok(SizeDeclared::NotApplied);
                    }
                    if !deferred {
                        // A retry of the declaration that applied: nothing more to do.
                        return Ok(if current == size {
                            SizeDeclared::Applied {
                                completed_set: false,
                            }
                        } else {
                            SizeDeclared::NotApplied
                        });
                    }
                    tx.execute(
                        "UPDATE uploads SET size = ?2, total_chunks = ?3, length_deferred = 0, \
                         updated_at_ms = ?4 WHERE upload_id = ?1",
                        params![upload_id, size, total_chunks, now_ms],
                    )?;
                    let completed_set = received(tx, &upload_id)? == total_chunks
                        && tx.execute(
                            "UPDATE uploads SET state = 'assembling', updated_at_ms = ?2, job_unsent = 1 \
                             WHERE upload_id = ?1 AND state = 'uploading' AND concat <> 'partial'",
                            params![upload_id, now_ms],
                        )? == 1;
                    Ok(SizeDeclared::Applied { completed_set })
                })
            })
            .await
    }

    /// `error`, when given, replaces the stored reason; otherwise the reason is kept.
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
        let upload_id = upload_id.to_string();
        let error = error.map(str::to_owned);
        let from: Vec<&'static str> = from.iter().map(|s| s.as_str()).collect();
        self.db
            .call(move |c| {
                let sql = format!(
                    "UPDATE uploads SET state = ?1, error = COALESCE(?2, error), updated_at_ms = ?3, \
                     job_unsent = (?1 = 'assembling'), \
                     release_pending = (?1 IN ('cancelled', 'expired', 'failed')) \
                     WHERE upload_id = ?4 AND state IN ({})",
                    placeholders(from.len(), 5)
                );
                let mut args: Vec<rusqlite::types::Value> = vec![
                    to.as_str().to_owned().into(),
                    error.into(),
                    now_ms.into(),
                    upload_id.into(),
                ];
                args.extend(from.iter().map(|s| (*s).to_owned().into()));
                Ok(c.execute(&sql, params_from_iter(args))? > 0)
            })
            .await
    }

    async fn list_expired(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<UploadRecord>> {
        self.db
            .call(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE state = 'uploading' AND expires_at_ms < ?1 \
                     ORDER BY expires_at_ms LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![now_ms, limit], upload_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn list_stale_assembling(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<UploadRecord>> {
        self.db
            .call(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE state = 'assembling' AND job_unsent = 0 \
                     AND updated_at_ms < ?1 ORDER BY updated_at_ms LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![before_ms, limit], upload_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn list_unsent_jobs(&self, limit: u32) -> StoreResult<Vec<UploadRecord>> {
        self.db
            .call(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE job_unsent = 1 AND state = 'assembling' \
                     ORDER BY updated_at_ms LIMIT ?1"
                ))?;
                let rows = stmt.query_map([limit], upload_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn mark_job_sent(&self, upload_id: &UploadId) -> StoreResult<()> {
        let id = upload_id.to_string();
        self.db
            .call(move |c| {
                c.execute(
                    "UPDATE uploads SET job_unsent = 0 WHERE upload_id = ?1 AND job_unsent = 1",
                    [id],
                )?;
                Ok(())
            })
            .await
    }

    async fn list_pending_releases(&self, limit: u32) -> StoreResult<Vec<UploadRecord>> {
        self.db
            .call(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE release_pending = 1 \
                     ORDER BY updated_at_ms LIMIT ?1"
                ))?;
                let rows = stmt.query_map([limit], upload_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn mark_released(&self, upload_id: &UploadId) -> StoreResult<()> {
        let id = upload_id.to_string();
        self.db
            .call(move |c| {
                c.execute(
                    "UPDATE uploads SET release_pending = 0 WHERE upload_id = ?1 AND release_pending = 1",
                    [id],
                )?;
                Ok(())
            })
            .await
    }

    async fn delete_chunks(&self, upload_id: &UploadId) -> StoreResult<()> {
        let id = upload_id.to_string();
        self.db
            .call(move |c| {
                immediate(c, |tx| {
                    tx.execute("DELETE FROM chunks WHERE upload_id = ?1", [&id])?;
                    tx.execute("DELETE FROM claims WHERE upload_id = ?1", [&id])?;
                    Ok(())
                })
            })
            .await
    }

    /// Idempotent: the File already published for this upload is returned unchanged. An upload
    /// that completed but whose File was deleted since is a `Conflict` (it is not recreated).
    async fn publish_file(&self, file: &FileRecord, now_ms: i64) -> StoreResult<FileRecord> {
        let file = file.clone();
        self.db
            .call(move |c| {
                immediate(c, |tx| {
                    if let Some(existing) = file_by_upload(tx, &file.upload_id)? {
                        return Ok(existing);
                    }
                    let (state, _) = upload_state(tx, &file.upload_id)?;
                    if state != UploadState::Assembling {
                        return Err(StoreError::Conflict(format!(
                            "upload {} is {state}, not assembling",
                            file.upload_id
                        )).into());
                    }
                    tx.execute(
                        &format!("INSERT INTO files ({FILE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                        params![
                            file.file_id.as_str(),
                            file.owner_id.as_str(),
                            file.upload_id.as_str(),
                            file.name,
                            file.size,
                            file.content_type,
                            empty_if_none(file.sha256.as_deref()),
                            file.blob_key,
                            file.created_at_ms,
                            file.crc64nvme.map(crc_to_sql),
                            file.sha256_source.map(Sha256Source::as_str)
                        ],
                    )?;
                    tx.execute(
                        "UPDATE uploads SET state = 'completed', file_id = ?2, updated_at_ms = ?3 \
                         WHERE upload_id = ?1 AND state = 'assembling'",
                        params![file.upload_id.as_str(), file.file_id.as_str(), now_ms],
                    )?;
                    Ok(file)
                })
            })
            .await
    }

    async fn get_file(&self, file_id: &FileId) -> StoreResult<Option<FileRecord>> {
        let id = file_id.to_string();
        self.db
            .call(move |c| {
                Ok(c.query_row(
                    &format!("SELECT {FILE_COLUMNS} FROM files WHERE file_id = ?1"),
                    [id],
                    file_from_row,
                )
                .optional()?)
            })
            .await
    }

    /// Newest first. `limit` is clamped to 1..=1000; a malformed cursor is a `Conflict`.
    async fn list_files(
        &self,
        owner_id: &UserId,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<FilePage> {
        let owner = owner_id.to_string();
        let after = cursor.map(decode_cursor).transpose()?;
        let limit = limit.clamp(1, MAX_PAGE);
        self.db
            .call(move |c| {
                let bounded = after.is_some();
                let (after_ms, after_id) = after.unwrap_or((i64::MAX, String::new()));
                let mut stmt = c.prepare(&format!(
                    "SELECT {FILE_COLUMNS} FROM files WHERE owner_id = ?1 \
                     AND (?5 = 0 OR created_at_ms < ?2 OR (created_at_ms = ?2 AND file_id < ?3)) \
                     ORDER BY created_at_ms DESC, file_id DESC LIMIT ?4"
                ))?;
                let rows = stmt.query_map(
                    params![owner, after_ms, after_id, limit + 1, i64::from(bounded)],
                    file_from_row,
                )?;
                let mut items = rows.collect::<Result<Vec<_>, _>>()?;
                let next_cursor = if items.len() > limit as usize {
                    items.truncate(limit as usize);
                    items.last().map(encode_cursor)
                } else {
                    None
                };
                Ok(FilePage { items, next_cursor })
            })
            .await
    }

    async fn delete_file(&self, file_id: &FileId, _now_ms: i64) -> StoreResult<bool> {
        let id = file_id.to_string();
        self.db
            .call(move |c| {
                immediate(c, |tx| {
                    let upload: Option<String> = tx
                        .query_row(
                            "DELETE FROM files WHERE file_id = ?1 RETURNING upload_id",
                            [&id],
                            |r| r.get(0),
                        )
                        .optional()?;
                    let Some(upload) = upload else {
                        return Ok(false);
                    };
                    tx.execute(
                        "UPDATE uploads SET release_pending = 1 WHERE upload_id = ?1",
                        [upload],
                    )?;
                    Ok(true)
                })
            })
            .await
    }

    async fn check(&self) -> StoreResult<()> {
        self.db.check().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    // The store's answers to the port are the conformance suite's (tests/conformance.rs); what
    // follows is SQLite's own.
    use std::collections::HashSet;
    use std::sync::Arc;

    use storage::conformance::scenarios::last_chunks_at_once;

    use super::*;

    /// Twenty writers, each through its own connection to the same file, commit the last
    /// chunks at once (the conformance suite's run): as SQLite counts inside the commit's
    /// transaction, each commit sees a distinct count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_commits_each_see_a_distinct_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        let first = SqliteMetadataStore::open(&path).unwrap();
        for round in 0..3 {
            let stores = (0..20)
                .map(|_| Arc::new(SqliteMetadataStore::open(&path).unwrap()))
                .collect();
            let received = last_chunks_at_once(&first, stores, &format!("race-{round}")).await;
            let distinct: HashSet<u32> = received.iter().copied().collect();
            assert_eq!(distinct.len(), received.len(), "{received:?}");
        }
    }

    /// A file of schema version 1 (before the outbox) is upgraded in place: its rows stay, and
    /// an upload assembling then counts as sent, for the sweeper's stale check to find.
    #[tokio::test]
    async fn a_version_1_file_is_upgraded_with_its_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.execute_batch("PRAGMA user_version = 1").unwrap();
            c.execute(
                &format!(
                    "INSERT INTO uploads ({V1_UPLOAD_COLUMNS}) VALUES ('old', 'o', 'a.bin', 10, \
                     'application/octet-stream', NULL, 10, 1, 'assembling', '', NULL, NULL, 1, 1, 2)"
                ),
                [],
            )
            .unwrap();
        }
        let store = SqliteMetadataStore::open(&path).unwrap();
        assert!(store.list_unsent_jobs(10).await.unwrap().is_empty());
        let stale = store.list_stale_assembling(i64::MAX, 10).await.unwrap();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].upload_id, "old");
        drop(store);
        let c = rusqlite::Connection::open(&path).unwrap();
        let version: i32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i32);
    }

    /// A file of schema version 5 (before concatenation) is upgraded in place: its uploads are
    /// ordinary ones, and complete by their chunks as before. A stored `concat` of no known
    /// form is an error to read, not an ordinary upload.
    #[tokio::test]
    async fn a_version_5_file_is_upgraded_with_ordinary_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            for step in &MIGRATIONS[..5] {
                c.execute_batch(step).unwrap();
            }
            c.execute_batch("PRAGMA user_version = 5").unwrap();
            for id in ["old", "bad"] {
                c.execute(
                    &format!(
                        "INSERT INTO uploads ({V1_UPLOAD_COLUMNS}) VALUES (?1, 'o', 'a.bin', 10, \
                         'application/octet-stream', NULL, 10, 1, 'uploading', '', NULL, NULL, 1, 1, 2)"
                    ),
                    [id],
                )
                .unwrap();
            }
        }
        let store = SqliteMetadataStore::open(&path).unwrap();
        let old = UploadId::from("old");
        assert_eq!(
            store.get_upload(&old).await.unwrap().unwrap().concat,
            Concat::None
        );
        let claim = ClaimId::from("c");
        store
            .claim_chunk(&old, 0, &claim, Duration::from_secs(30), 3)
            .await
            .unwrap();
        let chunk = ChunkRecord {
            index: 0,
            size: 10,
            crc64nvme: 7,
            etag: None,
            sha256_chain: None,
        };
        assert_eq!(
            store.commit_chunk(&old, &chunk, &claim, 4).await.unwrap(),
            CommitOutcome::Stored {
                received: 1,
                completed_set: true
            }
        );
        drop(store);
        let c = rusqlite::Connection::open(&path).unwrap();
        let version: i32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 6);
        c.execute(
            "UPDATE uploads SET concat = 'final:' WHERE upload_id = 'bad'",
            [],
        )
        .unwrap();
        drop(c);
        let store = SqliteMetadataStore::open(&path).unwrap();
        assert!(store.get_upload(&UploadId::from("bad")).await.is_err());
    }

    /// The upload columns of schema versions 1 and 2.
    const V1_UPLOAD_COLUMNS: &str =
        "upload_id, owner_id, name, size, content_type, sha256, chunk_size, total_chunks, \
         state, storage_handle, error, file_id, created_at_ms, updated_at_ms, expires_at_ms";

    /// A file of schema version 2 (before CRC-64/NVME) is upgraded in place: a chunk recorded
    /// by its SHA-256 reads with CRC 0, its File's SHA-256 is the server's, and the upload
    /// still takes its declared checksums.
    #[tokio::test]
    async fn a_version_2_file_is_upgraded_with_its_chunks_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        let sha = "ab".repeat(32);
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.execute_batch(OUTBOX).unwrap();
            c.execute_batch("PRAGMA user_version = 2").unwrap();
            for (id, state) in [("old", "uploading"), ("done", "completed")] {
                c.execute(
                    &format!(
                        "INSERT INTO uploads ({V1_UPLOAD_COLUMNS}) VALUES (?1, 'o', 'a.bin', 20, \
                         'application/octet-stream', NULL, 10, 2, ?2, '', NULL, NULL, 1, 1, 2)"
                    ),
                    [id, state],
                )
                .unwrap();
            }
            c.execute(
                "INSERT INTO chunks (upload_id, idx, size, sha256, etag) VALUES ('old', 0, 10, ?1, '')",
                [&sha],
            )
            .unwrap();
            c.execute(
                "INSERT INTO files (file_id, owner_id, upload_id, name, size, content_type, sha256, \
                 blob_key, created_at_ms) VALUES ('f-done', 'o', 'done', 'a.bin', 20, \
                 'application/octet-stream', ?1, 'files/f-done', 5)",
                [&sha],
            )
            .unwrap();
        }
        let store = SqliteMetadataStore::open(&path).unwrap();
        let old = UploadId::from("old");
        assert_eq!(
            store.list_chunks(&old).await.unwrap(),
            vec![ChunkRecord {
                index: 0,
                size: 10,
                crc64nvme: 0,
                etag: None,
                sha256_chain: None
            }]
        );
        assert_eq!(
            store
                .claim_chunk(&old, 0, &ClaimId::from("c"), Duration::from_secs(30), 3)
                .await
                .unwrap(),
            ClaimOutcome::AlreadyStored { crc64nvme: 0 }
        );
        let file = store
            .get_file(&FileId::from("f-done"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (file.sha256.as_deref(), file.sha256_source, file.crc64nvme),
            (Some(sha.as_str()), Some(Sha256Source::Server), None)
        );
        assert_eq!(
            store.get_upload(&old).await.unwrap().unwrap().crc64nvme,
            None
        );
        assert!(store
            .declare_checksums(&old, None, u64::MAX, 4)
            .await
            .unwrap());
        assert_eq!(
            store.get_upload(&old).await.unwrap().unwrap().crc64nvme,
            Some(u64::MAX),
            "a CRC above i64::MAX round-trips"
        );
    }
}
