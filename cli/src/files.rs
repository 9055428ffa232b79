//! `lfusys ls`, `lfusys download`, `lfusys rm`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::client::Api;
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
    let info = api.file(id).await?;
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
    let res = api.file_content(id).await?;
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
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?,
    );
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut body = res.bytes_stream();
    let result: anyhow::Result<()> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("the download was interrupted")?;
            hasher.update(&chunk);
            out.write_all(&chunk)?;
            received += chunk.len() as u64;
            pb.inc(chunk.len() as u64);
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        Ok(())
    }
    .await;
    pb.finish_and_clear();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let digest = hex::encode(hasher.finalize());
    // A file uploaded without a declared SHA-256 has none to compare with: its size still is.
    let expected = info.sha256.as_deref();
    if received != info.size || expected.is_some_and(|sha| sha != digest) {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "the downloaded bytes do not match the file (got {received} bytes, SHA-256 {digest}; expected {} bytes, {})",
            info.size,
            expected.unwrap_or("no SHA-256 known")
        );
    }
    std::fs::rename(&partial, &target).with_context(|| format!("writing {}", target.display()))?;
    if json {
        crate::print_json(
            &serde_json::json!({"id": info.id, "path": target, "size": received, "sha256": digest}),
        );
    } else {
        println!(
            "Downloaded {} ({}) to {}, {}.",
            info.name,
            format_size(received),
            target.display(),
            if expected.is_some() {
                "SHA-256 verified"
            } else {
                "size verified (the file has no SHA-256)"
            }
        );
    }
    Ok(())
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
