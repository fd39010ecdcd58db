//! What can go wrong with an operator action, sorted by whose fault it is: the HTTP API turns
//! each kind into a status code, the CLI into an exit code.

use ferry_engine::EngineError;
use ferry_store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// A migration, tenant or buffered change that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong (a bad id, a missing reason, an unknown phase).
    #[error("{0}")]
    Invalid(String),
    /// The request is well formed but the rules refuse it now (a guard, a state).
    #[error("{0}")]
    Refused(String),
    /// Someone else changed the same thing first; re-read and retry.
    #[error("{0}")]
    Conflict(String),
    /// The control store cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl OpsError {
    /// A short stable code for machines (`not_found`, `invalid`, …).
    pub fn code(&self) -> &'static str {
        match self {
            OpsError::NotFound(_) => "not_found",
            OpsError::Invalid(_) => "invalid",
            OpsError::Refused(_) => "refused",
            OpsError::Conflict(_) => "conflict",
            OpsError::Unavailable(_) => "unavailable",
            OpsError::Internal(_) => "internal",
        }
    }
}

impl OpsError {
    /// Which kind a store error is, as a constructor taking its message.
    fn kind_of(e: &StoreError) -> fn(String) -> OpsError {
        match e {
            StoreError::MigrationNotFound(_) | StoreError::TenantNotFound { .. } => {
                OpsError::NotFound
            }
            StoreError::InvalidRequest(_) | StoreError::MigrationExists(_) => OpsError::Invalid,
            StoreError::Conflict { .. } | StoreError::ProgressOutOfPhase { .. } => {
                OpsError::Conflict
            }
            StoreError::Unreachable { .. } => OpsError::Unavailable,
            _ => OpsError::Internal,
        }
    }

    /// The code a store error has as an [`OpsError`], without converting it.
    pub fn code_of_store(e: &StoreError) -> &'static str {
        Self::kind_of(e)(String::new()).code()
    }
}

impl From<StoreError> for OpsError {
    fn from(e: StoreError) -> Self {
        Self::kind_of(&e)(e.to_string())
    }
}

impl From<EngineError> for OpsError {
    fn from(e: EngineError) -> Self {
        let text = e.to_string();
        match e {
            EngineError::Store(store) => OpsError::from(store),
            EngineError::Refused { .. } => OpsError::Refused(text),
            EngineError::ForceWithoutReason => OpsError::Invalid(
                "force (--force) overrides safety guards and needs a --reason for the audit log"
                    .into(),
            ),
            _ => OpsError::Internal(text),
        }
    }
}
