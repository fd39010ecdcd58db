//! The copier's crash points: `ferry copy run` crashed in the middle of its run, then run
//! again. The second run resumes at the checkpoint and copies only what was left; at most the
//! one batch between a commit and its checkpoint is written twice, which changes nothing.

use std::process::Command;

use ferry_testkit::{TempDir, TestDb};
use sqlx::PgPool;

use crate::{checkpoint, crash, ferry, ok, phase};

pub const MIGRATION: &str = "orders_move";
/// Rows per tenant: `acme` moves, `globex` stands by and must never be touched.
pub const ROWS: u64 = 3000;
pub const MAX_BATCH: u64 = 300;

/// A composite key, NULLs in every nullable column, empty strings beside NULLs, arrays,
/// times and numerics.
const ORDERS: &str = "
CREATE TABLE public.orders (
    tenant_id text NOT NULL,
    id bigint NOT NULL,
    amount numeric(12,2),
    note text,
    tags text[],
    placed_at timestamptz,
    version bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO public.orders (tenant_id, id, amount, note, tags, placed_at)
SELECT t, i,
    CASE WHEN i % 7 = 0 THEN NULL ELSE i * 0.25 END,
    CASE WHEN i % 5 = 0 THEN NULL WHEN i % 11 = 0 THEN '' ELSE 'order ' || i END,
    CASE WHEN i % 3 = 0 THEN NULL ELSE ARRAY['a', 'b' || i] END,
    CASE WHEN i % 13 = 0 THEN NULL ELSE timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute' END
FROM unnest(ARRAY['acme', 'globex']) AS t, generate_series(1, {rows}) AS i;
";

/// A tenant move of `public.orders` to `moved.orders`, in the same database or another one,
/// with a SQLite or PostgreSQL control store.
pub struct CopyWorld {
    pub rt: tokio::runtime::Runtime,
    pub source: TestDb,
    pub target: Option<TestDb>,
    pub pool: PgPool,
    pub target_pool: PgPool,
    pub dir: TempDir,
    pub store: String,
    /// Rows per tenant.
    pub rows: u64,
}

impl CopyWorld {
    pub fn new(cross_database: bool, pg_store: bool) -> CopyWorld {
        CopyWorld::with_rows(ROWS, cross_database, pg_store)
    }

    pub fn with_rows(rows: u64, cross_database: bool, pg_store: bool) -> CopyWorld {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (source, target, pool, target_pool) = rt.block_on(async {
            let source = TestDb::new().await;
            let pool = PgPool::connect(source.url()).await.unwrap();
            let orders = ORDERS.replace("{rows}", &rows.to_string());
            sqlx::raw_sql(sqlx::AssertSqlSafe(orders))
                .execute(&pool)
                .await
                .unwrap();
            let target = if cross_database {
                Some(TestDb::new().await)
            } else {
                None
            };
            let target_pool = match &target {
                Some(t) => PgPool::connect(t.url()).await.unwrap(),
                None => pool.clone(),
            };
            (source, target, pool, target_pool)
        });
        let dir = TempDir::new("crash-copy");
        let store = if pg_store {
            source.url().to_owned()
        } else {
            format!("sqlite://{}", dir.path().join("ferry.db").display())
        };
        let w = CopyWorld {
            rt,
            source,
            target,
            pool,
            target_pool,
            dir,
            store,
            rows,
        };
        w.create_migration();
        w
    }

    fn create_migration(&self) {
        let config = serde_json::json!({
            "source": {"schema": "public", "table": "orders"},
            "target": {"schema": "moved", "table": "orders"},
            "tenant_column": "tenant_id",
            "version_column": "version",
            "copy": {"min_batch": 100, "max_batch": MAX_BATCH, "start_batch": 200, "target_batch_ms": 2000}
        })
        .to_string();
        ok(self.ferry().args([
            "migration",
            "create",
            MIGRATION,
            "--kind",
            "tenant-move",
            "--config",
            &config,
        ]));
        ok(self.ferry().args([
            "tenant",
            "add",
            MIGRATION,
            &format!("acme={}", self.rows),
            &format!("globex={}", self.rows),
        ]));
    }

    pub fn ferry(&self) -> Command {
        ferry(&self.store)
    }

    /// `ferry copy run` of `acme`, creating the target table if missing.
    pub fn copy_run(&self) -> Command {
        let mut cmd = self.ferry();
        cmd.args([
            "copy",
            "run",
            MIGRATION,
            "--tenant",
            "acme",
            "--create-target",
            "--source-url",
            self.source.url(),
        ]);
        if let Some(t) = &self.target {
            cmd.args(["--target-url", t.url()]);
        }
        cmd
    }

    pub fn verify(&self) -> Command {
        let mut cmd = self.ferry();
        cmd.args([
            "verify",
            MIGRATION,
            "acme",
            "--source-url",
            self.source.url(),
        ]);
        if let Some(t) = &self.target {
            cmd.args(["--target-url", t.url()]);
        }
        cmd
    }

    pub fn change(&self, action: &str, from: &str) -> String {
        ok(self.ferry().args([
            "tenant",
            action,
            MIGRATION,
            "acme",
            "--from-phase",
            from,
            "--wait",
            "0",
        ]))
    }

    pub fn phase(&self) -> String {
        phase(&self.store, MIGRATION, "acme")
    }

    pub fn checkpoint(&self, direction: &str) -> Option<u64> {
        checkpoint(&self.store, MIGRATION, "acme", direction)
    }

    pub fn sql(&self, pool: &PgPool, sql: &str) {
        self.rt.block_on(async {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(pool)
                .await
                .unwrap()
        });
    }

    /// The tenant's rows on one side, each as its row text, in key order.
    pub fn rows(&self, pool: &PgPool, schema: &str, tenant: &str) -> Vec<String> {
        let sql = format!(
            "SELECT o::text FROM {schema}.orders o WHERE tenant_id = $1 ORDER BY tenant_id, id"
        );
        self.rt.block_on(async {
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(format!("{schema}.orders"))
                .fetch_one(pool)
                .await
                .unwrap();
            if !exists {
                return Vec::new();
            }
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .fetch_all(pool)
                .await
                .unwrap()
        })
    }

    /// Rows of `acme` in the target now.
    pub fn target_count(&self) -> u64 {
        self.rows(&self.target_pool, "moved", "acme").len() as u64
    }

    /// Source and target hold the same rows of `acme`, row by row, each key once; `globex`
    /// never reached the target.
    pub fn assert_exact(&self) {
        let source = self.rows(&self.pool, "public", "acme");
        let target = self.rows(&self.target_pool, "moved", "acme");
        assert_no_duplicates(&target);
        let diffs = diff_count(&source, &target);
        assert_eq!(diffs, 0, "{diffs} rows differ between source and target");
        assert!(self.rows(&self.target_pool, "moved", "globex").is_empty());
    }
}

/// Rows in one list and not the other, both ways (as multisets).
pub fn diff_count(a: &[String], b: &[String]) -> usize {
    let mut counts = std::collections::HashMap::<&str, i64>::new();
    for r in a {
        *counts.entry(r).or_default() += 1;
    }
    for r in b {
        *counts.entry(r).or_default() -= 1;
    }
    counts.values().map(|c| c.unsigned_abs() as usize).sum()
}

/// Row texts begin `(tenant,id,`: no key twice.
pub fn assert_no_duplicates(rows: &[String]) {
    let mut keys: Vec<&str> = rows
        .iter()
        .map(|r| {
            let second = r.match_indices(',').nth(1).map_or(r.len(), |(i, _)| i);
            &r[..second]
        })
        .collect();
    let all = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(all, keys.len(), "{} duplicate keys", all - keys.len());
}

/// 1234567 as `output::count` prints it: 1,234,567.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Crashes the forward copy at the third visit of `point`, checks what the crash left, runs
/// the copy again and checks it copied exactly what was left, then the target row by row.
fn crash_forward(point: &str, cross_database: bool) {
    let w = CopyWorld::new(cross_database, false);
    w.change("advance", "legacy");
    let trace = w.dir.path().join("trace");
    crash(&mut w.copy_run(), point, 3, &trace);
    let checkpointed = w.checkpoint("forward").unwrap_or(0);
    let written = w.target_count();
    assert!(checkpointed > 0 && checkpointed < ROWS, "{checkpointed}");
    if point == "copy_after_commit" {
        // The one batch committed after the checkpoint: written again by the next run.
        assert!(
            written > checkpointed && written - checkpointed <= MAX_BATCH,
            "{written} rows written, {checkpointed} checkpointed"
        );
    } else {
        assert_eq!(written, checkpointed, "nothing beyond the checkpoint");
    }
    let out = ok(&mut w.copy_run());
    let line = format!(
        "acme: forward copy complete: {} rows (resumed after {} checkpointed)",
        thousands(ROWS - checkpointed),
        thousands(checkpointed)
    );
    assert!(out.contains(&line), "{line} in {out}");
    assert_eq!(w.checkpoint("forward"), Some(ROWS), "checkpoint moved on");
    w.assert_exact();
    ok(&mut w.verify());
}

#[test]
fn crash_at_copy_batch_start() {
    crash_forward("copy_batch_start", false);
}

#[test]
fn crash_at_copy_before_commit() {
    crash_forward("copy_before_commit", false);
}

#[test]
fn crash_at_copy_before_commit_across_databases() {
    crash_forward("copy_before_commit", true);
}

#[test]
fn crash_at_copy_after_commit() {
    crash_forward("copy_after_commit", false);
}

#[test]
fn crash_at_copy_after_commit_across_databases() {
    crash_forward("copy_after_commit", true);
}

#[test]
fn crash_at_copy_after_checkpoint() {
    crash_forward("copy_after_checkpoint", false);
}

/// A tenant in `target_only` whose target took writes the source never saw: updates (some
/// to NULL), inserts and deletes.
fn in_target_only_with_new_writes(w: &CopyWorld) {
    w.change("advance", "legacy");
    ok(&mut w.copy_run());
    for from in ["dual_write", "shadow", "target_primary"] {
        w.change("advance", from);
    }
    assert_eq!(w.phase(), "target_only");
    w.sql(
        &w.target_pool,
        "UPDATE moved.orders SET note = CASE WHEN id % 2 = 0 THEN NULL ELSE 'changed ' || id END,
             amount = amount + 1, version = version + 1
         WHERE tenant_id = 'acme' AND id % 4 = 1;
         DELETE FROM moved.orders WHERE tenant_id = 'acme' AND id % 9 = 2;
         INSERT INTO moved.orders (tenant_id, id, amount, note, tags, placed_at, version)
         SELECT 'acme', i, NULL, 'new ' || i, NULL, NULL, 1 FROM generate_series(3001, 3400) AS i;",
    );
}

/// A rollback from `target_only`: the reverse copy walks the target back into the source,
/// crashed between a batch's commit and its checkpoint, and then run to the end.
#[test]
fn crash_at_rollback_walk() {
    let w = CopyWorld::new(false, false);
    in_target_only_with_new_writes(&w);
    ok(w.ferry().args([
        "tenant",
        "rollback",
        MIGRATION,
        "acme",
        "--one-step",
        "--wait",
        "0",
    ]));
    assert_eq!(w.phase(), "target_primary");
    let trace = w.dir.path().join("trace");
    crash(&mut w.copy_run(), "rollback_walk", 2, &trace);
    let checkpointed = w.checkpoint("reverse").unwrap_or(0);
    assert!(checkpointed > 0, "the first reverse batch was checkpointed");
    let out = ok(&mut w.copy_run());
    assert!(
        out.contains(&format!(
            "(resumed after {} checkpointed)",
            thousands(checkpointed)
        )),
        "{out}"
    );
    assert!(w.checkpoint("reverse").unwrap() > checkpointed);
    w.assert_exact();
    // Authority may return to the source now, and on to legacy.
    ok(w.ferry()
        .args(["tenant", "rollback", MIGRATION, "acme", "--wait", "0"]));
    assert_eq!(w.phase(), "legacy");
}
