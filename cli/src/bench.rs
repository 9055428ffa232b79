//! `lfusys bench`: end-to-end upload throughput through a running server, against the
//! physical reference of the same bytes written sequentially with fdatasync on the same disk
//! (or, in S3 mode, uploaded straight to the same S3 server), and the upload workers' peak
//! memory. In S3 mode the file goes through LFUSYS twice, both verified end to end by the
//! file's CRC-64/NVME (as the direct upload is, by S3): without the client's whole-file
//! SHA-256 and with it (the default of `lfusys upload`, computed in the client's one pass).
//!
//! Run it against a freshly started `lfusys up` whose data directory is on the disk of
//! `--scratch-dir`: peak RSS is the process's high-water mark since it started.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::client::Api;
use crate::upload::{self, UploadOptions, UploadReport};
use lfusys_core::units::{format_size, parse_size};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Size of the generated file.
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    pub size: u64,
    /// Chunks in flight.
    #[arg(short = 'j', long, default_value_t = 16)]
    pub parallel: usize,
    /// Where the test file and the reference write go (use the disk of the server's data dir).
    #[arg(long, default_value = ".")]
    pub scratch_dir: PathBuf,
    #[arg(long, env = "LFUSYS_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Keep the uploaded file on the server afterwards.
    #[arg(long)]
    pub keep: bool,
    /// S3 mode: the reference is the same file uploaded straight to this bucket of the same
    /// S3 server (the SDK's standard AWS_* configuration) with an aws-sdk-s3 multipart client,
    /// with the LFUSYS upload's part size and parallelism, instead of a local fdatasync write.
    #[arg(long)]
    pub s3_bucket: Option<String>,
    /// S3 mode: measure this many rounds (each: LFUSYS without and with a declared file
    /// SHA-256, then direct) and report the medians.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    size_bytes: u64,
    parallel_chunks: usize,
    /// Rounds measured (S3 mode); the seconds are medians over them.
    rounds: usize,
    /// The LFUSYS upload as it runs by default (the client's whole-file SHA-256 declared).
    upload_seconds: f64,
    upload_mb_per_s: f64,
    reference_seconds: f64,
    reference_mb_per_s: f64,
    ratio: f64,
    /// S3 mode: the LFUSYS upload without the client's whole-file SHA-256 (`--no-sha256`:
    /// every chunk and the whole file still verified by their CRC-64/NVME).
    undeclared: Option<Undeclared>,
    /// What the reference is: `sequential write + fdatasync` or `direct S3 multipart upload`.
    reference: String,
    workers_peak_rss_bytes: Option<u64>,
    workers_rss_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Undeclared {
    upload_seconds: f64,
    upload_mb_per_s: f64,
    ratio: f64,
}

/// Fills `path` with `size` incompressible pseudo-random bytes (xorshift), 8 MiB at a time.
pub(crate) fn generate(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path)?);
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ size ^ u64::from(std::process::id());
    let mut block = vec![0u8; 8 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    // Synced, so that its writeback does not run during (and slow) the first round.
    f.into_inner()
        .map_err(std::io::IntoInnerError::into_error)?
        .sync_all()?;
    Ok(())
}

/// Blocks of the disk reference. 1 MiB, as `dd bs=1M` writes: on the VMs measured, 8 MiB
/// writes reached only 58 % of that (358 against 617 MB/s in one run), which made the ratio
/// of an upload to "the disk" look better than it was.
const REFERENCE_BLOCK: usize = 1 << 20;

/// Copies `src` sequentially into a new file and fdatasyncs it: what the disk can do.
fn reference_write(src: &Path, dst: &Path) -> anyhow::Result<f64> {
    use std::io::Read;
    let mut input = std::fs::File::open(src)?;
    let started = Instant::now();
    let mut out = std::fs::File::create(dst)?;
    let mut buf = vec![0u8; REFERENCE_BLOCK];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    out.sync_data()?;
    let secs = started.elapsed().as_secs_f64();
    drop(out);
    std::fs::remove_file(dst)?;
    Ok(secs)
}

/// The median of some measurements (the mean of the middle two for an even count).
pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        f64::midpoint(values[n / 2 - 1], values[n / 2])
    }
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.scratch_dir)?;
    let source = args
        .scratch_dir
        .join(format!("lfusys-bench-{}.bin", std::process::id()));
    let reference = args
        .scratch_dir
        .join(format!("lfusys-bench-{}.ref", std::process::id()));
    eprintln!(
        "Generating {} of test data in {}…",
        format_size(args.size),
        source.display()
    );
    let (src, size) = (source.clone(), args.size);
    tokio::task::spawn_blocking(move || generate(&src, size)).await??;

    let result = measure(&args, &source, &reference).await;
    let _ = std::fs::remove_file(&source);
    let _ = std::fs::remove_file(&reference);
    let report = result?;
    if args.json {
        crate::print_json(&report);
    } else {
        println!(
            "size:                     {}",
            format_size(report.size_bytes)
        );
        println!("parallel chunks:          {}", report.parallel_chunks);
        if report.rounds > 1 {
            println!(
                "rounds:                   {} (medians below)",
                report.rounds
            );
        }
        if let Some(u) = &report.undeclared {
            println!(
                "LFUSYS, no file SHA-256:  {:.1} MB/s ({:.2} s, create → completed; file CRC verified)",
                u.upload_mb_per_s, u.upload_seconds
            );
        }
        println!(
            "LFUSYS end to end:        {:.1} MB/s ({:.2} s, create → completed; file CRC verified, SHA-256 computed)",
            report.upload_mb_per_s, report.upload_seconds
        );
        if args.s3_bucket.is_some() {
            println!(
                "direct S3 multipart:      {:.1} MB/s ({:.2} s, aws-sdk-s3, same part size and parallelism)",
                report.reference_mb_per_s, report.reference_seconds
            );
        } else {
            println!(
                "sequential + fdatasync:   {:.1} MB/s ({:.2} s, same disk)",
                report.reference_mb_per_s, report.reference_seconds
            );
        }
        if let Some(u) = &report.undeclared {
            println!("ratio, no file SHA-256:   {:.2}", u.ratio);
        }
        println!("ratio:                    {:.2}", report.ratio);
        match report.workers_peak_rss_bytes {
            Some(b) => println!(
                "upload workers' peak RSS: {} (process high-water mark)",
                format_size(b)
            ),
            None => println!("upload workers' peak RSS: not reported by the server"),
        }
    }
    Ok(())
}

/// Seconds of each round's uploads.
struct Rounds {
    /// Through LFUSYS without a whole-file SHA-256 (S3 mode only).
    undeclared: Vec<f64>,
    /// Through LFUSYS as it runs by default.
    declared: Vec<f64>,
    /// Straight to S3 (S3 mode only).
    direct: Vec<f64>,
    /// The last default upload's report.
    last: UploadReport,
}

/// S3 mode, each round: first as the direct upload does it (CRC checksums only), then with the
/// client's whole-file SHA-256 (as `lfusys upload` runs by default), then the direct
/// upload. The figures are the medians over the rounds (a shared machine is noisy). Otherwise
/// one round of the default upload.
async fn rounds(
    args: &BenchArgs,
    api: &Api,
    source: &Path,
    opts: &UploadOptions,
) -> anyhow::Result<Rounds> {
    let plain = UploadOptions {
        declare_sha256: false,
        ..opts.clone()
    };
    let rounds = round_count(args);
    let (mut undeclared, mut declared, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for round in 1..=rounds {
        if args.s3_bucket.is_some() {
            eprintln!(
                "Round {round}/{rounds}: uploading through {} with {} chunks in flight, without a whole-file SHA-256…",
                args.server, args.parallel
            );
            let report = upload::upload_file(api, source, &plain).await?;
            api.delete_file(&report.file_id).await?;
            undeclared.push(report.seconds);
        }
        eprintln!(
            "Uploading through {} with {} chunks in flight…",
            args.server, args.parallel
        );
        let report = upload::upload_file(api, source, opts).await?;
        declared.push(report.seconds);
        if let Some(bucket) = &args.s3_bucket {
            let part_size = api.upload_status(&report.upload_id).await?.chunk_size;
            eprintln!(
                "Uploading the same file straight to S3 bucket {bucket} ({} parts, {} in flight)…",
                format_size(part_size),
                args.parallel
            );
            direct.push(
                crate::bench_s3::direct_multipart_upload(source, bucket, part_size, args.parallel)
                    .await?,
            );
        }
        if round < rounds || !args.keep {
            api.delete_file(&report.file_id).await?;
        }
        last = Some(report);
    }
    Ok(Rounds {
        undeclared,
        declared,
        direct,
        last: last.context("no round ran")?,
    })
}

fn round_count(args: &BenchArgs) -> usize {
    if args.s3_bucket.is_some() {
        args.rounds.max(1)
    } else {
        1
    }
}

/// The upload workers' Prometheus metrics (they report their peak RSS), from the origin the
/// server sends chunks to; empty when they cannot be read.
async fn workers_metrics(api: &Api, upload_url: &str) -> String {
    let workers_base = api.resolve(upload_url);
    let workers_base = workers_base
        .split("/api/v1/chunks")
        .next()
        .unwrap_or_default()
        .to_owned();
    api.get_text(&format!("{workers_base}/metrics"))
        .await
        .unwrap_or_default()
}

async fn measure(args: &BenchArgs, source: &Path, reference: &Path) -> anyhow::Result<BenchReport> {
    let reference_seconds = if args.s3_bucket.is_some() {
        0.0 // measured after the LFUSYS upload, with its part size
    } else {
        eprintln!("Writing the same bytes sequentially with fdatasync (reference)…");
        let (s, r) = (source.to_path_buf(), reference.to_path_buf());
        tokio::task::spawn_blocking(move || reference_write(&s, &r)).await??
    };

    let api = Api::new(&args.server)?;
    let email = format!("bench-{:016x}@bench.lfusys.invalid", rand::random::<u64>());
    let password = format!("{:032x}", rand::random::<u128>());
    api.register(&email, &password, Some("lfusys bench"))
        .await
        .context("registering a benchmark account")?;
    api.login(&email, &password).await?;

    let opts = UploadOptions {
        parallelism: args.parallel,
        progress: !args.json,
        ..UploadOptions::default()
    };
    let Rounds {
        mut undeclared,
        mut declared,
        mut direct,
        last: report,
    } = rounds(args, &api, source, &opts).await?;
    let metrics = workers_metrics(&api, &report.upload_url).await;
    let reference_seconds = if args.s3_bucket.is_some() {
        median(&mut direct)
    } else {
        reference_seconds
    };
    let upload_seconds = median(&mut declared);
    let undeclared = (!undeclared.is_empty()).then(|| median(&mut undeclared));
    api.logout().await?;

    let mb = args.size as f64 / 1e6;
    Ok(BenchReport {
        size_bytes: args.size,
        parallel_chunks: args.parallel,
        rounds: round_count(args),
        upload_seconds,
        upload_mb_per_s: mb / upload_seconds,
        reference_seconds,
        reference_mb_per_s: mb / reference_seconds,
        ratio: reference_seconds / upload_seconds,
        undeclared: undeclared.map(|seconds| Undeclared {
            upload_seconds: seconds,
            upload_mb_per_s: mb / seconds,
            ratio: reference_seconds / seconds,
        }),
        reference: if args.s3_bucket.is_some() {
            "direct S3 multipart upload".to_owned()
        } else {
            "sequential write + fdatasync".to_owned()
        },
        workers_peak_rss_bytes: metric(&metrics, "lfusys_process_peak_resident_memory_bytes"),
        workers_rss_bytes: metric(&metrics, "lfusys_process_resident_memory_bytes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_metrics() {
        let text = "# HELP x\nlfusys_process_peak_resident_memory_bytes 52428800\nother 1\n";
        assert_eq!(
            metric(text, "lfusys_process_peak_resident_memory_bytes"),
            Some(52_428_800)
        );
        assert_eq!(metric(text, "missing"), None);
    }

    #[test]
    fn medians() {
        assert!((median(&mut [3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
        assert!((median(&mut [4.0, 1.0, 3.0, 2.0]) - 2.5).abs() < 1e-12);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn generates_exact_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        generate(&p, (8 << 20) + 3).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), (8 << 20) + 3);
    }
}
