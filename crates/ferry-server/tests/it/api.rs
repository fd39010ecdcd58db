//! What the API answers is what the operations compute, and actions do what the CLI does.

use axum::http::StatusCode;
use ferry_testkit::TestStore;

use crate::fixture::{Fixture, tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_changes_rollouts_buffer_and_copy_controls_through_the_api() {
    let f = Fixture::new(
        TestStore::postgres().await,
        "api",
        &[("a", 10), ("b", 20), ("c", 30)],
    )
    .await;
    // One tenant forward, then a cohort.
    let r = f
        .post(
            "/api/v1/migrations/api/tenants/a/advance",
            r#"{"reason":"canary"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["moved"][0]["to"], "dual_write");
    let r = f
        .post(
            "/api/v1/migrations/api/rollouts",
            r#"{"action":"advance","cohort":{"all":true},"from_phase":"legacy","reason":"wave 1"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["moved"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(
        v["refused"].as_array().unwrap().len(),
        1,
        "a is no longer in legacy: {v}"
    );
    // A dry run changes nothing.
    let r = f
        .post(
            "/api/v1/migrations/api/tenants/b/rollback",
            r#"{"dry_run":true}"#,
        )
        .await;
    assert_eq!(r.json()["dry_run"], true);
    assert_eq!(
        f.store()
            .tenant(&f.migration, &tenant("b"))
            .await
            .unwrap()
            .state
            .phase,
        ferry_domain::Phase::DualWrite
    );

    // The status and the tenant list agree with the store.
    let status = f.get("/api/v1/status").await.json();
    let phases = &status["migrations"][0]["phases"];
    assert_eq!(phases[1]["phase"], "dual_write");
    assert_eq!(phases[1]["tenants"], 3);
    let listed = f
        .get("/api/v1/migrations/api/tenants?phase=dual_write&limit=2")
        .await
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let next = f
        .get("/api/v1/migrations/api/tenants?phase=dual_write&after=b")
        .await
        .json();
    assert_eq!(next[0]["tenant"], "c");
    let detail = f.get("/api/v1/migrations/api/tenants/a").await.json();
    assert!(
        detail["next_advance"]
            .as_str()
            .unwrap()
            .contains("backfill"),
        "{detail}"
    );
    let history = f
        .get("/api/v1/migrations/api/tenants/a/history")
        .await
        .json();
    assert_eq!(history[0]["actor"], "token:oncall");
    assert_eq!(history[0]["reason"], "canary");
    let audit = f.get("/api/v1/migrations/api/audit?limit=2").await.json();
    let all = f.get("/api/v1/migrations/api/audit?limit=100").await.json();
    let seqs = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect()
    };
    let all = seqs(&all);
    assert_eq!(all.len(), 3, "three changes so far");
    assert_eq!(seqs(&audit), all[1..], "the most recent two, oldest first");
    let after = f
        .get(&format!("/api/v1/migrations/api/audit?after={}", all[0]))
        .await
        .json();
    assert_eq!(seqs(&after), all[1..], "paging forwards");

    // The update buffer: a dead change retried, then dropped with a reason.
    let seq = f
        .store()
        .enqueue_update(
            &f.migration,
            &tenant("b"),
            "k",
            "update",
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    f.store()
        .record_update_failure(&[seq], "object store down", 1)
        .await
        .unwrap();
    let buffer = f.get("/api/v1/migrations/api/buffer").await.json();
    assert_eq!(buffer[0]["state"], "dead");
    let r = f
        .post(&format!("/api/v1/migrations/api/buffer/{seq}/retry"), "")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = f
        .post(&format!("/api/v1/migrations/api/buffer/{seq}/retry"), "")
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "only dead changes are retried"
    );
    let r = f
        .post(
            &format!("/api/v1/migrations/api/buffer/{seq}/drop"),
            r#"{"reason":"row deleted upstream"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        f.get("/api/v1/migrations/api/buffer")
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Copy controls land in the store the copier reads.
    let r = f
        .post(
            "/api/v1/migrations/api/copy/throttle",
            r#"{"tenant":"c","rows_per_s":500}"#,
        )
        .await;
    assert_eq!(r.json()["rows_per_s"], 500);
    let control = f
        .store()
        .control(&f.migration, Some(&tenant("c")))
        .await
        .unwrap();
    assert_eq!(control.rate_limit, Some(500));

    // Every action is in the operator log, in order, with its outcome.
    let ops = f.get("/api/v1/operations?limit=100").await.json();
    let kinds: Vec<&str> = ops
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["actor"] == "token:oncall")
        .map(|o| o["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "advance",
            "rollout.advance",
            "buffer.retry",
            "buffer.retry",
            "buffer.drop",
            "copy.throttle"
        ]
    );
}
