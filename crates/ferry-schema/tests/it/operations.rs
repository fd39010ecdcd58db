//! Every operation, twice: started, written by clients of both versions at once, then
//! completed (its effect checked, no row lost); and started, written, then rolled back
//! (the catalogue exactly as before, every row still there and unaltered).

use ferry_domain::Action;
use ferry_schema::runner::MigrationState;
use serde_json::json;
use sqlx::AssertSqlSafe;

use super::fixture::{Fx, fixture};

struct Case {
    name: &'static str,
    op: serde_json::Value,
    /// The new version's insert of order `{id}` of tenant 1.
    new_insert: &'static str,
    /// After `complete`: counts what is wrong (0 expected).
    wrong_after_complete: &'static str,
}

const OLD_INSERT: &str = "INSERT INTO orders (tenant_id, id, amount, email, note) VALUES (1, {id}, '{id}.25', NULL, 'old')";
const PLAIN_NEW_INSERT: &str = "INSERT INTO orders (tenant_id, id, amount, email, note) VALUES (1, {id}, '{id}.25', 'n@x.test', 'new')";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "add_column",
            op: json!({"op": "add_column", "table": "orders",
                "column": {"name": "amount_cents", "type": "bigint", "nullable": false},
                "up": "round(amount::numeric * 100)::bigint"}),
            new_insert: "INSERT INTO orders (tenant_id, id, amount, email, note, amount_cents) VALUES (1, {id}, '{id}.25', NULL, 'new', {id}25)",
            wrong_after_complete: "SELECT count(*) FROM app.orders WHERE amount_cents IS DISTINCT FROM round(amount::numeric * 100)::bigint",
        },
        Case {
            name: "drop_column",
            op: json!({"op": "drop_column", "table": "orders", "column": "legacy"}),
            new_insert: PLAIN_NEW_INSERT,
            wrong_after_complete: "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'app' AND table_name = 'orders' AND column_name = 'legacy'",
        },
        Case {
            name: "rename_column",
            op: json!({"op": "rename_column", "table": "orders", "from": "note", "to": "remark"}),
            new_insert: "INSERT INTO orders (tenant_id, id, amount, email, remark) VALUES (1, {id}, '{id}.25', NULL, 'new')",
            wrong_after_complete: "SELECT count(*) FROM app.orders WHERE remark IS NULL",
        },
        Case {
            name: "change_type",
            op: json!({"op": "change_type", "table": "orders", "column": "amount", "type": "numeric(12,2)",
                "up": "amount::numeric(12,2)", "down": "amount::text"}),
            new_insert: "INSERT INTO orders (tenant_id, id, amount, email, note) VALUES (1, {id}, {id}.25, NULL, 'new')",
            wrong_after_complete: "SELECT count(*) FROM app.orders WHERE amount IS NULL OR pg_typeof(amount)::text <> 'numeric'",
        },
        Case {
            name: "set_not_null",
            op: json!({"op": "set_not_null", "table": "orders", "column": "email",
                "up": "coalesce(email, 'unknown@x.test')"}),
            new_insert: PLAIN_NEW_INSERT,
            wrong_after_complete: "SELECT count(*) FROM app.orders WHERE email IS NULL",
        },
        Case {
            name: "drop_not_null",
            op: json!({"op": "drop_not_null", "table": "orders", "column": "legacy", "down": "coalesce(legacy, -1)"}),
            new_insert: "INSERT INTO orders (tenant_id, id, amount, email, note, legacy) VALUES (1, {id}, '{id}.25', NULL, 'new', NULL)",
            wrong_after_complete: "SELECT count(*) FROM pg_attribute WHERE attrelid = 'app.orders'::regclass AND attname = 'legacy' AND attnotnull",
        },
        Case {
            name: "set_default",
            op: json!({"op": "set_default", "table": "orders", "column": "note", "default": "'fresh'"}),
            new_insert: "INSERT INTO orders (tenant_id, id, amount, email) VALUES (1, {id}, '{id}.25', NULL)",
            wrong_after_complete: "SELECT count(*) FROM app.orders WHERE note IS NULL",
        },
        Case {
            name: "drop_default",
            op: json!({"op": "drop_default", "table": "orders", "column": "legacy"}),
            new_insert: "INSERT INTO orders (tenant_id, id, amount, email, note, legacy) VALUES (1, {id}, '{id}.25', NULL, 'new', 5)",
            wrong_after_complete: "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'app' AND table_name = 'orders' AND column_name = 'legacy' AND column_default IS NOT NULL",
        },
        Case {
            name: "add_unique",
            op: json!({"op": "add_unique", "table": "customers", "name": "customers_name_key", "columns": ["tenant_id", "name"]}),
            new_insert: PLAIN_NEW_INSERT,
            wrong_after_complete: "SELECT 1 - count(*) FROM pg_constraint WHERE conname = 'customers_name_key' AND contype = 'u'",
        },
        Case {
            name: "add_check",
            op: json!({"op": "add_check", "table": "orders", "name": "orders_legacy_positive", "check": "legacy >= 0"}),
            new_insert: PLAIN_NEW_INSERT,
            wrong_after_complete: "SELECT 1 - count(*) FROM pg_constraint WHERE conname = 'orders_legacy_positive' AND convalidated",
        },
        Case {
            name: "add_foreign_key",
            op: json!({"op": "add_foreign_key", "table": "orders", "name": "orders_customer_fkey",
                "columns": ["tenant_id", "customer_id"], "references": {"table": "customers", "columns": ["tenant_id", "id"]}}),
            new_insert: PLAIN_NEW_INSERT,
            wrong_after_complete: "SELECT 1 - count(*) FROM pg_constraint WHERE conname = 'orders_customer_fkey' AND convalidated",
        },
        Case {
            name: "drop_constraint",
            op: json!({"op": "drop_constraint", "table": "orders", "name": "orders_amount_len"}),
            new_insert: PLAIN_NEW_INSERT,
            wrong_after_complete: "SELECT count(*) FROM pg_constraint WHERE conname = 'orders_amount_len'",
        },
        Case {
            name: "create_index",
            op: json!({"op": "create_index", "table": "orders", "name": "orders_email_idx", "columns": ["email"]}),
            new_insert: PLAIN_NEW_INSERT,
            wrong_after_complete: "SELECT 1 - count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'orders_email_idx' AND i.indisvalid",
        },
        Case {
            name: "drop_index",
            op: json!({"op": "drop_index", "name": "orders_note_idx"}),
            new_insert: PLAIN_NEW_INSERT,
            wrong_after_complete: "SELECT count(*) FROM pg_class WHERE relname = 'orders_note_idx'",
        },
        Case {
            name: "create_enum",
            op: json!({"op": "create_enum", "name": "priority", "values": ["low", "high"]}),
            new_insert: PLAIN_NEW_INSERT,
            wrong_after_complete: "SELECT 1 - count(*) FROM pg_type WHERE typname = 'priority'",
        },
        Case {
            name: "add_enum_value",
            op: json!({"op": "add_enum_value", "type": "status", "value": "refunded"}),
            new_insert: "INSERT INTO orders (tenant_id, id, amount, email, note, status) VALUES (1, {id}, '{id}.25', NULL, 'new', 'refunded')",
            wrong_after_complete: "SELECT 1 - count(*) FROM pg_enum WHERE enumlabel = 'refunded'",
        },
        Case {
            name: "create_table",
            op: json!({"op": "create_table", "table": "audit_log", "primary_key": ["tenant_id", "id"],
                "columns": [{"name": "tenant_id", "type": "bigint", "nullable": false},
                            {"name": "id", "type": "bigint", "nullable": false},
                            {"name": "message", "type": "text"}]}),
            new_insert: PLAIN_NEW_INSERT,
            wrong_after_complete: "SELECT 1 - count(*) FROM pg_tables WHERE schemaname = 'app' AND tablename = 'audit_log'",
        },
        Case {
            name: "drop_table",
            op: json!({"op": "drop_table", "table": "customers"}),
            new_insert: PLAIN_NEW_INSERT,
            wrong_after_complete: "SELECT count(*) FROM pg_tables WHERE schemaname = 'app' AND tablename = 'customers'",
        },
        Case {
            name: "rename_table",
            op: json!({"op": "rename_table", "from": "customers", "to": "clients"}),
            new_insert: PLAIN_NEW_INSERT,
            wrong_after_complete: "SELECT 10 - count(*) FROM app.clients",
        },
        Case {
            name: "raw_sql",
            op: json!({"op": "raw_sql", "up": "CREATE FUNCTION app.twice(x integer) RETURNS integer LANGUAGE sql AS 'SELECT x * 2'",
                "down": "DROP FUNCTION app.twice(integer)"}),
            new_insert: PLAIN_NEW_INSERT,
            wrong_after_complete: "SELECT (4 - app.twice(2))::bigint",
        },
    ]
}

/// Both versions write at once: each inserts its own orders, updates them and the shared
/// ones, deletes every third of its own, and reads. Returns how many orders tenant 1 should
/// hold afterwards.
async fn write_with_both_versions(fx: &Fx, case: &Case) -> i64 {
    let old = async {
        let mut conn = fx.client(false).await;
        write(
            &mut conn,
            OLD_INSERT,
            1000,
            "UPDATE orders SET amount = '{id}.75' WHERE tenant_id = 1 AND id = {id}",
        )
        .await
    };
    let new = async {
        let mut conn = fx.client(true).await;
        write(
            &mut conn,
            case.new_insert,
            2000,
            "UPDATE orders SET email = 'u@x.test' WHERE tenant_id = 1 AND id = {shared}",
        )
        .await
    };
    let (old, new) = tokio::join!(old, new);
    40 + old + new
}

async fn write(conn: &mut sqlx::PgConnection, insert: &str, base: i64, update: &str) -> i64 {
    let mut kept = 0;
    for n in 0..24 {
        let id = base + n;
        let sql = |t: &str| {
            t.replace("{id}", &id.to_string())
                .replace("{shared}", &(n % 40 + 1).to_string())
        };
        sqlx::raw_sql(AssertSqlSafe(sql(insert)))
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", sql(insert)));
        sqlx::raw_sql(AssertSqlSafe(sql(update)))
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", sql(update)));
        if n % 3 == 0 {
            sqlx::raw_sql(AssertSqlSafe(sql(
                "DELETE FROM orders WHERE tenant_id = 1 AND id = {id}",
            )))
            .execute(&mut *conn)
            .await
            .unwrap();
        } else {
            kept += 1;
        }
        let seen: i64 =
            sqlx::query_scalar("SELECT count(*) FROM orders WHERE tenant_id = 1 AND id = $1")
                .bind(id)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(seen, i64::from(n % 3 != 0), "order {id} as read back");
    }
    kept
}

/// The columns no case changes, for every order: what a rollback must leave as it was.
const UNCHANGED: &str = "SELECT count(*) FROM (SELECT tenant_id, id, status, customer_id FROM app.orders
    WHERE id <= 40 EXCEPT SELECT t, i, CASE WHEN i % 3 = 0 THEN NULL ELSE 'new'::app.status END,
    CASE WHEN i % 4 = 0 THEN NULL ELSE i % 5 + 1 END FROM generate_series(1, 2) t, generate_series(1, 40) i) d";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_completes_while_both_versions_write() {
    for case in cases() {
        let fx = fixture(&format!("m_{}", case.name), json!([case.op])).await;
        fx.runner().await.start().await.unwrap();
        fx.backfill_all().await;
        let expected = write_with_both_versions(&fx, &case).await;
        fx.advance_to_target_only().await;
        let runner = fx.runner().await;
        runner
            .complete()
            .await
            .unwrap_or_else(|e| panic!("{}: complete: {e}", case.name));
        assert_eq!(
            runner.state().await.unwrap(),
            Some(MigrationState::Completed)
        );
        assert_eq!(
            fx.count(case.wrong_after_complete).await,
            0,
            "{}: after complete",
            case.name
        );
        assert_eq!(
            fx.count("SELECT count(*) FROM app.orders WHERE tenant_id = 1")
                .await,
            expected,
            "{}: tenant 1's orders",
            case.name
        );
        assert_eq!(
            fx.count("SELECT count(*) FROM app.orders WHERE tenant_id = 2")
                .await,
            40
        );
        assert_eq!(fx.count(UNCHANGED).await, 0, "{}: rows altered", case.name);
        assert_eq!(
            fx.count(&format!(
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'app_m_{}'",
                case.name
            ))
            .await,
            0,
            "{}: the version schema outlived complete",
            case.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_rolls_back_to_the_catalogue_it_started_from() {
    for case in cases() {
        let fx = fixture(&format!("r_{}", case.name), json!([case.op])).await;
        let before = fx.snapshot().await;
        let runner = fx.runner().await;
        runner
            .start()
            .await
            .unwrap_or_else(|e| panic!("{}: start: {e}", case.name));
        assert_ne!(
            fx.snapshot().await,
            before,
            "{}: start changed nothing",
            case.name
        );
        fx.backfill_all().await;
        let expected = write_with_both_versions(&fx, &case).await;
        fx.step_all(Action::Rollback).await;
        runner
            .rollback()
            .await
            .unwrap_or_else(|e| panic!("{}: rollback: {e}", case.name));
        let mut after = fx.snapshot().await;
        if case.name == "add_enum_value" {
            // PostgreSQL cannot remove an enum value: the one difference allowed.
            let i = after
                .iter()
                .position(|l| l == "type status new,paid,refunded")
                .unwrap();
            after[i] = "type status new,paid".into();
        }
        assert_eq!(after, before, "{}: catalogue after rollback", case.name);
        assert_eq!(
            fx.count("SELECT count(*) FROM app.orders WHERE tenant_id = 1")
                .await,
            expected,
            "{}: rows written during expand",
            case.name
        );
        assert_eq!(fx.count(UNCHANGED).await, 0, "{}: rows altered", case.name);
        assert_eq!(
            runner.state().await.unwrap(),
            Some(MigrationState::RolledBack)
        );
    }
}
