//! The web app: the built single-page app served at `/`, or a short notice when it is not
//! built. Unknown `/api` paths are never answered with the app.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use service_kit::problem::Problem;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

/// Where the built web app lives, if it exists.
#[derive(Debug, Clone)]
pub struct WebApp {
    dir: Option<Arc<PathBuf>>,
}

impl WebApp {
    /// Serves `dir` when it is a directory; otherwise the notice page.
    pub fn new(dir: &Path) -> Self {
        let dir = dir.is_dir().then(|| Arc::new(dir.to_path_buf()));
        if let Some(d) = &dir {
            tracing::info!(dir = %d.display(), "serving the web app");
        }
        Self { dir }
    }

    /// The fallback of the whole router.
    pub async fn handle(&self, req: Request) -> Response {
        let path = req.uri().path();
        if path == "/api" || path.starts_with("/api/") {
            return Problem::not_found("no such resource").into_response();
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut res = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "only GET and HEAD are served here",
            )
            .into_response();
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return res;
        }
        match &self.dir {
            Some(dir) => serve_app(dir, req).await,
            None if path == "/" || path == "/index.html" => notice().into_response(),
            None => Problem::not_found("no such resource").into_response(),
        }
    }
}

async fn serve_app(dir: &Path, req: Request) -> Response {
    let method = req.method().clone();
    let last_segment = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let conditional = req.headers().get(header::IF_NONE_MATCH).cloned();
    let res = match ServeDir::new(dir).oneshot(req).await {
        Ok(res) => res.map(Body::new),
        Err(never) => match never {},
    };
    if res.status() != StatusCode::NOT_FOUND {
        return res;
    }
    // A missing asset (a name with an extension) is a real 404; any other path is a route of
    // the single-page app, which index.html renders.
    if last_segment.contains('.') {
        return Problem::not_found("no such resource").into_response();
    }
    let mut index_req = Request::new(Body::empty());
    *index_req.method_mut() = method;
    if let Some(v) = conditional {
        index_req.headers_mut().insert(header::IF_NONE_MATCH, v);
    }
    let mut res = match ServeFile::new(dir.join("index.html"))
        .oneshot(index_req)
        .await
    {
        Ok(res) => res.map(Body::new),
        Err(never) => match never {},
    };
    if res.status() == StatusCode::NOT_FOUND {
        return Problem::not_found("no such resource").into_response();
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

fn notice() -> Html<&'static str> {
    Html(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>LFUSYS</title></head>\n\
<body style=\"font-family: system-ui, sans-serif; max-width: 40em; margin: 3em auto\">\n\
<h1>LFUSYS is running</h1>\n\
<p>The HTTP API is served under <code>/api/v1</code>; its OpenAPI document is at \
<a href=\"/api/v1/openapi.json\">/api/v1/openapi.json</a>.</p>\n\
<p>The web app is not built. Build it with <code>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build</code> \
and restart, or point <code>LFUSYS_WEB_DIR</code> at a built copy.</p>\n\
</body></html>\n",
    )
}
