//! `/metrics` after a known sequence of operations shows exactly the expected values.

use std::collections::BTreeMap;

use ferry_domain::RouterId;
use ferry_store::RouteCount;
use ferry_testkit::TestStore;

use crate::fixture::{Fixture, tenant};

/// `name{labels} value` lines into a map (labels kept as written).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_known_sequence_equal_the_expected_counts() {
    // A migration name no other test uses: the process-wide recorder is shared.
    let f = Fixture::new(
        TestStore::postgres().await,
        "metrics_seq",
        &[("a", 10), ("b", 20), ("c", 30), ("d", 40)],
    )
    .await;
    let m = "metrics_seq";
    for t in ["a", "b", "c"] {
        let r = f
            .post(&format!("/api/v1/migrations/{m}/tenants/{t}/advance"), "{}")
            .await;
        assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.text());
    }
    f.post(&format!("/api/v1/migrations/{m}/tenants/c/pause"), "{}")
        .await;
    // Refused: a tenant in dual_write without a backfill cannot advance.
    f.post(&format!("/api/v1/migrations/{m}/tenants/a/advance"), "{}")
        .await;
    let mut seqs = vec![];
    for key in ["k1", "k2", "k3"] {
        seqs.push(
            f.store()
                .enqueue_update(
                    &f.migration,
                    &tenant("a"),
                    key,
                    "update",
                    &serde_json::json!({}),
                )
                .await
                .unwrap(),
        );
    }
    f.store()
        .record_update_failure(&[seqs[0]], "down", 1)
        .await
        .unwrap();
    f.store()
        .record_update_failure(&[seqs[1]], "down", 5)
        .await
        .unwrap();
    f.store()
        .record_mismatch(&f.migration, &tenant("b"), "k9", "differs")
        .await
        .unwrap();
    let router = RouterId::new("app-1").unwrap();
    f.store().heartbeat(&router, "app", 0).await.unwrap();
    let count = |path: &str, reason: &str, n| RouteCount {
        migration: m.into(),
        operation: "read".into(),
        phase: "dual_write".into(),
        path: path.into(),
        reason: reason.into(),
        count: n,
    };
    f.store()
        .record_route_counts(
            &router,
            &[count("source", "phase", 40), count("source", "fallback", 2)],
        )
        .await
        .unwrap();

    let text = f.get("/metrics").await.text();
    let s = samples(&text);
    let get = |k: &str| {
        *s.get(k)
            .unwrap_or_else(|| panic!("{k} missing from:\n{text}"))
    };
    let l = |rest: &str| format!("{{migration=\"{m}\"{rest}}}");
    assert_eq!(
        get(&format!("ferry_tenants{}", l(",phase=\"legacy\""))),
        1.0
    );
    assert_eq!(
        get(&format!("ferry_tenants{}", l(",phase=\"dual_write\""))),
        3.0
    );
    assert_eq!(
        get(&format!("ferry_tenants{}", l(",phase=\"shadow\""))),
        0.0
    );
    assert_eq!(get(&format!("ferry_tenants_paused{}", l(""))), 1.0);
    assert_eq!(
        get(&format!(
            "ferry_update_buffer_changes{}",
            l(",state=\"pending\"")
        )),
        2.0
    );
    assert_eq!(
        get(&format!(
            "ferry_update_buffer_changes{}",
            l(",state=\"dead\"")
        )),
        1.0
    );
    assert_eq!(
        get(&format!("ferry_update_buffer_retrying_changes{}", l(""))),
        1.0
    );
    assert_eq!(
        get(&format!("ferry_update_buffer_failed_attempts{}", l(""))),
        2.0
    );
    assert!(
        get(&format!(
            "ferry_update_buffer_oldest_pending_age_seconds{}",
            l("")
        )) >= 0.0
    );
    assert_eq!(
        get(&format!(
            "ferry_validation_mismatches{}",
            l(",state=\"open\"")
        )),
        1.0
    );
    assert_eq!(get("ferry_routers{state=\"live\"}"), 1.0);
    // Phase changes made through this process: 3 advances and a pause; the refusal is not one.
    let changes: f64 = s
        .iter()
        .filter(|(k, _)| {
            k.starts_with("ferry_phase_changes_total") && k.contains(&format!("migration=\"{m}\""))
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(changes, 4.0, "{text}");
    assert!(text.contains("ferry_http_requests_total"), "{text}");
    // No label carries a tenant id.
    for line in text.lines().filter(|l| l.contains(m)) {
        for t in ["\"a\"", "\"b\"", "\"c\"", "\"d\""] {
            assert!(!line.contains(t), "a tenant id in a label: {line}");
        }
    }
    // The same routing, per path and reason, in the status the dashboard reads.
    let status = f.get(&format!("/api/v1/status?migration={m}")).await.json();
    assert_eq!(status["migrations"][0]["fallbacks"], 2);
    assert_eq!(
        status["migrations"][0]["routed"], 40,
        "fallbacks are not counted twice"
    );
    assert_eq!(
        status["migrations"][0]["routes"].as_array().unwrap().len(),
        2
    );
}
