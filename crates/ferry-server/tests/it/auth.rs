//! Every route, walked with no token, a malformed header, an unknown token, a revoked token,
//! a read token and an operator token.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use ferry_api::ops::Operations;
use ferry_store::TokenScope;
use ferry_testkit::TestStore;

use crate::fixture::{Fixture, tenant};

/// (method, path template, concrete path, body for the operator's call).
fn routes(seq: i64) -> Vec<(Method, &'static str, String, &'static str)> {
    let m = "walk";
    vec![
        (Method::GET, "/api/v1/status", "/api/v1/status".into(), ""),
        (
            Method::GET,
            "/api/v1/migrations",
            "/api/v1/migrations".into(),
            "",
        ),
        (
            Method::GET,
            "/api/v1/migrations/{migration}",
            format!("/api/v1/migrations/{m}"),
            "",
        ),
        (
            Method::GET,
            "/api/v1/migrations/{migration}/tenants",
            format!("/api/v1/migrations/{m}/tenants"),
            "",
        ),
        (
            Method::GET,
            "/api/v1/migrations/{migration}/tenants/{tenant}",
            format!("/api/v1/migrations/{m}/tenants/a"),
            "",
        ),
        (
            Method::GET,
            "/api/v1/migrations/{migration}/tenants/{tenant}/history",
            format!("/api/v1/migrations/{m}/tenants/a/history"),
            "",
        ),
        (
            Method::POST,
            "/api/v1/migrations/{migration}/tenants/{tenant}/advance",
            format!("/api/v1/migrations/{m}/tenants/a/advance"),
            r#"{"reason":"walk","wait_s":0}"#,
        ),
        (
            Method::POST,
            "/api/v1/migrations/{migration}/tenants/{tenant}/pause",
            format!("/api/v1/migrations/{m}/tenants/a/pause"),
            r#"{"wait_s":0}"#,
        ),
        (
            Method::POST,
            "/api/v1/migrations/{migration}/tenants/{tenant}/resume",
            format!("/api/v1/migrations/{m}/tenants/a/resume"),
            r#"{"wait_s":0}"#,
        ),
        (
            Method::POST,
            "/api/v1/migrations/{migration}/tenants/{tenant}/rollback",
            format!("/api/v1/migrations/{m}/tenants/a/rollback"),
            r#"{"reason":"walk","wait_s":0}"#,
        ),
        (
            Method::POST,
            "/api/v1/migrations/{migration}/rollouts",
            format!("/api/v1/migrations/{m}/rollouts"),
            r#"{"action":"pause","cohort":{"tenants":["b"]},"wait_s":0}"#,
        ),
        (
            Method::GET,
            "/api/v1/migrations/{migration}/audit",
            format!("/api/v1/migrations/{m}/audit"),
            "",
        ),
        (
            Method::GET,
            "/api/v1/migrations/{migration}/progress",
            format!("/api/v1/migrations/{m}/progress"),
            "",
        ),
        (
            Method::GET,
            "/api/v1/migrations/{migration}/buffer",
            format!("/api/v1/migrations/{m}/buffer"),
            "",
        ),
        (
            Method::POST,
            "/api/v1/migrations/{migration}/buffer/{seq}/retry",
            format!("/api/v1/migrations/{m}/buffer/{seq}/retry"),
            "{}",
        ),
        (
            Method::POST,
            "/api/v1/migrations/{migration}/buffer/{seq}/drop",
            format!("/api/v1/migrations/{m}/buffer/{seq}/drop"),
            r#"{"reason":"walk"}"#,
        ),
        (
            Method::POST,
            "/api/v1/migrations/{migration}/copy/{control}",
            format!("/api/v1/migrations/{m}/copy/pause"),
            "{}",
        ),
        (Method::GET, "/api/v1/routers", "/api/v1/routers".into(), ""),
        (
            Method::GET,
            "/api/v1/operations",
            "/api/v1/operations".into(),
            "",
        ),
        (Method::GET, "/api/v1/rates", "/api/v1/rates".into(), ""),
        (
            Method::GET,
            "/api/v1/openapi.json",
            "/api/v1/openapi.json".into(),
            "",
        ),
        (Method::GET, "/metrics", "/metrics".into(), ""),
    ]
}

#[test]
fn the_openapi_document_lists_exactly_the_walked_routes() {
    let doc: serde_json::Value = serde_json::from_str(ferry_server::OPENAPI).unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let walked: BTreeSet<(String, String)> = routes(1)
        .into_iter()
        .map(|(m, t, _, _)| (m.to_string(), t.to_owned()))
        .collect();
    assert_eq!(documented, walked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_a_token_of_the_right_scope() {
    let f = Fixture::new(TestStore::sqlite().await, "walk", &[("a", 10), ("b", 20)]).await;
    let seq = f
        .store()
        .enqueue_update(
            &f.migration,
            &tenant("a"),
            "k1",
            "update",
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    let ops = Operations::new(f.store().clone());
    let (_, revoked) = ops
        .create_token("admin", "former", TokenScope::Operator)
        .await
        .unwrap();
    ops.revoke_token("admin", "former").await.unwrap();
    let logged = || async { f.store().operations(0, 10_000).await.unwrap() };
    let before = logged().await.len();

    for (method, template, path, body) in routes(seq) {
        let body = (method == Method::POST).then_some(body);
        let what = format!("{method} {template}");
        for (token, why) in [
            (None, "no token"),
            (Some("ferry_not_a_token"), "an unknown token"),
            (Some(revoked.as_str()), "a revoked token"),
            (Some(""), "an empty token"),
        ] {
            let r = f.call(method.clone(), &path, token, body).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what} with {why}");
            assert_eq!(r.error_code(), "unauthorized", "{what} with {why}");
        }
        let basic = axum::http::Request::builder()
            .method(method.clone())
            .uri(&path)
            .header("authorization", format!("Basic {}", f.operator))
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(
            f.send(basic).await.status,
            StatusCode::UNAUTHORIZED,
            "{what} with Basic"
        );

        let r = f.call(method.clone(), &path, Some(&f.read), body).await;
        if method == Method::GET {
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{what} with a read token: {}",
                r.text()
            );
        } else {
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{what} with a read token");
            assert_eq!(r.error_code(), "forbidden");
        }

        let count = logged().await.len();
        let r = f.call(method.clone(), &path, Some(&f.operator), body).await;
        assert!(
            !matches!(r.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
            "{what} with an operator token: {}",
            r.status
        );
        assert!(
            !r.text().contains("no route"),
            "{what} is served: {}",
            r.text()
        );
        let after = logged().await;
        if method == Method::POST {
            // One operator-log entry per mutating call, with the token's name as actor,
            // whatever its outcome.
            assert_eq!(after.len(), count + 1, "{what}: {}", r.text());
            let entry = after.last().unwrap();
            assert_eq!(entry.actor, "token:oncall", "{what}");
        } else {
            assert_eq!(after.len(), count, "{what} changes nothing");
        }
    }
    // Refused calls (no token, wrong scope) wrote nothing.
    let entries = logged().await;
    let posts = routes(seq).iter().filter(|r| r.0 == Method::POST).count();
    assert_eq!(entries.len(), before + posts);
    // The phase changes carry the caller as actor; no token ever reached a log.
    let history = f.store().history(&f.migration, &tenant("a")).await.unwrap();
    assert!(!history.is_empty());
    assert!(history.iter().all(|e| e.actor == "token:oncall"));
    for secret in [&f.read, &f.operator, &revoked] {
        assert!(
            entries
                .iter()
                .all(|e| !format!("{e:?}").contains(secret.as_str()))
        );
        assert!(
            history
                .iter()
                .all(|e| !format!("{e:?}").contains(secret.as_str()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_page_is_public_and_locked_down() {
    let f = Fixture::new(TestStore::sqlite().await, "page", &[("a", 1)]).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let r = f.call(Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            r.content_type.starts_with(kind),
            "{path}: {}",
            r.content_type
        );
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
    }
    // The data behind it is not public.
    let r = f
        .call(Method::GET, "/api/v1/migrations/page/tenants", None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
