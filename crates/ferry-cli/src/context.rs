//! Resolved settings: flags turned into an open store, an engine and an actor.

use std::sync::Arc;

use anyhow::Context as _;
use ferry_api::ops::Operations;
use ferry_domain::SqlIdent;
use ferry_engine::PhaseEngine;
use ferry_store::{ControlStore, StoreOptions};

use crate::args::Global;

pub struct Context {
    pub store: Arc<dyn ControlStore>,
    /// Every operator query and action, shared with the admin API.
    pub ops: Operations,
    pub actor: String,
}

impl Context {
    pub async fn open(global: &Global) -> anyhow::Result<Context> {
        let schema = SqlIdent::new(global.store_schema.clone()).context("read --store-schema")?;
        let options = StoreOptions {
            pg_schema: schema,
            ..StoreOptions::default()
        };
        let store = ferry_store::open(&global.database_url, &options)
            .await
            .context("open the control store")?;
        Ok(Context::new(store, actor(global.actor.as_deref())))
    }

    pub fn new(store: Arc<dyn ControlStore>, actor: String) -> Context {
        Context {
            ops: Operations::new(store.clone()),
            store,
            actor,
        }
    }

    pub fn engine(&self) -> &PhaseEngine {
        self.ops.engine()
    }
}

/// `--actor`, or `$USER@$HOSTNAME` (falling back to /etc/hostname), or "unknown".
pub fn actor(flag: Option<&str>) -> String {
    if let Some(actor) = flag.filter(|a| !a.trim().is_empty()) {
        return actor.trim().to_owned();
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    match host {
        Some(host) => format!("{user}@{host}"),
        None => user,
    }
}
