//! WatchBalance: a snapshot, then DEPLETED and REPLENISHED as a wallet runs out and is topped
//! up, on each store and across two replicas sharing one Redis.

mod common;

on_both_stores!(
    a_watcher_sees_the_snapshot_then_its_wallets_run_out_and_come_back,
    a_watcher_is_told_when_a_hold_expires,
    malformed_watches_are_refused_naming_the_field,
);

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;
use creditgate::clock::SystemClock;
use creditgate::ledger::LedgerTarget;
use creditgate::proto::{self, gate_client::GateClient};
use tonic::Code;
use tonic::transport::Channel;

/// Long enough on a loaded machine; an event normally arrives within milliseconds.
const EVENT_WAIT: Duration = Duration::from_secs(10);

async fn watch(
    gate: &mut GateClient<Channel>,
    account: &str,
    wallets: &[&str],
) -> tonic::Streaming<proto::BalanceEvent> {
    gate.watch_balance(proto::WatchBalanceRequest {
        account_id: account.into(),
        wallets: wallets.iter().map(|w| (*w).to_owned()).collect(),
    })
    .await
    .expect("watching starts")
    .into_inner()
}

async fn next(stream: &mut tonic::Streaming<proto::BalanceEvent>) -> proto::BalanceEvent {
    tokio::time::timeout(EVENT_WAIT, stream.message())
        .await
        .expect("an event in time")
        .expect("the stream is healthy")
        .expect("the stream goes on")
}

fn kind(event: &proto::BalanceEvent) -> proto::BalanceEventKind {
    proto::BalanceEventKind::try_from(event.kind).unwrap()
}

async fn a_watcher_sees_the_snapshot_then_its_wallets_run_out_and_come_back(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    let mut all = watch(&mut t.gate, "acme", &[]).await;
    let mut cloud_only = watch(&mut t.gate, "acme", &["cloud"]).await;
    let snapshot = next(&mut all).await;
    assert_eq!(kind(&snapshot), proto::BalanceEventKind::Snapshot);
    let wallets = &snapshot.snapshot.as_ref().unwrap().wallets;
    assert_eq!(wallets[0].available, "1.00");
    assert_eq!(
        kind(&next(&mut cloud_only).await),
        proto::BalanceEventKind::Snapshot
    );

    let spent = t
        .gate
        .charge(charge_amount("acme", "chat", "1.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spent.available, "0.00");
    let depleted = next(&mut all).await;
    assert_eq!(kind(&depleted), proto::BalanceEventKind::Depleted);
    assert_eq!(
        (depleted.account_id.as_str(), depleted.wallet.as_str()),
        ("acme", "default")
    );
    assert!(depleted.at_ms > 0);

    grant(&mut t.admin, "acme", "g2", "0.50").await;
    let replenished = next(&mut all).await;
    assert_eq!(kind(&replenished), proto::BalanceEventKind::Replenished);

    // The cloud-only watcher saw none of that: its first event is the cloud wallet's.
    let cloud = proto::AddGrantRequest {
        account_id: "acme".into(),
        grant_id: "c1".into(),
        wallet: "cloud".into(),
        amount: "2.00".into(),
        ..Default::default()
    };
    t.admin.add_grant(cloud).await.unwrap();
    let event = next(&mut cloud_only).await;
    assert_eq!(
        (kind(&event), event.wallet.as_str()),
        (proto::BalanceEventKind::Replenished, "cloud")
    );

    // A watcher that goes away leaves the others and the gate unaffected.
    drop(all);
    t.gate
        .charge(charge_amount("acme", "chat", "0.50"))
        .await
        .unwrap();
    drop(cloud_only);
    t.server.stop().await;
}

async fn a_watcher_is_told_when_a_hold_expires(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    let mut watching = watch(&mut t.gate, "acme", &[]).await;
    assert_eq!(
        kind(&next(&mut watching).await),
        proto::BalanceEventKind::Snapshot
    );
    let mut request = reserve_amount("acme", "agent.minutes", "0.40");
    request.ttl_ms = 1_000;
    let hold = t.gate.reserve(request).await.unwrap().into_inner();
    assert_eq!(hold.decision, ALLOWED);
    // The sweep gives it back at most one sweep interval (1 s) after its expiry.
    let expired = next(&mut watching).await;
    assert_eq!(kind(&expired), proto::BalanceEventKind::HoldExpired);
    assert_eq!(
        (expired.reservation_id.as_str(), expired.wallet.as_str()),
        (hold.reservation_id.as_str(), "default")
    );
    assert_eq!(default_wallet(&mut t.gate, "acme").await.available, "1.00");
    drop(watching);
    t.server.stop().await;
}

async fn malformed_watches_are_refused_naming_the_field(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    for (field, request) in [
        (
            "account_id",
            proto::WatchBalanceRequest {
                account_id: "a b".into(),
                wallets: vec![],
            },
        ),
        (
            "wallets[1]",
            proto::WatchBalanceRequest {
                account_id: "acme".into(),
                wallets: vec!["cloud".into(), "no/such".into()],
            },
        ),
    ] {
        let status = t.gate.watch_balance(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    let status = t
        .gate
        .watch_balance(proto::WatchBalanceRequest {
            account_id: "nobody".into(),
            wallets: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    t.server.stop().await;
}

/// Two replicas on one Redis: a charge on one empties the wallet, and a watcher on the other
/// is told, and a Reserve there is denied, within a bound measured here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_emptied_on_one_replica_is_announced_on_the_other() {
    let redis = RedisServer::start();
    let database = PgDatabase::create().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let replica = |dir: std::path::PathBuf| {
        let mut config = config(&dir);
        config.redis = Some(redis.url());
        config.ledger = LedgerTarget::Postgres {
            url: database.url.clone(),
        };
        start_with(config, Arc::new(SystemClock))
    };
    let mut a = replica(dir_a.path().to_owned()).await;
    let mut b = replica(dir_b.path().to_owned()).await;
    grant(&mut a.admin, "acme", "g1", "1.00").await;
    let mut watching = watch(&mut b.gate, "acme", &[]).await;
    assert_eq!(
        kind(&next(&mut watching).await),
        proto::BalanceEventKind::Snapshot
    );

    let started = Instant::now();
    a.gate
        .charge(charge_amount("acme", "chat", "1.00"))
        .await
        .unwrap();
    let depleted = next(&mut watching).await;
    let told = started.elapsed();
    assert_eq!(kind(&depleted), proto::BalanceEventKind::Depleted);
    let denied = b
        .gate
        .reserve(reserve_amount("acme", "chat", "0.01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.decision, DENIED);
    println!("DEPLETED reached the other replica's watcher {told:?} after the charge was sent");
    a.server.stop().await;
    drop(watching);
    b.server.stop().await;
}
