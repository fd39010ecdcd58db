//! The read switch, per tenant: which version of the schema an operation uses, decided by
//! the router from the tenant's phase, like every other route in Ferry.
//!
//! Reads use the side the phase serves from (`ferry_domain::ReadPlan`): the old shape until
//! `target_primary`, the new one from then on. Writes use the authoritative side
//! (`WritePlan`); the triggers write the other shape in the same statement, so a tenant
//! rolled back a phase reads every write made in either shape. An operation holds the
//! router's snapshot until it ends (the routers' acknowledgement barrier counts on it).

use std::sync::Arc;

use ferry_domain::{MigrationId, Phase, ReadPlan, Side, TenantId, WritePlan};
use ferry_router::{RouteOp, Router, RouterError, Snapshot};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgPool, Postgres};

use crate::plan::names::quote;

/// A version of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The tables as they are (`search_path` = the schema).
    Old,
    /// The version schema's views first (`search_path` = `<schema>_<migration>`, schema).
    New,
}

impl Version {
    fn of(side: Side) -> Version {
        match side {
            Side::Source => Version::Old,
            Side::Target => Version::New,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::Old => "old",
            Version::New => "new",
        }
    }
}

/// A route taken: the version, the phase it was taken in, and the snapshot it was taken
/// from, held until the operation ends.
#[derive(Debug, Clone)]
pub struct Routed {
    pub version: Version,
    pub phase: Phase,
    _snapshot: Arc<Snapshot>,
}

/// A schema change's tables as an application uses them through the router.
pub struct VersionedTable {
    router: Arc<Router>,
    migration: MigrationId,
    schema: String,
    version_schema: String,
}

impl VersionedTable {
    pub fn new(router: Arc<Router>, migration: MigrationId, schema: &str) -> VersionedTable {
        let version_schema = format!("{schema}_{migration}");
        VersionedTable {
            router,
            migration,
            schema: schema.to_owned(),
            version_schema,
        }
    }

    /// Which version `tenant`'s operation uses; counted like every route decision.
    pub fn route(&self, tenant: &TenantId, op: RouteOp) -> Result<Routed, RouterError> {
        let snapshot = self.router.snapshot()?;
        let phase = snapshot
            .phase(self.migration.as_str(), tenant.as_str())
            .phase;
        let side = match op {
            RouteOp::Read => ReadPlan::for_phase(phase).serve,
            RouteOp::Write => WritePlan::for_phase(phase).first,
        };
        let version = Version::of(side);
        let path = match version {
            Version::Old => "source",
            Version::New => "target",
        };
        self.router
            .record_route(self.migration.as_str(), op, phase, path, "phase");
        Ok(Routed {
            version,
            phase,
            _snapshot: snapshot,
        })
    }

    /// The `search_path` that selects a version.
    pub fn search_path(&self, version: Version) -> String {
        match version {
            Version::Old => quote(&self.schema),
            Version::New => format!("{}, {}", quote(&self.version_schema), quote(&self.schema)),
        }
    }

    /// Begins a transaction in the version `tenant`'s operation uses (`SET LOCAL
    /// search_path`), so the application's unqualified SQL reads and writes that shape.
    /// Writes re-check that the router still serves just before the caller commits
    /// ([`VersionedTable::ensure_serving`]).
    pub async fn begin(
        &self,
        pool: &PgPool,
        tenant: &TenantId,
        op: RouteOp,
    ) -> Result<(sqlx::Transaction<'static, Postgres>, Routed), crate::SchemaError> {
        let routed = self
            .route(tenant, op)
            .map_err(|e| crate::SchemaError::Refused(format!("route tenant {tenant}: {e}")))?;
        let mut tx = pool
            .begin()
            .await
            .map_err(|source| crate::SchemaError::Database {
                what: "begin a routed transaction".into(),
                source,
            })?;
        sqlx::query(AssertSqlSafe(format!(
            "SET LOCAL search_path TO {}",
            self.search_path(routed.version)
        )))
        .execute(&mut *tx)
        .await
        .map_err(|source| crate::SchemaError::Database {
            what: "set the version's search_path".into(),
            source,
        })?;
        Ok((tx, routed))
    }

    /// Fails if the router stopped serving (its snapshot may be stale): check before a
    /// write commits.
    pub fn ensure_serving(&self) -> Result<(), RouterError> {
        self.router.ensure_serving()
    }
}
