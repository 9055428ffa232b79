//! The OpenAPI 3.1 document, generated from the handlers and DTOs.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "LFUSYS API",
        description = "Upload very large files in parallel chunks, then list, download and delete them. \
Chunks are sent to the upload workers at `upload_url` (see `POST /api/v1/uploads`) with the upload token. \
Every error body is application/problem+json (RFC 9457). Cookie-authenticated requests that change state \
must send `X-CSRF-Token` equal to the `lfusys_csrf` cookie.",
        license(name = "Apache-2.0"),
    ),
    paths(
        api::auth::register,
        api::auth::login,
        api::auth::refresh,
        api::auth::logout,
        api::auth::me,
        api::uploads::create_upload,
        api::uploads::list_uploads,
        api::uploads::get_upload,
        api::uploads::cancel_upload,
        api::uploads::declare_checksums,
        api::uploads::renew_token,
        api::files::list_files,
        api::files::get_file,
        api::files::download,
        api::files::delete_file,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "uploads", description = "Upload sessions"),
        (name = "files", description = "Published files"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::authn::ACCESS_COOKIE,
                "Set by login and refresh; state-changing requests also need X-CSRF-Token",
            ))),
        );
    }
}

/// The document as JSON, rendered once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|_| "{}".to_owned())
    })
}

pub async fn serve_document() -> Response {
    let mut res = document().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn document_is_openapi_31_with_all_paths_and_schemes() {
        let doc: serde_json::Value = serde_json::from_str(super::document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/api/v1/auth/register",
            "/api/v1/auth/login",
            "/api/v1/auth/refresh",
            "/api/v1/auth/logout",
            "/api/v1/auth/me",
            "/api/v1/uploads",
            "/api/v1/uploads/{id}",
            "/api/v1/uploads/{id}/token",
            "/api/v1/files",
            "/api/v1/files/{id}",
            "/api/v1/files/{id}/content",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["cookie"]["in"], "cookie");
        assert!(doc["components"]["schemas"]["CreatedUpload"].is_object());
        assert!(doc["components"]["schemas"]["Problem"].is_object());
    }
}
