//! `lfusys load`: the load harness (a benchmark, not a test; issues 14 and 15).
//!
//! **HTTP mode** (default): `--clients` concurrent clients share `--users` accounts and upload
//! `--small` small files and `--large` large ones through the gateway, as our clients do
//! (create with the whole-file SHA-256 declared, chunk PUTs with `Content-Digest`, up to
//! `--parallel` chunks of a large file in flight), then learn of each completion by polling
//! the status every `--poll-ms` (`--completion poll`) or by the long poll
//! `GET /api/v1/uploads/{id}?wait=30` (`--completion wait`). With `--duration-secs` it is a
//! soak instead: the clients go on uploading small files until the time is up, and after each
//! completion read the File and download its content (compared with what was sent). It prints
//! requests/s, p50/p90/p99 per kind of request, the time from the last chunk's acknowledgement
//! to `completed`, completions/s, errors by status (any is a finding), and the resident memory
//! of each `--watch NAME=PID` process over time.
//!
//! **Sessions mode** (`--sessions-grpc URL`): the sessions service's ceiling in chunk commits/s,
//! driven over gRPC without workers or bytes: `--clients` tasks claim (`BeginChunk`) and record
//! (`CommitChunk`) the chunks of uploads of `--commits-per-upload` chunks each until
//! `--commits` are recorded. The metadata store (SQLite or DynamoDB) is what it measures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::client::{Api, ApiError, UploadStatus};
use crate::procs::{parse_watch, rss_of};
use lfusys_core::units::parse_size;

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    #[arg(long, env = "LFUSYS_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Concurrent clients (HTTP mode) or gRPC callers (sessions mode).
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Accounts the clients share (registered by the harness).
    #[arg(long, default_value_t = 4)]
    pub users: usize,
    /// Small uploads (one chunk each).
    #[arg(long, default_value_t = 1500)]
    pub small: usize,
    #[arg(long, default_value = "4KiB", value_parser = parse_size)]
    pub small_size: u64,
    /// Large uploads, started first.
    #[arg(long, default_value_t = 4)]
    pub large: usize,
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub large_size: u64,
    /// Chunks of one large upload in flight.
    #[arg(short = 'j', long, default_value_t = 4)]
    pub parallel: usize,
    /// How a client learns that its upload completed.
    #[arg(long, value_enum, default_value = "poll")]
    pub completion: Completion,
    /// Poll interval of `--completion poll`, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub poll_ms: u64,
    /// Open a new connection for every request (clients without keep-alive).
    #[arg(long)]
    pub no_keep_alive: bool,
    /// Soak: upload small files (and read and download each) for this many seconds.
    #[arg(long, default_value_t = 0)]
    pub duration_secs: u64,
    /// A process whose resident memory is sampled, as NAME=PID (repeatable).
    #[arg(long = "watch", value_name = "NAME=PID")]
    pub watch: Vec<String>,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 10)]
    pub sample_secs: u64,
    /// Sessions mode: the sessions service's gRPC URL.
    #[arg(long)]
    pub sessions_grpc: Option<String>,
    /// Sessions mode: chunk commits to record.
    #[arg(long, default_value_t = 20_000)]
    pub commits: usize,
    /// Sessions mode: chunks per upload.
    #[arg(long, default_value_t = 100)]
    pub commits_per_upload: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Completion {
    /// `GET /api/v1/uploads/{id}` every `--poll-ms`.
    Poll,
    /// `GET /api/v1/uploads/{id}?wait=30` (long poll).
    Wait,
}

/// Long-poll wait asked for by `--completion wait`, in seconds.
const WAIT_SECS: u64 = 30;
/// Sessions mode: the size of the uploads' chunks as the harness asks for them (the server's
/// default preferred chunk size; only the metadata is recorded, no bytes are sent).
const COMMIT_CHUNK_SIZE: u64 = 16 * 1024 * 1024;
/// Retries of one request that failed transiently before the client gives up on its upload.
const MAX_RETRIES: u32 = 8;

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    let watched = parse_watch(&args.watch)?;
    let sampler = MemorySampler::start(watched, Duration::from_secs(args.sample_secs.max(1)));
    let report = match &args.sessions_grpc {
        Some(url) => sessions_mode(&args, url).await?,
        None => http_mode(&args).await?,
    };
    let memory = sampler.finish().await;
    let report = Report { memory, ..report };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// What is measured

/// Latencies (µs) per kind of request, and errors by kind and status.
#[derive(Default)]
struct Recorder {
    latencies: Mutex<BTreeMap<&'static str, Vec<u32>>>,
    errors: Mutex<BTreeMap<String, u64>>,
    requests: AtomicU64,
}

impl Recorder {
    fn record(&self, kind: &'static str, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        self.latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_default()
            .push(micros);
    }

    /// A latency that is not a request (completion wait).
    fn observe(&self, kind: &'static str, took: Duration) {
        self.record(kind, took);
        self.requests.fetch_sub(1, Ordering::Relaxed);
    }

    fn error(&self, kind: &str, what: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(format!("{kind}: {what}"))
            .or_default() += 1;
    }

    fn summary(&self) -> BTreeMap<String, Latency> {
        let mut map = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.iter_mut()
            .map(|(k, v)| (k.to_string(), Latency::of(v)))
            .collect()
    }
}

#[derive(Debug, Serialize)]
struct Latency {
    count: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(samples: &mut [u32]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            f64::from(samples[i]) / 1000.0
        };
        Self {
            count: samples.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

#[derive(Debug, Serialize, Default)]
struct Report {
    mode: String,
    clients: usize,
    seconds: f64,
    requests: u64,
    requests_per_second: f64,
    /// Uploads completed (HTTP mode) or chunk commits recorded (sessions mode).
    done: u64,
    done_per_second: f64,
    latency: BTreeMap<String, Latency>,
    errors: BTreeMap<String, u64>,
    memory: Vec<MemorySeries>,
}

impl Report {
    /// The figures of a run whose requests `rec` recorded, `done` of them the unit of work.
    fn of(mode: String, clients: usize, seconds: f64, done: u64, rec: &Recorder) -> Self {
        let requests = rec.requests.load(Ordering::Relaxed);
        let errors = rec
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Self {
            mode,
            clients,
            seconds,
            requests,
            requests_per_second: requests as f64 / seconds,
            done,
            done_per_second: done as f64 / seconds,
            latency: rec.summary(),
            errors,
            memory: Vec::new(),
        }
    }

    fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let what = if self.mode == "sessions" {
            "chunk commits"
        } else {
            "uploads completed"
        };
        let _ = writeln!(
            out,
            "{} mode, {} clients, {:.1} s: {} requests ({:.0}/s); {} {what} ({:.1}/s)",
            self.mode,
            self.clients,
            self.seconds,
            self.requests,
            self.requests_per_second,
            self.done,
            self.done_per_second
        );
        let _ = writeln!(
            out,
            "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "p50", "p90", "p99", "max"
        );
        for (kind, l) in &self.latency {
            let _ = writeln!(
                out,
                "{kind:<22} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors: none");
        } else {
            let _ = writeln!(out, "errors:");
            for (what, n) in &self.errors {
                let _ = writeln!(out, "  {n:>7}  {what}");
            }
        }
        for m in &self.memory {
            let series: Vec<String> = m
                .samples
                .iter()
                .map(|(t, b)| format!("{t:.0}s {:.0}", *b as f64 / 1_048_576.0))
                .collect();
            let _ = writeln!(
                out,
                "RSS of {} (MiB): start {:.0}, peak {:.0}, end {:.0}; second half grew {:+.0}\n  {}",
                m.name,
                m.start_bytes as f64 / 1_048_576.0,
                m.peak_bytes as f64 / 1_048_576.0,
                m.end_bytes as f64 / 1_048_576.0,
                m.second_half_growth_bytes as f64 / 1_048_576.0,
                series.join(", ")
            );
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Resident memory of the watched processes

#[derive(Debug, Serialize)]
struct MemorySeries {
    name: String,
    pid: u32,
    /// (seconds since the start, VmRSS bytes)
    samples: Vec<(f64, u64)>,
    start_bytes: u64,
    peak_bytes: u64,
    end_bytes: u64,
    /// The last sample minus the one at half time: near zero on a plateau.
    second_half_growth_bytes: i64,
}

struct MemorySampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<MemorySeries>>,
}

impl MemorySampler {
    fn start(watched: Vec<(String, u32)>, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut series: Vec<MemorySeries> = watched
                .into_iter()
                .map(|(name, pid)| MemorySeries {
                    name,
                    pid,
                    samples: Vec::new(),
                    start_bytes: 0,
                    peak_bytes: 0,
                    end_bytes: 0,
                    second_half_growth_bytes: 0,
                })
                .collect();
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let t = started.elapsed().as_secs_f64();
                for s in &mut series {
                    if let Some(b) = rss_of(s.pid) {
                        s.samples.push((t, b));
                    }
                }
                if flag.load(Ordering::Relaxed) || series.is_empty() {
                    break;
                }
            }
            for s in &mut series {
                let bytes: Vec<u64> = s.samples.iter().map(|&(_, b)| b).collect();
                s.start_bytes = bytes.first().copied().unwrap_or(0);
                s.end_bytes = bytes.last().copied().unwrap_or(0);
                s.peak_bytes = bytes.iter().copied().max().unwrap_or(0);
                let half = bytes.get(bytes.len() / 2).copied().unwrap_or(0);
                s.second_half_growth_bytes = s.end_bytes as i64 - half as i64;
            }
            series
        });
        Self { stop, task }
    }

    async fn finish(self) -> Vec<MemorySeries> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP mode

/// The bytes `[offset, offset + len)` of a file of fast incompressible content derived from
/// `seed` (splitmix64 of each 8-byte word's index), so any chunk of it is made without the rest.
fn file_bytes(seed: u64, offset: u64, len: u64) -> Bytes {
    let word = |i: u64| {
        let mut z = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).to_le_bytes()
    };
    let first = offset / 8;
    let last = (offset + len).div_ceil(8);
    let mut out = Vec::with_capacity(((last - first) * 8) as usize);
    for i in first..last {
        out.extend_from_slice(&word(i));
    }
    let skip = (offset % 8) as usize;
    Bytes::from(out).slice(skip..skip + len as usize)
}

/// The whole-file SHA-256 of `file_bytes(seed, 0, size)`, made 8 MiB at a time.
fn file_sha256(seed: u64, size: u64) -> String {
    const BLOCK: u64 = 8 * 1024 * 1024;
    let mut whole = Sha256::new();
    let mut offset = 0;
    while offset < size {
        let len = BLOCK.min(size - offset);
        whole.update(file_bytes(seed, offset, len));
        offset += len;
    }
    hex::encode(whole.finalize())
}

fn status_of(e: &ApiError) -> String {
    match e {
        ApiError::Problem { status, kind, .. } => format!("{status} {kind}"),
        ApiError::Network { reason, .. } => format!("network: {reason}"),
        other => other.to_string(),
    }
}

/// Runs `f` until it succeeds, retrying transient failures (each recorded as an error).
async fn retried<T, F, Fut>(rec: &Recorder, kind: &'static str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 0;
    loop {
        let started = Instant::now();
        match f().await {
            Ok(v) => {
                rec.record(kind, started.elapsed());
                return Ok(v);
            }
            Err(e) => {
                rec.error(kind, &status_of(&e));
                attempt += 1;
                if !e.is_transient() || attempt > MAX_RETRIES {
                    return Err(anyhow::Error::new(e).context(format!("{kind} failed")));
                }
                tokio::time::sleep(crate::upload::backoff(attempt)).await;
            }
        }
    }
}

struct Job {
    size: u64,
    seed: u64,
}

struct Shared {
    args: LoadArgs,
    rec: Recorder,
    users: Vec<Api>,
    jobs: Vec<Job>,
    next_job: AtomicUsize,
    completed: AtomicU64,
    deadline: Option<Instant>,
}

async fn sign_up(args: &LoadArgs, n: usize, run_id: u64) -> anyhow::Result<Api> {
    let api = Api::in_memory_with(&args.server, if args.no_keep_alive { 0 } else { 64 })?;
    let email = format!("load-{run_id:x}-{n}@example.com");
    let password = format!("load-harness-{run_id:x}-password");
    api.register(&email, &password, Some("load harness"))
        .await
        .with_context(|| format!("registering {email}"))?;
    api.login(&email, &password)
        .await
        .with_context(|| format!("logging in as {email}"))?;
    Ok(api)
}

async fn http_mode(args: &LoadArgs) -> anyhow::Result<Report> {
    let run_id: u64 = rand::random();
    let mut users = Vec::new();
    for n in 0..args.users.max(1) {
        users.push(sign_up(args, n, run_id).await?);
    }
    let soak = args.duration_secs > 0;
    let mut jobs: Vec<Job> = (0..args.large)
        .map(|n| Job {
            size: args.large_size,
            seed: run_id ^ (n as u64 + 1),
        })
        .collect();
    if !soak {
        jobs.extend((0..args.small).map(|n| Job {
            size: args.small_size,
            seed: run_id ^ ((n + args.large) as u64 + 1),
        }));
    }
    let shared = Arc::new(Shared {
        args: args.clone(),
        rec: Recorder::default(),
        users,
        jobs,
        next_job: AtomicUsize::new(0),
        completed: AtomicU64::new(0),
        deadline: soak.then(|| Instant::now() + Duration::from_secs(args.duration_secs)),
    });
    let started = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|c| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move { client_loop(&shared, c).await })
        })
        .collect();
    let mut failures = Vec::new();
    for c in clients {
        if let Err(e) = c.await? {
            failures.push(format!("{e:#}"));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    for f in failures.iter().take(5) {
        eprintln!("a client gave up: {f}");
    }
    let mode = format!(
        "http ({}, completion by {})",
        if soak { "soak" } else { "fixed set" },
        match args.completion {
            Completion::Poll => format!("polling every {} ms", args.poll_ms),
            Completion::Wait => format!("long poll of {WAIT_SECS} s"),
        }
    );
    let done = shared.completed.load(Ordering::Relaxed);
    let mut report = Report::of(mode, args.clients, seconds, done, &shared.rec);
    if !failures.is_empty() {
        report
            .errors
            .insert("clients that gave up".into(), failures.len() as u64);
    }
    Ok(report)
}

async fn client_loop(shared: &Shared, client: usize) -> anyhow::Result<()> {
    let api = &shared.users[client % shared.users.len()];
    let mut n = 0u64;
    loop {
        let job = match shared.next_job.fetch_add(1, Ordering::Relaxed) {
            i if i < shared.jobs.len() => Job {
                size: shared.jobs[i].size,
                seed: shared.jobs[i].seed,
            },
            _ => match shared.deadline {
                Some(d) if Instant::now() < d => {
                    n += 1;
                    Job {
                        size: shared.args.small_size,
                        seed: (client as u64) << 32 | n,
                    }
                }
                _ => return Ok(()),
            },
        };
        upload_one(shared, api, &job).await?;
    }
}

async fn upload_one(shared: &Shared, api: &Api, job: &Job) -> anyhow::Result<()> {
    let rec = &shared.rec;
    let args = &shared.args;
    let size = job.size;
    let sha = file_sha256(job.seed, size);
    let name = format!("load-{:016x}.bin", job.seed);
    let created = retried(rec, "create", || {
        api.create_upload(&name, size, "application/octet-stream", Some(&sha))
    })
    .await?;
    // The chunk size is the server's choice.
    let status = retried(rec, "status", || api.upload_status(&created.upload_id)).await?;
    let chunk_of = |i: u32| {
        let offset = u64::from(i) * status.chunk_size;
        file_bytes(job.seed, offset, status.chunk_size.min(size - offset))
    };
    let next = AtomicU64::new(0);
    let total = u64::from(status.total_chunks);
    let send = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= total {
                return Ok::<(), anyhow::Error>(());
            }
            let i = i as u32;
            let data = chunk_of(i);
            let digest = lfusys_core::digest::format_content_digest(&Sha256::digest(&data).into());
            retried(rec, "chunk PUT", || {
                api.put_chunk(
                    &created.upload_url,
                    &created.upload_token,
                    i,
                    data.clone(),
                    &digest,
                )
            })
            .await?;
        }
    };
    let lanes = args.parallel.clamp(1, total.max(1) as usize);
    futures::future::try_join_all((0..lanes).map(|_| send())).await?;
    let last_ack = Instant::now();
    let done = wait_for_outcome(shared, api, &created.upload_id).await?;
    rec.observe("last chunk → completed", last_ack.elapsed());
    if done.state != "completed" {
        rec.error("outcome", &done.state);
        bail!("upload {} ended {}", created.upload_id, done.state);
    }
    shared.completed.fetch_add(1, Ordering::Relaxed);
    if shared.deadline.is_some() {
        let file_id = done.file_id.unwrap_or_default();
        let info = retried(rec, "file", || api.file(&file_id)).await?;
        if info.sha256.as_deref() != Some(sha.as_str()) {
            rec.error("file", "SHA-256 differs from what was sent");
        }
        let started = Instant::now();
        let body = match api.file_content(&file_id, 0, None).await {
            Ok(res) => res.bytes().await.map_err(|e| e.to_string()),
            Err(e) => Err(status_of(&e)),
        };
        match body {
            Ok(b) if hex::encode(Sha256::digest(&b)) == sha => {
                rec.record("download", started.elapsed());
            }
            Ok(_) => rec.error("download", "content differs from what was sent"),
            Err(e) => rec.error("download", &e),
        }
    }
    Ok(())
}

async fn wait_for_outcome(
    shared: &Shared,
    api: &Api,
    upload_id: &str,
) -> anyhow::Result<UploadStatus> {
    let rec = &shared.rec;
    let give_up = Instant::now() + Duration::from_secs(600);
    loop {
        let status = match shared.args.completion {
            Completion::Poll => retried(rec, "status", || api.upload_status(upload_id)).await?,
            Completion::Wait => {
                retried(rec, "status ?wait", || {
                    api.upload_status_wait(upload_id, WAIT_SECS)
                })
                .await?
            }
        };
        if !matches!(status.state.as_str(), "uploading" | "assembling") {
            return Ok(status);
        }
        if Instant::now() > give_up {
            bail!("upload {upload_id} still {} after 10 minutes", status.state);
        }
        if shared.args.completion == Completion::Poll {
            tokio::time::sleep(Duration::from_millis(shared.args.poll_ms)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions mode

/// The uploads the commits go to, each created by the caller that first needs it:
/// (upload id, chunk size, chunks).
type CommitSlots = Vec<tokio::sync::OnceCell<(String, u64, u32)>>;

async fn sessions_mode(args: &LoadArgs, url: &str) -> anyhow::Result<Report> {
    let client = sessions_api::client::connect_lazy(url)
        .with_context(|| format!("the sessions URL {url:?}"))?;
    let per_upload = args.commits_per_upload.max(1);
    let uploads_needed = args.commits.div_ceil(per_upload as usize).max(1);
    let run = Arc::new(CommitRun {
        owner: format!("load-{:x}", rand::random::<u64>()),
        per_upload,
        total: args.commits,
        rec: Recorder::default(),
        slots: (0..uploads_needed)
            .map(|_| tokio::sync::OnceCell::new())
            .collect(),
        next: AtomicUsize::new(0),
        committed: AtomicU64::new(0),
    });
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|_| {
            let (run, client) = (Arc::clone(&run), client.clone());
            tokio::spawn(async move { run.caller(client).await })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = run.committed.load(Ordering::Relaxed);
    Ok(Report::of(
        "sessions".into(),
        args.clients,
        seconds,
        done,
        &run.rec,
    ))
}

struct CommitRun {
    owner: String,
    per_upload: u32,
    total: usize,
    rec: Recorder,
    slots: CommitSlots,
    next: AtomicUsize,
    committed: AtomicU64,
}

type Sessions = sessions_api::proto::sessions_client::SessionsClient<tonic::transport::Channel>;

impl CommitRun {
    /// One caller: claims and records the next chunk until `total` are taken.
    async fn caller(&self, mut client: Sessions) -> anyhow::Result<()> {
        use sessions_api::proto::{
            BeginChunkOutcome, BeginChunkRequest, CommitChunkOutcome, CommitChunkRequest,
        };
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if n >= self.total {
                return Ok(());
            }
            let slot = n / self.per_upload as usize;
            let index = (n % self.per_upload as usize) as u32;
            let (upload_id, chunk_size, chunks) = self.upload(&client, slot).await?;
            if index >= chunks {
                continue;
            }
            // No bytes are written: any CRC stands for the chunk.
            let crc64nvme =
                lfusys_core::digest::crc64nvme(format!("{upload_id}/{index}").as_bytes());
            let t = Instant::now();
            let begun = match client
                .begin_chunk(BeginChunkRequest {
                    owner_id: self.owner.clone(),
                    upload_id: upload_id.clone(),
                    index,
                    size: chunk_size,
                    claim_id: String::new(),
                    ..Default::default()
                })
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    self.rec.error("BeginChunk", &format!("{:?}", s.code()));
                    continue;
                }
            };
            self.rec.record("BeginChunk", t.elapsed());
            if begun.outcome() != BeginChunkOutcome::Claimed {
                self.rec
                    .error("BeginChunk", &format!("{:?}", begun.outcome()));
                continue;
            }
            let t = Instant::now();
            let commit = CommitChunkRequest {
                owner_id: self.owner.clone(),
                upload_id,
                index,
                claim_id: begun.claim_id,
                size: chunk_size,
                etag: format!("\"{index}\""),
                crc64nvme,
                ..Default::default()
            };
            match client.commit_chunk(commit).await {
                Ok(r) if r.get_ref().outcome() == CommitChunkOutcome::Stored => {
                    self.rec.record("CommitChunk", t.elapsed());
                    self.committed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) => self
                    .rec
                    .error("CommitChunk", &format!("{:?}", r.get_ref().outcome())),
                Err(s) => self.rec.error("CommitChunk", &format!("{:?}", s.code())),
            }
        }
    }

    /// The upload of `slot`, created on first use.
    async fn upload(&self, client: &Sessions, slot: usize) -> anyhow::Result<(String, u64, u32)> {
        let made = self.slots[slot]
            .get_or_try_init(|| async {
                let t = Instant::now();
                let u = client
                    .clone()
                    .create_upload(sessions_api::proto::CreateUploadRequest {
                        owner_id: self.owner.clone(),
                        name: format!("commits-{slot}.bin"),
                        size: u64::from(self.per_upload) * COMMIT_CHUNK_SIZE,
                        content_type: "application/octet-stream".into(),
                        sha256: String::new(),
                        length_deferred: false,
                        partial: false,
                        concat_parts: Vec::new(),
                    })
                    .await?
                    .into_inner();
                self.rec.record("CreateUpload", t.elapsed());
                Ok::<_, tonic::Status>((u.upload_id, u.chunk_size, u.total_chunks))
            })
            .await
            .map_err(|s| anyhow::anyhow!("CreateUpload: {}", s.message()))?;
        Ok(made.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        let l = Latency::of(&mut v);
        assert_eq!(l.count, 100);
        assert!((l.p50_ms - 50.0).abs() < 1e-9);
        assert!((l.p99_ms - 99.0).abs() < 1e-9);
        assert!((l.max_ms - 100.0).abs() < 1e-9);
    }

    #[test]
    fn file_bytes_are_the_same_whatever_the_chunking() {
        let whole = file_bytes(7, 0, 1000);
        assert_eq!(whole.len(), 1000);
        assert_eq!(file_bytes(7, 13, 101), whole.slice(13..114));
        assert_ne!(file_bytes(8, 0, 1000), whole);
        let by_chunks: Vec<u8> = [(0, 333), (333, 333), (666, 334)]
            .iter()
            .flat_map(|&(o, l)| file_bytes(7, o, l).to_vec())
            .collect();
        assert_eq!(by_chunks, whole.to_vec());
        assert_eq!(file_sha256(7, 1000), hex::encode(Sha256::digest(&whole)));
    }
}
