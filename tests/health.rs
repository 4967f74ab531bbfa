//! gRPC health and reflection: serving only while the store and the ledger answer, and the
//! services listed by reflection (v1 and v1alpha), on the gate and admin ports.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use common::*;
use creditgate::clock::SystemClock;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn status(addr: std::net::SocketAddr, service: &str) -> ServingStatus {
    let mut health = HealthClient::new(channel(addr).await);
    let answer = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(answer.status).unwrap()
}

#[tokio::test]
async fn both_ports_serve_health_and_reflection() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path()).await;
    for addr in [t.server.gate_addr(), t.server.admin_addr()] {
        for service in ["", "creditgate.v1.Gate", "creditgate.v1.Admin"] {
            assert_eq!(
                status(addr, service).await,
                ServingStatus::Serving,
                "{service}"
            );
        }
    }

    let mut reflection = ServerReflectionClient::new(channel(t.server.gate_addr()).await);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("a list of services, not {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "creditgate.v1.Gate",
        "creditgate.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }
    t.server.stop().await;
}

#[tokio::test]
async fn not_serving_while_the_store_is_out_of_reach() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    let port = redis.port;
    let mut config = common::config(dir.path());
    config.redis = Some(redis.url());
    config.limits.redis_timeout_ms = 200;
    let t = start_with(config, Arc::new(SystemClock)).await;
    let gate = t.server.gate_addr();
    assert_eq!(status(gate, "").await, ServingStatus::Serving);

    redis.kill();
    eventually(Duration::from_secs(15), || async move {
        status(gate, "creditgate.v1.Gate").await == ServingStatus::NotServing
    })
    .await;
    let _redis = RedisServer::start_on(port);
    eventually(Duration::from_secs(15), || async move {
        status(gate, "creditgate.v1.Gate").await == ServingStatus::Serving
    })
    .await;
    t.server.stop().await;
}
