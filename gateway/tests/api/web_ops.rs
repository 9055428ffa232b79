//! OpenAPI, ops endpoints, unknown routes and the web app.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{client, problem, start, start_with};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn openapi_document_lists_the_api() {
    let h = start().await;
    let res = client()
        .get(h.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/refresh", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/auth/me", "get"),
        ("/api/v1/uploads", "post"),
        ("/api/v1/uploads", "get"),
        ("/api/v1/uploads/{id}", "get"),
        ("/api/v1/uploads/{id}", "delete"),
        ("/api/v1/uploads/{id}/token", "post"),
        ("/api/v1/files", "get"),
        ("/api/v1/files/{id}", "get"),
        ("/api/v1/files/{id}", "delete"),
        ("/api/v1/files/{id}/content", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["securitySchemes"]["cookie"].is_object());
}

#[tokio::test]
async fn ops_endpoints_and_unknown_routes() {
    let h = start().await;
    let c = client();
    assert_eq!(
        c.get(h.url("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let ready = c.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let metrics = c
        .get(h.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("lfusys_http_requests_total"), "{metrics}");

    problem(
        c.get(h.url("/api/v1/nope")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        c.get(h.url("/api")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        c.post(h.url("/api/v1/files/x/y/z")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        c.delete(h.url("/api/v1/auth/me")).send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    problem(
        c.get(h.url("/api/v1/auth/login")).send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;

    // Without a built web app, `/` explains how to build one.
    let res = c.get(h.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = res.text().await.unwrap();
    assert!(
        page.contains("LFUSYS is running") && page.contains("npm run build"),
        "{page}"
    );
    problem(
        c.get(h.url("/some/page")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn readiness_fails_when_sessions_is_unreachable() {
    // A port that was free a moment ago and has no listener now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let h = start_with(|g, _| g.sessions_url = format!("http://127.0.0.1:{port}")).await;
    let res = client().get(h.url("/readyz")).send().await.unwrap();
    let body = problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        body["detail"].as_str().unwrap().contains("sessions"),
        "{body}"
    );
    assert_eq!(
        client()
            .get(h.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn serves_the_web_app_with_spa_fallback() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(
        web.path().join("index.html"),
        "<!doctype html><title>app</title>",
    )
    .unwrap();
    std::fs::create_dir(web.path().join("assets")).unwrap();
    std::fs::write(web.path().join("assets/app.js"), "console.log(1)").unwrap();
    let dir = web.path().to_path_buf();
    let h = start_with(move |g, _| g.web_dir = dir).await;
    let c = client();

    let res = c.get(h.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(
        res.text().await.unwrap(),
        "<!doctype html><title>app</title>"
    );

    let res = c.get(h.url("/assets/app.js")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .contains("javascript"));
    assert_eq!(res.text().await.unwrap(), "console.log(1)");

    // Client-side routes get the app.
    for route in ["/files", "/uploads/0191-abc", "/deep/link/here"] {
        let res = c.get(h.url(route)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{route}");
        assert_eq!(res.headers()[CACHE_CONTROL], "no-cache");
        assert_eq!(
            res.text().await.unwrap(),
            "<!doctype html><title>app</title>"
        );
    }
    // Missing assets and API paths do not.
    problem(
        c.get(h.url("/assets/missing.js")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        c.get(h.url("/api/v1/unknown")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        c.post(h.url("/files")).send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    // The API still works alongside.
    assert_eq!(
        c.get(h.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}
