//! System tests specific to the AWS backends: `lfusys up --backend aws` as a real process
//! against the servers `scripts/aws-servers.sh` runs (moto for S3, DynamoDB and SQS), with
//! the CLI or plain HTTP as the client. (The whole system suite also runs on these backends:
//! `LFUSYS_TEST_BACKEND=aws cargo test --test commands -- system::`, in scripts/test-aws.sh.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{
    aws_args, aws_names, block_on, free_port, open_multipart_uploads, s3, sha256_file, write_file,
    Client, Server,
};
use sha2::{Digest, Sha256};
use test_support::aws as aws_support;
use test_support::aws::{Fault, FaultProxy};
use test_support::wait;

const MIB: usize = 1 << 20;

fn aws_server(dir: &std::path::Path, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let server = Server::spawn(dir, port, &aws_args(dir, true), extra, env);
    server.wait_ready();
    server
}

/// Creates an upload over plain HTTP.
fn create_upload(client: &Client, name: &str, size: usize) -> serde_json::Value {
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/uploads", client.server))
        .bearer_auth(client.access_token())
        .json(&serde_json::json!({"name": name, "size": size}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json().unwrap()
}

/// PUTs chunk `index` of `data`; returns the status.
fn put_chunk(created: &serde_json::Value, data: &[u8], index: usize) -> u16 {
    let chunk_size = created["chunk_size"].as_u64().unwrap() as usize;
    let chunk = &data[index * chunk_size..((index + 1) * chunk_size).min(data.len())];
    let digest = lfusys_core::digest::format_content_digest(&Sha256::digest(chunk).into());
    reqwest::blocking::Client::new()
        .put(format!(
            "{}/{index}",
            created["upload_url"].as_str().unwrap()
        ))
        .bearer_auth(created["upload_token"].as_str().unwrap())
        .header("content-digest", digest)
        .body(chunk.to_vec())
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// An upload of the largest number of chunks S3 allows: 10,000 parts (1 KiB chunks, which
/// the test S3 server allows), then downloaded and compared.
#[test]
fn an_upload_of_ten_thousand_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = aws_server(&data, free_port(), &["--chunk-size", "1KiB"], &[]);
    let client = Client::new(&server.url);
    client.signup("tenk@example.com");
    let source = dir.path().join("many-chunks.bin");
    let sha = write_file(&source, 10_000 * 1024, 31);
    let started = std::time::Instant::now();
    let reports = client.json(&["upload", source.to_str().unwrap(), "-j", "16"]);
    eprintln!(
        "10,000 chunks uploaded and assembled in {:?}",
        started.elapsed()
    );
    let report = &reports[0];
    assert_eq!(report["sha256"], sha.as_str());
    assert_eq!(report["chunks_sent"], 10_000);
    let upload = client.api_get(&format!(
        "/api/v1/uploads/{}",
        report["upload_id"].as_str().unwrap()
    ));
    assert_eq!(upload["total_chunks"], 10_000);
    assert_eq!(upload["state"], "completed");
    assert_eq!(upload["received_chunks"].as_array().unwrap().len(), 10_000);
    let copy = dir.path().join("copy.bin");
    client.download(report["file_id"].as_str().unwrap(), &copy);
    assert_eq!(sha256_file(&copy), sha);
    assert!(open_multipart_uploads(&aws_names(&data).0).is_empty());
    eprintln!("whole test: {:?}", started.elapsed());
}

/// On a real S3 server (MinIO), which verifies part checksums and full-object checksums: a
/// chunk whose body does not match its CRC-64/NVME (or its SHA-256) is refused with `422` and
/// nothing of it counts; the good chunks complete the upload, and the object S3 holds carries
/// the file's full-object CRC-64/NVME, which S3 checked at completion.
#[test]
fn a_real_s3_server_refuses_a_corrupt_chunk_and_checks_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let access = std::env::var("LFUSYS_TEST_S3_ACCESS_KEY").unwrap();
    let secret = std::env::var("LFUSYS_TEST_S3_SECRET_KEY").unwrap();
    let server = aws_server(
        &data,
        free_port(),
        &["--chunk-size", "5MiB"],
        &[
            ("AWS_ENDPOINT_URL_S3", aws_support::s3_url().as_str()),
            ("AWS_ACCESS_KEY_ID", access.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ],
    );
    let client = Client::new(&server.url);
    client.signup("corrupt@example.com");
    let bytes: Vec<u8> = (0..5 * MIB + 777).map(|i| (i * 13 % 251) as u8).collect();
    let created = create_upload(&client, "checked.bin", bytes.len());
    assert_eq!(created["total_chunks"], 2);
    let good = &bytes[..5 * MIB];
    let mut corrupt = good.to_vec();
    corrupt[4_000_000] ^= 0x5a;
    let crc_digest = lfusys_core::digest::ChunkDigests {
        crc64nvme: Some(lfusys_core::digest::crc64nvme(good)),
        sha256: None,
    }
    .to_header();
    let sha_digest = lfusys_core::digest::format_content_digest(&Sha256::digest(good).into());
    for digest in [crc_digest, sha_digest] {
        let res = reqwest::blocking::Client::new()
            .put(format!("{}/0", created["upload_url"].as_str().unwrap()))
            .bearer_auth(created["upload_token"].as_str().unwrap())
            .header("content-digest", &digest)
            .body(corrupt.clone())
            .send()
            .unwrap();
        assert_eq!(res.status(), 422, "{digest}");
    }
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let status = client.api_get(&format!("/api/v1/uploads/{id}"));
    assert_eq!(status["received_chunks"], serde_json::json!([]), "{status}");
    for i in 0..2 {
        assert_eq!(put_chunk(&created, &bytes, i), 201);
    }
    let file_id = client.completed_file(&id);
    let copy = dir.path().join("copy.bin");
    client.download(&file_id, &copy);
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
    let whole = lfusys_core::digest::crc64nvme(&bytes);
    let file = client.api_get(&format!("/api/v1/files/{file_id}"));
    assert_eq!(file["crc64nvme"], lfusys_core::digest::crc64_hex(whole));
    let head = block_on(async {
        let s3 = storage_aws::s3::client(&aws_support::real_s3().await);
        s3.head_object()
            .bucket(aws_names(&data).0)
            .key(lfusys_core::ids::blob_key_for_file(&file_id))
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap()
    });
    assert_eq!(
        head.checksum_crc64_nvme(),
        Some(lfusys_core::digest::crc64_base64(whole).as_str()),
        "S3 holds the object with the file's full-object CRC"
    );
    assert_eq!(
        head.checksum_type(),
        Some(&aws_sdk_s3::types::ChecksumType::FullObject)
    );
}

/// A job that can never succeed (its multipart upload vanished) is received
/// `--assembly-max-attempts` times, moved to the dead-letter queue by SQS, and the sessions
/// service marks the upload failed with the reason; nothing is published.
#[test]
fn a_poison_job_reaches_the_dead_letter_queue_and_fails_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    // No assembler: the job waits in the queue.
    let mut server = aws_server(&data, port, &["--assemblers", "0"], &[]);
    let client = Client::new(&server.url);
    client.signup("poison@example.com");
    let bytes: Vec<u8> = (0..3 * MIB).map(|i| (i * 7 % 251) as u8).collect();
    let created = create_upload(&client, "poison.bin", bytes.len());
    for i in 0..3 {
        assert_eq!(put_chunk(&created, &bytes, i), 201);
    }
    let id = created["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(
        client.api_get(&format!("/api/v1/uploads/{id}"))["state"],
        "assembling"
    );
    // The multipart upload disappears behind LFUSYS's back.
    let bucket = aws_names(&data).0;
    let open = open_multipart_uploads(&bucket);
    assert_eq!(open.len(), 1);
    block_on(async {
        let s3 = s3().await;
        for (key, upload_id) in open {
            s3.abort_multipart_upload()
                .bucket(&bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
                .unwrap();
        }
    });
    server.kill();
    let server = aws_server(
        &data,
        port,
        &[
            "--assembly-max-attempts",
            "2",
            "--assembly-visibility-secs",
            "1",
        ],
        &[],
    );
    wait::blocking("the upload to fail", Duration::from_secs(90), || {
        client.api_get(&format!("/api/v1/uploads/{id}"))["state"] == "failed"
    });
    let upload = client.api_get(&format!("/api/v1/uploads/{id}"));
    let error = upload["error"].as_str().unwrap_or_default();
    assert!(error.contains("dead-letter queue"), "{upload}");
    assert!(client.api_get("/api/v1/files")["items"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(open_multipart_uploads(&bucket).is_empty());
    drop(server);
}

/// An upload that expires releases its multipart upload: `ListMultipartUploads` is empty.
#[test]
fn expiry_leaves_no_multipart_upload_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = aws_server(
        &data,
        free_port(),
        &["--upload-ttl-secs", "2", "--sweep-interval-secs", "1"],
        &[],
    );
    let client = Client::new(&server.url);
    client.signup("expire@example.com");
    let bytes = vec![5u8; 3 * MIB];
    let created = create_upload(&client, "never-finished.bin", bytes.len());
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let first = put_chunk(&created, &bytes, 0);
    assert!(first == 201 || first == 410, "{first}");
    let bucket = aws_names(&data).0;
    wait::blocking("the upload to expire", Duration::from_secs(30), || {
        client.api_get(&format!("/api/v1/uploads/{id}"))["state"] == "expired"
    });
    wait::blocking(
        "its S3 multipart upload to be aborted",
        Duration::from_secs(10),
        || open_multipart_uploads(&bucket).is_empty(),
    );
    assert_eq!(put_chunk(&created, &bytes, 1), 410);
}

const THROTTLED: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#;
const DDB_500: &str = r#"{"__type":"com.amazon.coral.service#InternalServerError","message":"Internal server error"}"#;
const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
const ERROR_IN_200: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>";

/// DynamoDB throttling and `500`s (moto behind a loopback fault proxy), S3 `503 SlowDown`
/// (parts included) and an error inside the `200` of a `CompleteMultipartUpload` that did
/// complete (MinIO behind another proxy) are retried: the upload completes intact.
#[test]
fn throttling_and_server_errors_are_retried() {
    let kinds: Arc<[AtomicBool; 4]> = Arc::new(Default::default());
    let ddb = Arc::new(AtomicU64::new(0));
    let (d, k) = (Arc::clone(&ddb), Arc::clone(&kinds));
    let moto_proxy = FaultProxy::start(&aws_support::moto_dynamodb_url(), move |req| {
        if !req.target.starts_with("DynamoDB_") {
            return Fault::Forward; // SQS
        }
        let n = d.fetch_add(1, Ordering::SeqCst);
        if n % 5 == 3 {
            k[0].store(true, Ordering::SeqCst);
            return Fault::Answer(
                400,
                vec![
                    ("x-amzn-errortype", "ThrottlingException".into()),
                    ("content-type", "application/x-amz-json-1.0".into()),
                ],
                THROTTLED.into(),
            );
        }
        if n % 7 == 5 {
            k[1].store(true, Ordering::SeqCst);
            return Fault::Answer(
                500,
                vec![("content-type", "application/x-amz-json-1.0".into())],
                DDB_500.into(),
            );
        }
        Fault::Forward
    });
    let k = Arc::clone(&kinds);
    let s3_proxy = FaultProxy::start(&aws_support::s3_url(), move |req| {
        let completing = req.method == "POST" && req.path_and_query.contains("uploadId=");
        if completing && !k[3].swap(true, Ordering::SeqCst) {
            // Forwarded (the upload completes), but the answer is an error inside a 200.
            return Fault::ReplaceBody(ERROR_IN_200.into());
        }
        if req.n % 4 == 2 {
            k[2].store(true, Ordering::SeqCst);
            return Fault::Answer(
                503,
                vec![("content-type", "application/xml".into())],
                SLOW_DOWN.into(),
            );
        }
        Fault::Forward
    });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let access = std::env::var("LFUSYS_TEST_S3_ACCESS_KEY").unwrap();
    let secret = std::env::var("LFUSYS_TEST_S3_SECRET_KEY").unwrap();
    let server = aws_server(
        &data,
        free_port(),
        // A real S3 server: parts of 5 MiB but the last.
        &["--chunk-size", "5MiB"],
        &[
            ("AWS_ENDPOINT_URL_DYNAMODB", moto_proxy.url.as_str()),
            ("AWS_ENDPOINT_URL_S3", s3_proxy.url.as_str()),
            ("AWS_ACCESS_KEY_ID", access.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
            ("AWS_MAX_ATTEMPTS", "10"),
        ],
    );
    let client = Client::new(&server.url);
    client.signup("faults@example.com");
    let source = dir.path().join("flaky.bin");
    let sha = write_file(&source, 11 * MIB + 5, 41);
    let reports = client.json(&["upload", source.to_str().unwrap(), "-j", "3"]);
    assert_eq!(reports[0]["sha256"], sha.as_str());
    assert_eq!(reports[0]["chunks_sent"], 3);
    let copy = dir.path().join("copy.bin");
    client.download(reports[0]["file_id"].as_str().unwrap(), &copy);
    assert_eq!(sha256_file(&copy), sha);
    let injected: Vec<bool> = kinds.iter().map(|k| k.load(Ordering::SeqCst)).collect();
    assert_eq!(
        injected,
        [true; 4],
        "throttling, DynamoDB 500, S3 503, error in 200 ({} + {} faults)",
        moto_proxy.faults(),
        s3_proxy.faults()
    );
}

/// Without its resources the system starts but is not ready, and says why; it becomes
/// ready by itself once they exist.
#[test]
fn readiness_names_a_missing_resource_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::spawn(&data, free_port(), &aws_args(&data, false), &[], &[]);
    wait::blocking("the server to be ready", Duration::from_secs(30), || {
        reqwest::blocking::get(format!("{}/readyz", server.url)).is_ok_and(|r| {
            r.status() == 503 && r.text().unwrap_or_default().contains("does not exist")
        })
    });
    let (bucket, table_prefix, queue_name) = aws_names(&data);
    block_on(async {
        let sdk = aws_support::moto().await;
        storage_aws::create_resources(
            &sdk,
            &storage_aws::AwsResources {
                bucket,
                table_prefix,
                queue_name,
                max_receives: 5,
            },
        )
        .await
        .unwrap();
    });
    server.wait_ready();
    let client = Client::new(&server.url);
    client.signup("ready@example.com");
    assert!(client.json(&["ls"])["files"].as_array().unwrap().is_empty());
}

/// With `--download-redirect-secs`, a download answers `302` to a presigned S3 URL that
/// serves the file (with its name).
#[test]
fn downloads_can_redirect_to_a_presigned_url() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = aws_server(&data, free_port(), &["--download-redirect-secs", "60"], &[]);
    let client = Client::new(&server.url);
    client.signup("redirect@example.com");
    let source = dir.path().join("report.pdf");
    let sha = write_file(&source, 2 * MIB + 3, 43);
    let id = client.json(&["upload", source.to_str().unwrap()])[0]["file_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = http
        .get(format!("{}/api/v1/files/{id}/content", server.url))
        .bearer_auth(client.access_token())
        .send()
        .unwrap();
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&aws_support::moto_url()), "{location}");
    let body = reqwest::blocking::get(&location).unwrap();
    assert_eq!(body.status(), 200);
    assert!(body.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("report.pdf"));
    assert_eq!(hex::encode(Sha256::digest(body.bytes().unwrap())), sha);
    // The CLI follows the redirect.
    let copy = dir.path().join("copy.pdf");
    client.download(&id, &copy);
    assert_eq!(sha256_file(&copy), sha);
}
