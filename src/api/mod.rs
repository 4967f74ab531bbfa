//! The gRPC surface: thin tonic services (the gate, admin, and Envoy's external authorizer)
//! that parse a request ([`convert`]), call the [`crate::gate::Gate`], and turn the answer back
//! into a message. Errors become gRPC statuses in [`status`], and nowhere else.

pub mod admin;
pub mod convert;
pub mod ext_authz;
pub mod gate;

use tonic::{Code, Status};

use crate::gate::GateError;

/// The one mapping from a failed call to a gRPC status.
pub fn status(error: GateError) -> Status {
    let code = match &error {
        GateError::Invalid { .. } => Code::InvalidArgument,
        GateError::NotFound(_) => Code::NotFound,
        GateError::AlreadyExists(_) => Code::AlreadyExists,
        GateError::FailedPrecondition(_) => Code::FailedPrecondition,
        GateError::Unavailable(_) => Code::Unavailable,
        GateError::Internal(_) => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(%error, "internal error");
    }
    metrics::counter!(crate::telemetry::ERRORS_TOTAL, "code" => format!("{code:?}")).increment(1);
    Status::new(code, error.to_string())
}
