//! A tenant move under the workload, end to end: a scratch table of many tenants in a
//! database, a `tenant_move` migration of it to a second schema, routers each with its
//! `MovedTable`, and a driver moving some tenants through the phases with the copier (forward
//! copies, steps back from `target_only` with their reverse copies, rollbacks to `legacy`)
//! while the clients write. Used by the tests and by `ferry check`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_copier::{Copier, Outcome};
use ferry_domain::{Action, MigrationId, Phase, RouterId, SqlIdent, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine, Request};
use ferry_move::MovedTable;
use ferry_router::{Router, RouterSettings};
use ferry_store::{ControlStore, CopyDirection, MigrationKind, NewMigration, TenantSize};
use sqlx::{AssertSqlSafe, PgPool};

use crate::check::{Report, check};
use crate::client::{ClientSettings, run_client_counted};
use crate::fields::FIELD_COLUMNS;
use crate::target::{MovedTarget, Target};

/// What a scenario sets up and runs.
#[derive(Debug, Clone)]
pub struct ScenarioSettings {
    /// The scratch schema of the source table; the target is `<schema>_moved`.
    pub schema: SqlIdent,
    pub tenants: usize,
    pub routers: usize,
    pub clients: u32,
    /// How many tenants move (the first ones); the rest are only written.
    pub moving: usize,
    pub keys_per_tenant: u32,
    pub duration: Duration,
    /// The table carries the typed columns of [`FIELD_COLUMNS`].
    pub fields: bool,
}

/// Why a scenario could not run, or what it found wrong outside the checker's counts.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("set up the scenario: {0}")]
    Setup(String),
    #[error("{action} {tenant}: {cause}")]
    Change {
        action: Action,
        tenant: TenantId,
        cause: String,
    },
    #[error(
        "the {direction} copy of {tenant} did not end clean: {outcome}; open mismatches: {open:?}"
    )]
    Copy {
        tenant: TenantId,
        direction: &'static str,
        outcome: String,
        open: Vec<String>,
    },
}

fn setup<E: std::fmt::Display>(doing: &'static str) -> impl Fn(E) -> ScenarioError {
    move |e| ScenarioError::Setup(format!("{doing}: {e}"))
}

/// The finished run: the checker's report and what the driver did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunOutcome {
    pub report: Report,
    pub phase_changes: u64,
    pub tenants_completed: usize,
}

/// The application's pools for the two sides of the move. Two, even on one database: a
/// two-sided write holds a connection of each side at once, so with one pool for both, as many
/// concurrent writes as the pool has connections each hold one and wait for a second until
/// the acquire timeout (the pool deadlocks).
#[derive(Debug, Clone)]
pub struct AppPools {
    pub source: PgPool,
    pub target: PgPool,
}

/// A scenario, set up and ready to run.
pub struct Scenario {
    /// The driver's and the copier's connections (set-up, phase changes, copies, checks).
    pub pool: PgPool,
    /// The application's connections, the routed tables' (may go through a fault proxy).
    pub app: AppPools,
    pub store: Arc<dyn ControlStore>,
    pub migration: MigrationId,
    pub tenants: Vec<TenantId>,
    pub routers: Vec<Arc<Router>>,
    pub tables: Vec<Arc<MovedTable>>,
    pub copier: Copier,
    pub engine: PhaseEngine,
    pub settings: ScenarioSettings,
    /// Per client, the operations its target answered without an error (see
    /// [`Scenario::client_progress`]).
    ops_ok: Vec<AtomicU64>,
    /// How many times the driver ran `ferry verify` for a tenant whose change was refused
    /// while mismatches were open.
    pub verifies: AtomicU64,
}

fn request() -> Request {
    Request {
        actor: "ferry-check".into(),
        reason: "workload".into(),
        force: false,
        dry_run: false,
        expect_phase: None,
    }
}

impl Scenario {
    /// Creates the schemas, the table, the migration and its tenants, the copier and the
    /// routers. `router_store` opens a store handle per router (as separate processes would
    /// have). The routed tables use `app` (the same database as `pool`, possibly through a
    /// fault proxy); everything else uses `pool`.
    pub async fn setup(
        pool: PgPool,
        app: AppPools,
        store: Arc<dyn ControlStore>,
        router_store: impl AsyncFn() -> Result<Arc<dyn ControlStore>, ferry_store::StoreError>,
        settings: ScenarioSettings,
    ) -> Result<Scenario, ScenarioError> {
        let source = settings.schema.clone();
        let target = SqlIdent::new(format!("{source}_moved")).map_err(setup("name the target"))?;
        let columns = if settings.fields {
            format!("{FIELD_COLUMNS},")
        } else {
            String::new()
        };
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE SCHEMA {s}; CREATE TABLE {s}.items (
                 tenant_id text NOT NULL, id bigint NOT NULL, appends text NOT NULL DEFAULT '',
                 version bigint NOT NULL DEFAULT 1, {columns} PRIMARY KEY (tenant_id, id))",
            s = source.quoted(),
        )))
        .execute(&pool)
        .await
        .map_err(setup("create the scratch table"))?;
        let migration =
            MigrationId::new(format!("{source}_move")).map_err(setup("name the migration"))?;
        store
            .create_migration(&NewMigration {
                id: migration.clone(),
                kind: MigrationKind::TenantMove,
                description: "ferry check: the workload's scratch table".into(),
                config: serde_json::json!({
                    "source": {"schema": source.as_str(), "table": "items"},
                    "target": {"schema": target.as_str(), "table": "items"},
                    "tenant_column": "tenant_id", "version_column": "version",
                    "copy": {"min_batch": 10, "max_batch": 200, "start_batch": 50},
                    "backpressure": {"latency_factor": 0},
                }),
                created_by: "ferry-check".into(),
            })
            .await
            .map_err(setup("create the migration"))?;
        let tenants: Vec<TenantId> = (0..settings.tenants)
            .map(|i| TenantId::new(format!("t{i:03}")))
            .collect::<Result<_, _>>()
            .map_err(setup("name the tenants"))?;
        let sizes: Vec<TenantSize> = tenants
            .iter()
            .map(|t| TenantSize {
                tenant: t.clone(),
                rows: u64::from(settings.keys_per_tenant) * u64::from(settings.clients),
            })
            .collect();
        store
            .register_tenants(&migration, &sizes)
            .await
            .map_err(setup("register the tenants"))?;
        let engine = PhaseEngine::new(store.clone(), EngineSettings::default());
        let copier = Copier::open(
            store.clone(),
            PhaseEngine::new(store.clone(), EngineSettings::default()),
            &migration,
            pool.clone(),
            pool.clone(),
            true,
        )
        .await
        .map_err(setup("open the copier"))?;
        let mut routers = Vec::new();
        let mut tables = Vec::new();
        for r in 0..settings.routers {
            let id = RouterId::new(format!("{source}-app-{r}")).map_err(setup("name a router"))?;
            let handle = router_store()
                .await
                .map_err(setup("open a router's store handle"))?;
            let router = Router::start(
                handle,
                RouterSettings {
                    heartbeat: Duration::from_millis(50),
                    ..RouterSettings::new(id, "ferry check")
                },
            )
            .await
            .map(Arc::new)
            .map_err(setup("start a router"))?;
            let table = MovedTable::open(
                router.clone(),
                store.clone(),
                &migration,
                app.source.clone(),
                app.target.clone(),
            )
            .await
            .map_err(setup("open the routed table"))?;
            routers.push(router);
            tables.push(Arc::new(table));
        }
        Ok(Scenario {
            pool,
            app,
            store,
            migration,
            tenants,
            routers,
            tables,
            copier,
            engine,
            ops_ok: (0..settings.clients).map(|_| AtomicU64::new(0)).collect(),
            verifies: AtomicU64::new(0),
            settings,
        })
    }

    /// Drops the scratch schemas (the migration stays in the store, for its audit trail).
    pub async fn drop_schemas(&self) -> Result<(), sqlx::Error> {
        let s = &self.settings.schema;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; DROP SCHEMA IF EXISTS \"{}_moved\" CASCADE",
            s.quoted(),
            s.as_str()
        )))
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// One guarded change, retried while the routers catch up or the buffer drains; returns
    /// once every live router has it.
    pub async fn change(&self, t: &TenantId, action: Action) -> Result<Phase, ScenarioError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let failed = |cause: String| ScenarioError::Change {
            action,
            tenant: t.clone(),
            cause,
        };
        loop {
            match self
                .engine
                .change(&self.migration, t, action, &request())
                .await
            {
                Ok(moved) => {
                    for router in &self.routers {
                        router.nudge();
                    }
                    let ack = self
                        .engine
                        .wait_acknowledged(moved.change_version, Duration::from_secs(30))
                        .await
                        .map_err(|e| failed(e.to_string()))?;
                    if !ack.effective() {
                        return Err(failed(format!("not acknowledged by {:?}", ack.lagging)));
                    }
                    return Ok(moved.to_phase);
                }
                Err(e) if Instant::now() >= deadline => return Err(failed(e.to_string())),
                // Refused while routers catch up, the buffer drains or mismatches are open
                // (a write whose COMMIT lost its answer records one): retried, after running
                // `ferry verify` for the tenant as an operator would.
                Err(_) => {
                    self.verify_open(t).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Runs `ferry verify` for the tenant if it has open mismatches: it resolves them when
    /// the sides are equal. Its errors are left for the next try.
    async fn verify_open(&self, t: &TenantId) {
        let open = self.store.open_mismatches(&self.migration, t).await;
        if open.map_or(true, |open| open.is_empty()) {
            return;
        }
        let direction = match self.store.tenant(&self.migration, t).await {
            Ok(tenant) if tenant.state.phase >= Phase::TargetPrimary => CopyDirection::Reverse,
            _ => CopyDirection::Forward,
        };
        self.verifies.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.copier.verify(t, direction).await {
            tracing::debug!(tenant = %t, "ferry verify failed: {e}");
        }
    }

    /// Copies a tenant; anything but a clean completion is an error naming what differs.
    pub async fn copy(&self, t: &TenantId, direction: CopyDirection) -> Result<(), ScenarioError> {
        let failed = |outcome: String, open: Vec<String>| ScenarioError::Copy {
            tenant: t.clone(),
            direction: direction.as_str(),
            outcome,
            open,
        };
        let outcome = self
            .copier
            .copy(t, direction, |_| {})
            .await
            .map_err(|e| failed(e.to_string(), Vec::new()))?;
        if matches!(outcome, Outcome::Complete { mismatches: 0, .. }) {
            return Ok(());
        }
        let open = self
            .store
            .open_mismatches(&self.migration, t)
            .await
            .map(|m| {
                m.into_iter()
                    .map(|(_, key, detail)| format!("{key}: {detail}"))
                    .collect()
            })
            .unwrap_or_default();
        Err(failed(format!("{outcome:?}"), open))
    }

    /// One tenant's journey: forward to `target_only`, a step back with its reverse copy,
    /// back to `legacy` or on to `complete`, depending on `plan`. Returns whether the tenant
    /// is complete; only `may_complete` journeys go all the way, so tenants keep moving for
    /// the whole run.
    pub async fn journey(
        &self,
        t: &TenantId,
        plan: u64,
        may_complete: bool,
        changes: &AtomicU64,
    ) -> Result<bool, ScenarioError> {
        let step = async |action| {
            let phase = self.change(t, action).await;
            changes.fetch_add(1, Ordering::Relaxed);
            phase
        };
        step(Action::Advance).await?;
        self.copy(t, CopyDirection::Forward).await?;
        step(Action::Advance).await?;
        if plan.is_multiple_of(3) {
            step(Action::Rollback).await?;
            return Ok(false);
        }
        step(Action::Advance).await?;
        step(Action::Advance).await?;
        if plan % 3 == 1 || !may_complete {
            step(Action::Rollback).await?;
            self.copy(t, CopyDirection::Reverse).await?;
            step(Action::Rollback).await?;
            step(Action::Rollback).await?;
            Ok(false)
        } else {
            step(Action::Advance).await?;
            Ok(true)
        }
    }
}

/// Where a run stands, after each tenant's journey.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub elapsed: Duration,
    pub phase_changes: u64,
    pub tenants_completed: usize,
}

impl Scenario {
    /// The workload's view of one router's table.
    fn target(&self, router: usize) -> MovedTarget {
        let table = self.tables[router % self.tables.len()].clone();
        if self.settings.fields {
            MovedTarget::with_fields(table)
        } else {
            MovedTarget::new(table)
        }
    }

    /// Starts the clients, spread over the routers; they run until [`Clients::finish`].
    pub fn start_clients(self: &Arc<Self>) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let mut running = Vec::new();
        for c in 0..self.settings.clients {
            let (scenario, stop) = (self.clone(), stop.clone());
            running.push(tokio::spawn(async move {
                let target = scenario.target(c as usize);
                let settings = ClientSettings {
                    client: c,
                    tenants: scenario.tenants.clone(),
                    keys_per_tenant: scenario.settings.keys_per_tenant,
                    seed: 0x5eed_0000 + u64::from(c),
                };
                run_client_counted(&target, &settings, &stop, &scenario.ops_ok[c as usize]).await
            }));
        }
        Clients {
            scenario: self.clone(),
            stop,
            running,
        }
    }

    /// Per client, how many operations its target answered without an error so far: a
    /// client recovered from a fault once its count moves.
    pub fn client_progress(&self) -> Vec<u64> {
        self.ops_ok
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs the clients while the driver moves the first `moving` tenants for `duration`,
    /// then checks every key.
    pub async fn run(
        self: &Arc<Self>,
        on_progress: impl FnMut(Progress),
    ) -> Result<RunOutcome, ScenarioError> {
        let (outcome, ()) = self.run_both(async {}, false, on_progress).await?;
        Ok(outcome)
    }

    /// [`Scenario::run`] with `alongside` running too (a fault injector, say): the driver
    /// stops at `duration` or when `alongside` ends, whichever is first (`alongside` itself
    /// runs to its end), and `alongside`'s value is returned with the outcome.
    pub async fn run_alongside<T>(
        self: &Arc<Self>,
        alongside: impl Future<Output = T>,
        on_progress: impl FnMut(Progress),
    ) -> Result<(RunOutcome, T), ScenarioError> {
        self.run_both(alongside, true, on_progress).await
    }

    async fn run_both<T>(
        self: &Arc<Self>,
        alongside: impl Future<Output = T>,
        stops_the_driver: bool,
        mut on_progress: impl FnMut(Progress),
    ) -> Result<(RunOutcome, T), ScenarioError> {
        let clients = self.start_clients();
        let changes = AtomicU64::new(0);
        let done = AtomicBool::new(false);
        let (driven, value) = tokio::join!(self.drive(&changes, &done, &mut on_progress), async {
            let value = alongside.await;
            done.store(stops_the_driver, Ordering::Relaxed);
            value
        });
        let report = clients.finish().await?;
        let outcome = RunOutcome {
            report,
            phase_changes: changes.load(Ordering::Relaxed),
            tenants_completed: driven?,
        };
        Ok((outcome, value))
    }

    /// Moves the first `moving` tenants round after round until the time is up (or all of
    /// them completed); journeys late in the run may complete. Returns how many completed.
    async fn drive(
        &self,
        changes: &AtomicU64,
        done: &AtomicBool,
        on_progress: &mut impl FnMut(Progress),
    ) -> Result<usize, ScenarioError> {
        let duration = self.settings.duration;
        let moving = self.settings.moving.min(self.tenants.len());
        let started = Instant::now();
        let mut complete = HashSet::new();
        let mut round = 0u64;
        while started.elapsed() < duration
            && complete.len() < moving
            && !done.load(Ordering::Relaxed)
        {
            for (i, t) in self.tenants.iter().take(moving).enumerate() {
                if complete.contains(t) {
                    continue;
                }
                let late = started.elapsed() > duration.mul_f64(0.8);
                if self.journey(t, round + i as u64, late, changes).await? {
                    complete.insert(t.clone());
                }
                on_progress(Progress {
                    elapsed: started.elapsed(),
                    phase_changes: changes.load(Ordering::Relaxed),
                    tenants_completed: complete.len(),
                });
                if started.elapsed() >= duration || done.load(Ordering::Relaxed) {
                    break;
                }
            }
            round += 1;
        }
        Ok(complete.len())
    }
}

/// The running clients of a scenario.
pub struct Clients {
    scenario: Arc<Scenario>,
    stop: Arc<AtomicBool>,
    running: Vec<tokio::task::JoinHandle<crate::client::ClientRun>>,
}

impl Clients {
    /// Stops the clients (each finishes its operation) and checks every key they wrote.
    pub async fn finish(self) -> Result<Report, ScenarioError> {
        self.stop.store(true, Ordering::Relaxed);
        let mut runs = Vec::new();
        for client in self.running {
            runs.push(
                client
                    .await
                    .map_err(|e| ScenarioError::Setup(format!("a client failed: {e}")))?,
            );
        }
        Ok(check(&self.scenario.target(0) as &dyn Target, &runs).await)
    }
}
