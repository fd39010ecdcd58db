//! What the workload writes through: a routed table, seen as rows of one tenant with an id,
//! an `appends` list and a version.

use async_trait::async_trait;
use ferry_domain::TenantId;
use ferry_move::{MovedTable, Row};

/// A row as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The tenant column as read: must be the tenant asked for.
    pub tenant: String,
    pub appends: String,
    pub version: i64,
}

/// A routed table the workload can write. Errors are text: the workload only needs to know
/// that the outcome is unknown.
#[async_trait]
pub trait Target: Send + Sync {
    async fn insert(&self, tenant: &TenantId, id: i64, appends: &str) -> Result<Seen, String>;
    /// `None`: no such row.
    async fn update(
        &self,
        tenant: &TenantId,
        id: i64,
        appends: &str,
    ) -> Result<Option<Seen>, String>;
    async fn delete(&self, tenant: &TenantId, id: i64) -> Result<bool, String>;
    async fn get(&self, tenant: &TenantId, id: i64) -> Result<Option<Seen>, String>;
}

/// A tenant move's table: `tenant_id`, `id`, `appends` (text), `version` (bigint).
pub struct MovedTarget(pub std::sync::Arc<MovedTable>);

fn seen(row: &Row) -> Result<Seen, String> {
    let text = |name: &str| -> Result<String, String> {
        match row.get(name) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            other => Err(format!("column {name}: {other:?}")),
        }
    };
    let version = text("version")?
        .parse()
        .map_err(|e| format!("version: {e}"))?;
    Ok(Seen {
        tenant: text("tenant_id")?,
        appends: text("appends")?,
        version,
    })
}

#[async_trait]
impl Target for MovedTarget {
    async fn insert(&self, tenant: &TenantId, id: i64, appends: &str) -> Result<Seen, String> {
        let mut row = Row::new();
        row.insert("id".into(), serde_json::json!(id));
        row.insert("appends".into(), serde_json::json!(appends));
        let stored = self
            .0
            .insert(tenant, row)
            .await
            .map_err(|e| e.to_string())?;
        seen(&stored)
    }

    async fn update(
        &self,
        tenant: &TenantId,
        id: i64,
        appends: &str,
    ) -> Result<Option<Seen>, String> {
        let mut row = Row::new();
        row.insert("appends".into(), serde_json::json!(appends));
        let key = id.to_string();
        match self.0.update(tenant, &[&key], row).await {
            Ok(Some(stored)) => seen(&stored).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn delete(&self, tenant: &TenantId, id: i64) -> Result<bool, String> {
        let key = id.to_string();
        self.0
            .delete(tenant, &[&key])
            .await
            .map_err(|e| e.to_string())
    }

    async fn get(&self, tenant: &TenantId, id: i64) -> Result<Option<Seen>, String> {
        let key = id.to_string();
        match self.0.get(tenant, &[&key]).await {
            Ok(Some(row)) => seen(&row).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}
