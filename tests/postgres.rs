//! The gate on a PostgreSQL ledger: changes written to the ledger by another system reach the
//! store without a restart, and the ledger explains every balance.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use creditgate::clock::SystemClock;
use creditgate::ledger::LedgerTarget;
use creditgate::proto;
use sqlx::Connection;

async fn start_on(database: &PgDatabase, dir: &std::path::Path) -> TestServer {
    let mut config = config(dir);
    config.ledger = LedgerTarget::Postgres {
        url: database.url.clone(),
    };
    config.limits.inbound_interval_ms = 20;
    start_with(config, Arc::new(SystemClock)).await
}

async fn execute(database: &PgDatabase, sql: &str) {
    let mut connection = sqlx::postgres::PgConnection::connect(&database.url)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
}

#[tokio::test]
async fn grants_voids_and_prices_written_to_the_ledger_reach_the_store_without_a_restart() {
    let database = PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&database, dir.path()).await;
    grant(&mut t.admin, "acme", "welcome", "1.00").await;

    execute(
        &database,
        "INSERT INTO grants (account_id, grant_id, wallet, kind, priority, amount_minor, \
         created_at_ms) VALUES ('acme', 'paid-42', 'default', 'prepaid', 30, 5000000, 0)",
    )
    .await;
    let mut gate = t.gate.clone();
    eventually(Duration::from_secs(10), || {
        let mut gate = gate.clone();
        async move { default_wallet(&mut gate, "acme").await.available == "6.00" }
    })
    .await;
    let hold = gate
        .reserve(reserve_amount("acme", "chat", "5.50"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hold.decision, ALLOWED, "the inserted grant is spendable");
    gate.release(proto::ReleaseRequest {
        reservation_id: hold.reservation_id,
    })
    .await
    .unwrap();

    execute(
        &database,
        "UPDATE grants SET voided_at_ms = 1 WHERE account_id = 'acme' AND grant_id = 'paid-42'",
    )
    .await;
    eventually(Duration::from_secs(10), || {
        let mut gate = gate.clone();
        async move { default_wallet(&mut gate, "acme").await.available == "1.00" }
    })
    .await;

    execute(
        &database,
        r#"INSERT INTO prices (feature, wallet, rule, updated_at_ms) VALUES
           ('image.generate', 'default', '{"per_call":{"price":"0.25"}}', 0)"#,
    )
    .await;
    eventually(Duration::from_secs(10), || {
        let mut admin = t.admin.clone();
        async move {
            let catalog = admin
                .get_prices(proto::GetPricesRequest {})
                .await
                .unwrap()
                .into_inner();
            catalog.features.len() == 1
        }
    })
    .await;
    let image = gate
        .charge(proto::ChargeRequest {
            account_id: "acme".into(),
            feature: "image.generate".into(),
            cost: Some(proto::charge_request::Cost::Usage(proto::Usage::default())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(image.charged, "0.25");

    // The ledger explains the balance: what a rebuild from it shows is what the store shows.
    let before = balance(&mut gate, "acme").await;
    let kinds: Vec<i32> = entries(&mut t.admin, "acme")
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            proto::EntryKind::Charge as i32,
            proto::EntryKind::Void as i32,
            proto::EntryKind::Grant as i32,
            proto::EntryKind::Grant as i32,
        ],
        "the inserted grant and its void have ledger entries"
    );
    t.server.stop().await;
    let mut t = start_on(&database, dir.path()).await;
    assert_eq!(balance(&mut t.gate, "acme").await, before);
    t.server.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn reconcile_finds_drift_and_rebuilds_the_account_from_the_ledger() {
    reconcile_scenario(None).await;
}

#[tokio::test]
async fn reconcile_finds_drift_and_rebuilds_the_account_on_redis() {
    reconcile_scenario(Some(common::redis::RedisServer::start())).await;
}

async fn reconcile_scenario(redis: Option<common::redis::RedisServer>) {
    let database = PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.ledger = LedgerTarget::Postgres {
        url: database.url.clone(),
    };
    config.redis = redis.as_ref().map(|r| r.url());
    let mut t = start_with(config, Arc::new(SystemClock)).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    let hold = t
        .gate
        .reserve(reserve_amount("acme", "chat", "3.00"))
        .await
        .unwrap()
        .into_inner();
    t.gate
        .charge(charge_amount("acme", "chat", "1.00"))
        .await
        .unwrap();
    let reconcile = |rebuild| proto::ReconcileRequest {
        account_id: "acme".into(),
        rebuild,
        ..Default::default()
    };
    let report = t
        .admin
        .reconcile(reconcile(false))
        .await
        .unwrap()
        .into_inner()
        .accounts
        .remove(0);
    assert_eq!(report.outcome, proto::ReconcileOutcome::Compared as i32);
    let wallet = &report.wallets[0];
    assert_eq!(
        (
            wallet.store_remaining.as_str(),
            wallet.ledger_remaining.as_str()
        ),
        ("9.00", "9.00")
    );
    assert_eq!(
        (wallet.store_held.as_str(), wallet.ledger_held.as_str()),
        ("3.00", "3.00")
    );
    assert_eq!(wallet.drift, "0.00", "the ledger explains the store");

    // Someone corrects the grant in the ledger by hand: the store now disagrees.
    execute(
        &database,
        "UPDATE grants SET amount_minor = 12000000 WHERE grant_id = 'g1'",
    )
    .await;
    let report = t
        .admin
        .reconcile(reconcile(false))
        .await
        .unwrap()
        .into_inner()
        .accounts
        .remove(0);
    assert_eq!(report.wallets[0].ledger_remaining, "11.00");
    assert_eq!(report.wallets[0].drift, "2.00");

    let report = t
        .admin
        .reconcile(reconcile(true))
        .await
        .unwrap()
        .into_inner()
        .accounts
        .remove(0);
    assert!(report.rebuilt);
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(
        (wallet.available.as_str(), wallet.held.as_str()),
        ("8.00", "3.00")
    );
    let report = t
        .admin
        .reconcile(reconcile(false))
        .await
        .unwrap()
        .into_inner()
        .accounts
        .remove(0);
    assert_eq!(report.wallets[0].drift, "0.00");
    // The open hold survived the rebuild and still commits.
    t.gate
        .commit(commit_amount(&hold.reservation_id, "3.00"))
        .await
        .unwrap();
    assert_eq!(default_wallet(&mut t.gate, "acme").await.available, "8.00");
    t.server.stop().await;
    database.drop_database().await;
}

/// The database URL with its host and port replaced by `addr`.
fn through(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme_user, rest) = url.split_once('@').expect("URL has user@host");
    let (_, path) = rest.split_once('/').expect("URL names a database");
    format!("{scheme_user}@{addr}/{path}")
}

fn host_port(url: &str) -> std::net::SocketAddr {
    let (_, rest) = url.split_once('@').unwrap();
    let (host_port, _) = rest.split_once('/').unwrap();
    use std::net::ToSocketAddrs;
    host_port.to_socket_addrs().unwrap().next().unwrap()
}

#[tokio::test]
async fn while_postgres_is_unreachable_commits_fail_unavailable_never_falsely_ok() {
    let database = PgDatabase::create().await;
    let proxy = common::proxy::Proxy::start(host_port(&database.url)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.ledger = LedgerTarget::Postgres {
        url: through(&database.url, proxy.addr),
    };
    config.limits.ledger_timeout_ms = 500;
    config.limits.outbox_len_max = 100;
    let mut t = start_with(config, Arc::new(SystemClock)).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    let hold = t
        .gate
        .reserve(reserve_amount("acme", "chat", "3.00"))
        .await
        .unwrap()
        .into_inner();

    proxy.cut();
    let commit = commit_amount(&hold.reservation_id, "2.50");
    for _ in 0..2 {
        let status = t.gate.commit(commit.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    let charge = t
        .gate
        .charge(charge_amount("acme", "chat", "0.01"))
        .await
        .unwrap_err();
    assert_eq!(charge.code(), tonic::Code::Unavailable);

    // New holds need no ledger, but the outbox waiting for it is bounded: once full, the gate
    // refuses rather than acknowledge what the ledger may never get.
    let mut held = 0;
    let refused = loop {
        match t.gate.reserve(reserve_amount("acme", "chat", "0.01")).await {
            Ok(_) => held += 1,
            Err(status) => break status,
        }
        assert!(held <= 100, "the outbox bound was not enforced");
    };
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        refused.message().contains("outbox"),
        "{}",
        refused.message()
    );

    proxy.restore();
    let mut gate = t.gate.clone();
    let committed = loop {
        match gate.commit(commit.clone()).await {
            Ok(reply) => break reply.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(committed.charged, "2.50");
    assert_eq!(committed.available, "7.50", "the first answer, whole");
    let commits = entries(&mut t.admin, "acme")
        .await
        .into_iter()
        .filter(|e| e.kind == proto::EntryKind::Commit as i32)
        .count();
    assert_eq!(commits, 1, "the commit reached the ledger exactly once");
    let report = t
        .admin
        .reconcile(proto::ReconcileRequest {
            account_id: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.accounts[0].wallets[0].drift, "0.00");
    t.server.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn at_store_durability_the_gate_serves_through_a_ledger_outage_within_the_outbox_bound() {
    let database = PgDatabase::create().await;
    let proxy = common::proxy::Proxy::start(host_port(&database.url)).await;
    let redis = common::redis::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.ledger = LedgerTarget::Postgres {
        url: through(&database.url, proxy.addr),
    };
    config.redis = Some(redis.url());
    config.commit_durability = creditgate::config::CommitDurability::Store;
    config.limits.ledger_timeout_ms = 500;
    config.limits.redis_partitions = 4;
    config.limits.outbox_len_max = 40;
    let mut t = start_with(config, Arc::new(SystemClock)).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    let admin = t.admin.clone();
    eventually(Duration::from_secs(10), || {
        let mut admin = admin.clone();
        async move { !entries(&mut admin, "acme").await.is_empty() }
    })
    .await;

    proxy.cut();
    let mut acknowledged = 0;
    let refused = loop {
        match t.gate.charge(charge_amount("acme", "chat", "0.01")).await {
            Ok(reply) => {
                assert_eq!(reply.into_inner().decision, ALLOWED);
                acknowledged += 1;
            }
            Err(status) => break status,
        }
        assert!(
            acknowledged <= 10,
            "the outbox bound (10 a partition) was not enforced"
        );
    };
    assert!(
        acknowledged > 0,
        "the gate kept serving while the ledger was away"
    );
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        refused.message().contains("outbox"),
        "{}",
        refused.message()
    );

    proxy.restore();
    let expected = format!("0.{acknowledged:02}");
    eventually(Duration::from_secs(20), || {
        let mut admin = admin.clone();
        let expected = expected.clone();
        async move {
            let usage = admin
                .get_usage(proto::GetUsageRequest {
                    account_id: "acme".into(),
                    ..Default::default()
                })
                .await;
            usage.is_ok_and(|u| u.into_inner().total == expected)
        }
    })
    .await;
    let charged = t
        .gate
        .charge(charge_amount("acme", "chat", "0.01"))
        .await
        .expect("the outbox drained, so writes are taken again");
    assert_eq!(charged.into_inner().decision, ALLOWED);
    t.server.stop().await;
    database.drop_database().await;
}
