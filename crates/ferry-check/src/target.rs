//! What the workload writes through: a routed table, seen as rows of one tenant with an id,
//! an `appends` list and a version.

use async_trait::async_trait;
use ferry_domain::TenantId;
use ferry_move::{MoveError, MovedTable, Row};

use crate::fields::Fields;

/// A row as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The tenant column as read: must be the tenant asked for.
    pub tenant: String,
    pub appends: String,
    pub version: i64,
    /// The typed columns, on a table that has them.
    pub fields: Option<Fields>,
}

/// Why a write failed, as far as the client can know: whether it may have taken effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// A definite refusal: the write did not take effect and never will (the table promises
    /// that a failed request leaves both sides unchanged).
    #[error("refused: {0}")]
    Refused(String),
    /// An unknown outcome: the write may have taken effect or not (a COMMIT that lost its
    /// answer).
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// A routed table the workload can write. Read errors are text; a write's error says whether
/// the write may have taken effect.
#[async_trait]
pub trait Target: Send + Sync {
    async fn insert(&self, tenant: &TenantId, id: i64, appends: &str) -> Result<Seen, WriteError>;
    /// `None`: no such row.
    async fn update(
        &self,
        tenant: &TenantId,
        id: i64,
        appends: &str,
    ) -> Result<Option<Seen>, WriteError>;
    async fn delete(&self, tenant: &TenantId, id: i64) -> Result<bool, WriteError>;
    async fn get(&self, tenant: &TenantId, id: i64) -> Result<Option<Seen>, String>;
}

/// A tenant move's table: `tenant_id`, `id`, `appends` (text), `version` (bigint), and
/// optionally the typed columns of [`crate::FIELD_COLUMNS`].
pub struct MovedTarget {
    table: std::sync::Arc<MovedTable>,
    fields: bool,
}

impl MovedTarget {
    pub fn new(table: std::sync::Arc<MovedTable>) -> MovedTarget {
        MovedTarget {
            table,
            fields: false,
        }
    }

    /// Writes the typed columns too (the table must have them).
    pub fn with_fields(table: std::sync::Arc<MovedTable>) -> MovedTarget {
        MovedTarget {
            table,
            fields: true,
        }
    }

    /// The columns a write of `appends` sets.
    fn row(&self, appends: &str) -> Row {
        let mut row = Row::new();
        row.insert("appends".into(), serde_json::json!(appends));
        if self.fields {
            for (name, value) in Fields::for_appends(appends).to_row() {
                row.insert(name.into(), value);
            }
        }
        row
    }
}

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
        fields: Fields::from_row(row).transpose()?,
    })
}

/// `MovedTable` fails a request whose authoritative COMMIT lost its answer as
/// [`MoveError::CommitUnknown`]; any other failure leaves both sides unchanged.
fn write_error(e: MoveError) -> WriteError {
    match e {
        MoveError::CommitUnknown { .. } => WriteError::Unknown(e.to_string()),
        e => WriteError::Refused(e.to_string()),
    }
}

/// A row the table acknowledged but the workload cannot read: the write took effect.
fn acknowledged(row: &Row) -> Result<Seen, WriteError> {
    seen(row).map_err(|e| WriteError::Unknown(format!("acknowledged, but {e}")))
}

#[async_trait]
impl Target for MovedTarget {
    async fn insert(&self, tenant: &TenantId, id: i64, appends: &str) -> Result<Seen, WriteError> {
        let mut row = self.row(appends);
        row.insert("id".into(), serde_json::json!(id));
        let stored = self.table.insert(tenant, row).await.map_err(write_error)?;
        acknowledged(&stored)
    }

    async fn update(
        &self,
        tenant: &TenantId,
        id: i64,
        appends: &str,
    ) -> Result<Option<Seen>, WriteError> {
        let key = id.to_string();
        match self.table.update(tenant, &[&key], self.row(appends)).await {
            Ok(Some(stored)) => acknowledged(&stored).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(write_error(e)),
        }
    }

    async fn delete(&self, tenant: &TenantId, id: i64) -> Result<bool, WriteError> {
        let key = id.to_string();
        self.table
            .delete(tenant, &[&key])
            .await
            .map_err(write_error)
    }

    async fn get(&self, tenant: &TenantId, id: i64) -> Result<Option<Seen>, String> {
        let key = id.to_string();
        match self.table.get(tenant, &[&key]).await {
            Ok(Some(row)) => seen(&row).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}
