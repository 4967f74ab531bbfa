//! The Redis store under faults, each against a `redis-server` of the test's own: Redis killed
//! mid-load (fail closed, then recover), its scripts flushed, and restarted empty (accounts are
//! loaded again from the ledger, without inflating any balance).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;
use creditgate::clock::SystemClock;
use creditgate::proto;
use tonic::Code;

async fn start_on_redis(server: &RedisServer, dir: &std::path::Path) -> TestServer {
    let mut config = config(dir);
    config.redis = Some(server.url());
    config.limits.redis_timeout_ms = 300;
    start_with(config, Arc::new(SystemClock)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_and_service_recovers_from_the_ledger() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on_redis(&redis, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    for _ in 0..10 {
        let charged = t
            .gate
            .charge(charge_amount("acme", "chat", "0.10"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(charged.decision, ALLOWED);
    }

    redis.kill();
    for _ in 0..5 {
        let started = Instant::now();
        let refused = t
            .gate
            .reserve(reserve_amount("acme", "chat", "0.01"))
            .await
            .expect_err("a Reserve without Redis is never allowed");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused within the deadline, not hung"
        );
        let refused = t
            .gate
            .charge(charge_amount("acme", "chat", "0.01"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable);
    }

    // Redis comes back empty: the account is loaded from the ledger on first use, once, even by
    // many calls at once.
    let _redis = RedisServer::start_on(port);
    let mut gate = t.gate.clone();
    eventually(Duration::from_secs(15), || {
        let mut gate = gate.clone();
        async move {
            gate.check(proto::CheckRequest {
                account_id: "acme".into(),
                feature: "chat".into(),
                ..Default::default()
            })
            .await
            .is_ok()
        }
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut gate = t.gate.clone();
        tasks.push(tokio::spawn(async move {
            gate.reserve(reserve_amount("acme", "chat", "0.50"))
                .await
                .unwrap()
                .into_inner()
                .decision
        }));
    }
    let mut allowed = 0;
    for task in tasks {
        if task.await.unwrap() == ALLOWED {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 16, "9.00 left covers 16 holds of 0.50");
    let wallet = default_wallet(&mut gate, "acme").await;
    assert_eq!(
        (
            wallet.spent.as_str(),
            wallet.held.as_str(),
            wallet.available.as_str()
        ),
        ("1.00", "8.00", "1.00"),
        "the balance is the ledger's, loaded once: nothing inflated"
    );
    t.server.stop().await;
}

#[tokio::test]
async fn functions_flushed_from_redis_are_loaded_again() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on_redis(&redis, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    for round in 0..3 {
        let _: () = ::redis::cmd("FUNCTION")
            .arg("FLUSH")
            .query_async(&mut connection)
            .await
            .unwrap();
        let hold = t
            .gate
            .reserve(reserve_amount("acme", "chat", "1.00"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(hold.decision, ALLOWED, "round {round}");
        t.gate
            .commit(commit_amount(&hold.reservation_id, "1.00"))
            .await
            .unwrap();
    }
    assert_eq!(default_wallet(&mut t.gate, "acme").await.available, "7.00");
    t.server.stop().await;
}

#[tokio::test]
async fn a_redis_that_may_evict_keys_is_refused_at_start() {
    let redis = RedisServer::start();
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut connection)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.redis = Some(redis.url());
    let refused = creditgate::server::Server::start(config, Arc::new(SystemClock))
        .await
        .err()
        .expect("an evicting Redis is refused");
    let message = refused.to_string();
    assert!(
        message.contains("allkeys-lru") && message.contains("noeviction"),
        "{message}"
    );
}
