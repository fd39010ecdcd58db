//! The operator's hands on the update buffer: a change that failed too often is parked as
//! dead until someone retries it or drops it with a reason. Both act only on an open change
//! of the named migration, and a concurrent apply, retry or drop is a conflict, not a success.

use ferry_domain::MigrationId;

use super::{Operations, Result, Summary};
use crate::{BufferActionView, OpsError};

impl Operations {
    /// A dead buffered change back to pending.
    pub async fn buffer_retry(
        &self,
        actor: &str,
        migration: &MigrationId,
        seq: i64,
    ) -> Result<BufferActionView> {
        let result = async {
            let change = self.open_change(migration, seq).await?;
            if change.state != "dead" {
                return Err(OpsError::Refused(format!(
                    "change {seq} is {}, not dead; only dead changes are retried",
                    change.state
                )));
            }
            if !self.store.retry_update(seq).await? {
                return Err(OpsError::Conflict(format!(
                    "change {seq} was retried, applied or dropped concurrently"
                )));
            }
            Ok(BufferActionView {
                seq,
                action: "retry".into(),
                state: "pending".into(),
            })
        }
        .await;
        self.log(
            actor,
            "buffer.retry",
            &format!("{migration}#{seq}"),
            false,
            &result,
        )
        .await;
        result
    }

    /// Gives up on a buffered change: it is never applied; who and why stay on it.
    pub async fn buffer_drop(
        &self,
        actor: &str,
        migration: &MigrationId,
        seq: i64,
        reason: &str,
    ) -> Result<BufferActionView> {
        let result = async {
            if reason.trim().is_empty() {
                return Err(OpsError::Invalid(
                    "a reason is required: say why the change is dropped".into(),
                ));
            }
            self.open_change(migration, seq).await?;
            let note = format!("dropped by {actor}: {}", reason.trim());
            if !self.store.drop_update(seq, &note).await? {
                return Err(OpsError::Conflict(format!(
                    "change {seq} was applied or dropped concurrently"
                )));
            }
            Ok(BufferActionView {
                seq,
                action: "drop".into(),
                state: "dropped".into(),
            })
        }
        .await;
        self.log(
            actor,
            "buffer.drop",
            &format!("{migration}#{seq}"),
            false,
            &result,
        )
        .await;
        result
    }

    async fn open_change(
        &self,
        migration: &MigrationId,
        seq: i64,
    ) -> Result<ferry_store::BufferedUpdate> {
        self.store.migration(migration).await?;
        self.store
            .open_updates(migration)
            .await?
            .into_iter()
            .find(|u| u.seq == seq)
            .ok_or_else(|| {
                OpsError::NotFound(format!(
                    "no pending or dead change {seq} in migration {migration}"
                ))
            })
    }
}

impl Summary for BufferActionView {
    fn summary(&self) -> String {
        format!("change {} {}", self.seq, self.state)
    }
}
