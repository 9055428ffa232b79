//! `lfusys`: runs LFUSYS locally (`lfusys up`) and is its command-line client.

// Returns freed chunk buffers to the OS promptly: with the system allocator the workers'
// resident memory grows with fragmentation under many concurrent chunks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod bench_s3;
mod bench_tusd;
mod client;
mod credentials;
mod files;
mod load;
mod procs;
mod up;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::client::Api;

#[derive(Parser)]
#[command(
    name = "lfusys",
    version,
    about = "Move very large files into object storage, fast and without losing a byte"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ServerArgs {
    /// The LFUSYS server (gateway) URL.
    #[arg(
        long,
        env = "LFUSYS_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// Print machine-readable JSON instead of human output.
    #[arg(long, global = true)]
    json: bool,
}

// Parsed once per run: the size of `up`'s arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the whole system locally (gateway, sessions, upload workers) on embedded backends.
    Up(up::UpArgs),
    /// Create an account.
    Register {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Log in and keep the session in the user's config directory.
    Login {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Log out (revokes the session on the server).
    Logout {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show who is logged in.
    Whoami {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Upload files; run the same command again to resume an interrupted upload.
    Upload {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Chunks in flight at once.
        #[arg(short = 'j', long, default_value_t = 4)]
        parallel: usize,
        /// No progress bars.
        #[arg(long, short)]
        quiet: bool,
        /// Do not compute the file's SHA-256 (it costs most of the client's CPU): the file is
        /// still verified end to end by its CRC-64/NVME, but gets no SHA-256.
        #[arg(long, conflicts_with = "sha256")]
        no_sha256: bool,
        /// The SHA-256 the file must have (e.g. a published checksum, 64 hex digits): if the
        /// file reads otherwise, its upload fails and nothing is published.
        #[arg(long, value_name = "HEX", value_parser = parse_sha256)]
        sha256: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List your files and unfinished uploads.
    Ls {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Download a file (verifies its SHA-256).
    Download {
        id: String,
        /// Where to write it (default: the file's name in the current directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a file, or cancel an unfinished upload.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Measure upload throughput against a running server.
    Bench(bench::BenchArgs),
    /// Benchmark LFUSYS against tusd side by side (see scripts/bench-tusd.sh).
    BenchTusd(bench_tusd::TusdBenchArgs),
    /// Load harness: many concurrent clients against a running server (a benchmark).
    Load(load::LoadArgs),
}

fn read_password(from_stdin: bool, confirm: bool) -> anyhow::Result<String> {
    if from_stdin || std::env::var_os("LFUSYS_PASSWORD").is_some() {
        if let Ok(p) = std::env::var("LFUSYS_PASSWORD") {
            return Ok(p);
        }
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let p = rpassword::prompt_password("Password: ").context("reading the password")?;
    if confirm {
        let again = rpassword::prompt_password("Password (again): ")?;
        anyhow::ensure!(p == again, "the passwords do not match");
    }
    Ok(p)
}

/// A SHA-256 given on the command line, as lowercase hex.
fn parse_sha256(s: &str) -> Result<String, String> {
    lfusys_core::digest::parse_hex(s.trim())
        .map(|d| lfusys_core::digest::to_hex(&d))
        .map_err(|_| "a SHA-256 is 64 hexadecimal characters".to_owned())
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `lfusys upload`: the files one after the other, each reported when it is stored.
async fn upload_files(
    api: &Api,
    files: &[PathBuf],
    opts: &upload::UploadOptions,
    json: bool,
) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for path in files {
        let report = upload::upload_file(api, path, opts).await?;
        if !json {
            let resumed = if report.chunks_skipped > 0 {
                format!(
                    ", resumed: {} chunks were already uploaded",
                    report.chunks_skipped
                )
            } else {
                String::new()
            };
            println!(
                "Uploaded {} ({}) as {} in {:.1}s, {:.1} MB/s{resumed}",
                report.path,
                lfusys_core::units::format_size(report.size),
                report.file_id,
                report.seconds,
                report.megabytes_per_second
            );
        }
        reports.push(report);
    }
    if json {
        print_json(&reports);
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::BenchTusd(args) => Box::pin(bench_tusd::run(args)).await,
        Command::Load(args) => load::run(args).await,
        Command::Register {
            email,
            name,
            password_stdin,
            server,
        } => {
            let password = read_password(password_stdin, true)?;
            let api = Api::new(&server.server)?;
            let user = api.register(&email, &password, name.as_deref()).await?;
            if server.json {
                print_json(&user);
            } else {
                println!(
                    "Registered {}. Now run: lfusys login --email {}",
                    user.email, user.email
                );
            }
            Ok(())
        }
        Command::Login {
            email,
            password_stdin,
            server,
        } => {
            let password = read_password(password_stdin, false)?;
            let api = Api::new(&server.server)?;
            let user = api.login(&email, &password).await?;
            if server.json {
                print_json(&user);
            } else {
                println!("Logged in to {} as {}.", api.server(), user.email);
            }
            Ok(())
        }
        Command::Logout { server } => {
            Api::new(&server.server)?.logout().await?;
            if !server.json {
                println!("Logged out.");
            }
            Ok(())
        }
        Command::Whoami { server } => {
            let user = Api::new(&server.server)?.me().await?;
            if server.json {
                print_json(&user);
            } else {
                println!("{} ({})", user.email, user.name.unwrap_or_default());
            }
            Ok(())
        }
        Command::Upload {
            files,
            parallel,
            quiet,
            no_sha256,
            sha256,
            server,
        } => {
            let opts = upload::UploadOptions {
                parallelism: parallel,
                progress: !quiet && !server.json,
                declare_sha256: !no_sha256,
                expected_sha256: sha256,
                ..upload::UploadOptions::default()
            };
            upload_files(&Api::new(&server.server)?, &files, &opts, server.json).await
        }
        Command::Ls { server } => files::list(&Api::new(&server.server)?, server.json).await,
        Command::Download {
            id,
            output,
            quiet,
            server,
        } => {
            files::download(
                &Api::new(&server.server)?,
                &id,
                output,
                !quiet && !server.json,
                server.json,
            )
            .await
        }
        Command::Rm { ids, server } => {
            files::remove(&Api::new(&server.server)?, &ids, server.json).await
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let interruptible = !matches!(cli.command, Command::Up(_));
    let outcome = if interruptible {
        tokio::select! {
            r = run(cli) => r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\nInterrupted. What was sent is kept on the server: run the same command again to resume.");
                return ExitCode::from(130);
            }
        }
    } else {
        run(cli).await
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
