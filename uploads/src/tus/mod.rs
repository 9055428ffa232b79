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
mod ietf;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Extension, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
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

use crate::ingest::{self, IngestError};
use crate::WorkerState;
use headers::{
    TUS_CHECKSUM_ALGORITHM, TUS_EXTENSION, TUS_MAX_SIZE, TUS_RESUMABLE, TUS_VERSION,
    TUS_VERSION_HEADER, UPLOAD_CONCAT, UPLOAD_DEFER_LENGTH, UPLOAD_EXPIRES, UPLOAD_LENGTH,
    UPLOAD_METADATA, UPLOAD_OFFSET,
};
use ietf::Interop;

/// The creation endpoint.
pub const TUS_ROUTE: &str = "/api/v1/tus";
/// One upload.
pub const TUS_UPLOAD_ROUTE: &str = "/api/v1/tus/{upload_id}";
/// The extensions spoken.
const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum,concatenation";

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

/// Which protocol a request speaks: the IETF draft when it names an interop version, tus
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Tus,
    Ietf(Interop),
}

/// Tells the handlers the request's [`Dialect`]. A tus request (but `OPTIONS`, which
/// discovers the version) without `Tus-Resumable: 1.0.0` is `412` with the versions spoken; a
/// draft version not spoken is `400`. Every answer names the protocol it speaks:
/// `Tus-Resumable`, or the draft's `Upload-Draft-Interop-Version`.
async fn protocol_version(mut req: Request, next: Next) -> Response {
    let dialect = match Interop::of(req.headers()) {
        Ok(Some(v)) => Dialect::Ietf(v),
        Ok(None) => Dialect::Tus,
        Err(p) => return p.into_response(),
    };
    let spoken = dialect != Dialect::Tus
        || req.method() == Method::OPTIONS
        || req
            .headers()
            .get(&TUS_RESUMABLE)
            .is_some_and(|v| v.as_bytes() == TUS_VERSION.as_bytes());
    req.extensions_mut().insert(dialect);
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
    match dialect {
        Dialect::Tus => {
            res.headers_mut()
                .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
        }
        Dialect::Ietf(v) => {
            res.headers_mut()
                .insert(ietf::UPLOAD_DRAFT_INTEROP_VERSION, v.header());
        }
    }
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
    h.insert(
        ietf::UPLOAD_LIMIT,
        ietf::limit(state.config().max_upload_size),
    );
    res
}

/// The user a request comes from (`Authorization: Bearer <access token>`, or the cookie with
/// `X-CSRF-Token`); refused with `401` and its `WWW-Authenticate` challenge.
struct User(Caller);

impl FromRequestParts<WorkerState> for User {
    type Rejection = access::Rejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WorkerState,
    ) -> Result<Self, Self::Rejection> {
        access::authenticate(
            &parts.headers,
            &parts.method,
            state.verifier(),
            state.auth().as_ref(),
        )
        .await
        .map(User)
        .map_err(access::Rejection)
    }
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

/// `POST /api/v1/tus`: creation, and creation-with-upload (tus); creation with the file or
/// its first part as the body (the IETF draft).
async fn create(
    State(state): State<WorkerState>,
    Extension(dialect): Extension<Dialect>,
    User(caller): User,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut body = Some(body);
    let res = match created(&state, dialect, &caller, &headers, &mut body).await {
        Ok(res) | Err(res) => res,
    };
    if let Some(unread) = body {
        // Refused before its body was read (or it had none).
        drain_refused(unread, &headers).await;
    }
    res
}

/// What a creation asks for, in either protocol's words.
struct Creation {
    /// `None`: deferred.
    size: Option<u64>,
    name: Option<String>,
    content_type: Option<String>,
    /// The request carries the upload's first bytes.
    with_body: bool,
    /// `Content-Length`.
    declared: Option<u64>,
    checked: Option<Checked>,
    /// The body completes the upload (the draft's `Upload-Complete`).
    completes: bool,
    /// The whole file's SHA-256 the client declares (the draft's `Repr-Digest`), lowercase hex.
    sha256: Option<String>,
    /// A part of a parallel upload, or the upload made of such parts (tus `Upload-Concat`).
    concat: Option<headers::Concat>,
}

impl Creation {
    fn tus(headers: &HeaderMap) -> Result<Self, Problem> {
        let concat = headers::concat(headers, TUS_ROUTE)?;
        if let Some(headers::Concat::Final(_)) = concat {
            return Self::tus_final(headers, concat);
        }
        let size = headers::number(headers, &UPLOAD_LENGTH)?;
        match (size, headers::defer_length(headers)?) {
            (Some(_), true) => {
                return Err(Problem::bad_request(
                    "invalid-header",
                    "send Upload-Length or Upload-Defer-Length: 1, not both",
                ))
            }
            (None, false) => {
                return Err(Problem::bad_request(
                    "invalid-header",
                    "Upload-Length is required: the file's size in bytes (or Upload-Defer-Length: 1 when it is not known yet)",
                ))
            }
            _ => {}
        }
        let meta = headers::metadata(headers)?;
        let with_body = headers::is_offset_stream(headers);
        let declared = declared_length(headers)?;
        let checked = if with_body {
            Checked::of(checksum::declared(headers)?, declared)?
        } else {
            None
        };
        Ok(Self {
            size,
            name: meta.name,
            content_type: meta.content_type,
            with_body: with_body && declared != Some(0),
            declared,
            checked,
            completes: false,
            sha256: None,
            concat,
        })
    }

    /// A final upload: its length is its partial uploads', and its bytes are theirs.
    fn tus_final(headers: &HeaderMap, concat: Option<headers::Concat>) -> Result<Self, Problem> {
        if headers.contains_key(&UPLOAD_LENGTH) || headers.contains_key(&UPLOAD_DEFER_LENGTH) {
            return Err(Problem::bad_request(
                "invalid-header",
                "a final upload (Upload-Concat: final) takes its length from its partial uploads: send no Upload-Length",
            ));
        }
        let declared = declared_length(headers)?;
        if headers::is_offset_stream(headers) && declared != Some(0) {
            return Err(final_takes_no_bytes());
        }
        let meta = headers::metadata(headers)?;
        Ok(Self {
            size: None,
            name: meta.name,
            content_type: meta.content_type,
            with_body: false,
            declared,
            checked: None,
            completes: false,
            sha256: None,
            concat,
        })
    }

    fn ietf(version: Interop, headers: &HeaderMap) -> Result<Self, Problem> {
        let completes = version.completes(headers)?;
        let declared = declared_length(headers)?;
        let size = match (headers::number(headers, &UPLOAD_LENGTH)?, completes, declared) {
            (Some(length), true, Some(body)) if length != body => {
                return Err(Problem::bad_request(
                    "invalid-header",
                    format!("Upload-Length is {length} but the body that completes the upload is {body} bytes"),
                ))
            }
            (Some(length), _, _) => Some(length),
            (None, true, body) => body,
            (None, false, _) => None,
        };
        // tus-js-client sends Upload-Metadata in the draft's protocol too.
        let meta = headers::metadata(headers)?;
        let (name, content_type) = ietf::representation(headers);
        Ok(Self {
            size,
            name: meta.name.or(name),
            content_type: meta.content_type.or(content_type),
            with_body: declared != Some(0),
            declared,
            checked: Checked::of(ietf::content_digest(headers)?, declared)?,
            completes,
            sha256: ietf::repr_digest(headers)?,
            concat: None,
        })
    }
}

async fn created(
    state: &WorkerState,
    dialect: Dialect,
    caller: &Caller,
    headers: &HeaderMap,
    body: &mut Option<Body>,
) -> Result<Response, Response> {
    let refuse = |p: Problem| p.into_response();
    let new = match dialect {
        Dialect::Tus => Creation::tus(headers),
        Dialect::Ietf(v) => Creation::ietf(v, headers),
    }
    .map_err(refuse)?;
    let (partial, concat_parts) = match new.concat {
        None => (false, Vec::new()),
        Some(headers::Concat::Partial) => (true, Vec::new()),
        Some(headers::Concat::Final(parts)) => (false, parts),
    };
    if new.size == Some(0) {
        return Err(refuse(Problem::bad_request(
            "empty-upload",
            "an upload holds at least one byte",
        )));
    }
    let mut upload = state
        .sessions()
        .create_upload(proto::CreateUploadRequest {
            owner_id: caller.user_id.to_string(),
            name: new.name.unwrap_or_else(|| "untitled".to_owned()),
            size: new.size.unwrap_or_default(),
            content_type: new.content_type.unwrap_or_default(),
            sha256: new.sha256.unwrap_or_default(),
            length_deferred: new.size.is_none() && concat_parts.is_empty(),
            partial,
            concat_parts,
        })
        .await
        .map_err(|s| refuse(Problem::from(s)))?
        .into_inner();
    tracing::info!(upload_id = %upload.upload_id, size = upload.size, chunks = upload.total_chunks, length_deferred = upload.length_deferred, ?dialect, "resumable upload created");
    let mut res = StatusCode::CREATED.into_response();
    set_location(&mut res, &upload);
    let mut offset = 0;
    if new.with_body {
        if new.declared.is_some_and(|d| d > upload.size) {
            return Err(refuse(past_length(upload.size)));
        }
        let start = append::Offset::start();
        let Append {
            appended,
            mismatched,
        } = spawn_append(
            state,
            &upload,
            start,
            new.declared,
            body.take().unwrap_or_default(),
            new.checked,
        )
        .await;
        if mismatched {
            // The upload exists, empty; the client sends its first bytes again.
            let mut refused = digest_mismatch(dialect, appended.offset);
            set_location(&mut refused, &upload);
            return Err(refused);
        }
        if let Some(e) = appended.error {
            // The upload exists all the same; the client asks for its offset and goes on.
            tracing::info!(upload_id = %upload.upload_id, error = %e, "the body of a creation was not all stored");
        } else if new.completes {
            match complete(state, caller, &upload, appended.offset).await {
                Ok(done) => upload = done,
                Err(p) => {
                    let mut refused = p.into_response();
                    set_location(&mut refused, &upload);
                    return Err(refused);
                }
            }
        }
        offset = appended.offset;
    }
    let h = res.headers_mut();
    match dialect {
        Dialect::Tus => {
            if new.with_body || headers::is_offset_stream(headers) {
                h.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
            }
            h.insert(UPLOAD_EXPIRES, headers::http_date(upload.expires_at_ms));
        }
        Dialect::Ietf(v) => {
            h.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
            ietf_progress(h, v, &upload, offset, state.config().max_upload_size);
        }
    }
    Ok(res)
}

/// The body that completes an upload (the draft's `Upload-Complete`) ended at `offset`: the
/// length, if deferred, is declared by it; a known one must be it. Answers the upload.
async fn complete(
    state: &WorkerState,
    caller: &Caller,
    upload: &proto::Upload,
    offset: u64,
) -> Result<proto::Upload, Problem> {
    if upload.length_deferred {
        return declare_length(state, caller, upload.clone(), offset, offset).await;
    }
    if offset != upload.size {
        return Err(Problem::bad_request(
            "incomplete-upload",
            format!(
                "the request says it completes the upload, but the upload is {} bytes and its bytes end at {offset}",
                upload.size
            ),
        ));
    }
    Ok(upload.clone())
}

/// The draft's view of an upload at `offset`: complete or not, its length once known, the
/// sizes taken.
fn ietf_progress(h: &mut HeaderMap, v: Interop, upload: &proto::Upload, offset: u64, max: u64) {
    v.set_complete(h, !upload.length_deferred && offset == upload.size);
    if !upload.length_deferred {
        h.insert(UPLOAD_LENGTH, HeaderValue::from(upload.size));
    }
    h.insert(ietf::UPLOAD_LIMIT, ietf::limit(max));
}

/// `Location` of a created upload.
fn set_location(res: &mut Response, upload: &proto::Upload) {
    if let Ok(loc) = HeaderValue::from_str(&format!("{TUS_ROUTE}/{}", upload.upload_id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
}

/// A request body whose checksum (tus `Upload-Checksum`, the draft's `Content-Digest`) is
/// checked as it streams.
struct Checked {
    checksum: checksum::Checksum,
    len: u64,
}

impl Checked {
    /// A body's declared `checksum`, if any; a checksum needs `Content-Length`.
    fn of(
        checksum: Option<checksum::Checksum>,
        declared: Option<u64>,
    ) -> Result<Option<Self>, Problem> {
        let Some(checksum) = checksum else {
            return Ok(None);
        };
        let Some(len) = declared else {
            return Err(Problem::new(
                StatusCode::LENGTH_REQUIRED,
                "length-required",
                "a body with a checksum needs Content-Length: its checksum is checked at its last byte",
            ));
        };
        Ok(Some(Self { checksum, len }))
    }
}

/// The body's checksum was not the declared one; nothing of it was kept. tus answers `460
/// Checksum Mismatch`, the draft (RFC 9530 names no status) `400`.
fn digest_mismatch(dialect: Dialect, offset: u64) -> Response {
    let (status, header) = match dialect {
        Dialect::Tus => (
            StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
            "Upload-Checksum",
        ),
        Dialect::Ietf(_) => (StatusCode::BAD_REQUEST, "Content-Digest"),
    };
    let mut res = Problem::new(
        status,
        "checksum-mismatch",
        format!("the body's checksum is not the one {header} declares; nothing of it was kept, the upload's offset is still {offset}"),
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
    Extension(dialect): Extension<Dialect>,
    User(caller): User,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
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
    let mut res = match dialect {
        // Drafts -01 and -02 answer 204; later ones allow it.
        Dialect::Ietf(_) => StatusCode::NO_CONTENT.into_response(),
        Dialect::Tus => StatusCode::OK.into_response(),
    };
    let h = res.headers_mut();
    h.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match dialect {
        Dialect::Ietf(v) => {
            ietf_progress(h, v, &upload, offset, state.config().max_upload_size);
        }
        Dialect::Tus => {
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
            if let Some(v) = concat_header(&upload) {
                h.insert(UPLOAD_CONCAT, v);
            }
        }
    }
    Ok(res)
}

/// `403`: a final upload's bytes are its partials' (a `PATCH`, or a creation with a body).
fn final_takes_no_bytes() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "final-upload",
        "a final upload (Upload-Concat: final) takes no bytes: its bytes are its partial uploads'",
    )
}

/// `Upload-Concat` of a partial or final upload.
fn concat_header(upload: &proto::Upload) -> Option<HeaderValue> {
    if upload.partial {
        return Some(HeaderValue::from_static("partial"));
    }
    if upload.concat_parts.is_empty() {
        return None;
    }
    let urls: Vec<String> = upload
        .concat_parts
        .iter()
        .map(|id| format!("{TUS_ROUTE}/{id}"))
        .collect();
    HeaderValue::from_str(&format!("final;{}", urls.join(" "))).ok()
}

/// What an append asks for, in either protocol's words.
struct Patch {
    offset: u64,
    /// `Content-Length`.
    declared: Option<u64>,
    checked: Option<Checked>,
    /// `Upload-Length` (tus, deferred length).
    length: Option<u64>,
    /// The body completes the upload (the draft's `Upload-Complete`).
    completes: bool,
}

impl Patch {
    fn of(dialect: Dialect, headers: &HeaderMap) -> Result<Self, Problem> {
        let media_ok = match dialect {
            Dialect::Tus => headers::is_offset_stream(headers),
            Dialect::Ietf(v) => !v.checks_media_type() || ietf::is_partial_upload(headers),
        };
        if !media_ok {
            let media = match dialect {
                Dialect::Tus => headers::OFFSET_OCTET_STREAM,
                Dialect::Ietf(_) => ietf::PARTIAL_UPLOAD,
            };
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!("a PATCH body is `Content-Type: {media}`"),
            ));
        }
        let Some(offset) = headers::number(headers, &UPLOAD_OFFSET)? else {
            return Err(Problem::bad_request(
                "invalid-header",
                "Upload-Offset is required: where the body goes in the upload",
            ));
        };
        let declared = declared_length(headers)?;
        let (checksum, completes) = match dialect {
            Dialect::Tus => (checksum::declared(headers)?, false),
            Dialect::Ietf(v) => (ietf::content_digest(headers)?, v.completes(headers)?),
        };
        Ok(Self {
            offset,
            declared,
            checked: Checked::of(checksum, declared)?,
            length: headers::number(headers, &UPLOAD_LENGTH)?,
            completes,
        })
    }
}

/// `PATCH /api/v1/tus/{id}`: appends the body at `Upload-Offset`.
async fn patch(
    State(state): State<WorkerState>,
    Extension(dialect): Extension<Dialect>,
    User(caller): User,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    match admitted(&state, dialect, &caller, &headers, path).await {
        Ok(append) => appended(&state, dialect, &caller, append, body)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(refused) => {
            drain_refused(body, &headers).await;
            refused
        }
    }
}

/// Reads (some of) the body of a request refused before it was read, so that a client still
/// sending gets the answer rather than a reset connection (a `409` tells a tus client where to
/// go on from).
async fn drain_refused(body: Body, headers: &HeaderMap) {
    let limit = declared_length(headers)
        .ok()
        .flatten()
        .unwrap_or(u64::MAX)
        .min(REFUSED_BODY_DRAIN);
    ingest::drain(into_stream(body), limit).await;
}

/// The most of a refused `PATCH` body read before the answer; a longer one is cut off (the
/// client sees a broken connection, asks `HEAD` and goes on from there).
const REFUSED_BODY_DRAIN: u64 = 64 << 20;

/// An append the request's headers and the upload admit, before its body is read.
struct Admitted {
    req: Patch,
    upload: proto::Upload,
    current: append::Offset,
}

/// Every check of a `PATCH` that needs no body: its headers, the upload (the caller's, taking
/// appends), the offset, a length it declares.
async fn admitted(
    state: &WorkerState,
    dialect: Dialect,
    caller: &Caller,
    headers: &HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Admitted, Response> {
    let refuse = |p: Problem| p.into_response();
    let req = Patch::of(dialect, headers).map_err(refuse)?;
    let (offset, declared) = (req.offset, req.declared);
    let mut upload = upload_of(state, caller, &path_id(path).map_err(refuse)?)
        .await
        .map_err(refuse)?;
    if !upload.concat_parts.is_empty() {
        return Err(refuse(final_takes_no_bytes()));
    }
    if let Some(p) = not_appendable(&upload) {
        return Err(refuse(p));
    }
    let current = append::offset_of(state, &upload)
        .await
        .map_err(|e| refuse(Problem::from(e)))?;
    if offset != current.at {
        return Err(mismatching_offset(dialect, current.at, offset));
    }
    // The length, when the request says it: tus's Upload-Length, or where a body of known
    // length that completes the upload ends.
    let reach = offset + declared.unwrap_or(0);
    let length = req
        .length
        .or_else(|| (req.completes && declared.is_some()).then_some(reach));
    if let Some(length) = length {
        upload = declare_length(state, caller, upload, length, reach)
            .await
            .map_err(refuse)?;
    }
    if declared.is_some_and(|d| offset + d > upload.size) {
        return Err(refuse(past_length(upload.size)));
    }
    Ok(Admitted {
        req,
        upload,
        current,
    })
}

/// The admitted append, and its answer.
async fn appended(
    state: &WorkerState,
    dialect: Dialect,
    caller: &Caller,
    admitted: Admitted,
    body: Body,
) -> Result<Response, Problem> {
    let Admitted {
        req,
        mut upload,
        current,
    } = admitted;
    let Append {
        appended,
        mismatched,
    } = spawn_append(state, &upload, current, req.declared, body, req.checked).await;
    if mismatched {
        return Ok(digest_mismatch(dialect, appended.offset));
    }
    if let Some(e) = appended.error {
        return Err(Problem::from(e));
    }
    if req.completes {
        upload = complete(state, caller, &upload, appended.offset).await?;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(UPLOAD_OFFSET, HeaderValue::from(appended.offset));
    match dialect {
        Dialect::Tus => {
            h.insert(UPLOAD_EXPIRES, headers::http_date(upload.expires_at_ms));
        }
        Dialect::Ietf(v) => {
            ietf_progress(
                h,
                v,
                &upload,
                appended.offset,
                state.config().max_upload_size,
            );
        }
    }
    Ok(res)
}

/// `409`: `Upload-Offset` is not the upload's, with the right one.
fn mismatching_offset(dialect: Dialect, expected: u64, provided: u64) -> Response {
    if let Dialect::Ietf(_) = dialect {
        return ietf::mismatching_offset(expected, provided);
    }
    let mut res = Problem::conflict(
        "mismatching-upload-offset",
        format!("Upload-Offset is {provided} but the upload's offset is {expected}"),
    )
    .into_response();
    res.headers_mut()
        .insert(UPLOAD_OFFSET, HeaderValue::from(expected));
    res
}

/// `DELETE /api/v1/tus/{id}`: termination, the native cancel.
async fn terminate(
    State(state): State<WorkerState>,
    User(caller): User,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
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
