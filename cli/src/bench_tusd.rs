//! `lfusys bench-tusd`: LFUSYS side by side with tusd (the tus reference server, file store) on
//! the same machine and the same generated file, in interleaved rounds (the order alternates
//! from round to round, so that neither always runs on a warmer machine).
//!
//! LFUSYS is driven by `lfusys upload`'s own code as it runs by default (every chunk verified,
//! the whole file verified before it is published, its SHA-256 computed — unless
//! `--no-sha256` — durable: every chunk is fdatasynced). tusd is driven by a tus 1.0 client
//! in this process with the same parallelism: `-j` partial uploads (the concatenation
//! extension), each one `PATCH` streamed from the file, then the final upload that
//! concatenates them. tusd verifies nothing and syncs nothing; its "durable" time adds an
//! fdatasync of every file it wrote for the upload (the partial uploads and their
//! concatenation), which is what LFUSYS pays for as it goes.
//!
//! Per system it prints the medians of wall and durable MB/s, the CPU seconds per GiB of the
//! client (this process) and of the servers (`--lfusys-pid`, `--tusd-pid`: `/proc` times), the
//! servers' peak RSS in any round (each round resets the high-water marks), and the ratios
//! LFUSYS / tusd. `scripts/bench-tusd.sh` starts both servers and runs this.
//!
//! S3 mode (`scripts/bench-tusd.sh --s3`): both store in one S3 server (MinIO), LFUSYS with its
//! AWS backends, tusd with its S3 store; without `--tusd-dir` nothing is synced (what S3 has
//! acknowledged is durable: durable = wall). `--s3-bucket` adds a third system, the S3 reference
//! of issue 10: the same file uploaded straight to S3 by `aws-sdk-s3` (bench_s3.rs), parts of
//! LFUSYS's chunk size with the same CRC-64/NVME checksums. The store's processes
//! (`--store-pid`: MinIO, the DynamoDB/SQS server) serve every system, so their CPU and memory
//! count in every system's server figures.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::client::Api;
use crate::procs;
use crate::upload::{self, UploadOptions};
use lfusys_core::units::{format_size, parse_size};

#[derive(clap::Args, Debug, Clone)]
pub struct TusdBenchArgs {
    /// Size of the generated file.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub size: u64,
    /// Chunks in flight (LFUSYS) and partial uploads (tusd).
    #[arg(short = 'j', long, default_value_t = 8)]
    pub parallel: usize,
    /// Rounds; the figures are medians (peaks: maxima) over them.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Where the generated file goes.
    #[arg(long, default_value = ".")]
    pub scratch_dir: PathBuf,
    /// The LFUSYS gateway.
    #[arg(long, env = "LFUSYS_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The LFUSYS server processes (`NAME=PID`, repeated): their CPU time and peak RSS.
    #[arg(long = "lfusys-pid", value_name = "NAME=PID", required = true)]
    pub lfusys_pids: Vec<String>,
    /// tusd's upload endpoint, e.g. `http://127.0.0.1:1080/files/`.
    #[arg(long)]
    pub tusd: String,
    /// tusd's process id.
    #[arg(long)]
    pub tusd_pid: u32,
    /// tusd's `-upload-dir`: its files are synced for the durable time, then removed. Without
    /// it tusd stores in S3 and nothing is synced.
    #[arg(long)]
    pub tusd_dir: Option<PathBuf>,
    /// S3 mode: the bucket the direct `aws-sdk-s3` reference uploads to (SDK configuration
    /// from the environment, as for the server).
    #[arg(long)]
    pub s3_bucket: Option<String>,
    /// Processes every system stores through (`NAME=PID`, repeated: the S3 server…); they count
    /// in every system's server CPU and peak RSS.
    #[arg(long = "store-pid", value_name = "NAME=PID")]
    pub store_pids: Vec<String>,
    /// LFUSYS without the file's SHA-256 (`lfusys upload --no-sha256`): what the SHA-256 costs.
    #[arg(long)]
    pub no_sha256: bool,
    /// LFUSYS's tus endpoint (e.g. `http://127.0.0.1:8081/api/v1/tus`): adds LFUSYS driven by
    /// the very tus client that drives tusd, as a third system, with the same parallelism
    /// (`-j` > 1: partial uploads and their concatenation, as for tusd).
    #[arg(long)]
    pub lfusys_tus: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// The systems measured, in the order of the first round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Tusd,
    Lfusys,
    LfusysTus,
    DirectS3,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Tusd => "tusd",
            System::Lfusys => "LFUSYS",
            System::LfusysTus => "LFUSYS tus",
            System::DirectS3 => "S3 direct",
        }
    }
}

/// Round `round`'s order: the systems rotate, so that none always runs first (on the coldest
/// machine) or last.
fn order(systems: &[System], round: usize) -> Vec<System> {
    let n = systems.len();
    (0..n).map(|i| systems[(i + round) % n]).collect()
}

/// One upload's measurements.
#[derive(Debug, Clone, Default, Serialize)]
struct Run {
    wall_seconds: f64,
    durable_seconds: f64,
    client_cpu_seconds: f64,
    server_cpu_seconds: f64,
    /// The sum of the servers' peaks (each process's own in `peak_rss_bytes`).
    server_peak_rss_bytes: u64,
    peak_rss_bytes: Vec<u64>,
    /// Each server process's CPU seconds, in the order of the processes.
    cpu_seconds: Vec<f64>,
}

impl Run {
    /// The round's figures in one line (the rounds vary on a shared machine: show each).
    fn line(&self, size: u64) -> String {
        let gib = gib_of(size);
        format!(
            "{:.1} MB/s wall, {:.1} durable, CPU s/GiB client {:.2} servers {:.2}",
            size as f64 / 1e6 / self.wall_seconds,
            size as f64 / 1e6 / self.durable_seconds,
            self.client_cpu_seconds / gib,
            self.server_cpu_seconds / gib
        )
    }
}

/// The medians (peak: maximum) of one system's runs.
#[derive(Debug, Serialize)]
struct Summary {
    wall_mb_per_s: f64,
    durable_mb_per_s: f64,
    client_cpu_seconds_per_gib: f64,
    server_cpu_seconds_per_gib: f64,
    cpu_seconds_per_gib: f64,
    server_peak_rss_bytes: u64,
    /// Each server process's highest peak in any round.
    process_peak_rss_bytes: Vec<(String, u64)>,
    /// Each server process's median CPU seconds per GiB.
    process_cpu_seconds_per_gib: Vec<(String, f64)>,
    runs: Vec<Run>,
}

#[derive(Debug, Serialize)]
struct Report {
    size_bytes: u64,
    parallel: usize,
    rounds: usize,
    /// `"file"` (tusd's file store, LFUSYS's embedded backends) or `"s3"`.
    store: &'static str,
    lfusys: Summary,
    tusd: Summary,
    /// LFUSYS / tusd.
    wall_ratio: f64,
    durable_ratio: f64,
    cpu_ratio: f64,
    /// The direct `aws-sdk-s3` upload (S3 mode with `--s3-bucket`).
    #[serde(skip_serializing_if = "Option::is_none")]
    s3_direct: Option<Summary>,
    /// LFUSYS / the direct S3 upload, wall clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    s3_direct_wall_ratio: Option<f64>,
    /// LFUSYS driven by the tus client that drives tusd (`--lfusys-tus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    lfusys_tus: Option<Summary>,
    /// LFUSYS over tus / tusd: wall, durable, CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    tus_ratios: Option<(f64, f64, f64)>,
}

fn self_cpu() -> f64 {
    procs::cpu_seconds_of(std::process::id()).unwrap_or(0.0)
}

/// Runs `upload`, measuring it and the processes `pids`. The upload answers once its bytes
/// are stored, with the seconds it then took to make them durable (if any) and what it made.
async fn measured<T, Fut>(processes: &[(String, u32)], upload: Fut) -> anyhow::Result<(Run, T)>
where
    Fut: std::future::Future<Output = anyhow::Result<(f64, T)>>,
{
    let pids: Vec<u32> = processes.iter().map(|&(_, pid)| pid).collect();
    for &pid in &pids {
        procs::reset_peak_rss(pid).with_context(|| format!("resetting the peak RSS of {pid}"))?;
    }
    let cpu = || -> Vec<f64> {
        pids.iter()
            .map(|&p| procs::cpu_seconds_of(p).unwrap_or(0.0))
            .collect()
    };
    let (client0, cpu0) = (self_cpu(), cpu());
    let started = Instant::now();
    let (sync_seconds, made) = upload.await?;
    let wall = started.elapsed().as_secs_f64() - sync_seconds;
    let cpu_seconds: Vec<f64> = cpu().iter().zip(&cpu0).map(|(b, a)| b - a).collect();
    let run = Run {
        wall_seconds: wall,
        durable_seconds: wall + sync_seconds,
        client_cpu_seconds: self_cpu() - client0,
        server_cpu_seconds: cpu_seconds.iter().sum(),
        cpu_seconds,
        server_peak_rss_bytes: pids.iter().filter_map(|&p| procs::peak_rss_of(p)).sum(),
        peak_rss_bytes: pids
            .iter()
            .map(|&p| procs::peak_rss_of(p).unwrap_or(0))
            .collect(),
    };
    Ok((run, made))
}

/// A tus 1.0 upload of `source` to `endpoint`: one upload with one `PATCH` streamed from the
/// file, or (`parallel` > 1) as many partial uploads, each one `PATCH` streamed from its range
/// of the file, then the final one that concatenates them. `bearer`: the access token the
/// server wants (LFUSYS; tusd wants none). Returns the URLs of every upload it created (the
/// partial ones and the final one).
async fn tus_upload(
    http: &reqwest::Client,
    endpoint: &str,
    source: &Path,
    size: u64,
    parallel: usize,
    bearer: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let parts = parallel.max(1) as u64;
    let part = size.div_ceil(parts);
    let ranges: Vec<(u64, u64)> = (0..parts)
        .map(|i| (i * part, ((i + 1) * part).min(size)))
        .filter(|(a, b)| b > a)
        .collect();
    let concat = ranges.len() > 1;
    let request = |method: reqwest::Method, url: &str| {
        let req = http.request(method, url).header("Tus-Resumable", "1.0.0");
        match bearer {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    };
    let uploads = futures::future::try_join_all(ranges.iter().map(|&(start, end)| async move {
        let len = end - start;
        let mut create =
            request(reqwest::Method::POST, endpoint).header("Upload-Length", len.to_string());
        if concat {
            create = create.header("Upload-Concat", "partial");
        }
        let created = create.send().await?;
        if created.status() != reqwest::StatusCode::CREATED {
            bail!("the tus server refused an upload: {}", created.status());
        }
        let location = absolute(endpoint, location_of(&created)?);
        let mut file = tokio::fs::File::open(source).await?;
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(start)).await?;
        let body = tokio_util::io::ReaderStream::with_capacity(
            tokio::io::AsyncReadExt::take(file, len),
            1 << 20,
        );
        let patched = request(reqwest::Method::PATCH, &location)
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Content-Length", len.to_string())
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await?;
        if patched.status() != reqwest::StatusCode::NO_CONTENT {
            bail!("the tus server refused a PATCH: {}", patched.status());
        }
        Ok::<_, anyhow::Error>(location)
    }))
    .await?;
    if !concat {
        return Ok(uploads);
    }
    let finished = request(reqwest::Method::POST, endpoint)
        .header("Upload-Concat", format!("final;{}", uploads.join(" ")))
        .send()
        .await?;
    if finished.status() != reqwest::StatusCode::CREATED {
        bail!(
            "the tus server refused the concatenation: {}",
            finished.status()
        );
    }
    let mut all = uploads;
    all.push(absolute(endpoint, location_of(&finished)?));
    Ok(all)
}

fn location_of(res: &reqwest::Response) -> anyhow::Result<&str> {
    res.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("the tus server's answer has no Location")
}

/// A `Location` resolved against the endpoint's origin.
fn absolute(endpoint: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let origin_end = endpoint
        .find("://")
        .and_then(|i| endpoint[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(endpoint.len());
    format!("{}{location}", &endpoint[..origin_end])
}

/// fdatasyncs the data files of the tus uploads `urls` in tusd's directory; returns the
/// seconds it took.
fn sync_tusd_files(dir: &Path, urls: &[String]) -> anyhow::Result<f64> {
    let started = Instant::now();
    for url in urls {
        let id = url.rsplit('/').next().unwrap_or_default();
        let path = dir.join(id);
        std::fs::File::open(&path)
            .and_then(|f| f.sync_data())
            .with_context(|| format!("syncing {}", path.display()))?;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn remove_tusd_files(dir: &Path, urls: &[String]) {
    for url in urls {
        let id = url.rsplit('/').next().unwrap_or_default();
        let _ = std::fs::remove_file(dir.join(id));
        let _ = std::fs::remove_file(dir.join(format!("{id}.info")));
    }
}

/// `size` bytes in GiB, the unit of every CPU figure.
fn gib_of(size: u64) -> f64 {
    size as f64 / f64::from(1u32 << 30)
}

fn summary(size: u64, names: &[(String, u32)], runs: Vec<Run>) -> Summary {
    let gib = gib_of(size);
    let mb = size as f64 / 1e6;
    let of = |f: fn(&Run) -> f64| crate::bench::median(&mut runs.iter().map(f).collect::<Vec<_>>());
    let client = of(|r| r.client_cpu_seconds) / gib;
    let server = of(|r| r.server_cpu_seconds) / gib;
    Summary {
        wall_mb_per_s: mb / of(|r| r.wall_seconds),
        durable_mb_per_s: mb / of(|r| r.durable_seconds),
        client_cpu_seconds_per_gib: client,
        server_cpu_seconds_per_gib: server,
        cpu_seconds_per_gib: of(|r| r.client_cpu_seconds + r.server_cpu_seconds) / gib,
        server_peak_rss_bytes: runs
            .iter()
            .map(|r| r.server_peak_rss_bytes)
            .max()
            .unwrap_or(0),
        process_peak_rss_bytes: names
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let peak = runs.iter().filter_map(|r| r.peak_rss_bytes.get(i)).max();
                (name.clone(), peak.copied().unwrap_or(0))
            })
            .collect(),
        process_cpu_seconds_per_gib: names
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let mut of_process: Vec<f64> = runs
                    .iter()
                    .map(|r| r.cpu_seconds.get(i).copied().unwrap_or(0.0))
                    .collect();
                (name.clone(), crate::bench::median(&mut of_process) / gib)
            })
            .collect(),
        runs,
    }
}

pub async fn run(args: TusdBenchArgs) -> anyhow::Result<()> {
    let lfusys_pids = procs::parse_watch(&args.lfusys_pids)?;
    let store_pids = procs::parse_watch(&args.store_pids)?;
    if procs::rss_of(args.tusd_pid).is_none() {
        bail!("--tusd-pid {}: no such process", args.tusd_pid);
    }
    std::fs::create_dir_all(&args.scratch_dir)?;
    let source = args
        .scratch_dir
        .join(format!("lfusys-bench-tusd-{}.bin", std::process::id()));
    eprintln!("Generating {} of test data…", format_size(args.size));
    let (src, size) = (source.clone(), args.size);
    tokio::task::spawn_blocking(move || crate::bench::generate(&src, size)).await??;
    let result = Box::pin(rounds(&args, &source, &lfusys_pids, &store_pids)).await;
    let _ = std::fs::remove_file(&source);
    let report = result?;
    if args.json {
        crate::print_json(&report);
    } else {
        print(&report);
    }
    Ok(())
}

/// What one round of each system needs.
struct Contest<'a> {
    args: &'a TusdBenchArgs,
    source: &'a Path,
    api: Api,
    opts: UploadOptions,
    http: reqwest::Client,
    /// Each system's processes, the store's included.
    lfusys_procs: Vec<(String, u32)>,
    tusd_procs: Vec<(String, u32)>,
    direct_procs: Vec<(String, u32)>,
    /// LFUSYS's chunk size, the direct upload's part size (known after LFUSYS's first run).
    part_size: Option<u64>,
}

impl Contest<'_> {
    async fn lfusys(&mut self) -> anyhow::Result<Run> {
        let (api, opts, source) = (&self.api, &self.opts, self.source);
        let (run, report) = measured(&self.lfusys_procs, async {
            let report = upload::upload_file(api, source, opts).await?;
            Ok((0.0, report))
        })
        .await?;
        if self.part_size.is_none() {
            self.part_size = Some(self.api.upload_status(&report.upload_id).await?.chunk_size);
        }
        self.api.delete_file(&report.file_id).await?;
        Ok(run)
    }

    async fn tusd(&self) -> anyhow::Result<Run> {
        let args = self.args;
        let (run, urls) = measured(&self.tusd_procs, async {
            let urls = tus_upload(
                &self.http,
                &args.tusd,
                self.source,
                args.size,
                args.parallel,
                None,
            )
            .await?;
            let seconds = match &args.tusd_dir {
                Some(dir) => {
                    let (dir, synced) = (dir.clone(), urls.clone());
                    tokio::task::spawn_blocking(move || sync_tusd_files(&dir, &synced)).await??
                }
                None => 0.0,
            };
            Ok((seconds, urls))
        })
        .await?;
        match &args.tusd_dir {
            Some(dir) => remove_tusd_files(dir, &urls),
            None => delete_tus_uploads(&self.http, &urls).await,
        }
        Ok(run)
    }

    /// LFUSYS through its tus endpoint, by the client that drives tusd; done once the File is
    /// published (assembled and verified), as `lfusys upload` is.
    async fn lfusys_tus(&self) -> anyhow::Result<Run> {
        let endpoint = self.args.lfusys_tus.as_deref().unwrap_or_default();
        let token = self.api.access_token().await?;
        let (run, file_id) = measured(&self.lfusys_procs, async {
            let urls = tus_upload(
                &self.http,
                endpoint,
                self.source,
                self.args.size,
                self.args.parallel,
                Some(&token),
            )
            .await?;
            // The one upload, or the final one of the partials.
            let upload_id = urls
                .last()
                .and_then(|u| u.rsplit('/').next())
                .context("no tus upload was created")?;
            for _ in 0..60 {
                let status = self.api.upload_status_wait(upload_id, 20).await?;
                match status.state.as_str() {
                    "completed" => {
                        let file = status
                            .file_id
                            .context("a completed upload names its File")?;
                        return Ok((0.0, file));
                    }
                    "uploading" | "assembling" => {}
                    other => bail!("the tus upload ended {other}: {:?}", status.error),
                }
            }
            bail!("the tus upload did not complete in 20 minutes")
        })
        .await?;
        self.api.delete_file(&file_id).await?;
        Ok(run)
    }

    async fn direct_s3(&self) -> anyhow::Result<Run> {
        let bucket = self.args.s3_bucket.as_deref().unwrap_or_default();
        let part_size = self
            .part_size
            .context("the direct S3 upload runs after an LFUSYS one")?;
        let upload = Box::pin(crate::bench_s3::direct_multipart_upload(
            self.source,
            bucket,
            part_size,
            self.args.parallel,
        ));
        let (run, _) = Box::pin(measured(&self.direct_procs, async {
            Ok((0.0, upload.await?))
        }))
        .await?;
        Ok(run)
    }
}

async fn rounds(
    args: &TusdBenchArgs,
    source: &Path,
    lfusys_pids: &[(String, u32)],
    store_pids: &[(String, u32)],
) -> anyhow::Result<Report> {
    let with_store = |own: Vec<(String, u32)>| [own, store_pids.to_vec()].concat();
    let mut contest = Contest {
        args,
        source,
        api: Api::new(&args.server)?,
        opts: UploadOptions {
            parallelism: args.parallel,
            progress: false,
            declare_sha256: !args.no_sha256,
            ..UploadOptions::default()
        },
        http: reqwest::Client::new(),
        lfusys_procs: with_store(lfusys_pids.to_vec()),
        tusd_procs: with_store(vec![("tusd".to_owned(), args.tusd_pid)]),
        direct_procs: store_pids.to_vec(),
        part_size: None,
    };
    let mut systems = vec![System::Tusd, System::Lfusys];
    if args.lfusys_tus.is_some() {
        systems.push(System::LfusysTus);
    }
    if args.s3_bucket.is_some() {
        // After LFUSYS in the first round: it takes LFUSYS's chunk size.
        systems.push(System::DirectS3);
    }
    let (mut ours, mut theirs, mut direct, mut tus) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let total = args.rounds.max(1);
    for round in 0..total {
        for system in order(&systems, round) {
            eprintln!("Round {}/{total}: {}…", round + 1, system.name());
            let (run, runs) = match system {
                System::Lfusys => (Box::pin(contest.lfusys()).await?, &mut ours),
                System::Tusd => (Box::pin(contest.tusd()).await?, &mut theirs),
                System::LfusysTus => (Box::pin(contest.lfusys_tus()).await?, &mut tus),
                System::DirectS3 => (Box::pin(contest.direct_s3()).await?, &mut direct),
            };
            eprintln!("  {}", run.line(args.size));
            runs.push(run);
        }
    }
    let (lfusys, tusd) = (
        summary(args.size, &contest.lfusys_procs, ours),
        summary(args.size, &contest.tusd_procs, theirs),
    );
    let s3_direct = (!direct.is_empty()).then(|| summary(args.size, &contest.direct_procs, direct));
    let lfusys_tus = (!tus.is_empty()).then(|| summary(args.size, &contest.lfusys_procs, tus));
    let tus_ratios = lfusys_tus.as_ref().map(|t| {
        (
            t.wall_mb_per_s / tusd.wall_mb_per_s,
            t.durable_mb_per_s / tusd.durable_mb_per_s,
            t.cpu_seconds_per_gib / tusd.cpu_seconds_per_gib,
        )
    });
    Ok(Report {
        size_bytes: args.size,
        parallel: args.parallel,
        rounds: total,
        store: if args.tusd_dir.is_some() {
            "file"
        } else {
            "s3"
        },
        wall_ratio: lfusys.wall_mb_per_s / tusd.wall_mb_per_s,
        durable_ratio: lfusys.durable_mb_per_s / tusd.durable_mb_per_s,
        cpu_ratio: lfusys.cpu_seconds_per_gib / tusd.cpu_seconds_per_gib,
        s3_direct_wall_ratio: s3_direct
            .as_ref()
            .map(|d| lfusys.wall_mb_per_s / d.wall_mb_per_s),
        s3_direct,
        lfusys_tus,
        tus_ratios,
        lfusys,
        tusd,
    })
}

/// Terminates tus uploads (tusd's S3 store keeps them otherwise); best effort, as the files'
/// removal in file mode.
async fn delete_tus_uploads(http: &reqwest::Client, urls: &[String]) {
    for url in urls {
        let _ = http
            .delete(url)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await;
    }
}

fn print(r: &Report) {
    println!(
        "{} file, {} in flight, {} rounds, {} store (medians; peak RSS: the highest round)",
        format_size(r.size_bytes),
        r.parallel,
        r.rounds,
        r.store
    );
    let systems: Vec<(&str, &Summary)> = [
        (System::Lfusys.name(), &r.lfusys),
        (System::Tusd.name(), &r.tusd),
    ]
    .into_iter()
    .chain(r.lfusys_tus.as_ref().map(|t| (System::LfusysTus.name(), t)))
    .chain(r.s3_direct.as_ref().map(|d| (System::DirectS3.name(), d)))
    .collect();
    println!(
        "{:<10} {:>10} {:>12} {:>14} {:>14} {:>12} {:>14}",
        "",
        "wall MB/s",
        "durable MB/s",
        "client CPU/GiB",
        "server CPU/GiB",
        "CPU s/GiB",
        "server peak RSS"
    );
    for &(name, s) in &systems {
        println!(
            "{name:<10} {:>10.1} {:>12.1} {:>14.2} {:>14.2} {:>12.2} {:>14}",
            s.wall_mb_per_s,
            s.durable_mb_per_s,
            s.client_cpu_seconds_per_gib,
            s.server_cpu_seconds_per_gib,
            s.cpu_seconds_per_gib,
            format_size(s.server_peak_rss_bytes)
        );
    }
    for &(name, s) in &systems {
        let peaks: Vec<String> = s
            .process_peak_rss_bytes
            .iter()
            .map(|(p, b)| format!("{p} {}", format_size(*b)))
            .collect();
        println!("{name} peak RSS by process: {}", peaks.join(", "));
        let cpu: Vec<String> = s
            .process_cpu_seconds_per_gib
            .iter()
            .map(|(p, c)| format!("{p} {c:.2}"))
            .collect();
        println!("{name} CPU s/GiB by process: {}", cpu.join(", "));
    }
    println!(
        "LFUSYS / tusd: wall {:.2}×, durable {:.2}×, CPU {:.2}×",
        r.wall_ratio, r.durable_ratio, r.cpu_ratio
    );
    if let Some((wall, durable, cpu)) = r.tus_ratios {
        println!(
            "LFUSYS over tus (the same tus client) / tusd: wall {wall:.2}×, durable {durable:.2}×, CPU {cpu:.2}×"
        );
    }
    if let Some(ratio) = r.s3_direct_wall_ratio {
        println!("LFUSYS / S3 direct (aws-sdk-s3, same part checksums): wall {ratio:.2}×");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_endpoint() {
        assert_eq!(
            absolute("http://127.0.0.1:1080/files/", "/files/abc"),
            "http://127.0.0.1:1080/files/abc"
        );
        assert_eq!(
            absolute("http://127.0.0.1:1080/files/", "http://h/x"),
            "http://h/x"
        );
    }

    #[test]
    fn every_system_takes_every_place_in_turn() {
        let systems = [System::Tusd, System::Lfusys, System::DirectS3];
        assert_eq!(order(&systems, 0), systems);
        assert_eq!(
            order(&systems, 1),
            [System::Lfusys, System::DirectS3, System::Tusd]
        );
        assert_eq!(
            order(&systems, 2),
            [System::DirectS3, System::Tusd, System::Lfusys]
        );
        assert_eq!(order(&systems, 3), systems);
        let two = [System::Tusd, System::Lfusys];
        assert_eq!(order(&two, 1), [System::Lfusys, System::Tusd]);
    }

    #[test]
    fn summaries_take_medians_and_the_highest_peak() {
        let run = |wall: f64, rss: u64| Run {
            wall_seconds: wall,
            durable_seconds: wall * 2.0,
            client_cpu_seconds: 1.0,
            server_cpu_seconds: 0.5,
            server_peak_rss_bytes: rss,
            peak_rss_bytes: vec![rss],
            cpu_seconds: vec![wall / 4.0],
        };
        let names = [("server".to_owned(), 1)];
        let s = summary(1 << 30, &names, vec![run(1.0, 5), run(3.0, 9), run(2.0, 7)]);
        assert!((s.wall_mb_per_s - f64::from(1u32 << 30) / 1e6 / 2.0).abs() < 1e-6);
        assert!((s.durable_mb_per_s - f64::from(1u32 << 30) / 1e6 / 4.0).abs() < 1e-6);
        assert!((s.cpu_seconds_per_gib - 1.5).abs() < 1e-9);
        assert_eq!(s.server_peak_rss_bytes, 9);
        assert_eq!(s.process_peak_rss_bytes, [("server".to_owned(), 9)]);
        assert_eq!(s.process_cpu_seconds_per_gib, [("server".to_owned(), 0.5)]);
    }
}
