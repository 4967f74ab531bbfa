//! Alerts, auto top-up and spend limits reached, as WatchBalance events: each threshold once per
//! crossing, re-armed by credit coming in; one top-up request per crossing until a grant
//! answers it, on each store and across replicas sharing one Redis.

mod common;

on_both_stores!(
    thresholds_fire_once_per_crossing_and_again_after_a_top_up,
    concurrent_spending_crosses_a_threshold_once,
    auto_top_up_asks_once_until_a_grant_answers,
    a_spend_limit_reached_is_an_event,
    alerts_survive_a_restart_without_firing_again,
    a_fired_threshold_stays_fired_across_a_restart,
);

use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use common::*;
use creditgate::clock::SystemClock;
use creditgate::ledger::LedgerTarget;
use creditgate::proto::{self, admin_client::AdminClient, gate_client::GateClient};
use tonic::Code;
use tonic::transport::Channel;

use proto::BalanceEventKind as Kind;
use proto::alert_threshold::When;

/// Long enough on a loaded machine; an event normally arrives within milliseconds.
const EVENT_WAIT: Duration = Duration::from_secs(10);

type Events = tonic::Streaming<proto::BalanceEvent>;

/// Watches an account, past its snapshot.
async fn watch(gate: &mut GateClient<Channel>) -> Events {
    let mut events = gate
        .watch_balance(proto::WatchBalanceRequest {
            account_id: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("watching starts")
        .into_inner();
    assert_eq!(next(&mut events).await.kind(), Kind::Snapshot);
    events
}

async fn next(events: &mut Events) -> proto::BalanceEvent {
    tokio::time::timeout(EVENT_WAIT, events.message())
        .await
        .expect("an event in time")
        .expect("the stream is healthy")
        .expect("the stream goes on")
}

/// Every event up to and including the first of `kind`.
async fn until(events: &mut Events, kind: Kind) -> Vec<proto::BalanceEvent> {
    let mut seen = Vec::new();
    loop {
        let event = next(events).await;
        let last = event.kind() == kind;
        seen.push(event);
        if last {
            return seen;
        }
    }
}

fn kinds(events: &[proto::BalanceEvent]) -> Vec<Kind> {
    events.iter().map(|e| e.kind()).collect()
}

fn below(amount: &str) -> proto::AlertThreshold {
    proto::AlertThreshold {
        when: Some(When::Below(amount.into())),
        armed: false,
    }
}

fn used_percent(percent: u32) -> proto::AlertThreshold {
    proto::AlertThreshold {
        when: Some(When::AllowanceUsedPercent(percent)),
        armed: false,
    }
}

fn top_up_to(below: &str, target: &str) -> proto::AutoTopUp {
    proto::AutoTopUp {
        below: below.into(),
        size: Some(proto::auto_top_up::Size::Target(target.into())),
    }
}

async fn set_alerts(
    admin: &mut AdminClient<Channel>,
    thresholds: Vec<proto::AlertThreshold>,
    auto_top_up: Option<proto::AutoTopUp>,
) -> proto::WalletAlerts {
    admin
        .set_alerts(proto::SetAlertsRequest {
            account_id: "acme".into(),
            wallet: String::new(),
            thresholds,
            auto_top_up,
        })
        .await
        .expect("alerts are set")
        .into_inner()
}

async fn charge(gate: &mut GateClient<Channel>, amount: &str) -> proto::ChargeResponse {
    gate.charge(charge_amount("acme", "chat", amount))
        .await
        .expect("charge answers")
        .into_inner()
}

async fn included(admin: &mut AdminClient<Channel>, id: &str, amount: &str) {
    admin
        .add_grant(proto::AddGrantRequest {
            account_id: "acme".into(),
            grant_id: id.into(),
            amount: amount.into(),
            kind: proto::GrantKind::Included as i32,
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn wallet_alerts(gate: &mut GateClient<Channel>) -> proto::WalletAlerts {
    default_wallet(gate, "acme")
        .await
        .alerts
        .expect("the wallet shows its alerts")
}

async fn thresholds_fire_once_per_crossing_and_again_after_a_top_up(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    included(&mut t.admin, "plan", "10.00").await;
    let set = set_alerts(&mut t.admin, vec![below("5.00"), used_percent(80)], None).await;
    assert_eq!(
        set.thresholds.iter().map(|t| t.armed).collect::<Vec<_>>(),
        [true, true]
    );
    let mut events = watch(&mut t.gate).await;

    charge(&mut t.gate, "4.00").await;
    charge(&mut t.gate, "2.00").await; // 4.00 left: below 5.00
    let low = until(&mut events, Kind::LowBalance).await;
    assert_eq!(kinds(&low), [Kind::LowBalance]);
    assert_eq!(
        (low[0].threshold.as_str(), low[0].available.as_str()),
        ("5.00", "4.00")
    );
    assert!(low[0].event_id.starts_with("evt/acme/"));
    charge(&mut t.gate, "1.00").await; // 3.00 left: LOW_BALANCE does not fire again
    charge(&mut t.gate, "1.00").await; // 2.00 left: 80% of the plan used
    let alert = until(&mut events, Kind::Alert).await;
    assert_eq!(kinds(&alert), [Kind::Alert], "no second LOW_BALANCE");
    assert_eq!(alert[0].allowance_used_percent, 80);
    let armed = wallet_alerts(&mut t.gate).await;
    assert_eq!(
        armed.thresholds.iter().map(|t| t.armed).collect::<Vec<_>>(),
        [false, false]
    );

    // A top-up lifts the wallet over both: they are armed again, and fire on the next crossing.
    included(&mut t.admin, "plan-2", "10.00").await;
    let armed = wallet_alerts(&mut t.gate).await;
    assert_eq!(
        armed.thresholds.iter().map(|t| t.armed).collect::<Vec<_>>(),
        [true, true]
    );
    charge(&mut t.gate, "10.00").await; // 2.00 of 20.00 left
    let again = until(&mut events, Kind::Alert).await;
    assert_eq!(kinds(&again), [Kind::LowBalance, Kind::Alert]);
    t.server.stop().await;
}

async fn concurrent_spending_crosses_a_threshold_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    set_alerts(&mut t.admin, vec![below("5.00")], None).await;
    let mut events = watch(&mut t.gate).await;

    let charges: Vec<_> = (0..20)
        .map(|_| {
            let mut gate = t.gate.clone();
            tokio::spawn(async move { charge(&mut gate, "0.50").await })
        })
        .collect();
    for charge in charges {
        assert_eq!(charge.await.unwrap().decision(), proto::Decision::Allowed);
    }
    let seen = until(&mut events, Kind::Depleted).await;
    assert_eq!(
        kinds(&seen),
        [Kind::LowBalance, Kind::Depleted],
        "one LOW_BALANCE however the charges interleaved"
    );
    t.server.stop().await;
}

async fn auto_top_up_asks_once_until_a_grant_answers(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    set_alerts(&mut t.admin, vec![], Some(top_up_to("2.00", "10.00"))).await;
    let mut events = watch(&mut t.gate).await;

    charge(&mut t.gate, "8.50").await;
    let asked = until(&mut events, Kind::TopUpRequested).await;
    assert_eq!(kinds(&asked), [Kind::TopUpRequested]);
    let request = asked[0].top_up_request_id.clone();
    assert_eq!(request, "topup/acme/default/1");
    assert_eq!(
        asked[0].top_up_amount, "8.50",
        "what brings 1.50 back to 10.00"
    );
    charge(&mut t.gate, "1.00").await;
    assert_eq!(
        wallet_alerts(&mut t.gate).await.open_top_up_request_id,
        request,
        "still the one request"
    );

    // A grant naming another wallet's request is refused and changes nothing.
    let wrong = t
        .admin
        .add_grant(proto::AddGrantRequest {
            account_id: "acme".into(),
            grant_id: "topup-1".into(),
            amount: "8.50".into(),
            top_up_request_id: "topup/acme/cloud/1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    assert!(
        wrong.message().starts_with("top_up_request_id"),
        "{}",
        wrong.message()
    );

    // A grant naming a request that is not the open one is credit, and closes nothing.
    for (id, request) in [
        ("late", "topup/acme/default/7"),
        ("long", "topup/acme/default/1234567890123456"),
    ] {
        let answer = t
            .admin
            .add_grant(proto::AddGrantRequest {
                account_id: "acme".into(),
                grant_id: id.into(),
                amount: "0.01".into(),
                top_up_request_id: request.into(),
                ..Default::default()
            })
            .await;
        match id {
            "late" => assert!(answer.is_ok()),
            _ => assert_eq!(answer.unwrap_err().code(), Code::InvalidArgument),
        }
    }
    assert_eq!(
        wallet_alerts(&mut t.gate).await.open_top_up_request_id,
        request
    );

    // The payment side's grant answers it; the next crossing asks again.
    t.admin
        .add_grant(proto::AddGrantRequest {
            account_id: "acme".into(),
            grant_id: "topup-1".into(),
            amount: "8.50".into(),
            top_up_request_id: request.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(wallet_alerts(&mut t.gate).await.open_top_up_request_id, "");
    charge(&mut t.gate, "8.01").await;
    let again = until(&mut events, Kind::TopUpRequested).await;
    let last = again.last().unwrap();
    assert_eq!(last.top_up_request_id, "topup/acme/default/2");
    assert_eq!(
        again
            .iter()
            .filter(|e| e.kind() == Kind::TopUpRequested)
            .count(),
        1
    );
    t.server.stop().await;
}

async fn a_spend_limit_reached_is_an_event(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    t.admin
        .set_limit(proto::SetLimitRequest {
            account_id: "acme".into(),
            label_key: "project".into(),
            label_value: "atlas".into(),
            per: proto::LimitPer::Day as i32,
            amount: "1.00".into(),
            remove: false,
        })
        .await
        .unwrap();
    let mut events = watch(&mut t.gate).await;
    let mut request = charge_amount("acme", "chat", "0.60");
    request.labels = [("project".to_owned(), "atlas".to_owned())].into();
    t.gate.charge(request.clone()).await.unwrap();
    t.gate.charge(request.clone()).await.unwrap(); // 0.40 left: a partial charge is refused
    let mut hold = reserve_amount("acme", "chat", "0.40");
    hold.labels = request.labels.clone();
    let held = t.gate.reserve(hold).await.unwrap().into_inner();
    assert_eq!(held.decision(), proto::Decision::Allowed);
    let reached = until(&mut events, Kind::LimitReached).await;
    assert_eq!(kinds(&reached), [Kind::LimitReached]);
    assert_eq!(reached[0].limit, "project=atlas/day");
    t.server.stop().await;
}

async fn alerts_survive_a_restart_without_firing_again(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    set_alerts(
        &mut t.admin,
        vec![below("5.00")],
        Some(top_up_to("2.00", "10.00")),
    )
    .await;
    charge(&mut t.gate, "9.00").await;
    let before = wallet_alerts(&mut t.gate).await;
    assert_eq!(before.open_top_up_request_id, "topup/acme/default/1");
    t.server.stop().await;
    if let Backend::Redis(redis) = &backend {
        // Redis emptied too: the account comes back from the ledger.
        redis.flush();
    }

    let mut t = start_on(&backend, dir.path()).await;
    let mut events = watch(&mut t.gate).await;
    let after = wallet_alerts(&mut t.gate).await;
    assert_eq!(after.open_top_up_request_id, "topup/acme/default/1");
    assert_eq!(after.thresholds.len(), 1);
    assert!(!after.thresholds[0].armed, "already past it: not armed");
    charge(&mut t.gate, "1.00").await;
    let seen = until(&mut events, Kind::Depleted).await;
    assert_eq!(kinds(&seen), [Kind::Depleted], "nothing fires again");
    t.server.stop().await;
}

async fn a_fired_threshold_stays_fired_across_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    set_alerts(&mut t.admin, vec![below("5.00")], None).await;
    let mut events = watch(&mut t.gate).await;
    let held = t
        .gate
        .reserve(reserve_amount("acme", "chat", "6.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        kinds(&until(&mut events, Kind::LowBalance).await),
        [Kind::LowBalance]
    );
    // The hold given back lifts the wallet over the threshold, which is not credit coming in:
    // the threshold stays fired.
    t.gate
        .release(proto::ReleaseRequest {
            reservation_id: held.reservation_id,
        })
        .await
        .unwrap();
    assert!(!wallet_alerts(&mut t.gate).await.thresholds[0].armed);
    t.server.stop().await;
    if let Backend::Redis(redis) = &backend {
        redis.flush();
    }

    let mut t = start_on(&backend, dir.path()).await;
    assert!(
        !wallet_alerts(&mut t.gate).await.thresholds[0].armed,
        "still fired after loading the account again"
    );
    let mut events = watch(&mut t.gate).await;
    t.gate
        .reserve(reserve_amount("acme", "chat", "6.00"))
        .await
        .unwrap();
    charge(&mut t.gate, "4.00").await;
    let seen = until(&mut events, Kind::Depleted).await;
    assert_eq!(kinds(&seen), [Kind::Depleted], "no second LOW_BALANCE");
    t.server.stop().await;
}

/// Two replicas on one Redis, charging at once: one LOW_BALANCE and one top-up request in all,
/// whichever replica crossed the thresholds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_replicas_cross_a_threshold_once() {
    let redis = RedisServer::start();
    let database = PgDatabase::create().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut replicas = Vec::new();
    for dir in &dirs {
        let mut config = config(dir.path());
        config.redis = Some(redis.url());
        config.ledger = LedgerTarget::Postgres {
            url: database.url.clone(),
        };
        replicas.push(start_with(config, Arc::new(SystemClock)).await);
    }
    grant(&mut replicas[0].admin, "acme", "g1", "10.00").await;
    set_alerts(
        &mut replicas[0].admin,
        vec![below("5.00")],
        Some(top_up_to("3.00", "10.00")),
    )
    .await;
    let mut events = watch(&mut replicas[1].gate).await;

    let charges: Vec<_> = (0..20)
        .map(|i| {
            let mut gate = replicas[i % 2].gate.clone();
            tokio::spawn(async move { charge(&mut gate, "0.50").await })
        })
        .collect();
    for charge in charges {
        assert_eq!(charge.await.unwrap().decision(), proto::Decision::Allowed);
    }
    let seen = until(&mut events, Kind::Depleted).await;
    assert_eq!(
        kinds(&seen),
        [Kind::LowBalance, Kind::TopUpRequested, Kind::Depleted]
    );
    for replica in replicas {
        replica.server.stop().await;
    }
    database.drop_database().await;
}

async fn malformed(admin: &mut AdminClient<Channel>, request: proto::SetAlertsRequest) -> String {
    let status = admin.set_alerts(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    status.message().to_owned()
}

#[tokio::test]
async fn malformed_alerts_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start(dir.path()).await;
    let request = |thresholds, auto_top_up| proto::SetAlertsRequest {
        account_id: "acme".into(),
        wallet: String::new(),
        thresholds,
        auto_top_up,
    };
    for (field, r) in [
        ("account_id", proto::SetAlertsRequest::default()),
        ("thresholds[0].below", request(vec![below("-1")], None)),
        ("thresholds[0].below", request(vec![below("0")], None)),
        (
            "thresholds[1].allowance_used_percent",
            request(vec![below("1"), used_percent(101)], None),
        ),
        (
            "thresholds[1]",
            request(vec![used_percent(80), used_percent(80)], None),
        ),
        (
            "thresholds[0]",
            request(vec![proto::AlertThreshold::default()], None),
        ),
        (
            "auto_top_up.target",
            request(vec![], Some(top_up_to("5.00", "5.00"))),
        ),
        (
            "auto_top_up",
            request(
                vec![],
                Some(proto::AutoTopUp {
                    below: "1.00".into(),
                    size: None,
                }),
            ),
        ),
    ] {
        let message = malformed(&mut t.admin, r).await;
        assert!(message.starts_with(field), "{field}: {message}");
    }
    let absent = t
        .gate
        .get_balance(proto::GetBalanceRequest {
            account_id: "acme".into(),
            wallet: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(absent.code(), Code::NotFound, "nothing was created");
    t.server.stop().await;
}

/// A plan's allowance given again at its period's start re-arms the alert on it.
#[tokio::test]
async fn a_plan_reset_re_arms_the_allowance_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, clock) = start_manual(dir.path()).await;
    t.admin
        .add_grant(proto::AddGrantRequest {
            account_id: "acme".into(),
            grant_id: "plan".into(),
            amount: "10.00".into(),
            kind: proto::GrantKind::Included as i32,
            period: proto::Period::Month as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    set_alerts(&mut t.admin, vec![used_percent(80)], None).await;
    let mut events = watch(&mut t.gate).await;
    charge(&mut t.gate, "8.00").await;
    assert_eq!(kinds(&until(&mut events, Kind::Alert).await), [Kind::Alert]);
    assert!(!wallet_alerts(&mut t.gate).await.thresholds[0].armed);

    clock.advance_ms(32 * 86_400_000);
    // The first call of the new period gives the allowance again: 10% of it used.
    charge(&mut t.gate, "1.00").await;
    assert!(
        wallet_alerts(&mut t.gate).await.thresholds[0].armed,
        "re-armed by the reset"
    );
    charge(&mut t.gate, "7.00").await;
    assert_eq!(kinds(&until(&mut events, Kind::Alert).await), [Kind::Alert]);
    t.server.stop().await;
}
