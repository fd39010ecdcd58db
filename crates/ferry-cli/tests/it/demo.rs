use ferry_testkit::{TempDir, TestDb};

use crate::{ferry, ok};

#[test]
fn the_simulated_demo_moves_every_tenant_and_verifies_the_audit_log() {
    let dir = TempDir::new("demo");
    let store = dir.path().join("demo.db");
    let out = ok(ferry("unused")
        .args(["demo", "--simulate", "--tenants", "300", "--store"])
        .arg(&store));
    assert!(out.contains("300 tenants registered"), "{out}");
    assert!(out.contains("canary"), "{out}");
    assert!(out.contains("rollback"), "{out}");
    assert!(out.contains("pause"), "{out}");
    assert!(
        out.contains("verified: every phase is explained by the audit log"),
        "{out}"
    );
    // The kept store is a normal store: the CLI reads the same story from it.
    let status = ok(ferry(&format!("sqlite://{}", store.display())).args(["status", "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let complete = status["migrations"][0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "complete")
        .unwrap()["tenants"]
        .as_u64()
        .unwrap();
    assert_eq!(complete, 300);
    // A second demo refuses to reuse the store rather than mixing runs.
    let again = crate::run(
        ferry("unused")
            .args(["demo", "--simulate", "--store"])
            .arg(&store),
    );
    assert_eq!(again.status.code(), Some(1));
}

/// The real demo with nothing given: a throwaway cluster, real rows, the checker's verdict.
#[test]
fn the_demo_moves_real_rows_under_traffic_with_zero_anomalies() {
    let dir = TempDir::new("demo-real");
    let out = ok(ferry("unused")
        .args(["demo", "--quick", "--json"])
        .env("TMPDIR", dir.path()));
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows_seeded = summary["rows_seeded"].as_u64().unwrap();
    assert!(rows_seeded > 1000, "{summary}");
    // Every seeded row crossed (plus the clients' rows, and the reverse and repeated copies).
    assert!(
        summary["rows_moved"].as_u64().unwrap() > rows_seeded,
        "{summary}"
    );
    let anomalies = summary["anomalies"].as_object().unwrap();
    assert_eq!(anomalies.len(), 8, "{summary}");
    assert!(anomalies.values().all(|n| n == 0), "{summary}");
    // The second act: old events tiered to Parquet, an object-store outage, a restore.
    let tiering = &summary["tiering"];
    for figure in [
        "rows_archived",
        "segments",
        "hot_copies_deleted",
        "rows_restored",
        "writes",
    ] {
        assert!(
            tiering[figure].as_u64().unwrap() > 0,
            "no {figure}: {summary}"
        );
    }
    for path in ["reads_hot", "reads_cold", "buffered", "fallbacks"] {
        let n = tiering["operations"][path].as_u64().unwrap();
        assert!(n > 0, "no tiering {path}: {summary}");
    }
    let tier_anomalies = tiering["anomalies"].as_object().unwrap();
    assert_eq!(tier_anomalies.len(), 4, "{summary}");
    assert!(tier_anomalies.values().all(|n| n == 0), "{summary}");
    assert!(
        summary["checker"]["operations"].as_u64().unwrap() > 100,
        "{summary}"
    );
    let ops = &summary["operations"];
    for path in [
        "reads_source",
        "reads_target",
        "writes_source",
        "writes_target",
    ] {
        assert!(ops[path].as_u64().unwrap() > 0, "no {path}: {summary}");
    }
}

/// The story as people read it, in a database of the caller's (whose schemas it drops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tells_the_story_and_cleans_up_a_given_database() {
    let data = TestDb::new().await;
    let url = data.url().to_owned();
    let dir = TempDir::new("demo-story");
    let tmp = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        ok(ferry("unused")
            .args(["demo", "--quick", "--tenants", "12", "--data-url", &url])
            .env("TMPDIR", tmp))
    })
    .await
    .unwrap();
    for line in [
        "refused 1: tenant is paused",
        "fallback rate above 1%",
        "reverse, every batch validated",
        "the two rolled back start over: a new copy epoch",
        "complete        12",
        "PASSED: nothing lost, duplicated, resurrected or misrouted",
        "reads of archived rows fell back to their hot copies",
        "archived rows of",
        "tiering anomalies: 0 lost, 0 resurrected, 0 stale reads, 0 failed requests",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    let pool = sqlx::PgPool::connect(data.url()).await.unwrap();
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ferry\\_demo%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "the demo's schemas are dropped");
}
