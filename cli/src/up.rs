//! `lfusys up`: the whole system on one machine — the sessions service, the upload workers
//! and the gateway, each behind its real network interface on loopback, on embedded backends
//! (local disk and SQLite under `--data-dir`) or, with `--backend aws`, on S3, DynamoDB and
//! SQS through the AWS SDK's standard configuration (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! credentials). The gateway serves the web app when it is built.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use storage_aws::AwsResources;
use stores::{self as storage_config, StorageConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use lfusys_core::units::parse_size;

#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Where uploads, files, metadata and keys are kept.
    #[arg(long, env = "LFUSYS_DATA_DIR", default_value = "./lfusys-data")]
    pub data_dir: PathBuf,
    /// The gateway's address: the web app and the API.
    #[arg(long, env = "LFUSYS_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The upload workers' address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub uploads_listen: SocketAddr,
    /// The sessions service's address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub sessions_listen: SocketAddr,
    /// URL clients use to reach the upload workers (default: their listen address).
    #[arg(long, env = "LFUSYS_PUBLIC_UPLOAD_URL")]
    pub public_upload_url: Option<String>,
    /// Preferred chunk size (raised for files that would need more than 10,000 chunks).
    #[arg(long, env = "LFUSYS_CHUNK_SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Largest accepted upload.
    #[arg(long, env = "LFUSYS_MAX_UPLOAD_SIZE", default_value = "5TiB", value_parser = parse_size)]
    pub max_upload_size: u64,
    /// Unfinished uploads expire after this many seconds.
    #[arg(long, env = "LFUSYS_UPLOAD_TTL_SECS", default_value_t = 86_400)]
    pub upload_ttl_secs: u64,
    /// How often expired uploads are swept, in seconds.
    #[arg(long, env = "LFUSYS_SWEEP_INTERVAL_SECS", default_value_t = 30)]
    pub sweep_interval_secs: u64,
    /// An upload assembling this many seconds although its job was sent gets the job again
    /// (the queue lost it).
    #[arg(long, env = "LFUSYS_ASSEMBLY_STALE_SECS", default_value_t = 600)]
    pub assembly_stale_secs: u64,
    /// How often, in milliseconds, assembly jobs not sent yet (a crash, a queue error) are sent.
    #[arg(long, env = "LFUSYS_OUTBOX_INTERVAL_MS", default_value_t = 1000)]
    pub outbox_interval_ms: u64,
    /// Seconds after which blob storage that no upload owns (a crash during a create) is
    /// released.
    #[arg(long, env = "LFUSYS_ORPHAN_GRACE_SECS", default_value_t = 600)]
    pub orphan_grace_secs: u64,
    /// Seconds a worker's claim on a chunk lasts (renewed while the chunk streams); a crashed
    /// worker's claim runs out after this.
    #[arg(long, env = "LFUSYS_CHUNK_LEASE_SECS", default_value_t = 20)]
    pub chunk_lease_secs: u64,
    /// Seconds an assembly job stays invisible to other assemblers without a heartbeat.
    #[arg(long, env = "LFUSYS_ASSEMBLY_VISIBILITY_SECS", default_value_t = 30)]
    pub assembly_visibility_secs: u64,
    /// The built web app (served at `/` when the folder exists).
    #[arg(long, env = "LFUSYS_WEB_DIR", default_value = "frontend/dist")]
    pub web_dir: PathBuf,
    /// Storage: `embedded` (local disk and SQLite in --data-dir) or `aws` (S3, DynamoDB, SQS;
    /// the data directory then only keeps the signing keys).
    #[arg(long, env = "LFUSYS_BACKEND", value_enum, default_value = "embedded")]
    pub backend: Backend,
    /// AWS: the S3 bucket of uploads and files.
    #[arg(long, env = "LFUSYS_S3_BUCKET", default_value = storage_config::DEFAULT_S3_BUCKET)]
    pub s3_bucket: String,
    /// AWS: prefix of the DynamoDB tables (`{prefix}uploads`, `{prefix}chunks`, `{prefix}files`, `{prefix}auth`).
    #[arg(long, env = "LFUSYS_TABLE_PREFIX", default_value = storage_config::DEFAULT_TABLE_PREFIX)]
    pub table_prefix: String,
    /// AWS: the SQS FIFO assembly queue (its dead-letter queue is `{name}-dlq.fifo`).
    #[arg(long, env = "LFUSYS_QUEUE_NAME", default_value = storage_config::DEFAULT_QUEUE_NAME)]
    pub queue_name: String,
    /// AWS: create the bucket, tables and queues when they are missing (development, tests).
    #[arg(long, env = "LFUSYS_CREATE_RESOURCES")]
    pub create_resources: bool,
    /// AWS: smallest chunk but the last (default S3's 5MiB; lower only for test servers that allow it).
    #[arg(long, env = "LFUSYS_MIN_CHUNK_SIZE", value_parser = parse_size)]
    pub min_chunk_size: Option<u64>,
    /// Deliveries of one assembly job before its upload is failed (on AWS: the dead-letter
    /// queue's receive count, set when the queue is created).
    #[arg(long, env = "LFUSYS_ASSEMBLY_MAX_ATTEMPTS", default_value_t = storage_config::DEFAULT_MAX_RECEIVES)]
    pub assembly_max_attempts: u32,
    /// Assembler tasks in the upload workers (default 16 per core, from 16 to 256; 0: chunk
    /// ingest only, jobs wait in the queue).
    #[arg(long, env = "LFUSYS_ASSEMBLERS", default_value_t = uploads::default_assemblers())]
    pub assemblers: usize,
    /// Register, login and refresh requests per client address per minute (0: no limit).
    #[arg(long, env = "LFUSYS_AUTH_LIMIT_PER_CLIENT", default_value_t = 30)]
    pub auth_limit_per_client: u32,
    /// Login attempts per account per minute (0: no limit).
    #[arg(long, env = "LFUSYS_LOGIN_LIMIT_PER_ACCOUNT", default_value_t = 10)]
    pub login_limit_per_account: u32,
    /// Status requests with `?wait` (long polls) one user may have open at once.
    #[arg(long, env = "LFUSYS_MAX_WAITS_PER_USER", default_value_t = gateway::config::DEFAULT_MAX_WAITS_PER_USER)]
    pub max_waits_per_user: u32,
    /// How often, in milliseconds, a long poll reads the upload again (changes of other
    /// replicas; this process's own wake it at once).
    #[arg(long, env = "LFUSYS_WAIT_RECHECK_MS", default_value_t = 1000)]
    pub wait_recheck_ms: u64,
    /// Answer downloads with a 302 to a presigned S3 URL valid this many seconds (0: stream
    /// through the gateway). AWS only.
    #[arg(long, env = "LFUSYS_DOWNLOAD_REDIRECT_SECS", default_value_t = 0)]
    pub download_redirect_secs: u64,
}

/// The storage backend of `lfusys up`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Aws,
}

impl UpArgs {
    /// The storage these arguments name, local state in `data_dir`.
    pub fn storage(&self, data_dir: &std::path::Path) -> StorageConfig {
        match self.backend {
            Backend::Embedded => StorageConfig::embedded(data_dir),
            Backend::Aws => StorageConfig::Aws {
                data_dir: data_dir.to_path_buf(),
                resources: AwsResources {
                    bucket: self.s3_bucket.clone(),
                    table_prefix: self.table_prefix.clone(),
                    queue_name: self.queue_name.clone(),
                    max_receives: self.assembly_max_attempts.max(1),
                },
                min_chunk_size: self
                    .min_chunk_size
                    .unwrap_or(storage_aws::s3::MIN_PART_SIZE)
                    .max(1),
            },
        }
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what} (is another LFUSYS already running? choose another address)"))
}

/// What runs where, on stdout. A closed stdout (`lfusys up | head -1`) must not bring the server
/// down: write errors are ignored.
fn print_banner(
    storage: &StorageConfig,
    data_dir: &Path,
    web_dir: &Path,
    gateway_url: &str,
    uploads_url: &str,
    sessions_url: &str,
) {
    let web = if web_dir.join("index.html").is_file() {
        "web app and API"
    } else {
        "API (web app not built: run `npm ci && npm run build` in frontend/)"
    };
    let backend = match storage {
        StorageConfig::Embedded { .. } => {
            format!("embedded backends, data in {}", data_dir.display())
        }
        StorageConfig::Aws { resources, .. } => format!(
            "AWS backends (S3 bucket {}, DynamoDB tables {}*, SQS queue {}), keys in {}",
            resources.bucket,
            resources.table_prefix,
            storage_aws::sqs::fifo_name(&resources.queue_name),
            data_dir.display()
        ),
    };
    let banner = format!(
        "LFUSYS is running on {backend}\n  {web}: {gateway_url}\n  upload workers: {uploads_url}\n  sessions (gRPC): {sessions_url}\nPress Ctrl-C to stop.\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

/// The sessions service's configuration of `lfusys up`.
fn sessions_config(args: &UpArgs, storage: &StorageConfig, listen: SocketAddr) -> sessions::Config {
    let mut sessions_cfg = sessions::Config::new(storage.clone());
    sessions_cfg.listen = listen;
    sessions_cfg.preferred_chunk_size = args.chunk_size;
    sessions_cfg.max_upload_size = args.max_upload_size;
    sessions_cfg.upload_ttl = Duration::from_secs(args.upload_ttl_secs);
    sessions_cfg.sweep_interval = Duration::from_secs(args.sweep_interval_secs.max(1));
    sessions_cfg.assembly_stale_after = Duration::from_secs(args.assembly_stale_secs.max(1));
    sessions_cfg.outbox_interval = Duration::from_millis(args.outbox_interval_ms.max(1));
    sessions_cfg.chunk_lease = Duration::from_secs(args.chunk_lease_secs.max(1));
    sessions_cfg.orphan_grace = Duration::from_secs(args.orphan_grace_secs.max(1));
    sessions_cfg.wait_recheck = Duration::from_millis(args.wait_recheck_ms.max(1));
    sessions_cfg
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    service_kit::observability::init_tracing();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let storage = args.storage(&data_dir);
    if args.create_resources {
        storage
            .create_resources()
            .await
            .context("creating the storage resources (--create-resources)")?;
    }

    let gateway_listener = bind(args.listen, "gateway").await?;
    let sessions_listener = bind(args.sessions_listen, "sessions service").await?;
    let uploads_listener = bind(args.uploads_listen, "upload workers").await?;
    let gateway_addr = gateway_listener.local_addr()?;
    let sessions_url = format!("http://{}", sessions_listener.local_addr()?);
    let uploads_url = format!("http://{}", uploads_listener.local_addr()?);

    let sessions_cfg = sessions_config(&args, &storage, sessions_listener.local_addr()?);
    let sessions_state = sessions::SessionsState::open(&sessions_cfg).await?;

    // The gateway creates the signing key pair on first start; the workers read its public half.
    let mut gateway_cfg = gateway::Config::new(storage.clone());
    gateway_cfg.listen = gateway_addr;
    gateway_cfg.sessions_url.clone_from(&sessions_url);
    gateway_cfg.public_upload_url = args
        .public_upload_url
        .clone()
        .unwrap_or_else(|| uploads_url.clone());
    gateway_cfg.web_dir.clone_from(&args.web_dir);
    gateway_cfg.auth_limit_per_client = args.auth_limit_per_client;
    gateway_cfg.login_limit_per_account = args.login_limit_per_account;
    gateway_cfg.max_waits_per_user = args.max_waits_per_user;
    gateway_cfg.download_redirect =
        (args.download_redirect_secs > 0).then(|| Duration::from_secs(args.download_redirect_secs));
    let gateway_state = gateway::GatewayState::open(&gateway_cfg).await?;

    let mut uploads_cfg = uploads::Config::embedded(&data_dir);
    uploads_cfg.storage = storage.clone();
    uploads_cfg.assembly_max_attempts = args.assembly_max_attempts.max(1);
    uploads_cfg.assemblers = args.assemblers;
    uploads_cfg.listen = uploads_listener.local_addr()?;
    uploads_cfg.sessions_url.clone_from(&sessions_url);
    uploads_cfg.public_key_file = gateway_cfg.public_key_file();
    uploads_cfg.assembly_visibility = Duration::from_secs(args.assembly_visibility_secs.max(1));
    uploads_cfg.max_upload_size = args.max_upload_size;
    let uploads_state = uploads::WorkerState::open(&uploads_cfg).await?;
    // The gateway's origin is the public one: tus clients find `/api/v1/tus` there.
    let tus_routes = uploads::tus::router(uploads_state.clone());

    let stop = CancellationToken::new();
    let on = |t: &CancellationToken| {
        let t = t.clone();
        async move { t.cancelled().await }
    };
    let (s, u, g) = (on(&stop), on(&stop), on(&stop));
    let sessions_task = tokio::spawn(async move {
        Ok::<_, anyhow::Error>(sessions::serve(sessions_listener, sessions_state, s).await?)
    });
    let uploads_task = tokio::spawn(async move {
        Ok::<_, anyhow::Error>(uploads::serve(uploads_listener, uploads_state, u).await?)
    });
    let gateway_task = tokio::spawn(async move {
        Ok::<_, anyhow::Error>(
            gateway::serve_with(gateway_listener, gateway_state, tus_routes, g).await?,
        )
    });

    print_banner(
        &storage,
        &data_dir,
        &args.web_dir,
        &format!("http://{gateway_addr}"),
        &uploads_url,
        &sessions_url,
    );

    // Stop on Ctrl-C/SIGTERM, or as soon as any service fails, and then stop the others.
    let mut tasks = [
        ("sessions service", sessions_task),
        ("upload workers", uploads_task),
        ("gateway", gateway_task),
    ];
    let failed = tokio::select! {
        () = service_kit::observability::shutdown_signal() => None,
        (res, i, _) = futures::future::select_all(tasks.iter_mut().map(|(_, t)| t)) => Some((i, res)),
    };
    stop.cancel();
    if let Some((i, res)) = failed {
        let what = tasks[i].0;
        return match res {
            Ok(Ok(())) => Err(anyhow::anyhow!("the {what} stopped unexpectedly")),
            Ok(Err(e)) => Err(e.context(format!("the {what} failed"))),
            Err(e) => Err(anyhow::Error::new(e).context(format!("the {what} crashed"))),
        };
    }
    eprintln!("Stopping…");
    for (what, task) in tasks {
        task.await?
            .with_context(|| format!("stopping the {what}"))?;
    }
    Ok(())
}
