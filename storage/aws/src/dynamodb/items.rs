//! The item codecs: uploads, files and groups of 32 chunk records as DynamoDB items, and the
//! names of a chunk's lease and record attributes in its group.

use std::time::Duration;

use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use crate::sdk_error;
use lfusys_core::digest::{crc64_hex, parse_crc64_hex};
use lfusys_core::state::UploadState;
use storage::{ChunkRecord, Concat, FileId, FileRecord, Sha256Source, StoreResult, UploadRecord};

use super::attrs::{get_n, get_s, is_condition_failed, malformed, n, opt_n, opt_s, s};
use super::Item;

pub(super) fn upload_item(u: &UploadRecord) -> Item {
    let mut item: Item = [
        ("upload_id", s(&u.upload_id)),
        ("owner_id", s(&u.owner_id)),
        ("name", s(&u.name)),
        ("size", n(u.size)),
        ("content_type", s(&u.content_type)),
        ("chunk_size", n(u.chunk_size)),
        ("total_chunks", n(u.total_chunks)),
        ("state", s(u.state.as_str())),
        ("created_at_ms", n(u.created_at_ms)),
        ("updated_at_ms", n(u.updated_at_ms)),
        ("expires_at_ms", n(u.expires_at_ms)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if u.length_deferred {
        item.insert(LENGTH_DEFERRED.into(), AttributeValue::Bool(true));
    }
    if u.concat != Concat::None {
        item.insert(CONCAT.into(), s(u.concat.to_stored()));
    }
    if let Some(sha) = &u.sha256 {
        item.insert("sha256".into(), s(sha));
    }
    if let Some(crc) = u.crc64nvme {
        item.insert("crc64nvme".into(), n(crc));
    }
    if let Some(handle) = &u.storage_handle {
        item.insert("storage_handle".into(), s(handle));
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

/// Present (true) while an upload's length is deferred; removed when it is declared.
pub(super) const LENGTH_DEFERRED: &str = "length_deferred";

pub(super) fn is_length_deferred(item: &Item) -> bool {
    matches!(item.get(LENGTH_DEFERRED), Some(AttributeValue::Bool(true)))
}

/// How an upload takes part in a parallel upload, in `Concat::to_stored`'s form; absent for
/// an ordinary upload (and on items written before concatenation).
pub(super) const CONCAT: &str = "concat";

/// The stored form of a partial upload, which its chunks never move to assembling
/// (`mark_assembling`).
pub(super) fn partial_value() -> AttributeValue {
    s(Concat::Partial.to_stored())
}

fn concat_from(item: &Item) -> StoreResult<Concat> {
    match item.get(CONCAT) {
        None => Ok(Concat::None),
        Some(AttributeValue::S(stored)) => Concat::from_stored(stored),
        Some(_) => Err(malformed(CONCAT)),
    }
}

pub(super) fn upload_from(item: &Item) -> StoreResult<UploadRecord> {
    let state = get_s(item, "state")?;
    Ok(UploadRecord {
        upload_id: get_s(item, "upload_id")?.into(),
        owner_id: get_s(item, "owner_id")?.into(),
        name: get_s(item, "name")?,
        size: get_n(item, "size")?,
        content_type: get_s(item, "content_type")?,
        sha256: opt_s(item, "sha256"),
        crc64nvme: opt_n(item, "crc64nvme"),
        chunk_size: get_n(item, "chunk_size")?,
        total_chunks: get_n(item, "total_chunks")?,
        length_deferred: is_length_deferred(item),
        concat: concat_from(item)?,
        state: UploadState::parse(&state).ok_or_else(|| malformed("state"))?,
        // Items written before handles were optional hold "" for none.
        storage_handle: opt_s(item, "storage_handle").filter(|h| !h.is_empty()),
        error: opt_s(item, "error"),
        file_id: opt_s(item, "file_id").map(FileId::from),
        created_at_ms: get_n(item, "created_at_ms")?,
        updated_at_ms: get_n(item, "updated_at_ms")?,
        expires_at_ms: get_n(item, "expires_at_ms")?,
    })
}

pub(super) fn file_item(f: &FileRecord) -> Item {
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
    if let Some(sha) = &f.sha256 {
        item.insert("sha256".into(), s(sha));
    }
    if let Some(source) = f.sha256_source {
        item.insert("sha256_source".into(), s(source.as_str()));
    }
    if let Some(crc) = f.crc64nvme {
        item.insert("crc64nvme".into(), n(crc));
    }
    item
}

pub(super) fn file_from(item: &Item) -> StoreResult<FileRecord> {
    let sha256 = opt_s(item, "sha256").filter(|h| !h.is_empty());
    let sha256_source = match opt_s(item, "sha256_source") {
        Some(v) => Some(Sha256Source::parse(&v).ok_or_else(|| malformed("sha256_source"))?),
        // Files published before sources were kept: the assembler had hashed the blob.
        None => sha256.as_ref().map(|_| Sha256Source::Server),
    };
    Ok(FileRecord {
        file_id: get_s(item, "file_id")?.into(),
        owner_id: get_s(item, "owner_id")?.into(),
        upload_id: get_s(item, "upload_id")?.into(),
        name: get_s(item, "name")?,
        size: get_n(item, "size")?,
        content_type: get_s(item, "content_type")?,
        sha256,
        sha256_source,
        crc64nvme: opt_n(item, "crc64nvme"),
        blob_key: get_s(item, "blob_key")?,
        created_at_ms: get_n(item, "created_at_ms")?,
    })
}

/// Sorts like (created_at_ms, file_id): the time zero-padded to 20 digits.
pub(super) fn created_key(created_at_ms: i64, file_id: &str) -> String {
    format!("{:020}#{file_id}", created_at_ms.max(0))
}

/// Chunks per chunk-table item (a *group*): an upload of 10,000 chunks is 313 items of at most
/// ~3.5 KB.
pub const CHUNKS_PER_ITEM: u32 = 32;

/// The group (chunk-table item) of chunk `index`.
pub(super) fn group_of(index: u32) -> u32 {
    index / CHUNKS_PER_ITEM
}

/// How many chunks group `group` of an upload of `total` chunks has.
pub(super) fn group_len(group: u32, total: u32) -> u32 {
    total
        .saturating_sub(group.saturating_mul(CHUNKS_PER_ITEM))
        .min(CHUNKS_PER_ITEM)
}

/// How many groups an upload of `total` chunks has.
pub(super) fn groups(total: u32) -> u32 {
    total.div_ceil(CHUNKS_PER_ITEM)
}

/// Attribute of chunk `index`'s record: `"{crc64nvme} {size} {etag}"`, the CRC in 16 hex digits.
pub(super) fn record_attr(index: u32) -> String {
    format!("r{index}")
}

/// Attribute of the file's SHA-256 chain after chunk `index` (binary), when the chunk was
/// recorded with one (`ChunkRecord::sha256_chain`).
pub(super) fn chain_attr(index: u32) -> String {
    format!("h{index}")
}

/// Attribute of the id of the lease on chunk `index`.
pub(super) fn claim_attr(index: u32) -> String {
    format!("c{index}")
}

/// Attribute of the end (ms) of the lease on chunk `index`.
pub(super) fn until_attr(index: u32) -> String {
    format!("u{index}")
}

pub(super) fn record_value(chunk: &ChunkRecord) -> AttributeValue {
    let crc = crc64_hex(chunk.crc64nvme);
    match &chunk.etag {
        Some(etag) => s(format!("{crc} {} {etag}", chunk.size)),
        None => s(format!("{crc} {}", chunk.size)),
    }
}

/// Length of the hex SHA-256 that records written before CRCs were kept begin with.
const LEGACY_SHA256_HEX_LEN: usize = 64;

pub(super) fn record_from(index: u32, v: &AttributeValue) -> StoreResult<ChunkRecord> {
    let bad = || malformed(&record_attr(index));
    let AttributeValue::S(text) = v else {
        return Err(bad());
    };
    let mut parts = text.splitn(3, ' ');
    let checksum = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
    // A legacy record (its chunk's SHA-256) reads as CRC 0: no body's CRC matches it in
    // practice, so its upload cannot be verified and fails at assembly.
    let crc64nvme = if checksum.len() == LEGACY_SHA256_HEX_LEN {
        0
    } else {
        parse_crc64_hex(checksum).map_err(|_| bad())?
    };
    let size = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    Ok(ChunkRecord {
        index,
        size,
        crc64nvme,
        // Records written before receipts were optional end in a space for none.
        etag: parts.next().filter(|e| !e.is_empty()).map(str::to_owned),
        sha256_chain: None,
    })
}

/// Chunk `index`'s record `v` in `item`, with the chain the item keeps beside it.
fn record_with_chain(item: &Item, index: u32, v: &AttributeValue) -> StoreResult<ChunkRecord> {
    let mut record = record_from(index, v)?;
    let attr = chain_attr(index);
    record.sha256_chain = match item.get(&attr) {
        None => None,
        Some(AttributeValue::B(bytes)) => Some(bytes.clone().into_inner()),
        Some(_) => return Err(malformed(&attr)),
    };
    Ok(record)
}

/// Chunk `index`'s record in its group's item, if it is recorded.
pub(super) fn record_in(item: &Item, index: u32) -> StoreResult<Option<ChunkRecord>> {
    item.get(&record_attr(index))
        .map(|v| record_with_chain(item, index, v))
        .transpose()
}

/// Every record in a group's item.
pub(super) fn records_in(item: &Item) -> StoreResult<Vec<ChunkRecord>> {
    item.iter()
        .filter_map(|(k, v)| {
            let digits = k.strip_prefix('r')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(
                digits
                    .parse()
                    .ok()
                    .map(|index| record_with_chain(item, index, v)),
            )
        })
        .map(|r| r.unwrap_or_else(|| Err(malformed("r…"))))
        .collect()
}

/// How a conditional update ended: the attributes it asked for, or, when its condition did not
/// hold, the item as it was (empty when there was none).
pub(super) type Conditional = Result<Item, Item>;

/// Sends a conditional update that returns the old item when its condition fails.
pub(super) async fn conditional(
    req: UpdateItemFluentBuilder,
    what: &str,
) -> StoreResult<Conditional> {
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
            Err(sdk_error(what, e))
        }
    }
}

/// The few upload attributes the chunk operations decide on.
pub(super) struct UploadHead {
    pub(super) state: UploadState,
    pub(super) total: u32,
}

pub(super) fn head_from(item: &Item) -> StoreResult<UploadHead> {
    let state = get_s(item, "state")?;
    Ok(UploadHead {
        state: UploadState::parse(&state).ok_or_else(|| malformed("state"))?,
        total: get_n(item, "total_chunks")?,
    })
}

/// What promoting a complete group said about its upload.
pub(super) enum Promotion {
    /// The group is counted (now or before); `all` when every group is.
    Counted { all: bool, total: u32 },
    /// The upload no longer takes chunks.
    Closed(UploadState),
}

pub(super) fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use storage::{decode_cursor, encode_cursor};

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
            crc64nvme: 0xfedc_ba98_7654_3210,
            etag: Some("\"0a1b\"".into()),
            sha256_chain: None,
        };
        assert_eq!(
            record_value(&chunk),
            s("fedcba9876543210 1024 \"0a1b\""),
            "the CRC in 16 hex digits"
        );
        assert_eq!(
            record_from(7, &record_value(&chunk)).ok(),
            Some(chunk.clone())
        );
        let no_etag = ChunkRecord {
            etag: None,
            ..chunk.clone()
        };
        assert_eq!(
            record_from(7, &s("fedcba9876543210 1024 ")).ok(),
            Some(no_etag.clone()),
            "an old record's empty receipt"
        );
        assert_eq!(
            record_from(7, &s(format!("{} 1024 ", "ab".repeat(32)))).ok(),
            Some(ChunkRecord {
                crc64nvme: 0,
                ..no_etag.clone()
            }),
            "a record of a chunk's SHA-256 (before CRCs were kept) reads as CRC 0"
        );
        assert_eq!(
            record_from(7, &record_value(&no_etag)).ok(),
            Some(no_etag.clone())
        );
        assert!(record_from(7, &s("nonsense")).is_err());
        assert!(record_from(7, &s("nonsense 1024")).is_err());
        let item: Item = HashMap::from([
            ("r7".to_owned(), record_value(&no_etag)),
            ("c8".to_owned(), s("claim")),
            ("idx".to_owned(), n(0)),
            ("n".to_owned(), n(1)),
        ]);
        assert_eq!(records_in(&item).ok(), Some(vec![no_etag.clone()]));
        // The chain beside a record is part of it; a chain of another type is refused.
        let chained = ChunkRecord {
            sha256_chain: Some(vec![1, 2, 3]),
            ..no_etag.clone()
        };
        let mut item = item;
        item.insert(
            "h7".to_owned(),
            AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![1, 2, 3])),
        );
        assert_eq!(records_in(&item).ok(), Some(vec![chained.clone()]));
        assert_eq!(record_in(&item, 7).ok(), Some(Some(chained)));
        item.insert("h7".to_owned(), s("not bytes"));
        assert!(record_in(&item, 7).is_err());
    }

    /// A File's checksums round-trip (the CRC as a number, above `i64::MAX` too); a File
    /// published before sources were kept has the server's SHA-256.
    #[test]
    fn files_keep_their_checksums() {
        let f = FileRecord {
            file_id: "f".into(),
            owner_id: "o".into(),
            upload_id: "u".into(),
            name: "n".into(),
            size: 1,
            content_type: "c".into(),
            sha256: Some("ab".repeat(32)),
            sha256_source: Some(Sha256Source::Client),
            crc64nvme: Some(u64::MAX),
            blob_key: "files/f".into(),
            created_at_ms: 42,
        };
        let mut item = file_item(&f);
        assert_eq!(item.get("crc64nvme"), Some(&n(u64::MAX)));
        assert_eq!(file_from(&item).ok(), Some(f.clone()));
        item.remove("sha256_source");
        item.remove("crc64nvme");
        let legacy = file_from(&item)
            .ok()
            .map(|l| (l.sha256_source, l.crc64nvme));
        assert_eq!(legacy, Some((Some(Sha256Source::Server), None)));
        item.remove("sha256");
        assert_eq!(file_from(&item).ok().map(|l| l.sha256_source), Some(None));
        item.insert("sha256_source".into(), s("nobody"));
        assert!(file_from(&item).is_err());
    }

    /// An upload's concatenation is a string attribute, absent for an ordinary upload; an
    /// attribute of no known form, or of another type, is refused.
    #[test]
    fn uploads_keep_their_concatenation() {
        let plain = storage::conformance::fixtures::upload("u", "o", 2, 42);
        let item = upload_item(&plain);
        assert!(!item.contains_key(CONCAT), "none writes nothing");
        assert_eq!(upload_from(&item).ok(), Some(plain.clone()));
        for (concat, stored) in [
            (Concat::Partial, "partial"),
            (
                Concat::Final(vec!["a".into(), "b".into(), "c".into()]),
                "final:a b c",
            ),
        ] {
            let u = UploadRecord {
                concat,
                ..plain.clone()
            };
            let item = upload_item(&u);
            assert_eq!(item.get(CONCAT), Some(&s(stored)));
            assert_eq!(upload_from(&item).ok(), Some(u));
        }
        assert_eq!(partial_value(), s("partial"));
        let mut item = upload_item(&plain);
        item.insert(CONCAT.into(), s("whole"));
        assert!(upload_from(&item).is_err());
        item.insert(CONCAT.into(), n(1));
        assert!(upload_from(&item).is_err());
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
            sha256: None,
            sha256_source: None,
            crc64nvme: None,
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
