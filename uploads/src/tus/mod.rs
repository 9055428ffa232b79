//! tus 1.0.0 (DESIGN §3 step 7): `/api/v1/tus` on the public origin, so that tus-js-client,
//! Uppy and the other tus clients upload to LFUSYS unchanged.
//!
//! | request | answer |
//! |---|---|
//! | `OPTIONS /api/v1/tus[/{id}]` | `204`: `Tus-Version`, `Tus-Extension`, `Tus-Max-Size`, `Tus-Checksum-Algorithm` |
//! | `POST /api/v1/tus` with `Upload-Length` (or `Upload-Defer-Length: 1`), `Upload-Metadata` (`filename`/`name`, `filetype`/`type`) | `201`, `Location: /api/v1/tus/{upload_id}`, `Upload-Expires`; with a body (`application/offset+octet-stream`, creation-with-upload) also `Upload-Offset` |
//! | `HEAD /api/v1/tus/{id}` | `200`: `Upload-Offset` (bytes durably stored), `Upload-Length` (or `Upload-Defer-Length: 1` until a `PATCH` declares it), `Upload-Metadata`, `Upload-Expires`, `Cache-Control: no-store` |
//! | `PATCH /api/v1/tus/{id}` with `Upload-Offset`, `application/offset+octet-stream`, optionally `Upload-Checksum` | `204` with the new `Upload-Offset`; `409` when `Upload-Offset` is not the upload's; `415` another media type; `413` past `Upload-Length`; `460` when the body's checksum is not the declared one ([`checksum`]: nothing of it is kept) |
//! | `DELETE /api/v1/tus/{id}` | `204` (the upload is cancelled, its storage released); `409` once it is assembling or completed |
//!
//! Every answer carries `Tus-Resumable: 1.0.0`; a request (but `OPTIONS`) without that
//! version is `412` with `Tus-Version`. Errors are problem+json, as everywhere. Requests
//! authenticate as the user (`Authorization: Bearer <access token>`, or the cookie with
//! `X-CSRF-Token`, [`service_kit::access`]); another user's upload does not exist (`404`), a
//! cancelled or expired one is `410`.
//!
//! A tus upload is an ordinary upload: created by the sessions service with the server's chunk
//! plan, listed by `GET /api/v1/uploads`, cancelled, expired, assembled through the queue and
//! published as a File like the native ones. Its bytes go through the same ingest core as a
//! native chunk ([`append`]: a body is cut at chunk boundaries; a part that ends inside a chunk
//! is staged until the chunk is whole), so any worker may take any request: no sticky sessions.
//! Any number of workers serve these routes; `lfusys up` serves them on the gateway's
//! listener too, and the Ingress routes `/api/v1/tus` to the workers.

mod append;
mod checksum;
mod headers;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::TryStreamExt;
use service_kit::access::{self, Caller};
use service_kit::problem::Problem;
use sessions_api::proto;
use storage::ByteStream;

use crate::ingest::IngestError;
use crate::WorkerState;
use headers::{
    TUS_CHECKSUM_ALGORITHM, TUS_EXTENSION, TUS_MAX_SIZE, TUS_RESUMABLE, TUS_VERSION,
    TUS_VERSION_HEADER, UPLOAD_CONCAT, UPLOAD_DEFER_LENGTH, UPLOAD_EXPIRES, UPLOAD_LENGTH,
    UPLOAD_METADATA, UPLOAD_OFFSET,
};

/// The creation endpoint.
pub const TUS_ROUTE: &str = "/api/v1/tus";
/// One upload.
pub const TUS_UPLOAD_ROUTE: &str = "/api/v1/tus/{upload_id}";
/// The extensions spoken.
const EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum";

/// The tus routes, for the workers' app and for `lfusys up`'s gateway listener.
pub fn router(state: WorkerState) -> Router {
    Router::new()
        .route(TUS_ROUTE, post(create).options(options))
        .route(
            TUS_UPLOAD_ROUTE,
            axum::routing::head(status)
                .patch(patch)
                .delete(terminate)
                .options(options),
        )
        .route_layer(middleware::from_fn(protocol_version))
        // Bodies stream into the chunk plan, never collected: no limit applies.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// `Tus-Resumable` on every answer; a request of another version (but `OPTIONS`, which
/// discovers it) is `412` with the versions spoken.
async fn protocol_version(req: Request, next: Next) -> Response {
    let spoken = req.method() == Method::OPTIONS
        || req
            .headers()
            .get(&TUS_RESUMABLE)
            .is_some_and(|v| v.as_bytes() == TUS_VERSION.as_bytes());
    let mut res = if spoken {
        next.run(req).await
    } else {
        let mut res = Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "tus-version",
            format!("send `Tus-Resumable: {TUS_VERSION}`: it is the tus version spoken here"),
        )
        .into_response();
        res.headers_mut()
            .insert(TUS_VERSION_HEADER, HeaderValue::from_static(TUS_VERSION));
        res
    };
    res.headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    res
}

async fn options(State(state): State<WorkerState>) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(TUS_VERSION_HEADER, HeaderValue::from_static(TUS_VERSION));
    h.insert(TUS_EXTENSION, HeaderValue::from_static(EXTENSIONS));
    h.insert(
        TUS_CHECKSUM_ALGORITHM,
        HeaderValue::from_static(checksum::ALGORITHMS),
    );
    h.insert(
        TUS_MAX_SIZE,
        HeaderValue::from(state.config().max_upload_size),
    );
    res
}

/// The user a request comes from, or the answer refusing it (`401` with `WWW-Authenticate`).
async fn caller(
    state: &WorkerState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, Response> {
    access::authenticate(headers, method, state.verifier(), state.auth().as_ref())
        .await
        .map_err(|p| {
            let unauthorized = p.status == StatusCode::UNAUTHORIZED.as_u16();
            let mut res = p.into_response();
            if unauthorized {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            res
        })
}

/// The caller's upload `id`, as the sessions service has it (`404` for anyone else's).
async fn upload_of(
    state: &WorkerState,
    caller: &Caller,
    id: &str,
) -> Result<proto::Upload, Problem> {
    let req = proto::GetUploadRequest {
        owner_id: caller.user_id.to_string(),
        upload_id: id.to_owned(),
        ..Default::default()
    };
    match state.sessions().get_upload(req).await {
        Ok(res) => Ok(res.into_inner()),
        Err(s) if s.code() == tonic::Code::NotFound => Err(Problem::not_found("no such upload")),
        Err(s) => Err(Problem::from(s)),
    }
}

/// The upload id of the path, or `404` (no upload has another shape of id).
fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    path.map(|Path(id)| id)
        .map_err(|_| Problem::not_found("no such upload"))
}

fn into_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    headers::number(headers, &header::CONTENT_LENGTH)
}

/// Why an upload in `state` takes no appends: `410` when it is gone, `409` when it is
/// complete.
fn not_appendable(upload: &proto::Upload) -> Option<Problem> {
    use lfusys_core::state::UploadState as S;
    match sessions_api::upload_state(upload.state) {
        Some(S::Uploading) => None,
        Some(S::Cancelled) => Some(Problem::new(
            StatusCode::GONE,
            "upload-gone",
            "the upload was cancelled",
        )),
        Some(S::Expired) => Some(Problem::new(
            StatusCode::GONE,
            "upload-gone",
            "the upload has expired",
        )),
        Some(S::Failed) => Some(Problem::new(
            StatusCode::GONE,
            "upload-failed",
            format!("the upload failed: {}", upload.error),
        )),
        _ => Some(Problem::conflict(
            "upload-complete",
            "every byte of the upload is stored; it takes no more",
        )),
    }
}

/// `POST /api/v1/tus`: creation, and creation-with-upload.
async fn create(
    State(state): State<WorkerState>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = match caller(&state, &method, &headers).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    match created(&state, &caller, &headers, body).await {
        Ok(res) | Err(res) => res,
    }
}

async fn created(
    state: &WorkerState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let refuse = |p: Problem| p.into_response();
    if headers.contains_key(&UPLOAD_CONCAT) {
        return Err(refuse(Problem::bad_request(
            "tus-extension",
            "concatenation is not supported: upload the file as one upload",
        )));
    }
    let size = headers::number(headers, &UPLOAD_LENGTH).map_err(refuse)?;
    let deferred = headers::defer_length(headers).map_err(refuse)?;
    match (size, deferred) {
        (Some(_), true) => {
            return Err(refuse(Problem::bad_request(
                "invalid-header",
                "send Upload-Length or Upload-Defer-Length: 1, not both",
            )))
        }
        (None, false) => {
            return Err(refuse(Problem::bad_request(
                "invalid-header",
                "Upload-Length is required: the file's size in bytes (or Upload-Defer-Length: 1 when it is not known yet)",
            )))
        }
        _ => {}
    }
    let meta = headers::metadata(headers).map_err(refuse)?;
    let with_body = headers::is_offset_stream(headers);
    let declared = declared_length(headers).map_err(refuse)?;
    let checked = if with_body {
        Checked::of(headers, declared).map_err(refuse)?
    } else {
        None
    };
    let upload = state
        .sessions()
        .create_upload(proto::CreateUploadRequest {
            owner_id: caller.user_id.to_string(),
            name: meta.name.unwrap_or_else(|| "untitled".to_owned()),
            size: size.unwrap_or_default(),
            content_type: meta.content_type.unwrap_or_default(),
            sha256: String::new(),
            length_deferred: deferred,
        })
        .await
        .map_err(|s| refuse(Problem::from(s)))?
        .into_inner();
    tracing::info!(upload_id = %upload.upload_id, size = upload.size, chunks = upload.total_chunks, length_deferred = upload.length_deferred, "tus upload created");
    let mut res = StatusCode::CREATED.into_response();
    if with_body && declared != Some(0) {
        if declared.is_some_and(|d| d > upload.size) {
            return Err(refuse(past_length(upload.size)));
        }
        let appended = spawn_append(
            state,
            &upload,
            append::Offset::start(),
            declared,
            body,
            checked,
        )
        .await;
        let Append {
            appended,
            mismatched,
        } = appended;
        if mismatched {
            // The upload exists, empty; the client sends its first bytes again.
            let mut refused = checksum_mismatch(appended.offset);
            set_location(&mut refused, &upload);
            return Err(refused);
        }
        if let Some(e) = appended.error {
            // The upload exists all the same; the client asks for its offset and goes on.
            tracing::info!(upload_id = %upload.upload_id, error = %e, "the body of a creation was not all stored");
        }
        res.headers_mut()
            .insert(UPLOAD_OFFSET, HeaderValue::from(appended.offset));
    } else if with_body {
        res.headers_mut()
            .insert(UPLOAD_OFFSET, HeaderValue::from(0));
    }
    set_location(&mut res, &upload);
    res.headers_mut()
        .insert(UPLOAD_EXPIRES, headers::http_date(upload.expires_at_ms));
    Ok(res)
}

/// `Location` of a created upload.
fn set_location(res: &mut Response, upload: &proto::Upload) {
    if let Ok(loc) = HeaderValue::from_str(&format!("{TUS_ROUTE}/{}", upload.upload_id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
}

/// A request body whose `Upload-Checksum` is checked as it streams.
struct Checked {
    checksum: checksum::Checksum,
    len: u64,
}

impl Checked {
    /// The request's checksum, if it declares one; a checksum needs `Content-Length`.
    fn of(headers: &HeaderMap, declared: Option<u64>) -> Result<Option<Self>, Problem> {
        let Some(checksum) = checksum::declared(headers)? else {
            return Ok(None);
        };
        let Some(len) = declared else {
            return Err(Problem::new(
                StatusCode::LENGTH_REQUIRED,
                "length-required",
                "a body with Upload-Checksum needs Content-Length: its checksum is checked at its last byte",
            ));
        };
        Ok(Some(Self { checksum, len }))
    }
}

/// `460 Checksum Mismatch`: nothing of the body was kept.
fn checksum_mismatch(offset: u64) -> Response {
    let status = StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST);
    let mut res = Problem::new(
        status,
        "checksum-mismatch",
        format!("the body's checksum is not the one Upload-Checksum declares; nothing of it was kept, the upload's offset is still {offset}"),
    )
    .into_response();
    res.headers_mut()
        .insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    res
}

fn past_length(size: u64) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "past-upload-length",
        format!("the body goes past the upload's length, {size} bytes"),
    )
}

/// Runs an append in a task of its own, so that it ends in order (chunks recorded or leases
/// given back) even when the client goes away. A `checked` body keeps nothing unless its
/// checksum matches; the answer says which ([`Append::mismatched`]).
async fn spawn_append(
    state: &WorkerState,
    upload: &proto::Upload,
    start: append::Offset,
    declared: Option<u64>,
    body: Body,
    checked: Option<Checked>,
) -> Append {
    let (state, upload) = (state.clone(), upload.clone());
    let offset = start.at;
    let (body, verdict) = match checked {
        Some(Checked { checksum, len }) => {
            let (body, verdict) = checksum::verified(into_stream(body), len, checksum);
            (body, Some(verdict))
        }
        None => (into_stream(body), None),
    };
    let hold = verdict.is_some();
    let task =
        tokio::spawn(
            async move { append::append(&state, &upload, start, declared, body, hold).await },
        );
    let appended = match task.await {
        Ok(appended) => appended,
        Err(e) => append::Appended {
            offset,
            error: Some(IngestError::Crashed(e)),
        },
    };
    Append {
        mismatched: verdict.is_some_and(|v| v.mismatched()),
        appended,
    }
}

/// How an append ended.
struct Append {
    appended: append::Appended,
    /// The body's checksum was not the declared one (nothing was kept).
    mismatched: bool,
}

/// `Upload-Length` on a `PATCH`: the length of an upload created without one
/// (creation-defer-length), at least `reach` (where this request's body ends); on an upload
/// whose length is known, only that length. Answers the upload as it is now.
async fn declare_length(
    state: &WorkerState,
    caller: &Caller,
    upload: proto::Upload,
    length: u64,
    reach: u64,
) -> Result<proto::Upload, Problem> {
    if !upload.length_deferred {
        if length != upload.size {
            return Err(Problem::bad_request(
                "invalid-header",
                format!(
                    "Upload-Length is {length} but the upload's length is {} bytes; it cannot change",
                    upload.size
                ),
            ));
        }
        return Ok(upload);
    }
    if length < reach {
        return Err(Problem::bad_request(
            "invalid-header",
            format!("Upload-Length {length} is shorter than the upload's bytes with this request's body, {reach}"),
        ));
    }
    let req = proto::DeclareLengthRequest {
        owner_id: caller.user_id.to_string(),
        upload_id: upload.upload_id.clone(),
        size: length,
    };
    state
        .sessions()
        .declare_length(req)
        .await
        .map_err(Problem::from)?;
    tracing::info!(upload_id = %upload.upload_id, length, "tus upload length declared");
    upload_of(state, caller, &upload.upload_id).await
}

/// `HEAD /api/v1/tus/{id}`: the offset to resume from.
async fn status(
    State(state): State<WorkerState>,
    method: Method,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let caller = match caller(&state, &method, &headers).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    let result: Result<Response, Problem> = async {
        let upload = upload_of(&state, &caller, &path_id(path)?).await?;
        let offset = match not_appendable(&upload) {
            None => {
                append::offset_of(&state, &upload)
                    .await
                    .map_err(Problem::from)?
                    .at
            }
            Some(p) if p.status == StatusCode::CONFLICT.as_u16() => upload.size,
            Some(p) => return Err(p),
        };
        let mut res = StatusCode::OK.into_response();
        let h = res.headers_mut();
        h.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
        if upload.length_deferred {
            h.insert(UPLOAD_DEFER_LENGTH, HeaderValue::from_static("1"));
        } else {
            h.insert(UPLOAD_LENGTH, HeaderValue::from(upload.size));
        }
        if let Ok(v) = HeaderValue::from_str(&headers::encode_metadata(
            &upload.name,
            &upload.content_type,
        )) {
            h.insert(UPLOAD_METADATA, v);
        }
        h.insert(UPLOAD_EXPIRES, headers::http_date(upload.expires_at_ms));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(res)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `PATCH /api/v1/tus/{id}`: appends the body at `Upload-Offset`.
async fn patch(
    State(state): State<WorkerState>,
    method: Method,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    let caller = match caller(&state, &method, &headers).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    let result: Result<Response, Problem> = async {
        if !headers::is_offset_stream(&headers) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!(
                    "a PATCH body is `Content-Type: {}`",
                    headers::OFFSET_OCTET_STREAM
                ),
            ));
        }
        let Some(offset) = headers::number(&headers, &UPLOAD_OFFSET)? else {
            return Err(Problem::bad_request(
                "invalid-header",
                "Upload-Offset is required: where the body goes in the upload",
            ));
        };
        let declared = declared_length(&headers)?;
        let checked = Checked::of(&headers, declared)?;
        let length = headers::number(&headers, &UPLOAD_LENGTH)?;
        let mut upload = upload_of(&state, &caller, &path_id(path)?).await?;
        if let Some(p) = not_appendable(&upload) {
            return Err(p);
        }
        let current = append::offset_of(&state, &upload)
            .await
            .map_err(Problem::from)?;
        if offset != current.at {
            let mut p = Problem::conflict(
                "mismatching-upload-offset",
                format!(
                    "Upload-Offset is {offset} but the upload's offset is {}",
                    current.at
                ),
            )
            .into_response();
            p.headers_mut()
                .insert(UPLOAD_OFFSET, HeaderValue::from(current.at));
            return Ok(p);
        }
        if let Some(length) = length {
            upload = declare_length(
                &state,
                &caller,
                upload,
                length,
                offset + declared.unwrap_or(0),
            )
            .await?;
        }
        if declared.is_some_and(|d| offset + d > upload.size) {
            return Err(past_length(upload.size));
        }
        let Append {
            appended,
            mismatched,
        } = spawn_append(&state, &upload, current, declared, body, checked).await;
        if mismatched {
            return Ok(checksum_mismatch(appended.offset));
        }
        if let Some(e) = appended.error {
            return Err(Problem::from(e));
        }
        let mut res = StatusCode::NO_CONTENT.into_response();
        let h = res.headers_mut();
        h.insert(UPLOAD_OFFSET, HeaderValue::from(appended.offset));
        h.insert(UPLOAD_EXPIRES, headers::http_date(upload.expires_at_ms));
        Ok(res)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /api/v1/tus/{id}`: termination, the native cancel.
async fn terminate(
    State(state): State<WorkerState>,
    method: Method,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let caller = match caller(&state, &method, &headers).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    let result: Result<Response, Problem> = async {
        let id = path_id(path)?;
        let req = proto::CancelUploadRequest {
            owner_id: caller.user_id.to_string(),
            upload_id: id,
        };
        state.sessions().cancel_upload(req).await.map_err(|s| {
            if s.code() == tonic::Code::NotFound {
                Problem::not_found("no such upload")
            } else {
                Problem::from(s)
            }
        })?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
