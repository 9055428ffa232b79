//! `lfusys upload`: parallel, resumable uploads that read the file once ([`pass`]).
//!
//! Re-running the same command resumes: the client finds its unfinished uploads of a file of
//! the same name and size on the server, proves from the server's CRC-64/NVME of each chunk
//! it holds that the upload is this file's (another file is never resumed into), and sends
//! only the chunks the server lacks. Before the last chunk it declares the whole-file
//! CRC-64/NVME and SHA-256 it computed on the way (`PATCH /api/v1/uploads/{id}`); the server
//! verifies the stored file against the CRC.

mod pass;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use lfusys_core::digest::crc64_hex;
use lfusys_core::plan::UploadPlan;
use tokio::sync::Mutex;

use crate::client::{Api, ApiError, UploadStatus};
use pass::PassError;

#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Chunks in flight at once.
    pub parallelism: usize,
    /// Attempts per chunk on transient failures.
    pub attempts: u32,
    /// Draw progress bars.
    pub progress: bool,
    /// Give up waiting for the assembly after this long.
    pub assembly_timeout: Duration,
    /// Compute the file's SHA-256 in the pass and declare it with its CRC-64/NVME: the File
    /// then carries it. Without it the whole file is still verified (by its CRC-64/NVME), and
    /// the File has no SHA-256.
    pub declare_sha256: bool,
    /// The SHA-256 the file must have (e.g. a published checksum), declared at creation: a
    /// file that reads otherwise fails its upload.
    pub expected_sha256: Option<String>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            parallelism: 4,
            attempts: 8,
            progress: true,
            assembly_timeout: Duration::from_secs(3600),
            declare_sha256: true,
            expected_sha256: None,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct UploadReport {
    pub path: String,
    pub file_id: String,
    pub upload_id: String,
    /// Where the chunks went (the upload workers).
    pub upload_url: String,
    pub size: u64,
    /// The whole-file SHA-256 computed and declared (none when not asked for).
    pub sha256: Option<String>,
    /// The whole-file CRC-64/NVME computed and declared, which the server verified.
    pub crc64nvme: String,
    /// Chunks the server already had (resumed upload).
    pub chunks_skipped: u32,
    pub chunks_sent: u32,
    /// Seconds from creating (or resuming) the upload to the File being completed.
    pub seconds: f64,
    pub megabytes_per_second: f64,
}

fn bar(progress: bool, len: u64, msg: String) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:24!} [{bar:32.cyan/blue}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta:>4}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

fn content_type_of(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("txt" | "log" | "md") => "text/plain",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("pdf") => "application/pdf",
        Some("zip") => "application/zip",
        Some("gz" | "tgz") => "application/gzip",
        Some("iso") => "application/x-iso9660-image",
        Some("mp4") => "video/mp4",
        Some("mkv") => "video/x-matroska",
        Some("tar") => "application/x-tar",
        _ => "application/octet-stream",
    }
}

/// Uploads one file (or resumes its unfinished upload) and waits until the server has
/// assembled it into a completed File.
pub async fn upload_file(
    api: &Api,
    path: &Path,
    opts: &UploadOptions,
) -> anyhow::Result<UploadReport> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let size = meta.len();
    if size == 0 {
        bail!("{} is empty: there is nothing to upload", path.display());
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", path.display()))?
        .to_owned();
    let file = pass::open(path)?;
    let started = Instant::now();

    // Unfinished uploads of a file of this name and size may be this file's: each is tried,
    // newest first, and resumed only once its chunks prove to be this file's.
    let candidates: Vec<UploadStatus> = api
        .unfinished_uploads()
        .await?
        .into_iter()
        .filter(|u| u.name == name && u.size == size)
        .collect();
    for candidate in candidates {
        let status = api.upload_status(&candidate.upload_id).await?;
        let expects = status
            .sha256
            .as_ref()
            .filter(|_| status.crc64nvme.is_none());
        if expects.is_some() && expects != opts.expected_sha256.as_ref() {
            continue; // created to hold a file of another SHA-256
        }
        let Some(received) = provable(&status) else {
            continue;
        };
        let plan = UploadPlan::new(status.size, status.chunk_size);
        let checked = {
            let (file, plan, received) = (Arc::clone(&file), plan, received.clone());
            tokio::task::spawn_blocking(move || pass::check_received(&file, &plan, &received))
                .await?
        };
        match checked {
            Ok(()) => {}
            Err(PassError::NotThisFile { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
        let session = match status.state.as_str() {
            // Every chunk is there: nothing to send, but the chunks are this file's only if
            // the whole of it reads the same.
            "assembling" => Session::assembling(status),
            _ => Session::resume(api, status).await?,
        };
        match transfer(api, &file, &name, session, received, opts).await {
            Ok(report) => return finish(api, path, report, opts, started).await,
            Err(Transfer::Failed(e)) => return Err(e),
            // Not this file's: the next candidate, or a new upload.
            Err(Transfer::NotThisFile) => {}
        }
    }
    let created = api
        .create_upload(
            &name,
            size,
            content_type_of(path),
            opts.expected_sha256.as_deref(),
        )
        .await?;
    let status = api.upload_status(&created.upload_id).await?;
    let session = Session {
        upload_url: created.upload_url,
        token: created.upload_token,
        status,
    };
    match transfer(api, &file, &name, session, pass::Received::new(), opts).await {
        Ok(report) => finish(api, path, report, opts, started).await,
        Err(Transfer::NotThisFile) => bail!("{name}: a new upload had chunks already"),
        Err(Transfer::Failed(e)) => Err(e),
    }
}

/// The chunks a candidate holds with the CRC of each, or `None` when they cannot be proved to
/// be this file's (the server gives no CRC for some chunk: an older server). A candidate that
/// holds no chunk yet holds nothing to mix with this file: it is taken as it is.
fn provable(status: &UploadStatus) -> Option<pass::Received> {
    status
        .received_crcs()
        .into_iter()
        .map(|(index, crc)| crc.map(|c| (index, c)))
        .collect()
}

/// The upload a transfer goes to.
struct Session {
    upload_url: String,
    token: String,
    status: UploadStatus,
}

impl Session {
    fn assembling(status: UploadStatus) -> Self {
        Self {
            upload_url: String::new(),
            token: String::new(),
            status,
        }
    }

    /// A fresh token and the current chunk URL (workers may have moved).
    async fn resume(api: &Api, status: UploadStatus) -> anyhow::Result<Self> {
        let renewed = api.renew_upload_token(&status.upload_id).await?;
        let upload_url = renewed
            .upload_url
            .unwrap_or_else(|| format!("/api/v1/chunks/{}", status.upload_id));
        Ok(Self {
            upload_url,
            token: renewed.upload_token,
            status,
        })
    }
}

/// How a transfer ended without a report.
enum Transfer {
    /// A chunk the server holds is not this file's; nothing was sent.
    NotThisFile,
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Transfer {
    fn from(e: E) -> Self {
        Self::Failed(e.into())
    }
}

/// The pass over the file with the chunks it does not skip sent by `opts.parallelism` senders,
/// then the declaration of the whole-file checksums, then the last chunk.
async fn transfer(
    api: &Api,
    file: &Arc<std::fs::File>,
    name: &str,
    session: Session,
    received: pass::Received,
    opts: &UploadOptions,
) -> Result<UploadReport, Transfer> {
    let Session {
        upload_url,
        token,
        status,
    } = session;
    let plan = UploadPlan::new(status.size, status.chunk_size);
    let skipped = received.len() as u32;
    let pb = bar(opts.progress, status.size, name.to_owned());
    let token = Arc::new(tokio::sync::RwLock::new(token));
    let (tx, rx) = tokio::sync::mpsc::channel::<pass::Chunk>(1);
    let rx = Arc::new(Mutex::new(rx));
    let senders = (0..opts.parallelism.clamp(1, 64)).map(|_| {
        let (rx, token, pb) = (Arc::clone(&rx), Arc::clone(&token), pb.clone());
        let (upload_url, upload_id) = (upload_url.as_str(), status.upload_id.as_str());
        async move {
            loop {
                let Some(chunk) = rx.lock().await.recv().await else {
                    return Ok::<(), anyhow::Error>(());
                };
                let len = chunk.data.len() as u64;
                send_one(api, upload_id, upload_url, &token, &chunk, opts.attempts).await?;
                pb.inc(len);
            }
        }
    });
    let reader = {
        let (file, pb, name) = (Arc::clone(file), pb.clone(), name.to_owned());
        let hash = opts.declare_sha256;
        tokio::task::spawn_blocking(move || {
            let out = pass::run(&file, &plan, &received, hash, &tx, &pb, &name);
            drop(tx);
            out
        })
    };
    let (read, sent) = tokio::join!(
        async { reader.await.map_err(anyhow::Error::from) },
        futures::future::try_join_all(senders)
    );
    let outcome = match read? {
        Ok(outcome) => outcome,
        Err(PassError::NotThisFile { .. }) => return Err(Transfer::NotThisFile),
        // The senders stopped on an error of their own: theirs is the reason.
        Err(PassError::SendersGone) => {
            return Err(Transfer::Failed(
                sent.err()
                    .unwrap_or_else(|| anyhow::anyhow!("the upload stopped")),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    sent?;
    if let Some(last) = outcome.held_back {
        declare(
            api,
            &status.upload_id,
            outcome.crc64nvme,
            outcome.sha256.as_deref(),
        )
        .await?;
        send_one(
            api,
            &status.upload_id,
            &upload_url,
            &token,
            &last,
            opts.attempts,
        )
        .await?;
        pb.inc(last.data.len() as u64);
    }
    pb.finish_and_clear();
    let sent = status.total_chunks - skipped;
    Ok(UploadReport {
        path: String::new(),
        file_id: String::new(),
        upload_id: status.upload_id,
        upload_url,
        size: status.size,
        sha256: outcome.sha256,
        crc64nvme: crc64_hex(outcome.crc64nvme),
        chunks_skipped: skipped,
        chunks_sent: sent,
        seconds: 0.0,
        megabytes_per_second: 0.0,
    })
}

/// `PATCH /api/v1/uploads/{id}` with the whole-file checksums, with the reason when refused.
async fn declare(
    api: &Api,
    upload_id: &str,
    crc64nvme: u64,
    sha256: Option<&str>,
) -> anyhow::Result<()> {
    match with_retries(DECLARE_ATTEMPTS, || {
        api.declare_checksums(upload_id, crc64nvme, sha256)
    })
    .await
    {
        Ok(_) => Ok(()),
        Err(ApiError::Problem {
            status: 422,
            detail,
            ..
        }) => bail!("{detail}"),
        Err(ApiError::Problem {
            status: 409,
            detail,
            kind,
            ..
        }) if kind.ends_with("/checksums-declared") => {
            bail!("the file changed since this upload began ({detail}); run the command again")
        }
        Err(e) => Err(anyhow::Error::new(e).context("declaring the file's checksums")),
    }
}

/// Calls of the declaration on transient failures.
const DECLARE_ATTEMPTS: u32 = 9;

/// Waits for the assembly and completes the report.
async fn finish(
    api: &Api,
    path: &Path,
    mut report: UploadReport,
    opts: &UploadOptions,
    started: Instant,
) -> anyhow::Result<UploadReport> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let done = wait_until_done(api, &report.upload_id, opts.assembly_timeout).await?;
    match done.state.as_str() {
        "completed" => {
            report.path = path.display().to_string();
            report.file_id = done.file_id.unwrap_or_default();
            report.seconds = started.elapsed().as_secs_f64();
            report.megabytes_per_second = report.size as f64 / 1e6 / report.seconds.max(1e-9);
            Ok(report)
        }
        "failed" => bail!(
            "the server could not assemble {name}: {}",
            done.error.unwrap_or_else(|| "no reason given".into())
        ),
        other => bail!("the upload of {name} ended as {other}"),
    }
}

/// Sends one chunk with its CRC-64/NVME in `Content-Digest`, retrying what can be retried.
async fn send_one(
    api: &Api,
    upload_id: &str,
    upload_url: &str,
    token: &tokio::sync::RwLock<String>,
    chunk: &pass::Chunk,
    attempts: u32,
) -> anyhow::Result<()> {
    let index = chunk.index;
    let digest = lfusys_core::digest::ChunkDigests {
        crc64nvme: Some(chunk.crc64nvme),
        sha256: None,
    }
    .to_header();
    // Another request may hold this chunk's lease (e.g. one cut off by a crash); the server
    // frees it when the lease runs out, so wait that long rather than give up.
    let in_progress_deadline = Instant::now() + Duration::from_secs(180);
    let mut attempt = 0;
    loop {
        let current = token.read().await.clone();
        let err = match api
            .put_chunk(upload_url, &current, index, chunk.data.clone(), &digest)
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let wait = match (err.status(), &err) {
            // The upload token expired: get a new one (once per expiry, shared by all tasks).
            (Some(401), _) => {
                let mut guard = token.write().await;
                if *guard == current {
                    *guard = api.renew_upload_token(upload_id).await?.upload_token;
                }
                attempt += 1;
                Duration::ZERO
            }
            (Some(410), _) => bail!("the upload was cancelled or has expired on the server"),
            (
                Some(409),
                ApiError::Problem {
                    kind, retry_after, ..
                },
            ) if kind.ends_with("/chunk-in-progress") => {
                if Instant::now() > in_progress_deadline {
                    bail!("chunk {index} stayed locked by another request: {err}");
                }
                Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 30))
            }
            // Corrupted in transit (422), or the network or server failed: retry with backoff.
            (Some(422), _) => {
                attempt += 1;
                backoff(attempt)
            }
            _ if err.is_transient() => {
                attempt += 1;
                backoff(attempt)
            }
            _ => return Err(anyhow::Error::new(err).context(format!("uploading chunk {index}"))),
        };
        if attempt >= attempts {
            bail!("chunk {index} failed {attempts} times: {err}");
        }
        tokio::time::sleep(wait).await;
    }
}

/// `call`, made again with [`backoff`] while it fails transiently, at most `attempts` times.
pub async fn with_retries<T, F, Fut>(attempts: u32, mut call: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.is_transient() && attempt < attempts => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Exponential backoff with jitter: 250 ms, 500 ms, 1 s … capped at 10 s.
pub fn backoff(attempt: u32) -> Duration {
    let base = 250u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(10_000);
    let jitter = rand::random::<u64>() % (base / 4 + 1);
    Duration::from_millis(base + jitter)
}

/// How long one status request waits for the upload to change (the long poll,
/// `GET /api/v1/uploads/{id}?wait=N`).
const STATUS_WAIT_SECS: u64 = 30;

/// Waits until the upload is completed, failed, cancelled or expired, by long polls: each
/// status request is answered as soon as the upload's state changes. A server that answers at
/// once (no long poll) is asked again after a short pause.
pub async fn wait_until_done(
    api: &Api,
    upload_id: &str,
    timeout: Duration,
) -> anyhow::Result<UploadStatus> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        let asked = Instant::now();
        let left = deadline.saturating_duration_since(asked).as_secs();
        let status = match api
            .upload_status_wait(upload_id, left.clamp(1, STATUS_WAIT_SECS))
            .await
        {
            Ok(s) => s,
            Err(e) if e.is_transient() => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if !matches!(status.state.as_str(), "uploading" | "assembling") {
            return Ok(status);
        }
        if status.state == "uploading"
            && status.received_chunks.len() < status.total_chunks as usize
        {
            bail!("the server is missing chunks of the upload; run the command again to resume");
        }
        if Instant::now() > deadline {
            bail!("the server has not finished assembling the upload after {timeout:?}");
        }
        if asked.elapsed() < Duration::from_millis(100) {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert!(
            backoff(1) >= Duration::from_millis(250) && backoff(1) < Duration::from_millis(320)
        );
        assert!(backoff(3) >= Duration::from_secs(1));
        assert!(backoff(30) <= Duration::from_millis(12_500));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type_of(Path::new("a.ISO")),
            "application/x-iso9660-image"
        );
        assert_eq!(
            content_type_of(Path::new("noext")),
            "application/octet-stream"
        );
    }
}
