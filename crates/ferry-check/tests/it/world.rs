//! The world the workload tests run in: a [`Scenario`] (schema `wl`, moved to `wl_moved`) on
//! a database of its own, with a PostgreSQL control store; routers open their own store
//! handles, as separate processes would.

use std::sync::Arc;
use std::time::Duration;

use ferry_check::{AppPools, Scenario, ScenarioSettings};
use ferry_domain::SqlIdent;
use ferry_testkit::{TestDb, TestStore};

pub struct World {
    pub s: Arc<Scenario>,
    _data: TestDb,
    _store: TestStore,
}

/// Settings for a run of `duration` with `clients` clients over `tenants` tenants.
pub fn settings(
    tenants: usize,
    clients: u32,
    moving: usize,
    duration: Duration,
) -> ScenarioSettings {
    ScenarioSettings {
        schema: SqlIdent::new("wl").unwrap(),
        tenants,
        routers: 2,
        clients,
        moving,
        keys_per_tenant: 3,
        duration,
        fields: false,
    }
}

pub async fn world(settings: ScenarioSettings) -> World {
    world_with(settings, async |url| AppPools {
        source: ferry_copier::connect(url, "connect").await.unwrap(),
        target: ferry_copier::connect(url, "connect").await.unwrap(),
    })
    .await
}

/// A world whose application pools `app` makes for the database at the URL it is given
/// (through fault proxies, say); the copier and the store connect directly.
pub async fn world_with(
    settings: ScenarioSettings,
    app: impl AsyncFnOnce(&str) -> AppPools,
) -> World {
    let data = TestDb::new().await;
    let pool = ferry_copier::connect(data.url(), "connect").await.unwrap();
    let store = TestStore::postgres().await;
    let app = app(data.url()).await;
    let s = Scenario::setup(
        pool,
        app,
        store.store.clone(),
        async || Ok(store.reopen().await),
        settings,
    )
    .await
    .unwrap();
    World {
        s: Arc::new(s),
        _data: data,
        _store: store,
    }
}
