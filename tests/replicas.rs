//! Several creditgate replicas sharing one Redis and one PostgreSQL ledger behave as one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use common::*;
use creditgate::clock::SystemClock;
use creditgate::ledger::LedgerTarget;
use creditgate::proto;

async fn replica(redis: &RedisServer, database: &PgDatabase, dir: &std::path::Path) -> TestServer {
    replica_with(redis, database, dir, |_| {}).await
}

async fn replica_with(
    redis: &RedisServer,
    database: &PgDatabase,
    dir: &std::path::Path,
    adjust: impl FnOnce(&mut creditgate::config::ServerConfig),
) -> TestServer {
    let mut config = config(dir);
    adjust(&mut config);
    config.redis = Some(redis.url());
    config.ledger = LedgerTarget::Postgres {
        url: database.url.clone(),
    };
    start_with(config, Arc::new(SystemClock)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_redis_never_hold_more_than_the_balance_and_end_exact() {
    let redis = RedisServer::start();
    let database = PgDatabase::create().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = replica(&redis, &database, dir_a.path()).await;
    let b = replica(&redis, &database, dir_b.path()).await;
    grant(&mut a.admin, "acme", "g1", "5.00").await;

    // 2 replicas × 16 clients, each reserving 0.03 and committing 0.02 until denied.
    let mut tasks = Vec::new();
    for gate in [a.gate.clone(), b.gate.clone()] {
        for _ in 0..16 {
            let mut gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let mut committed = 0i64;
                loop {
                    let hold = gate
                        .reserve(reserve_amount("acme", "chat", "0.03"))
                        .await
                        .unwrap()
                        .into_inner();
                    if hold.decision != ALLOWED {
                        return committed;
                    }
                    // A client retries a commit the ledger was slow to confirm.
                    loop {
                        match gate
                            .commit(commit_amount(&hold.reservation_id, "0.02"))
                            .await
                        {
                            Ok(_) => break,
                            Err(status) if status.code() == tonic::Code::Unavailable => {}
                            Err(status) => panic!("commit failed: {status:?}"),
                        }
                    }
                    committed += 1;
                }
            }));
        }
    }
    let mut commits = 0;
    for task in tasks {
        commits += task.await.unwrap();
    }
    // Each commit spends 0.02; the last holds are refused once fewer than 0.03 remain.
    assert_eq!(
        commits, 249,
        "5.00 pays for exactly 249 commits of 0.02 behind holds of 0.03"
    );
    let mut gate_b = b.gate.clone();
    for gate in [&mut a.gate, &mut gate_b] {
        let wallet = default_wallet(gate, "acme").await;
        assert_eq!(
            (
                wallet.spent.as_str(),
                wallet.held.as_str(),
                wallet.available.as_str()
            ),
            ("4.98", "0.00", "0.02"),
            "both replicas see the same exact balance"
        );
    }
    // The ledger has every commit once, whichever replica carried it.
    let mut admin = a.admin.clone();
    eventually(Duration::from_secs(10), || {
        let mut admin = admin.clone();
        async move {
            let usage = admin
                .get_usage(proto::GetUsageRequest {
                    account_id: "acme".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            usage.total == "4.98" && usage.count == 249
        }
    })
    .await;
    let usage = admin
        .get_usage(proto::GetUsageRequest {
            account_id: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((usage.total.as_str(), usage.count), ("4.98", 249));
    a.server.stop().await;
    b.server.stop().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_emptied_on_one_replica_is_denied_from_memory_on_the_other() {
    let redis = RedisServer::start();
    let database = PgDatabase::create().await;
    // Quiet background work, so that any Redis call counted is the gate's.
    let quiet = |config: &mut creditgate::config::ServerConfig| {
        config.limits.sweep_interval_ms = 3_600_000;
        config.limits.sync_interval_ms = 3_600_000;
        config.limits.reconcile_interval_ms = 3_600_000;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = replica_with(&redis, &database, dir_a.path(), quiet).await;
    let mut b = replica_with(&redis, &database, dir_b.path(), quiet).await;
    grant(&mut a.admin, "acme", "g1", "1.00").await;
    let check = || proto::CheckRequest {
        account_id: "acme".into(),
        feature: "chat".into(),
        ..Default::default()
    };
    assert_eq!(
        b.gate.check(check()).await.unwrap().into_inner().decision,
        ALLOWED
    );

    let emptied = a
        .gate
        .charge(charge_amount("acme", "chat", "1.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(emptied.available, "0.00");
    let started = std::time::Instant::now();
    let delay = loop {
        let before = redis.calls().await;
        let answer = b.gate.check(check()).await.unwrap().into_inner();
        assert_eq!(answer.decision, DENIED, "the store denies as well");
        if redis.calls().await == before {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never denied from memory"
        );
    };
    eprintln!("emptied wallet known to the other replica within {delay:?}");
    let reserve = b
        .gate
        .reserve(reserve_amount("acme", "chat", "0.01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reserve.decision, DENIED);
    assert_eq!(
        reserve.reason,
        proto::DenyReason::InsufficientCredits as i32
    );

    // A top-up on one replica is usable on the other at once.
    grant(&mut a.admin, "acme", "g2", "0.50").await;
    let gate = b.gate.clone();
    eventually(Duration::from_secs(5), || {
        let mut gate = gate.clone();
        async move {
            gate.reserve(reserve_amount("acme", "chat", "0.01"))
                .await
                .unwrap()
                .into_inner()
                .decision
                == ALLOWED
        }
    })
    .await;
    a.server.stop().await;
    b.server.stop().await;
    database.drop_database().await;
}
