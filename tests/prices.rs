//! Price versions: a price set ahead takes over at its effective time, the catalog lists the
//! price in force and those to come, holds keep the price they were taken at, and versions
//! survive a restart.

mod common;

use common::*;
use creditgate::clock::Clock;
use creditgate::proto::{self, admin_client::AdminClient, gate_client::GateClient};
use tonic::Code;
use tonic::transport::Channel;

const HOUR_MS: i64 = 3_600_000;

fn per_minute(price: &str, effective_at_ms: i64) -> proto::FeaturePrice {
    proto::FeaturePrice {
        feature: "agent.minutes".into(),
        rule: Some(proto::feature_price::Rule::PerUnit(proto::PerUnitPrice {
            unit: "minute".into(),
            price: price.into(),
        })),
        effective_at_ms,
        ..Default::default()
    }
}

async fn set(
    admin: &mut AdminClient<Channel>,
    price: proto::FeaturePrice,
) -> Result<proto::PriceCatalog, tonic::Status> {
    admin
        .set_prices(proto::SetPricesRequest {
            features: vec![price],
        })
        .await
        .map(|r| r.into_inner())
}

/// (price, effective_at_ms) of each version listed.
async fn listed(admin: &mut AdminClient<Channel>) -> Vec<(String, i64)> {
    admin
        .get_prices(proto::GetPricesRequest {})
        .await
        .unwrap()
        .into_inner()
        .features
        .into_iter()
        .map(|p| match p.rule {
            Some(proto::feature_price::Rule::PerUnit(u)) => (u.price, p.effective_at_ms),
            other => panic!("{other:?}"),
        })
        .collect()
}

async fn hold_minutes(gate: &mut GateClient<Channel>, minutes: &str) -> proto::ReserveResponse {
    gate.reserve(proto::ReserveRequest {
        account_id: "acme".into(),
        feature: "agent.minutes".into(),
        cost: Some(proto::reserve_request::Cost::Usage(proto::Usage {
            units: minutes.into(),
            ..Default::default()
        })),
        ttl_ms: 2 * HOUR_MS as u64,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test]
async fn a_price_set_ahead_takes_over_at_its_time_and_never_changes_a_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, clock) = start_manual(dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "100.00").await;
    let now = clock.now_ms();
    set(&mut t.admin, per_minute("0.05", 0)).await.unwrap();
    set(&mut t.admin, per_minute("0.08", now + HOUR_MS))
        .await
        .unwrap();
    assert_eq!(
        listed(&mut t.admin).await,
        [("0.05".into(), now), ("0.08".into(), now + HOUR_MS)],
        "the price in force and the one set ahead"
    );
    let before = hold_minutes(&mut t.gate, "10").await;
    assert_eq!(before.amount, "0.50");

    clock.advance_ms(HOUR_MS - 1);
    assert_eq!(hold_minutes(&mut t.gate, "10").await.amount, "0.50");
    clock.advance_ms(1);
    assert_eq!(hold_minutes(&mut t.gate, "10").await.amount, "0.80");
    assert_eq!(
        listed(&mut t.admin).await,
        [("0.08".into(), now + HOUR_MS)],
        "the old price is gone once the new one is in force"
    );
    // The hold taken before keeps its price.
    let committed = t
        .gate
        .commit(proto::CommitRequest {
            reservation_id: before.reservation_id,
            actual: Some(proto::commit_request::Actual::Usage(proto::Usage {
                units: "10".into(),
                ..Default::default()
            })),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(committed.charged, "0.50");

    // Versions set ahead are kept in the ledger.
    set(&mut t.admin, per_minute("0.10", now + 3 * HOUR_MS))
        .await
        .unwrap();
    t.server.stop().await;
    let mut t = start_with(config(dir.path()), clock.clone()).await;
    assert_eq!(
        listed(&mut t.admin).await,
        [
            ("0.08".into(), now + HOUR_MS),
            ("0.10".into(), now + 3 * HOUR_MS)
        ]
    );
    clock.advance_ms(2 * HOUR_MS);
    assert_eq!(hold_minutes(&mut t.gate, "10").await.amount, "1.00");
    t.server.stop().await;
}

#[tokio::test]
async fn a_price_cannot_take_effect_in_the_past() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, clock) = start_manual(dir.path()).await;
    let status = set(&mut t.admin, per_minute("0.05", clock.now_ms() - 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("features[0].effective_at_ms"),
        "{}",
        status.message()
    );
    assert!(listed(&mut t.admin).await.is_empty());
    t.server.stop().await;
}
