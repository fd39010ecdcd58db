//! `kill -9` the real `ferry copy run` at random points, many times; each restart resumes from
//! the checkpoint, and the final target equals the source with no duplicate or missing key.

use std::process::Stdio;
use std::time::{Duration, Instant};

use ferry_testkit::{TempDir, TestDb};

use crate::{ferry, ok};

const ORDERS: &str = "
CREATE TABLE public.orders (
    tenant_id text NOT NULL,
    id bigint NOT NULL,
    amount numeric(12,2) NOT NULL,
    note text,
    version bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO public.orders (tenant_id, id, amount, note)
SELECT t, i, i * 0.5, repeat('x', 40) || i
FROM unnest(ARRAY['acme', 'globex']) AS t, generate_series(1, 40000) AS i;
";

async fn digest(pool: &sqlx::PgPool, schema: &str, tenant: &str) -> (i64, i64, String) {
    let sql = format!(
        "SELECT count(*), count(DISTINCT id), coalesce(md5(string_agg(o::text, '|' ORDER BY id)), '')
         FROM {schema}.orders o WHERE tenant_id = $1"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_copies_resume_to_an_exact_target() {
    let data = TestDb::new().await;
    let pool = sqlx::PgPool::connect(data.url()).await.unwrap();
    sqlx::raw_sql(ORDERS).execute(&pool).await.unwrap();
    let dir = TempDir::new("kill");
    let store = format!("sqlite://{}", dir.path().join("ferry.db").display());
    let config = serde_json::json!({
        "source": {"schema": "public", "table": "orders"},
        "target": {"schema": "moved", "table": "orders"},
        "tenant_column": "tenant_id",
        "version_column": "version",
        "copy": {"min_batch": 100, "max_batch": 400, "start_batch": 200, "target_batch_ms": 30}
    })
    .to_string();
    let globex_before = digest(&pool, "public", "globex").await;
    let url = data.url().to_owned();
    let store2 = store.clone();
    let kills = tokio::task::spawn_blocking(move || {
        let store = store2;
        ok(ferry(&store).args([
            "migration",
            "create",
            "orders_move",
            "--kind",
            "tenant-move",
            "--config",
            &config,
        ]));
        ok(ferry(&store).args(["tenant", "add", "orders_move", "acme=40000", "globex=40000"]));
        ok(ferry(&store).args(["tenant", "advance", "orders_move", "acme"]));
        // Slow enough that a run lasts a while and is cut at many different points.
        ok(ferry(&store).args(["copy", "throttle", "orders_move", "--rows-per-s", "4000"]));
        let mut kills = 0;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let started = Instant::now();
        while kills < 24 {
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "only {kills} kills in 4 minutes"
            );
            let mut child = ferry(&store)
                .args([
                    "copy",
                    "run",
                    "orders_move",
                    "--tenant",
                    "acme",
                    "--create-target",
                    "--source-url",
                    &url,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Anywhere from start-up (connecting, planning) to deep inside a batch.
            // This closure runs on a blocking thread (spawn_blocking), not a runtime worker.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(40 + x % 260));
            match child.try_wait().unwrap() {
                Some(status) => {
                    assert!(status.success(), "a run ended on its own with {status}");
                    break;
                }
                None => {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                }
            }
        }
        ok(ferry(&store).args(["copy", "throttle", "orders_move", "--rows-per-s", "0"]));
        let out = ok(ferry(&store).args([
            "copy",
            "run",
            "orders_move",
            "--tenant",
            "acme",
            "--source-url",
            &url,
        ]));
        assert!(
            out.contains("acme: forward copy complete") || out.contains("already complete"),
            "{out}"
        );
        kills
    })
    .await
    .unwrap();
    assert!(kills >= 20, "{kills} kills");
    let source = digest(&pool, "public", "acme").await;
    let target = digest(&pool, "moved", "acme").await;
    assert_eq!(source, target, "after {kills} kills");
    assert_eq!(target.0, target.1, "no duplicate keys");
    assert_eq!(target.0, 40000);
    assert_eq!(digest(&pool, "public", "globex").await, globex_before);
    assert_eq!(digest(&pool, "moved", "globex").await.0, 0);
    let status = ok(ferry(&store).args(["copy", "status", "orders_move", "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status[0]["complete"], true);
    assert_eq!(status[0]["rows_done"], 40000);
}
