//! `kill -9` the real `ferry tier run` while it archives, while it applies the update buffer
//! and while it deletes hot copies, many times; each rerun picks up where the last commit
//! left off, and at the end the tiers' union is exactly the expected rows: every key once,
//! with its last image.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ferry_domain::{MigrationId, TenantId};
use ferry_testkit::{TempDir, TestDb};

use crate::{ferry, ok};

const ROWS: i64 = 30_000;

fn day(d: i64) -> String {
    (chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z").unwrap()
        + chrono::Duration::days(d))
    .to_rfc3339()
}

/// Runs `ferry tier run` with `args`, killing it after a random delay until a run finishes
/// by itself; returns the kills. The delays grow with each kill, so a step whose every run
/// redoes some work (reading each segment's keys) still gets to finish.
fn kill_until_done(store: &str, url: &str, args: &[&str], seed: &mut u64) -> u32 {
    let mut kills = 0;
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{kills} kills in 3 minutes"
        );
        let mut child = ferry(store)
            .args([
                "tier",
                "run",
                "events_tier",
                "--tenant",
                "acme",
                "--hot-url",
                url,
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        // This runs on a blocking thread (spawn_blocking), not a runtime worker.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(
            1 + *seed % (60 + 100 * u64::from(kills)),
        ));
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "a run ended with {status}");
                return kills;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_tiering_runs_resume_to_exact_tiers() {
    let data = TestDb::new().await;
    let pool = sqlx::PgPool::connect(data.url()).await.unwrap();
    sqlx::query(
        "CREATE TABLE public.events (tenant_id text NOT NULL, id bigint NOT NULL, note text NOT NULL,
             at timestamptz NOT NULL, PRIMARY KEY (tenant_id, id))",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO public.events SELECT t, i, repeat('x', 60) || i,
             timestamptz '2020-01-01 00:00:00+00' + (i / 50) * interval '1 day' - interval '1 hour'
         FROM unnest(ARRAY['acme', 'globex']) AS t, generate_series(1, $1) AS i",
    )
    .bind(ROWS)
    .execute(&pool)
    .await
    .unwrap();
    let dir = TempDir::new("tier-kill");
    let store = format!("sqlite://{}", dir.path().join("ferry.db").display());
    let config = serde_json::json!({
        "table": "events", "tenant_column": "tenant_id", "age_column": "at",
        "cold_url": format!("file://{}", dir.path().join("cold").display()),
    })
    .to_string();
    let url = data.url().to_owned();
    let (s, u) = (store.clone(), url.clone());
    let kills = tokio::task::spawn_blocking(move || {
        let (store, url) = (s, u);
        ok(ferry(&store).args([
            "migration",
            "create",
            "events_tier",
            "--kind",
            "tiering",
            "--config",
            &config,
        ]));
        ok(ferry(&store).args([
            "tenant",
            "add",
            "events_tier",
            &format!("acme={ROWS}"),
            "globex=1",
        ]));
        ok(ferry(&store).args(["tenant", "advance", "events_tier", "acme"]));
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut kills = 0;
        // Archiving: a window per run (the day of row i is i / 50), killed anywhere.
        for d in (15..=600).step_by(15) {
            kills += kill_until_done(&store, &url, &["--cutoff", &day(d)], &mut seed);
        }
        kills
    })
    .await
    .unwrap();

    // The application (simulated, as TieredTable does in dual_write) changes archived rows:
    // the hot table first, then the buffer. Updates of the even ids up to 3000, deletes of
    // every 7th.
    let control = ferry_store::open(&store, &ferry_store::StoreOptions::default())
        .await
        .unwrap();
    let m = MigrationId::new("events_tier").unwrap();
    let acme = TenantId::new("acme").unwrap();
    let mut expected: BTreeMap<i64, Option<String>> = (1..=ROWS)
        .map(|i| (i, Some(format!("{}{i}", "x".repeat(60)))))
        .collect();
    for i in (2..=3000).step_by(2) {
        let at: String = sqlx::query_scalar(
            "SELECT at::text FROM public.events WHERE tenant_id = 'acme' AND id = $1",
        )
        .bind(i)
        .fetch_one(&pool)
        .await
        .unwrap();
        let image = serde_json::json!({"tenant_id": "acme", "id": i, "note": format!("updated {i}"), "at": at});
        sqlx::query("UPDATE public.events SET note = $2 WHERE tenant_id = 'acme' AND id = $1")
            .bind(i)
            .bind(format!("updated {i}"))
            .execute(&pool)
            .await
            .unwrap();
        control
            .enqueue_update(&m, &acme, &format!("[\"{i}\"]"), "upsert", &image)
            .await
            .unwrap();
        expected.insert(i, Some(format!("updated {i}")));
    }
    for i in (7..=3000).step_by(7) {
        sqlx::query("DELETE FROM public.events WHERE tenant_id = 'acme' AND id = $1")
            .bind(i)
            .execute(&pool)
            .await
            .unwrap();
        control
            .enqueue_update(
                &m,
                &acme,
                &format!("[\"{i}\"]"),
                "delete",
                &serde_json::Value::Null,
            )
            .await
            .unwrap();
        expected.insert(i, None);
    }
    let (s, u) = (store.clone(), url.clone());
    let kills = kills
        + tokio::task::spawn_blocking(move || {
            let (store, url) = (s, u);
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
            // Applying the buffer (segments rewritten), killed anywhere.
            let mut kills = kill_until_done(&store, &url, &[], &mut seed);
            // Then on to target_only, and hot copies deleted 100 at a time, killed anywhere.
            for _ in 0..3 {
                ok(ferry(&store).args(["tenant", "advance", "events_tier", "acme"]));
            }
            kills += kill_until_done(&store, &url, &["--delete-batch", "100"], &mut seed);
            kills
        })
        .await
        .unwrap();
    eprintln!("{kills} kills");
    assert!(kills >= 20, "only {kills} kills");

    // The tiers' union: archived ids (up to day 600: ids below 30,000) live in the segments
    // only, each once; the rest are hot only; nothing pending.
    assert!(control.pending_updates(&m, &acme).await.unwrap().is_empty());
    let tiering = ferry_tier::Tiering::open(control.clone(), &m, pool.clone())
        .await
        .unwrap();
    let mut cold: BTreeMap<i64, String> = BTreeMap::new();
    for s in control.segments(&m, &acme).await.unwrap() {
        for batch in tiering
            .cold
            .read(&object_store::path::Path::from(s.path.as_str()))
            .await
            .unwrap()
        {
            for row in 0..batch.num_rows() {
                let image = tiering.hot.normalize(&batch, row).await.unwrap();
                let id = image["id"].as_i64().unwrap();
                let note = image["note"].as_str().unwrap().to_owned();
                assert!(cold.insert(id, note).is_none(), "id {id} in two segments");
            }
        }
    }
    let hot: BTreeMap<i64, String> = sqlx::query_as::<_, (i64, String)>(
        "SELECT id, note FROM public.events WHERE tenant_id = 'acme'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for (id, want) in &expected {
        let got = match (cold.get(id), hot.get(id)) {
            (Some(_), Some(_)) => panic!("id {id} in both tiers"),
            (c, h) => c.or(h).cloned(),
        };
        assert_eq!(&got, want, "id {id}");
    }
    assert!(cold.len() > 25_000, "{} archived", cold.len());
    let globex: i64 =
        sqlx::query_scalar("SELECT count(*) FROM public.events WHERE tenant_id = 'globex'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(globex, ROWS, "the other tenant is untouched");
    // Nothing is left for garbage collection but what the last run already collected.
    assert!(
        control
            .garbage_segments(&m, Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );
}
