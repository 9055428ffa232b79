//! DESIGN §3 (upload sessions and files) over a real gateway and sessions server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::many_single_char_names
)]

use crate::common::{client, problem, start, Harness, CHUNK, MAX_UPLOAD};
use reqwest::header::{
    ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, IF_RANGE, LOCATION, RANGE,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use test_support::data::{bytes as test_bytes, sha256_hex};

fn token(login: &Value) -> String {
    login["access_token"].as_str().unwrap().to_owned()
}

fn user_id(login: &Value) -> String {
    login["user"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn create_upload_returns_the_plan_and_a_verifiable_token() {
    let h = start().await;
    let a = h.user("ada@example.com").await;
    let sha = sha256_hex(b"whatever");
    let res = client()
        .post(h.url("/api/v1/uploads"))
        .bearer_auth(token(&a))
        .json(&json!({"name": "big.iso", "size": 150, "content_type": "application/x-iso9660-image", "sha256": sha}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()[LOCATION].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    let id = body["upload_id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/uploads/{id}"));
    assert_eq!(body["chunk_size"], CHUNK);
    assert_eq!(body["total_chunks"], 3);
    assert_eq!(body["state"], "uploading");
    assert_eq!(body["upload_url"], format!("/api/v1/chunks/{id}"));
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    for key in [
        "upload_id",
        "chunk_size",
        "total_chunks",
        "upload_url",
        "upload_token",
        "expires_at",
        "state",
    ] {
        assert!(body.get(key).is_some(), "{key} missing in {body}");
    }

    // The workers verify the token with the public key the gateway wrote for them.
    let public = h.dir.path().join("keys/signing-key.pub.pem");
    let verifier = lfusys_core::tokens::TokenVerifier::load(&public).unwrap();
    let claims = verifier
        .verify_upload(body["upload_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.upl, id);
    assert_eq!(claims.sub, user_id(&a));
    assert_eq!((claims.size, claims.chunk_size), (150, CHUNK));
    assert!(verifier
        .verify_access(body["upload_token"].as_str().unwrap())
        .is_err());

    // Status, resume listing and token renewal.
    let status: Value = client()
        .get(h.url(&format!("/api/v1/uploads/{id}")))
        .bearer_auth(token(&a))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["upload_id"], id);
    assert_eq!(status["name"], "big.iso");
    assert_eq!(status["size"], 150);
    assert_eq!(status["state"], "uploading");
    assert_eq!(status["received_chunks"], json!([]));
    assert_eq!(status["bytes_received"], 0);
    assert_eq!(status["sha256"], sha);
    assert!(status.get("file_id").is_none());

    let list: Value = client()
        .get(h.url("/api/v1/uploads"))
        .bearer_auth(token(&a))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["upload_id"], id);

    let res = client()
        .post(h.url(&format!("/api/v1/uploads/{id}/token")))
        .bearer_auth(token(&a))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let renewed: Value = res.json().await.unwrap();
    assert_eq!(
        verifier
            .verify_upload(renewed["upload_token"].as_str().unwrap())
            .unwrap()
            .upl,
        id
    );
    assert!(renewed["expires_at"].is_string());
}

#[tokio::test]
async fn bad_sizes_are_400_and_too_large_is_413() {
    let h = start().await;
    let a = h.user("ada@example.com").await;
    let post = |body: Value| {
        client()
            .post(h.url("/api/v1/uploads"))
            .bearer_auth(token(&a))
            .json(&body)
            .send()
    };
    for size in [
        json!(0),
        json!(-1),
        json!(1.5),
        json!("x"),
        json!("10"),
        json!(null),
    ] {
        let res = post(json!({"name": "f", "size": size})).await.unwrap();
        problem(res, StatusCode::BAD_REQUEST).await;
    }
    problem(
        post(json!({"name": "f"})).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        post(json!({"size": 5})).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        post(json!({"name": "f", "size": 5, "sha256": "xyz"}))
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let res = post(json!({"name": "f", "size": MAX_UPLOAD + 1}))
        .await
        .unwrap();
    problem(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    let res = post(json!({"name": "f", "size": MAX_UPLOAD}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    // Not signed in comes first.
    let res = client()
        .post(h.url("/api/v1/uploads"))
        .json(&json!({"name": "f", "size": 0}))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNAUTHORIZED).await;
}

async fn get(h: &Harness, token: &str, path: &str) -> reqwest::Response {
    get_with(h, token, path, &[]).await
}

/// `GET` with extra request headers.
async fn get_with(
    h: &Harness,
    token: &str,
    path: &str,
    headers: &[(reqwest::header::HeaderName, &str)],
) -> reqwest::Response {
    let mut req = client().get(h.url(path)).bearer_auth(token);
    for (name, value) in headers {
        req = req.header(name, *value);
    }
    req.send().await.unwrap()
}

/// Ranges (one, suffix, open-ended, unsatisfiable), `If-Range` and `If-None-Match` on a File's
/// content.
async fn ranges_and_validators(h: &Harness, t: &str, content: &str, data: &[u8], etag: &str) {
    // One range across chunk boundaries.
    let res = get_with(h, t, content, &[(RANGE, "bytes=10-99")]).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()[CONTENT_RANGE], "bytes 10-99/150");
    assert_eq!(res.headers()[CONTENT_LENGTH], "90");
    assert_eq!(res.bytes().await.unwrap().as_ref(), &data[10..100]);
    // Suffix and open-ended ranges.
    let res = get_with(h, t, content, &[(RANGE, "bytes=-20")]).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()[CONTENT_RANGE], "bytes 130-149/150");
    assert_eq!(res.bytes().await.unwrap().as_ref(), &data[130..]);
    let res = get_with(h, t, content, &[(RANGE, "bytes=149-")]).await;
    assert_eq!(res.bytes().await.unwrap().as_ref(), &data[149..]);
    // Unsatisfiable.
    let res = get_with(h, t, content, &[(RANGE, "bytes=150-")]).await;
    assert_eq!(res.headers()[CONTENT_RANGE], "bytes */150");
    problem(res, StatusCode::RANGE_NOT_SATISFIABLE).await;
    // If-Range with a stale validator sends the whole file.
    let res = get_with(
        h,
        t,
        content,
        &[(RANGE, "bytes=0-9"), (IF_RANGE, "\"stale\"")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().len(), 150);
    // Conditional GET.
    let res = get_with(h, t, content, &[(IF_NONE_MATCH, etag)]).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(res.headers()[ETAG], etag);
    let res = get_with(h, t, content, &[(IF_NONE_MATCH, "\"other\"")]).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn downloads_stream_ranges_and_etags() {
    let h = start().await;
    let a = h.user("ada@example.com").await;
    let t = token(&a);
    let data = test_bytes(150, 1);
    let name = "résumé 2024 \"final\".bin";
    let created = h
        .create_upload(
            &t,
            json!({"name": name, "size": 150, "content_type": "application/pdf"}),
        )
        .await;
    let upload_id = created["upload_id"].as_str().unwrap();
    let file = h.complete_upload(&user_id(&a), upload_id, &data).await;

    let status: Value = get(&h, &t, &format!("/api/v1/uploads/{upload_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "completed");
    assert_eq!(status["file_id"], file.file_id);
    assert_eq!(status["received_chunks"], json!([0, 1, 2]));
    assert_eq!(status["bytes_received"], 150);
    // Completed uploads are no longer listed for resume.
    let list: Value = get(&h, &t, "/api/v1/uploads").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]));

    let sha = sha256_hex(&data);
    let info: Value = get(&h, &t, &format!("/api/v1/files/{}", file.file_id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["id"], file.file_id);
    assert_eq!(info["name"], name);
    assert_eq!(info["size"], 150);
    assert_eq!(info["content_type"], "application/pdf");
    assert_eq!(info["sha256"], sha);
    assert_eq!(info["sha256_source"], "client");
    let crc = lfusys_core::digest::crc64_hex(lfusys_core::digest::crc64nvme(&data));
    assert_eq!(info["crc64nvme"], crc.as_str());
    assert!(info["created_at"].as_str().unwrap().ends_with('Z'));

    let content = format!("/api/v1/files/{}/content", file.file_id);
    let res = get(&h, &t, &content).await;
    assert_eq!(res.status(), StatusCode::OK);
    let headers = res.headers().clone();
    assert_eq!(headers[ACCEPT_RANGES], "bytes");
    // The File's CRC-64/NVME, which every File has, is its ETag.
    let etag = format!("\"crc64nvme-{crc}\"");
    assert_eq!(headers[ETAG], etag.as_str());
    assert_eq!(headers[CONTENT_TYPE], "application/pdf");
    assert_eq!(headers[CONTENT_LENGTH], "150");
    assert_eq!(
        headers[CONTENT_DISPOSITION],
        "attachment; filename=\"r_sum_ 2024 _final_.bin\"; filename*=UTF-8''r%C3%A9sum%C3%A9%202024%20%22final%22.bin"
    );
    assert_eq!(res.bytes().await.unwrap().as_ref(), &data[..]);

    ranges_and_validators(&h, &t, &content, &data, &etag).await;

    // A completed upload can neither be cancelled nor get a new token.
    let res = client()
        .delete(h.url(&format!("/api/v1/uploads/{upload_id}")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::CONFLICT).await;
    let res = client()
        .post(h.url(&format!("/api/v1/uploads/{upload_id}/token")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::CONFLICT).await;

    // Delete: then it is gone everywhere.
    let res = client()
        .delete(h.url(&format!("/api/v1/files/{}", file.file_id)))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    problem(
        get(&h, &t, &format!("/api/v1/files/{}", file.file_id)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(get(&h, &t, &content).await, StatusCode::NOT_FOUND).await;
    let files: Value = get(&h, &t, "/api/v1/files").await.json().await.unwrap();
    assert_eq!(files["items"], json!([]));
}

#[tokio::test]
async fn cancel_then_conflict_and_file_pagination() {
    let h = start().await;
    let a = h.user("ada@example.com").await;
    let t = token(&a);
    let created = h
        .create_upload(&t, json!({"name": "c.bin", "size": 100}))
        .await;
    let id = created["upload_id"].as_str().unwrap();
    let res = client()
        .delete(h.url(&format!("/api/v1/uploads/{id}")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let status: Value = get(&h, &t, &format!("/api/v1/uploads/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "cancelled");
    let res = client()
        .post(h.url(&format!("/api/v1/uploads/{id}/token")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::CONFLICT).await;

    let mut ids = Vec::new();
    for i in 0..3 {
        let data = test_bytes(10 + i, 1);
        let up = h
            .create_upload(&t, json!({"name": format!("f{i}"), "size": data.len()}))
            .await;
        let file = h
            .complete_upload(&user_id(&a), up["upload_id"].as_str().unwrap(), &data)
            .await;
        ids.push(file.file_id);
    }
    let page: Value = get(&h, &t, "/api/v1/files?limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = get(&h, &t, &format!("/api/v1/files?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);
    let mut seen: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    for bad in ["limit=0", "limit=1001", "limit=abc"] {
        problem(
            get(&h, &t, &format!("/api/v1/files?{bad}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
}

#[tokio::test]
async fn other_users_see_nothing() {
    let h = start().await;
    let a = h.user("ada@example.com").await;
    let b = h.user("bob@example.com").await;
    let (ta, tb) = (token(&a), token(&b));

    let pending = h
        .create_upload(&ta, json!({"name": "p.bin", "size": 100}))
        .await;
    let pending_id = pending["upload_id"].as_str().unwrap();
    let done = h
        .create_upload(&ta, json!({"name": "d.bin", "size": 20}))
        .await;
    let file = h
        .complete_upload(
            &user_id(&a),
            done["upload_id"].as_str().unwrap(),
            &test_bytes(20, 1),
        )
        .await;

    let c = client();
    let not_found = [
        c.get(h.url(&format!("/api/v1/uploads/{pending_id}")))
            .bearer_auth(&tb),
        c.delete(h.url(&format!("/api/v1/uploads/{pending_id}")))
            .bearer_auth(&tb),
        c.post(h.url(&format!("/api/v1/uploads/{pending_id}/token")))
            .bearer_auth(&tb),
        c.get(h.url(&format!("/api/v1/files/{}", file.file_id)))
            .bearer_auth(&tb),
        c.get(h.url(&format!("/api/v1/files/{}/content", file.file_id)))
            .bearer_auth(&tb),
        c.delete(h.url(&format!("/api/v1/files/{}", file.file_id)))
            .bearer_auth(&tb),
        // Malformed ids look exactly like missing ones.
        c.get(h.url("/api/v1/uploads/not-an-id")).bearer_auth(&ta),
        c.get(h.url("/api/v1/files/..%2F..%2Fetc")).bearer_auth(&ta),
        c.get(h.url("/api/v1/files/00000000-0000-0000-0000-000000000000/content"))
            .bearer_auth(&ta),
    ];
    let mut bodies = Vec::new();
    for req in not_found {
        let res = req.send().await.unwrap();
        bodies.push(problem(res, StatusCode::NOT_FOUND).await);
    }
    for list in ["/api/v1/uploads", "/api/v1/files"] {
        let v: Value = get(&h, &tb, list).await.json().await.unwrap();
        assert_eq!(v["items"], json!([]), "{list}");
    }
    // Everything of A's is intact.
    assert_eq!(
        get(&h, &ta, &format!("/api/v1/uploads/{pending_id}"))
            .await
            .status(),
        StatusCode::OK
    );
    let res = get(&h, &ta, &format!("/api/v1/files/{}/content", file.file_id)).await;
    assert_eq!(res.bytes().await.unwrap().as_ref(), &test_bytes(20, 1)[..]);
    let files: Value = get(&h, &ta, "/api/v1/files").await.json().await.unwrap();
    assert_eq!(files["items"].as_array().unwrap().len(), 1);
}

/// `GET /api/v1/uploads/{id}?wait=N`: a bad wait is a 400; with nothing changing the answer
/// comes after the wait; a change answers a waiting request at once (here the last chunk:
/// uploading → assembling, with the sessions service's re-read interval far above the test's
/// time, so only its wake-up can answer); one more wait than a user may have open is a 429.
#[tokio::test]
async fn a_status_request_with_wait_answers_when_the_upload_changes() {
    let h = crate::common::start_with(|g, s| {
        g.max_waits_per_user = 1;
        s.wait_recheck = std::time::Duration::from_secs(60);
    })
    .await;
    let a = h.user("ada@example.com").await;
    let data = test_bytes(150, 9);
    let created = h
        .create_upload(&token(&a), json!({"name": "w.bin", "size": 150}))
        .await;
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let status_url = h.url(&format!("/api/v1/uploads/{id}"));
    let get = |query: &str| {
        client()
            .get(format!("{status_url}?{query}"))
            .bearer_auth(token(&a))
            .send()
    };

    for bad in ["wait=abc", "wait=-1", "wait=1.5", "wait="] {
        let body = problem(get(bad).await.unwrap(), StatusCode::BAD_REQUEST).await;
        assert!(
            body["type"].as_str().unwrap().ends_with("/invalid-wait"),
            "{bad}: {body}"
        );
    }

    let started = std::time::Instant::now();
    let res = get("wait=1").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let same: Value = res.json().await.unwrap();
    assert_eq!(same["state"], "uploading");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));

    let waiting = tokio::spawn(get("wait=30"));
    let waits = h.state.clone();
    test_support::wait::eventually(
        "the first wait to open",
        std::time::Duration::from_secs(10),
        || std::future::ready(waits.waits().open_now() == 1),
    )
    .await;
    let res = get("wait=30").await.unwrap();
    let retry_after = res.headers().get("retry-after").cloned();
    let body = problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(
        body["type"].as_str().unwrap().ends_with("/too-many-waits"),
        "{body}"
    );
    assert!(retry_after.is_some());

    let started = std::time::Instant::now();
    h.complete_upload(&user_id(&a), &id, &data).await;
    let res = waiting.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let changed: Value = res.json().await.unwrap();
    assert_ne!(changed["state"], "uploading", "{changed}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(h.state.waits().open_now(), 0);

    // A finished upload answers at once, whatever the wait.
    let started = std::time::Instant::now();
    let done: Value = get("wait=60").await.unwrap().json().await.unwrap();
    assert_eq!(done["state"], "completed");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// `PATCH /api/v1/uploads/{id}`: the whole-file checksums declared once (the same again is
/// harmless), other ones refused, malformed ones a 400, and a SHA-256 other than the one the
/// upload was created with fails the upload (422, with the reason on the upload).
#[tokio::test]
async fn whole_file_checksums_are_declared_once() {
    let h = start().await;
    let a = h.user("ada@example.com").await;
    let t = token(&a);
    let patch = |id: String, body: Value| {
        let (url, t) = (h.url(&format!("/api/v1/uploads/{id}")), t.clone());
        async move {
            client()
                .patch(url)
                .bearer_auth(t)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let data = test_bytes(150, 2);
    let (sha, crc) = (
        sha256_hex(&data),
        lfusys_core::digest::crc64_hex(lfusys_core::digest::crc64nvme(&data)),
    );
    let created = h
        .create_upload(&t, json!({"name": "a.bin", "size": 150}))
        .await;
    let id = created["upload_id"].as_str().unwrap().to_owned();
    for bad in [
        json!({"crc64nvme": "xyz"}),
        json!({"crc64nvme": crc, "sha256": "abc"}),
        json!({"sha256": sha}),
    ] {
        let res = patch(id.clone(), bad).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
    let declared = json!({"crc64nvme": crc, "sha256": sha});
    for _ in 0..2 {
        let res = patch(id.clone(), declared.clone()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let status: Value = res.json().await.unwrap();
        assert_eq!(status["crc64nvme"], crc.as_str());
        assert_eq!(status["sha256"], sha.as_str());
    }
    let other = patch(id.clone(), json!({"crc64nvme": "0000000000000001"})).await;
    let body = problem(other, StatusCode::CONFLICT).await;
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("/checksums-declared"),
        "{body}"
    );
    let res = patch(lfusys_core::ids::new_upload_id(), declared.clone()).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // Created to hold a file of another SHA-256.
    let expected = "ab".repeat(32);
    let created = h
        .create_upload(
            &t,
            json!({"name": "b.bin", "size": 150, "sha256": expected}),
        )
        .await;
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let body = problem(
        patch(id.clone(), declared).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        body["type"].as_str().unwrap().ends_with("/sha256-mismatch"),
        "{body}"
    );
    let status: Value = client()
        .get(h.url(&format!("/api/v1/uploads/{id}")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "failed");
    let error = status["error"].as_str().unwrap();
    assert!(error.contains(&expected) && error.contains(&sha), "{error}");
}
