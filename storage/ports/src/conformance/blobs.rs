//! Conformance cases of [`BlobStore`]: chunks streamed to their place in any order, each
//! answered with the CRC-64/NVME of what was written; assembly, verified against the whole
//! file's CRC-64/NVME without reading it back (chunks at the wrong place, or the wrong whole
//! CRC, commit nothing); whole and ranged reads, deletes and aborts.
//!
//! The chunks are sized for S3 (every part but the last at least 5 MiB), and each chunk's
//! target names both its index (S3's part) and its offset (local disk's place); uploads are
//! committed to their File's key, where S3 keeps their parts from the start.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use lfusys_core::digest::{crc64nvme, crc64nvme_of_pieces};
use lfusys_core::ids;
use lfusys_core::range::ByteRange;
use sha2::{Digest, Sha256};

use super::fixtures::{body, part, pattern, target};
use crate::{staged_prefix, BlobStore, ByteStream, PartRef, StagedPiece, StoreError, UploadId};

/// Opens blob stores of one backend for the cases.
pub trait BlobHarness: Sync {
    type Store: BlobStore;
    /// Where a store keeps its blobs (a directory, a bucket); the case drops it at its end.
    type Place: Send + Sync;
    /// Fresh, empty storage that nothing else uses.
    fn place(&self) -> impl Future<Output = Self::Place> + Send;
    /// A store on `place`.
    fn open(&self, place: &Self::Place) -> impl Future<Output = Self::Store> + Send;
    /// The largest frame `read_blob` yields, when the store bounds it (local disk reads in
    /// blocks of 1 MiB); every read of the cases checks it.
    fn max_read_frame(&self) -> Option<usize> {
        None
    }
}

const MIB: usize = 1024 * 1024;
/// The chunk size: S3's smallest part and then some, no multiple of any buffer.
const CHUNK: usize = 5 * MIB + 4321;
/// The last chunk of an upload: shorter, yet several times local disk's 256 KiB write buffer.
const TAIL: usize = 612_345;

/// A store on fresh storage, and that storage.
async fn fresh<H: BlobHarness>(h: &H) -> (H::Place, H::Store) {
    let place = h.place().await;
    let store = h.open(&place).await;
    (place, store)
}

/// The key an upload commits to: its File's.
fn key_for(upload_id: &str) -> String {
    ids::blob_key_for_file(&ids::file_id_for_upload(upload_id))
}

/// The whole file's CRC-64/NVME from its parts', in index order.
fn whole_of(parts: &[PartRef]) -> u64 {
    let mut sorted: Vec<&PartRef> = parts.iter().collect();
    sorted.sort_by_key(|p| p.index);
    crc64nvme_of_pieces(sorted.iter().map(|p| (p.crc64nvme, p.size)))
}

async fn read_all<H: BlobHarness>(
    h: &H,
    s: &H::Store,
    key: &str,
    range: Option<ByteRange>,
) -> Vec<u8> {
    let mut stream = s.read_blob(key, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        let b = b.unwrap();
        if let Some(max) = h.max_read_frame() {
            assert!(b.len() <= max, "a frame of {} bytes", b.len());
        }
        out.extend_from_slice(&b);
    }
    out
}

/// Chunks written concurrently and out of order, each in frames of another size (one byte, and
/// smaller and larger than local disk's write buffer), half of them without a declared CRC (S3:
/// the SDK sends the one it computes), each answered with the CRC-64/NVME of its bytes, assemble
/// to the file; the whole and a range across two chunks read back; a redelivered job completes
/// again.
pub async fn chunks_in_any_order_assemble_to_the_file<H: BlobHarness>(h: &H) {
    let (_place, s) = fresh(h).await;
    let s = Arc::new(s);
    let total = CHUNK * 3 + TAIL;
    let data = pattern(total, 7);
    let id = ids::new_upload_id();
    let key = key_for(&id);
    let handle = s
        .begin_upload(&UploadId::from(&id), total as u64)
        .await
        .unwrap();
    let plan: Vec<(u32, usize, usize)> = (0..4)
        .map(|i| (i, i as usize * CHUNK, CHUNK.min(total - i as usize * CHUNK)))
        .collect();
    // Out of order and concurrently, with frames of different sizes.
    let mut tasks = Vec::new();
    for &(i, off, len) in &[plan[2], plan[0], plan[3], plan[1]] {
        let (s, id, handle) = (Arc::clone(&s), id.clone(), handle.clone());
        let slice = data[off..off + len].to_vec();
        tasks.push(tokio::spawn(async move {
            let frame = [3 * 256 * 1024, 8192, 100_000, 1][i as usize];
            let mut t = target(&id, handle.as_deref(), i, off as u64, &slice);
            if i % 2 == 1 {
                t.crc64nvme = None;
            }
            let written = s.write_chunk(&t, body(&slice, frame)).await.unwrap();
            assert_eq!(written.crc64nvme, crc64nvme(&slice), "chunk {i}");
            part(i, &slice, written)
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await.unwrap());
    }
    parts.sort_by_key(|p| p.index);
    let whole = whole_of(&parts);
    assert_eq!(whole, crc64nvme(&data));
    s.complete_upload(&UploadId::from(&id), handle.as_deref(), &parts, &key, whole)
        .await
        .unwrap();
    assert_eq!(s.blob_size(&key).await.unwrap(), total as u64);
    let back = read_all(h, &s, &key, None).await;
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
    let r = ByteRange {
        start: CHUNK as u64 - 10,
        end: CHUNK as u64 + 10,
    };
    assert_eq!(
        read_all(h, &s, &key, Some(r)).await,
        &data[r.start as usize..=r.end as usize]
    );
    // Idempotent: a redelivered job completes again; the blob stays.
    s.complete_upload(&UploadId::from(&id), handle.as_deref(), &parts, &key, whole)
        .await
        .unwrap();
    assert_eq!(s.blob_size(&key).await.unwrap(), total as u64);
}

/// A chunk written again (a retry) replaces its bytes, and what the store keeps of the chunk's
/// checksum with them; a repeated begin keeps what was written; completing without recorded
/// parts takes the chunks written, verified against the whole file's CRC.
pub async fn rewriting_a_chunk_replaces_its_bytes<H: BlobHarness>(h: &H) {
    let (_place, s) = fresh(h).await;
    let id = ids::new_upload_id();
    let key = key_for(&id);
    let size = (CHUNK + 5) as u64;
    let handle = s.begin_upload(&UploadId::from(&id), size).await.unwrap();
    let (old, new) = (pattern(CHUNK, 1), pattern(CHUNK, 2));
    s.write_chunk(
        &target(&id, handle.as_deref(), 0, 0, &old),
        body(&old, 65_536),
    )
    .await
    .unwrap();
    s.write_chunk(
        &target(&id, handle.as_deref(), 1, CHUNK as u64, b"world"),
        body(b"world", 5),
    )
    .await
    .unwrap();
    let written = s
        .write_chunk(
            &target(&id, handle.as_deref(), 0, 0, &new),
            body(&new, 1000),
        )
        .await
        .unwrap();
    assert_eq!(written.crc64nvme, crc64nvme(&new));
    // A repeated begin keeps what was written.
    s.begin_upload(&UploadId::from(&id), size).await.unwrap();
    let mut expected = new;
    expected.extend_from_slice(b"world");
    // The first bytes of chunk 0 are gone: they make another file.
    let mut replaced = old;
    replaced.extend_from_slice(b"world");
    let refused = s
        .complete_upload(
            &UploadId::from(&id),
            handle.as_deref(),
            &[],
            &key,
            crc64nvme(&replaced),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::ChecksumMismatch(_))),
        "{refused:?}"
    );
    s.complete_upload(
        &UploadId::from(&id),
        handle.as_deref(),
        &[],
        &key,
        crc64nvme(&expected),
    )
    .await
    .unwrap();
    let back = read_all(h, &s, &key, None).await;
    assert_eq!(back.len(), expected.len());
    assert_eq!(Sha256::digest(&back), Sha256::digest(&expected));
}

/// A body longer or shorter than its chunk, or one whose stream fails, is refused with what
/// went wrong; the chunk's true body then goes through.
pub async fn wrong_lengths_and_body_errors_are_refused<H: BlobHarness>(h: &H) {
    let (_place, s) = fresh(h).await;
    let id = ids::new_upload_id();
    let key = key_for(&id);
    let handle = s.begin_upload(&UploadId::from(&id), 10).await.unwrap();
    let good = [1u8; 10];
    let t = target(&id, handle.as_deref(), 0, 0, &good);
    let long = s.write_chunk(&t, body(&[1; 11], 4)).await;
    assert!(
        matches!(
            long,
            Err(StoreError::LengthMismatch {
                expected: 10,
                actual: 11
            })
        ),
        "{long:?}"
    );
    let short = s.write_chunk(&t, body(&[1; 9], 4)).await;
    assert!(
        matches!(
            short,
            Err(StoreError::LengthMismatch {
                expected: 10,
                actual: 9
            })
        ),
        "{short:?}"
    );
    let failing: ByteStream = Box::pin(futures::stream::iter(vec![
        Ok(Bytes::from_static(b"abc")),
        Err(std::io::Error::other("connection reset")),
    ]));
    let failed = s.write_chunk(&t, failing).await;
    assert!(matches!(failed, Err(StoreError::Body { .. })), "{failed:?}");
    let written = s.write_chunk(&t, body(&good, 4)).await.unwrap();
    assert_eq!(written.crc64nvme, crc64nvme(&good));
    s.complete_upload(
        &UploadId::from(&id),
        handle.as_deref(),
        &[part(0, &good, written)],
        &key,
        crc64nvme(&good),
    )
    .await
    .unwrap();
    assert_eq!(read_all(h, &s, &key, None).await, good);
}

/// Two chunks of one length, each written at the other's place (index and offset swapped, as a
/// store or assembly bug would), then completed with the parts in index order and the right
/// whole CRC: the store refuses (`ChecksumMismatch`) without reading the file back, commits
/// nothing, refuses a redelivered job alike, and the upload is still aborted cleanly.
pub async fn chunks_at_each_others_place_do_not_commit<H: BlobHarness>(h: &H) {
    let (_place, s) = fresh(h).await;
    let id = ids::new_upload_id();
    let key = key_for(&id);
    let (a, b) = (pattern(CHUNK, 11), pattern(CHUNK, 12));
    let handle = s
        .begin_upload(&UploadId::from(&id), 2 * CHUNK as u64)
        .await
        .unwrap();
    // a (chunk 0) goes to chunk 1's place, b (chunk 1) to chunk 0's.
    let a_written = s
        .write_chunk(
            &target(&id, handle.as_deref(), 1, CHUNK as u64, &a),
            body(&a, 65_536),
        )
        .await
        .unwrap();
    let b_written = s
        .write_chunk(&target(&id, handle.as_deref(), 0, 0, &b), body(&b, 65_536))
        .await
        .unwrap();
    assert_eq!(a_written.crc64nvme, crc64nvme(&a));
    assert_eq!(b_written.crc64nvme, crc64nvme(&b));
    let parts = [part(0, &a, a_written), part(1, &b, b_written)];
    let whole = whole_of(&parts);
    assert_eq!(whole, crc64nvme(&[a.as_slice(), b.as_slice()].concat()));
    for attempt in ["the job", "a redelivered job"] {
        let refused = s
            .complete_upload(&UploadId::from(&id), handle.as_deref(), &parts, &key, whole)
            .await;
        assert!(
            matches!(refused, Err(StoreError::ChecksumMismatch(_))),
            "{attempt}: {refused:?}"
        );
        assert!(
            matches!(s.blob_size(&key).await, Err(StoreError::NotFound(_))),
            "{attempt}: nothing is committed"
        );
        assert!(s.read_blob(&key, None).await.is_err(), "{attempt}");
    }
    s.abort_upload(&UploadId::from(&id), handle.as_deref())
        .await
        .unwrap();
    let small = pattern(10, 1);
    let after = s
        .write_chunk(
            &target(&id, handle.as_deref(), 0, 0, &small),
            body(&small, 5),
        )
        .await;
    assert!(matches!(after, Err(StoreError::NotFound(_))), "{after:?}");
    assert!(matches!(
        s.blob_size(&key).await,
        Err(StoreError::NotFound(_))
    ));
}

/// A commit with a wrong whole-file CRC is refused (`ChecksumMismatch`) and commits nothing;
/// the upload stays intact, and the commit with the right CRC then succeeds.
pub async fn a_wrong_whole_crc_commits_nothing<H: BlobHarness>(h: &H) {
    let (_place, s) = fresh(h).await;
    let id = ids::new_upload_id();
    let key = key_for(&id);
    let data = pattern(CHUNK + TAIL, 13);
    let (first, tail) = data.split_at(CHUNK);
    let handle = s
        .begin_upload(&UploadId::from(&id), data.len() as u64)
        .await
        .unwrap();
    let mut parts = Vec::new();
    for (i, offset, chunk) in [(0u32, 0usize, first), (1, CHUNK, tail)] {
        let written = s
            .write_chunk(
                &target(&id, handle.as_deref(), i, offset as u64, chunk),
                body(chunk, 100_000),
            )
            .await
            .unwrap();
        parts.push(part(i, chunk, written));
    }
    let whole = whole_of(&parts);
    assert_eq!(whole, crc64nvme(&data));
    // Off by a bit, and the CRC of another file (the tail alone).
    for wrong in [whole ^ 1, crc64nvme(tail)] {
        let refused = s
            .complete_upload(&UploadId::from(&id), handle.as_deref(), &parts, &key, wrong)
            .await;
        assert!(
            matches!(refused, Err(StoreError::ChecksumMismatch(_))),
            "{refused:?}"
        );
        assert!(
            matches!(s.blob_size(&key).await, Err(StoreError::NotFound(_))),
            "nothing is committed"
        );
    }
    s.complete_upload(&UploadId::from(&id), handle.as_deref(), &parts, &key, whole)
        .await
        .unwrap();
    assert_eq!(s.blob_size(&key).await.unwrap(), data.len() as u64);
    let back = read_all(h, &s, &key, None).await;
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
}

pub async fn ranges_reads_and_deletes<H: BlobHarness>(h: &H) {
    let (_place, s) = fresh(h).await;
    let data = pattern(200_000, 3);
    let id = ids::new_upload_id();
    let key = key_for(&id);
    let handle = s
        .begin_upload(&UploadId::from(&id), data.len() as u64)
        .await
        .unwrap();
    s.write_chunk(
        &target(&id, handle.as_deref(), 0, 0, &data),
        body(&data, 65_536),
    )
    .await
    .unwrap();
    s.complete_upload(
        &UploadId::from(&id),
        handle.as_deref(),
        &[],
        &key,
        crc64nvme(&data),
    )
    .await
    .unwrap();
    let r = ByteRange {
        start: 70_000,
        end: 140_000,
    };
    assert_eq!(
        read_all(h, &s, &key, Some(r)).await,
        &data[70_000..=140_000]
    );
    let last = ByteRange {
        start: 199_999,
        end: 199_999,
    };
    assert_eq!(read_all(h, &s, &key, Some(last)).await, &data[199_999..]);
    assert!(s
        .read_blob(
            &key,
            Some(ByteRange {
                start: 5,
                end: 200_000
            })
        )
        .await
        .is_err());
    s.delete_blob(&key).await.unwrap();
    s.delete_blob(&key).await.unwrap();
    assert!(matches!(
        s.blob_size(&key).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.read_blob(&key, None).await,
        Err(StoreError::NotFound(_))
    ));
}

/// Abort releases an unfinished upload's storage, and again (idempotent): the upload then takes
/// no chunk and does not complete.
pub async fn abort_releases_storage<H: BlobHarness>(h: &H) {
    let (_place, s) = fresh(h).await;
    s.check().await.unwrap();
    let id = ids::new_upload_id();
    let key = key_for(&id);
    let data = pattern(10, 5);
    let handle = s.begin_upload(&UploadId::from(&id), 10).await.unwrap();
    let written = s
        .write_chunk(&target(&id, handle.as_deref(), 0, 0, &data), body(&data, 3))
        .await
        .unwrap();
    s.abort_upload(&UploadId::from(&id), handle.as_deref())
        .await
        .unwrap();
    s.abort_upload(&UploadId::from(&id), handle.as_deref())
        .await
        .unwrap();
    let after = s
        .write_chunk(&target(&id, handle.as_deref(), 0, 0, &data), body(&data, 3))
        .await;
    assert!(matches!(after, Err(StoreError::NotFound(_))), "{after:?}");
    let completed = s
        .complete_upload(
            &UploadId::from(&id),
            handle.as_deref(),
            &[part(0, &data, written)],
            &key,
            crc64nvme(&data),
        )
        .await;
    assert!(
        matches!(completed, Err(StoreError::NotFound(_))),
        "{completed:?}"
    );
    assert!(matches!(
        s.blob_size(&key).await,
        Err(StoreError::NotFound(_))
    ));
    s.check().await.unwrap();
}

/// What `begin_upload` prepared is released by an abort that does not know its handle: a
/// crash between preparing an upload's storage and recording the handle leaves only the
/// upload's id to release it by.
pub async fn an_abort_without_the_handle_releases_what_was_begun<H: BlobHarness>(h: &H) {
    let (_place, s) = fresh(h).await;
    let id = ids::new_upload_id();
    let data = pattern(10, 7);
    let handle = s.begin_upload(&UploadId::from(&id), 10).await.unwrap();
    s.write_chunk(&target(&id, handle.as_deref(), 0, 0, &data), body(&data, 3))
        .await
        .unwrap();
    s.abort_upload(&UploadId::from(&id), None).await.unwrap();
    let after = s
        .write_chunk(&target(&id, handle.as_deref(), 0, 0, &data), body(&data, 3))
        .await;
    assert!(matches!(after, Err(StoreError::NotFound(_))), "{after:?}");
    // Nothing begun: nothing to release, and no error.
    s.abort_upload(&UploadId::from(&ids::new_upload_id()), None)
        .await
        .unwrap();
}

async fn read_piece<S: BlobStore>(s: &S, id: &UploadId, index: u32, piece: StagedPiece) -> Vec<u8> {
    let mut stream = s.read_staged(id, index, piece).await.unwrap();
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        out.extend_from_slice(&b.unwrap());
    }
    out
}

/// Pieces of a chunk staged by separate requests are listed by start with their lengths,
/// read back byte for byte, and the chunk written whole from them commits; a piece whose
/// body fails or is short is not listed; another chunk's pieces are apart; discarding one
/// chunk's pieces leaves the others', and an abort removes them all.
pub async fn staged_pieces_wait_apart_until_their_chunk_is_whole<H: BlobHarness>(h: &H) {
    let (_place, s) = fresh(h).await;
    let id = ids::new_upload_id();
    let upload = UploadId::from(&id);
    let data = pattern(CHUNK + TAIL, 11);
    let handle = s.begin_upload(&upload, data.len() as u64).await.unwrap();
    assert!(s.staged_pieces(&upload, 0).await.unwrap().is_empty());

    let (first, second) = data[..CHUNK].split_at(1_234_567);
    s.stage_piece(&upload, 0, 0, first.len() as u64, body(first, 100_000))
        .await
        .unwrap();
    // A body that breaks off, and one shorter than it said: neither is a piece.
    let broken: ByteStream = Box::pin(futures::stream::iter(vec![
        Ok(Bytes::copy_from_slice(&second[..1000])),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "gone",
        )),
    ]));
    let start = first.len() as u64;
    assert!(s
        .stage_piece(&upload, 0, start, second.len() as u64, broken)
        .await
        .is_err());
    assert!(matches!(
        s.stage_piece(
            &upload,
            0,
            start,
            second.len() as u64 + 1,
            body(second, 65_536)
        )
        .await,
        Err(StoreError::LengthMismatch { .. })
    ));
    let pieces = s.staged_pieces(&upload, 0).await.unwrap();
    assert_eq!(
        pieces,
        vec![StagedPiece {
            start: 0,
            len: start
        }]
    );
    s.stage_piece(&upload, 0, start, 500, body(&second[..500], 7))
        .await
        .unwrap();
    // Another chunk's piece stays apart.
    s.stage_piece(&upload, 1, 0, 10, body(&data[CHUNK..CHUNK + 10], 3))
        .await
        .unwrap();
    let pieces = s.staged_pieces(&upload, 0).await.unwrap();
    assert_eq!(pieces.len(), 2, "{pieces:?}");
    assert_eq!(staged_prefix(&pieces), start + 500);
    assert_eq!(read_piece(&s, &upload, 0, pieces[0]).await, first);
    assert_eq!(read_piece(&s, &upload, 0, pieces[1]).await, &second[..500]);

    // The chunk, whole from its pieces and the rest, goes to its place and commits.
    let mut chunk = Vec::new();
    for p in &pieces {
        chunk.extend(read_piece(&s, &upload, 0, *p).await);
    }
    chunk.extend_from_slice(&second[500..]);
    assert_eq!(chunk, &data[..CHUNK]);
    let w0 = s
        .write_chunk(
            &target(&id, handle.as_deref(), 0, 0, &chunk),
            body(&chunk, 1 << 20),
        )
        .await
        .unwrap();
    s.discard_staged(&upload, 0).await.unwrap();
    s.discard_staged(&upload, 0).await.unwrap();
    assert!(s.staged_pieces(&upload, 0).await.unwrap().is_empty());
    assert_eq!(s.staged_pieces(&upload, 1).await.unwrap().len(), 1);
    let tail = &data[CHUNK..];
    let w1 = s
        .write_chunk(
            &target(&id, handle.as_deref(), 1, CHUNK as u64, tail),
            body(tail, 4096),
        )
        .await
        .unwrap();
    let parts = [part(0, &chunk, w0), part(1, tail, w1)];
    let key = key_for(&id);
    s.complete_upload(&upload, handle.as_deref(), &parts, &key, whole_of(&parts))
        .await
        .unwrap();
    assert_eq!(
        Sha256::digest(read_all(h, &s, &key, None).await).as_slice(),
        Sha256::digest(&data).as_slice()
    );

    // An abort releases the pieces left.
    let other = UploadId::from(&ids::new_upload_id());
    let handle = s.begin_upload(&other, 100).await.unwrap();
    s.stage_piece(&other, 0, 0, 10, body(&data[..10], 4))
        .await
        .unwrap();
    s.abort_upload(&other, handle.as_deref()).await.unwrap();
    assert!(s.staged_pieces(&other, 0).await.unwrap().is_empty());
}
