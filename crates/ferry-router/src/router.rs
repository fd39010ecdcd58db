use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ferry_domain::{RouterId, TenantPhase};
use ferry_store::{ControlStore, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::counters::{RouteCounters, RouteOp};
use crate::snapshot::Snapshot;

#[derive(Debug, Clone)]
pub struct RouterSettings {
    pub id: RouterId,
    /// Free text shown to operators next to the id (host, pid, version).
    pub description: String,
    /// How often to heartbeat (and poll the counter, in case a notification was missed).
    pub heartbeat: Duration,
    /// How long after its last successful heartbeat the router keeps serving. Must be well
    /// under the engine's router lease, so the router stops before the engine presumes it dead.
    pub serve_window: Duration,
}

impl RouterSettings {
    /// Defaults derived from the store's lease: heartbeat every 3 s, serve for two thirds of
    /// the 15 s lease after the last successful heartbeat.
    pub fn new(id: RouterId, description: impl Into<String>) -> RouterSettings {
        RouterSettings {
            id,
            description: description.into(),
            heartbeat: ferry_store::DEFAULT_HEARTBEAT,
            serve_window: ferry_store::DEFAULT_ROUTER_LEASE * 2 / 3,
        }
    }
}

/// A router's link to the control store: failures since it started, and how long ago its
/// snapshot was last confirmed current (routing stops once that passes the serve window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterHealth {
    pub refresh_failures: u64,
    pub heartbeat_failures: u64,
    pub verified_ago: Duration,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "router {router} has not reached the control store for {silent:?} (limit {limit:?}); \
         refusing to route by phases that may be stale"
    )]
    Stale {
        router: RouterId,
        silent: Duration,
        limit: Duration,
    },
}

struct Shared {
    store: Arc<dyn ControlStore>,
    settings: RouterSettings,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Replaced snapshots that operations may still hold. The router acknowledges no version
    /// newer than the oldest of them, but keeps heartbeating: a slow operation makes it
    /// lagging (changes wait), never dead (changes would move on without it).
    draining: Mutex<Vec<Arc<Snapshot>>>,
    /// When the snapshot was last confirmed current: the start of a refresh that succeeded
    /// and was followed by a heartbeat the store accepted. The serve window runs from here, so
    /// a router that can heartbeat but not read phases stops routing (item 6 of the review:
    /// it used to renew the window on any heartbeat and serve phases two changes old).
    verified_at: Mutex<Instant>,
    refresh_now: Notify,
    stop: Notify,
    refresh_failures: AtomicU64,
    heartbeat_failures: AtomicU64,
    routes: RouteCounters,
    /// One send of the route counts at a time, so an older snapshot never lands last.
    sending: tokio::sync::Mutex<()>,
}

/// A running router: cached phases plus the task that keeps them current.
pub struct Router {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl Router {
    /// Loads the phases, registers with the store, and starts following changes. Returns
    /// once the router is registered and caught up, ready to route.
    pub async fn start(
        store: Arc<dyn ControlStore>,
        settings: RouterSettings,
    ) -> Result<Router, RouterError> {
        let shared = Arc::new(Shared {
            store,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            draining: Mutex::new(Vec::new()),
            verified_at: Mutex::new(Instant::now()),
            refresh_now: Notify::new(),
            stop: Notify::new(),
            refresh_failures: AtomicU64::new(0),
            heartbeat_failures: AtomicU64::new(0),
            routes: RouteCounters::default(),
            sending: tokio::sync::Mutex::new(()),
            settings,
        });
        // Load, register, then load again: a change committed before the registration was
        // visible to the engine is caught by the second load; every later change waits for
        // this router's acknowledgement.
        shared.refresh().await?;
        shared.beat().await?;
        let started = Instant::now();
        shared.refresh().await?;
        shared.beat().await?;
        shared.verified(started);
        let feed = shared.store.change_feed();
        let task = tokio::spawn(follow(shared.clone(), feed));
        Ok(Router {
            shared,
            task: Some(task),
        })
    }

    pub fn id(&self) -> &RouterId {
        &self.shared.settings.id
    }

    /// The current phases. Hold the returned snapshot for the whole operation it routes: the
    /// router does not acknowledge a newer phase while an older snapshot is in use.
    pub fn snapshot(&self) -> Result<Arc<Snapshot>, RouterError> {
        self.ensure_serving()?;
        Ok(self.shared.current())
    }

    /// Whether this router may still route: its snapshot was confirmed current within the
    /// serve window. Tables call it again right before committing a write, so an operation
    /// that outlives the window (the router cut off meanwhile, and perhaps presumed dead by
    /// the engine) fails instead of committing by a phase the engine has moved past.
    pub fn ensure_serving(&self) -> Result<(), RouterError> {
        let silent = self
            .shared
            .verified_at
            .lock()
            .expect("the verification clock is only ever replaced, never poisoned mid-update")
            .elapsed();
        let limit = self.shared.settings.serve_window;
        if silent > limit {
            return Err(RouterError::Stale {
                router: self.shared.settings.id.clone(),
                silent,
                limit,
            });
        }
        Ok(())
    }

    /// How the router's link to the control store is doing, for operators and tests.
    pub fn health(&self) -> RouterHealth {
        RouterHealth {
            refresh_failures: self.shared.refresh_failures.load(Ordering::Relaxed),
            heartbeat_failures: self.shared.heartbeat_failures.load(Ordering::Relaxed),
            verified_ago: self
                .shared
                .verified_at
                .lock()
                .expect("the verification clock is only ever replaced, never poisoned mid-update")
                .elapsed(),
        }
    }

    /// Shorthand for a one-off lookup; operations that then write should hold
    /// [`Router::snapshot`] instead.
    pub fn phase(&self, migration: &str, tenant: &str) -> Result<TenantPhase, RouterError> {
        Ok(self.snapshot()?.phase(migration, tenant))
    }

    /// Counts one route decision (see [`crate::counters`]); the tables that route by this
    /// router call it for every operation.
    pub fn record_route(
        &self,
        migration: &str,
        op: RouteOp,
        phase: ferry_domain::Phase,
        path: &'static str,
        reason: &'static str,
    ) {
        self.shared
            .routes
            .record(migration, op, phase, path, reason);
    }

    /// The route decisions counted since this router started.
    pub fn route_counts(&self) -> Vec<ferry_store::RouteCount> {
        self.shared.routes.snapshot()
    }

    /// Sends the route counts to the control store now (they also go with heartbeats).
    pub async fn flush_route_counts(&self) -> Result<(), RouterError> {
        self.shared.send_route_counts().await?;
        Ok(())
    }

    /// Asks the background task to refresh now rather than at the next notification or beat.
    pub fn nudge(&self) {
        self.shared.refresh_now.notify_one();
    }

    /// Stops following changes and removes this router from the store, so it no longer
    /// counts for the barrier.
    pub async fn shutdown(mut self) -> Result<(), RouterError> {
        self.shared.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.shared
            .store
            .deregister_router(&self.shared.settings.id)
            .await?;
        Ok(())
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        // Without shutdown(), the registration lapses with the lease.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Shared {
    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .expect("snapshot lock holders only swap an Arc and cannot panic")
            .clone()
    }

    /// Applies changes committed since the current snapshot. The replaced snapshot joins
    /// `draining` until no operation holds it. Returns the version now routed by.
    async fn refresh(&self) -> Result<i64, StoreError> {
        let old = self.current();
        let counter = self.store.change_version().await?;
        if counter <= old.version() {
            return Ok(old.version());
        }
        let changes = self.store.changes_since(old.version()).await?;
        let newest = changes
            .iter()
            .map(|c| c.changed_at_version)
            .max()
            .unwrap_or(counter)
            .max(counter);
        let next = Arc::new(old.apply(changes, newest));
        *self
            .snapshot
            .write()
            .expect("snapshot lock holders only swap an Arc and cannot panic") = next;
        self.draining
            .lock()
            .expect("the draining list is only pushed to and filtered")
            .push(old);
        Ok(newest)
    }

    /// The version this router can honestly acknowledge: the current one once no operation
    /// holds an older snapshot, else the oldest snapshot still in use.
    fn acknowledgeable(&self) -> (i64, bool) {
        let current = self.current().version();
        let mut draining = self
            .draining
            .lock()
            .expect("the draining list is only pushed to and filtered");
        // Only this list and the operations hold old snapshots; a count of 1 is the list.
        draining.retain(|s| Arc::strong_count(s) > 1);
        match draining.iter().map(|s| s.version()).min() {
            Some(oldest) => (oldest, true),
            None => (current, false),
        }
    }

    /// Heartbeats with the acknowledgeable version; returns whether snapshots are draining.
    async fn beat(&self) -> Result<bool, StoreError> {
        let (version, draining) = self.acknowledgeable();
        self.store
            .heartbeat(&self.settings.id, &self.settings.description, version)
            .await?;
        Ok(draining)
    }

    /// Records that the snapshot was current as of `started` (a refresh begun then succeeded,
    /// and a heartbeat after it was accepted). Never moves the clock back.
    fn verified(&self, started: Instant) {
        let mut at = self
            .verified_at
            .lock()
            .expect("the verification clock is only ever replaced, never poisoned mid-update");
        *at = (*at).max(started);
    }

    async fn send_route_counts(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.sending.lock().await;
        let Some(counts) = self.routes.take_changed() else {
            return Ok(());
        };
        let sent = self
            .store
            .record_route_counts(&self.settings.id, &counts)
            .await;
        if sent.is_err() {
            self.routes.mark_dirty();
        }
        sent
    }
}

/// How often to re-check snapshots still held by operations, so an acknowledgement goes out
/// soon after the last one finishes rather than at the next heartbeat.
const DRAIN_POLL: Duration = Duration::from_millis(2);

async fn follow(shared: Arc<Shared>, mut feed: ferry_store::ChangeFeed) {
    let mut ticker = tokio::time::interval(shared.settings.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut feed_alive = true;
    let mut draining = false;
    let mut acknowledged = shared.acknowledgeable().0;
    let mut held_since: Option<Instant> = None;
    let mut warned = false;
    loop {
        let mut refresh = true;
        tokio::select! {
            _ = shared.stop.notified() => return,
            _ = ticker.tick() => {}
            _ = shared.refresh_now.notified() => {}
            changed = feed.changed(), if feed_alive => {
                if changed.is_none() {
                    tracing::warn!(router = %shared.settings.id, "change feed ended; polling only");
                    feed_alive = false;
                }
            }
            _ = tokio::time::sleep(DRAIN_POLL), if draining => {
                refresh = false;
                // Nothing to send until the oldest held snapshot is released.
                if shared.acknowledgeable().0 == acknowledged {
                    let since = *held_since.get_or_insert_with(Instant::now);
                    if !warned && since.elapsed() > Duration::from_secs(1) {
                        tracing::warn!(
                            router = %shared.settings.id,
                            acknowledged,
                            "an operation has held an old phase snapshot for over 1s; phase changes wait for it"
                        );
                        warned = true;
                    }
                    continue;
                }
            }
        }
        let started = Instant::now();
        if refresh {
            let before = shared.current().version();
            match shared.refresh().await {
                Ok(version) if version != before => {
                    tracing::debug!(router = %shared.settings.id, version, "phases refreshed");
                }
                Ok(_) => {}
                Err(e) => {
                    // No heartbeat either: a router that cannot read phases must not look
                    // live, or the engine would wait on it forever while it refuses to route.
                    tracing::warn!(router = %shared.settings.id, "failed to refresh phases: {e}");
                    shared.refresh_failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        match shared.beat().await {
            Ok(still_draining) => {
                if refresh {
                    shared.verified(started);
                }
                draining = still_draining;
                acknowledged = shared.acknowledgeable().0;
                if !draining {
                    held_since = None;
                    warned = false;
                }
            }
            Err(e) => {
                tracing::warn!(router = %shared.settings.id, "failed to heartbeat: {e}");
                shared.heartbeat_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Err(e) = shared.send_route_counts().await {
            tracing::warn!(router = %shared.settings.id, "failed to send route counts: {e}");
        }
    }
}
