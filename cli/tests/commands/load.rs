//! The load harness (`lfusys load`) against a real `lfusys up`: a small run of each mode, so
//! that the benchmark of BENCHMARKS.md keeps working, and a load that must end without a
//! single error. Figures are printed, never asserted (timing is the benchmark's business).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{committed_blobs, free_port, Client, Server, BIN};

fn load(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(BIN)
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lfusys load {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// 40 clients, 4 accounts, 120 small uploads and 2 of 3 MiB (several chunks), completion
/// learnt by the long poll: every upload completes, nothing fails, the server's memory is
/// sampled; then the same with polling. The server's own view agrees: 122 Files per run.
#[test]
fn the_load_harness_completes_every_upload_without_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), free_port(), &[], &[]);
    let pid = server.child.id().to_string();
    for completion in ["wait", "poll"] {
        let report = load(&[
            "--server",
            &server.url,
            "--clients",
            "40",
            "--users",
            "4",
            "--small",
            "120",
            "--large",
            "2",
            "--large-size",
            "3MiB",
            "--completion",
            completion,
            "--poll-ms",
            "50",
            "--watch",
            &format!("up={pid}"),
            "--sample-secs",
            "1",
        ]);
        assert_eq!(report["errors"], serde_json::json!({}), "{report}");
        assert_eq!(report["done"], 122);
        let latency = &report["latency"];
        assert_eq!(latency["create"]["count"], 122);
        assert_eq!(latency["last chunk → completed"]["count"], 122);
        // 120 one-chunk uploads and two of three 1 MiB chunks.
        assert_eq!(latency["chunk PUT"]["count"], 126);
        let waited = if completion == "wait" {
            "status ?wait"
        } else {
            "status"
        };
        assert!(latency[waited]["count"].as_u64().unwrap() >= 122);
        let memory = &report["memory"][0];
        assert_eq!(memory["name"], "up");
        assert!(memory["peak_bytes"].as_u64().unwrap() > 0);
    }
    // The server's side: a File (a committed blob) for each of the 244 uploads of both runs,
    // and nobody else sees any of them.
    assert_eq!(committed_blobs(&server.data_dir), 244);
    let other = Client::new(&server.url);
    other.signup("bystander@example.com");
    assert_eq!(
        other.api_get("/api/v1/files")["items"],
        serde_json::json!([])
    );
}

/// The soak mode downloads every File it made and compares it with what it sent; the sessions
/// mode records chunk commits straight over gRPC.
#[test]
fn the_soak_and_sessions_modes_run() {
    let dir = tempfile::tempdir().unwrap();
    let grpc_port = free_port();
    let server = Server::start(
        &dir.path().join("data"),
        free_port(),
        &["--sessions-listen", &format!("127.0.0.1:{grpc_port}")],
        &[],
    );
    let soak = load(&[
        "--server",
        &server.url,
        "--clients",
        "8",
        "--large",
        "0",
        "--duration-secs",
        "2",
        "--completion",
        "wait",
    ]);
    assert_eq!(soak["errors"], serde_json::json!({}), "{soak}");
    let done = soak["done"].as_u64().unwrap();
    assert!(done > 0, "{soak}");
    assert_eq!(soak["latency"]["download"]["count"].as_u64().unwrap(), done);
    assert_eq!(soak["latency"]["file"]["count"].as_u64().unwrap(), done);

    let commits = load(&[
        "--sessions-grpc",
        &format!("http://127.0.0.1:{grpc_port}"),
        "--clients",
        "8",
        "--commits",
        "300",
        "--commits-per-upload",
        "50",
    ]);
    assert_eq!(commits["errors"], serde_json::json!({}), "{commits}");
    assert_eq!(commits["done"], 300);
    assert_eq!(commits["latency"]["CommitChunk"]["count"], 300);
    assert_eq!(commits["latency"]["CreateUpload"]["count"], 6);
}
