//! What `start` refuses, and how it behaves when it cannot get its locks.

use std::time::{Duration, Instant};

use ferry_domain::MigrationId;
use ferry_schema::catalogue::Catalogue;
use ferry_schema::runner::MigrationState;
use ferry_schema::{Plan, PlanError, SchemaError};
use serde_json::json;
use sqlx::Connection;

use super::fixture::fixture;

/// Every problem of a plan, as `validate` reports them.
async fn problems(operations: serde_json::Value) -> Vec<PlanError> {
    let fx = fixture("bad", json!([])).await;
    let plan = json!({"schema": "app", "operations": operations});
    let parsed = match Plan::from_json(&plan) {
        Ok(p) => p,
        Err(errors) => return errors,
    };
    let catalogue = Catalogue::read(&fx.pool, "app").await.unwrap();
    match parsed.resolve(&MigrationId::new("bad").unwrap(), &catalogue) {
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    }
}

fn at(errors: &[PlanError]) -> Vec<String> {
    errors
        .iter()
        .map(|e| {
            format!(
                "operations[{}].{}",
                e.operation.unwrap_or(usize::MAX),
                e.field
            )
        })
        .collect()
}

#[tokio::test]
async fn bad_plans_are_refused_naming_the_operation_and_field() {
    let long = "x".repeat(64);
    let cases = [
        (
            json!([{"op": "add_colum", "table": "orders"}]),
            "operations[0].op",
            "unknown operation",
        ),
        (
            json!([{"op": "change_type", "table": "orders", "column": "amount", "type": "numeric", "down": "amount::text"}]),
            "operations[0].up",
            "missing field",
        ),
        (
            json!([{"op": "add_column", "table": "orders", "column": {"name": "cents", "type": "bigint", "nullable": false}}]),
            "operations[0].up",
            "NOT NULL without a default",
        ),
        (
            json!([{"op": "drop_column", "table": "invoices", "column": "x"}]),
            "operations[0].table",
            "does not exist",
        ),
        (
            json!([{"op": "rename_column", "table": "orders", "from": "nope", "to": "x"}]),
            "operations[0].from",
            "does not exist",
        ),
        (
            json!([{"op": "add_column", "table": "orders", "column": {"name": long, "type": "text"}}]),
            "operations[0].column.name",
            "PostgreSQL truncates",
        ),
        (
            json!([{"op": "add_column", "table": "orders", "column": {"name": "Total", "type": "text"}}]),
            "operations[0].column.name",
            "would need quoting",
        ),
        (
            json!([{"op": "rename_table", "from": "orders", "to": "order"}]),
            "operations[0].to",
            "reserves",
        ),
        (
            json!([
                {"op": "change_type", "table": "orders", "column": "amount", "type": "numeric", "up": "amount::numeric", "down": "amount::text"},
                {"op": "rename_column", "table": "orders", "from": "amount", "to": "total"}
            ]),
            "operations[1].from",
            "conflicts with operations[0]",
        ),
        (
            json!([{"op": "add_check", "table": "orders", "name": "c", "check": "true); DROP TABLE app.orders; --"}]),
            "operations[0].check",
            "without ';'",
        ),
        (
            json!([{"op": "change_type", "table": "orders", "column": "id", "type": "text", "up": "id::text", "down": "id::bigint"}]),
            "operations[0].column",
            "primary key",
        ),
    ];
    for (ops, field, message) in cases {
        let errors = problems(ops.clone()).await;
        assert_eq!(at(&errors), vec![field.to_owned()], "{ops}: {errors:?}");
        assert!(
            errors[0].to_string().contains(message),
            "{ops}: {:?} does not say {message:?}",
            errors[0].to_string()
        );
    }
    // Several bad operations: every one is reported, not only the first.
    let errors = problems(json!([
        {"op": "drop_table", "table": "nope"},
        {"op": "create_index", "table": "orders", "name": "orders_note_idx", "columns": ["note"]},
        {"op": "drop_index", "name": "missing_idx"}
    ]))
    .await;
    assert_eq!(
        at(&errors),
        [
            "operations[0].table",
            "operations[1].name",
            "operations[2].name"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_gives_up_after_its_lock_timeouts_without_holding_writers_longer() {
    let fx = fixture(
        "locked",
        json!([{"op": "add_column", "table": "orders", "column": {"name": "cents", "type": "bigint"},
                "up": "round(amount::numeric * 100)::bigint"}]),
    )
    .await;
    let mut plan = fx.plan.clone();
    plan["lock_timeout_ms"] = json!(300);
    plan["ddl_attempts"] = json!(3);
    let before = fx.snapshot().await;
    // A long reader: its ACCESS SHARE lock conflicts with any ALTER TABLE.
    let mut long = sqlx::PgConnection::connect(fx.url()).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE app.orders IN ACCESS SHARE MODE")
        .execute(&mut long)
        .await
        .unwrap();
    let runner = ferry_schema::runner::open(fx.pool.clone(), &fx.m, &plan)
        .await
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let writer = async {
        let mut conn = fx.client(false).await;
        let (mut worst, mut writes) = (Duration::ZERO, 0);
        let mut id = 5000;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            sqlx::query("INSERT INTO orders (tenant_id, id, amount) VALUES (2, $1, '1.00')")
                .bind(id)
                .execute(&mut conn)
                .await
                .unwrap();
            worst = worst.max(t.elapsed());
            writes += 1;
            id += 1;
        }
        (worst, writes)
    };
    let start = async {
        let result = runner.start().await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    };
    let (result, (worst, writes)) = tokio::join!(start, writer);
    match result {
        Err(SchemaError::LockTimeout {
            attempts,
            lock_timeout_ms,
            ..
        }) => {
            assert_eq!((attempts, lock_timeout_ms), (3, 300));
        }
        other => panic!("expected a lock timeout, got {other:?}"),
    }
    assert!(writes > 3, "the writer kept writing: {writes} writes");
    assert!(
        worst < Duration::from_millis(600),
        "a writer waited {worst:?}, more than one lock_timeout (300 ms) and its margin"
    );
    assert_eq!(
        fx.snapshot().await,
        before,
        "a refused start changed the catalogue"
    );
    assert_eq!(
        runner.state().await.unwrap(),
        Some(MigrationState::Starting)
    );
    // The long transaction ends: the same command finishes.
    sqlx::raw_sql("ROLLBACK").execute(&mut long).await.unwrap();
    runner.start().await.unwrap();
    assert_eq!(runner.state().await.unwrap(), Some(MigrationState::Started));
}
