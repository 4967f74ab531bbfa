//! The gRPC surface: thin tonic services (the gate, admin, and Envoy's external authorizer)
//! that parse a request (one `TryFrom` per gate request in [`request`], the pieces in
//! [`convert`]), call the [`crate::gate::Gate`], and turn the answer back
//! into a message. Errors become gRPC statuses in [`status`], and nowhere else.

pub mod admin;
pub mod convert;
pub mod ext_authz;
pub mod gate;
pub mod request;

use tonic::{Code, Request, Status};

use crate::gate::GateError;
use crate::policy::{Credentials, Operation, Policy, Principal, subject_alt_names};

/// Who sent a call, by the identity it presented (client certificate, bearer token), if the
/// caller policy lets it use `operation`; recorded in the call's span as `caller`.
pub fn principal<T>(
    policy: &Policy,
    request: &Request<T>,
    operation: Operation,
) -> Result<Principal, Status> {
    if !policy.is_on() {
        return Ok(Principal::anyone());
    }
    let sans = request
        .peer_certs()
        .and_then(|certs| certs.first().map(|cert| subject_alt_names(cert)))
        .unwrap_or_default();
    let authorization = request
        .metadata()
        .get("authorization")
        .map(|value| value.to_str().unwrap_or("(not text)"));
    let principal = policy
        .authorize(
            &Credentials {
                sans,
                authorization,
            },
            operation,
        )
        .map_err(status)?;
    if let Some(name) = principal.name() {
        tracing::Span::current().record("caller", name);
    }
    Ok(principal)
}

/// The one mapping from a failed call to a gRPC status.
pub fn status(error: GateError) -> Status {
    let code = match &error {
        GateError::Invalid { .. } => Code::InvalidArgument,
        GateError::NotFound(_) => Code::NotFound,
        GateError::AlreadyExists(_) => Code::AlreadyExists,
        GateError::FailedPrecondition(_) => Code::FailedPrecondition,
        GateError::Unauthenticated(_) => Code::Unauthenticated,
        GateError::PermissionDenied(_) => Code::PermissionDenied,
        GateError::Unavailable(_) => Code::Unavailable,
        GateError::Internal(_) => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(%error, "internal error");
    }
    metrics::counter!(crate::telemetry::ERRORS_TOTAL, "code" => format!("{code:?}")).increment(1);
    Status::new(code, error.to_string())
}
