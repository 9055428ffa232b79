//! Chaos (issue 14): the services as separate processes — the sessions service (two replicas
//! on the AWS backends, where it is stateless; one on the embedded ones, whose SQLite files are
//! its own), the gateway and two upload workers (each with an assembler), the replicas behind
//! round-robin TCP balancers — under random SIGKILLs and restarts, while three users upload
//! files of many sizes with `lfusys upload`, as ours do: an upload that fails is run again (it
//! resumes), unless the user's file list shows it done. Bounded in time; prints the kills, the
//! uploads and the invariants it checked:
//! - every file is a File exactly once, with its bytes (SHA-256 and a download of the largest);
//! - no upload is left uploading or assembling;
//! - no stored bytes without an owner: no part file left, one committed blob per File.
//!
//! Runs on the test backend (`LFUSYS_TEST_BACKEND`). The service binaries are the workspace's
//! own, next to `lfusys` in the target directory (`cargo test --workspace` builds them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use test_support::wait;

use crate::support::{
    aws_names, block_on, committed_blobs, free_port, parts_in_progress, sha256_file, test_backend,
    write_file, Client, BIN,
};

const MIB: usize = 1 << 20;
/// The sizes each user uploads, with 1 MiB chunks: one byte, parts of a chunk, exact and
/// off-by-one chunk multiples, several chunks.
const SIZES: &[usize] = &[
    1,
    1_000,
    300_000,
    MIB,
    MIB + 1,
    3 * MIB + 7,
    5 * MIB,
    6 * MIB + 123,
];
const USERS: usize = 3;
/// How long the services are killed for; the uploads then finish in peace.
const CHAOS: Duration = Duration::from_secs(90);
/// Runs of `lfusys upload` per file before the test gives up on it.
const ATTEMPTS: usize = 40;

/// One service process, restartable.
struct Service {
    name: &'static str,
    bin: PathBuf,
    env: Vec<(String, String)>,
    /// `/healthz`: the process serves; `/readyz`: and its dependencies answer.
    health_url: String,
    ready_url: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "starting {} ({}): {e}; `cargo test --workspace` builds the service binaries",
                self.name,
                self.bin.display()
            )
        }));
    }

    fn wait_ready(&self) {
        wait::blocking(
            &format!("{} to be ready", self.name),
            Duration::from_secs(60),
            || reqwest::blocking::get(&self.ready_url).is_ok_and(|r| r.status().is_success()),
        );
    }

    fn wait_serving(&self) {
        wait::blocking(
            &format!("{} to serve", self.name),
            Duration::from_secs(60),
            || reqwest::blocking::get(&self.health_url).is_ok_and(|r| r.status().is_success()),
        );
    }

    /// SIGKILL, as a crash leaves the process.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {}'s log ---\n{}",
                self.name,
                std::fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// A round-robin TCP balancer in front of a service's replicas: each connection goes to the next
/// replica that accepts it.
fn balance(listener: &TcpListener, backends: &[u16], stop: &AtomicBool) {
    listener.set_nonblocking(true).unwrap();
    let next = AtomicUsize::new(0);
    while !stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => panic!("balancer: {e}"),
        };
        client.set_nonblocking(false).unwrap();
        let first = next.fetch_add(1, Ordering::Relaxed);
        let backend = (0..backends.len())
            .map(|i| backends[(first + i) % backends.len()])
            .find_map(|port| TcpStream::connect(("127.0.0.1", port)).ok());
        let Some(backend) = backend else {
            continue; // every worker is down: the client sees a closed connection and retries
        };
        for (mut from, mut to) in [
            (client.try_clone().unwrap(), backend.try_clone().unwrap()),
            (backend, client),
        ] {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(std::net::Shutdown::Write);
            });
        }
    }
}

/// The storage settings every service of the test gets: nothing on the embedded backends; on
/// the AWS ones the resources of this data directory (created here), at the endpoints of the
/// SDK's standard variables, which the services inherit.
fn backend_env(data: &Path) -> Vec<(String, String)> {
    if test_backend() != "aws" {
        return Vec::new();
    }
    let (bucket, prefix, queue) = aws_names(data);
    let env: Vec<(String, String)> = [
        ("LFUSYS_BACKEND", "aws".to_owned()),
        ("LFUSYS_S3_BUCKET", bucket),
        ("LFUSYS_TABLE_PREFIX", prefix),
        ("LFUSYS_QUEUE_NAME", queue),
        // The tests' small chunks (the test S3 server allows them).
        ("LFUSYS_MIN_CHUNK_SIZE", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let storage =
        stores::StorageConfig::from_env(&lfusys_core::env::Env::from_pairs(&pairs)).unwrap();
    block_on(storage.create_resources()).unwrap();
    env
}

/// The services of one data directory — the sessions replicas first, then the gateway, then
/// the workers — and the balancers' listeners (sessions, workers) with the ports behind them.
struct Layout {
    services: Vec<Service>,
    gateway_url: String,
    balancers: Vec<(TcpListener, Vec<u16>)>,
}

fn service(
    name: &'static str,
    bin: &str,
    env: Vec<(String, String)>,
    port: u16,
    logs: &Path,
) -> Service {
    Service {
        name,
        bin: Path::new(BIN).parent().unwrap().join(bin),
        env,
        health_url: format!("http://127.0.0.1:{port}/healthz"),
        ready_url: format!("http://127.0.0.1:{port}/readyz"),
        log: logs.join(format!("{name}.log")),
        child: None,
    }
}

fn layout(data: &Path, logs: &Path) -> Layout {
    let mut base = vec![(
        "LFUSYS_DATA_DIR".to_owned(),
        data.to_string_lossy().into_owned(),
    )];
    base.extend(backend_env(data));
    let env = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        let mut env = base.clone();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    };
    let listener = || TcpListener::bind("127.0.0.1:0").unwrap();
    let (sessions_lb, workers_lb) = (listener(), listener());
    let sessions_url = format!("http://{}", sessions_lb.local_addr().unwrap());
    let workers_url = format!("http://{}", workers_lb.local_addr().unwrap());
    let replicas: &[&'static str] = if test_backend() == "aws" {
        &["sessions-a", "sessions-b"]
    } else {
        &["sessions"]
    };
    let mut services = Vec::new();
    let (mut sessions_ports, mut worker_ports) = (Vec::new(), Vec::new());
    for &name in replicas {
        let port = free_port();
        sessions_ports.push(port);
        let vars = env(&[
            ("LFUSYS_SESSIONS_LISTEN", format!("127.0.0.1:{port}")),
            ("LFUSYS_CHUNK_SIZE", "1MiB".into()),
            ("LFUSYS_SWEEP_INTERVAL_SECS", "1".into()),
            ("LFUSYS_CHUNK_LEASE_SECS", "2".into()),
            ("LFUSYS_ORPHAN_GRACE_SECS", "2".into()),
            ("LFUSYS_OUTBOX_INTERVAL_MS", "200".into()),
        ]);
        services.push(service(name, "sessions", vars, port, logs));
    }
    let gateway_port = free_port();
    let vars = env(&[
        ("LFUSYS_GATEWAY_LISTEN", format!("127.0.0.1:{gateway_port}")),
        ("LFUSYS_SESSIONS_URL", sessions_url.clone()),
        ("LFUSYS_PUBLIC_UPLOAD_URL", workers_url),
        ("LFUSYS_AUTH_LIMIT_PER_CLIENT", "0".into()),
        ("LFUSYS_LOGIN_LIMIT_PER_ACCOUNT", "0".into()),
        ("LFUSYS_WEB_DIR", "/nonexistent".into()),
    ]);
    services.push(service("gateway", "gateway", vars, gateway_port, logs));
    for name in ["worker-a", "worker-b"] {
        let port = free_port();
        worker_ports.push(port);
        let vars = env(&[
            ("LFUSYS_UPLOADS_LISTEN", format!("127.0.0.1:{port}")),
            ("LFUSYS_SESSIONS_URL", sessions_url.clone()),
            ("LFUSYS_ASSEMBLY_VISIBILITY_SECS", "2".into()),
        ]);
        services.push(service(name, "uploads", vars, port, logs));
    }
    Layout {
        services,
        gateway_url: format!("http://127.0.0.1:{gateway_port}"),
        balancers: vec![(sessions_lb, sessions_ports), (workers_lb, worker_ports)],
    }
}

/// One user's files, uploaded one after another; returns the runs of `lfusys upload` made.
fn upload_all(client: &Client, files: &[(PathBuf, String)]) -> usize {
    let mut runs = 0;
    for (path, sha) in files {
        let name = path.file_name().unwrap().to_str().unwrap();
        for attempt in 1..=ATTEMPTS {
            // An assembly that the last run left going finishes first (a run started meanwhile
            // would not find the upload once it completes); then, done already? (The run that
            // completed it may have been cut off before it said so.)
            wait::blocking(
                &format!("{name}: no assembly under way"),
                Duration::from_secs(60),
                || match assembling(client, name) {
                    Ok(false) => Ok(()),
                    Ok(true) => Err("assembling".to_owned()),
                    Err(e) => Err(e),
                },
            );
            if listed(client).iter().any(|f| f["name"] == name) {
                break;
            }
            runs += 1;
            let out = client
                .command(&["upload", path.to_str().unwrap(), "-j", "2", "--json"])
                .stderr(Stdio::null())
                .output()
                .unwrap();
            if out.status.success() {
                let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(report[0]["sha256"], sha.as_str(), "{name}");
                break;
            }
            assert!(
                attempt < ATTEMPTS,
                "{name}: no upload after {ATTEMPTS} runs"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    runs
}

/// Whether an upload named `name` is assembling; an error while the gateway is down.
fn assembling(client: &Client, name: &str) -> Result<bool, String> {
    let res = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/uploads", client.server))
        .bearer_auth(client.access_token())
        .send()
        .map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(res.status().to_string());
    }
    let list: serde_json::Value = res.json().map_err(|e| e.to_string())?;
    Ok(list["items"].as_array().is_some_and(|a| {
        a.iter()
            .any(|u| u["name"] == name && u["state"] == "assembling")
    }))
}

/// The user's Files; empty while the gateway is down.
fn listed(client: &Client) -> Vec<serde_json::Value> {
    let out = client.command(&["ls", "--json"]).output().unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["files"].as_array().cloned().unwrap_or_default()
}

#[test]
fn uploads_survive_random_kills_of_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Layout {
        services: mut all,
        gateway_url,
        balancers,
    } = layout(&data, dir.path());
    // The balancers come first: the services' clients connect through them.
    let stop_balancers = Arc::new(AtomicBool::new(false));
    let balancer_threads: Vec<_> = balancers
        .into_iter()
        .map(|(listener, backends)| {
            let stop = Arc::clone(&stop_balancers);
            std::thread::spawn(move || balance(&listener, &backends, &stop))
        })
        .collect();
    start_all(&mut all);
    let users: Vec<(Client, Vec<(PathBuf, String)>)> = (0..USERS)
        .map(|u| user_with_files(&gateway_url, u, dir.path()))
        .collect();

    let seed: u64 = rand::random();
    println!("[chaos] seed {seed}; {USERS} users × {} files", SIZES.len());
    let services = Arc::new(Mutex::new(all));
    let done = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (services, done) = (Arc::clone(&services), Arc::clone(&done));
        std::thread::spawn(move || kill_at_random(&services, &done, seed))
    };
    let started = Instant::now();
    let runs: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = users
            .iter()
            .map(|(client, files)| scope.spawn(|| upload_all(client, files)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    done.store(true, Ordering::Relaxed);
    let kills = chaos.join().unwrap();
    println!(
        "[chaos] {} kills ({}), {} files in {} runs of lfusys upload, {:.0} s",
        kills.len(),
        summary(&kills),
        USERS * SIZES.len(),
        runs,
        started.elapsed().as_secs_f64()
    );
    for s in services.lock().unwrap().iter() {
        s.wait_ready();
    }

    check_every_file_once(&users, dir.path());
    // Nothing left unfinished, nothing without an owner.
    for (client, _) in &users {
        wait::blocking("no unfinished upload", Duration::from_secs(60), || {
            client.api_get("/api/v1/uploads")["items"]
                .as_array()
                .is_some_and(Vec::is_empty)
        });
    }
    let files = USERS * SIZES.len();
    wait::blocking(
        "no stored bytes without an owner",
        Duration::from_secs(60),
        || match (parts_in_progress(&data), committed_blobs(&data)) {
            (0, blobs) if blobs == files => Ok(()),
            (parts, blobs) => Err(format!(
                "{parts} parts in progress, {blobs} blobs for {files} Files"
            )),
        },
    );
    println!("[chaos] no upload unfinished, no part in progress, one blob per File");
    stop_balancers.store(true, Ordering::Relaxed);
    for t in balancer_threads {
        t.join().unwrap();
    }
}

/// Starts every service: the gateway first, as it makes the signing key the workers read (it
/// writes the key before it serves). It is *ready* only once a sessions replica answers, so the
/// others start once it serves, and then all are waited for. (Waiting for the gateway to be
/// ready first passed only while a sessions call through the balancer to no replica happened to
/// fail with a status the probe counts as an answer.)
fn start_all(all: &mut [Service]) {
    let gateway = all.iter().position(|s| s.name == "gateway").unwrap();
    all[gateway].start();
    all[gateway].wait_serving();
    for s in all.iter_mut().filter(|s| s.name != "gateway") {
        s.start();
    }
    for s in all.iter() {
        s.wait_ready();
    }
    println!(
        "[chaos] {} backends: {}",
        test_backend(),
        all.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
    );
}

/// User `u`, signed up, and the files it will upload (with their SHA-256).
fn user_with_files(gateway_url: &str, u: usize, dir: &Path) -> (Client, Vec<(PathBuf, String)>) {
    let client = Client::new(gateway_url);
    client.signup(&format!("chaos-{u}@example.com"));
    let files = SIZES
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let path = dir.join(format!("u{u}-f{i}-{size}.bin"));
            let sha = write_file(&path, size, (u * 100 + i) as u64);
            (path, sha)
        })
        .collect();
    (client, files)
}

/// Kills a random service every 0.3–1.5 s and starts it again 0.1–1 s later, until `done` or
/// [`CHAOS`] has passed; returns the names of the killed, in order.
fn kill_at_random(
    services: &Mutex<Vec<Service>>,
    done: &AtomicBool,
    seed: u64,
) -> Vec<&'static str> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut kills = Vec::new();
    while !done.load(Ordering::Relaxed) && started.elapsed() < CHAOS {
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1500)));
        let mut all = services.lock().unwrap();
        let victim = rng.gen_range(0..all.len());
        all[victim].kill();
        kills.push(all[victim].name);
        drop(all);
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..1000)));
        services.lock().unwrap()[victim].start();
    }
    kills
}

/// Every file of every user is exactly one File with its SHA-256; the largest downloads whole.
fn check_every_file_once(users: &[(Client, Vec<(PathBuf, String)>)], dir: &Path) {
    for (client, files) in users {
        let listed = listed(client);
        assert_eq!(listed.len(), files.len(), "one File per file: {listed:?}");
        for (path, sha) in files {
            let name = path.file_name().unwrap().to_str().unwrap();
            let file = listed.iter().find(|f| f["name"] == name).unwrap();
            assert_eq!(file["sha256"], sha.as_str(), "{name}");
        }
        let (largest, sha) = files.last().unwrap();
        let id = listed
            .iter()
            .find(|f| f["name"] == largest.file_name().unwrap().to_str().unwrap())
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let copy = dir.join("copy.bin");
        client.download(&id, &copy);
        assert_eq!(&sha256_file(&copy), sha, "downloaded bytes");
    }
    println!(
        "[chaos] every file is one File with its SHA-256; the largest of each user downloads whole"
    );
}

/// "sessions ×3, gateway ×2, …"
fn summary(kills: &[&str]) -> String {
    let mut names: Vec<&str> = kills.to_vec();
    names.sort_unstable();
    names.dedup();
    names
        .iter()
        .map(|n| format!("{n} ×{}", kills.iter().filter(|k| *k == n).count()))
        .collect::<Vec<_>>()
        .join(", ")
}
