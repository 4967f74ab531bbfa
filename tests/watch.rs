//! WatchBalance: a snapshot, then DEPLETED and REPLENISHED as a wallet runs out and is topped
//! up, on each store and across two replicas sharing one Redis; a watcher that stops reading;
//! watching the wallet of a feature.
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
        features: vec![],
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
                ..Default::default()
            },
        ),
        (
            "wallets[1]",
            proto::WatchBalanceRequest {
                account_id: "acme".into(),
                wallets: vec!["cloud".into(), "no/such".into()],
                features: vec![],
            },
        ),
        (
            "features[1]",
            proto::WatchBalanceRequest {
                account_id: "acme".into(),
                wallets: vec![],
                features: vec!["chat".into(), String::new()],
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
            ..Default::default()
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

/// A watcher that stops reading is dropped with RESOURCE_EXHAUSTED once its queue is full,
/// while the gate goes on at its own pace; watchers that go away leave nothing behind.
#[tokio::test]
async fn a_watcher_that_stops_reading_is_dropped_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start(dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    // A client whose flow-control window lets the server push almost nothing ahead of it.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", t.server.gate_addr()))
            .unwrap()
            .initial_stream_window_size(Some(1_024))
            .initial_connection_window_size(Some(1_024))
            .connect()
            .await
            .unwrap();
    let mut slow = watch(&mut GateClient::new(channel), "acme", &[]).await;
    let others: Vec<_> = open_watchers(&mut t.gate, 3).await;
    assert_eq!(t.server.watchers(), 4);

    // 200 events, each pair a hold that empties the wallet and its release.
    let started = Instant::now();
    for _ in 0..100 {
        let held = t
            .gate
            .reserve(reserve_amount("acme", "chat", "1.00"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(held.decision, proto::Decision::Allowed as i32);
        t.gate
            .release(proto::ReleaseRequest {
                reservation_id: held.reservation_id,
            })
            .await
            .unwrap();
    }
    println!(
        "300 events with a watcher not reading: {:?}",
        started.elapsed()
    );

    // Reading again, it gets what was queued, then the reason it was dropped.
    let mut read = 0;
    let status = loop {
        match tokio::time::timeout(EVENT_WAIT, slow.message())
            .await
            .unwrap()
        {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("the stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(read < 200, "dropped before the end: read {read}");

    drop(others);
    eventually(EVENT_WAIT, || {
        let watchers = t.server.watchers();
        async move { watchers == 0 }
    })
    .await;
    t.server.stop().await;
}

/// Opens `n` watchers of acme, past their snapshots.
async fn open_watchers(
    gate: &mut GateClient<Channel>,
    n: usize,
) -> Vec<tonic::Streaming<proto::BalanceEvent>> {
    let mut watchers = Vec::new();
    for _ in 0..n {
        let mut stream = watch(gate, "acme", &[]).await;
        assert_eq!(
            kind(&next(&mut stream).await),
            proto::BalanceEventKind::Snapshot
        );
        watchers.push(stream);
    }
    watchers
}

/// Watching a feature watches the wallet the catalog says pays for it.
#[tokio::test]
async fn a_watcher_of_a_feature_sees_the_wallet_that_pays_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start(dir.path()).await;
    t.admin
        .set_prices(proto::SetPricesRequest {
            features: vec![proto::FeaturePrice {
                feature: "agent.minutes".into(),
                wallet: "cloud".into(),
                rule: Some(proto::feature_price::Rule::PerCall(proto::PerCallPrice {
                    price: "0.10".into(),
                })),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    let mut minutes = t
        .gate
        .watch_balance(proto::WatchBalanceRequest {
            account_id: "acme".into(),
            wallets: vec![],
            features: vec!["agent.minutes".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        kind(&next(&mut minutes).await),
        proto::BalanceEventKind::Snapshot
    );
    // The default wallet running out is not its business; the cloud wallet's top-up is.
    t.gate
        .charge(charge_amount("acme", "chat", "1.00"))
        .await
        .unwrap();
    t.admin
        .add_grant(proto::AddGrantRequest {
            account_id: "acme".into(),
            grant_id: "c1".into(),
            wallet: "cloud".into(),
            amount: "2.00".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let event = next(&mut minutes).await;
    assert_eq!(
        (kind(&event), event.wallet.as_str()),
        (proto::BalanceEventKind::Replenished, "cloud")
    );
    t.server.stop().await;
}
