//! Who a request comes from (DESIGN §4): the user's access token, from `Authorization:
//! Bearer` or the `lfusys_access` cookie, verified with the gateway's public key, its
//! refresh-token family not revoked, and — for a cookie-authenticated request that changes
//! state — the CSRF double submit (`X-CSRF-Token` equal to the `lfusys_csrf` cookie).
//!
//! The gateway authenticates every API call this way, and the upload workers the tus / IETF
//! requests (DESIGN §3 step 7), which carry the user's token rather than an upload token.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cookie::Cookie;
use lfusys_core::ids::UserId;
use lfusys_core::tokens::{TokenError, TokenVerifier};
use storage::AuthStore;

use crate::problem::Problem;

pub const ACCESS_COOKIE: &str = "lfusys_access";
pub const CSRF_COOKIE: &str = "lfusys_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    /// Refresh-token family the access token belongs to.
    pub family: String,
    /// Authenticated by the `lfusys_access` cookie (not a bearer header).
    pub via_cookie: bool,
}

/// A refused authentication as an answer: its problem+json, with the `WWW-Authenticate:
/// Bearer` challenge on a `401` (RFC 6750). The rejection of every extractor that
/// authenticates a user (the gateway's API, the workers' tus endpoint).
#[derive(Debug)]
pub struct Rejection(pub Problem);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let unauthorized = self.0.status == StatusCode::UNAUTHORIZED.as_u16();
        let mut res = self.0.into_response();
        if unauthorized {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<Problem> for Rejection {
    fn from(p: Problem) -> Self {
        Self(p)
    }
}

/// Authenticates a request by its headers (see the module documentation). A refusal is
/// `401` (no, an invalid or an expired token; a signed-out session), `403` (CSRF) or `503`
/// (the auth store cannot be asked).
pub async fn authenticate(
    headers: &HeaderMap,
    method: &Method,
    verifier: &TokenVerifier,
    auth: &dyn AuthStore,
) -> Result<Caller, Problem> {
    let Some((token, via_cookie)) = access_token(headers)? else {
        return Err(Problem::unauthorized("authentication required"));
    };
    let claims = verifier.verify_access(&token).map_err(|e| {
        Problem::unauthorized(match e {
            TokenError::Expired => "the access token has expired",
            _ => "the access token is invalid",
        })
    })?;
    match auth.is_family_revoked(&claims.fam).await {
        Ok(false) => {}
        Ok(true) => return Err(Problem::unauthorized("the session has been signed out")),
        Err(e) => {
            tracing::error!(error = %e, "auth store failed checking a token family");
            return Err(
                Problem::unavailable("the auth store is unavailable; try again shortly")
                    .with_retry_after(1),
            );
        }
    }
    if via_cookie && is_state_changing(method) {
        check_csrf(headers)?;
    }
    Ok(Caller {
        user_id: claims.sub.into(),
        family: claims.fam,
        via_cookie,
    })
}

/// The access token of a request: `Authorization: Bearer` first, else the cookie.
/// `Ok(None)` when there is neither; a non-bearer `Authorization` header is an error.
pub fn access_token(headers: &HeaderMap) -> Result<Option<(String, bool)>, Problem> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_owned())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        return Ok(Some((token, false)));
    }
    Ok(cookie_value(headers, ACCESS_COOKIE).map(|t| (t, true)))
}

pub fn is_state_changing(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Double submit: the `X-CSRF-Token` header must equal the `lfusys_csrf` cookie.
pub fn check_csrf(headers: &HeaderMap) -> Result<(), Problem> {
    let cookie = cookie_value(headers, CSRF_COOKIE);
    let header = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match (cookie, header) {
        (Some(c), Some(h))
            if !c.is_empty() && constant_time_eq(c.as_bytes(), h.trim().as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(Problem::forbidden(
            "csrf",
            "cookie-authenticated requests that change state must send the X-CSRF-Token header \
             equal to the lfusys_csrf cookie",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of a cookie in the request's `Cookie` header(s).
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}
