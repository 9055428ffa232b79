//! Local-disk blob store (embedded default).
//!
//! Layout under the root directory:
//! - `uploads/{upload_id}.part`: one file per upload in progress, pre-sized at
//!   `begin_upload`; every chunk is written at its own offset, so chunks may arrive in any
//!   order and on any worker sharing the directory.
//! - `{blob_key}` (e.g. `files/{uuid}`): committed blobs. Committing is fsync + rename of the
//!   part file, so no byte is copied.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::task::JoinHandle;

use lfusys_core::range::ByteRange;
use storage::{BlobStore, ByteStream, ChunkTarget, PartRef, StoreError, StoreResult, UploadId};

/// Size of the buffers small body frames are coalesced into before a positioned write.
const WRITE_BUFFER: usize = 256 * 1024;
/// Read buffer of blob streams.
const READ_BUFFER: usize = 1024 * 1024;
const UPLOADS_DIR: &str = "uploads";

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
            .join(format!("{upload_id}.part")))
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

/// Writes consecutive buffers at increasing offsets, one positioned write in flight at a time,
/// so at most two buffers (the one being filled, the one being written) exist per chunk.
struct PositionedWriter {
    file: Arc<File>,
    pos: u64,
    fill: Vec<u8>,
    spare: Option<Vec<u8>>,
    in_flight: Option<JoinHandle<std::io::Result<Vec<u8>>>>,
}

impl PositionedWriter {
    fn new(file: File, offset: u64) -> Self {
        Self {
            file: Arc::new(file),
            pos: offset,
            fill: Vec::with_capacity(WRITE_BUFFER),
            spare: None,
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
            let buf = handle
                .await
                .map_err(|e| StoreError::other_from(format!("write task failed: {e}"), e))??;
            self.spare = Some(buf);
        }
        Ok(())
    }

    async fn flush(&mut self) -> StoreResult<()> {
        if self.fill.is_empty() {
            return Ok(());
        }
        self.wait_in_flight().await?;
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
            file.write_all_at(&data, at)?;
            Ok(data)
        }));
        Ok(())
    }

    /// Writes what is buffered, waits for it and makes the data durable.
    async fn finish(mut self) -> StoreResult<()> {
        self.flush().await?;
        self.wait_in_flight().await?;
        let file = Arc::clone(&self.file);
        blocking(move || Ok(file.sync_data()?)).await
    }

    /// Waits for the write in flight so that nothing of a failed attempt lands later, over a
    /// retry's bytes.
    async fn abandon(mut self) {
        let _ = self.wait_in_flight().await;
    }
}

async fn stream_into(
    writer: &mut PositionedWriter,
    target: &ChunkTarget,
    mut body: ByteStream,
) -> StoreResult<()> {
    let mut received: u64 = 0;
    while let Some(frame) = body.next().await {
        let frame = frame.map_err(|e| StoreError::body_from(e.to_string(), e))?;
        received += frame.len() as u64;
        if received > target.len {
            return Err(StoreError::LengthMismatch {
                expected: target.len,
                actual: received,
            });
        }
        writer.push(&frame).await?;
    }
    if received != target.len {
        return Err(StoreError::LengthMismatch {
            expected: target.len,
            actual: received,
        });
    }
    Ok(())
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn begin_upload(&self, upload_id: &UploadId, size: u64) -> StoreResult<Option<String>> {
        let path = self.part_path(upload_id)?;
        blocking(move || {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::create_dir_all(&dir)?;
            // No truncation: a repeated begin must not wipe chunks already written.
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.set_len(size)?;
            file.sync_all()?;
            sync_dir(&dir)?;
            // One file per upload, named by its id: nothing to hand back.
            Ok(None)
        })
        .await
    }

    async fn write_chunk(
        &self,
        target: &ChunkTarget,
        body: ByteStream,
    ) -> StoreResult<Option<String>> {
        let path = self.part_path(&target.upload_id)?;
        let end = target
            .offset
            .checked_add(target.len)
            .ok_or_else(|| StoreError::other("chunk offset overflows"))?;
        let file = blocking(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
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
        match stream_into(&mut writer, target, body).await {
            Ok(()) => {
                writer.finish().await?;
                Ok(None)
            }
            Err(e) => {
                writer.abandon().await;
                Err(e)
            }
        }
    }

    async fn complete_upload(
        &self,
        upload_id: &UploadId,
        _handle: Option<&str>,
        parts: &[PartRef],
        blob_key: &str,
    ) -> StoreResult<()> {
        let part = self.part_path(upload_id)?;
        let blob = self.blob_path(blob_key)?;
        let expected: Option<u64> = (!parts.is_empty()).then(|| parts.iter().map(|p| p.size).sum());
        blocking(move || {
            match File::open(&part) {
                Ok(file) => {
                    let size = file.metadata()?.len();
                    if let Some(expected) = expected {
                        if expected != size {
                            return Err(StoreError::Conflict(format!(
                                "parts add up to {expected} bytes but the upload holds {size}"
                            )));
                        }
                    }
                    file.sync_all()?;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return already_committed(&blob);
                }
                Err(e) => return Err(e.into()),
            }
            let blob_dir = blob.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::create_dir_all(&blob_dir)?;
            match std::fs::rename(&part, &blob) {
                Ok(()) => {}
                // A concurrent commit of the same upload won the rename.
                Err(e) if e.kind() == ErrorKind::NotFound => return already_committed(&blob),
                Err(e) => return Err(e.into()),
            }
            sync_dir(&blob_dir)?;
            if let Some(part_dir) = part.parent() {
                sync_dir(part_dir)?;
            }
            Ok(())
        })
        .await
    }

    async fn abort_upload(&self, upload_id: &UploadId, _handle: Option<&str>) -> StoreResult<()> {
        let part = self.part_path(upload_id)?;
        blocking(move || match std::fs::remove_file(&part) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
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
                let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".part")) else {
                    continue;
                };
                if validate_upload_id(id).is_err() {
                    continue;
                }
                match entry.metadata().and_then(|m| m.modified()) {
                    Ok(modified) if modified < before => idle.push(UploadId::from(id)),
                    Ok(_) => {}
                    // Released meanwhile.
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
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

fn already_committed(blob: &Path) -> StoreResult<()> {
    match std::fs::metadata(blob) {
        Ok(m) if m.is_file() => Ok(()),
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

    #[tokio::test]
    async fn idle_blob_uploads_are_those_not_written_since() {
        let (_dir, s) = store();
        let now = lfusys_core::clock::now_ms();
        for id in ["u-a", "u-b"] {
            s.begin_upload(&UploadId::from(id), 10).await.unwrap();
        }
        // A stray file is not an upload.
        std::fs::write(s.root().join(UPLOADS_DIR).join("notes.txt"), b"x").unwrap();
        let mut idle = s.idle_blob_uploads(now + 60_000, 10).await.unwrap();
        idle.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(idle, [UploadId::from("u-a"), UploadId::from("u-b")]);
        assert_eq!(s.idle_blob_uploads(now + 60_000, 1).await.unwrap().len(), 1);
        assert!(s
            .idle_blob_uploads(now - 60_000, 10)
            .await
            .unwrap()
            .is_empty());
        s.abort_upload(&UploadId::from("u-a"), None).await.unwrap();
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
            sha256: [0; 32],
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

    /// Local disk has no handles and no receipts.
    #[tokio::test]
    async fn no_handles_and_no_receipts() {
        let (_d, s) = store();
        let id = "0190a0a0-0000-7000-8000-000000000001";
        assert_eq!(s.begin_upload(&id.into(), 10).await.unwrap(), None);
        assert_eq!(
            s.write_chunk(&target(id, 0, 0, 10), body(&[1; 10], 3))
                .await
                .unwrap(),
            None
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
        s.complete_upload(&"u2".into(), None, &[], "files/f2")
            .await
            .unwrap();
        assert_eq!(&read_all(&s, "files/f2", None).await[10..], &[2; 10]);
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
            s.complete_upload(&"other".into(), None, &[], "files/nope")
                .await,
            Err(StoreError::NotFound(_))
        ));
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
        s.complete_upload(&"u4".into(), None, &[], "files/dir/f4")
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
            sha256: String::new(),
            etag: None,
        }];
        assert!(matches!(
            s.complete_upload(&"u3".into(), None, &parts, "files/f3")
                .await,
            Err(StoreError::Conflict(_))
        ));
    }

    #[tokio::test]
    async fn abort_removes_the_pre_sized_file() {
        let (_d, s) = store();
        s.begin_upload(&"u5".into(), 1 << 30).await.unwrap();
        let part = s.root().join("uploads/u5.part");
        assert_eq!(std::fs::metadata(&part).unwrap().len(), 1 << 30);
        s.abort_upload(&"u5".into(), None).await.unwrap();
        assert!(!part.exists());
        s.abort_upload(&"u5".into(), None).await.unwrap();
        s.check().await.unwrap();
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

    /// Memory stays bounded whatever the chunk size: a slow body never makes the store
    /// buffer more than its two write buffers.
    #[tokio::test]
    async fn large_chunk_streams_through_bounded_buffers() {
        let (_d, s) = store();
        let len: u64 = 64 * 1024 * 1024;
        s.begin_upload(&"u6".into(), len).await.unwrap();
        let frames = futures::stream::unfold(0u64, move |sent| async move {
            (sent < len).then(|| {
                let n = (len - sent).min(16 * 1024);
                (
                    Ok(Bytes::from(vec![(sent / 16384) as u8; n as usize])),
                    sent + n,
                )
            })
        });
        let t = tokio::time::timeout(
            Duration::from_secs(60),
            s.write_chunk(&target("u6", 0, 0, len), Box::pin(frames)),
        )
        .await
        .unwrap();
        t.unwrap();
        s.complete_upload(&"u6".into(), None, &[], "files/f6")
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
}
