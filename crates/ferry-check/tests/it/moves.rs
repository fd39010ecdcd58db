//! The workload through a tenant move: 8 clients on two routers write 50 tenants while a
//! driver moves 30% of them through the phases with the copier (forward copies, reverse copies
//! after stepping back from `target_only`) and rolls some back; at the end the checker reads
//! every key. All anomaly counts must be zero, and every copy's validation clean.

use std::time::Duration;

use crate::world::{settings, world};

/// The length of the run: `FERRY_CHECK_SECS` (the long tier sets minutes), 60 s by default.
fn run_for() -> Duration {
    let secs = std::env::var("FERRY_CHECK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_clients_fifty_tenants_phase_changes_and_rollbacks_zero_anomalies() {
    if let Ok(filter) = std::env::var("FERRY_CHECK_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let w = world(settings(50, 8, 15, run_for())).await;
    let outcome = w.s.run(|_| {}).await.unwrap();
    let report = &outcome.report;
    eprintln!("{outcome:#?}");
    assert!(report.passed(), "{report:#?}");
    assert!(
        report.operations > 1000,
        "only {} operations",
        report.operations
    );
    assert!(
        outcome.phase_changes >= 30,
        "only {} phase changes",
        outcome.phase_changes
    );
    // The tenants that never moved are on the source alone, exactly as written.
    let untouched: i64 =
        sqlx::query_scalar("SELECT count(*) FROM wl_moved.items WHERE tenant_id >= 't015'")
            .fetch_one(&w.s.pool)
            .await
            .unwrap();
    assert_eq!(
        untouched, 0,
        "tenants never moved have nothing in the target"
    );
}
