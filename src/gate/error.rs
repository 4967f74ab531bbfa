//! Why a gate or admin call failed. Denials are not errors: they are answers.

use crate::ledger::LedgerError;
use crate::store::StoreError;
use crate::sync::NotDurable;

/// A failed call, by what the caller should do about it. The API maps each kind to one gRPC
/// status in one place ([`crate::api::status`]).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A field is malformed; `message` explains. Nothing was changed.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// An idempotency key or grant id was reused for something different.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well-formed but the state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The call carried no identity the caller policy knows.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's policy does not allow the operation or the account.
    #[error("{0}")]
    PermissionDenied(String),
    /// The store or the ledger could not answer in time; a retry may succeed.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl GateError {
    pub fn invalid(field: impl Into<String>, message: impl ToString) -> GateError {
        GateError::Invalid {
            field: field.into(),
            message: message.to_string(),
        }
    }
}

impl From<StoreError> for GateError {
    fn from(error: StoreError) -> GateError {
        let message = error.to_string();
        match error {
            StoreError::ReservationNotFound(_)
            | StoreError::GrantNotFound { .. }
            | StoreError::LimitNotFound { .. }
            | StoreError::AccountNotFound(_) => GateError::NotFound(message),
            StoreError::IdempotencyConflict { .. } | StoreError::GrantConflict { .. } => {
                GateError::AlreadyExists(message)
            }
            StoreError::ReservationEnded { .. }
            | StoreError::CommitMismatch { .. }
            | StoreError::TooManyGrants { .. }
            | StoreError::TooManyLimits { .. }
            | StoreError::BalanceTooLarge { .. } => GateError::FailedPrecondition(message),
            StoreError::Unavailable(_) => GateError::Unavailable(message),
            StoreError::Inconsistent(_) => GateError::Internal(message),
        }
    }
}

impl From<LedgerError> for GateError {
    fn from(error: LedgerError) -> GateError {
        if error.is_transient() {
            GateError::Unavailable(error.to_string())
        } else {
            GateError::Internal(error.to_string())
        }
    }
}

impl From<NotDurable> for GateError {
    fn from(error: NotDurable) -> GateError {
        GateError::Unavailable(error.to_string())
    }
}
