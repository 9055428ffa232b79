//! `/api/v1/auth`: register, login, refresh, logout, me (DESIGN §4).

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use lfusys_core::clock::now_ms;
use lfusys_core::ids::new_id;
use service_kit::problem::Problem;
use storage::{RefreshRecord, RotateOutcome, StoreError, UserId, UserRecord};

use super::{internal, now_s, parse_json, store_problem};
use crate::authn::{
    self, access_token, check_csrf, clear_cookies, cookie_value, random_token, secure_cookies,
    session_cookies, token_hash, AuthUser, RequestMeta, REFRESH_COOKIE,
};
use crate::dto::{LoginRequest, ProblemDoc, RefreshRequest, RegisterRequest, TokenResponse, User};
use crate::password;
use crate::state::GatewayState;

fn user_dto(u: &UserRecord) -> User {
    User {
        id: u.user_id.to_string(),
        email: u.email.clone(),
        name: u.name.clone(),
    }
}

fn too_many(wait_s: u64) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        format!("too many attempts; try again in {wait_s} seconds"),
    )
    .with_retry_after(wait_s)
}

fn limit_client(state: &GatewayState, meta: &RequestMeta) -> Result<(), Problem> {
    state.client_limiter().check(&meta.client).map_err(too_many)
}

/// The one answer to every failed login, whatever failed.
fn bad_credentials() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
        "the email or password is incorrect",
    )
}

fn secure(state: &GatewayState, meta: &RequestMeta) -> bool {
    secure_cookies(state.config().cookie_secure, meta.https)
}

/// A 401 that also deletes the browser's (now useless) session cookies.
fn unauthorized_clearing(detail: &str, secure: bool) -> Response {
    let mut res = Problem::unauthorized(detail).into_response();
    authn::set_cookies(&mut res, &clear_cookies(secure));
    res
}

/// Reads an optional JSON body: empty means "no body".
fn optional_json<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    match body {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
        other => parse_json(headers, other),
    }
}

/// Register an account.
#[utoipa::path(
    post, path = "/api/v1/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The account was created", body = User),
        (status = 400, description = "Invalid email, password (8–128 characters) or name", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The email is already registered", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this client (see Retry-After)", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<GatewayState>,
    meta: RequestMeta,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    limit_client(&state, &meta)?;
    let req: RegisterRequest = parse_json(&meta.headers, body)?;
    let email = password::normalize_email(&req.email)
        .map_err(|m| Problem::bad_request("invalid-email", m))?;
    password::check_password(&req.password)
        .map_err(|m| Problem::bad_request("invalid-password", m))?;
    let name = password::normalize_name(req.name.as_deref().unwrap_or_default())
        .map_err(|m| Problem::bad_request("invalid-name", m))?;
    let taken = || Problem::conflict("email-taken", "an account with this email already exists");
    if state
        .auth()
        .user_by_email(&email)
        .await
        .map_err(|e| store_problem(&e))?
        .is_some()
    {
        return Err(taken());
    }
    let password_hash = password::hash(req.password)
        .await
        .map_err(|e| internal(&e))?;
    let user = UserRecord {
        user_id: new_id().into(),
        email,
        name,
        password_hash,
        created_at_ms: now_ms(),
    };
    match state.auth().create_user(&user).await {
        Ok(()) => {}
        // Lost a race with another registration of the same email.
        Err(StoreError::Conflict(_)) => return Err(taken()),
        Err(e) => return Err(store_problem(&e)),
    }
    tracing::info!(user_id = %user.user_id, "user registered");
    Ok((StatusCode::CREATED, Json(user_dto(&user))).into_response())
}

/// Sign in; returns a token pair and sets the session cookies.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; also sets the cookies lfusys_access, lfusys_refresh and lfusys_csrf", body = TokenResponse),
        (status = 400, description = "Malformed body", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Wrong email or password (one answer for both)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts for this client or account (see Retry-After)", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn login(
    State(state): State<GatewayState>,
    meta: RequestMeta,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    limit_client(&state, &meta)?;
    let req: LoginRequest = parse_json(&meta.headers, body)?;
    // A malformed email or an impossible password cannot match any account: fail the same way.
    let Ok(email) = password::normalize_email(&req.email) else {
        return Err(bad_credentials());
    };
    state.account_limiter().check(&email).map_err(too_many)?;
    if password::check_password(&req.password).is_err() {
        return Err(bad_credentials());
    }
    let user = state
        .auth()
        .user_by_email(&email)
        .await
        .map_err(|e| store_problem(&e))?;
    // Unknown emails verify against a dummy hash so both failures take the same time.
    let phc = match &user {
        Some(u) => u.password_hash.clone(),
        None => state.dummy_hash().await.map_err(|e| internal(&e))?,
    };
    let ok = password::verify(req.password, phc).await;
    let Some(user) = user.filter(|_| ok) else {
        tracing::info!(client = %meta.client, "failed login");
        return Err(bad_credentials());
    };
    let refresh = random_token();
    let family = new_id();
    state
        .auth()
        .insert_refresh(&RefreshRecord {
            token_hash: token_hash(&refresh),
            family_id: family.clone(),
            user_id: user.user_id.clone(),
            expires_at_ms: now_ms() + ttl_ms(state.config().refresh_ttl),
        })
        .await
        .map_err(|e| store_problem(&e))?;
    tracing::info!(user_id = %user.user_id, "user signed in");
    token_response(&state, &user, &family, refresh, secure(&state, &meta))
}

fn ttl_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

fn token_response(
    state: &GatewayState,
    user: &UserRecord,
    family: &str,
    refresh: String,
    secure: bool,
) -> Result<Response, Problem> {
    let cfg = state.config();
    let access_ttl = i64::try_from(cfg.access_ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let refresh_ttl = i64::try_from(cfg.refresh_ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let access = state
        .signer()
        .sign_access(&user.user_id, family, now_s(), access_ttl)
        .map_err(|e| internal(&e))?;
    let cookies = session_cookies(&access, access_ttl, &refresh, refresh_ttl, secure);
    let mut res = Json(TokenResponse {
        user: user_dto(user),
        access_token: access,
        refresh_token: refresh,
        token_type: "Bearer".to_owned(),
        expires_in: cfg.access_ttl.as_secs(),
    })
    .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    authn::set_cookies(&mut res, &cookies);
    Ok(res)
}

/// Exchange a refresh token (cookie or body) for a new pair. The old token is spent; using it
/// again revokes the whole session.
#[utoipa::path(
    post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body(content = RefreshRequest, description = "Optional when the lfusys_refresh cookie is sent (then X-CSRF-Token is required)"),
    responses(
        (status = 200, description = "A new token pair (same shape as login)", body = TokenResponse),
        (status = 401, description = "Missing, unknown, expired, revoked or reused refresh token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "Cookie refresh without a matching X-CSRF-Token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this client (see Retry-After)", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn refresh(
    State(state): State<GatewayState>,
    meta: RequestMeta,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    limit_client(&state, &meta)?;
    let req: RefreshRequest = optional_json(&meta.headers, body)?;
    let secure = secure(&state, &meta);
    let token = if let Some(t) = req.refresh_token.filter(|t| !t.is_empty()) {
        t
    } else {
        let Some(t) = cookie_value(&meta.headers, REFRESH_COOKIE).filter(|t| !t.is_empty()) else {
            return Ok(unauthorized_clearing("a refresh token is required", secure));
        };
        check_csrf(&meta.headers)?;
        t
    };
    let old_hash = token_hash(&token);
    let Some(family) = state
        .auth()
        .family_of(&old_hash)
        .await
        .map_err(|e| store_problem(&e))?
    else {
        return Ok(unauthorized_clearing(
            "the refresh token is invalid",
            secure,
        ));
    };
    let new_token = random_token();
    let record = RefreshRecord {
        token_hash: token_hash(&new_token),
        family_id: family.clone(),
        // The store takes the family's owner from the spent token and answers with it below.
        user_id: UserId::default(),
        expires_at_ms: now_ms() + ttl_ms(state.config().refresh_ttl),
    };
    let outcome = state
        .auth()
        .rotate_refresh(&old_hash, &record, now_ms())
        .await
        .map_err(|e| store_problem(&e))?;
    let user_id = match outcome {
        RotateOutcome::Rotated { user_id } => user_id,
        RotateOutcome::Reused { family_id } => {
            tracing::warn!(family = %family_id, client = %meta.client, "refresh token reused: session revoked");
            return Ok(unauthorized_clearing(
                "the refresh token was already used; the session is revoked",
                secure,
            ));
        }
        RotateOutcome::Invalid => {
            return Ok(unauthorized_clearing(
                "the refresh token is invalid",
                secure,
            ))
        }
    };
    let Some(user) = state
        .auth()
        .user_by_id(&user_id)
        .await
        .map_err(|e| store_problem(&e))?
    else {
        return Ok(unauthorized_clearing(
            "the account no longer exists",
            secure,
        ));
    };
    token_response(&state, &user, &family, new_token, secure)
}

/// Sign out: revokes the session (refresh token family) and clears the cookies.
#[utoipa::path(
    post, path = "/api/v1/auth/logout", tag = "auth",
    request_body(content = RefreshRequest, description = "Optional; the session is found from the refresh token, the refresh cookie or the access token"),
    responses(
        (status = 204, description = "Signed out"),
        (status = 403, description = "Cookie request without a matching X-CSRF-Token", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security((), ("bearer" = []), ("cookie" = []))
)]
pub async fn logout(
    State(state): State<GatewayState>,
    meta: RequestMeta,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let req: RefreshRequest = optional_json(&meta.headers, body)?;
    let mut used_cookie = false;
    let refresh = req.refresh_token.filter(|t| !t.is_empty()).or_else(|| {
        let c = cookie_value(&meta.headers, REFRESH_COOKIE).filter(|t| !t.is_empty());
        used_cookie |= c.is_some();
        c
    });
    let access = access_token(&meta.headers).ok().flatten();
    used_cookie |= access.as_ref().is_some_and(|(_, via_cookie)| *via_cookie);
    if used_cookie {
        check_csrf(&meta.headers)?;
    }
    let mut families = Vec::new();
    if let Some(token) = refresh {
        if let Some(f) = state
            .auth()
            .family_of(&token_hash(&token))
            .await
            .map_err(|e| store_problem(&e))?
        {
            families.push(f);
        }
    }
    if let Some(claims) = access.and_then(|(t, _)| state.verifier().verify_access(&t).ok()) {
        if !families.contains(&claims.fam) {
            families.push(claims.fam);
        }
    }
    for f in &families {
        state
            .auth()
            .revoke_family(f)
            .await
            .map_err(|e| store_problem(&e))?;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    authn::set_cookies(&mut res, &clear_cookies(secure(&state, &meta)));
    Ok(res)
}

/// The signed-in user.
#[utoipa::path(
    get, path = "/api/v1/auth/me", tag = "auth",
    responses(
        (status = 200, description = "The caller", body = User),
        (status = 401, description = "Not signed in", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn me(State(state): State<GatewayState>, user: AuthUser) -> Result<Json<User>, Problem> {
    match state.auth().user_by_id(&user.user_id).await {
        Ok(Some(u)) => Ok(Json(user_dto(&u))),
        Ok(None) => Err(Problem::unauthorized("the account no longer exists")),
        Err(e) => Err(store_problem(&e)),
    }
}
