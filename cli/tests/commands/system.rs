//! System tests: the real `lfusys` binary, `lfusys up` as a separate process on loopback,
//! and the CLI client, end to end — including interruptions, kills and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use crate::support::{
    chunk_of, corrupt_file_blob, create_upload, files_ending, free_port, put_raw, sha256_file,
    upload_json, write_file, Client, Server,
};
use test_support::wait;

const MIB: usize = 1 << 20;

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

/// `lfusys upload SOURCE -j 1`, killed (SIGKILL: no chance to clean up) once the server has
/// three chunks; returns how many chunks it has of how many.
fn interrupted_upload(client: &Client, source: &std::path::Path) -> (usize, usize) {
    let mut upload = client
        .command(&["upload", source.to_str().unwrap(), "-j", "1", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait::blocking(
        "three chunks to be received",
        Duration::from_secs(60),
        || received_chunks(client).0 >= 3,
    );
    upload.kill().unwrap();
    upload.wait().unwrap();
    let (had, total) = received_chunks(client);
    assert!(
        had >= 3 && had < total,
        "interrupted mid-upload: {had}/{total}"
    );
    (had, total)
}

#[test]
fn register_login_upload_list_download_delete() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), free_port(), &[], &[]);
    let client = Client::new(&server.url);
    client.signup("alice@example.com");
    assert_eq!(client.json(&["whoami"])["email"], "alice@example.com");

    let source = dir.path().join("big.iso");
    let sha = write_file(&source, 5 * MIB + 12_345, 7);
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
    client.download(&id, &copy);
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
    let sha = write_file(&source, 160 * MIB, 11);

    let (had, total) = interrupted_upload(&client, &source);

    let report = upload_json(&client, &source, "4");
    let skipped = report["chunks_skipped"].as_u64().unwrap() as usize;
    assert!(skipped >= had, "resumed: {report}");
    assert_eq!(
        skipped + report["chunks_sent"].as_u64().unwrap() as usize,
        total
    );
    let copy = dir.path().join("copy.mkv");
    client.download(report["file_id"].as_str().unwrap(), &copy);
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
    let sha = write_file(&source, 96 * MIB, 13);

    let mut upload = client
        .command(&["upload", source.to_str().unwrap(), "-j", "2", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait::blocking(
        "three chunks to be received",
        Duration::from_secs(60),
        || received_chunks(&client).0 >= 3,
    );
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
    client.download(report["file_id"].as_str().unwrap(), &copy);
    assert_eq!(sha256_file(&copy), sha);
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
    let digest = lfusys_core::digest::format_content_digest(
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

    wait::blocking("the upload to expire", Duration::from_secs(30), || {
        client.api_get(&format!("/api/v1/uploads/{id}"))["state"] == "expired"
    });
    // The release follows the move to expired.
    wait::blocking(
        "the expired upload's storage to be released",
        Duration::from_secs(30),
        || files_ending(&server.data_dir.join("blobs"), ".part").is_empty(),
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

/// Many requests race for the last chunks of an upload, each chunk sent several times at
/// once: every chunk is stored exactly once (`201`), the others see it stored (`200`) or in
/// progress (`409`), the upload completes once and exactly one File appears.
#[test]
fn racing_last_chunks_store_each_once_and_publish_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), free_port(), &[], &[]);
    let client = Client::new(&server.url);
    client.signup("grace@example.com");
    let data: Vec<u8> = (0..6 * MIB + 99).map(|i| (i * 31 % 253) as u8).collect();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
    let created = create_upload(&client, data.len(), Some(&sha));
    let total = created["total_chunks"].as_u64().unwrap() as usize;
    assert_eq!(total, 7);
    for i in 0..total - 3 {
        assert_eq!(
            put_raw(
                &created,
                &i.to_string(),
                &chunk_of(&data, &created, i),
                None
            )
            .0,
            201
        );
    }
    // The last three chunks, four requests each, all at once.
    let answers: Vec<(usize, u16, serde_json::Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (total - 3..total)
            .flat_map(|i| std::iter::repeat_n(i, 4))
            .map(|i| {
                let (created, chunk) = (&created, chunk_of(&data, &created, i));
                s.spawn(move || {
                    let (status, body) = put_raw(created, &i.to_string(), &chunk, None);
                    (i, status, body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for i in total - 3..total {
        let stored = answers
            .iter()
            .filter(|(c, status, _)| *c == i && *status == 201)
            .count();
        assert_eq!(stored, 1, "chunk {i} stored exactly once: {answers:?}");
    }
    for (_, status, body) in &answers {
        assert!(matches!(status, 200 | 201 | 409), "{status} {body}");
        if *status == 409 {
            assert!(
                body["type"]
                    .as_str()
                    .unwrap()
                    .ends_with("/chunk-in-progress"),
                "{body}"
            );
        }
    }
    let id = created["upload_id"].as_str().unwrap().to_owned();
    client.completed_file(&id);
    let files = client.api_get("/api/v1/files")["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(files.len(), 1, "exactly one File: {files:?}");
    assert_eq!(files[0]["sha256"], sha.as_str());
    // A chunk sent again after completion is recognised, not stored again.
    assert_eq!(
        put_raw(&created, "0", &chunk_of(&data, &created, 0), None).0,
        200
    );
}

/// Bad chunk requests are refused with the contract's statuses and nothing of them counts;
/// the good chunks then complete the upload intact.
#[test]
fn bad_chunk_requests_are_refused_and_never_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), free_port(), &[], &[]);
    let client = Client::new(&server.url);
    client.signup("heidi@example.com");
    let data: Vec<u8> = (0..2 * MIB + 5).map(|i| (i * 7 % 241) as u8).collect();
    let created = create_upload(&client, data.len(), None);
    let first = chunk_of(&data, &created, 0);
    let mut corrupt = first.clone();
    corrupt[12_345] ^= 0xff;
    let good_digest = lfusys_core::digest::format_content_digest(
        &<sha2::Sha256 as sha2::Digest>::digest(&first).into(),
    );
    // The body does not match its digest: 422, nothing stored.
    let (status, body) = put_raw(&created, "0", &corrupt, Some(&good_digest));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["type"].as_str().unwrap().ends_with("/digest-mismatch"),
        "{body}"
    );
    // The same with the CRC-64/NVME the CLI and the web app send.
    let good_crc = lfusys_core::digest::ChunkDigests {
        crc64nvme: Some(lfusys_core::digest::crc64nvme(&first)),
        sha256: None,
    }
    .to_header();
    let (status, body) = put_raw(&created, "0", &corrupt, Some(&good_crc));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("CRC-64/NVME"),
        "{body}"
    );
    // Out of range, not a number, malformed digest, short body.
    assert_eq!(put_raw(&created, "3", &first, None).0, 400);
    assert_eq!(put_raw(&created, "x", &first, None).0, 400);
    assert_eq!(
        put_raw(&created, "0", &first, Some("sha-256=:nope:")).0,
        400
    );
    assert_eq!(put_raw(&created, "0", &first[..100], None).0, 400);
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let status = client.api_get(&format!("/api/v1/uploads/{id}"));
    assert_eq!(status["received_chunks"], serde_json::json!([]), "{status}");
    assert_eq!(status["bytes_received"], 0);
    for i in 0..3 {
        assert_eq!(
            put_raw(
                &created,
                &i.to_string(),
                &chunk_of(&data, &created, i),
                None
            )
            .0,
            201
        );
    }
    // Stored with one digest, sent again with another: 409.
    let (status, body) = put_raw(&created, "0", &corrupt, None);
    assert_eq!(status, 409, "{body}");
    let file_id = client.completed_file(&id);
    let copy = dir.path().join("copy.bin");
    client.download(&file_id, &copy);
    assert_eq!(std::fs::read(&copy).unwrap(), data);
}

/// Without a SHA-256 (`--no-sha256`) the File has none (`null`), but it is still verified
/// end to end by its CRC-64/NVME, which is also its ETag; its bytes are exactly the uploaded
/// ones, and `lfusys download` checks them against that CRC: a stored byte changed on disk is
/// refused, and nothing is written.
#[test]
fn an_upload_without_a_sha256_is_verified_by_its_crc() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), free_port(), &[], &[]);
    let client = Client::new(&server.url);
    client.signup("ivan@example.com");
    let source = dir.path().join("plain.bin");
    let sha = write_file(&source, 3 * MIB + 17, 23);
    let report = client.json(&["upload", source.to_str().unwrap(), "--no-sha256"])[0].clone();
    assert_eq!(report["sha256"], serde_json::Value::Null);
    let id = report["file_id"].as_str().unwrap().to_owned();
    let file = client.api_get(&format!("/api/v1/files/{id}"));
    assert_eq!(file["sha256"], serde_json::Value::Null, "{file}");
    assert_eq!(file["sha256_source"], serde_json::Value::Null, "{file}");
    assert_eq!(file["size"], 3 * MIB + 17);
    let crc = lfusys_core::digest::crc64_hex(lfusys_core::digest::crc64nvme(
        &std::fs::read(&source).unwrap(),
    ));
    assert_eq!(file["crc64nvme"], crc.as_str(), "{file}");
    assert_eq!(report["crc64nvme"], crc.as_str(), "{report}");
    let res = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/files/{id}/content", server.url))
        .bearer_auth(client.access_token())
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["etag"],
        format!("\"crc64nvme-{crc}\"").as_str()
    );
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(res.bytes().unwrap())),
        sha
    );
    let copy = dir.path().join("copy.bin");
    let out = client.run(&["download", &id, "-o", copy.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("CRC-64/NVME verified (the file has no SHA-256)"),
        "{said}"
    );
    assert_eq!(sha256_file(&copy), sha);

    // One byte of the stored file changed behind the server's back.
    corrupt_file_blob(&server.data_dir, &id, MIB);
    let again = dir.path().join("again.bin");
    let out = client.run(&["download", &id, "-o", again.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the downloaded bytes do not match the file"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "expected {} bytes, CRC-64/NVME {crc}",
            3 * MIB + 17
        )),
        "{err}"
    );
    assert!(!again.exists(), "nothing is written");
}

/// A download cut off midway resumes where it stopped (a `Range` request for the rest, made
/// conditional on the ETag) and the file is whole and verified.
#[test]
fn a_cut_off_download_resumes_with_a_range_request() {
    use std::sync::{Arc, Mutex};
    use test_support::aws::{Fault, FaultProxy};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), free_port(), &[], &[]);
    let ranges = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&ranges);
    let proxy = FaultProxy::start(&server.url, move |req| {
        if req.method != "GET" || !req.path_and_query.ends_with("/content") {
            return Fault::Forward;
        }
        let mut seen = seen.lock().unwrap();
        seen.push(req.range.to_owned());
        if seen.len() == 1 {
            Fault::Truncate(3 * MIB)
        } else {
            Fault::Forward
        }
    });
    let client = Client::new(&proxy.url);
    client.signup("resume@example.com");
    let source = dir.path().join("video.mp4");
    let sha = write_file(&source, 10 * MIB + 7, 11);
    let report = upload_json(&client, &source, "4");
    let copy = dir.path().join("copy.mp4");
    client.download(report["file_id"].as_str().unwrap(), &copy);
    assert_eq!(sha256_file(&copy), sha);
    assert_eq!(proxy.faults(), 1, "the first answer was cut off");
    let ranges = ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0], "", "the first request asks for the whole file");
    let from: u64 = ranges[1]
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the second asks for the rest: {ranges:?}"));
    assert!(
        from > 0 && from <= 3 * MIB as u64,
        "resumed from byte {from}, not from the start"
    );
}

/// An interrupted upload of one file is never resumed with another file of the same name and
/// size: the CLI proves from the server's CRC of each chunk it holds that the chunks are its
/// file's, finds they are not, and starts a new upload; the old one is left as it was.
#[test]
fn another_file_of_the_same_name_and_size_is_never_resumed_into() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), free_port(), &[], &[]);
    let client = Client::new(&server.url);
    client.signup("judy@example.com");
    let source = dir.path().join("disk.img");
    write_file(&source, 64 * MIB, 31);
    interrupted_upload(&client, &source);
    let old = client.api_get("/api/v1/uploads")["items"][0].clone();

    // Another file, the same name and size.
    let sha = write_file(&source, 64 * MIB, 32);
    let report = upload_json(&client, &source, "4");
    assert_eq!(report["chunks_skipped"], 0, "{report}");
    assert_ne!(report["upload_id"], old["upload_id"], "{report}");
    assert_eq!(report["sha256"], sha.as_str());
    let copy = dir.path().join("copy.img");
    client.download(report["file_id"].as_str().unwrap(), &copy);
    assert_eq!(sha256_file(&copy), sha);
    let left = client.api_get("/api/v1/uploads")["items"].clone();
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left[0]["upload_id"], old["upload_id"]);
    assert_eq!(
        left[0]["received_chunks"], old["received_chunks"],
        "the old upload is untouched"
    );
}

/// A file that does not have the SHA-256 the user expects (`--sha256`, declared at creation)
/// fails its upload with the reason, and nothing is published.
#[test]
fn a_file_without_its_expected_sha256_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), free_port(), &[], &[]);
    let client = Client::new(&server.url);
    client.signup("ken@example.com");
    let source = dir.path().join("release.iso");
    let sha = write_file(&source, 5 * MIB + 3, 41);
    let wrong = "ab".repeat(32);
    let out = client.run(&[
        "upload",
        source.to_str().unwrap(),
        "--sha256",
        &wrong,
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("SHA-256 mismatch") && stderr.contains(&wrong) && stderr.contains(&sha),
        "{stderr}"
    );
    assert!(client.json(&["ls"])["files"].as_array().unwrap().is_empty());
    // The upload is failed with that reason (and no longer listed as unfinished).
    assert!(client.api_get("/api/v1/uploads")["items"]
        .as_array()
        .unwrap()
        .is_empty());
    // The right one is accepted.
    let out = client.json(&["upload", source.to_str().unwrap(), "--sha256", &sha]);
    assert_eq!(out[0]["sha256"], sha.as_str());
    let file = client.api_get(&format!(
        "/api/v1/files/{}",
        out[0]["file_id"].as_str().unwrap()
    ));
    assert_eq!(file["sha256_source"], "client", "{file}");
}

/// Two chunks stored each at the other's place (a fault armed in the workers) are caught by
/// the whole-file check before the File is published — without the file being read back —
/// and the upload fails with the reason.
#[test]
fn chunks_stored_at_the_wrong_place_are_caught_before_publishing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        free_port(),
        &[],
        &[(
            "LFUSYS_FAILPOINTS",
            lfusys_core::failpoint::SWAP_FIRST_CHUNKS,
        )],
    );
    let client = Client::new(&server.url);
    client.signup("leo@example.com");
    let source = dir.path().join("swapped.bin");
    // At least three chunks with the first two of equal length, on disk and on S3 (5 MiB).
    write_file(&source, 12 * MIB + 5, 43);
    let out = client.run(&["upload", source.to_str().unwrap(), "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the upload must fail");
    assert!(
        stderr.contains("could not assemble") && stderr.contains("CRC-64/NVME"),
        "{stderr}"
    );
    assert!(client.json(&["ls"])["files"].as_array().unwrap().is_empty());
}
