//! Runs `examples/follow_phases.rs`, so the documented example cannot rot.

#[path = "../../examples/follow_phases.rs"]
mod follow_phases;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedding_example_routes_by_phase() {
    let dir = ferry_testkit::TempDir::new("example");
    let url = format!("sqlite://{}", dir.path().join("example.db").display());
    let lines = follow_phases::run(&url).await.unwrap();
    assert_eq!(
        lines,
        [
            "write acme -> source",
            "advanced acme to dual_write; effective: true",
            "write acme -> source then target",
        ]
    );
}
