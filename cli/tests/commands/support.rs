//! Runs real `lfusys` processes for the system tests: `lfusys up` on loopback with its own
//! data directory, and client commands with their own config directory.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
pub use test_support::data::{sha256_file, write_file};
pub use test_support::net::free_port;
use test_support::wait;

pub const BIN: &str = env!("CARGO_BIN_EXE_lfusys");

pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// The backend the system tests run on: `LFUSYS_TEST_BACKEND` (`embedded`, the default, or
/// `aws`: S3, DynamoDB and SQS at the endpoints of the SDK's standard variables, e.g. those
/// `scripts/aws-servers.sh env` prints).
pub fn test_backend() -> String {
    std::env::var("LFUSYS_TEST_BACKEND").unwrap_or_else(|_| "embedded".to_owned())
}

/// Names of the AWS resources of one test server: derived from its data directory, so each
/// test has its own and a restarted server finds its own again.
pub fn aws_names(data_dir: &Path) -> (String, String, String) {
    let digest = Sha256::digest(data_dir.to_string_lossy().as_bytes());
    let tag = hex::encode(&digest[..6]);
    (
        format!("lfusys-test-{tag}"),
        format!("t{tag}-"),
        format!("t{tag}-assembly"),
    )
}

/// A moto S3 client (path-style), for the runtime it is created on.
pub async fn s3() -> aws_sdk_s3::Client {
    storage_aws::s3::client(&test_support::aws::moto().await)
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Multipart uploads still open in the bucket: (key, upload id).
pub fn open_multipart_uploads(bucket: &str) -> Vec<(String, String)> {
    block_on(async {
        let out = s3()
            .await
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        out.uploads()
            .iter()
            .map(|u| {
                (
                    u.key().unwrap_or_default().to_owned(),
                    u.upload_id().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    })
}

/// How many blob uploads in progress the test backend of the server on `data_dir` holds: the
/// local blob store's `.part` files, or the multipart uploads open in its S3 bucket.
pub fn blob_uploads_in_progress(data_dir: &Path) -> usize {
    if test_backend() == "aws" {
        open_multipart_uploads(&aws_names(data_dir).0).len()
    } else {
        files_ending(&data_dir.join("blobs"), ".part").len()
    }
}

/// The parts stored in blob uploads in progress on the server on `data_dir`: each local part
/// file counts one (pre-sized, it holds the upload's place), each part of an S3 multipart
/// upload one (an S3 multipart upload without a part stores nothing).
pub fn parts_in_progress(data_dir: &Path) -> usize {
    if test_backend() != "aws" {
        return blob_uploads_in_progress(data_dir);
    }
    let bucket = aws_names(data_dir).0;
    // moto answers ListParts with a document the SDK refuses (`ListPartsResponse` for
    // `ListPartsResult`); moto takes unsigned requests, so the parts are counted in the XML.
    let moto = test_support::aws::moto_url();
    open_multipart_uploads(&bucket)
        .into_iter()
        .map(|(key, upload_id)| {
            let res = reqwest::blocking::Client::new()
                .get(format!("{moto}/{bucket}/{key}"))
                .query(&[("uploadId", upload_id.as_str())])
                .send()
                .unwrap();
            if res.status() == reqwest::StatusCode::NOT_FOUND {
                return 0; // aborted since it was listed
            }
            let xml = res.error_for_status().unwrap().text().unwrap();
            xml.matches("<Part>").count()
        })
        .sum()
}

/// How many committed blobs (Files' bytes) the server on `data_dir` stores.
pub fn committed_blobs(data_dir: &Path) -> usize {
    if test_backend() != "aws" {
        return files_ending(&data_dir.join("blobs").join("files"), "").len();
    }
    let bucket = aws_names(data_dir).0;
    block_on(async {
        let out = s3()
            .await
            .list_objects_v2()
            .bucket(bucket)
            .prefix("files/")
            .send()
            .await
            .unwrap();
        out.contents().len()
    })
}

/// Flips one bit of the stored blob of File `file_id` at `offset`, behind the server's back
/// (on the test backend of the server on `data_dir`: the local file, or the S3 object).
pub fn corrupt_file_blob(data_dir: &Path, file_id: &str, offset: usize) {
    let key = lfusys_core::ids::blob_key_for_file(file_id);
    if test_backend() == "aws" {
        let bucket = aws_names(data_dir).0;
        block_on(async {
            let s3 = s3().await;
            let object = s3
                .get_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            let mut bytes = object.body.collect().await.unwrap().to_vec();
            bytes[offset] ^= 0x01;
            s3.put_object()
                .bucket(&bucket)
                .key(&key)
                .body(bytes.into())
                .send()
                .await
                .unwrap();
        });
    } else {
        let path = data_dir.join("blobs").join(key);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
    }
}

/// Whether the test backend of the server on `data_dir` stores the blob of File `file_id`.
pub fn file_blob_exists(data_dir: &Path, file_id: &str) -> bool {
    let key = lfusys_core::ids::blob_key_for_file(file_id);
    if test_backend() == "aws" {
        let bucket = aws_names(data_dir).0;
        block_on(async {
            match s3()
                .await
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
            {
                Ok(_) => true,
                Err(e)
                    if e.as_service_error().is_some_and(
                        aws_sdk_s3::operation::head_object::HeadObjectError::is_not_found,
                    ) =>
                {
                    false
                }
                Err(e) => panic!("S3 HeadObject: {e:?}"),
            }
        })
    } else {
        data_dir.join("blobs").join(key).exists()
    }
}

/// The `lfusys up` arguments that select the test backend.
pub fn backend_args(data_dir: &Path) -> Vec<String> {
    if test_backend() == "aws" {
        aws_args(data_dir, true)
    } else {
        Vec::new()
    }
}

/// The `lfusys up` arguments of the AWS backend on this data directory's resources.
pub fn aws_args(data_dir: &Path, create_resources: bool) -> Vec<String> {
    let (bucket, prefix, queue) = aws_names(data_dir);
    let mut args = vec![
        "--backend".into(),
        "aws".into(),
        "--s3-bucket".into(),
        bucket,
        "--table-prefix".into(),
        prefix,
        "--queue-name".into(),
        queue,
        // The tests' small chunks (the test S3 server is configured to allow them).
        "--min-chunk-size".into(),
        "1".into(),
    ];
    if create_resources {
        args.push("--create-resources".into());
    }
    args
}

impl Server {
    /// Starts `lfusys up` on the test backend and waits until the gateway answers `/readyz`.
    pub fn start(data_dir: &Path, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let server = Self::spawn(data_dir, port, &backend_args(data_dir), extra, env);
        server.wait_ready();
        server
    }

    /// Starts `lfusys up` with the given backend arguments; returns once it prints its URL.
    pub fn spawn(
        data_dir: &Path,
        port: u16,
        backend: &[String],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let log = data_dir.with_extension(format!("{port}.log"));
        let mut cmd = Command::new(BIN);
        cmd.args(["up", "--data-dir"])
            .arg(data_dir)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--web-dir",
                "/nonexistent",
            ])
            // 1 MiB chunks unless the test chooses.
            .args(if extra.contains(&"--chunk-size") {
                &[][..]
            } else {
                &["--chunk-size", "1MiB"][..]
            })
            .args(backend)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning lfusys up");
        let stdout = child.stdout.take().unwrap();
        let mut url = None;
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(u) = line
                .split("API")
                .nth(1)
                .and_then(|rest| rest.split("http://").nth(1))
            {
                url = Some(format!("http://{}", u.trim()));
                break;
            }
        }
        // Keep reading what the server prints so it never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let url = url.unwrap_or_else(|| {
            panic!(
                "lfusys up did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        Server {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    /// Waits until the gateway answers `/readyz` with success.
    pub fn wait_ready(&self) {
        wait::blocking("the server to be ready", Duration::from_secs(30), || {
            reqwest::blocking::get(format!("{}/readyz", self.url))
                .is_ok_and(|r| r.status().is_success())
        });
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself (e.g. a failpoint aborted it).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        wait::blocking("the server to exit", timeout, || {
            self.child.try_wait().unwrap()
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        // The server's log helps whoever reads a failed test.
        if std::thread::panicking() {
            eprintln!(
                "--- log of lfusys up at {} ---\n{}",
                self.url,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// A client: `lfusys` commands with a private config directory.
pub struct Client {
    pub server: String,
    pub config_dir: tempfile::TempDir,
}

impl Client {
    pub fn new(server: &str) -> Client {
        Client {
            server: server.to_owned(),
            config_dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("LFUSYS_SERVER", &self.server)
            .env("LFUSYS_CONFIG_DIR", self.config_dir.path())
            .env("LFUSYS_PASSWORD", "correct horse battery staple")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lfusys {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    pub fn signup(&self, email: &str) {
        self.ok(&["register", "--email", email, "--password-stdin"]);
        self.ok(&["login", "--email", email, "--password-stdin"]);
    }

    /// The saved access token (for direct HTTP calls).
    pub fn access_token(&self) -> String {
        let text =
            std::fs::read_to_string(self.config_dir.path().join("credentials.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// `lfusys download FILE_ID -o TO --quiet`, which must succeed.
    pub fn download(&self, file_id: &str, to: &Path) {
        self.ok(&["download", file_id, "-o", to.to_str().unwrap(), "--quiet"]);
    }

    /// Waits (a minute at most) until upload `upload_id` is completed; returns its File's id.
    pub fn completed_file(&self, upload_id: &str) -> String {
        let path = format!("/api/v1/uploads/{upload_id}");
        wait::blocking("the upload to complete", Duration::from_secs(60), || {
            self.api_get(&path)["state"] == "completed"
        });
        self.api_get(&path)["file_id"].as_str().unwrap().to_owned()
    }

    pub fn api_get(&self, path: &str) -> serde_json::Value {
        let res = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.server))
            .bearer_auth(self.access_token())
            .send()
            .unwrap();
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().unwrap()
    }
}

/// Every file below `dir` whose name ends with `suffix`.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_ending(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out
}

/// Creates an upload over plain HTTP (no whole-file SHA-256 unless given).
pub fn create_upload(client: &Client, size: usize, sha256: Option<&str>) -> serde_json::Value {
    let mut body = serde_json::json!({"name": "raw.bin", "size": size});
    if let Some(sha) = sha256 {
        body["sha256"] = sha.into();
    }
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/uploads", client.server))
        .bearer_auth(client.access_token())
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json().unwrap()
}

/// The PUT of `body` as chunk `index` with the given `Content-Digest` (the body's own if
/// `None`).
pub fn chunk_put(
    created: &serde_json::Value,
    index: &str,
    body: &[u8],
    digest: Option<&str>,
) -> reqwest::blocking::RequestBuilder {
    let own = lfusys_core::digest::format_content_digest(
        &sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            body,
        ))
        .into(),
    );
    reqwest::blocking::Client::new()
        .put(format!(
            "{}/{index}",
            created["upload_url"].as_str().unwrap()
        ))
        .bearer_auth(created["upload_token"].as_str().unwrap())
        .header("content-digest", digest.unwrap_or(&own))
        .body(body.to_vec())
}

/// PUTs `body` as chunk `index` (see [`chunk_put`]); returns the status and the answer's JSON.
pub fn put_raw(
    created: &serde_json::Value,
    index: &str,
    body: &[u8],
    digest: Option<&str>,
) -> (u16, serde_json::Value) {
    let res = chunk_put(created, index, body, digest).send().unwrap();
    let status = res.status().as_u16();
    (status, res.json().unwrap_or(serde_json::Value::Null))
}

pub fn chunk_of(data: &[u8], created: &serde_json::Value, index: usize) -> Vec<u8> {
    let size = created["chunk_size"].as_u64().unwrap() as usize;
    data[index * size..((index + 1) * size).min(data.len())].to_vec()
}

/// `lfusys upload PATH -j PARALLEL --json`: the report of the one file.
pub fn upload_json(client: &Client, path: &std::path::Path, parallel: &str) -> serde_json::Value {
    let reports = client.json(&["upload", path.to_str().unwrap(), "-j", parallel]);
    reports[0].clone()
}
