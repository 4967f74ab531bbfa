//! Stop rules: what happens to work in flight when the wallet paying for it runs out.
//! `stop_running` refuses every Extend, even one adding only time, while nothing is spendable;
//! `finish_running` lets holds already taken run to their end. New work is refused under both.

mod common;

on_both_stores!(
    stop_running_refuses_to_extend_a_hold_once_the_wallet_is_empty,
    finish_running_lets_a_hold_run_to_its_end,
    a_hold_keeps_the_rule_it_was_taken_under,
);

use common::*;
use creditgate::proto::{self, admin_client::AdminClient};
use tonic::transport::Channel;

async fn set_stop(admin: &mut AdminClient<Channel>, stop: proto::StopRule) {
    admin
        .set_prices(proto::SetPricesRequest {
            features: vec![proto::FeaturePrice {
                feature: "agent.minutes".into(),
                rule: Some(proto::feature_price::Rule::PerUnit(proto::PerUnitPrice {
                    unit: "minute".into(),
                    price: "0.10".into(),
                })),
                stop: stop as i32,
                ..Default::default()
            }],
        })
        .await
        .unwrap();
}

/// Holds 0.30 of the account's 1.00 for the agent and spends the rest elsewhere; returns the
/// hold's id.
async fn hold_then_empty_the_wallet(t: &mut TestServer) -> String {
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    let held = t
        .gate
        .reserve(reserve_amount("acme", "agent.minutes", "0.30"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.decision(), proto::Decision::Allowed);
    let spent = t
        .gate
        .charge(charge_amount("acme", "chat", "0.70"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spent.available, "0.00");
    held.reservation_id
}

fn extend(id: &str, additional: &str) -> proto::ExtendRequest {
    proto::ExtendRequest {
        reservation_id: id.into(),
        additional_amount: additional.into(),
        ttl_ms: 120_000,
        idempotency_key: String::new(),
    }
}

async fn new_work_is_refused(t: &mut TestServer) {
    let refused = t
        .gate
        .reserve(reserve_amount("acme", "agent.minutes", "0.01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (refused.decision(), refused.reason()),
        (
            proto::Decision::Denied,
            proto::DenyReason::InsufficientCredits
        )
    );
}

async fn stop_running_refuses_to_extend_a_hold_once_the_wallet_is_empty(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    set_stop(&mut t.admin, proto::StopRule::StopRunning).await;
    let id = hold_then_empty_the_wallet(&mut t).await;

    let refused = t.gate.extend(extend(&id, "")).await.unwrap().into_inner();
    assert_eq!(
        (
            refused.decision(),
            refused.reason(),
            refused.available.as_str()
        ),
        (
            proto::Decision::Denied,
            proto::DenyReason::InsufficientCredits,
            "0.00"
        )
    );
    new_work_is_refused(&mut t).await;
    // The work stops and is charged what it used; the rest of its hold comes back.
    let committed = t
        .gate
        .commit(commit_amount(&id, "0.12"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (committed.charged.as_str(), committed.available.as_str()),
        ("0.12", "0.18")
    );
    // With credit spendable again, extending is allowed again.
    let id = t
        .gate
        .reserve(reserve_amount("acme", "agent.minutes", "0.10"))
        .await
        .unwrap()
        .into_inner()
        .reservation_id;
    let extended = t.gate.extend(extend(&id, "")).await.unwrap().into_inner();
    assert_eq!(extended.decision(), proto::Decision::Allowed);
    t.server.stop().await;
}

async fn finish_running_lets_a_hold_run_to_its_end(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    set_stop(&mut t.admin, proto::StopRule::FinishRunning).await;
    let id = hold_then_empty_the_wallet(&mut t).await;

    let extended = t.gate.extend(extend(&id, "")).await.unwrap().into_inner();
    assert_eq!(extended.decision(), proto::Decision::Allowed);
    assert_eq!(extended.amount, "0.30");
    // But no new money, and no new work.
    let more = t
        .gate
        .extend(extend(&id, "0.01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (more.decision(), more.reason()),
        (
            proto::Decision::Denied,
            proto::DenyReason::InsufficientCredits
        )
    );
    new_work_is_refused(&mut t).await;
    let committed = t
        .gate
        .commit(commit_amount(&id, "0.30"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(committed.charged, "0.30");
    t.server.stop().await;
}

async fn a_hold_keeps_the_rule_it_was_taken_under(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    set_stop(&mut t.admin, proto::StopRule::FinishRunning).await;
    let id = hold_then_empty_the_wallet(&mut t).await;
    set_stop(&mut t.admin, proto::StopRule::StopRunning).await;
    let extended = t.gate.extend(extend(&id, "")).await.unwrap().into_inner();
    assert_eq!(extended.decision(), proto::Decision::Allowed);

    let prices = t
        .admin
        .get_prices(proto::GetPricesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        prices.features[0].stop(),
        proto::StopRule::StopRunning,
        "the catalog shows the rule for new holds"
    );
    t.server.stop().await;
}
