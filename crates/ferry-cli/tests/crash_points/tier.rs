//! Tiering's crash points: `ferry tier run` crashed while archiving (segments uploaded, the
//! manifest not swapped), while applying the update buffer (changes rewritten into a new
//! segment, not marked applied) and while deleting archived rows' hot copies (a chunk
//! deleted, not committed), then run again. At the end every key is where its phase puts it,
//! once, with its last image: the tiers' union equals what the application wrote.

use std::collections::BTreeMap;
use std::process::Command;

use ferry_domain::{MigrationId, TenantId};
use ferry_testkit::{TempDir, TestDb};
use sqlx::PgPool;

use crate::{crash, ferry, ok};

pub const MIGRATION: &str = "events_tier";
pub const ROWS: i64 = 2000;

/// `day(d)`: the cutoff that archives ids below `50 * d` (the day of id i is i / 50).
pub fn day(d: i64) -> String {
    (chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z").unwrap()
        + chrono::Duration::days(d))
    .to_rfc3339()
}

/// A tiering of `public.events` (composite key, NULLs) with a SQLite control store.
pub struct TierWorld {
    pub rt: tokio::runtime::Runtime,
    pub data: TestDb,
    pub pool: PgPool,
    pub dir: TempDir,
    pub store: String,
}

impl TierWorld {
    pub fn new() -> TierWorld {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (data, pool) = rt.block_on(async {
            let data = TestDb::new().await;
            let pool = PgPool::connect(data.url()).await.unwrap();
            sqlx::raw_sql(
                "CREATE TABLE public.events (tenant_id text NOT NULL, id bigint NOT NULL,
                     note text, amount numeric(10,2), at timestamptz NOT NULL,
                     PRIMARY KEY (tenant_id, id));
                 INSERT INTO public.events
                 SELECT t, i, CASE WHEN i % 5 = 0 THEN NULL ELSE 'event ' || i END,
                     CASE WHEN i % 7 = 0 THEN NULL ELSE i / 4.0 END,
                     timestamptz '2020-01-01 00:00:00+00' + (i / 50) * interval '1 day' + interval '1 hour'
                 FROM unnest(ARRAY['acme', 'globex']) AS t, generate_series(1, 2000) AS i;",
            )
            .execute(&pool)
            .await
            .unwrap();
            (data, pool)
        });
        let dir = TempDir::new("crash-tier");
        let store = format!("sqlite://{}", dir.path().join("ferry.db").display());
        let w = TierWorld {
            rt,
            data,
            pool,
            dir,
            store,
        };
        let config = serde_json::json!({
            "table": "events", "tenant_column": "tenant_id", "age_column": "at",
            "cold_url": format!("file://{}", w.dir.path().join("cold").display()),
        })
        .to_string();
        ok(w.ferry().args([
            "migration",
            "create",
            MIGRATION,
            "--kind",
            "tiering",
            "--config",
            &config,
        ]));
        ok(w.ferry().args([
            "tenant",
            "add",
            MIGRATION,
            &format!("acme={ROWS}"),
            "globex=1",
        ]));
        w.advance_to("dual_write");
        w
    }

    pub fn ferry(&self) -> Command {
        ferry(&self.store)
    }

    /// Advances `acme` until it is in `phase`.
    pub fn advance_to(&self, phase: &str) {
        while crate::phase(&self.store, MIGRATION, "acme") != phase {
            ok(self
                .ferry()
                .args(["tenant", "advance", MIGRATION, "acme", "--wait", "0"]));
        }
    }

    /// `ferry tier run` for `acme`, with `args`.
    pub fn tier_run(&self, args: &[&str]) -> Command {
        let mut cmd = self.ferry();
        cmd.args([
            "tier",
            "run",
            MIGRATION,
            "--tenant",
            "acme",
            "--hot-url",
            self.data.url(),
        ])
        .args(args);
        cmd
    }

    pub fn sql(&self, sql: &str) {
        self.rt.block_on(async {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&self.pool)
                .await
                .unwrap()
        });
    }

    /// The application's change of an archived row in `dual_write` (as `TieredTable` makes
    /// it): the hot row first, then the change in the buffer; `None` deletes the row.
    pub fn change_archived(&self, id: i64, note: Option<&str>) {
        self.rt.block_on(async {
            let (operation, image) = match note {
                Some(note) => {
                    let image: String = sqlx::query_scalar(
                        "UPDATE public.events e SET note = $2 WHERE tenant_id = 'acme' AND id = $1
                         RETURNING to_jsonb(e)::text",
                    )
                    .bind(id)
                    .bind(note)
                    .fetch_one(&self.pool)
                    .await
                    .unwrap();
                    ("upsert", serde_json::from_str(&image).unwrap())
                }
                None => {
                    sqlx::query("DELETE FROM public.events WHERE tenant_id = 'acme' AND id = $1")
                        .bind(id)
                        .execute(&self.pool)
                        .await
                        .unwrap();
                    ("delete", serde_json::Value::Null)
                }
            };
            self.control()
                .await
                .enqueue_update(
                    &MigrationId::new(MIGRATION).unwrap(),
                    &TenantId::new("acme").unwrap(),
                    &format!("[\"{id}\"]"),
                    operation,
                    &image,
                )
                .await
                .unwrap();
        });
    }

    async fn control(&self) -> std::sync::Arc<dyn ferry_store::ControlStore> {
        ferry_store::open(&self.store, &ferry_store::StoreOptions::default())
            .await
            .unwrap()
    }

    /// Every archived row of `acme` by id, as a `to_jsonb` image; panics on a key in two
    /// live segments.
    pub fn cold(&self) -> BTreeMap<i64, serde_json::Value> {
        self.rt.block_on(async {
            let control = self.control().await;
            let m = MigrationId::new(MIGRATION).unwrap();
            let acme = TenantId::new("acme").unwrap();
            let tiering = ferry_tier::Tiering::open(control.clone(), &m, self.pool.clone())
                .await
                .unwrap();
            let mut cold = BTreeMap::new();
            for s in control.segments(&m, &acme).await.unwrap() {
                let path = object_store::path::Path::from(s.path.as_str());
                for batch in tiering.cold.read(&path).await.unwrap() {
                    for row in 0..batch.num_rows() {
                        let image = tiering.hot.normalize(&batch, row).await.unwrap();
                        let id = image["id"].as_i64().unwrap();
                        let image = serde_json::Value::Object(image);
                        assert!(cold.insert(id, image).is_none(), "id {id} twice in cold");
                    }
                }
            }
            cold
        })
    }

    /// Every hot row of `tenant` by id, as a `to_jsonb` image.
    pub fn hot(&self, tenant: &str) -> BTreeMap<i64, serde_json::Value> {
        self.rt.block_on(async {
            sqlx::query_as::<_, (i64, String)>(
                "SELECT id, to_jsonb(e)::text FROM public.events e WHERE tenant_id = $1",
            )
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, image)| (id, serde_json::from_str(&image).unwrap()))
            .collect()
        })
    }

    /// Pending or dead buffered changes of `acme`.
    pub fn pending(&self) -> usize {
        self.rt.block_on(async {
            self.control()
                .await
                .pending_updates(
                    &MigrationId::new(MIGRATION).unwrap(),
                    &TenantId::new("acme").unwrap(),
                )
                .await
                .unwrap()
                .len()
        })
    }

    /// Before the hot copies are deleted: every archived key's cold image is its hot row's
    /// (ids below `50 * through` archived, the rest not), and nothing is pending.
    pub fn assert_cold_matches_hot(&self, through: i64) {
        let (cold, hot) = (self.cold(), self.hot("acme"));
        let archived: Vec<i64> = hot
            .keys()
            .copied()
            .filter(|id| *id < 50 * through)
            .collect();
        assert_eq!(cold.keys().copied().collect::<Vec<_>>(), archived);
        let diffs = cold
            .iter()
            .filter(|(id, image)| hot.get(id) != Some(image))
            .count();
        assert_eq!(diffs, 0, "{diffs} archived rows differ from their hot copy");
        assert_eq!(self.pending(), 0);
        assert_eq!(self.hot("globex").len() as i64, ROWS, "globex untouched");
    }
}

#[test]
fn crash_at_manifest_swap() {
    let w = TierWorld::new();
    let trace = w.dir.path().join("trace");
    ok(&mut w.tier_run(&["--cutoff", &day(10)]));
    crash(
        &mut w.tier_run(&["--cutoff", &day(20)]),
        "manifest_swap",
        1,
        &trace,
    );
    // Nothing of the crashed archive is in the manifest: ids from 500 on are not archived.
    assert_eq!(w.cold().keys().max(), Some(&499));
    ok(&mut w.tier_run(&["--cutoff", &day(20)]));
    w.assert_cold_matches_hot(20);
}

#[test]
fn crash_at_buffer_apply() {
    let w = TierWorld::new();
    ok(&mut w.tier_run(&["--cutoff", &day(20)]));
    for id in (2..400).step_by(3) {
        w.change_archived(id, Some(&format!("updated {id}")));
    }
    for id in [7, 700] {
        w.change_archived(id, None);
    }
    let trace = w.dir.path().join("trace");
    crash(&mut w.tier_run(&[]), "buffer_apply", 1, &trace);
    assert_eq!(
        w.pending(),
        135,
        "the changes are still pending after the crash"
    );
    ok(&mut w.tier_run(&[]));
    let cold = w.cold();
    assert_eq!(cold[&2]["note"], "updated 2");
    assert!(!cold.contains_key(&7) && !cold.contains_key(&700));
    w.assert_cold_matches_hot(20);
}

#[test]
fn crash_at_hot_copy_delete() {
    let w = TierWorld::new();
    ok(&mut w.tier_run(&["--cutoff", &day(20)]));
    let before = w.cold();
    w.advance_to("target_only");
    let trace = w.dir.path().join("trace");
    crash(
        &mut w.tier_run(&["--delete-batch", "100"]),
        "hot_copy_delete",
        3,
        &trace,
    );
    // Two chunks committed, the third rolled back with the crash.
    let hot = w.hot("acme");
    assert_eq!(hot.len() as i64, ROWS - 200, "two chunks of 100 deleted");
    ok(&mut w.tier_run(&["--delete-batch", "100"]));
    let (cold, hot) = (w.cold(), w.hot("acme"));
    assert_eq!(cold, before, "the cold tier did not change");
    assert!(
        hot.keys().all(|id| !cold.contains_key(id)),
        "no key in both tiers"
    );
    assert_eq!(
        (cold.len() + hot.len()) as i64,
        ROWS,
        "every key in one tier"
    );
    assert_eq!(w.hot("globex").len() as i64, ROWS, "globex untouched");
}

/// Found by the crash at `manifest_swap`: an archive re-queued the rows a writer changed
/// between its read and its commit in the buffer before it committed the manifest, outside
/// that transaction. Crashed in between, it left changes behind for keys it never archived;
/// the next archive stored the rows' newer images, and then the buffer worker applied the
/// stale changes over them (an older image back in the cold tier, a re-inserted row deleted
/// from it).
#[test]
fn a_crashed_archive_leaves_no_stale_change_behind() {
    let w = TierWorld::new();
    // A writer holds the tenant's lock shared (between its location lookup and its hot write).
    let writer = w.rt.block_on(async {
        let mut tx = w.pool.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))")
            .bind(format!("ferry:{MIGRATION}:acme"))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx
    });
    let trace = w.dir.path().join("trace");
    let archive = w
        .tier_run(&["--cutoff", &day(20)])
        .env("FERRY_CRASH_AT", "manifest_swap")
        .env("FERRY_CRASH_TRACE", &trace)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The archive has read and uploaded its rows and waits for the lock to commit them.
    w.rt.block_on(async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            )
            .fetch_one(&w.pool)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the archive never waited"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    // The writer's changes land between the archive's read and its commit.
    w.sql(
        "UPDATE public.events SET note = 'first' WHERE tenant_id = 'acme' AND id = 5;
         DELETE FROM public.events WHERE tenant_id = 'acme' AND id = 6;",
    );
    w.rt.block_on(writer.commit()).unwrap();
    let out = archive.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(ferry_crash::EXIT_CODE),
        "{}",
        crate::text(&out.stderr)
    );
    // Neither key is archived, so the application writes them in the hot table only.
    w.sql(
        "UPDATE public.events SET note = 'second' WHERE tenant_id = 'acme' AND id = 5;
         INSERT INTO public.events VALUES ('acme', 6, 'reborn', NULL, timestamptz '2020-01-01 01:00:00+00');",
    );
    ok(&mut w.tier_run(&["--cutoff", &day(20)]));
    let cold = w.cold();
    assert_eq!(
        cold.get(&5).map(|r| r["note"].clone()),
        Some("second".into())
    );
    assert_eq!(
        cold.get(&6).map(|r| r["note"].clone()),
        Some("reborn".into())
    );
    w.assert_cold_matches_hot(20);
}
