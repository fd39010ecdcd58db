//! Embedding the router: start it, route writes by phase, watch an operator's change arrive.
//!
//!     cargo run -p ferry-router --example follow_phases -- sqlite://example.db
//!
//! Also compiled into the router's tests (`tests/it/example.rs`), which run [`run`].

use std::time::Duration;

use ferry_domain::{Action, MigrationId, RouterId, Side, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine, Request};
use ferry_router::{Router, RouterSettings};
use ferry_store::{MigrationKind, NewMigration, StoreOptions, TenantSize};

/// Runs the example against `store_url` and returns what it printed.
pub async fn run(store_url: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut lines = Vec::new();
    let store = ferry_store::open(store_url, &StoreOptions::default()).await?;
    let migration = MigrationId::new("orders_move")?;
    let acme = TenantId::new("acme")?;
    store
        .create_migration(&NewMigration {
            id: migration.clone(),
            kind: MigrationKind::TenantMove,
            description: "example".into(),
            config: serde_json::json!({}),
            created_by: "example".into(),
        })
        .await?;
    store
        .register_tenants(
            &migration,
            &[TenantSize {
                tenant: acme.clone(),
                rows: 10,
            }],
        )
        .await?;

    // The application's side: one router per process.
    let router = Router::start(
        store.clone(),
        RouterSettings::new(RouterId::new("example-app")?, "follow_phases example"),
    )
    .await?;
    let describe = |sides: ferry_domain::WritePlan| match sides.then {
        Some(then) => format!("{} then {}", sides.first, then),
        None => sides.first.to_string(),
    };
    {
        // Hold the snapshot for the whole operation.
        let snapshot = router.snapshot()?;
        let plan = snapshot.write_plan(migration.as_str(), acme.as_str());
        assert_eq!(plan.first, Side::Source);
        lines.push(format!("write acme -> {}", describe(plan)));
    }

    // The operator's side: advance acme; the change is effective once the router acknowledges.
    let engine = PhaseEngine::new(store.clone(), EngineSettings::default());
    let request = Request {
        actor: "example".into(),
        reason: "start dual writes".into(),
        force: false,
        dry_run: false,
        expect_phase: None,
    };
    let moved = engine
        .change(&migration, &acme, Action::Advance, &request)
        .await?;
    router.nudge();
    let ack = engine
        .wait_acknowledged(moved.change_version, Duration::from_secs(10))
        .await?;
    lines.push(format!(
        "advanced acme to {}; effective: {}",
        moved.to_phase,
        ack.effective()
    ));

    let plan = router
        .snapshot()?
        .write_plan(migration.as_str(), acme.as_str());
    lines.push(format!("write acme -> {}", describe(plan)));
    router.shutdown().await?;
    Ok(lines)
}

#[tokio::main]
#[allow(dead_code)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sqlite://follow_phases_example.db".into());
    for line in run(&url).await? {
        println!("{line}");
    }
    Ok(())
}
