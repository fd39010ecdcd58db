//! Client mistakes get a 4xx with a JSON error saying what was wrong; never a 500, and
//! nothing changes.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use ferry_server::ServeSettings;
use ferry_testkit::TestStore;

use crate::fixture::{Fixture, tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_are_4xx_with_a_json_error() {
    let settings = ServeSettings {
        body_limit: 1024,
        ..ServeSettings::default()
    };
    let f = Fixture::with_settings(TestStore::sqlite().await, "bad", &[("a", 1)], settings).await;
    let advance = "/api/v1/migrations/bad/tenants/a/advance";
    let big = format!(r#"{{"reason":"{}"}}"#, "x".repeat(2000));
    let cases: Vec<(&str, Reply, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            f.post(advance, r#"{"reason": "#).await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "not an object",
            f.post(advance, "[1,2]").await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "unknown field",
            f.post(advance, r#"{"reson":"typo"}"#).await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "wrong type",
            f.post(advance, r#"{"force":"yes"}"#).await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "oversized body",
            f.post(advance, &big).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "unknown phase",
            f.post(advance, r#"{"from_phase":"sideways"}"#).await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "wait too long",
            f.post(advance, r#"{"wait_s":3600}"#).await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "force without reason",
            f.post(advance, r#"{"force":true}"#).await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "unknown tenant",
            f.post("/api/v1/migrations/bad/tenants/nobody/advance", "{}")
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "unknown migration",
            f.get("/api/v1/migrations/nothere/tenants").await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "invalid migration id",
            f.get("/api/v1/migrations/Bad-Id").await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "invalid tenant id",
            f.get("/api/v1/migrations/bad/tenants/a%20b").await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "unknown query parameter",
            f.get("/api/v1/migrations/bad/tenants?phse=shadow").await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "bad limit",
            f.get("/api/v1/migrations/bad/tenants?limit=0").await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "non-numeric limit",
            f.get("/api/v1/operations?limit=lots").await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "bad seq",
            f.post("/api/v1/migrations/bad/buffer/-3/retry", "{}").await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "unknown seq",
            f.post("/api/v1/migrations/bad/buffer/999/retry", "{}")
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "drop without reason",
            f.post("/api/v1/migrations/bad/buffer/1/drop", "{}").await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "unknown copy control",
            f.post("/api/v1/migrations/bad/copy/explode", "{}").await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "throttle without rate",
            f.post("/api/v1/migrations/bad/copy/throttle", "{}").await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "empty cohort",
            f.post(
                "/api/v1/migrations/bad/rollouts",
                r#"{"action":"advance","cohort":{}}"#,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "two cohorts",
            f.post(
                "/api/v1/migrations/bad/rollouts",
                r#"{"action":"advance","cohort":{"all":true,"smallest":3}}"#,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "unknown action",
            f.post(
                "/api/v1/migrations/bad/rollouts",
                r#"{"action":"teleport","cohort":{"all":true}}"#,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "refused transition",
            f.post("/api/v1/migrations/bad/tenants/a/rollback", "{}")
                .await,
            StatusCode::CONFLICT,
            "refused",
        ),
        (
            "unknown route",
            f.get("/api/v1/nothing").await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "wrong method",
            f.call(Method::DELETE, "/api/v1/status", Some(&f.operator), None)
                .await,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (what, reply, status, code) in cases {
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        assert!(reply.content_type.starts_with("application/json"), "{what}");
        assert_eq!(reply.error_code(), code, "{what}");
    }
    let wrong_type = Request::builder()
        .method(Method::POST)
        .uri(advance)
        .header(header::AUTHORIZATION, format!("Bearer {}", f.operator))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"reason":"x"}"#))
        .unwrap();
    let reply = f.send(wrong_type).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply.error_code(), "unsupported_media_type");

    // The messages name what was wrong.
    let r = f.post(advance, r#"{"reson":"typo"}"#).await;
    assert!(r.text().contains("reson"), "{}", r.text());
    let r = f
        .post("/api/v1/migrations/bad/tenants/nobody/advance", "{}")
        .await;
    assert!(r.text().contains("nobody"), "{}", r.text());

    // Nothing moved.
    let a = f.store().tenant(&f.migration, &tenant("a")).await.unwrap();
    assert_eq!(a.state.phase, ferry_domain::Phase::Legacy);
    assert_eq!(a.state.version, 0);
}

use crate::fixture::Reply;
