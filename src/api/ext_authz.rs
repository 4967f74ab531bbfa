//! The Envoy external authorizer: `envoy.service.auth.v3.Authorization/Check`, on a port of
//! its own (`--ext-authz-listen`).
//!
//! Each request Envoy asks about is charged its price, once: the account and the feature come
//! from request headers (or the account from metadata Envoy's JWT filter set), the cost from
//! the feature's price in the catalog (per call, or per unit with the units in a header), and
//! Envoy's request id makes a retried check the same charge.
//!
//! - Allowed: an OK answer, with the balance left in `x-creditgate-available` on the request
//!   sent upstream and on the response sent back.
//! - Out of credits, or a spend limit reached: a *denial*, HTTP 402 with a JSON body naming the
//!   reason. Never an error status, which Envoy could take for the authorizer failing and, with
//!   `failure_mode_allow`, let the request through.
//! - A request that does not say who pays or for what: a denial, HTTP 400, naming the header.
//! - An account the caller policy does not let this Envoy (its client certificate or token)
//!   charge: a denial, HTTP 403. A caller the policy does not know, or does not let use
//!   `ext_authz`, gets an error status (UNAUTHENTICATED, PERMISSION_DENIED).
//! - The store or ledger out of reach: an error status (UNAVAILABLE), so that Envoy's
//!   `failure_mode_allow` decides.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderValue, HeaderValueOption, HttpStatus, HttpStatusCode, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::google::protobuf::{Struct, value::Kind};
use envoy_types::pb::google::rpc;
use serde_json::json;
use tonic::{Request, Response, Status};

use super::convert::money;
use super::{principal, status};
use crate::domain::{AccountId, FeatureId, IdempotencyKey, Labels, Units, Usage};
use crate::domain::{Decision, Denial};
use crate::gate::{ChargeRequest, Cost, Gate, GateError};
use crate::policy::{Operation, Policy};

/// Header with the balance left after an allowed request.
pub const AVAILABLE_HEADER: &str = "x-creditgate-available";
/// Header with what an allowed request was charged.
pub const CHARGED_HEADER: &str = "x-creditgate-charged";

/// Where the authorizer finds who pays, for what, and how much.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtAuthzSettings {
    /// Header naming the account. Default `x-creditgate-account`.
    pub account_header: String,
    /// Where in Envoy's dynamic metadata the account is, if it comes from there (e.g. the JWT
    /// filter's payload): the filter's name, then the keys. Tried before the header.
    pub account_metadata: Option<(String, Vec<String>)>,
    /// Header naming the feature. Default `x-creditgate-feature`.
    pub feature_header: String,
    /// Feature of requests that name none. Default: none (the header is required).
    pub feature_default: Option<FeatureId>,
    /// Header with the units of a per-unit price. Default `x-creditgate-units`; absent means
    /// one call.
    pub units_header: String,
    /// Header that identifies a request across Envoy's retries. Default `x-request-id`.
    pub request_id_header: String,
}

impl Default for ExtAuthzSettings {
    fn default() -> ExtAuthzSettings {
        ExtAuthzSettings {
            account_header: "x-creditgate-account".into(),
            account_metadata: None,
            feature_header: "x-creditgate-feature".into(),
            feature_default: None,
            units_header: "x-creditgate-units".into(),
            request_id_header: "x-request-id".into(),
        }
    }
}

pub struct ExtAuthzService {
    gate: Arc<Gate>,
    settings: ExtAuthzSettings,
    policy: Arc<Policy>,
}

/// Why a request cannot be judged: HTTP 400, naming where it went wrong.
struct BadRequest {
    field: String,
    message: String,
}

impl ExtAuthzService {
    pub fn new(
        gate: Arc<Gate>,
        settings: ExtAuthzSettings,
        policy: Arc<Policy>,
    ) -> ExtAuthzService {
        ExtAuthzService {
            gate,
            settings,
            policy,
        }
    }

    pub fn into_server(self) -> AuthorizationServer<ExtAuthzService> {
        AuthorizationServer::new(self)
    }

    /// The charge a request asks for.
    fn charge_of(&self, check: &CheckRequest) -> Result<ChargeRequest, BadRequest> {
        let empty = HashMap::new();
        let attributes = check.attributes.as_ref();
        let headers = attributes
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .map_or(&empty, |http| &http.headers);
        let header = |name: &str| headers.get(name).filter(|v| !v.is_empty());
        let bad = |field: &str, message: String| BadRequest {
            field: field.to_owned(),
            message,
        };

        let from_metadata = self
            .settings
            .account_metadata
            .as_ref()
            .and_then(|(filter, path)| {
                let metadata = attributes?.metadata_context.as_ref()?;
                lookup(metadata.filter_metadata.get(filter)?, path)
            });
        let (account_field, account_text) =
            match (&from_metadata, header(&self.settings.account_header)) {
                (Some(account), _) => ("metadata", account.clone()),
                (None, Some(account)) => (self.settings.account_header.as_str(), account.clone()),
                (None, None) => {
                    return Err(bad(
                        &self.settings.account_header,
                        "is required: it names the account that pays".into(),
                    ));
                }
            };
        let account = AccountId::parse(&account_text)
            .map_err(|e| bad(account_field, format!("{account_text:?}: {e}")))?;
        let feature = match (
            header(&self.settings.feature_header),
            &self.settings.feature_default,
        ) {
            (Some(text), _) => FeatureId::parse(text)
                .map_err(|e| bad(&self.settings.feature_header, format!("{text:?}: {e}")))?,
            (None, Some(feature)) => feature.clone(),
            (None, None) => {
                return Err(bad(
                    &self.settings.feature_header,
                    "is required: it names what is paid for".into(),
                ));
            }
        };
        let units = header(&self.settings.units_header)
            .map(|text| {
                Units::parse(text)
                    .map_err(|e| bad(&self.settings.units_header, format!("{text:?}: {e}")))
            })
            .transpose()?;
        let idempotency_key = header(&self.settings.request_id_header)
            .map(|id| {
                IdempotencyKey::parse(&format!("ext-authz/{id}"))
                    .map_err(|e| bad(&self.settings.request_id_header, format!("{id:?}: {e}")))
            })
            .transpose()?;
        Ok(ChargeRequest {
            account,
            feature,
            wallet: None,
            cost: Cost::Usage(Usage {
                units,
                model: None,
                input_tokens: 0,
                output_tokens: 0,
                cached_input_tokens: 0,
            }),
            idempotency_key,
            labels: Labels::new(),
        })
    }
}

/// A string at `path` in a metadata struct.
fn lookup(metadata: &Struct, path: &[String]) -> Option<String> {
    let (last, parents) = path.split_last()?;
    let mut here = metadata;
    for key in parents {
        match here.fields.get(key)?.kind.as_ref()? {
            Kind::StructValue(inner) => here = inner,
            _ => return None,
        }
    }
    match here.fields.get(last)?.kind.as_ref()? {
        Kind::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

fn header(name: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A denial Envoy sends back as the response: `status` with a JSON body.
fn denied(code: rpc::Code, http: HttpStatusCode, body: serde_json::Value) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: code as i32,
            message: body["message"].as_str().unwrap_or_default().to_owned(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http as i32 }),
            headers: vec![header("content-type", "application/json".into())],
            body: body.to_string(),
        })),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let caller = principal(&self.policy, &request, Operation::ExtAuthz)?;
        let mut charge = match self.charge_of(request.get_ref()) {
            Ok(charge) => charge,
            Err(BadRequest { field, message }) => {
                let body = json!({
                    "error": "invalid_request", "field": field,
                    "message": format!("{field}: {message}"),
                });
                return Ok(Response::new(denied(
                    rpc::Code::InvalidArgument,
                    HttpStatusCode::BadRequest,
                    body,
                )));
            }
        };
        if let Err(refused) = caller.may_touch(&charge.account) {
            let body = json!({
                "error": "permission_denied", "message": refused.to_string(),
                "account_id": charge.account.as_str(),
            });
            return Ok(Response::new(denied(
                rpc::Code::PermissionDenied,
                HttpStatusCode::Forbidden,
                body,
            )));
        }
        charge.idempotency_key = caller.scope(charge.idempotency_key);
        let (account, feature) = (charge.account.clone(), charge.feature.clone());
        let (_, _, decision) = match self.gate.charge(charge).await {
            Ok(answer) => answer,
            Err(GateError::Invalid { field, message }) => {
                // A price that needs what the request did not give (units, a model).
                let field = match field.as_str() {
                    "usage.units" => self.settings.units_header.clone(),
                    _ => field,
                };
                let body = json!({
                    "error": "invalid_request", "field": field,
                    "message": format!("{field}: {message}"),
                });
                return Ok(Response::new(denied(
                    rpc::Code::InvalidArgument,
                    HttpStatusCode::BadRequest,
                    body,
                )));
            }
            // Unavailable and the rest: an error, so that Envoy's failure_mode_allow decides.
            Err(error) => return Err(status(error)),
        };
        super::convert::count_decision("ext_authz", &decision);
        let response = match decision {
            Decision::Allowed(charged) => {
                let available = money(charged.available_minor);
                let headers = vec![
                    header(AVAILABLE_HEADER, available.clone()),
                    header(CHARGED_HEADER, money(charged.charged_minor)),
                ];
                CheckResponse {
                    status: Some(rpc::Status {
                        code: rpc::Code::Ok as i32,
                        ..Default::default()
                    }),
                    http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                        headers: headers.clone(),
                        response_headers_to_add: headers,
                        ..Default::default()
                    })),
                    ..Default::default()
                }
            }
            Decision::Denied(Denial {
                reason,
                available_minor,
                limit,
            }) => {
                let mut body = json!({
                    "error": reason.as_str(),
                    "message": reason.explain(&account),
                    "account_id": account.as_str(),
                    "feature": feature.as_str(),
                    "available": money(available_minor),
                });
                if let Some(limit) = limit {
                    body["limit"] = json!(limit);
                }
                denied(
                    rpc::Code::PermissionDenied,
                    HttpStatusCode::PaymentRequired,
                    body,
                )
            }
        };
        Ok(Response::new(response))
    }
}
