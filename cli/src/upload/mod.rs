//! `lfusys upload`: parallel, resumable uploads. Re-running the same command resumes: the
//! client finds its unfinished upload of the same file (name, size and SHA-256) on the server
//! and sends only the chunks the server does not have.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::client::{Api, ApiError, UploadStatus};

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
    /// Hash the whole file first and declare its SHA-256, which the server verifies after
    /// assembly and keeps as the File's (and by which an interrupted upload is found again).
    /// Without it every chunk is still verified, and the File has no SHA-256.
    pub declare_sha256: bool,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            parallelism: 4,
            attempts: 8,
            progress: true,
            assembly_timeout: Duration::from_secs(3600),
            declare_sha256: true,
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
    /// The declared whole-file SHA-256 (none when not declared).
    pub sha256: Option<String>,
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

/// SHA-256 of a whole file, read in 1 MiB blocks.
pub async fn hash_file(path: &Path, pb: &ProgressBar) -> anyhow::Result<String> {
    let path = path.to_path_buf();
    let pb = pb.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        use std::io::Read;
        let mut f =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            pb.inc(n as u64);
        }
        Ok(hex_of(&hasher.finalize()))
    })
    .await?
}

fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
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

    let sha256 = if opts.declare_sha256 {
        let hashing = bar(opts.progress, size, format!("hashing {name}"));
        let sha256 = hash_file(path, &hashing).await?;
        hashing.finish_and_clear();
        Some(sha256)
    } else {
        None
    };

    let started = Instant::now();
    // An upload is found again by its SHA-256: without one, a new upload starts.
    let existing = match &sha256 {
        Some(sha) => api.unfinished_uploads().await?.into_iter().find(|u| {
            u.name == name && u.size == size && u.sha256.as_deref() == Some(sha.as_str())
        }),
        None => None,
    };
    let (upload_id, upload_url, token) = match existing {
        // Already assembling: nothing to send, only wait.
        Some(u) if u.state != "uploading" => (u.upload_id, String::new(), String::new()),
        Some(u) => {
            let renewed = api.renew_upload_token(&u.upload_id).await?;
            let url = renewed
                .upload_url
                .unwrap_or_else(|| format!("/api/v1/chunks/{}", u.upload_id));
            (u.upload_id, url, renewed.upload_token)
        }
        None => {
            let created = api
                .create_upload(&name, size, content_type_of(path), sha256.as_deref())
                .await?;
            (created.upload_id, created.upload_url, created.upload_token)
        }
    };
    let status = api.upload_status(&upload_id).await?;

    let received: std::collections::HashSet<u32> = status.received_chunks.iter().copied().collect();
    let missing: VecDeque<u32> = (0..status.total_chunks)
        .filter(|i| !received.contains(i))
        .collect();
    let skipped = status.total_chunks - missing.len() as u32;
    let sent = missing.len() as u32;

    let pb = bar(opts.progress, size, name.clone());
    pb.set_position(status.bytes_received);
    if status.state == "uploading" && !missing.is_empty() {
        send_chunks(api, path, &status, &upload_url, token, missing, opts, &pb).await?;
    }
    pb.set_message(format!("assembling {name}"));
    let done = wait_until_done(api, &upload_id, opts.assembly_timeout).await?;
    pb.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    match done.state.as_str() {
        "completed" => Ok(UploadReport {
            path: path.display().to_string(),
            file_id: done.file_id.unwrap_or_default(),
            upload_id,
            upload_url,
            size,
            sha256,
            chunks_skipped: skipped,
            chunks_sent: sent,
            seconds,
            megabytes_per_second: size as f64 / 1e6 / seconds.max(1e-9),
        }),
        "failed" => bail!(
            "the server could not assemble {name}: {}",
            done.error.unwrap_or_else(|| "no reason given".into())
        ),
        other => bail!("the upload of {name} ended as {other}"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_chunks(
    api: &Api,
    path: &Path,
    status: &UploadStatus,
    upload_url: &str,
    token: String,
    missing: VecDeque<u32>,
    opts: &UploadOptions,
    pb: &ProgressBar,
) -> anyhow::Result<()> {
    let file = Arc::new(std::fs::File::open(path)?);
    let queue = Arc::new(Mutex::new(missing));
    let token = Arc::new(tokio::sync::RwLock::new(token));
    let plan = lfusys_core::plan::UploadPlan::new(status.size, status.chunk_size);
    let workers = opts.parallelism.clamp(1, 64);
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (queue, file, token, pb) = (queue.clone(), file.clone(), token.clone(), pb.clone());
        let upload_url = upload_url.to_owned();
        let upload_id = status.upload_id.clone();
        let attempts = opts.attempts;
        tasks.push(async move {
            loop {
                let Some(index) = queue.lock().await.pop_front() else {
                    return Ok::<(), anyhow::Error>(());
                };
                let len = plan
                    .chunk_len(index)
                    .context("chunk index out of the plan")?;
                let offset = plan.offset(index);
                let data = read_chunk(file.clone(), offset, len).await?;
                let digest =
                    lfusys_core::digest::format_content_digest(&Sha256::digest(&data).into());
                send_one(
                    api,
                    &upload_id,
                    &upload_url,
                    &token,
                    index,
                    data,
                    &digest,
                    attempts,
                )
                .await?;
                pb.inc(len);
            }
        });
    }
    futures::future::try_join_all(tasks).await?;
    Ok(())
}

async fn read_chunk(file: Arc<std::fs::File>, offset: u64, len: u64) -> anyhow::Result<Bytes> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; usize::try_from(len)?];
        file.read_exact_at(&mut buf, offset)
            .context("reading the file (did it change during the upload?)")?;
        Ok(Bytes::from(buf))
    })
    .await?
}

#[allow(clippy::too_many_arguments)]
async fn send_one(
    api: &Api,
    upload_id: &str,
    upload_url: &str,
    token: &tokio::sync::RwLock<String>,
    index: u32,
    data: Bytes,
    digest: &str,
    attempts: u32,
) -> anyhow::Result<()> {
    // Another request may hold this chunk's lease (e.g. one cut off by a crash); the server
    // frees it when the lease runs out, so wait that long rather than give up.
    let in_progress_deadline = Instant::now() + Duration::from_secs(180);
    let mut attempt = 0;
    loop {
        let current = token.read().await.clone();
        let err = match api
            .put_chunk(upload_url, &current, index, data.clone(), digest)
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
