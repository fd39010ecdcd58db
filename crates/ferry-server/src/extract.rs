//! Request parsing that fails with a JSON error naming what was wrong: bodies (content type,
//! size limit, syntax, unknown fields), query strings and path segments.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use ferry_domain::{MigrationId, TenantId};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// A JSON body of type `T` (which should `deny_unknown_fields`). An empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.settings().body_limit;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| too_large(limit))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return serde_json::from_slice(b"{}")
                .map(JsonBody)
                .map_err(|e| ApiError::bad_request(format!("a body is required: {e}")));
        }
        let is_json = content_type.as_deref().is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "the body must be JSON with Content-Type: application/json (got {})",
                    content_type.as_deref().unwrap_or("no Content-Type")
                ),
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body is larger than the limit of {limit} bytes"),
    )
}

/// A query string of type `T` (which should `deny_unknown_fields`).
pub fn query<T: DeserializeOwned>(raw: Option<String>) -> Result<T, ApiError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}

pub fn migration(s: &str) -> Result<MigrationId, ApiError> {
    MigrationId::new(s).map_err(|e| ApiError::bad_request(format!("migration id in the path: {e}")))
}

pub fn tenant(s: &str) -> Result<TenantId, ApiError> {
    TenantId::new(s).map_err(|e| ApiError::bad_request(format!("tenant id in the path: {e}")))
}

pub fn seq(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "buffer sequence number in the path: {s:?} is not a positive whole number"
        ))
    })
}

/// Path parameters; a segment that cannot be read (bad percent-encoding, say) is a JSON 400.
pub struct Ids<T>(pub T);

impl<T, S> FromRequestParts<S> for Ids<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Ids(v))
            .map_err(|e| ApiError::bad_request(format!("in the path: {}", e.body_text())))
    }
}
