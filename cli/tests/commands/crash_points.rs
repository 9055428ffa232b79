//! Crash points (issue 14): `lfusys up` — every service in one process, so a failpoint takes
//! them all down, as a power cut would — dies at each failpoint between two durable steps of
//! create, chunk commit, enqueue, assembly commit, publish, cancel, expiry and delete. It is
//! started again without the failpoint, and the client goes on as ours does: it looks for its
//! File and, when there is none, runs `lfusys upload` again (which resumes). Then the
//! invariants, each within a bounded wait:
//! - no upload stuck: none is left uploading or assembling (the outbox sends a job that was not
//!   sent; the sweeper's stale check is ten minutes away, so it cannot be what heals);
//! - no acknowledged chunk lost and exactly one File per completed upload: the File has the
//!   source's bytes, and there is one File where one is expected and none where none is;
//! - no stored bytes without an owner: no blob upload in progress holds a part, and the
//!   committed blobs are exactly the Files' (S3 keeps the empty multipart upload that a crash
//!   during a create leaves, without a byte, for the bucket's lifecycle rule).
//!
//! Runs on the test backend (embedded, or AWS-compatible servers with
//! `LFUSYS_TEST_BACKEND=aws`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use lfusys_core::failpoint;
use test_support::wait;

use crate::support::{
    chunk_of, committed_blobs, create_upload, free_port, parts_in_progress, put_raw, sha256_file,
    upload_json, write_file, Client, Server,
};

const MIB: usize = 1 << 20;
/// Three 1 MiB chunks, the last one short.
const SIZE: usize = 2 * MIB + 7;
/// Quick sweeps, redeliveries, leases and orphan releases, so that what heals does it within
/// the test; the stale-assembly check stays at its ten minutes.
const KNOBS: &[&str] = &[
    "--sweep-interval-secs",
    "1",
    "--assembly-visibility-secs",
    "2",
    "--chunk-lease-secs",
    "2",
    "--orphan-grace-secs",
    "1",
    "--assembly-stale-secs",
    "600",
];
const SETTLE: Duration = Duration::from_secs(60);

/// What the client does while the armed server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// `lfusys upload` of one file: create, three chunks, assembly.
    Upload,
    /// An upload with one chunk stored, cancelled.
    Cancel,
    /// An upload with one chunk stored, left to expire.
    Expire,
    /// A completed File, deleted.
    Delete,
}

macro_rules! crash_points {
    ($($test:ident: $point:ident, $scenario:ident;)*) => {
        /// Every row of the table.
        const ROWS: &[(&str, Scenario)] = &[$((failpoint::$point, Scenario::$scenario)),*];
        $(
            #[test]
            fn $test() {
                crash_at(failpoint::$point, Scenario::$scenario);
            }
        )*
    };
}

crash_points! {
    create_after_the_storage_is_prepared: AFTER_STORAGE_PREPARED, Upload;
    chunk_after_its_bytes_are_stored: AFTER_CHUNK_STORED, Upload;
    completion_after_the_completing_commit: AFTER_COMPLETING_COMMIT, Upload;
    completion_after_the_job_is_sent: AFTER_JOB_SENT, Upload;
    assembly_after_the_blob_commit: AFTER_BLOB_COMMIT, Upload;
    assembly_after_the_file_is_published: AFTER_FILE_PUBLISHED, Upload;
    cancel_before_the_release: BEFORE_STORAGE_RELEASE, Cancel;
    cancel_after_the_release: AFTER_STORAGE_RELEASE, Cancel;
    expiry_before_the_release: BEFORE_STORAGE_RELEASE, Expire;
    expiry_after_the_release: AFTER_STORAGE_RELEASE, Expire;
    delete_before_the_release: BEFORE_STORAGE_RELEASE, Delete;
    delete_after_the_release: AFTER_STORAGE_RELEASE, Delete;
}

#[test]
fn every_failpoint_has_a_row() {
    for point in failpoint::ALL {
        assert!(
            ROWS.iter().any(|(p, _)| p == point),
            "no crash test kills at {point}"
        );
    }
}

/// What the armed server was driven to, for the checks after the restart.
struct Provoked {
    /// How many Files the user has in the end.
    files: usize,
    /// An upload that ends in the given state.
    upload: Option<(String, &'static str)>,
    /// A client process still running when the server died.
    client: Option<std::process::Child>,
}

fn crash_at(point: &str, scenario: Scenario) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut flags = KNOBS.to_vec();
    if scenario == Scenario::Expire {
        flags.extend(["--upload-ttl-secs", "3"]);
    }
    let mut server = Server::start(&data, port, &flags, &[("LFUSYS_FAILPOINTS", point)]);
    let client = Client::new(&server.url);
    client.signup("crash@example.com");
    let source = dir.path().join("crash.bin");
    let sha = write_file(&source, SIZE, 11);
    let provoked = provoke(point, scenario, &client, &source, &data);
    let status = server.wait_exit(SETTLE);
    assert!(
        !status.success(),
        "{point}: the server exited with {status}"
    );
    if let Some(mut upload) = provoked.client {
        // It may have finished already (it saw the upload complete before the crash).
        let _ = upload.kill();
        upload.wait().unwrap();
    }

    let server = Server::start(&data, port, KNOBS, &[]);
    if scenario == Scenario::Upload {
        // The client looks for its File once nothing assembles any more; without one it runs
        // again, and resumes (or starts over) the upload it did not see complete.
        wait::blocking(&format!("{point}: nothing assembling"), SETTLE, || {
            !unfinished(&client)
                .iter()
                .any(|u| u["state"] == "assembling")
        });
        if files(&client).is_empty() {
            assert_eq!(upload_json(&client, &source, "1")["sha256"], sha.as_str());
        }
    }
    wait::blocking(
        &format!("{point}: no upload left uploading or assembling"),
        SETTLE,
        || match unfinished(&client) {
            u if u.is_empty() => Ok(()),
            u => Err(format!("unfinished: {u:?}")),
        },
    );
    if let Some((id, state)) = &provoked.upload {
        assert_eq!(
            client.api_get(&format!("/api/v1/uploads/{id}"))["state"],
            *state,
            "{point}"
        );
    }

    let listed = files(&client);
    assert_eq!(listed.len(), provoked.files, "{point}: files {listed:?}");
    for f in &listed {
        assert_eq!(f["sha256"], sha.as_str(), "{point}");
        let copy = dir.path().join("copy.bin");
        client.download(f["id"].as_str().unwrap(), &copy);
        assert_eq!(sha256_file(&copy), sha, "{point}: the File's bytes");
    }
    wait::blocking(
        &format!("{point}: no stored bytes without an owner"),
        SETTLE,
        || {
            let (parts, blobs) = (parts_in_progress(&data), committed_blobs(&data));
            if parts == 0 && blobs == provoked.files {
                Ok(())
            } else {
                Err(format!(
                    "{parts} parts in progress, {blobs} committed blobs for {} Files",
                    provoked.files
                ))
            }
        },
    );
    drop(server);
}

/// Drives the armed server into its failpoint.
fn provoke(
    point: &str,
    scenario: Scenario,
    client: &Client,
    source: &Path,
    data: &Path,
) -> Provoked {
    let http = reqwest::blocking::Client::new();
    match scenario {
        Scenario::Upload => {
            let upload = client
                .command(&["upload", source.to_str().unwrap(), "-j", "1", "--quiet"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            Provoked {
                files: 1,
                upload: None,
                client: Some(upload),
            }
        }
        Scenario::Cancel | Scenario::Expire => {
            let bytes = std::fs::read(source).unwrap();
            let created = create_upload(client, bytes.len(), None);
            let id = created["upload_id"].as_str().unwrap().to_owned();
            let stored = put_raw(&created, "0", &chunk_of(&bytes, &created, 0), None).0;
            assert_eq!(stored, 201, "{point}");
            let state = if scenario == Scenario::Cancel {
                let cancel = http
                    .delete(format!("{}/api/v1/uploads/{id}", client.server))
                    .bearer_auth(client.access_token())
                    .send();
                assert!(cancel.is_err(), "{point}: answered {cancel:?}");
                "cancelled"
            } else {
                // The sweeper expires it three seconds after its creation.
                "expired"
            };
            Provoked {
                files: 0,
                upload: Some((id, state)),
                client: None,
            }
        }
        Scenario::Delete => {
            let file_id = upload_json(client, source, "1")["file_id"]
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(committed_blobs(data), 1);
            let delete = http
                .delete(format!("{}/api/v1/files/{file_id}", client.server))
                .bearer_auth(client.access_token())
                .send();
            assert!(delete.is_err(), "{point}: answered {delete:?}");
            Provoked {
                files: 0,
                upload: None,
                client: None,
            }
        }
    }
}

/// The user's uploads still uploading or assembling.
fn unfinished(client: &Client) -> Vec<serde_json::Value> {
    client.api_get("/api/v1/uploads")["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn files(client: &Client) -> Vec<serde_json::Value> {
    client.api_get("/api/v1/files")["items"]
        .as_array()
        .unwrap()
        .clone()
}
