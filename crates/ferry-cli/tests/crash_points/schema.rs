//! The schema change's crash points: `ferry schema start`, `complete` and `rollback` crashed
//! after each step they commit (`schema_step_done`), run again until they finish, each step
//! run once; `ferry schema backfill` crashed between a batch's commit and its checkpoint
//! (`schema_backfill_batch`), run again to the end, every row holding `up(old)`.

use std::path::PathBuf;
use std::process::Command;

use ferry_testkit::{TempDir, TestDb};
use sqlx::PgPool;

use crate::{crash, ferry, ok, text, trace_lines};

const MIGRATION: &str = "orders_cents";
/// Rows per tenant: six batches of `BATCH`.
const ROWS: i64 = 3000;
const BATCH: i64 = 500;

const ORDERS: &str = "
CREATE TABLE public.orders (
    tenant_id bigint NOT NULL,
    id bigint NOT NULL,
    amount numeric(12,2),
    note text,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO public.orders (tenant_id, id, amount, note)
SELECT t, i, CASE WHEN i % 9 = 0 THEN NULL ELSE i * 0.25 END, 'n' || i
FROM generate_series(1, 2) AS t, generate_series(1, {rows}) AS i;
";

/// A NOT NULL column computed from `amount` (so `complete` validates and checks it before
/// its contract) and an index built concurrently on it: start, complete and rollback have
/// two steps or more.
fn plan() -> String {
    serde_json::json!({
        "schema": "public",
        "lock_timeout_ms": 1000,
        "backfill": {"min_batch": BATCH, "start_batch": BATCH, "max_batch": BATCH},
        "operations": [
            {"op": "add_column", "table": "orders",
             "column": {"name": "total_cents", "type": "bigint", "nullable": false},
             "up": "coalesce((amount * 100)::bigint, -1)"},
            {"op": "create_index", "table": "orders", "name": "orders_total_idx",
             "columns": ["tenant_id", "total_cents"]}
        ]
    })
    .to_string()
}

struct SchemaWorld {
    rt: tokio::runtime::Runtime,
    db: TestDb,
    pool: PgPool,
    dir: TempDir,
    store: String,
}

impl SchemaWorld {
    fn new() -> SchemaWorld {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (db, pool) = rt.block_on(async {
            let db = TestDb::new().await;
            let pool = PgPool::connect(db.url()).await.unwrap();
            let orders = ORDERS.replace("{rows}", &ROWS.to_string());
            sqlx::raw_sql(sqlx::AssertSqlSafe(orders))
                .execute(&pool)
                .await
                .unwrap();
            (db, pool)
        });
        let dir = TempDir::new("crash-schema");
        let store = format!("sqlite://{}", dir.path().join("ferry.db").display());
        let w = SchemaWorld {
            rt,
            db,
            pool,
            dir,
            store,
        };
        ok(w.ferry().args([
            "migration",
            "create",
            MIGRATION,
            "--kind",
            "schema-change",
            "--config",
            &plan(),
        ]));
        ok(w.ferry()
            .args(["tenant", "add", MIGRATION, "1=3000", "2=3000"]));
        w
    }

    fn ferry(&self) -> Command {
        ferry(&self.store)
    }

    fn schema(&self, action: &str, extra: &[&str]) -> Command {
        let mut cmd = self.ferry();
        cmd.args(["schema", action, MIGRATION, "--source-url", self.db.url()])
            .args(extra);
        cmd
    }

    fn trace(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn snapshot(&self) -> Vec<String> {
        self.rt
            .block_on(ferry_schema::catalogue::snapshot(&self.pool, "public"))
            .unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        self.rt
            .block_on(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&self.pool))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn state(&self) -> String {
        let status = ok(&mut self.schema("status", &["--json"]));
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        status["state"].as_str().unwrap().to_owned()
    }

    /// Every tenant one phase on.
    fn advance_all(&self, from: &str) {
        ok(self.ferry().args([
            "rollout",
            MIGRATION,
            "--all",
            "--from-phase",
            from,
            "--wait",
            "0",
        ]));
    }

    /// Runs `action` crashing after the first step it commits, again and again, until a run
    /// finishes without reaching the point; returns how many runs crashed. The first crash
    /// is checked by [`crash`] (exit 86, the point on stderr, the trace ending with it).
    fn crash_after_every_step(&self, action: &str, extra: &[&str]) -> usize {
        let trace = self.trace(&format!("{action}.trace"));
        crash(
            &mut self.schema(action, extra),
            "schema_step_done",
            1,
            &trace,
        );
        for crashes in 1..20 {
            let _ = std::fs::remove_file(&trace);
            let out = self
                .schema(action, extra)
                .env("FERRY_CRASH_AT", "schema_step_done")
                .env("FERRY_CRASH_TRACE", &trace)
                .output()
                .unwrap();
            match out.status.code() {
                Some(code) if code == ferry_crash::EXIT_CODE => {
                    assert_eq!(trace_lines(&trace), ["schema_step_done"]);
                }
                Some(0) => {
                    // (complete's last run goes on to phase changes, traced too)
                    assert!(
                        !trace_lines(&trace).iter().any(|p| p == "schema_step_done"),
                        "the last run ran no step"
                    );
                    let report = text(&out.stdout);
                    assert!(
                        report.contains("0 step(s) run") || report.contains("nothing to do"),
                        "{report}"
                    );
                    return crashes;
                }
                _ => panic!(
                    "{action} after {crashes} crash(es) failed ({}):\n{}\n{}",
                    out.status,
                    text(&out.stdout),
                    text(&out.stderr)
                ),
            }
        }
        panic!("{action} never finished");
    }
}

#[test]
fn start_crashed_after_each_step_finishes_when_run_again() {
    let w = SchemaWorld::new();
    let crashes = w.crash_after_every_step("start", &[]);
    assert_eq!(crashes, 2, "expand, then the index build");
    assert_eq!(w.state(), "started");
    assert_eq!(
        w.count(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE c.relname = 'orders_total_idx' AND i.indisvalid"
        ),
        1
    );
    assert_eq!(
        w.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'public_orders_cents'"),
        1
    );
    // Each step is recorded once.
    assert_eq!(
        w.count("SELECT count(*) FROM ferry_schema.steps WHERE action = 'start'"),
        2
    );
}

#[test]
fn a_crashed_backfill_resumes_and_every_row_holds_up_old() {
    let w = SchemaWorld::new();
    ok(&mut w.schema("start", &[]));
    w.advance_all("legacy");
    let trace = w.trace("backfill.trace");
    // Three batches committed, two checkpointed.
    crash(
        &mut w.schema("backfill", &["--tenant", "1"]),
        "schema_backfill_batch",
        3,
        &trace,
    );
    let written = w.count(
        "SELECT count(*) FROM public.orders WHERE tenant_id = 1 AND _ferry_new_total_cents IS NOT NULL",
    );
    assert_eq!(
        written,
        3 * BATCH,
        "three batches committed before the crash"
    );
    let out = ok(&mut w.schema("backfill", &["--tenant", "1"]));
    assert!(out.contains("1: backfill complete"), "{out}");
    assert_eq!(
        w.count(
            "SELECT count(*) FROM public.orders WHERE tenant_id = 1
             AND _ferry_new_total_cents IS DISTINCT FROM coalesce((amount * 100)::bigint, -1)"
        ),
        0,
        "every row of tenant 1 holds up(old)"
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM public.orders WHERE tenant_id = 2 AND _ferry_new_total_cents IS NOT NULL"
        ),
        0,
        "tenant 2 untouched"
    );
    let status = ok(w.ferry().args(["copy", "status", MIGRATION, "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status[0]["tenant"], "1");
    assert_eq!(status[0]["complete"], true);
    // The resumed run started at the checkpoint: the batch committed but not checkpointed
    // was written again (to the same values) and counted once.
    assert_eq!(status[0]["rows_done"], ROWS);
    assert_eq!(status[0]["rows_total"], ROWS);
}

#[test]
fn complete_crashed_after_each_step_finishes_when_run_again() {
    let w = SchemaWorld::new();
    ok(&mut w.schema("start", &[]));
    w.advance_all("legacy");
    ok(&mut w.schema("backfill", &[]));
    for from in ["dual_write", "shadow", "target_primary"] {
        w.advance_all(from);
    }
    let crashes = w.crash_after_every_step("complete", &[]);
    assert_eq!(
        crashes, 3,
        "validate not null, the backfill check, the contract"
    );
    assert_eq!(w.state(), "completed");
    assert_eq!(
        w.count(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders'
             AND column_name = 'total_cents' AND is_nullable = 'NO'"
        ),
        1
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM public.orders
             WHERE total_cents IS DISTINCT FROM coalesce((amount * 100)::bigint, -1)"
        ),
        0
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE c.relname = 'orders_total_idx' AND i.indisvalid"
        ),
        1
    );
    // The last run advanced the tenants (the crashed ones never reached that far).
    for tenant in ["1", "2"] {
        assert_eq!(crate::phase(&w.store, MIGRATION, tenant), "complete");
    }
}

#[test]
fn rollback_crashed_after_each_step_restores_the_catalogue() {
    let w = SchemaWorld::new();
    let before = w.snapshot();
    ok(&mut w.schema("start", &[]));
    w.advance_all("legacy");
    ok(&mut w.schema("backfill", &["--tenant", "2"]));
    assert_ne!(w.snapshot(), before);
    let crashes = w.crash_after_every_step("rollback", &[]);
    assert_eq!(crashes, 2, "the index drop, then the undo");
    assert_eq!(w.state(), "rolled_back");
    assert_eq!(w.snapshot(), before, "the catalogue as it was before start");
}
