//! The calls each scenario makes, one iteration at a time, and the requests they send.

use envoy_types::ext_authz::v3::pb::CheckRequest as AuthzRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::tally::{Outcome, Sample, sample};
use super::{FEATURE, Scenario};
use crate::proto::{self, gate_client::GateClient};

pub(super) fn decided(decision: i32) -> Outcome {
    if decision == proto::Decision::Allowed as i32 {
        Outcome::Allowed
    } else {
        Outcome::Denied
    }
}

/// Where the load goes: the gate service, or the Envoy authorizer.
#[derive(Clone)]
pub(super) enum Client {
    Gate(GateClient<Channel>),
    Authz(AuthorizationClient<Channel>),
}

/// One iteration of the scenario for `account`, each call's sample added to `samples`; the
/// first is timed from `due`.
pub(super) async fn iterate(
    scenario: Scenario,
    client: &mut Client,
    account: &str,
    request_id: u64,
    due: Instant,
    samples: &mut Vec<Sample>,
) {
    match (scenario, client) {
        (Scenario::Reserve, Client::Gate(gate)) => {
            let outcome = match gate
                .reserve(hold_of(account, crate::config::HOLD_TTL_MS_MIN))
                .await
            {
                Ok(answer) => decided(answer.into_inner().decision),
                Err(status) => Outcome::Failed(status.code()),
            };
            samples.push(sample(due, outcome));
        }
        (Scenario::ReserveCommit | Scenario::ReserveRelease, Client::Gate(gate)) => {
            let reserved = gate.reserve(hold_of(account, 0)).await;
            let id = match reserved {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    samples.push(sample(due, decided(answer.decision)));
                    answer.reservation_id
                }
                Err(status) => {
                    samples.push(sample(due, Outcome::Failed(status.code())));
                    return;
                }
            };
            if id.is_empty() {
                return;
            }
            let started = Instant::now();
            let ended = if scenario == Scenario::ReserveCommit {
                gate.commit(proto::CommitRequest {
                    reservation_id: id,
                    actual: Some(proto::commit_request::Actual::Amount("0.005".into())),
                })
                .await
                .map(drop)
            } else {
                gate.release(proto::ReleaseRequest { reservation_id: id })
                    .await
                    .map(drop)
            };
            let outcome = match ended {
                Ok(()) => Outcome::Allowed,
                Err(status) => Outcome::Failed(status.code()),
            };
            samples.push(sample(started, outcome));
        }
        (Scenario::Charge, Client::Gate(gate)) => {
            let outcome = match gate
                .charge(proto::ChargeRequest {
                    account_id: account.to_owned(),
                    feature: FEATURE.into(),
                    cost: Some(proto::charge_request::Cost::Amount("0.001".into())),
                    ..Default::default()
                })
                .await
            {
                Ok(answer) => decided(answer.into_inner().decision),
                Err(status) => Outcome::Failed(status.code()),
            };
            samples.push(sample(due, outcome));
        }
        (Scenario::Check, Client::Gate(gate)) => {
            let outcome = match gate
                .check(proto::CheckRequest {
                    account_id: account.to_owned(),
                    feature: FEATURE.into(),
                    cost: Some(proto::check_request::Cost::Amount("0.01".into())),
                    ..Default::default()
                })
                .await
            {
                Ok(answer) => decided(answer.into_inner().decision),
                Err(status) => Outcome::Failed(status.code()),
            };
            samples.push(sample(due, outcome));
        }
        (Scenario::ExtAuthz, Client::Authz(authz)) => {
            let outcome = match authz.check(envoy_check(account, request_id)).await {
                Ok(answer) => match answer.into_inner().http_response {
                    Some(HttpResponse::OkResponse(_)) => Outcome::Allowed,
                    _ => Outcome::Denied,
                },
                Err(status) => Outcome::Failed(status.code()),
            };
            samples.push(sample(due, outcome));
        }
        _ => unreachable!("the client matches the scenario"),
    }
}

/// A hold of 0.01 on `account` for `ttl_ms` (0: the server's default).
pub(super) fn hold_of(account: &str, ttl_ms: u64) -> proto::ReserveRequest {
    proto::ReserveRequest {
        account_id: account.to_owned(),
        feature: FEATURE.into(),
        cost: Some(proto::reserve_request::Cost::Amount("0.01".into())),
        ttl_ms,
        ..Default::default()
    }
}

/// What Envoy sends about one HTTP request.
fn envoy_check(account: &str, request_id: u64) -> AuthzRequest {
    let headers = [
        ("x-creditgate-account", account.to_owned()),
        ("x-creditgate-feature", FEATURE.to_owned()),
        ("x-request-id", format!("bench-{request_id}")),
        (":path", "/v1/chat/completions".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    AuthzRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
