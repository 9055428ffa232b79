//! DESIGN §4 over a real gateway and sessions server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{browser, client, jar_cookie, problem, start, start_with, Harness, PASSWORD};
use reqwest::header::{RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn cookie<'a>(cookies: &'a [String], name: &str) -> &'a str {
    cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
}

#[tokio::test]
async fn register_login_me_logout() {
    let h = start().await;
    let c = client();
    let res = h.register(&c, "Ada@Example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["name"], "Test User");
    assert!(user["id"].is_string());
    assert_eq!(user.as_object().unwrap().len(), 3, "{user}");

    let res = h.login(&c, "ada@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookies = set_cookies(&res);
    let access = cookie(&cookies, "lfusys_access");
    assert!(
        access.contains("HttpOnly")
            && access.contains("SameSite=Strict")
            && access.contains("Path=/")
    );
    assert!(
        !access.contains("Secure"),
        "plain HTTP without a proxy: {access}"
    );
    let refresh = cookie(&cookies, "lfusys_refresh");
    assert!(refresh.contains("HttpOnly") && refresh.contains("Path=/api/v1/auth"));
    let csrf = cookie(&cookies, "lfusys_csrf");
    assert!(!csrf.contains("HttpOnly") && csrf.contains("SameSite=Strict"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["user"], user);
    let token = body["access_token"].as_str().unwrap();
    let refresh_token = body["refresh_token"].as_str().unwrap();
    assert_eq!(refresh_token.len(), 43, "32 random bytes, base64url");

    let me: Value = c
        .get(h.url("/api/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me, user);

    // The refresh token is only kept hashed.
    let db = std::fs::read(h.dir.path().join("auth.db")).unwrap();
    assert!(!db
        .windows(refresh_token.len())
        .any(|w| w == refresh_token.as_bytes()));

    let res = c
        .post(h.url("/api/v1/auth/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(set_cookies(&res).iter().all(|c| c.contains("Max-Age=0")));
    // The access token of the revoked session is refused, and so is its refresh token.
    let res = c
        .get(h.url("/api/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()[WWW_AUTHENTICATE], "Bearer");
    problem(res, StatusCode::UNAUTHORIZED).await;
    let res = c
        .post(h.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": refresh_token}))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn unauthenticated_and_bad_tokens_are_401() {
    let h = start().await;
    let c = client();
    problem(
        c.get(h.url("/api/v1/auth/me")).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let res = c
        .get(h.url("/api/v1/auth/me"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNAUTHORIZED).await;
    let res = c
        .get(h.url("/api/v1/uploads"))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNAUTHORIZED).await;
    // A token signed by another key.
    let other = lfusys_core::tokens::TokenSigner::generate().unwrap();
    let forged = other
        .sign_access("someone", "fam", lfusys_core::clock::now_ms() / 1000, 60)
        .unwrap();
    let res = c
        .get(h.url("/api/v1/files"))
        .bearer_auth(forged)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNAUTHORIZED).await;
}

/// Tokens an attacker crafts from a real one are all refused with the same 401 problem: no
/// signature (`alg: none`), HS256 keyed with the gateway's public key (algorithm confusion),
/// the gateway's own key with another issuer or audience, without an expiry or past it, and an
/// upload token in place of an access token. The real token itself is accepted (200).
#[tokio::test]
async fn crafted_tokens_are_401() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

    let h = start().await;
    let token = h.user("mallory@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let own_key =
        EncodingKey::from_ed_pem(&std::fs::read(&h.state.config().signing_key_file).unwrap())
            .unwrap();
    let signed = |changes: &[(&str, Option<Value>)]| {
        let mut c = claims.clone();
        for (name, value) in changes {
            match value {
                Some(v) => c[*name] = v.clone(),
                None => {
                    c.as_object_mut().unwrap().remove(*name);
                }
            }
        }
        encode(&Header::new(Algorithm::EdDSA), &c, &own_key).unwrap()
    };
    let now = lfusys_core::clock::now_ms() / 1000;
    let unsigned = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(h.state.signer().public_pem().as_bytes()),
    )
    .unwrap();
    let upload = h
        .create_upload(&token, json!({"name": "a.bin", "size": 10}))
        .await["upload_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let crafted = [
        ("alg none", unsigned),
        ("HS256 with the public key", confused),
        (
            "another issuer",
            signed(&[("iss", Some(json!("someone-else")))]),
        ),
        (
            "the upload audience",
            signed(&[("aud", Some(json!("lfusys-upload")))]),
        ),
        ("no expiry", signed(&[("exp", None)])),
        (
            "expired an hour ago",
            signed(&[("exp", Some(json!(now - 3600)))]),
        ),
        ("an upload token", upload),
    ];

    let c = client();
    let files = |t: String| c.get(h.url("/api/v1/files")).bearer_auth(t).send();
    assert_eq!(files(token.clone()).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        files(signed(&[])).await.unwrap().status(),
        StatusCode::OK,
        "the harness signs as the gateway does"
    );
    for (what, t) in crafted {
        let body = problem(files(t).await.unwrap(), StatusCode::UNAUTHORIZED).await;
        assert!(body["detail"].is_string(), "{what}: {body}");
    }
}

#[tokio::test]
async fn duplicate_email_is_409() {
    let h = start().await;
    let c = client();
    assert_eq!(
        h.register(&c, "bob@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let res = h
        .register(&c, " BOB@example.com ", "another password")
        .await;
    problem(res, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn invalid_registrations_are_400() {
    let h = start().await;
    let c = client();
    let url = h.url("/api/v1/auth/register");
    for body in [
        json!({"email": "not-an-email", "password": PASSWORD}),
        json!({"email": "a@b", "password": PASSWORD}),
        json!({"email": "a@example.com", "password": "short"}),
        json!({"email": "a@example.com", "password": "x".repeat(129)}),
        json!({"email": "a@example.com", "password": PASSWORD, "name": "n".repeat(101)}),
        json!({"email": "a@example.com"}),
        json!({"password": PASSWORD}),
        json!({"email": 5, "password": PASSWORD}),
        json!([1, 2]),
    ] {
        let res = c.post(&url).json(&body).send().await.unwrap();
        problem(res, StatusCode::BAD_REQUEST).await;
    }
    let res = c
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::BAD_REQUEST).await;
    // Browsers must declare JSON (a cross-site form cannot); other clients such as
    // `curl -d` may send JSON under the form type.
    let res = c
        .post(&url)
        .header("content-type", "text/plain")
        .header("origin", "https://evil.example")
        .body(json!({"email": "form@example.com", "password": PASSWORD}).to_string())
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let res = c
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(json!({"email": "curl@example.com", "password": PASSWORD}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = c
        .post(&url)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::BAD_REQUEST).await;
    // Boundaries are accepted.
    let res = c
        .post(&url)
        .json(
            &json!({"email": "edge@example.com", "password": "12345678", "name": "n".repeat(100)}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let h = start().await;
    let c = client();
    assert_eq!(
        h.register(&c, "carol@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let wrong = h.login(&c, "carol@example.com", "wrong password").await;
    let wrong_headers = wrong.headers().clone();
    let wrong = problem(wrong, StatusCode::UNAUTHORIZED).await;
    let unknown = h.login(&c, "nobody@example.com", "wrong password").await;
    let unknown_headers = unknown.headers().clone();
    let unknown = problem(unknown, StatusCode::UNAUTHORIZED).await;
    assert_eq!(wrong, unknown);
    assert_eq!(
        wrong_headers.get(SET_COOKIE),
        unknown_headers.get(SET_COOKIE)
    );
    let malformed = problem(
        h.login(&c, "not-an-email", "wrong password").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(malformed, wrong);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let h = start().await;
    let c = client();
    let login = h.user("dave@example.com").await;
    let r1 = login["refresh_token"].as_str().unwrap();
    let refresh = |token: &str| {
        c.post(h.url("/api/v1/auth/refresh"))
            .json(&json!({"refresh_token": token}))
            .send()
    };

    let res = refresh(r1).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let second: Value = res.json().await.unwrap();
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2);
    assert_eq!(second["user"], login["user"]);
    assert_eq!(second["token_type"], "Bearer");
    let a2 = second["access_token"].as_str().unwrap();
    let res = c
        .get(h.url("/api/v1/auth/me"))
        .bearer_auth(a2)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Rotation continues along the chain.
    let third: Value = refresh(r2).await.unwrap().json().await.unwrap();
    let r3 = third["refresh_token"].as_str().unwrap().to_owned();
    let a3 = third["access_token"].as_str().unwrap().to_owned();

    // Replaying a spent token: refused, and the whole family dies with it.
    problem(refresh(r1).await.unwrap(), StatusCode::UNAUTHORIZED).await;
    problem(refresh(&r3).await.unwrap(), StatusCode::UNAUTHORIZED).await;
    for access in [a2, a3.as_str(), login["access_token"].as_str().unwrap()] {
        let res = c
            .get(h.url("/api/v1/auth/me"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap();
        problem(res, StatusCode::UNAUTHORIZED).await;
    }
    // Other sessions of the same user are unaffected.
    let other = h.login(&c, "dave@example.com", PASSWORD).await;
    let other: Value = other.json().await.unwrap();
    let res = c
        .get(h.url("/api/v1/auth/me"))
        .bearer_auth(other["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    problem(refresh("made-up").await.unwrap(), StatusCode::UNAUTHORIZED).await;
    let res = c.post(h.url("/api/v1/auth/refresh")).send().await.unwrap();
    problem(res, StatusCode::UNAUTHORIZED).await;
}

/// Refresh and logout by cookie need the CSRF header too; refresh rotates the cookies, logout
/// removes them and revokes the session.
async fn refresh_and_logout_by_cookie(
    h: &Harness,
    b: &reqwest::Client,
    jar: &reqwest::cookie::Jar,
    csrf: &str,
) {
    // Refresh by cookie: CSRF required as well, then the cookies rotate.
    let old_refresh = jar_cookie(jar, &h.url("/api/v1/auth/refresh"), "lfusys_refresh").unwrap();
    let res = b.post(h.url("/api/v1/auth/refresh")).send().await.unwrap();
    problem(res, StatusCode::FORBIDDEN).await;
    let res = b
        .post(h.url("/api/v1/auth/refresh"))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let new_refresh = jar_cookie(jar, &h.url("/api/v1/auth/refresh"), "lfusys_refresh").unwrap();
    assert_ne!(old_refresh, new_refresh);
    let csrf = &jar_cookie(jar, &h.base, "lfusys_csrf").unwrap();
    assert_eq!(
        b.get(h.url("/api/v1/auth/me"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // Logout by cookie: CSRF required; then the cookies are gone and the session revoked.
    let access = jar_cookie(jar, &h.base, "lfusys_access").unwrap();
    problem(
        b.post(h.url("/api/v1/auth/logout")).send().await.unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    let res = b
        .post(h.url("/api/v1/auth/logout"))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(jar_cookie(jar, &h.base, "lfusys_access").is_none_or(|v| v.is_empty()));
    problem(
        b.get(h.url("/api/v1/auth/me")).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let res = client()
        .get(h.url("/api/v1/auth/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNAUTHORIZED).await;
    let res = client()
        .post(h.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": new_refresh}))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn browser_session_with_cookies_and_csrf() {
    let h = start().await;
    let (b, jar) = browser();
    assert_eq!(
        h.register(&b, "erin@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        h.login(&b, "erin@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
    let csrf = jar_cookie(&jar, &h.base, "lfusys_csrf").unwrap();

    // Reads need no CSRF token.
    let res = b.get(h.url("/api/v1/auth/me")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        b.get(h.url("/api/v1/uploads"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // A cookie-authenticated write without the header is refused, with it accepted.
    let body = json!({"name": "a.txt", "size": 10});
    let res = b
        .post(h.url("/api/v1/uploads"))
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::FORBIDDEN).await;
    let res = b
        .post(h.url("/api/v1/uploads"))
        .header("x-csrf-token", "wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::FORBIDDEN).await;
    let res = b
        .post(h.url("/api/v1/uploads"))
        .header("x-csrf-token", &csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let upload: Value = res.json().await.unwrap();
    let id = upload["upload_id"].as_str().unwrap();
    let res = b
        .delete(h.url(&format!("/api/v1/uploads/{id}")))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::FORBIDDEN).await;

    // A bearer request needs no CSRF token (cookies are not its credential).
    let bearer = h.user("frank@example.com").await;
    let res = client()
        .post(h.url("/api/v1/uploads"))
        .bearer_auth(bearer["access_token"].as_str().unwrap())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    refresh_and_logout_by_cookie(&h, &b, &jar, &csrf).await;
}

#[tokio::test]
async fn secure_cookies_follow_the_configuration() {
    let h = start_with(|g, _| g.trust_forwarded_for = true).await;
    let c = client();
    assert_eq!(
        h.register(&c, "gil@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let login = |proto: &'static str| {
        c.post(h.url("/api/v1/auth/login"))
            .header("x-forwarded-proto", proto)
            .json(&json!({"email": "gil@example.com", "password": PASSWORD}))
            .send()
    };
    let res = login("https").await.unwrap();
    assert!(
        set_cookies(&res).iter().all(|c| c.contains("Secure")),
        "{:?}",
        set_cookies(&res)
    );
    let res = login("http").await.unwrap();
    assert!(set_cookies(&res).iter().all(|c| !c.contains("Secure")));

    // Without a trusted proxy the header is ignored; `always` forces the attribute.
    let h = start_with(|g, _| g.cookie_secure = gateway::CookieSecure::Always).await;
    assert_eq!(
        h.register(&c, "gil@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let res = h.login(&c, "gil@example.com", PASSWORD).await;
    assert!(set_cookies(&res).iter().all(|c| c.contains("Secure")));
}

#[tokio::test]
async fn rate_limits_per_client_answer_429_with_retry_after() {
    let h = start_with(|g, _| g.auth_limit_per_client = 3).await;
    let c = client();
    for _ in 0..3 {
        let res = h.login(&c, "nobody@example.com", "wrong password").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = h.login(&c, "nobody@example.com", "wrong password").await;
    let retry: u64 = res.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    // Register and refresh count against the same client budget.
    problem(
        h.register(&c, "new@example.com", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    let res = c
        .post(h.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": "x"}))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::TOO_MANY_REQUESTS).await;
}

#[tokio::test]
async fn rate_limits_per_account() {
    let h = start_with(|g, _| g.login_limit_per_account = 2).await;
    let c = client();
    assert_eq!(
        h.register(&c, "hal@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    for _ in 0..2 {
        assert_eq!(
            h.login(&c, "hal@example.com", "wrong password")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Even the right password waits now: guessing is stopped for this account only.
    let res = h.login(&c, "HAL@example.com", PASSWORD).await;
    assert!(res.headers().contains_key(RETRY_AFTER));
    problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(
        h.login(&c, "ivy@example.com", "wrong password")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn trusted_proxy_addresses_are_limited_separately() {
    let h = start_with(|g, _| {
        g.trust_forwarded_for = true;
        g.auth_limit_per_client = 1;
    })
    .await;
    let c = client();
    let attempt = |ip: &'static str| {
        c.post(h.url("/api/v1/auth/login"))
            .header("x-forwarded-for", format!("203.0.113.9, {ip}"))
            .json(&json!({"email": "x@example.com", "password": "wrong password"}))
            .send()
    };
    assert_eq!(
        attempt("198.51.100.1").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        attempt("198.51.100.1").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        attempt("198.51.100.2").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}
