//! The copier's controls, migration-wide or for one tenant: pause, resume, cancel and a rate
//! limit. They are rows in the control store that running copiers read between batches, so
//! a change here reaches every copier, wherever it runs.

use ferry_domain::{MigrationId, TenantId};

use super::{Operations, Result, Summary};
use crate::CopyControlView;

/// A change of the copier's controls for a migration or one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyChange {
    Pause,
    /// Undoes pause and cancel.
    Resume,
    Cancel,
    /// Rows per second at most; 0 removes the limit.
    Throttle(u64),
}

impl CopyChange {
    fn name(self) -> &'static str {
        match self {
            CopyChange::Pause => "copy.pause",
            CopyChange::Resume => "copy.resume",
            CopyChange::Cancel => "copy.cancel",
            CopyChange::Throttle(_) => "copy.throttle",
        }
    }
}

impl Operations {
    /// Pause, resume, cancel or throttle the copier, migration-wide or for one tenant.
    pub async fn copy_control(
        &self,
        actor: &str,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
        change: CopyChange,
    ) -> Result<CopyControlView> {
        let result = async {
            let change = match change {
                CopyChange::Pause => ferry_store::ControlChange {
                    paused: Some(true),
                    ..Default::default()
                },
                CopyChange::Resume => ferry_store::ControlChange {
                    paused: Some(false),
                    cancelled: Some(false),
                    ..Default::default()
                },
                CopyChange::Cancel => ferry_store::ControlChange {
                    cancelled: Some(true),
                    ..Default::default()
                },
                CopyChange::Throttle(rows_per_s) => ferry_store::ControlChange {
                    rate_limit: Some((rows_per_s > 0).then_some(rows_per_s)),
                    ..Default::default()
                },
            };
            let control = self.store.change_control(migration, tenant, change).await?;
            Ok(CopyControlView {
                migration: migration.to_string(),
                tenant: tenant.map(|t| t.to_string()),
                paused: control.paused,
                cancelled: control.cancelled,
                rows_per_s: control.rate_limit,
            })
        }
        .await;
        let target = match tenant {
            Some(t) => format!("{migration}/{t}"),
            None => migration.to_string(),
        };
        self.log(actor, change.name(), &target, false, &result)
            .await;
        result
    }
}

impl Summary for CopyControlView {
    fn summary(&self) -> String {
        format!(
            "paused={} cancelled={} rows_per_s={}",
            self.paused,
            self.cancelled,
            self.rows_per_s
                .map_or_else(|| "unlimited".to_owned(), |r| r.to_string())
        )
    }
}
