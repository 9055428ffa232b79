//! The chunk's body on its way to the blob store: counted, hashed with SHA-256 when the client
//! declared one, cut off when it runs long, breaks or stalls — and afterwards compared with
//! what was declared (DESIGN §3 step 2: `413` longer, `400` shorter, `422` digest mismatch).
//! The store computes the CRC-64/NVME of what it writes; a body that is not stored gets it
//! computed here. A body received in order carries the file's running SHA-256 on
//! (`core::sha256_chain`) when its claim handed one over. The body is never buffered whole: it
//! streams through.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lfusys_core::digest::{crc64_hex, to_hex, Crc64Nvme, Sha256};
use lfusys_core::sha256_chain::Sha256Chain;
use sha2::Digest;
use storage::{ByteStream, StoreError, WrittenChunk};
use tokio_util::sync::CancellationToken;

use super::{ChunkRequest, IngestError};

/// A body that sends nothing for this long is abandoned (and its lease released).
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an answer given without storing waits for the rest of the body it discards.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What passed through a [`metered`] stream.
#[derive(Default)]
pub(crate) struct Tally {
    /// Only when the client declared a SHA-256: the one costly pass, paid for by those who ask.
    sha256: Option<sha2::Sha256>,
    /// Only for a body that is not stored (the store computes the CRC of what it writes).
    crc64nvme: Option<Crc64Nvme>,
    /// The file's running SHA-256, when the claim handed it over: hashed on, then committed.
    pub(crate) sha256_chain: Option<Sha256Chain>,
    pub(crate) count: u64,
    failure: Option<BodyFailure>,
}

impl Tally {
    /// A tally of `req`'s body; `stored`: the body goes to the blob store.
    pub(crate) fn new(req: &ChunkRequest, stored: bool) -> Self {
        Self {
            sha256: req.digests.sha256.map(|_| sha2::Sha256::new()),
            crc64nvme: (!stored).then(Crc64Nvme::new),
            ..Self::default()
        }
    }

    /// Takes the tally out of its shared cell once the stream is done with it.
    pub(crate) fn take(shared: &Mutex<Self>) -> Self {
        std::mem::take(&mut *shared.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[derive(Debug)]
pub(crate) enum BodyFailure {
    TooLong,
    Broken(String),
    Idle,
    /// The worker stopped the write (it lost the lease).
    Aborted,
}

/// `body` as a [`ByteStream`] that counts (and hashes, if asked) what passes through, and
/// fails (ending the write) when the body breaks, stalls or runs past `limit` bytes.
pub(crate) fn metered(
    body: ByteStream,
    limit: u64,
    tally: Arc<Mutex<Tally>>,
    abort: CancellationToken,
) -> ByteStream {
    Box::pin(futures::stream::unfold(Some((body, tally)), move |st| {
        let abort = abort.clone();
        async move {
            let (mut inner, tally) = st?;
            let item: Result<Bytes, BodyFailure> = tokio::select! {
                biased;
                () = abort.cancelled() => Err(BodyFailure::Aborted),
                next = tokio::time::timeout(BODY_IDLE_TIMEOUT, inner.next()) => match next {
                    Err(_) => Err(BodyFailure::Idle),
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => Err(BodyFailure::Broken(e.to_string())),
                    Ok(Some(Ok(bytes))) => Ok(bytes),
                },
            };
            let mut t = tally.lock().unwrap_or_else(PoisonError::into_inner);
            let failure = match item {
                Ok(bytes) if t.count + bytes.len() as u64 <= limit => {
                    if let Some(h) = t.sha256.as_mut() {
                        h.update(&bytes);
                    }
                    if let Some(c) = t.crc64nvme.as_mut() {
                        c.update(&bytes);
                    }
                    if let Some(chain) = t.sha256_chain.as_mut() {
                        chain.update(&bytes);
                    }
                    t.count += bytes.len() as u64;
                    drop(t);
                    return Some((Ok(bytes), Some((inner, tally))));
                }
                Ok(_) => BodyFailure::TooLong,
                Err(f) => f,
            };
            let err = std::io::Error::other(format!("{failure:?}"));
            t.failure = Some(failure);
            // After an error the stream ends.
            Some((Err(err), None))
        }
    }))
}

/// Reads a body that is not going to be stored and checks its length and digests; returns its
/// CRC-64/NVME (to compare with a stored chunk's).
pub(crate) async fn read_unstored(
    req: &ChunkRequest,
    body: ByteStream,
) -> Result<u64, IngestError> {
    let tally = Arc::new(Mutex::new(Tally::new(req, false)));
    let mut stream = metered(body, req.len, Arc::clone(&tally), CancellationToken::new());
    while let Some(item) = stream.next().await {
        if item.is_err() {
            break;
        }
    }
    drop(stream);
    let tally = Tally::take(&tally);
    metrics::counter!("lfusys_bytes_received_total").increment(tally.count);
    verify(req, tally, Ok(None)).map(|w| w.crc64nvme)
}

/// Compares what was streamed with what was declared; returns what the store wrote (or, for
/// a body not stored, its CRC-64/NVME). A broken body wins over the store's answer, which
/// wins over the length, then the digests.
pub(crate) fn verify(
    req: &ChunkRequest,
    tally: Tally,
    written: Result<Option<WrittenChunk>, StoreError>,
) -> Result<WrittenChunk, IngestError> {
    let (index, len) = (req.index, req.len);
    if let Some(failure) = tally.failure {
        return Err(match failure {
            BodyFailure::TooLong => IngestError::BodyTooLong { index, len },
            BodyFailure::Broken(reason) => IngestError::BodyEnded {
                index,
                len,
                received: tally.count,
                reason,
            },
            BodyFailure::Aborted => IngestError::WriteStopped { index },
            BodyFailure::Idle => IngestError::BodyIdle {
                index,
                idle_secs: BODY_IDLE_TIMEOUT.as_secs(),
            },
        });
    }
    let written = written.map_err(|e| store_error(req, e))?;
    if tally.count != len {
        return Err(IngestError::BodyShort {
            index,
            len,
            received: tally.count,
        });
    }
    let written = match (written, tally.crc64nvme) {
        (Some(w), _) => w,
        (None, Some(crc)) => WrittenChunk {
            crc64nvme: crc.finish(),
            etag: None,
        },
        (None, None) => unreachable!("a body not stored is tallied with its CRC"),
    };
    if let Some(declared) = req.digests.crc64nvme {
        if declared != written.crc64nvme {
            return Err(IngestError::DigestMismatch {
                index,
                algorithm: "CRC-64/NVME",
                declared: crc64_hex(declared),
                actual: Some(crc64_hex(written.crc64nvme)),
            });
        }
    }
    if let (Some(declared), Some(hasher)) = (req.digests.sha256, tally.sha256) {
        let actual: Sha256 = hasher.finalize().into();
        if actual != declared {
            return Err(IngestError::DigestMismatch {
                index,
                algorithm: "SHA-256",
                declared: to_hex(&declared),
                actual: Some(to_hex(&actual)),
            });
        }
    }
    Ok(written)
}

/// Why the blob store did not take the chunk.
fn store_error(req: &ChunkRequest, e: StoreError) -> IngestError {
    let (index, len) = (req.index, req.len);
    match e {
        // Only S3 refuses a part, for the CRC-64/NVME it was sent with.
        StoreError::DigestMismatch => IngestError::DigestMismatch {
            index,
            algorithm: "CRC-64/NVME",
            declared: req.digests.crc64nvme.map(crc64_hex).unwrap_or_default(),
            actual: None,
        },
        StoreError::LengthMismatch { actual, .. } => IngestError::BodyShort {
            index,
            len,
            received: actual,
        },
        StoreError::Body {
            message: reason, ..
        } => IngestError::BodyFailed { index, reason },
        e @ StoreError::Unavailable { .. } => IngestError::StorageUnavailable(e),
        e @ StoreError::Full { .. } => IngestError::StorageFull(e),
        e => IngestError::Storage(e),
    }
}

/// Reads and discards at most `limit` bytes of a body that is answered without being
/// stored (for at most [`DRAIN_TIMEOUT`]), so that an HTTP/1.1 client still sending gets
/// the answer rather than a reset connection.
pub async fn drain(mut body: ByteStream, limit: u64) {
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut seen = 0u64;
        while let Some(Ok(bytes)) = body.next().await {
            seen += bytes.len() as u64;
            if seen > limit {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use lfusys_core::digest::{crc64nvme, ChunkDigests};
    use lfusys_core::plan::UploadPlan;

    use super::*;

    fn once(data: &'static [u8]) -> ByteStream {
        Box::pin(futures::stream::iter([Ok(Bytes::from_static(data))]))
    }

    fn request(len: u64, digest: Sha256) -> ChunkRequest {
        ChunkRequest {
            owner_id: "o".into(),
            upload_id: "u".into(),
            plan: UploadPlan::new(len, len),
            index: 0,
            len,
            digests: ChunkDigests {
                sha256: Some(digest),
                crc64nvme: None,
            },
            sha256_chain: false,
        }
    }

    fn crc_request(len: u64, crc: u64) -> ChunkRequest {
        ChunkRequest {
            digests: ChunkDigests {
                sha256: None,
                crc64nvme: Some(crc),
            },
            ..request(len, [0; 32])
        }
    }

    #[tokio::test]
    async fn metered_stream_hashes_counts_and_stops_past_the_limit() {
        let tally = Arc::new(Mutex::new(Tally::new(&request(5, [0; 32]), false)));
        let out: Vec<_> = metered(
            once(b"hello"),
            5,
            Arc::clone(&tally),
            CancellationToken::new(),
        )
        .collect()
        .await;
        assert_eq!(out.len(), 1);
        let t = Tally::take(&tally);
        assert_eq!(t.count, 5);
        assert_eq!(t.crc64nvme.as_ref().unwrap().finish(), crc64nvme(b"hello"));
        let d: Sha256 = t.sha256.unwrap().finalize().into();
        assert_eq!(
            to_hex(&d),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );

        let tally = Arc::new(Mutex::new(Tally::default()));
        let out: Vec<_> = metered(
            once(b"hello!"),
            5,
            Arc::clone(&tally),
            CancellationToken::new(),
        )
        .collect()
        .await;
        assert!(out[0].is_err());
        assert!(matches!(
            tally.lock().unwrap().failure,
            Some(BodyFailure::TooLong)
        ));

        let tally = Arc::new(Mutex::new(Tally::default()));
        let abort = CancellationToken::new();
        abort.cancel();
        let out: Vec<_> = metered(once(b"hello"), 5, Arc::clone(&tally), abort)
            .collect()
            .await;
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err());
        assert!(matches!(
            tally.lock().unwrap().failure,
            Some(BodyFailure::Aborted)
        ));
    }

    #[tokio::test]
    async fn a_broken_body_keeps_its_reason() {
        let body: ByteStream = Box::pin(futures::stream::iter([
            Ok(Bytes::from_static(b"he")),
            Err(std::io::Error::other("connection reset")),
        ]));
        let req = request(5, [0; 32]);
        match read_unstored(&req, body).await {
            Err(IngestError::BodyEnded {
                received, reason, ..
            }) => assert_eq!((received, reason.as_str()), (2, "connection reset")),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn unstored_bodies_are_verified() {
        let digest: Sha256 = sha2::Sha256::digest(b"hello").into();
        assert_eq!(
            read_unstored(&request(5, digest), once(b"hello"))
                .await
                .unwrap(),
            crc64nvme(b"hello")
        );
        let crc = crc64nvme(b"hello");
        assert!(read_unstored(&crc_request(5, crc), once(b"hello"))
            .await
            .is_ok());
        assert!(matches!(
            read_unstored(&crc_request(5, crc), once(b"hellO")).await,
            Err(IngestError::DigestMismatch {
                algorithm: "CRC-64/NVME",
                actual: Some(_),
                ..
            })
        ));
        assert!(matches!(
            read_unstored(&request(5, digest), once(b"hellO")).await,
            Err(IngestError::DigestMismatch {
                actual: Some(_),
                ..
            })
        ));
        assert!(matches!(
            read_unstored(&request(6, digest), once(b"hello")).await,
            Err(IngestError::BodyShort { received: 5, .. })
        ));
        assert!(matches!(
            read_unstored(&request(4, digest), once(b"hello")).await,
            Err(IngestError::BodyTooLong { .. })
        ));
    }

    #[test]
    fn store_errors_become_answers() {
        let req = crc_request(5, 42);
        let ok = || Tally {
            count: 5,
            ..Tally::default()
        };
        let written = |crc| {
            Ok(Some(WrittenChunk {
                crc64nvme: crc,
                etag: Some("etag".into()),
            }))
        };
        assert!(matches!(
            verify(&req, ok(), Err(StoreError::DigestMismatch)),
            Err(IngestError::DigestMismatch { actual: None, .. })
        ));
        assert!(matches!(
            verify(
                &req,
                ok(),
                Err(StoreError::LengthMismatch {
                    expected: 5,
                    actual: 3
                })
            ),
            Err(IngestError::BodyShort { received: 3, .. })
        ));
        assert!(matches!(
            verify(&req, ok(), Err(StoreError::unavailable("x"))),
            Err(IngestError::StorageUnavailable(
                StoreError::Unavailable { .. }
            ))
        ));
        assert!(matches!(
            verify(&req, ok(), Err(StoreError::other("x"))),
            Err(IngestError::Storage(_))
        ));
        assert_eq!(
            verify(&req, ok(), written(42)).unwrap().etag.as_deref(),
            Some("etag")
        );
        // The store's CRC of what it wrote is checked against the declared one.
        assert!(matches!(
            verify(&req, ok(), written(41)),
            Err(IngestError::DigestMismatch {
                algorithm: "CRC-64/NVME",
                ..
            })
        ));
    }
}
