//! Every answer of `PUT /api/v1/chunks/{upload_id}/{index}` (DESIGN §3 step 2), over real
//! listeners; every refusal leaves nothing stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::common::*;
use lfusys_core::state::UploadState;
use lfusys_core::tokens::TokenSigner;
use sessions_api::proto::{CancelUploadRequest, FailUploadRequest};
use tokio::io::AsyncWriteExt;

async fn assert_stored(h: &Harness, up: &TestUpload, expected: &[u32]) {
    let got = h.get_upload(&up.id).await;
    assert_eq!(got.received_chunks, expected, "stored chunks of {}", up.id);
    let bytes: u64 = expected
        .iter()
        .map(|&i| up.plan.chunk_len(i).unwrap())
        .sum();
    assert_eq!(got.bytes_received, bytes);
}

/// One walk through the contract's answers, in its order: who may send (401, 403), what a
/// request must say (400, 411), what the body must be (413, 400, 422), then what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_status_and_stores_nothing() {
    let h = Harness::start(Options::default()).await;
    // Three chunks: 64 KiB, 64 KiB, 1000 bytes.
    let up = h.create_upload((2 * CHUNK + 1000) as usize, None).await;
    let other = h.create_upload(1000, None).await;
    assert_eq!(up.plan.total_chunks, 3);
    refuses_who_may_not_send(&h, &up, &other).await;
    refuses_malformed_requests(&h, &up).await;
    refuses_wrong_bodies(&h, &up).await;
    assert_stored(&h, &up, &[]).await;
    assert_stored(&h, &other, &[]).await;
    stores_each_chunk_once(&h, &up).await;
}

/// 401 and 403, before anything about the request itself is looked at.
async fn refuses_who_may_not_send(h: &Harness, up: &TestUpload, other: &TestUpload) {
    let url = |index: &str| h.chunk_url(&up.id, index);
    let c0 = up.chunk(0).to_vec();
    let d0 = digest_header(&c0);

    // 401: missing, garbage, wrong scheme, expired, signed by another key.
    h.put(&url("0"), None, Some(&d0), c0.clone())
        .await
        .assert_problem(401, "unauthorized");
    h.put(&url("0"), Some("garbage"), Some(&d0), c0.clone())
        .await
        .assert_problem(401, "unauthorized");
    let basic = h
        .http
        .put(url("0"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .header("content-digest", &d0)
        .body(c0.clone())
        .send()
        .await
        .unwrap();
    assert!(basic.headers().contains_key("www-authenticate"));
    reply(basic).await.assert_problem(401, "unauthorized");
    let expired = h
        .signer
        .sign_upload(OWNER, &up.id, up.plan, now_s() - 7200, 60)
        .unwrap();
    let r = h
        .put(&url("0"), Some(&expired), Some(&d0), c0.clone())
        .await;
    r.assert_problem(401, "unauthorized");
    assert!(
        r.body["detail"].as_str().unwrap().contains("expired"),
        "{r:?}"
    );
    let foreign = TokenSigner::generate()
        .unwrap()
        .sign_upload(OWNER, &up.id, up.plan, now_s(), 600)
        .unwrap();
    h.put(&url("0"), Some(&foreign), Some(&d0), c0.clone())
        .await
        .assert_problem(401, "unauthorized");
    // An access token is no upload token, even the upload owner's own.
    let access = h
        .signer
        .sign_access(OWNER, "family-1", now_s(), 600)
        .unwrap();
    h.put(&url("0"), Some(&access), Some(&d0), c0.clone())
        .await
        .assert_problem(401, "unauthorized");
    // Authentication comes before everything else.
    h.put(&url("x"), None, None, vec![1])
        .await
        .assert_problem(401, "unauthorized");

    // 403: a token for another upload (even with other errors in the request).
    h.put(&url("0"), Some(&other.token), Some(&d0), c0.clone())
        .await
        .assert_problem(403, "wrong-upload");
    h.put(&url("x"), Some(&other.token), None, vec![1])
        .await
        .assert_problem(403, "wrong-upload");
}

/// 400 and 411: the index, the length and the digest header.
async fn refuses_malformed_requests(h: &Harness, up: &TestUpload) {
    let url = |index: &str| h.chunk_url(&up.id, index);
    let c0 = up.chunk(0).to_vec();
    let d0 = digest_header(&c0);
    let tok = Some(up.token.as_str());

    // 400: index not a number or out of range.
    for bad in ["x", "-1", "+1", "1.0", "3", "99999999999"] {
        h.put(&url(bad), tok, Some(&d0), c0.clone())
            .await
            .assert_problem(400, "invalid-index");
    }

    // 411: a chunked body (no Content-Length).
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from(
        c0.clone(),
    ))]);
    let chunked = h
        .http
        .put(url("0"))
        .bearer_auth(&up.token)
        .header("content-digest", &d0)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    reply(chunked).await.assert_problem(411, "length-required");

    // 400: Content-Digest missing or malformed.
    h.put(&url("0"), tok, None, c0.clone())
        .await
        .assert_problem(400, "invalid-digest");
    for bad in [
        "sha-256=abc",
        "sha-256=:AAAA:",
        "md5=:AAAA:",
        "sha-256=:!!!:",
        "garbage",
    ] {
        h.put(&url("0"), tok, Some(bad), c0.clone())
            .await
            .assert_problem(400, "invalid-digest");
    }
}

/// 413, 400 and 422: bodies longer or shorter than the chunk, or not matching their digest.
async fn refuses_wrong_bodies(h: &Harness, up: &TestUpload) {
    let url = |index: &str| h.chunk_url(&up.id, index);
    let c0 = up.chunk(0).to_vec();
    let d0 = digest_header(&c0);
    let tok = Some(up.token.as_str());

    // 413: declared longer than the chunk; 400: declared shorter.
    let long = [c0.as_slice(), b"x"].concat();
    h.put(&url("0"), tok, Some(&digest_header(&long)), long)
        .await
        .assert_problem(413, "chunk-too-large");
    let c2 = up.chunk(2).to_vec();
    let long2 = [c2.as_slice(), b"x"].concat();
    h.put(&url("2"), tok, Some(&digest_header(&long2)), long2)
        .await
        .assert_problem(413, "chunk-too-large");
    let short = c0[..c0.len() - 1].to_vec();
    h.put(&url("0"), tok, Some(&digest_header(&short)), short)
        .await
        .assert_problem(400, "chunk-too-short");
    let empty = h
        .http
        .put(url("0"))
        .bearer_auth(&up.token)
        .header("content-digest", &d0)
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    reply(empty).await.assert_problem(400, "chunk-too-short");

    // 422: the body does not match its digest; the data is discarded.
    let mut corrupt = c0.clone();
    corrupt[100] ^= 0xff;
    let r = h.put(&url("0"), tok, Some(&d0), corrupt).await;
    r.assert_problem(422, "digest-mismatch");
}

/// 201, 200 for the same bytes again, 409 for other bytes; a corrupt retry changes nothing.
async fn stores_each_chunk_once(h: &Harness, up: &TestUpload) {
    let url = |index: &str| h.chunk_url(&up.id, index);
    let c0 = up.chunk(0).to_vec();
    let d0 = digest_header(&c0);
    let tok = Some(up.token.as_str());

    // 201, then 200 for the same chunk again (nothing rewritten), 409 for other bytes.
    let r = h.put(&url("0"), tok, Some(&d0), c0.clone()).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.content_type, "application/json");
    let expected = serde_json::json!({
        "index": 0, "size": CHUNK, "sha256": sha256_hex(&c0),
        "crc64nvme": lfusys_core::digest::crc64_hex(lfusys_core::digest::crc64nvme(&c0)),
        "received_count": 1, "total_chunks": 3, "complete": false,
    });
    assert_eq!(r.body, expected);
    let r = h.put(&url("0"), tok, Some(&d0), c0.clone()).await;
    assert_eq!((r.status, &r.body), (200, &expected), "{r:?}");
    let mut different = c0.clone();
    different[0] ^= 1;
    let r = h
        .put(&url("0"), tok, Some(&digest_header(&different)), different)
        .await;
    r.assert_problem(409, "digest-conflict");
    // A corrupt retry of a stored chunk is still a 422 and changes nothing.
    let mut corrupt = c0.clone();
    corrupt[7] ^= 1;
    h.put(&url("0"), tok, Some(&d0), corrupt)
        .await
        .assert_problem(422, "digest-mismatch");
    assert_stored(h, up, &[0]).await;

    // The last, short chunk.
    let r = h.put_chunk(up, 2).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["size"], 1000);
    assert_eq!(r.body["received_count"], 2);
    assert_stored(h, up, &[0, 2]).await;
    assert_eq!(
        h.sessions_queue.sent(),
        0,
        "no assembly before the last chunk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_upload_answers_410_before_request_errors() {
    let h = Harness::start(Options::default()).await;
    let up = h.create_upload((CHUNK + 10) as usize, None).await;
    assert_eq!(h.put_chunk(&up, 0).await.status, 201);
    h.grpc
        .clone()
        .cancel_upload(CancelUploadRequest {
            owner_id: OWNER.to_owned(),
            upload_id: up.id.clone(),
        })
        .await
        .unwrap();
    let c1 = up.chunk(1).to_vec();
    let d1 = digest_header(&c1);
    let tok = Some(up.token.as_str());
    let r = h.put_chunk(&up, 1).await;
    r.assert_problem(410, "upload-gone");
    assert!(r.body["detail"].as_str().unwrap().contains("cancelled"));
    // The same answer for a retry of a chunk stored before the cancel.
    h.put_chunk(&up, 0).await.assert_problem(410, "upload-gone");
    // 410 wins over every request error after the token checks.
    h.put(&h.chunk_url(&up.id, "x"), tok, Some(&d1), c1.clone())
        .await
        .assert_problem(410, "upload-gone");
    h.put(&h.chunk_url(&up.id, "1"), tok, None, c1.clone())
        .await
        .assert_problem(410, "upload-gone");
    h.put(&h.chunk_url(&up.id, "1"), tok, Some(&d1), vec![0; 11])
        .await
        .assert_problem(410, "upload-gone");
    // ... but not over the token checks.
    h.put(&h.chunk_url(&up.id, "1"), None, Some(&d1), c1.clone())
        .await
        .assert_problem(401, "unauthorized");
    let other = h.create_upload(10, None).await;
    h.put(&h.chunk_url(&up.id, "1"), Some(&other.token), Some(&d1), c1)
        .await
        .assert_problem(403, "wrong-upload");
    let got = h.get_upload(&up.id).await;
    assert_eq!(
        sessions_api::upload_state(got.state),
        Some(UploadState::Cancelled)
    );
    assert!(
        got.received_chunks.is_empty(),
        "a cancelled upload keeps no chunks: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_upload_answers_410() {
    let h = Harness::start(Options {
        upload_ttl: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let up = h.create_upload(1000, None).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = h.put_chunk(&up, 0).await;
    r.assert_problem(410, "upload-gone");
    assert!(
        r.body["detail"].as_str().unwrap().contains("expired"),
        "{r:?}"
    );
    h.put(&h.chunk_url(&up.id, "5"), Some(&up.token), None, vec![1])
        .await
        .assert_problem(410, "upload-gone");
    assert!(h.get_upload(&up.id).await.received_chunks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upload_accepts_no_new_chunks() {
    let h = Harness::start(Options::default()).await;
    let up = h.create_upload((CHUNK + 10) as usize, None).await;
    h.grpc
        .clone()
        .fail_upload(FailUploadRequest {
            upload_id: up.id.clone(),
            reason: "test".to_owned(),
        })
        .await
        .unwrap();
    h.put_chunk(&up, 1)
        .await
        .assert_problem(409, "not-accepting");
    assert!(h.get_upload(&up.id).await.received_chunks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_is_refused_and_releases_its_lease() {
    let h = Harness::start(Options::default()).await;
    let up = h.create_upload((2 * CHUNK) as usize, None).await;
    let c1 = up.chunk(1).to_vec();
    let path = format!("/api/v1/chunks/{}/1", up.id);
    let mut conn = raw_put(
        h.worker.addr,
        &path,
        &up.token,
        &digest_header(&c1),
        CHUNK,
        &c1[..1000],
    )
    .await;
    conn.shutdown().await.unwrap();
    assert_eq!(raw_status(&mut conn).await, Some(400));
    assert!(h.get_upload(&up.id).await.received_chunks.is_empty());
    // The lease was given back: a complete retry is stored at once, not refused as in progress.
    let r = eventually(
        "the lease to be released",
        Duration::from_secs(5),
        || async {
            let r = h.put_chunk(&up, 1).await;
            (r.status != 409).then_some(r)
        },
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(h.get_upload(&up.id).await.received_chunks, [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_being_written_answers_409_to_a_second_writer() {
    // Chunks far larger than the loopback socket buffers: once the slow client has written
    // all but the last byte, its worker is provably streaming the body, under its lease.
    const BIG: u64 = 32 * 1024 * KIB;
    let h = Harness::start(Options {
        chunk_size: BIG,
        ..Options::default()
    })
    .await;
    let up = h.create_upload((BIG + 10) as usize, None).await;
    let c0 = up.chunk(0).to_vec();
    let d0 = digest_header(&c0);
    let path = format!("/api/v1/chunks/{}/0", up.id);
    let conn = raw_put(
        h.worker.addr,
        &path,
        &up.token,
        &d0,
        BIG,
        &c0[..BIG as usize - 1],
    )
    .await;
    let r = h.put_chunk(&up, 0).await;
    r.assert_problem(409, "chunk-in-progress");
    assert!(h.get_upload(&up.id).await.received_chunks.is_empty());
    // The slow client goes away: its lease is released and a retry succeeds.
    drop(conn);
    let r = eventually(
        "the lease to be released",
        Duration::from_secs(10),
        || async {
            let r = h.put_chunk(&up, 0).await;
            (r.status != 409).then_some(r)
        },
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(h.get_upload(&up.id).await.received_chunks, [0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_upload_answers_retries_with_200_and_other_bytes_with_409() {
    let h = Harness::start(Options::default()).await;
    let up = h.create_upload(5000, None).await;
    assert_eq!(up.plan.total_chunks, 1);
    let r = h.put_chunk(&up, 0).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["complete"], true);
    assert_eq!(r.body["received_count"], 1);
    let done = h
        .wait_for_state(&up.id, UploadState::Completed, Duration::from_secs(20))
        .await;
    let r = h.put_chunk(&up, 0).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["complete"], true);
    let mut other = up.chunk(0).to_vec();
    other[0] ^= 1;
    h.put(
        &h.chunk_url(&up.id, "0"),
        Some(&up.token),
        Some(&digest_header(&other)),
        other,
    )
    .await
    .assert_problem(409, "digest-conflict");
    let files = h.files().await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].file_id, done.file_id);
    assert_eq!(files[0].sha256, up.file_sha256());
    assert_eq!(h.read_blob(&files[0].blob_key).await, up.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_ops_endpoints_and_other_methods() {
    let h = Harness::start(Options::default()).await;
    let url = h.chunk_url("00000000-0000-0000-0000-000000000000", "0");
    let res = h
        .http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "http://localhost:8080")
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization,content-digest,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{res:?}");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
    };
    assert_eq!(header("access-control-allow-origin").as_deref(), Some("*"));
    assert!(header("access-control-allow-methods")
        .unwrap()
        .contains("put"));
    let allowed = header("access-control-allow-headers").unwrap();
    for name in ["authorization", "content-digest", "content-type"] {
        assert!(allowed.contains(name), "{allowed}");
    }

    let get = reply(h.http.get(&url).send().await.unwrap()).await;
    get.assert_problem(405, "method-not-allowed");
    let missing = reply(
        h.http
            .get(format!("{}/nope", h.worker.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    missing.assert_problem(404, "not-found");

    for path in ["/healthz", "/readyz"] {
        let res = h
            .http
            .get(format!("{}{path}", h.worker.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let up = h.create_upload(100, None).await;
    assert_eq!(h.put_chunk(&up, 0).await.status, 201);
    let metrics = h
        .http
        .get(format!("{}/metrics", h.worker.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "lfusys_chunks_received_total",
        "lfusys_bytes_received_total",
        "lfusys_chunk_write_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_without_the_sessions_service() {
    let h = Harness::start(Options::default()).await;
    // A worker pointed at a port where nothing listens.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let storage = h.storage();
    let mut config = uploads::Config::embedded(h.dir.path());
    config.sessions_url.clone_from(&dead_url);
    config.assemblers = 0;
    let state = uploads::WorkerState::new(
        h.signer.verifier(),
        storage.auth_store().await.unwrap(),
        storage.blob_store().await.unwrap(),
        storage.job_queue().await.unwrap(),
        sessions_api::client::connect_lazy(&dead_url).unwrap(),
        config,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(uploads::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let r = reply(
        h.http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.assert_problem(503, "not-ready");
    assert!(
        r.body["detail"].as_str().unwrap().contains("sessions"),
        "{r:?}"
    );
    // Chunks: local checks still answer; what needs the sessions service is a retryable 503.
    let id = lfusys_core::ids::new_upload_id();
    let plan = lfusys_core::plan::UploadPlan::new(100, 100);
    let token = h
        .signer
        .sign_upload(OWNER, &id, plan, now_s(), 600)
        .unwrap();
    let data = vec![7u8; 100];
    let url = |index: &str| format!("http://{addr}/api/v1/chunks/{id}/{index}");
    let d = digest_header(&data);
    h.put(&url("1"), Some(&token), Some(&d), data.clone())
        .await
        .assert_problem(400, "invalid-index");
    let res = h
        .http
        .put(url("0"))
        .bearer_auth(&token)
        .header("content-digest", &d)
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    reply(res).await.assert_problem(503, "unavailable");
    drop(stop);
    task.await.unwrap().unwrap();
}
