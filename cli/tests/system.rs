//! System tests: the real `lfusys` binary, `lfusys up` as a separate process on loopback,
//! and the CLI client, end to end — including interruptions, kills and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{files_ending, free_port, random_file, sha256_file, wait_for, Client, Server};

const MIB: usize = 1 << 20;

fn upload_json(client: &Client, path: &std::path::Path, parallel: &str) -> serde_json::Value {
    let reports = client.json(&["upload", path.to_str().unwrap(), "-j", parallel]);
    reports[0].clone()
}

/// Number of chunks the server has for the user's only unfinished upload (0 when none).
fn received_chunks(client: &Client) -> (usize, usize) {
    let list = client.api_get("/api/v1/uploads");
    let Some(item) = list["items"].as_array().and_then(|a| a.first()) else {
        return (0, 0);
    };
    let id = item["upload_id"].as_str().unwrap();
    let status = client.api_get(&format!("/api/v1/uploads/{id}"));
    (
        status["received_chunks"].as_array().unwrap().len(),
        status["total_chunks"].as_u64().unwrap() as usize,
    )
}

#[test]
fn register_login_upload_list_download_delete() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), free_port(), &[], &[]);
    let client = Client::new(&server.url);
    client.signup("alice@example.com");
    assert_eq!(client.json(&["whoami"])["email"], "alice@example.com");

    let source = dir.path().join("big.iso");
    let sha = random_file(&source, 5 * MIB + 12_345, 7);
    let report = upload_json(&client, &source, "4");
    assert_eq!(report["sha256"], sha.as_str());
    assert_eq!(report["chunks_sent"], 6);
    assert_eq!(report["chunks_skipped"], 0);
    let id = report["file_id"].as_str().unwrap().to_owned();

    let listing = client.json(&["ls"]);
    let files = listing["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["id"], id.as_str());
    assert_eq!(files[0]["name"], "big.iso");
    assert_eq!(files[0]["size"], 5 * MIB + 12_345);
    assert_eq!(files[0]["sha256"], sha.as_str());
    assert!(listing["uploads"].as_array().unwrap().is_empty());

    let copy = dir.path().join("copy.iso");
    client.ok(&["download", &id, "-o", copy.to_str().unwrap(), "--quiet"]);
    assert_eq!(sha256_file(&copy), sha);

    client.ok(&["rm", &id]);
    assert!(client.json(&["ls"])["files"].as_array().unwrap().is_empty());
    assert!(
        files_ending(&server.data_dir.join("blobs"), &id).is_empty(),
        "the blob is deleted too"
    );
    let out = client.run(&["download", &id, "-o", copy.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cli_errors_are_readable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), free_port(), &[], &[]);
    let client = Client::new(&server.url);
    let out = client.run(&["ls"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lfusys login"));
    client.signup("bob@example.com");
    let out = client.run(&["register", "--email", "bob@example.com", "--password-stdin"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = client.run(&["upload", "/nonexistent/file.bin"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file.bin"));
    let offline = Client::new(&format!("http://127.0.0.1:{}", free_port()));
    let out = offline.run(&["register", "--email", "x@example.com", "--password-stdin"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the server"));
}

#[test]
fn interrupted_upload_resumes_with_only_the_missing_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), free_port(), &[], &[]);
    let client = Client::new(&server.url);
    client.signup("carol@example.com");
    let source = dir.path().join("video.mkv");
    let sha = random_file(&source, 160 * MIB, 11);

    let mut upload = client
        .command(&["upload", source.to_str().unwrap(), "-j", "1", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), || received_chunks(&client).0 >= 3);
    upload.kill().unwrap(); // SIGKILL: no chance to clean up
    upload.wait().unwrap();
    let (had, total) = received_chunks(&client);
    assert!(
        had >= 3 && had < total,
        "interrupted mid-upload: {had}/{total}"
    );

    let report = upload_json(&client, &source, "4");
    let skipped = report["chunks_skipped"].as_u64().unwrap() as usize;
    assert!(skipped >= had, "resumed: {report}");
    assert_eq!(
        skipped + report["chunks_sent"].as_u64().unwrap() as usize,
        total
    );
    let copy = dir.path().join("copy.mkv");
    client.ok(&[
        "download",
        report["file_id"].as_str().unwrap(),
        "-o",
        copy.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(sha256_file(&copy), sha);
    assert_eq!(client.json(&["ls"])["files"].as_array().unwrap().len(), 1);
}

#[test]
fn server_killed_mid_upload_restarts_and_the_upload_completes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut server = Server::start(&data, port, &[], &[]);
    let client = Client::new(&server.url);
    client.signup("dave@example.com");
    let source = dir.path().join("disk.img");
    let sha = random_file(&source, 96 * MIB, 13);

    let mut upload = client
        .command(&["upload", source.to_str().unwrap(), "-j", "2", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), || received_chunks(&client).0 >= 3);
    server.kill(); // SIGKILL mid-upload
    upload.kill().unwrap();
    upload.wait().unwrap();

    let server = Server::start(&data, port, &[], &[]);
    let (had, total) = received_chunks(&client);
    assert!(
        had >= 3 && had < total,
        "kept across the crash: {had}/{total}"
    );
    let report = upload_json(&client, &source, "4");
    assert!(report["chunks_skipped"].as_u64().unwrap() as usize >= had);
    assert_eq!(report["sha256"], sha.as_str());
    let copy = dir.path().join("copy.img");
    client.ok(&[
        "download",
        report["file_id"].as_str().unwrap(),
        "-o",
        copy.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(sha256_file(&copy), sha);
    drop(server);
}

#[test]
fn assembler_killed_mid_job_is_redelivered_and_publishes_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut server = Server::start(
        &data,
        port,
        &["--assembly-visibility-secs", "2"],
        &[("LFUSYS_FAILPOINT", "assembler-crash-after-commit")],
    );
    let client = Client::new(&server.url);
    client.signup("erin@example.com");
    let source = dir.path().join("archive.tar");
    let sha = random_file(&source, 3 * MIB + 5, 17);
    let mut upload = client
        .command(&["upload", source.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The assembler commits the blob, then the failpoint aborts the whole server process.
    let status = server.wait_exit(Duration::from_secs(60));
    assert!(!status.success());
    upload.kill().unwrap();
    upload.wait().unwrap();

    let server = Server::start(&data, port, &["--assembly-visibility-secs", "2"], &[]);
    wait_for(Duration::from_secs(60), || {
        client.json(&["ls"])["files"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    });
    let files = client.json(&["ls"])["files"].as_array().unwrap().clone();
    assert_eq!(files.len(), 1, "exactly one File: {files:?}");
    assert_eq!(files[0]["sha256"], sha.as_str());
    assert!(
        client.json(&["ls"])["uploads"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing left unfinished"
    );
    drop(server);
}

#[test]
fn expired_upload_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        free_port(),
        &["--upload-ttl-secs", "1", "--sweep-interval-secs", "1"],
        &[],
    );
    let client = Client::new(&server.url);
    client.signup("frank@example.com");
    let http = reqwest::blocking::Client::new();
    let created: serde_json::Value = http
        .post(format!("{}/api/v1/uploads", server.url))
        .bearer_auth(client.access_token())
        .json(&serde_json::json!({"name": "never-finished.bin", "size": 3 * MIB}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let url = created["upload_url"].as_str().unwrap().to_owned();
    let chunk = vec![1u8; MIB];
    let digest = commons::digest::format_content_digest(
        &sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            &chunk,
        ))
        .into(),
    );
    let put = |index: u32| {
        http.put(format!("{url}/{index}"))
            .bearer_auth(created["upload_token"].as_str().unwrap())
            .header("content-digest", &digest)
            .body(chunk.clone())
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let first = put(0);
    assert!(first == 201 || first == 410, "{first}");

    wait_for(Duration::from_secs(30), || {
        client.api_get(&format!("/api/v1/uploads/{id}"))["state"] == "expired"
    });
    assert!(
        files_ending(&server.data_dir.join("blobs"), ".part").is_empty(),
        "storage released"
    );
    assert_eq!(put(1), 410);
    assert!(client.api_get("/api/v1/uploads")["items"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(client.api_get("/api/v1/files")["items"]
        .as_array()
        .unwrap()
        .is_empty());
}
