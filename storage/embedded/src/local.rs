//! Local-disk blob store (embedded default).
//!
//! Layout under the root directory:
//! - `uploads/{upload_id}.part`: one file per upload in progress, pre-sized at
//!   `begin_upload`; every chunk is written at its own offset, so chunks may arrive in any
//!   order and on any worker sharing the directory.
//! - `uploads/{upload_id}.manifest`: what each completed positioned write left at its place —
//!   one fixed-size record (index, offset, length, the CRC-64/NVME of the bytes as they were
//!   written; see `Record`) appended, and made durable, after the chunk's bytes are. A write
//!   that fails after it touched its place appends a record that invalidates the place. The
//!   last record at an offset is the one that counts.
//! - `{blob_key}` (e.g. `files/{uuid}`): committed blobs. Committing verifies, from the
//!   manifest alone, that the parts at their places make a file whose CRC-64/NVME is the
//!   expected one (nothing is read back), then is fsync + rename of the part file, so no byte is
//!   copied; the manifest is removed after.
//!
//! - `uploads/{upload_id}.staged/{index}-{start}`: staged pieces of chunks that arrive in more
//!   than one request (tus / IETF appends), one file each, written beside as `….tmp`, synced
//!   and renamed into place, so a listed piece is whole.
//!
//! Aborting removes the part file, then the manifest, then the staged pieces. A manifest without its part file (a crash
//! between the two steps of a commit or an abort) is removed by `idle_blob_uploads` once idle.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::task::JoinHandle;

use lfusys_core::digest::{crc64_hex, crc64nvme, crc64nvme_of_pieces, Crc64, Crc64Nvme};
use lfusys_core::range::ByteRange;
use storage::{
    BlobStore, ByteStream, ChunkTarget, PartRef, StagedPiece, StoreError, StoreResult, UploadId,
    WrittenChunk,
};

/// Size of the buffers small body frames are coalesced into before a positioned write.
const WRITE_BUFFER: usize = 256 * 1024;
/// Read buffer of blob streams.
const READ_BUFFER: usize = 1024 * 1024;
const UPLOADS_DIR: &str = "uploads";
const PART_SUFFIX: &str = ".part";
const MANIFEST_SUFFIX: &str = ".manifest";
const STAGED_SUFFIX: &str = ".staged";
const TMP_SUFFIX: &str = ".tmp";

#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    /// Opens (creating it if needed) the store rooted at `root`.
    pub fn open(root: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(root.join(UPLOADS_DIR))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn part_path(&self, upload_id: &str) -> StoreResult<PathBuf> {
        validate_upload_id(upload_id)?;
        Ok(self
            .root
            .join(UPLOADS_DIR)
            .join(format!("{upload_id}{PART_SUFFIX}")))
    }

    fn manifest_path(&self, upload_id: &str) -> StoreResult<PathBuf> {
        validate_upload_id(upload_id)?;
        Ok(self
            .root
            .join(UPLOADS_DIR)
            .join(format!("{upload_id}{MANIFEST_SUFFIX}")))
    }

    fn staged_dir(&self, upload_id: &str) -> StoreResult<PathBuf> {
        validate_upload_id(upload_id)?;
        Ok(self
            .root
            .join(UPLOADS_DIR)
            .join(format!("{upload_id}{STAGED_SUFFIX}")))
    }

    fn blob_path(&self, blob_key: &str) -> StoreResult<PathBuf> {
        validate_blob_key(blob_key)?;
        Ok(self.root.join(blob_key))
    }
}

fn is_safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn validate_upload_id(id: &str) -> StoreResult<()> {
    if id.is_empty() || id.len() > 200 || !id.chars().all(is_safe_char) {
        return Err(StoreError::other(format!("invalid upload id {id:?}")));
    }
    Ok(())
}

/// Keys are relative paths of safe segments; the `uploads/` namespace is the store's own.
fn validate_blob_key(key: &str) -> StoreResult<()> {
    let ok = !key.is_empty()
        && key.len() <= 1000
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg.chars().all(is_safe_char))
        && key.split('/').next() != Some(UPLOADS_DIR);
    if ok {
        Ok(())
    } else {
        Err(StoreError::other(format!("invalid blob key {key:?}")))
    }
}

/// Streams `len` bytes of `file` from `start` in `READ_BUFFER` blocks, read by one blocking
/// thread at most two blocks ahead of the consumer. Far cheaper than an async file read, which
/// pays a thread hop for every small read.
fn positioned_reader(
    file: Arc<File>,
    start: u64,
    len: u64,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(2);
    tokio::task::spawn_blocking(move || {
        let mut offset = start;
        let end = start + len;
        while offset < end {
            let n = usize::try_from((end - offset).min(READ_BUFFER as u64)).unwrap_or(READ_BUFFER);
            let mut buf = vec![0u8; n];
            let item = file
                .read_exact_at(&mut buf, offset)
                .map(|()| bytes::Bytes::from(buf));
            let failed = item.is_err();
            // The consumer went away (download cancelled): stop reading.
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
            offset += n as u64;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn blocking<T, F>(f: F) -> StoreResult<T>
where
    F: FnOnce() -> StoreResult<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::other_from(format!("blocking task failed: {e}"), e))?
}

fn not_found_or(e: std::io::Error, what: &str) -> StoreError {
    if e.kind() == ErrorKind::NotFound {
        StoreError::NotFound(what.to_owned())
    } else {
        StoreError::from(e)
    }
}

/// Makes a rename or a new directory entry durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a file that may already be gone.
fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The file name of a staged piece: chunk index and start, fixed width so names sort by both.
fn piece_name(index: u32, start: u64) -> String {
    format!("{index:010}-{start:020}")
}

/// The staged pieces of chunk `index` in `dir` (none when it does not exist), by start.
fn list_pieces(dir: &Path, index: u32) -> StoreResult<Vec<StagedPiece>> {
    let prefix = format!("{index:010}-");
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut pieces = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(start) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.parse::<u64>().ok())
        else {
            continue; // another chunk's piece, or one still being written (`.tmp`)
        };
        match entry.metadata() {
            Ok(meta) => pieces.push(StagedPiece {
                start,
                len: meta.len(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    pieces.sort();
    Ok(pieces)
}

/// Removes a directory tree that may already be gone.
fn remove_dir_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// The manifest

/// Bytes of one manifest record.
const RECORD_LEN: usize = 40;
/// A record of a completed write.
const WRITTEN: [u8; 4] = *b"LFW1";
/// A record of a write that failed after it had touched its place: the place holds no known
/// bytes until a write there completes.
const INVALIDATED: [u8; 4] = *b"LFX1";

/// One record of an upload's manifest: what the last write at `offset` left there. On disk,
/// [`RECORD_LEN`] bytes, little-endian: kind (4 bytes, [`WRITTEN`] or [`INVALIDATED`]), index
/// (u32), offset (u64), len (u64), CRC-64/NVME of the bytes (u64, 0 when invalidated), and the
/// CRC-64/NVME of those first 32 bytes — so that a torn or garbled record (a crash mid-append)
/// is detected and skipped, and the records after it are still found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    index: u32,
    offset: u64,
    len: u64,
    /// `None`: the place was invalidated.
    crc64nvme: Option<Crc64>,
}

impl Record {
    fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0..4].copy_from_slice(if self.crc64nvme.is_some() {
            &WRITTEN
        } else {
            &INVALIDATED
        });
        out[4..8].copy_from_slice(&self.index.to_le_bytes());
        out[8..16].copy_from_slice(&self.offset.to_le_bytes());
        out[16..24].copy_from_slice(&self.len.to_le_bytes());
        out[24..32].copy_from_slice(&self.crc64nvme.unwrap_or_default().to_le_bytes());
        let check = crc64nvme(&out[..32]);
        out[32..40].copy_from_slice(&check.to_le_bytes());
        out
    }

    /// The record in `bytes` ([`RECORD_LEN`] of them), unless they are not a whole one.
    fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; RECORD_LEN] = bytes.try_into().ok()?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if crc64nvme(&bytes[..32]) != u64_at(32) {
            return None;
        }
        let mut index = [0u8; 4];
        index.copy_from_slice(&bytes[4..8]);
        let crc = u64_at(24);
        let crc64nvme = match [bytes[0], bytes[1], bytes[2], bytes[3]] {
            WRITTEN => Some(crc),
            INVALIDATED => None,
            _ => return None,
        };
        Some(Self {
            index: u32::from_le_bytes(index),
            offset: u64_at(8),
            len: u64_at(16),
            crc64nvme,
        })
    }
}

/// The last record at each offset of a manifest's bytes. A stretch that is no whole record (a
/// torn append) is skipped byte by byte until records line up again.
fn read_records(bytes: &[u8]) -> BTreeMap<u64, Record> {
    let mut places = BTreeMap::new();
    let mut at = 0;
    while at + RECORD_LEN <= bytes.len() {
        if let Some(record) = Record::decode(&bytes[at..at + RECORD_LEN]) {
            places.insert(record.offset, record);
            at += RECORD_LEN;
        } else {
            at += 1;
        }
    }
    places
}

/// The manifest's records; none when there is no manifest.
fn read_manifest(manifest: &Path) -> StoreResult<BTreeMap<u64, Record>> {
    match std::fs::read(manifest) {
        Ok(bytes) => Ok(read_records(&bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}

/// Appends `record` to the manifest of the upload whose part file is `part`, and makes it
/// durable.
///
/// Workers of several processes append to one manifest concurrently, for different chunks,
/// without a lock: the manifest is opened with `O_APPEND` and each record is ONE `write(2)` of
/// [`RECORD_LEN`] bytes, which local filesystems apply atomically (the offset is taken and the
/// bytes land under the inode's lock), so records never interleave. (Not so on NFS: the data
/// directory must be a local filesystem.) A short write (the disk filled up mid-record) leaves a
/// torn record that readers skip, and fails as a full disk.
fn append_record(manifest: &Path, part: &Path, record: &Record) -> StoreResult<()> {
    let mut file = match std::fs::OpenOptions::new().append(true).open(manifest) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // Released meanwhile (then the part is gone too), or begun before uploads had
            // manifests: then start one beside the part file.
            if let Err(e) = std::fs::metadata(part) {
                return Err(not_found_or(e, "upload storage"));
            }
            let file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(manifest)?;
            if let Some(dir) = manifest.parent() {
                sync_dir(dir)?;
            }
            file
        }
        Err(e) => return Err(e.into()),
    };
    let bytes = record.encode();
    let written = loop {
        match file.write(&bytes) {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            other => break other?,
        }
    };
    if written != bytes.len() {
        return Err(StoreError::from(std::io::Error::new(
            ErrorKind::StorageFull,
            format!(
                "the upload's manifest took {written} of a record's {} bytes",
                bytes.len()
            ),
        )));
    }
    file.sync_data()?;
    Ok(())
}

fn mismatch(detail: String) -> StoreError {
    StoreError::ChecksumMismatch(detail)
}

/// Verifies, from the manifest's records alone, that the parts at their places (each at the
/// sum of the sizes before it, in index order) make a file of `size` bytes whose CRC-64/NVME is
/// `whole`: every part needs a completed write of its length at its offset, with its CRC, and
/// the CRCs of those writes, in offset order, must combine to `whole`. Without parts, the
/// writes recorded place after place from offset 0 up to `size` are the file.
fn verify_places(
    places: &BTreeMap<u64, Record>,
    parts: &[PartRef],
    size: u64,
    whole: Crc64,
) -> StoreResult<()> {
    let mut pieces: Vec<(Crc64, u64)> = Vec::new();
    if parts.is_empty() {
        let mut offset = 0;
        while offset < size {
            let Some(record) = places.get(&offset) else {
                return Err(mismatch(format!(
                    "no write is recorded at offset {offset} of {size}"
                )));
            };
            let Some(crc) = record.crc64nvme else {
                return Err(mismatch(format!(
                    "the last write at offset {offset} (chunk {}) did not complete",
                    record.index
                )));
            };
            if record.len == 0 || offset + record.len > size {
                return Err(mismatch(format!(
                    "the write at offset {offset} has {} bytes, in a file of {size}",
                    record.len
                )));
            }
            pieces.push((crc, record.len));
            offset += record.len;
        }
    } else {
        let mut sorted: Vec<&PartRef> = parts.iter().collect();
        sorted.sort_by_key(|p| p.index);
        let mut offset = 0u64;
        for part in sorted {
            let at = format!("part {} (offset {offset}, {} bytes)", part.index, part.size);
            let Some(record) = places.get(&offset) else {
                return Err(mismatch(format!("{at}: no write is recorded at its place")));
            };
            let Some(crc) = record.crc64nvme else {
                return Err(mismatch(format!(
                    "{at}: the last write at its place (as chunk {}) did not complete",
                    record.index
                )));
            };
            if record.len != part.size {
                return Err(mismatch(format!(
                    "{at}: the write at its place (as chunk {}) has {} bytes",
                    record.index, record.len
                )));
            }
            if crc != part.crc64nvme {
                return Err(mismatch(format!(
                    "{at}: the bytes at its place (written as chunk {}) have CRC-64/NVME {}, the part {}",
                    record.index,
                    crc64_hex(crc),
                    crc64_hex(part.crc64nvme)
                )));
            }
            pieces.push((crc, part.size));
            offset += part.size;
        }
    }
    let stored = crc64nvme_of_pieces(pieces);
    if stored != whole {
        return Err(mismatch(format!(
            "the bytes at the parts' places make CRC-64/NVME {}, expected {}",
            crc64_hex(stored),
            crc64_hex(whole)
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Writing a chunk

/// Writes consecutive buffers at increasing offsets, one positioned write in flight at a time,
/// so at most two buffers (the one being filled, the one being written) exist per chunk. The
/// blocking task that writes a buffer also adds it to the chunk's CRC-64/NVME, so the CRC is of
/// the bytes exactly as written, in order, and costs the async threads nothing.
struct PositionedWriter {
    file: Arc<File>,
    start: u64,
    pos: u64,
    fill: Vec<u8>,
    spare: Option<Vec<u8>>,
    /// With the write in flight while there is one.
    crc: Option<Crc64Nvme>,
    in_flight: Option<JoinHandle<std::io::Result<Written>>>,
}

/// A buffer back from its write, with the CRC that now covers it.
type Written = (Vec<u8>, Crc64Nvme);

impl PositionedWriter {
    fn new(file: File, offset: u64) -> Self {
        Self {
            file: Arc::new(file),
            start: offset,
            pos: offset,
            fill: Vec::with_capacity(WRITE_BUFFER),
            spare: None,
            crc: Some(Crc64Nvme::new()),
            in_flight: None,
        }
    }

    async fn push(&mut self, mut data: &[u8]) -> StoreResult<()> {
        while !data.is_empty() {
            let n = (WRITE_BUFFER - self.fill.len()).min(data.len());
            self.fill.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.fill.len() >= WRITE_BUFFER {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn wait_in_flight(&mut self) -> StoreResult<()> {
        if let Some(handle) = self.in_flight.take() {
            let (buf, crc) = handle
                .await
                .map_err(|e| StoreError::other_from(format!("write task failed: {e}"), e))??;
            self.spare = Some(buf);
            self.crc = Some(crc);
        }
        Ok(())
    }

    async fn flush(&mut self) -> StoreResult<()> {
        if self.fill.is_empty() {
            return Ok(());
        }
        self.wait_in_flight().await?;
        let mut crc = self
            .crc
            .take()
            .ok_or_else(|| StoreError::other("the chunk's CRC went missing"))?;
        let next = self.spare.take().map_or_else(
            || Vec::with_capacity(WRITE_BUFFER),
            |mut v| {
                v.clear();
                v
            },
        );
        let data = std::mem::replace(&mut self.fill, next);
        let at = self.pos;
        self.pos += data.len() as u64;
        let file = Arc::clone(&self.file);
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            crc.update(&data);
            file.write_all_at(&data, at)?;
            Ok((data, crc))
        }));
        Ok(())
    }

    /// Writes what is buffered, waits for it and makes the data durable; answers the
    /// CRC-64/NVME of all that was written.
    async fn finish(mut self) -> StoreResult<Crc64> {
        self.flush().await?;
        self.wait_in_flight().await?;
        let crc = self
            .crc
            .take()
            .ok_or_else(|| StoreError::other("the chunk's CRC went missing"))?;
        let file = Arc::clone(&self.file);
        blocking(move || Ok(file.sync_data()?)).await?;
        Ok(crc.finish())
    }

    /// Waits for the write in flight so that nothing of a failed attempt lands later, over a
    /// retry's bytes; answers whether any byte of the attempt may have reached its place.
    async fn abandon(mut self) -> bool {
        let _ = self.wait_in_flight().await;
        self.pos > self.start
    }
}

/// Writes exactly `len` bytes of `body`; a longer or shorter body is a `LengthMismatch`.
async fn stream_into(
    writer: &mut PositionedWriter,
    len: u64,
    mut body: ByteStream,
) -> StoreResult<()> {
    let mut received: u64 = 0;
    while let Some(frame) = body.next().await {
        let frame = frame.map_err(|e| StoreError::body_from(e.to_string(), e))?;
        received += frame.len() as u64;
        if received > len {
            return Err(StoreError::LengthMismatch {
                expected: len,
                actual: received,
            });
        }
        writer.push(&frame).await?;
    }
    if received != len {
        return Err(StoreError::LengthMismatch {
            expected: len,
            actual: received,
        });
    }
    Ok(())
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn begin_upload(&self, upload_id: &UploadId, size: u64) -> StoreResult<Option<String>> {
        let path = self.part_path(upload_id)?;
        let manifest = self.manifest_path(upload_id)?;
        blocking(move || {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::create_dir_all(&dir)?;
            // No truncation: a repeated begin must not wipe chunks already written, nor their
            // records.
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.set_len(size)?;
            file.sync_all()?;
            let records = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&manifest)?;
            records.sync_all()?;
            sync_dir(&dir)?;
            // Two files per upload, named by its id: nothing to hand back.
            Ok(None)
        })
        .await
    }

    async fn set_upload_size(&self, upload_id: &UploadId, size: u64) -> StoreResult<()> {
        let path = self.part_path(upload_id)?;
        blocking(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| not_found_or(e, "upload storage"))?;
            file.set_len(size)?;
            file.sync_all()?;
            Ok(())
        })
        .await
    }

    async fn write_chunk(
        &self,
        target: &ChunkTarget,
        body: ByteStream,
    ) -> StoreResult<WrittenChunk> {
        let path = self.part_path(&target.upload_id)?;
        let manifest = self.manifest_path(&target.upload_id)?;
        let end = target
            .offset
            .checked_add(target.len)
            .ok_or_else(|| StoreError::other("chunk offset overflows"))?;
        let part = path.clone();
        let file = blocking(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&part)
                .map_err(|e| not_found_or(e, "upload storage"))?;
            let size = file.metadata()?.len();
            if end > size {
                return Err(StoreError::Conflict(format!(
                    "chunk ends at {end}, past the upload's size {size}"
                )));
            }
            Ok(file)
        })
        .await?;
        let mut writer = PositionedWriter::new(file, target.offset);
        let written = match stream_into(&mut writer, target.len, body).await {
            Ok(()) => writer.finish().await.map_err(|e| (e, true)),
            Err(e) => {
                let touched = writer.abandon().await;
                Err((e, touched))
            }
        };
        let mut record = Record {
            index: target.index,
            offset: target.offset,
            len: target.len,
            crc64nvme: None,
        };
        let crc = match written {
            Ok(crc) => crc,
            Err((e, touched)) => {
                if touched {
                    // Its place now holds bytes no record describes: a commit must not take
                    // the last complete write's record for them.
                    let (manifest, part) = (manifest, path);
                    if let Err(mark) =
                        blocking(move || append_record(&manifest, &part, &record)).await
                    {
                        tracing::warn!(upload_id = %target.upload_id, index = target.index, error = %mark, "cannot record in the upload's manifest that a chunk write failed");
                    }
                }
                return Err(e);
            }
        };
        // Only once the bytes are durable: a record never describes bytes a crash can lose.
        record.crc64nvme = Some(crc);
        blocking(move || append_record(&manifest, &path, &record)).await?;
        Ok(WrittenChunk {
            crc64nvme: crc,
            etag: None,
        })
    }

    async fn complete_upload(
        &self,
        upload_id: &UploadId,
        _handle: Option<&str>,
        parts: &[PartRef],
        blob_key: &str,
        whole_crc64nvme: Crc64,
    ) -> StoreResult<()> {
        let part = self.part_path(upload_id)?;
        let manifest = self.manifest_path(upload_id)?;
        let blob = self.blob_path(blob_key)?;
        let parts = parts.to_vec();
        let id = upload_id.clone();
        blocking(move || {
            match File::open(&part) {
                Ok(file) => {
                    let size = file.metadata()?.len();
                    if !parts.is_empty() {
                        let expected: u64 = parts.iter().map(|p| p.size).sum();
                        if expected != size {
                            return Err(StoreError::Conflict(format!(
                                "parts add up to {expected} bytes but the upload holds {size}"
                            )));
                        }
                    }
                    // Before anything is committed: a mismatch leaves the upload as it was.
                    verify_places(&read_manifest(&manifest)?, &parts, size, whole_crc64nvme)?;
                    file.sync_all()?;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return committed_before(&blob, &manifest);
                }
                Err(e) => return Err(e.into()),
            }
            let blob_dir = blob.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::create_dir_all(&blob_dir)?;
            match std::fs::rename(&part, &blob) {
                Ok(()) => {}
                // A concurrent commit of the same upload won the rename.
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return committed_before(&blob, &manifest)
                }
                Err(e) => return Err(e.into()),
            }
            sync_dir(&blob_dir)?;
            if let Some(part_dir) = part.parent() {
                sync_dir(part_dir)?;
            }
            // Committed: a manifest left by a failure here is swept once idle.
            if let Err(e) = remove_if_present(&manifest) {
                tracing::warn!(upload_id = %id, error = %e, "cannot remove the manifest of a committed upload");
            }
            Ok(())
        })
        .await
    }

    async fn abort_upload(&self, upload_id: &UploadId, _handle: Option<&str>) -> StoreResult<()> {
        let part = self.part_path(upload_id)?;
        let manifest = self.manifest_path(upload_id)?;
        let staged = self.staged_dir(upload_id)?;
        // The part file first: a manifest without one is known to be garbage.
        blocking(move || {
            remove_if_present(&part)?;
            remove_if_present(&manifest)?;
            remove_dir_if_present(&staged)?;
            Ok(())
        })
        .await
    }

    async fn stage_piece(
        &self,
        upload_id: &UploadId,
        index: u32,
        start: u64,
        len: u64,
        body: ByteStream,
    ) -> StoreResult<()> {
        let dir = self.staged_dir(upload_id)?;
        let name = piece_name(index, start);
        let path = dir.join(&name);
        let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
        let opened = {
            let (dir, tmp) = (dir.clone(), tmp.clone());
            blocking(move || {
                std::fs::create_dir_all(&dir)?;
                Ok(File::create(&tmp)?)
            })
            .await?
        };
        let mut writer = PositionedWriter::new(opened, 0);
        let streamed = stream_into(&mut writer, len, body).await;
        let finished = match streamed {
            Ok(()) => writer.finish().await.map(drop),
            Err(e) => {
                writer.abandon().await;
                Err(e)
            }
        };
        blocking(move || {
            if let Err(e) = finished {
                remove_if_present(&tmp)?;
                return Err(e);
            }
            std::fs::rename(&tmp, &path)?;
            sync_dir(&dir)?;
            Ok(())
        })
        .await
    }

    async fn staged_pieces(
        &self,
        upload_id: &UploadId,
        index: u32,
    ) -> StoreResult<Vec<StagedPiece>> {
        let dir = self.staged_dir(upload_id)?;
        blocking(move || list_pieces(&dir, index)).await
    }

    async fn read_staged(
        &self,
        upload_id: &UploadId,
        index: u32,
        piece: StagedPiece,
    ) -> StoreResult<ByteStream> {
        let path = self
            .staged_dir(upload_id)?
            .join(piece_name(index, piece.start));
        let name = format!("staged piece {index}/{}", piece.start);
        let file = blocking(move || File::open(&path).map_err(|e| not_found_or(e, &name))).await?;
        Ok(Box::pin(positioned_reader(Arc::new(file), 0, piece.len)))
    }

    async fn discard_staged(&self, upload_id: &UploadId, index: u32) -> StoreResult<()> {
        let dir = self.staged_dir(upload_id)?;
        blocking(move || {
            for piece in list_pieces(&dir, index)? {
                remove_if_present(&dir.join(piece_name(index, piece.start)))?;
            }
            Ok(())
        })
        .await
    }

    async fn idle_blob_uploads(&self, before_ms: i64, limit: usize) -> StoreResult<Vec<UploadId>> {
        let dir = self.root.join(UPLOADS_DIR);
        let before = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(before_ms).unwrap_or_default());
        blocking(move || {
            let mut idle = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                if idle.len() >= limit {
                    break;
                }
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    continue;
                };
                let (id, is_part) = if let Some(id) = name.strip_suffix(PART_SUFFIX) {
                    (id, true)
                } else if let Some(id) = name.strip_suffix(MANIFEST_SUFFIX) {
                    (id, false)
                } else {
                    continue;
                };
                if validate_upload_id(id).is_err() {
                    continue;
                }
                let modified = match entry.metadata().and_then(|m| m.modified()) {
                    Ok(modified) => modified,
                    // Released meanwhile.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                if modified >= before {
                    continue;
                }
                if is_part {
                    idle.push(UploadId::from(id));
                    continue;
                }
                // A manifest is the sweeper's business through its part file; one without it is
                // what a crash between committing or aborting an upload and removing the
                // manifest leaves, which nothing reads any more.
                match std::fs::symlink_metadata(dir.join(format!("{id}{PART_SUFFIX}"))) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        remove_if_present(&entry.path())?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(idle)
        })
        .await
    }

    async fn blob_size(&self, blob_key: &str) -> StoreResult<u64> {
        let path = self.blob_path(blob_key)?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| not_found_or(e, blob_key))?;
        if !meta.is_file() {
            return Err(StoreError::NotFound(blob_key.to_owned()));
        }
        Ok(meta.len())
    }

    async fn read_blob(&self, blob_key: &str, range: Option<ByteRange>) -> StoreResult<ByteStream> {
        let path = self.blob_path(blob_key)?;
        let key = blob_key.to_owned();
        let file = blocking(move || File::open(&path).map_err(|e| not_found_or(e, &key))).await?;
        let file = Arc::new(file);
        let meta_file = Arc::clone(&file);
        let size = blocking(move || Ok(meta_file.metadata()?.len())).await?;
        let (start, len) = match range {
            None => (0, size),
            Some(r) => {
                if r.start > r.end || r.end >= size {
                    return Err(StoreError::other(format!(
                        "range {}-{} is outside the blob ({size} bytes)",
                        r.start, r.end
                    )));
                }
                (r.start, r.len())
            }
        };
        Ok(Box::pin(positioned_reader(file, start, len)))
    }

    async fn delete_blob(&self, blob_key: &str) -> StoreResult<()> {
        let path = self.blob_path(blob_key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn check(&self) -> StoreResult<()> {
        let dir = self.root.join(UPLOADS_DIR);
        blocking(move || {
            // Writable, not just present: a read-only or full disk must fail readiness.
            let probe = dir.join(format!(".probe-{}", uuid::Uuid::new_v4()));
            std::fs::write(&probe, b"ok")
                .map_err(|e| StoreError::unavailable_from(format!("blob directory: {e}"), e))?;
            let _ = std::fs::remove_file(&probe);
            Ok(())
        })
        .await
    }
}

/// The answer to completing an upload whose part file is gone: success if it was committed
/// (then its manifest, if a crash left it, goes too).
fn committed_before(blob: &Path, manifest: &Path) -> StoreResult<()> {
    match std::fs::metadata(blob) {
        Ok(m) if m.is_file() => {
            remove_if_present(manifest)?;
            Ok(())
        }
        Ok(_) => Err(StoreError::NotFound("upload storage".into())),
        Err(e) => Err(not_found_or(e, "upload storage")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    // The store's answers to the port are the conformance suite's (tests/conformance.rs); what
    // follows is local disk's own.
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn store() -> (tempfile::TempDir, LocalBlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalBlobStore::open(&dir.path().join("blobs")).unwrap();
        (dir, s)
    }

    fn manifest_of(s: &LocalBlobStore, id: &str) -> PathBuf {
        s.root().join(UPLOADS_DIR).join(format!("{id}.manifest"))
    }

    #[tokio::test]
    async fn idle_blob_uploads_are_those_not_written_since() {
        let (_dir, s) = store();
        let now = lfusys_core::clock::now_ms();
        for id in ["u-a", "u-b"] {
            s.begin_upload(&UploadId::from(id), 10).await.unwrap();
        }
        // A stray file is not an upload.
        std::fs::write(s.root().join(UPLOADS_DIR).join("notes.txt"), b"x").unwrap();
        // A manifest whose part file is gone (a crash after a commit renamed it) is removed.
        std::fs::write(manifest_of(&s, "u-c"), b"").unwrap();
        let mut idle = s.idle_blob_uploads(now + 60_000, 10).await.unwrap();
        idle.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(idle, [UploadId::from("u-a"), UploadId::from("u-b")]);
        assert!(!manifest_of(&s, "u-c").exists());
        assert!(
            manifest_of(&s, "u-a").exists(),
            "a live upload keeps its manifest"
        );
        assert_eq!(s.idle_blob_uploads(now + 60_000, 1).await.unwrap().len(), 1);
        assert!(s
            .idle_blob_uploads(now - 60_000, 10)
            .await
            .unwrap()
            .is_empty());
        s.abort_upload(&UploadId::from("u-a"), None).await.unwrap();
        assert!(!manifest_of(&s, "u-a").exists());
        assert_eq!(
            s.idle_blob_uploads(now + 60_000, 10).await.unwrap(),
            [UploadId::from("u-b")]
        );
    }

    fn target(upload_id: &str, index: u32, offset: u64, len: u64) -> ChunkTarget {
        ChunkTarget {
            upload_id: upload_id.into(),
            handle: None,
            index,
            offset,
            len,
            crc64nvme: None,
        }
    }

    fn part_of(index: u32, data: &[u8]) -> PartRef {
        PartRef {
            index,
            size: data.len() as u64,
            crc64nvme: crc64nvme(data),
            etag: None,
        }
    }

    /// A body of `data` cut into frames of `frame` bytes.
    fn body(data: &[u8], frame: usize) -> ByteStream {
        let frames: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(frame)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(frames))
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    async fn read_all(s: &LocalBlobStore, key: &str, range: Option<ByteRange>) -> Vec<u8> {
        let mut stream = s.read_blob(key, range).await.unwrap();
        let mut out = Vec::new();
        while let Some(b) = stream.next().await {
            let b = b.unwrap();
            assert!(b.len() <= READ_BUFFER);
            out.extend_from_slice(&b);
        }
        out
    }

    /// Local disk has no handles and no receipts; it answers the CRC of what it wrote.
    #[tokio::test]
    async fn no_handles_and_no_receipts() {
        let (_d, s) = store();
        let id = "0190a0a0-0000-7000-8000-000000000001";
        assert_eq!(s.begin_upload(&id.into(), 10).await.unwrap(), None);
        assert_eq!(
            s.write_chunk(&target(id, 0, 0, 10), body(&[1; 10], 3))
                .await
                .unwrap(),
            WrittenChunk {
                crc64nvme: crc64nvme(&[1; 10]),
                etag: None
            }
        );
    }

    /// A chunk is written at its offset into the pre-sized file, and never past it.
    #[tokio::test]
    async fn chunks_stay_inside_the_pre_sized_file() {
        let (_d, s) = store();
        s.begin_upload(&"u2".into(), 20).await.unwrap();
        // Never past the pre-sized file.
        assert!(matches!(
            s.write_chunk(&target("u2", 1, 15, 10), body(&[1; 10], 4))
                .await,
            Err(StoreError::Conflict(_))
        ));
        // The bytes of a too-long body never go past the chunk.
        s.write_chunk(&target("u2", 1, 10, 10), body(&[2; 10], 3))
            .await
            .unwrap();
        let over = s
            .write_chunk(&target("u2", 0, 0, 10), body(&[9; 30], 30))
            .await;
        assert!(matches!(over, Err(StoreError::LengthMismatch { .. })));
        s.write_chunk(&target("u2", 0, 0, 10), body(&[3; 10], 7))
            .await
            .unwrap();
        let parts = [part_of(0, &[3; 10]), part_of(1, &[2; 10])];
        let whole = crc64nvme(&[[3u8; 10], [2; 10]].concat());
        s.complete_upload(&"u2".into(), None, &parts, "files/f2", whole)
            .await
            .unwrap();
        assert_eq!(&read_all(&s, "files/f2", None).await[10..], &[2; 10]);
        assert!(
            !manifest_of(&s, "u2").exists(),
            "committed: the manifest is gone"
        );
    }

    /// An upload that was never begun has no storage to write to or to commit.
    #[tokio::test]
    async fn an_upload_never_begun_has_no_storage() {
        let (_d, s) = store();
        assert!(matches!(
            s.write_chunk(&target("missing", 0, 0, 1), body(b"a", 1))
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.complete_upload(&"other".into(), None, &[], "files/nope", 0)
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert!(!manifest_of(&s, "missing").exists());
    }

    /// Any safe key works, in directories of its own.
    #[tokio::test]
    async fn blobs_commit_to_nested_keys() {
        let (_d, s) = store();
        let data = pattern(200_000, 3);
        s.begin_upload(&"u4".into(), data.len() as u64)
            .await
            .unwrap();
        s.write_chunk(&target("u4", 0, 0, data.len() as u64), body(&data, 65_536))
            .await
            .unwrap();
        s.complete_upload(&"u4".into(), None, &[], "files/dir/f4", crc64nvme(&data))
            .await
            .unwrap();
        assert_eq!(read_all(&s, "files/dir/f4", None).await, data);
        s.delete_blob("files/dir/f4").await.unwrap();
        assert!(matches!(
            s.blob_size("files/dir/f4").await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn complete_checks_part_sizes() {
        let (_d, s) = store();
        s.begin_upload(&"u3".into(), 4).await.unwrap();
        let parts = [PartRef {
            index: 0,
            size: 3,
            crc64nvme: 0,
            etag: None,
        }];
        assert!(matches!(
            s.complete_upload(&"u3".into(), None, &parts, "files/f3", 0)
                .await,
            Err(StoreError::Conflict(_))
        ));
    }

    #[tokio::test]
    async fn abort_removes_the_pre_sized_file_and_the_manifest() {
        let (_d, s) = store();
        s.begin_upload(&"u5".into(), 1 << 30).await.unwrap();
        let part = s.root().join("uploads/u5.part");
        assert_eq!(std::fs::metadata(&part).unwrap().len(), 1 << 30);
        s.write_chunk(&target("u5", 0, 0, 10), body(&[5; 10], 10))
            .await
            .unwrap();
        assert!(manifest_of(&s, "u5").exists());
        s.abort_upload(&"u5".into(), None).await.unwrap();
        assert!(!part.exists());
        assert!(!manifest_of(&s, "u5").exists());
        s.abort_upload(&"u5".into(), None).await.unwrap();
        s.check().await.unwrap();
    }

    /// A record that is not whole (a crash mid-append, or garbage) is skipped, and the records
    /// after it, out of step by then, are still found.
    #[test]
    fn torn_records_are_skipped() {
        let a = Record {
            index: 0,
            offset: 0,
            len: 10,
            crc64nvme: Some(7),
        };
        let b = Record {
            index: 1,
            offset: 10,
            len: 5,
            crc64nvme: Some(u64::MAX),
        };
        let gone = Record {
            crc64nvme: None,
            ..b
        };
        for r in [a, b, gone] {
            assert_eq!(Record::decode(&r.encode()), Some(r));
        }
        let mut garbled = a.encode();
        garbled[20] ^= 1;
        assert_eq!(Record::decode(&garbled), None);
        assert_eq!(Record::decode(&[0; RECORD_LEN]), None);

        let mut bytes = Vec::new();
        bytes.extend_from_slice(&a.encode()[..17]);
        bytes.extend_from_slice(&b.encode());
        bytes.extend_from_slice(&garbled);
        bytes.extend_from_slice(&a.encode());
        bytes.extend_from_slice(&gone.encode()[..39]);
        let places = read_records(&bytes);
        assert_eq!(places.len(), 2);
        assert_eq!(places[&0], a);
        assert_eq!(places[&10], b, "the torn invalidation does not count");
        // The last record at a place wins.
        bytes.extend_from_slice(&gone.encode());
        assert_eq!(read_records(&bytes)[&10], gone);
    }

    /// A torn record in the manifest (a crash mid-append) costs nothing but its own place.
    #[tokio::test]
    async fn a_torn_record_does_not_hide_the_others() {
        let (_d, s) = store();
        let (a, b) = (pattern(1000, 1), pattern(700, 2));
        s.begin_upload(&"u7".into(), 1700).await.unwrap();
        s.write_chunk(&target("u7", 0, 0, 1000), body(&a, 100))
            .await
            .unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(manifest_of(&s, "u7"))
            .unwrap();
        f.write_all(&[0xAB; 13]).unwrap();
        s.write_chunk(&target("u7", 1, 1000, 700), body(&b, 100))
            .await
            .unwrap();
        let whole = crc64nvme(&[a.clone(), b.clone()].concat());
        s.complete_upload(
            &"u7".into(),
            None,
            &[part_of(0, &a), part_of(1, &b)],
            "files/f7",
            whole,
        )
        .await
        .unwrap();
        assert_eq!(read_all(&s, "files/f7", None).await, [a, b].concat());
    }

    /// A write that fails after it touched its place leaves the place without a valid record,
    /// even where an earlier write had completed: the commit is refused until a write there
    /// completes again.
    #[tokio::test]
    async fn a_failed_write_invalidates_its_place() {
        let (_d, s) = store();
        let len = 3 * WRITE_BUFFER;
        let data = pattern(len, 4);
        s.begin_upload(&"u8".into(), len as u64).await.unwrap();
        s.write_chunk(&target("u8", 0, 0, len as u64), body(&data, 65_536))
            .await
            .unwrap();
        // More than a write buffer of other bytes lands before the body fails.
        let other = pattern(2 * WRITE_BUFFER, 9);
        let failing: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from(other)),
            Err(std::io::Error::other("connection reset")),
        ]));
        let failed = s
            .write_chunk(&target("u8", 0, 0, len as u64), failing)
            .await;
        assert!(matches!(failed, Err(StoreError::Body { .. })), "{failed:?}");
        let parts = [part_of(0, &data)];
        let refused = s
            .complete_upload(&"u8".into(), None, &parts, "files/f8", crc64nvme(&data))
            .await;
        let incomplete = matches!(
            &refused,
            Err(StoreError::ChecksumMismatch(d)) if d.contains("did not complete")
        );
        assert!(incomplete, "{refused:?}");
        assert!(s.blob_size("files/f8").await.is_err());
        s.write_chunk(&target("u8", 0, 0, len as u64), body(&data, 100_000))
            .await
            .unwrap();
        s.complete_upload(&"u8".into(), None, &parts, "files/f8", crc64nvme(&data))
            .await
            .unwrap();
        assert_eq!(read_all(&s, "files/f8", None).await, data);
    }

    /// Workers of several processes (here: several stores on one directory) append to one
    /// manifest at once; every record is found.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_the_manifest() {
        let (dir, s) = store();
        let chunks: Vec<Vec<u8>> = (0..64).map(|i| pattern(1000 + i, i as u8)).collect();
        let total: usize = chunks.iter().map(Vec::len).sum();
        s.begin_upload(&"u9".into(), total as u64).await.unwrap();
        let mut tasks = Vec::new();
        let mut offset = 0u64;
        for (i, c) in chunks.iter().enumerate() {
            let s = LocalBlobStore::open(&dir.path().join("blobs")).unwrap();
            let (c, at) = (c.clone(), offset);
            offset += c.len() as u64;
            tasks.push(tokio::spawn(async move {
                s.write_chunk(&target("u9", i as u32, at, c.len() as u64), body(&c, 77))
                    .await
                    .unwrap()
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().crc64nvme, crc64nvme(&chunks[i]));
        }
        let parts: Vec<PartRef> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| part_of(i as u32, c))
            .collect();
        let whole = crc64nvme(&chunks.concat());
        s.complete_upload(&"u9".into(), None, &parts, "files/f9", whole)
            .await
            .unwrap();
        assert_eq!(read_all(&s, "files/f9", None).await, chunks.concat());
    }

    /// The manifest of an upload begun before uploads had one is started by its next write.
    #[tokio::test]
    async fn a_missing_manifest_is_started_beside_its_part() {
        let (_d, s) = store();
        s.begin_upload(&"u10".into(), 10).await.unwrap();
        std::fs::remove_file(manifest_of(&s, "u10")).unwrap();
        s.write_chunk(&target("u10", 0, 0, 10), body(&[6; 10], 10))
            .await
            .unwrap();
        let parts = [part_of(0, &[6; 10])];
        s.complete_upload(
            &"u10".into(),
            None,
            &parts,
            "files/f10",
            crc64nvme(&[6; 10]),
        )
        .await
        .unwrap();
    }

    /// Memory stays bounded whatever the chunk size: a slow body never makes the store
    /// buffer more than its two write buffers.
    #[tokio::test]
    async fn large_chunk_streams_through_bounded_buffers() {
        let (_d, s) = store();
        let len: u64 = 64 * 1024 * 1024;
        s.begin_upload(&"u6".into(), len).await.unwrap();
        let frame_at = move |sent: u64| {
            let n = (len - sent).min(16 * 1024);
            vec![(sent / 16384) as u8; n as usize]
        };
        let frames = futures::stream::unfold(0u64, move |sent| async move {
            (sent < len).then(|| {
                let frame = frame_at(sent);
                let next = sent + frame.len() as u64;
                (Ok(Bytes::from(frame)), next)
            })
        });
        let t = tokio::time::timeout(
            Duration::from_secs(60),
            s.write_chunk(&target("u6", 0, 0, len), Box::pin(frames)),
        )
        .await
        .unwrap();
        let written = t.unwrap();
        let mut expected = Crc64Nvme::new();
        let mut sent = 0;
        while sent < len {
            let frame = frame_at(sent);
            expected.update(&frame);
            sent += frame.len() as u64;
        }
        assert_eq!(written.crc64nvme, expected.finish());
        s.complete_upload(&"u6".into(), None, &[], "files/f6", written.crc64nvme)
            .await
            .unwrap();
        assert_eq!(s.blob_size("files/f6").await.unwrap(), len);
        let tail = read_all(
            &s,
            "files/f6",
            Some(ByteRange {
                start: len - 16384,
                end: len - 1,
            }),
        )
        .await;
        assert!(tail.iter().all(|&b| b == ((len - 16384) / 16384) as u8));
    }

    #[tokio::test]
    async fn unsafe_ids_and_keys_are_refused() {
        let (_d, s) = store();
        for id in ["", "../x", "a/b", "a.b", "/abs", "a b"] {
            assert!(s.begin_upload(&id.into(), 1).await.is_err(), "{id}");
        }
        for key in [
            "",
            "../x",
            "files/../x",
            "/etc/passwd",
            "files//x",
            "files/x/",
            "uploads/x",
            "a.b",
        ] {
            assert!(s.blob_size(key).await.is_err(), "{key}");
            assert!(s.delete_blob(key).await.is_err(), "{key}");
        }
    }
}
