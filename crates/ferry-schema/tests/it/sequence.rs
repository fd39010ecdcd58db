//! Thirty operations, one migration each, applied one after another on a live table while a
//! writer keeps inserting and updating: each is started, rolled back (the catalogue exactly
//! as before), started again, backfilled, moved to `target_only` and completed.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use serde_json::{Value, json};

use super::fixture::fixture;

fn operations() -> Vec<Value> {
    vec![
        json!({"op": "add_column", "table": "orders", "column": {"name": "a1", "type": "text"}, "up": "note || '!'"}),
        json!({"op": "create_index", "table": "orders", "name": "orders_a1_idx", "columns": ["a1"]}),
        json!({"op": "rename_column", "table": "orders", "from": "a1", "to": "b1"}),
        json!({"op": "set_default", "table": "orders", "column": "b1", "default": "'x'"}),
        json!({"op": "set_not_null", "table": "orders", "column": "b1", "up": "coalesce(b1, 'none')"}),
        json!({"op": "drop_not_null", "table": "orders", "column": "b1", "down": "coalesce(b1, 'none')"}),
        json!({"op": "drop_default", "table": "orders", "column": "b1"}),
        json!({"op": "change_type", "table": "orders", "column": "amount", "type": "numeric(12,2)", "up": "amount::numeric(12,2)", "down": "amount::text"}),
        json!({"op": "change_type", "table": "orders", "column": "amount", "type": "text", "up": "amount::text", "down": "amount::numeric(12,2)"}),
        json!({"op": "add_check", "table": "orders", "name": "orders_legacy_ok", "check": "legacy >= 0"}),
        json!({"op": "drop_constraint", "table": "orders", "name": "orders_legacy_ok"}),
        json!({"op": "add_unique", "table": "customers", "name": "customers_name_key", "columns": ["tenant_id", "name"]}),
        json!({"op": "drop_constraint", "table": "customers", "name": "customers_name_key"}),
        json!({"op": "create_table", "table": "audit", "primary_key": ["tenant_id", "id"], "columns": [
            {"name": "tenant_id", "type": "bigint", "nullable": false}, {"name": "id", "type": "bigint", "nullable": false},
            {"name": "msg", "type": "text"}]}),
        json!({"op": "add_column", "table": "audit", "column": {"name": "level", "type": "integer", "default": "0"}}),
        json!({"op": "rename_table", "from": "audit", "to": "audit_log"}),
        json!({"op": "add_foreign_key", "table": "audit_log", "name": "audit_customer_fkey", "columns": ["tenant_id", "id"],
            "references": {"table": "customers", "columns": ["tenant_id", "id"]}}),
        json!({"op": "drop_constraint", "table": "audit_log", "name": "audit_customer_fkey"}),
        json!({"op": "create_enum", "name": "priority", "values": ["low", "high"]}),
        json!({"op": "add_enum_value", "type": "priority", "value": "mid"}),
        json!({"op": "add_column", "table": "orders", "column": {"name": "prio", "type": "app.priority"}}),
        json!({"op": "drop_column", "table": "orders", "column": "prio"}),
        json!({"op": "drop_table", "table": "audit_log"}),
        json!({"op": "raw_sql", "up": "CREATE FUNCTION app.twice(x integer) RETURNS integer LANGUAGE sql AS 'SELECT x * 2'",
            "down": "DROP FUNCTION app.twice(integer)"}),
        json!({"op": "drop_index", "name": "orders_note_idx"}),
        json!({"op": "create_index", "table": "orders", "name": "orders_note_idx2", "columns": ["note"]}),
        json!({"op": "add_column", "table": "orders", "column": {"name": "email_domain", "type": "text"}, "up": "split_part(email, '@', 2)"}),
        json!({"op": "drop_column", "table": "orders", "column": "email_domain"}),
        json!({"op": "rename_column", "table": "orders", "from": "legacy", "to": "flags"}),
        json!({"op": "drop_not_null", "table": "orders", "column": "flags", "down": "coalesce(flags, 0)"}),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_operations_each_rolled_back_once_then_applied_under_writes() {
    let ops = operations();
    assert_eq!(ops.len(), 30);
    let mut fx = fixture("seq01", json!([ops[0].clone()])).await;
    let stop = AtomicBool::new(false);
    let inserted = AtomicI64::new(0);
    // The old version's writes, on columns no operation here changes.
    let mut conn = fx.client(false).await;
    let writer = async {
        let mut id = 10_000i64;
        while !stop.load(Ordering::Relaxed) {
            sqlx::query("INSERT INTO orders (tenant_id, id, customer_id) VALUES (2, $1, 1)")
                .bind(id)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("insert {id}: {e}"));
            sqlx::query(
                "UPDATE orders SET customer_id = customer_id + 1 WHERE tenant_id = 2 AND id = $1",
            )
            .bind(id - 1)
            .execute(&mut conn)
            .await
            .unwrap();
            inserted.fetch_add(1, Ordering::Relaxed);
            id += 1;
            tokio::task::yield_now().await;
        }
    };
    let migrations = async {
        for (n, op) in ops.iter().enumerate() {
            fx.reuse_for(&format!("seq{:02}", n + 1), json!([op])).await;
            let before = fx.snapshot().await;
            fx.runner()
                .await
                .start()
                .await
                .unwrap_or_else(|e| panic!("#{n} start: {e}"));
            fx.runner()
                .await
                .rollback()
                .await
                .unwrap_or_else(|e| panic!("#{n} rollback: {e}"));
            let mut after = fx.snapshot().await;
            if op["op"] == "add_enum_value" {
                let i = after
                    .iter()
                    .position(|l| l == "type priority low,high,mid")
                    .unwrap();
                after[i] = "type priority low,high".into();
            }
            assert_eq!(after, before, "#{n} {op}: catalogue after rollback");
            fx.runner()
                .await
                .start()
                .await
                .unwrap_or_else(|e| panic!("#{n} start again: {e}"));
            fx.backfill_all().await;
            fx.advance_to_target_only().await;
            fx.runner()
                .await
                .complete()
                .await
                .unwrap_or_else(|e| panic!("#{n} {op} complete: {e}"));
        }
        stop.store(true, Ordering::Relaxed);
    };
    tokio::join!(writer, migrations);
    let written = inserted.load(Ordering::Relaxed);
    assert!(written > 30, "the writer wrote only {written} rows");
    assert_eq!(
        fx.count("SELECT count(*) FROM app.orders WHERE tenant_id = 2")
            .await,
        40 + written,
        "rows lost under the sequence"
    );
    assert_eq!(
        fx.count("SELECT count(*) FROM app.orders WHERE tenant_id = 2 AND id >= 10000 AND customer_id IS NULL").await,
        0
    );
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'app' AND table_name = 'orders' ORDER BY ordinal_position",
    )
    .fetch_all(&fx.pool)
    .await
    .unwrap();
    assert_eq!(
        columns,
        [
            "tenant_id",
            "id",
            "email",
            "note",
            "status",
            "customer_id",
            "b1",
            "amount",
            "flags"
        ]
    );
}
