//! The baseline: a no-op gate and Envoy authorizer answering at once with messages shaped like
//! creditgate's, served with creditgate's limits, so that a run can be compared with the
//! fastest thing the same stack can do.

use std::net::SocketAddr;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest as AuthzRequest,
    CheckResponse as AuthzResponse, HeaderValue, HeaderValueOption, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::google::rpc;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Response, Status};

use super::BenchError;
use crate::proto::{self, gate_server};
use crate::server::REQUEST_LEN_MAX;

/// A gate that answers at once with messages shaped like creditgate's: the baseline.
#[derive(Clone, Copy, Default)]
struct NoopGate;

fn noop_split() -> Vec<proto::GrantPortion> {
    vec![proto::GrantPortion {
        grant_id: "bench-0-0".into(),
        amount: "0.010000".into(),
    }]
}

#[tonic::async_trait]
impl gate_server::Gate for NoopGate {
    async fn reserve(
        &self,
        request: tonic::Request<proto::ReserveRequest>,
    ) -> Result<Response<proto::ReserveResponse>, Status> {
        let account = request.into_inner().account_id;
        Ok(Response::new(proto::ReserveResponse {
            decision: proto::Decision::Allowed as i32,
            reservation_id: format!("{account}/r{}", "0".repeat(32)),
            amount: "0.010000".into(),
            expires_at_ms: 1_800_000_000_000,
            available: "9999999.990000".into(),
            split: noop_split(),
            wallet: "default".into(),
            ..Default::default()
        }))
    }

    async fn commit(
        &self,
        request: tonic::Request<proto::CommitRequest>,
    ) -> Result<Response<proto::CommitResponse>, Status> {
        Ok(Response::new(proto::CommitResponse {
            reservation_id: request.into_inner().reservation_id,
            charged: "0.005000".into(),
            released: "0.005000".into(),
            split: noop_split(),
            entry_id: "e0000000000000000000000000000000".into(),
            available: "9999999.995000".into(),
            requested: "0.005000".into(),
            overrun: "0.000000".into(),
        }))
    }

    async fn release(
        &self,
        request: tonic::Request<proto::ReleaseRequest>,
    ) -> Result<Response<proto::ReleaseResponse>, Status> {
        Ok(Response::new(proto::ReleaseResponse {
            reservation_id: request.into_inner().reservation_id,
            released: "0.010000".into(),
            available: "10000000.000000".into(),
        }))
    }

    async fn extend(
        &self,
        _request: tonic::Request<proto::ExtendRequest>,
    ) -> Result<Response<proto::ExtendResponse>, Status> {
        Ok(Response::new(proto::ExtendResponse::default()))
    }

    async fn charge(
        &self,
        _request: tonic::Request<proto::ChargeRequest>,
    ) -> Result<Response<proto::ChargeResponse>, Status> {
        Ok(Response::new(proto::ChargeResponse {
            decision: proto::Decision::Allowed as i32,
            charged: "0.001000".into(),
            split: noop_split(),
            entry_id: "e0000000000000000000000000000000".into(),
            available: "9999999.999000".into(),
            wallet: "default".into(),
            ..Default::default()
        }))
    }

    async fn check(
        &self,
        _request: tonic::Request<proto::CheckRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        Ok(Response::new(proto::CheckResponse {
            decision: proto::Decision::Allowed as i32,
            amount: "0.010000".into(),
            available: "10000000.000000".into(),
            wallet: "default".into(),
            ..Default::default()
        }))
    }

    async fn get_balance(
        &self,
        _request: tonic::Request<proto::GetBalanceRequest>,
    ) -> Result<Response<proto::GetBalanceResponse>, Status> {
        Ok(Response::new(proto::GetBalanceResponse::default()))
    }

    type WatchBalanceStream = tokio_stream::Empty<Result<proto::BalanceEvent, Status>>;

    async fn watch_balance(
        &self,
        _request: tonic::Request<proto::WatchBalanceRequest>,
    ) -> Result<Response<Self::WatchBalanceStream>, Status> {
        Err(Status::unimplemented("the baseline does not stream"))
    }
}

#[tonic::async_trait]
impl Authorization for NoopGate {
    async fn check(
        &self,
        _request: tonic::Request<AuthzRequest>,
    ) -> Result<Response<AuthzResponse>, Status> {
        let header = |key: &str, value: &str| HeaderValueOption {
            header: Some(HeaderValue {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let headers = vec![
            header("x-creditgate-available", "9999999.999000"),
            header("x-creditgate-charged", "0.001000"),
        ];
        Ok(Response::new(AuthzResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: headers.clone(),
                response_headers_to_add: headers,
                ..Default::default()
            })),
            ..Default::default()
        }))
    }
}

/// Serves the no-op gate and authorizer on a free loopback port, with creditgate's limits.
pub(super) async fn start_baseline() -> Result<SocketAddr, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| BenchError::Setup(format!("baseline: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::Setup(format!("baseline: {e}")))?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(Some(
                crate::config::LimitsConfig::default().max_concurrent_streams,
            ))
            .add_service(
                gate_server::GateServer::new(NoopGate).max_decoding_message_size(REQUEST_LEN_MAX),
            )
            .add_service(
                AuthorizationServer::new(NoopGate).max_decoding_message_size(REQUEST_LEN_MAX),
            )
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
    );
    Ok(addr)
}
