//! The suite every store must pass: each test runs against SQLite and PostgreSQL through
//! `both_stores!`. One file per area of `src/areas/`, named alike; new store behaviour gets
//! its test in its area's file, and helpers shared by several areas live here. Mismatches
//! (`areas/mismatches.rs`) have no file of their own: the guard-facts, health and phase-change
//! tests record and resolve them where they matter.

mod admin;
mod audit;
mod buffer;
mod copies;
mod guards;
mod health;
mod manifest;
mod migrations;
mod phases;
mod routers;

use ferry_domain::{Action, MigrationId, RouterId, TenantId};
use ferry_store::*;
use ferry_testkit::TestStore;

fn mig(s: &str) -> MigrationId {
    MigrationId::new(s).unwrap()
}

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn router(s: &str) -> RouterId {
    RouterId::new(s).unwrap()
}

fn meta() -> AuditMeta {
    AuditMeta {
        actor: "alice".into(),
        reason: "test".into(),
    }
}

async fn migration_with_tenants(s: &TestStore, id: &str, tenants: &[(&str, u64)]) -> MigrationId {
    let m = mig(id);
    s.store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::TenantMove,
            description: "move".into(),
            config: serde_json::json!({"table": "orders"}),
            created_by: "alice".into(),
        })
        .await
        .unwrap();
    let sizes: Vec<TenantSize> = tenants
        .iter()
        .map(|(t, rows)| TenantSize {
            tenant: tenant(t),
            rows: *rows,
        })
        .collect();
    s.store.register_tenants(&m, &sizes).await.unwrap();
    m
}

fn advance(record: &TenantRecord) -> PhaseChange {
    let to = record.state.phase.next().unwrap();
    PhaseChange {
        tenant: record.tenant.clone(),
        action: Action::Advance,
        expected_version: record.state.version,
        from: record.state,
        to_phase: to,
        to_paused: record.state.paused,
        forced_guards: vec![],
        recheck_buffer: false,
        recheck_mismatches: false,
    }
}
