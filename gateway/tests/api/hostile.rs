//! Hostile input (issue 14): request smuggling, oversized and deeply nested JSON, header
//! injection through file names. Each gets its documented 4xx as problem+json, never a 5xx,
//! and nothing is stored. (Crafted tokens are in `auth.rs`, CSRF in `auth.rs` too, the
//! parsers' property tests beside the parsers.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{client, problem, start, Harness};

fn token(login: &Value) -> String {
    login["access_token"].as_str().unwrap().to_owned()
}

/// Writes `request` on a fresh connection and reads until the server closes it (bounded).
async fn raw_exchange(h: &Harness, request: &[u8]) -> String {
    let addr = h.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                // A close with our bytes unread arrives as a reset: the end all the same.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("reading the answer: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server closes the connection after refusing the request");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status lines of every response in `answer`.
fn status_lines(answer: &str) -> Vec<&str> {
    answer
        .split("\r\n")
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect()
}

async fn unfinished_uploads(h: &Harness, t: &str) -> Vec<Value> {
    let res = client()
        .get(h.url("/api/v1/uploads"))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// A message framed by both `Content-Length` and `Transfer-Encoding`, in either order, with a
/// second request hidden in its body (what a proxy reading the other framing would pass on):
/// one `400` and the connection closed, and the hidden request — creating an upload — never
/// runs.
#[tokio::test]
async fn smuggled_requests_are_refused_and_the_hidden_one_never_runs() {
    let h = start().await;
    let t = token(&h.user("mallory@example.com").await);
    let hidden = format!(
        "POST /api/v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\
         Content-Type: application/json\r\nContent-Length: 27\r\n\r\n{{\"name\":\"h.bin\",\"size\":10}}"
    );
    let body = format!("0\r\n\r\n{hidden}");
    for framing in [
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            body.len()
        ),
        format!(
            "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
            body.len()
        ),
    ] {
        let request = format!(
            "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\n{body}"
        );
        let answer = raw_exchange(&h, request.as_bytes()).await;
        assert_eq!(
            status_lines(&answer),
            ["HTTP/1.1 400 Bad Request"],
            "{framing:?}: {answer}"
        );
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("transfer-encoding-refused"), "{answer}");
    }
    // A chunked body alone is refused the same way.
    let answer = raw_exchange(
        &h,
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(
        status_lines(&answer),
        ["HTTP/1.1 400 Bad Request"],
        "{answer}"
    );
    assert!(unfinished_uploads(&h, &t).await.is_empty(), "nothing ran");
}

/// A body past the 2 MiB limit is a `413`, JSON nested past serde's depth a `400`; neither
/// creates anything.
#[tokio::test]
async fn oversized_and_deeply_nested_json_are_refused() {
    let h = start().await;
    let t = token(&h.user("oscar@example.com").await);
    let post = |body: String| {
        client()
            .post(h.url("/api/v1/uploads"))
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let huge = format!(
        "{{\"name\":\"{}\",\"size\":10}}",
        "a".repeat(3 * 1024 * 1024)
    );
    problem(post(huge).await.unwrap(), StatusCode::PAYLOAD_TOO_LARGE).await;
    let deep = format!(
        "{{\"name\":\"n.bin\",\"size\":10,\"x\":{}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let p = problem(post(deep).await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(p["type"].as_str().unwrap().ends_with("invalid-json"), "{p}");
    let wide = format!(
        "{{\"name\":\"n.bin\",\"size\":10,\"x\":[{}]}}",
        vec!["{}"; 200_000].join(",")
    );
    // Wide is no attack on the parser: the unknown field is ignored and the upload made.
    assert_eq!(post(wide).await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(unfinished_uploads(&h, &t).await.len(), 1);
}

/// File names that would inject headers (CR/LF), or paths, are refused at creation with a
/// `400`; nothing is created.
#[tokio::test]
async fn names_that_would_inject_headers_are_refused() {
    let h = start().await;
    let t = token(&h.user("nora@example.com").await);
    for name in [
        "a.txt\r\nX-Injected: 1",
        "a\nb",
        "nul\u{0}.bin",
        "\u{7f}del",
        "tab\tname",
    ] {
        let res = client()
            .post(h.url("/api/v1/uploads"))
            .bearer_auth(&t)
            .json(&json!({"name": name, "size": 10}))
            .send()
            .await
            .unwrap();
        let p = problem(res, StatusCode::BAD_REQUEST).await;
        assert!(
            p["type"].as_str().unwrap().ends_with("invalid-upload"),
            "{name:?}: {p}"
        );
    }
    let res = client()
        .post(h.url("/api/v1/uploads"))
        .bearer_auth(&t)
        .json(&json!({"name": "ok.bin", "size": 10, "content_type": "text/plain\r\nX-Injected: 1"}))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::BAD_REQUEST).await;
    assert!(unfinished_uploads(&h, &t).await.is_empty());
}
