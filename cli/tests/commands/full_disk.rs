//! A full disk (issue 14): `lfusys up` on the embedded backends with its data directory on a
//! tmpfs and its blob directory on another, which the test mounts (and unmounts) and fills up
//! while an upload is under way. Chunks the blob store cannot take, and creates the metadata store cannot record, are a
//! `507` problem with `Retry-After`; nothing stored before is lost or corrupted, nothing half
//! made is left, and once space is freed the same upload resumes and completes with its bytes.
//! (Runs on the embedded backends whatever `LFUSYS_TEST_BACKEND` says: the disk is theirs.)
//! Mounting needs root, as `.ci/run` has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use test_support::wait;

use crate::support::{chunk_of, create_upload, free_port, put_raw, sha256_file, Client, Server};

const MIB: usize = 1 << 20;

/// A tmpfs mounted by the test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs at {} failed (the test needs root, as .ci/run has): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Fills the filesystem of `dir` with one file, to the last byte it takes.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0xAAu8; 64 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    // Pages still take single bytes until they do not either.
    while f.write(&[0xAA]).is_ok_and(|n| n == 1) {}
    filler
}

fn assert_full(status: u16, body: &serde_json::Value, what: &str) {
    assert_eq!(status, 507, "{what}: {body}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("/insufficient-storage"),
        "{what}: {body}"
    );
}

#[test]
fn a_full_disk_is_a_507_and_the_upload_completes_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The metadata store's disk, and the blob store's its own, so each fills on its own.
    let metadata_disk = Tmpfs::mount(&data, "64m");
    let blob_disk = Tmpfs::mount(&data.join("blobs"), "64m");
    let port = free_port();
    let server = Server::spawn(&data, port, &[], &["--chunk-lease-secs", "2"], &[]);
    server.wait_ready();
    let client = Client::new(&server.url);
    client.signup("full@example.com");

    let bytes = test_support::data::bytes(4 * MIB + 5, 21);
    let created = create_upload(&client, bytes.len(), None);
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let chunk = |i: usize| chunk_of(&bytes, &created, i);
    assert_eq!(put_raw(&created, "0", &chunk(0), None).0, 201);

    // The blob store's disk is full: the chunk is a 507 and not counted.
    let blob_filler = fill(&blob_disk.path);
    let (status, body) = put_raw(&created, "1", &chunk(1), None);
    assert_full(status, &body, "chunk 1 on a full blob disk");
    // The metadata store's disk too: a new upload is a 507, and none is made.
    let metadata_filler = fill(&metadata_disk.path);
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/uploads", server.url))
        .bearer_auth(client.access_token())
        .json(&serde_json::json!({"name": "more.bin", "size": 10}))
        .send()
        .unwrap();
    assert!(res.headers().contains_key("retry-after"), "{res:?}");
    let status = res.status().as_u16();
    assert_full(
        status,
        &res.json().unwrap(),
        "a create on a full metadata disk",
    );
    let (status, body) = put_raw(&created, "2", &chunk(2), None);
    assert_full(status, &body, "chunk 2 on full disks");

    std::fs::remove_file(&metadata_filler).unwrap();
    std::fs::remove_file(&blob_filler).unwrap();
    let status = client.api_get(&format!("/api/v1/uploads/{id}"));
    assert_eq!(
        status["received_chunks"],
        serde_json::json!([0]),
        "{status}"
    );
    assert_eq!(
        client.api_get("/api/v1/uploads")["items"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "no upload made on the full disk"
    );

    // Space is back: the same upload takes its other chunks (each once the lease that a full
    // disk may have left runs out) and completes with its bytes.
    for i in 1..5 {
        let index = i.to_string();
        wait::blocking(
            &format!("chunk {i} to be stored"),
            Duration::from_secs(30),
            || match put_raw(&created, &index, &chunk(i), None) {
                (201, _) => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            },
        );
    }
    let file_id = client.completed_file(&id);
    let copy = dir.path().join("copy.bin");
    client.download(&file_id, &copy);
    assert_eq!(
        sha256_file(&copy),
        test_support::data::sha256_hex(&bytes),
        "the File's bytes"
    );
    drop(server);
    drop(blob_disk);
    drop(metadata_disk);
}
