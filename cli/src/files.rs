//! `lfusys ls`, `lfusys download`, `lfusys rm`.

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use lfusys_core::digest::{crc64_hex, Crc64Nvme};

use crate::client::Api;
use crate::upload::{backoff, with_retries};
use lfusys_core::units::format_size;

pub async fn list(api: &Api, json: bool) -> anyhow::Result<()> {
    let files = api.list_files().await?;
    let uploads = api.unfinished_uploads().await?;
    if json {
        let uploads: Vec<_> = uploads
            .iter()
            .map(|u| {
                serde_json::json!({"upload_id": u.upload_id, "name": u.name, "size": u.size,
                    "state": u.state, "bytes_received": u.bytes_received})
            })
            .collect();
        crate::print_json(&serde_json::json!({"files": files, "uploads": uploads}));
        return Ok(());
    }
    if files.is_empty() && uploads.is_empty() {
        println!("No files yet. Upload one with: lfusys upload FILE");
        return Ok(());
    }
    if !files.is_empty() {
        println!("{:<36}  {:>10}  {:<24}  NAME", "ID", "SIZE", "CREATED");
        for f in &files {
            println!(
                "{:<36}  {:>10}  {:<24}  {}",
                f.id,
                format_size(f.size),
                f.created_at,
                f.name
            );
        }
    }
    if !uploads.is_empty() {
        println!("\nUnfinished uploads (run `lfusys upload` on the same file to resume):");
        for u in &uploads {
            let pct = if u.size == 0 {
                0.0
            } else {
                u.bytes_received as f64 * 100.0 / u.size as f64
            };
            println!(
                "{:<36}  {:>10}  {:>5.1}%  {:<11}  {}",
                u.upload_id,
                format_size(u.size),
                pct,
                u.state,
                u.name
            );
        }
    }
    Ok(())
}

pub async fn download(
    api: &Api,
    id: &str,
    output: Option<PathBuf>,
    progress: bool,
    json: bool,
) -> anyhow::Result<()> {
    let info = with_retries(DOWNLOAD_ATTEMPTS, || api.file(id)).await?;
    let target = output.unwrap_or_else(|| PathBuf::from(&info.name));
    if target.is_dir() {
        bail!(
            "{} is a directory: give a file path with -o",
            target.display()
        );
    }
    let partial = target.with_file_name(format!(
        ".{}.lfusys-part",
        target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("download")
    ));
    let pb = if progress {
        let pb = ProgressBar::new(info.size);
        pb.set_style(
            ProgressStyle::with_template("{msg:24!} [{bar:32.green/blue}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta:>4}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_message(info.name.clone());
        pb
    } else {
        ProgressBar::hidden()
    };
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut digests = Digests::default();
    let mut received = 0u64;
    let result = fetch_into(api, id, &mut out, &mut digests, &mut received, &pb).await;
    pb.finish_and_clear();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let (sha256, crc) = digests.finish();
    // Every checksum the File has is compared: the server's CRC-64/NVME (files of earlier
    // versions have none) and the SHA-256 when the uploader declared one.
    let expected_crc = info.crc64nvme.as_deref().map(str::to_ascii_lowercase);
    let expected_sha = info.sha256.as_deref().map(str::to_ascii_lowercase);
    if received != info.size
        || expected_crc.as_ref().is_some_and(|c| *c != crc)
        || expected_sha.as_ref().is_some_and(|s| *s != sha256)
    {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "the downloaded bytes do not match the file (got {received} bytes, CRC-64/NVME {crc}, SHA-256 {sha256}; expected {} bytes, CRC-64/NVME {}, SHA-256 {}); nothing was written to {}",
            info.size,
            expected_crc.as_deref().unwrap_or("unknown"),
            expected_sha.as_deref().unwrap_or("unknown"),
            target.display()
        );
    }
    std::fs::rename(&partial, &target).with_context(|| format!("writing {}", target.display()))?;
    if json {
        crate::print_json(
            &serde_json::json!({"id": info.id, "path": target, "size": received,
            "sha256": sha256, "crc64nvme": crc}),
        );
    } else {
        let verified = match (&expected_crc, &expected_sha) {
            (Some(_), Some(_)) => "CRC-64/NVME and SHA-256 verified",
            (Some(_), None) => "CRC-64/NVME verified (the file has no SHA-256)",
            (None, Some(_)) => "SHA-256 verified",
            (None, None) => "size verified (the file has no checksum)",
        };
        println!(
            "Downloaded {} ({}) to {}, {verified}.",
            info.name,
            format_size(received),
            target.display(),
        );
    }
    Ok(())
}

/// The checksums of the bytes a download receives, in the one pass that writes them.
#[derive(Default)]
struct Digests {
    sha256: Sha256,
    crc: Crc64Nvme,
}

impl Digests {
    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.crc.update(bytes);
    }

    /// Both in lowercase hex: the SHA-256, the CRC-64/NVME.
    fn finish(self) -> (String, String) {
        (
            hex::encode(self.sha256.finalize()),
            crc64_hex(self.crc.finish()),
        )
    }
}

/// Attempts of a download request (and of resuming a cut-off body) on transient failures.
const DOWNLOAD_ATTEMPTS: u32 = 6;

/// Streams the file's bytes into `out` and `digests`. A transient failure (the server busy or
/// restarting, the connection cut) is retried with backoff, resuming from the bytes already
/// written with a `Range` request conditional on the file's ETag; a server that answers the
/// whole file instead (`200`) has it written again from the start.
async fn fetch_into(
    api: &Api,
    id: &str,
    out: &mut std::io::BufWriter<std::fs::File>,
    digests: &mut Digests,
    received: &mut u64,
    pb: &ProgressBar,
) -> anyhow::Result<()> {
    let mut etag: Option<String> = None;
    let mut attempt = 1;
    loop {
        let res = with_retries(DOWNLOAD_ATTEMPTS, || {
            api.file_content(id, *received, etag.as_deref())
        })
        .await?;
        if *received > 0 && res.status() != reqwest::StatusCode::PARTIAL_CONTENT {
            out.flush()?;
            out.get_mut().set_len(0)?;
            out.get_mut().seek(SeekFrom::Start(0))?;
            *digests = Digests::default();
            *received = 0;
            pb.set_position(0);
        }
        if let Some(tag) = res.headers().get(reqwest::header::ETAG) {
            etag = tag.to_str().ok().map(str::to_owned);
        }
        let before = *received;
        let mut body = res.bytes_stream();
        let cut = loop {
            match body.next().await {
                None => break None,
                Some(Ok(chunk)) => {
                    digests.update(&chunk);
                    out.write_all(&chunk)?;
                    *received += chunk.len() as u64;
                    pb.inc(chunk.len() as u64);
                }
                Some(Err(e)) => break Some(e),
            }
        };
        let Some(error) = cut else {
            out.flush()?;
            out.get_ref().sync_all()?;
            return Ok(());
        };
        // Progress resets the count: only a connection that keeps failing gives up.
        if *received > before {
            attempt = 1;
        }
        if attempt >= DOWNLOAD_ATTEMPTS {
            return Err(anyhow::Error::new(error).context(format!(
                "the download was interrupted {DOWNLOAD_ATTEMPTS} times in a row"
            )));
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

/// Deletes files; an id that names an unfinished upload cancels it instead.
pub async fn remove(api: &Api, ids: &[String], json: bool) -> anyhow::Result<()> {
    let mut done = Vec::new();
    for id in ids {
        match api.delete_file(id).await {
            Ok(()) => done.push(serde_json::json!({"id": id, "deleted": "file"})),
            Err(e) if e.status() == Some(404) => match api.cancel_upload(id).await {
                Ok(()) => done.push(serde_json::json!({"id": id, "deleted": "upload"})),
                Err(e2) if e2.status() == Some(404) => bail!("no file or upload with id {id}"),
                Err(e2) => return Err(e2.into()),
            },
            Err(e) => return Err(e.into()),
        }
        if !json {
            println!("Deleted {id}.");
        }
    }
    if json {
        crate::print_json(&done);
    }
    Ok(())
}
