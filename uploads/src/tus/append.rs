//! Appending a request body at an upload's offset: the one use case of tus's `PATCH` (and of
//! creation-with-upload), mapped onto the chunk plan.
//!
//! An append may start and end anywhere. Its body is cut at the chunk boundaries:
//!
//! - a part that completes a chunk goes to the chunk's place through the protocol-neutral
//!   ingest core ([`ingest::ingest_chunk`]: lease, stream, record), behind the bytes of the
//!   chunk that earlier appends staged — read back from the blob store, the only bytes ever
//!   read back, and only when an append ended inside a chunk;
//! - a part that ends inside a chunk (the body's `Content-Length` says so) is staged
//!   ([`ingest::stage_piece`]), durably, apart from the chunk's place, until the rest arrives.
//!
//! So the offset an upload reports ([`offset_of`]) counts only bytes that are durably stored:
//! the chunks recorded in order from the first, plus the staged prefix of the next one. A
//! body that breaks off keeps every chunk it completed and every piece it staged; the bytes
//! of a chunk it was streaming when it broke are lost and sent again. A body of unknown length
//! (chunked) is taken chunk by chunk the same way; if it ends inside a chunk, that chunk's
//! part of it is refused and must be sent again. Two appends racing on one upload never mix
//! bytes: each part is written under the chunk's lease (`409` with `Retry-After` for the other).

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use lfusys_core::digest::ChunkDigests;
use lfusys_core::plan::UploadPlan;
use lfusys_core::sha256_chain::Sha256Chain;
use sessions_api::proto;
use storage::{staged_prefix, ByteStream, StagedPiece, UploadId};

use crate::ingest::{self, ChunkRequest, HeldChunk, IngestError, Written};
use crate::streams::Splitter;
use crate::WorkerState;

/// Where an upload in progress stands: how many bytes are durably stored, in order from its
/// first byte, and the staged pieces of the chunk that offset falls in (an append there
/// starts from them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offset {
    pub at: u64,
    staged: Vec<StagedPiece>,
}

impl Offset {
    /// The offset of a new upload.
    pub fn start() -> Self {
        Self::default()
    }
}

/// Where `upload` stands (see [`Offset`]).
pub async fn offset_of(state: &WorkerState, upload: &proto::Upload) -> Result<Offset, IngestError> {
    let plan = plan_of(upload);
    let Some(next) = first_missing(&upload.received_chunks, plan.total_chunks) else {
        return Ok(Offset {
            at: plan.size,
            staged: Vec::new(),
        });
    };
    let staged = staged(state, upload, next).await?;
    let len = plan.chunk_len(next).unwrap_or_default();
    Ok(Offset {
        at: plan.offset(next) + staged_prefix(&staged).min(len),
        staged,
    })
}

/// The first chunk index not in `received` (ascending), if any below `total`.
fn first_missing(received: &[u32], total: u32) -> Option<u32> {
    let mut next = 0;
    for &index in received {
        if index != next {
            break;
        }
        next += 1;
    }
    (next < total).then_some(next)
}

fn plan_of(upload: &proto::Upload) -> UploadPlan {
    UploadPlan::new(upload.size, upload.chunk_size)
}

async fn staged(
    state: &WorkerState,
    upload: &proto::Upload,
    index: u32,
) -> Result<Vec<StagedPiece>, IngestError> {
    state
        .blob()
        .staged_pieces(&UploadId::from(&upload.upload_id), index)
        .await
        .map_err(IngestError::StorageUnavailable)
}

/// The end of an append: the offset it reached, and why it stopped short of its body's end.
#[derive(Debug)]
pub struct Appended {
    pub offset: u64,
    pub error: Option<IngestError>,
}

/// Appends `body` (of `declared` bytes, when the request said) to `upload` at `start`, which
/// the caller checked is the offset the request names. Stops at the first part that is
/// refused.
///
/// With `hold`, the chunks the body completes are written to their places but recorded only
/// once the whole body has passed (a checksum of it decides, [`super::checksum`]); a body
/// that fails anywhere keeps nothing. Their leases are renewed meanwhile.
pub async fn append(
    state: &WorkerState,
    upload: &proto::Upload,
    start: Offset,
    declared: Option<u64>,
    body: ByteStream,
    hold: bool,
) -> Appended {
    let plan = plan_of(upload);
    let (mut offset, mut staged) = (start.at, Some(start.staged));
    let body = Splitter::new(body);
    let mut remaining = declared;
    let mut held: Vec<(Box<HeldChunk>, Vec<StagedPiece>)> = Vec::new();
    while offset < plan.size && remaining != Some(0) {
        let index = u32::try_from(offset / plan.chunk_size).unwrap_or(u32::MAX);
        let chunk_start = plan.offset(index);
        let Some(chunk_len) = plan.chunk_len(index) else {
            break;
        };
        let within = offset - chunk_start;
        let rest = chunk_len - within;
        let part = match remaining {
            Some(r) if r < rest => r,
            _ => rest,
        };
        let req = ChunkRequest {
            owner_id: upload.owner_id.clone(),
            upload_id: upload.upload_id.clone(),
            plan,
            index,
            len: chunk_len,
            digests: ChunkDigests::default(),
            // tus bytes arrive in file order: the file's SHA-256 is hashed on as they do.
            sha256_chain: true,
        };
        let result = if part < rest {
            let staging = ingest::stage_piece(state, &req, within, part, body.take(part));
            renewing(&held, staging).await
        } else {
            // Only the first chunk can have staged pieces: every later one starts whole.
            let pieces = staged.take().unwrap_or_default();
            // A held chunk before this one is not recorded: its chain is handed on here.
            let chain = held.last().and_then(|(h, _)| h.sha256_chain());
            let tail = body.take(part);
            let writing = write_whole(state, &req, &pieces, within, chain, tail);
            match renewing(&held, writing).await {
                Ok(Written::Held(chunk)) if hold => {
                    held.push((chunk, pieces));
                    Ok(())
                }
                Ok(Written::Held(chunk)) => record(state, chunk, &pieces).await,
                Ok(Written::Settled(_)) => Ok(()),
                Err(e) => Err(e),
            }
        };
        if let Err(error) = result {
            if hold {
                release(held).await;
                return Appended {
                    offset: start.at,
                    error: Some(error),
                };
            }
            return Appended {
                offset,
                error: Some(error),
            };
        }
        offset += part;
        remaining = remaining.map(|r| r - part);
    }
    // The whole body has passed (and with it its checksum): the held chunks are kept, in order.
    let mut chunks = held.into_iter();
    while let Some((chunk, pieces)) = chunks.next() {
        let at = plan.offset(chunk.index()).max(start.at);
        if let Err(error) = record(state, chunk, &pieces).await {
            release(chunks.collect()).await;
            return Appended {
                offset: at,
                error: Some(error),
            };
        }
    }
    Appended {
        offset,
        error: None,
    }
}

/// Writes chunk `req.index` whole, not yet recorded: its first `within` bytes from its
/// staged `pieces`, the rest from `tail`.
async fn write_whole(
    state: &WorkerState,
    req: &ChunkRequest,
    pieces: &[StagedPiece],
    within: u64,
    chain: Option<Sha256Chain>,
    tail: ByteStream,
) -> Result<Written, IngestError> {
    let body = if within == 0 {
        tail
    } else {
        Box::pin(staged_bytes(state, req, pieces.to_vec(), within).chain(tail))
    };
    ingest::write_chunk(state, req, chain, body).await
}

/// Records a written chunk; its staged pieces, now part of it, are discarded.
async fn record(
    state: &WorkerState,
    chunk: Box<HeldChunk>,
    pieces: &[StagedPiece],
) -> Result<(), IngestError> {
    let (upload_id, index) = (UploadId::from(chunk.upload_id()), chunk.index());
    chunk.commit().await?;
    if pieces.is_empty() {
        return Ok(());
    }
    if let Err(e) = state.blob().discard_staged(&upload_id, index).await {
        // Harmless: the upload's abort or commit removes them too.
        tracing::warn!(error = %e, %upload_id, index, "could not discard the staged pieces of a recorded chunk");
    }
    Ok(())
}

/// Gives back the leases of chunks that are not kept.
async fn release(held: Vec<(Box<HeldChunk>, Vec<StagedPiece>)>) {
    for (chunk, _) in held {
        chunk.release().await;
    }
}

/// Runs `work` while renewing the leases of the `held` chunks.
async fn renewing<T>(
    held: &[(Box<HeldChunk>, Vec<StagedPiece>)],
    work: impl std::future::Future<Output = T>,
) -> T {
    let Some(every) = held.iter().map(|(h, _)| h.renew_every()).min() else {
        return work.await;
    };
    tokio::pin!(work);
    let every = every.max(std::time::Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let renewals: Vec<_> = held.iter().map(|(c, _)| (c.index(), c.renewal())).collect();
                for (index, renewal) in renewals {
                    if let Err(e) = renewal.await {
                        // Its commit will be refused; the request then answers why.
                        tracing::warn!(error = %e, index, "could not renew the lease of a held chunk");
                    }
                }
            }
        }
    }
}

/// The first `len` bytes of a chunk from its staged pieces (ascending by start; they may
/// overlap, all hold the same file's bytes at their places), read lazily.
fn staged_bytes(
    state: &WorkerState,
    req: &ChunkRequest,
    pieces: Vec<StagedPiece>,
    len: u64,
) -> ByteStream {
    let mut spans = Vec::new();
    let mut covered = 0;
    for piece in pieces {
        if covered >= len || piece.start > covered {
            break;
        }
        if piece.end() <= covered {
            continue;
        }
        let end = piece.end().min(len);
        spans.push((piece, covered - piece.start, end - covered));
        covered = end;
    }
    let (blob, upload_id, index) = (
        Arc::clone(state.blob()),
        UploadId::from(&req.upload_id),
        req.index,
    );
    let short = covered < len;
    let stream = futures::stream::iter(spans)
        .then(move |(piece, skip, take)| {
            let (blob, upload_id) = (Arc::clone(&blob), upload_id.clone());
            async move {
                let read = blob
                    .read_staged(&upload_id, index, piece)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Ok::<_, std::io::Error>(slice(read, skip, take))
            }
        })
        .try_flatten();
    if short {
        // The pieces went missing since the offset was taken: the chunk must not be written.
        let missing = futures::stream::once(async {
            Err(std::io::Error::other(
                "the chunk's staged bytes are gone; ask for the upload's offset again",
            ))
        });
        return Box::pin(stream.chain(missing));
    }
    Box::pin(stream)
}

/// `take` bytes of `stream` after skipping `skip`.
fn slice(stream: ByteStream, skip: u64, take: u64) -> ByteStream {
    Box::pin(futures::stream::unfold(
        (stream, skip, take),
        |(mut s, mut skip, take)| async move {
            loop {
                if take == 0 {
                    return None;
                }
                let mut bytes = match s.next().await? {
                    Ok(b) => b,
                    Err(e) => return Some((Err(e), (s, 0, 0))),
                };
                let n = bytes.len() as u64;
                if skip >= n {
                    skip -= n;
                    continue;
                }
                let _ = bytes.split_to(skip as usize);
                if bytes.len() as u64 > take {
                    bytes.truncate(take as usize);
                }
                let left = take - bytes.len() as u64;
                return Some((Ok(bytes), (s, 0, left)));
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::testing::{collect, stream_of};

    #[test]
    fn the_first_missing_chunk() {
        assert_eq!(first_missing(&[], 3), Some(0));
        assert_eq!(first_missing(&[0, 1], 3), Some(2));
        assert_eq!(first_missing(&[0, 2], 3), Some(1));
        assert_eq!(first_missing(&[1, 2], 3), Some(0));
        assert_eq!(first_missing(&[0, 1, 2], 3), None);
    }

    #[tokio::test]
    async fn slices_skip_and_take() {
        assert_eq!(
            collect(slice(stream_of(&[b"abc", b"defgh", b"ij"]), 4, 5)).await,
            b"efghi"
        );
        assert_eq!(collect(slice(stream_of(&[b"abc"]), 0, 3)).await, b"abc");
        assert_eq!(collect(slice(stream_of(&[b"abc"]), 3, 0)).await, b"");
    }
}
