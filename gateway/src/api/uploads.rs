//! `/api/v1/uploads`: create, status, resume listing, cancel, token renewal (DESIGN §3).

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use lfusys_core::clock::rfc3339;
use lfusys_core::plan::UploadPlan;
use lfusys_core::state::UploadState;
use serde_json::Value;
use service_kit::problem::Problem;
use sessions_api::proto;

use super::{internal, now_s, parse_json, path_id};
use crate::authn::AuthUser;
use crate::dto::{
    CreateUploadRequest, CreatedUpload, DeclareChecksums, ProblemDoc, UploadList, UploadStatus,
    UploadToken,
};
use crate::state::GatewayState;

pub const MAX_NAME_CHARS: usize = 1024;
pub const MAX_CONTENT_TYPE_LEN: usize = 255;
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A validated create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUpload {
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
}

/// Validates the body of `POST /api/v1/uploads` from a raw JSON value, so that a size that is
/// zero, negative, fractional, a string or missing is a 400 with a clear message.
pub fn parse_new_upload(v: &Value) -> Result<NewUpload, Problem> {
    let bad = |m: &str| Problem::bad_request("invalid-upload", m);
    let obj = v
        .as_object()
        .ok_or_else(|| bad("the body must be a JSON object"))?;
    let name = match obj.get("name") {
        Some(Value::String(s)) => s.trim(),
        _ => return Err(bad("name is required and must be a string")),
    };
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(bad(
            "name must be 1 to 1024 characters without control characters",
        ));
    }
    let size = match obj.get("size") {
        Some(Value::Number(n)) => n.as_u64().filter(|&s| s > 0),
        _ => None,
    }
    .ok_or_else(|| bad("size must be a positive integer number of bytes"))?;
    let content_type = match obj.get("content_type") {
        None | Some(Value::Null) => DEFAULT_CONTENT_TYPE.to_owned(),
        Some(Value::String(s)) if s.trim().is_empty() => DEFAULT_CONTENT_TYPE.to_owned(),
        Some(Value::String(s)) => {
            let s = s.trim();
            let (kind, sub) = s.split_once('/').unwrap_or_default();
            if s.len() > MAX_CONTENT_TYPE_LEN
                || kind.is_empty()
                || sub.is_empty()
                || HeaderValue::from_str(s).is_err()
                || !s.is_ascii()
            {
                return Err(bad("content_type must be a media type such as text/plain"));
            }
            s.to_owned()
        }
        Some(_) => return Err(bad("content_type must be a string")),
    };
    let sha256 = match obj.get("sha256") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => lfusys_core::digest::parse_hex(s.trim())
            .map(|d| lfusys_core::digest::to_hex(&d))
            .map_err(|_| bad("sha256 must be 64 hexadecimal characters"))?,
        Some(_) => return Err(bad("sha256 must be a string of 64 hexadecimal characters")),
    };
    Ok(NewUpload {
        name: name.to_owned(),
        size,
        content_type,
        sha256,
    })
}

fn sign_token(
    state: &GatewayState,
    user_id: &str,
    upload: &proto::Upload,
) -> Result<(String, i64), Problem> {
    let ttl = i64::try_from(state.config().upload_token_ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let now = now_s();
    let plan = UploadPlan::new(upload.size, upload.chunk_size);
    let token = state
        .signer()
        .sign_upload(user_id, &upload.upload_id, plan, now, ttl)
        .map_err(|e| internal(&e))?;
    Ok((token, (now + ttl) * 1000))
}

/// Start an upload: the server plans the chunks and returns where and how to send them.
#[utoipa::path(
    post, path = "/api/v1/uploads", tag = "uploads",
    request_body = CreateUploadRequest,
    responses(
        (status = 201, description = "The upload session was created", body = CreatedUpload,
         headers(("Location" = String, description = "URL of the upload's status"))),
        (status = 400, description = "Missing name, or a size that is not a positive integer", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Larger than the largest accepted upload", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn create_upload(
    State(state): State<GatewayState>,
    user: AuthUser,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let value: Value = parse_json(&headers, body)?;
    let new = parse_new_upload(&value)?;
    let upload = state
        .sessions()
        .create_upload(proto::CreateUploadRequest {
            owner_id: user.user_id.to_string(),
            name: new.name,
            size: new.size,
            content_type: new.content_type,
            sha256: new.sha256,
            length_deferred: false,
            partial: false,
            concat_parts: Vec::new(),
        })
        .await?
        .into_inner();
    let (token, token_expires_ms) = sign_token(&state, &user.user_id, &upload)?;
    tracing::info!(upload_id = %upload.upload_id, size = upload.size, chunks = upload.total_chunks, "upload created");
    let body = CreatedUpload {
        upload_url: state.config().upload_url(&upload.upload_id),
        upload_id: upload.upload_id.clone(),
        chunk_size: upload.chunk_size,
        total_chunks: upload.total_chunks,
        upload_token: token,
        expires_at: rfc3339(upload.expires_at_ms),
        upload_token_expires_at: rfc3339(token_expires_ms),
        state: crate::dto::state_name(upload.state),
    };
    let mut res = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/uploads/{}", upload.upload_id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
}

/// Status of an upload, with the chunks received so far (for resume). With `?wait=N` it is a
/// long poll: the answer comes once the upload has left the state it was in when the request
/// arrived (e.g. `assembling` → `completed`), or after N seconds with the state unchanged.
#[utoipa::path(
    get, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(
        ("id" = String, Path, description = "Upload id"),
        ("wait" = Option<u32>, Query, minimum = 0, maximum = 60,
         description = "Long poll: answer once the upload's state changes or after this many seconds (0 to 60; larger values are cut to 60). Without it, the answer is immediate."),
    ),
    responses(
        (status = 200, description = "The upload (with `wait`: once its state changed, or when the wait ran out)", body = UploadStatus),
        (status = 400, description = "`wait` is not a whole number of seconds", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such upload of the caller", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many long polls of this account are open (`Retry-After` says when to ask again)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn get_upload(
    State(state): State<GatewayState>,
    user: AuthUser,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<UploadStatus>, Problem> {
    let wait = crate::waits::parse_wait(query.as_deref())?;
    let id = path_id(path, "upload")?;
    let upload = fetch(&state, &user, id).await?;
    if wait.is_zero() {
        return Ok(Json(upload.into()));
    }
    let _slot = state.waits().open(&user.user_id)?;
    Ok(Json(wait_out(&state, &user, upload, wait).await?.into()))
}

/// The long poll: asks the sessions service to wait (up to its 20 s a call, chained) while
/// the upload stays in the state it had at first, unfinished.
async fn wait_out(
    state: &GatewayState,
    user: &AuthUser,
    first: proto::Upload,
    wait: std::time::Duration,
) -> Result<proto::Upload, Problem> {
    const PER_CALL: std::time::Duration = std::time::Duration::from_secs(20);
    let deadline = tokio::time::Instant::now() + wait;
    let while_state = first.state;
    let mut upload = first;
    loop {
        let unfinished =
            sessions_api::upload_state(upload.state).is_some_and(UploadState::is_unfinished);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if upload.state != while_state || !unfinished || left.is_zero() {
            return Ok(upload);
        }
        let mut sessions = state.sessions();
        let call = sessions.get_upload(proto::GetUploadRequest {
            owner_id: user.user_id.to_string(),
            upload_id: upload.upload_id.clone(),
            wait_ms: u32::try_from(left.min(PER_CALL).as_millis()).unwrap_or(u32::MAX),
            while_state,
        });
        upload = tokio::select! {
            answer = call => answer?.into_inner(),
            () = state.waits().stopped() => return Ok(upload),
        };
    }
}

async fn fetch(
    state: &GatewayState,
    user: &AuthUser,
    upload_id: String,
) -> Result<proto::Upload, Problem> {
    Ok(state
        .sessions()
        .get_upload(proto::GetUploadRequest {
            owner_id: user.user_id.to_string(),
            upload_id,
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// The caller's unfinished uploads (uploading or assembling), newest first.
#[utoipa::path(
    get, path = "/api/v1/uploads", tag = "uploads",
    responses(
        (status = 200, description = "Unfinished uploads", body = UploadList),
        (status = 401, description = "Not signed in", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn list_uploads(
    State(state): State<GatewayState>,
    user: AuthUser,
) -> Result<Json<UploadList>, Problem> {
    let list = state
        .sessions()
        .list_uploads(proto::ListUploadsRequest {
            owner_id: user.user_id.into(),
        })
        .await?
        .into_inner();
    Ok(Json(UploadList {
        items: list.items.into_iter().map(UploadStatus::from).collect(),
    }))
}

/// Cancel an upload that is still uploading; its storage is released.
#[utoipa::path(
    delete, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(("id" = String, Path, description = "Upload id")),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 401, description = "Not signed in", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "Cookie request without a matching X-CSRF-Token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such upload of the caller", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The upload is assembling or completed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn cancel_upload(
    State(state): State<GatewayState>,
    user: AuthUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let id = path_id(path, "upload")?;
    state
        .sessions()
        .cancel_upload(proto::CancelUploadRequest {
            owner_id: user.user_id.into(),
            upload_id: id.clone(),
        })
        .await?;
    tracing::info!(upload_id = %id, "upload cancelled");
    Ok(StatusCode::NO_CONTENT)
}

/// Declares the whole-file checksums the client computed while it read the file: its
/// CRC-64/NVME, which the server verifies the stored file against, and its SHA-256, which the
/// File then carries as computed by the client. Sent before the last chunk; repeating the same
/// declaration is harmless.
#[utoipa::path(
    patch, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(("id" = String, Path, description = "Upload id")),
    request_body = DeclareChecksums,
    responses(
        (status = 200, description = "Declared; the upload's status", body = UploadStatus),
        (status = 400, description = "A checksum is not hex of the right length", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such upload of the caller", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Other checksums were declared (`checksums-declared`), or the upload takes no more chunks (`upload-not-uploading`)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "The SHA-256 is not the one declared at creation: the upload has failed (`sha256-mismatch`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn declare_checksums(
    State(state): State<GatewayState>,
    user: AuthUser,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UploadStatus>, Problem> {
    let id = path_id(path, "upload")?;
    let req: DeclareChecksums = parse_json(&headers, body)?;
    let bad = |m: &str| Problem::bad_request("invalid-checksums", m);
    let crc64nvme = lfusys_core::digest::parse_crc64_hex(req.crc64nvme.trim())
        .map_err(|_| bad("crc64nvme must be 16 hexadecimal characters"))?;
    let sha256 = match req.sha256.as_deref().map(str::trim) {
        None | Some("") => String::new(),
        Some(s) => lfusys_core::digest::parse_hex(s)
            .map(|d| lfusys_core::digest::to_hex(&d))
            .map_err(|_| bad("sha256 must be 64 hexadecimal characters"))?,
    };
    let answer = state
        .sessions()
        .declare_checksums(proto::DeclareChecksumsRequest {
            owner_id: user.user_id.into(),
            upload_id: id,
            sha256,
            crc64nvme,
        })
        .await;
    let upload = match answer {
        Ok(res) => res.into_inner(),
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            return Err(Problem::conflict("checksums-declared", s.message()))
        }
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            return Err(Problem::conflict("upload-not-uploading", s.message()))
        }
        Err(s) => return Err(Problem::from_status(&s)),
    };
    if sessions_api::upload_state(upload.state) == Some(UploadState::Failed) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "sha256-mismatch",
            upload.error,
        ));
    }
    Ok(Json(UploadStatus::from(upload)))
}

/// A fresh upload token for an upload that is still uploading.
#[utoipa::path(
    post, path = "/api/v1/uploads/{id}/token", tag = "uploads",
    params(("id" = String, Path, description = "Upload id")),
    responses(
        (status = 200, description = "A new upload token", body = UploadToken),
        (status = 401, description = "Not signed in", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such upload of the caller", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The upload no longer takes chunks", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn renew_token(
    State(state): State<GatewayState>,
    user: AuthUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<UploadToken>, Problem> {
    let id = path_id(path, "upload")?;
    let upload = fetch(&state, &user, id).await?;
    let current = sessions_api::upload_state(upload.state);
    if current != Some(UploadState::Uploading) {
        return Err(Problem::conflict(
            "upload-not-uploading",
            format!(
                "the upload is {} and takes no more chunks",
                crate::dto::state_name(upload.state)
            ),
        ));
    }
    let (upload_token, expires_ms) = sign_token(&state, &user.user_id, &upload)?;
    Ok(Json(UploadToken {
        upload_token,
        expires_at: rfc3339(expires_ms),
        upload_url: state.config().upload_url(&upload.upload_id),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Any JSON value, nested a few levels.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            "[0-9a-fA-F]{64}".prop_map(Value::from),
            "[a-z]{1,8}/[a-z.+-]{1,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("name".to_owned()),
                        Just("size".to_owned()),
                        Just("content_type".to_owned()),
                        Just("sha256".to_owned()),
                        any::<String>(),
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Whatever the body of a create, the answer is an upload within the rules or a 400
        /// `invalid-upload`, never a panic.
        #[test]
        fn any_create_body_is_an_upload_within_the_rules_or_a_400(body in json_value()) {
            match parse_new_upload(&body) {
                Ok(u) => {
                    prop_assert!(!u.name.is_empty() && !u.name.chars().any(char::is_control));
                    prop_assert!(u.name.chars().count() <= MAX_NAME_CHARS);
                    prop_assert!(u.size > 0);
                    prop_assert!(HeaderValue::from_str(&u.content_type).is_ok());
                    prop_assert!(u.sha256.is_empty() || lfusys_core::digest::parse_hex(&u.sha256).is_ok());
                }
                Err(p) => {
                    prop_assert_eq!(p.status, 400);
                    prop_assert!(p.kind.ends_with("invalid-upload"), "{}", p.kind);
                }
            }
        }
    }

    #[test]
    fn sizes_must_be_positive_integers() {
        for size in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!(1.0),
            json!("10"),
            json!(null),
            json!(true),
            json!([1]),
        ] {
            let p = parse_new_upload(&json!({"name": "a", "size": size})).unwrap_err();
            assert_eq!(p.status, 400, "{size}");
        }
        assert_eq!(
            parse_new_upload(&json!({"name": "a"})).unwrap_err().status,
            400
        );
        let ok = parse_new_upload(&json!({"name": " a.bin ", "size": 5})).unwrap();
        assert_eq!(
            ok,
            NewUpload {
                name: "a.bin".into(),
                size: 5,
                content_type: DEFAULT_CONTENT_TYPE.into(),
                sha256: String::new()
            }
        );
        assert_eq!(
            parse_new_upload(&json!({"name": "a", "size": u64::MAX}))
                .unwrap()
                .size,
            u64::MAX
        );
    }

    #[test]
    fn validates_name_type_and_digest() {
        assert!(parse_new_upload(&json!({"name": "", "size": 1})).is_err());
        assert!(parse_new_upload(&json!({"name": 3, "size": 1})).is_err());
        assert!(parse_new_upload(&json!({"name": "a\nb", "size": 1})).is_err());
        assert!(parse_new_upload(&json!([])).is_err());
        assert!(
            parse_new_upload(&json!({"name": "a", "size": 1, "content_type": "nope"})).is_err()
        );
        assert!(parse_new_upload(&json!({"name": "a", "size": 1, "content_type": 5})).is_err());
        let u = parse_new_upload(
            &json!({"name": "a", "size": 1, "content_type": "text/plain; charset=utf-8"}),
        )
        .unwrap();
        assert_eq!(u.content_type, "text/plain; charset=utf-8");
        assert!(parse_new_upload(&json!({"name": "a", "size": 1, "sha256": "abc"})).is_err());
        let hex = "AB".repeat(32);
        let u = parse_new_upload(&json!({"name": "a", "size": 1, "sha256": hex})).unwrap();
        assert_eq!(u.sha256, "ab".repeat(32));
    }
}
