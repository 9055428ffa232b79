//! The one pass over the file (docs/protocol.md, "Checksums"): every byte is read once, in
//! order, on one blocking thread that computes the chunk's CRC-64/NVME and feeds the
//! whole-file SHA-256 and CRC-64/NVME as it goes. A chunk the server lacks goes to the
//! senders; a chunk the server has is checked against the server's CRC of it instead of
//! being sent.
//!
//! Two rules keep a resumed upload from ever mixing two files:
//! - the chunks the server holds before the first missing one are checked in the pass
//!   before anything is sent ([`PassError::NotThisFile`] leaves the upload untouched);
//! - the server's chunks after the first missing one are checked before the pass begins
//!   ([`check_received`]: at most the chunks that were in flight when the upload stopped,
//!   which the pass then reads a second time).
//!
//! The last missing chunk (in file order) is held back and returned: the upload cannot
//! complete before the caller has declared the whole-file checksums, which are known only
//! once the pass has read the end of the file.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use indicatif::ProgressBar;
use lfusys_core::digest::{crc64nvme, crc64nvme_combine, Crc64};
use lfusys_core::plan::UploadPlan;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// A chunk read from the file, with its CRC-64/NVME.
pub struct Chunk {
    pub index: u32,
    pub data: Bytes,
    pub crc64nvme: Crc64,
}

/// What the pass found out about the whole file.
pub struct PassOutcome {
    pub crc64nvme: Crc64,
    /// Lowercase hex; `None` when not asked for.
    pub sha256: Option<String>,
    /// The last missing chunk, not yet sent (`None` when nothing was missing).
    pub held_back: Option<Chunk>,
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A chunk the server holds is not this file's: nothing was sent.
    #[error("chunk {index} on the server is not this file's")]
    NotThisFile { index: u32 },
    #[error("{0} changed while it was being uploaded (chunk {1} reads differently now); run the command again")]
    Changed(String, u32),
    #[error("the upload stopped")]
    SendersGone,
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

/// The chunks the server holds, by index, with its CRC-64/NVME of each.
pub type Received = HashMap<u32, Crc64>;

/// Reads chunk `index` of `plan` from `file`.
pub fn read_chunk(file: &File, plan: &UploadPlan, index: u32) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let len = plan
        .chunk_len(index)
        .context("chunk index out of the plan")?;
    let mut buf = vec![0u8; usize::try_from(len)?];
    file.read_exact_at(&mut buf, plan.offset(index))
        .context("reading the file (did it change during the upload?)")?;
    Ok(buf)
}

/// Checks, before the pass, the server's chunks that come after the first chunk it lacks
/// (see the module documentation); `Err(NotThisFile)` when one is not this file's.
pub fn check_received(
    file: &File,
    plan: &UploadPlan,
    received: &Received,
) -> Result<(), PassError> {
    let Some(first_missing) = (0..plan.total_chunks).find(|i| !received.contains_key(i)) else {
        return Ok(());
    };
    let mut later: Vec<_> = received
        .iter()
        .filter(|(&i, _)| i > first_missing)
        .collect();
    later.sort_unstable();
    for (&index, &crc) in later {
        if crc64nvme(&read_chunk(file, plan, index)?) != crc {
            return Err(PassError::NotThisFile { index });
        }
    }
    Ok(())
}

/// Runs the pass on the calling (blocking) thread; missing chunks but the last go to `send`.
pub fn run(
    file: &File,
    plan: &UploadPlan,
    received: &Received,
    hash_sha256: bool,
    send: &mpsc::Sender<Chunk>,
    progress: &ProgressBar,
    name: &str,
) -> Result<PassOutcome, PassError> {
    let last_missing = (0..plan.total_chunks)
        .rev()
        .find(|i| !received.contains_key(i));
    let mut sent_any = false;
    let mut sha = hash_sha256.then(Sha256::new);
    let mut whole: Option<Crc64> = None;
    let mut held_back = None;
    for index in 0..plan.total_chunks {
        let data = read_chunk(file, plan, index)?;
        let crc = crc64nvme(&data);
        if let Some(h) = sha.as_mut() {
            h.update(&data);
        }
        let len = data.len() as u64;
        whole = Some(whole.map_or(crc, |w| crc64nvme_combine(w, crc, len)));
        if let Some(&theirs) = received.get(&index) {
            if theirs != crc {
                return Err(if sent_any {
                    PassError::Changed(name.to_owned(), index)
                } else {
                    PassError::NotThisFile { index }
                });
            }
            progress.inc(len);
            continue;
        }
        let chunk = Chunk {
            index,
            data: Bytes::from(data),
            crc64nvme: crc,
        };
        if Some(index) == last_missing {
            held_back = Some(chunk);
        } else {
            send.blocking_send(chunk)
                .map_err(|_| PassError::SendersGone)?;
            sent_any = true;
        }
    }
    Ok(PassOutcome {
        crc64nvme: whole.unwrap_or_else(|| crc64nvme(&[])),
        sha256: sha.map(|h| hex::encode(h.finalize())),
        held_back,
    })
}

/// Opens `path` for the pass.
pub fn open(path: &std::path::Path) -> anyhow::Result<Arc<File>> {
    use anyhow::Context;
    Ok(Arc::new(
        File::open(path).with_context(|| format!("opening {}", path.display()))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(data: &[u8]) -> (tempfile::NamedTempFile, File) {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(data).unwrap();
        let file = File::open(f.path()).unwrap();
        (f, file)
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// Runs the pass with senders that collect what they are given.
    fn pass(
        file: &File,
        plan: &UploadPlan,
        received: &Received,
    ) -> (Result<PassOutcome, PassError>, Vec<u32>) {
        let (tx, mut rx) = mpsc::channel(64);
        let out = run(file, plan, received, true, &tx, &ProgressBar::hidden(), "f");
        drop(tx);
        let mut sent = Vec::new();
        while let Ok(c) = rx.try_recv() {
            sent.push(c.index);
        }
        (out, sent)
    }

    #[test]
    fn a_new_upload_sends_all_but_the_last_and_knows_the_whole_file() {
        let bytes = data(1000, 1);
        let (_tmp, file) = file_of(&bytes);
        let plan = UploadPlan::new(1000, 300);
        let (out, sent) = pass(&file, &plan, &Received::new());
        let out = out.unwrap();
        assert_eq!(sent, [0, 1, 2]);
        assert_eq!(out.held_back.unwrap().index, 3);
        assert_eq!(out.crc64nvme, crc64nvme(&bytes));
        assert_eq!(out.sha256.unwrap(), hex::encode(Sha256::digest(&bytes)));
    }

    #[test]
    fn a_resumed_upload_sends_only_what_is_missing() {
        let bytes = data(1000, 2);
        let (_tmp, file) = file_of(&bytes);
        let plan = UploadPlan::new(1000, 300);
        let received: Received = [0, 2]
            .into_iter()
            .map(|i| (i, crc64nvme(&read_chunk(&file, &plan, i).unwrap())))
            .collect();
        assert!(check_received(&file, &plan, &received).is_ok());
        let (out, sent) = pass(&file, &plan, &received);
        let out = out.unwrap();
        assert_eq!(sent, [1]);
        assert_eq!(out.held_back.unwrap().index, 3);
        assert_eq!(out.crc64nvme, crc64nvme(&bytes));
    }

    #[test]
    fn another_file_of_the_same_size_is_never_resumed_into() {
        let ours = data(1000, 3);
        let theirs = data(1000, 4);
        let (_a, file) = file_of(&ours);
        let (_b, other) = file_of(&theirs);
        let plan = UploadPlan::new(1000, 300);
        let crcs_of = |f: &File, idx: &[u32]| -> Received {
            idx.iter()
                .map(|&i| (i, crc64nvme(&read_chunk(f, &plan, i).unwrap())))
                .collect()
        };
        // The server holds the other file's first chunk: refused before anything is sent.
        let (out, sent) = pass(&file, &plan, &crcs_of(&other, &[0]));
        assert!(matches!(out, Err(PassError::NotThisFile { index: 0 })));
        assert!(sent.is_empty());
        // It holds a later chunk of the other file: caught before the pass begins.
        assert!(matches!(
            check_received(&file, &plan, &crcs_of(&other, &[2])),
            Err(PassError::NotThisFile { index: 2 })
        ));
    }
}
