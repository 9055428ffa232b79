//! A typed client of the LFUSYS HTTP API (DESIGN §3–§4). It refreshes the access token once
//! when the server answers 401 and keeps the rotated pair on disk.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::credentials::{self, Credentials};

/// How long a response may send nothing before the request fails.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with a problem+json (or another error status).
    #[error("{detail} ({status} {title})")]
    Problem {
        status: u16,
        kind: String,
        title: String,
        detail: String,
        retry_after: Option<u64>,
    },
    #[error("you are not logged in to {0}: run `lfusys login` first")]
    NotLoggedIn(String),
    #[error("cannot reach the server at {server}: {reason}")]
    Network { server: String, reason: String },
    #[error("unexpected answer from the server: {0}")]
    Unexpected(String),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Problem { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// Worth retrying: the network failed, or the server is busy or failing.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Network { .. } => true,
            Self::Problem { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenPair {
    pub user: User,
    pub access_token: String,
    pub refresh_token: String,
}

// Field names are the wire names of DESIGN §3.
#[allow(clippy::struct_field_names)]
#[derive(Debug, Clone, Deserialize)]
pub struct CreatedUpload {
    pub upload_id: String,
    pub upload_url: String,
    pub upload_token: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UploadStatus {
    pub upload_id: String,
    pub name: String,
    pub size: u64,
    pub chunk_size: u64,
    pub total_chunks: u32,
    pub state: String,
    #[serde(default)]
    pub received_chunks: Vec<u32>,
    #[serde(default)]
    pub bytes_received: u64,
    #[serde(default)]
    pub file_id: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// The SHA-256 the file must have, if the upload was created with one (or the one the
    /// client declared with `crc64nvme`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// The whole-file CRC-64/NVME a client declared, once one did.
    #[serde(default)]
    pub crc64nvme: Option<String>,
    /// CRC-64/NVME (hex) of each chunk in `received_chunks`, in that order.
    #[serde(default)]
    pub received_crc64nvme: Vec<String>,
}

impl UploadStatus {
    /// The CRC-64/NVME the server holds of each received chunk, by index. A chunk whose CRC
    /// the server does not give (an older server) maps to `None`.
    pub fn received_crcs(&self) -> std::collections::HashMap<u32, Option<u64>> {
        self.received_chunks
            .iter()
            .enumerate()
            .map(|(i, &index)| {
                let crc = self
                    .received_crc64nvme
                    .get(i)
                    .and_then(|h| lfusys_core::digest::parse_crc64_hex(h).ok());
                (index, crc)
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RenewedToken {
    pub upload_token: String,
    #[serde(default)]
    pub upload_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileInfo {
    pub id: String,
    pub name: String,
    pub size: u64,
    #[serde(default)]
    pub content_type: String,
    /// Absent when the uploader declared no whole-file SHA-256.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The CRC-64/NVME the server computed and verified (16 hex digits); absent for files of
    /// versions before CRC checksums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Page<T> {
    items: Vec<T>,
    #[serde(default)]
    next_cursor: Option<String>,
}

pub struct Api {
    http: reqwest::Client,
    server: String,
    creds: Mutex<Option<Credentials>>,
    /// Whether the login is kept on disk (`lfusys login`) or only in memory (the load harness's
    /// many users).
    persist: bool,
}

impl Api {
    /// A client of `server`, with the saved login if it belongs to that server.
    pub fn new(server: &str) -> Result<Self, ApiError> {
        let mut api = Self::in_memory(server)?;
        let creds = credentials::load().filter(|c| c.server == api.server);
        api.creds = Mutex::new(creds);
        api.persist = true;
        Ok(api)
    }

    /// A client of `server` whose login (by [`Api::login`]) lives in memory only.
    pub fn in_memory(server: &str) -> Result<Self, ApiError> {
        Self::in_memory_with(server, 64)
    }

    /// [`Api::in_memory`] keeping at most `idle` connections open between requests (0: a new
    /// connection for every request).
    pub fn in_memory_with(server: &str, idle: usize) -> Result<Self, ApiError> {
        let server = server.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A connection that stalls (no byte for this long, well beyond the 30 s long polls)
            // fails, and the command retries or resumes, rather than hang for ever.
            .read_timeout(READ_TIMEOUT)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(idle)
            .user_agent(concat!("lfusys-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Unexpected(e.to_string()))?;
        Ok(Self {
            http,
            server,
            creds: Mutex::new(None),
            persist: false,
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// Resolves a path the server gave (e.g. a same-origin `upload_url`) against its URL.
    pub fn resolve(&self, url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_owned()
        } else {
            format!("{}/{}", self.server, url.trim_start_matches('/'))
        }
    }

    fn network(&self, e: &reqwest::Error) -> ApiError {
        ApiError::Network {
            server: self.server.clone(),
            reason: root_cause(e),
        }
    }

    async fn request_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
        headers: &[(reqwest::header::HeaderName, String)],
    ) -> Result<reqwest::Response, ApiError> {
        let mut req = self.http.request(method, self.resolve(path));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.map_err(|e| self.network(&e))
    }

    /// An authenticated request; on 401 refreshes the tokens once and retries.
    async fn authed(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ApiError> {
        self.authed_with(method, path, body, &[]).await
    }

    /// [`Self::authed`] with extra request headers.
    async fn authed_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(reqwest::header::HeaderName, String)],
    ) -> Result<reqwest::Response, ApiError> {
        let token = self
            .creds
            .lock()
            .await
            .as_ref()
            .map(|c| c.access_token.clone())
            .ok_or_else(|| ApiError::NotLoggedIn(self.server.clone()))?;
        let res = self
            .request_raw(method.clone(), path, body, Some(&token), headers)
            .await?;
        if res.status() != StatusCode::UNAUTHORIZED {
            return check(res).await;
        }
        let token = self.refresh().await?;
        let res = self
            .request_raw(method, path, body, Some(&token), headers)
            .await?;
        check(res).await
    }

    async fn refresh(&self) -> Result<String, ApiError> {
        let mut guard = self.creds.lock().await;
        let Some(creds) = guard.as_mut() else {
            return Err(ApiError::NotLoggedIn(self.server.clone()));
        };
        let res = self
            .request_raw(
                Method::POST,
                "/api/v1/auth/refresh",
                Some(&json!({"refresh_token": creds.refresh_token})),
                None,
                &[],
            )
            .await?;
        if res.status() == StatusCode::UNAUTHORIZED {
            if self.persist {
                let _ = credentials::clear();
            }
            *guard = None;
            return Err(ApiError::NotLoggedIn(self.server.clone()));
        }
        let pair: TokenPair = json_of(check(res).await?).await?;
        creds.access_token.clone_from(&pair.access_token);
        creds.refresh_token = pair.refresh_token;
        if self.persist {
            let _ = credentials::save(creds);
        }
        Ok(pair.access_token)
    }

    async fn authed_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ApiError> {
        json_of(self.authed(method, path, body).await?).await
    }

    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: Option<&str>,
    ) -> Result<User, ApiError> {
        let body = json!({"email": email, "password": password, "name": name});
        let res = self
            .request_raw(
                Method::POST,
                "/api/v1/auth/register",
                Some(&body),
                None,
                &[],
            )
            .await?;
        json_of(check(res).await?).await
    }

    /// Logs in and keeps the credentials (on disk unless [`Api::in_memory`]).
    pub async fn login(&self, email: &str, password: &str) -> Result<User, ApiError> {
        let body = json!({"email": email, "password": password});
        let res = self
            .request_raw(Method::POST, "/api/v1/auth/login", Some(&body), None, &[])
            .await?;
        let pair: TokenPair = json_of(check(res).await?).await?;
        let creds = Credentials {
            server: self.server.clone(),
            email: pair.user.email.clone(),
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
        };
        if self.persist {
            credentials::save(&creds)
                .map_err(|e| ApiError::Unexpected(format!("saving the login: {e}")))?;
        }
        *self.creds.lock().await = Some(creds);
        Ok(pair.user)
    }

    pub async fn logout(&self) -> Result<(), ApiError> {
        let refresh = self
            .creds
            .lock()
            .await
            .as_ref()
            .map(|c| c.refresh_token.clone());
        if let Some(refresh) = refresh {
            let body = json!({"refresh_token": refresh});
            // Logging out locally must work even when the server is gone.
            let _ = self
                .authed(Method::POST, "/api/v1/auth/logout", Some(&body))
                .await;
        }
        credentials::clear().map_err(|e| ApiError::Unexpected(e.to_string()))?;
        *self.creds.lock().await = None;
        Ok(())
    }

    pub async fn me(&self) -> Result<User, ApiError> {
        self.authed_json(Method::GET, "/api/v1/auth/me", None).await
    }

    pub async fn create_upload(
        &self,
        name: &str,
        size: u64,
        content_type: &str,
        sha256: Option<&str>,
    ) -> Result<CreatedUpload, ApiError> {
        let mut body = json!({"name": name, "size": size, "content_type": content_type});
        if let Some(sha) = sha256 {
            body["sha256"] = json!(sha);
        }
        self.authed_json(Method::POST, "/api/v1/uploads", Some(&body))
            .await
    }

    pub async fn upload_status(&self, upload_id: &str) -> Result<UploadStatus, ApiError> {
        self.authed_json(Method::GET, &format!("/api/v1/uploads/{upload_id}"), None)
            .await
    }

    /// The status once the upload has left `uploading`/`assembling` or `wait_secs` have passed
    /// (the long poll of DESIGN §3.4: `GET /api/v1/uploads/{id}?wait=N`).
    pub async fn upload_status_wait(
        &self,
        upload_id: &str,
        wait_secs: u64,
    ) -> Result<UploadStatus, ApiError> {
        self.authed_json(
            Method::GET,
            &format!("/api/v1/uploads/{upload_id}?wait={wait_secs}"),
            None,
        )
        .await
    }

    /// The access token of the login, for a client of another protocol that authenticates as
    /// the user (tus: `Authorization: Bearer`); refreshed first if it has run out.
    pub async fn access_token(&self) -> Result<String, ApiError> {
        self.me().await?;
        self.creds
            .lock()
            .await
            .as_ref()
            .map(|c| c.access_token.clone())
            .ok_or_else(|| ApiError::NotLoggedIn(self.server.clone()))
    }

    pub async fn unfinished_uploads(&self) -> Result<Vec<UploadStatus>, ApiError> {
        let page: Page<UploadStatus> = self
            .authed_json(Method::GET, "/api/v1/uploads", None)
            .await?;
        Ok(page.items)
    }

    pub async fn cancel_upload(&self, upload_id: &str) -> Result<(), ApiError> {
        self.authed(
            Method::DELETE,
            &format!("/api/v1/uploads/{upload_id}"),
            None,
        )
        .await
        .map(drop)
    }

    /// Declares the whole-file checksums computed while reading the file
    /// (`PATCH /api/v1/uploads/{id}`), before the last chunk is sent.
    pub async fn declare_checksums(
        &self,
        upload_id: &str,
        crc64nvme: u64,
        sha256: Option<&str>,
    ) -> Result<UploadStatus, ApiError> {
        let body = json!({
            "crc64nvme": lfusys_core::digest::crc64_hex(crc64nvme),
            "sha256": sha256,
        });
        self.authed_json(
            Method::PATCH,
            &format!("/api/v1/uploads/{upload_id}"),
            Some(&body),
        )
        .await
    }

    /// A fresh upload token (and the current chunk URL) for an upload still uploading.
    pub async fn renew_upload_token(&self, upload_id: &str) -> Result<RenewedToken, ApiError> {
        self.authed_json(
            Method::POST,
            &format!("/api/v1/uploads/{upload_id}/token"),
            None,
        )
        .await
    }

    /// `PUT {upload_url}/{index}` with the chunk's exact bytes and `Content-Digest`.
    pub async fn put_chunk(
        &self,
        upload_url: &str,
        token: &str,
        index: u32,
        data: Bytes,
        digest: &str,
    ) -> Result<(), ApiError> {
        let url = format!("{}/{index}", self.resolve(upload_url).trim_end_matches('/'));
        let res = self
            .http
            .put(url)
            .bearer_auth(token)
            .header("content-digest", digest)
            .header("content-type", "application/octet-stream")
            .body(data)
            .send()
            .await
            .map_err(|e| self.network(&e))?;
        check(res).await.map(drop)
    }

    /// Every file of the user (all pages).
    pub async fn list_files(&self) -> Result<Vec<FileInfo>, ApiError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/files?limit=200&cursor={c}"),
                None => "/api/v1/files?limit=200".to_owned(),
            };
            let page: Page<FileInfo> = self.authed_json(Method::GET, &path, None).await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) if !c.is_empty() => cursor = Some(c),
                _ => return Ok(out),
            }
        }
    }

    pub async fn file(&self, file_id: &str) -> Result<FileInfo, ApiError> {
        self.authed_json(Method::GET, &format!("/api/v1/files/{file_id}"), None)
            .await
    }

    /// The streamed content of a file from byte `from` on: a `Range` request past byte 0, made
    /// conditional on `etag` (`If-Range`), so that a file that changed is sent whole (`200`)
    /// rather than spliced onto bytes of another (`206`).
    pub async fn file_content(
        &self,
        file_id: &str,
        from: u64,
        etag: Option<&str>,
    ) -> Result<reqwest::Response, ApiError> {
        let mut headers = Vec::new();
        if from > 0 {
            headers.push((reqwest::header::RANGE, format!("bytes={from}-")));
            if let Some(tag) = etag {
                headers.push((reqwest::header::IF_RANGE, tag.to_owned()));
            }
        }
        self.authed_with(
            Method::GET,
            &format!("/api/v1/files/{file_id}/content"),
            None,
            &headers,
        )
        .await
    }

    pub async fn delete_file(&self, file_id: &str) -> Result<(), ApiError> {
        self.authed(Method::DELETE, &format!("/api/v1/files/{file_id}"), None)
            .await
            .map(drop)
    }

    /// Raw GET of any URL (metrics scraping in the benchmark).
    pub async fn get_text(&self, url: &str) -> Result<String, ApiError> {
        let res = self
            .http
            .get(self.resolve(url))
            .send()
            .await
            .map_err(|e| self.network(&e))?;
        check(res).await?.text().await.map_err(|e| self.network(&e))
    }
}

/// Turns an error status into [`ApiError::Problem`], reading the problem+json body.
async fn check(res: reqwest::Response) -> Result<reqwest::Response, ApiError> {
    let status = res.status();
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        return Ok(res);
    }
    let retry_after = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let title = body["title"].as_str().map_or_else(
        || status.canonical_reason().unwrap_or("").to_owned(),
        str::to_owned,
    );
    let detail = body["detail"]
        .as_str()
        .map_or_else(|| title.clone(), str::to_owned);
    let kind = body["type"].as_str().unwrap_or("about:blank").to_owned();
    Err(ApiError::Problem {
        status: status.as_u16(),
        kind,
        title,
        detail,
        retry_after,
    })
}

async fn json_of<T: DeserializeOwned>(res: reqwest::Response) -> Result<T, ApiError> {
    let bytes = res
        .bytes()
        .await
        .map_err(|e| ApiError::Unexpected(root_cause(&e)))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::Unexpected(format!(
            "{e}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ))
    })
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}
