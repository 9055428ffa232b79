//! Request authentication as an extractor ([`AuthUser`], by [`service_kit::access`]: bearer or
//! cookie access tokens, the CSRF double submit for cookie-authenticated writes), auth
//! cookies, and the client's address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cookie::{Cookie, SameSite};
use lfusys_core::ids::UserId;
use rand::RngCore;
use service_kit::access;
use sha2::{Digest, Sha256};

use crate::config::CookieSecure;
use crate::state::GatewayState;

pub use service_kit::access::{
    access_token, check_csrf, cookie_value, is_state_changing, ACCESS_COOKIE, CSRF_COOKIE,
    CSRF_HEADER,
};

pub const REFRESH_COOKIE: &str = "lfusys_refresh";
/// The refresh cookie is only sent to the auth endpoints.
pub const REFRESH_COOKIE_PATH: &str = "/api/v1/auth";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: UserId,
    /// Refresh-token family the access token belongs to.
    pub family: String,
    /// Authenticated by the `lfusys_access` cookie (not a bearer header).
    pub via_cookie: bool,
}

/// The rejection of [`AuthUser`]: a problem, plus `WWW-Authenticate` on 401.
pub use service_kit::access::Rejection as AuthRejection;

impl FromRequestParts<GatewayState> for AuthUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GatewayState,
    ) -> Result<Self, Self::Rejection> {
        let caller = access::authenticate(
            &parts.headers,
            &parts.method,
            state.verifier(),
            state.auth().as_ref(),
        )
        .await?;
        Ok(Self {
            user_id: caller.user_id,
            family: caller.family,
            via_cookie: caller.via_cookie,
        })
    }
}

/// A fresh random secret: 32 bytes, base64url without padding.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 (hex) of a refresh token: the only form in which it is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether the request reached us over HTTPS (directly, or per a trusted proxy).
pub fn is_https(parts_uri_scheme: Option<&str>, headers: &HeaderMap, trust_proxy: bool) -> bool {
    if parts_uri_scheme == Some("https") {
        return true;
    }
    trust_proxy
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

pub fn secure_cookies(mode: CookieSecure, https: bool) -> bool {
    match mode {
        CookieSecure::Always => true,
        CookieSecure::Never => false,
        CookieSecure::Auto => https,
    }
}

/// The three `Set-Cookie` values of a signed-in browser session.
pub fn session_cookies(
    access: &str,
    access_ttl_s: i64,
    refresh: &str,
    refresh_ttl_s: i64,
    secure: bool,
) -> Vec<String> {
    vec![
        build_cookie(ACCESS_COOKIE, access, "/", true, access_ttl_s, secure),
        build_cookie(
            REFRESH_COOKIE,
            refresh,
            REFRESH_COOKIE_PATH,
            true,
            refresh_ttl_s,
            secure,
        ),
        // Readable by the web app, which echoes it in X-CSRF-Token.
        build_cookie(
            CSRF_COOKIE,
            &random_token(),
            "/",
            false,
            refresh_ttl_s,
            secure,
        ),
    ]
}

/// `Set-Cookie` values that delete the session cookies.
pub fn clear_cookies(secure: bool) -> Vec<String> {
    vec![
        build_cookie(ACCESS_COOKIE, "", "/", true, 0, secure),
        build_cookie(REFRESH_COOKIE, "", REFRESH_COOKIE_PATH, true, 0, secure),
        build_cookie(CSRF_COOKIE, "", "/", false, 0, secure),
    ]
}

fn build_cookie(
    name: &str,
    value: &str,
    path: &str,
    http_only: bool,
    max_age_s: i64,
    secure: bool,
) -> String {
    Cookie::build((name.to_owned(), value.to_owned()))
        .path(path.to_owned())
        .http_only(http_only)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(max_age_s))
        .build()
        .to_string()
}

/// Adds `Set-Cookie` headers to a response.
pub fn set_cookies(res: &mut Response, cookies: &[String]) {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

/// The address the per-client rate limit counts: the peer, or with a trusted proxy the
/// address the proxy appended last to `X-Forwarded-For` (earlier entries are client-supplied
/// and could be forged).
pub fn client_address(parts: &Parts, trust_proxy: bool) -> String {
    if trust_proxy {
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .next_back();
        if let Some(ip) = forwarded {
            return ip.to_string();
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(
            || "unknown".to_owned(),
            |ConnectInfo(addr)| addr.ip().to_string(),
        )
}

/// Request facts the auth handlers need besides the body.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub client: String,
    pub https: bool,
    pub headers: HeaderMap,
}

impl FromRequestParts<GatewayState> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GatewayState,
    ) -> Result<Self, Self::Rejection> {
        let trust = state.config().trust_forwarded_for;
        Ok(Self {
            client: client_address(parts, trust),
            https: is_https(parts.uri.scheme_str(), &parts.headers, trust),
            headers: parts.headers.clone(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn reads_cookies_and_bearer() {
        let h = headers(&[("cookie", "a=1; lfusys_access=tok; lfusys_csrf=c")]);
        assert_eq!(cookie_value(&h, ACCESS_COOKIE).as_deref(), Some("tok"));
        assert_eq!(access_token(&h).unwrap(), Some(("tok".into(), true)));
        let h = headers(&[
            ("authorization", "Bearer abc"),
            ("cookie", "lfusys_access=tok"),
        ]);
        assert_eq!(access_token(&h).unwrap(), Some(("abc".into(), false)));
        let h = headers(&[("authorization", "Basic abc")]);
        assert!(access_token(&h).is_err());
        assert_eq!(access_token(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn csrf_double_submit() {
        assert!(check_csrf(&headers(&[
            ("cookie", "lfusys_csrf=abc"),
            ("x-csrf-token", "abc")
        ]))
        .is_ok());
        assert!(check_csrf(&headers(&[
            ("cookie", "lfusys_csrf=abc"),
            ("x-csrf-token", "abd")
        ]))
        .is_err());
        assert!(check_csrf(&headers(&[("cookie", "lfusys_csrf=abc")])).is_err());
        assert!(check_csrf(&headers(&[("x-csrf-token", "abc")])).is_err());
        assert!(check_csrf(&headers(&[
            ("cookie", "lfusys_csrf="),
            ("x-csrf-token", "")
        ]))
        .is_err());
    }

    #[test]
    fn cookie_attributes() {
        let c = session_cookies("a", 900, "r", 60, true);
        assert!(c[0].starts_with("lfusys_access=a;"));
        assert!(
            c[0].contains("HttpOnly")
                && c[0].contains("SameSite=Strict")
                && c[0].contains("Secure")
        );
        assert!(c[0].contains("Path=/;") || c[0].ends_with("Path=/"));
        assert!(c[1].contains("Path=/api/v1/auth") && c[1].contains("HttpOnly"));
        assert!(!c[2].contains("HttpOnly") && c[2].contains("SameSite=Strict"));
        let c = session_cookies("a", 900, "r", 60, false);
        assert!(c.iter().all(|c| !c.contains("Secure")));
        assert!(clear_cookies(false).iter().all(|c| c.contains("Max-Age=0")));
    }

    #[test]
    fn https_detection_trusts_the_proxy_only_when_told() {
        let h = headers(&[("x-forwarded-proto", "https")]);
        assert!(is_https(None, &h, true));
        assert!(!is_https(None, &h, false));
        assert!(is_https(Some("https"), &HeaderMap::new(), false));
        assert!(secure_cookies(CookieSecure::Auto, true));
        assert!(!secure_cookies(CookieSecure::Auto, false));
        assert!(secure_cookies(CookieSecure::Always, false));
        assert!(!secure_cookies(CookieSecure::Never, true));
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
        assert_eq!(token_hash("x").len(), 64);
    }
}
