//! Adjustments and refunds by an operator, through Admin only: credit added with a reason, and
//! refunds of a commit or charge that never give back more than it charged, each a ledger entry
//! that says why.

mod common;

on_both_stores!(
    an_adjustment_is_a_grant_whose_ledger_entry_keeps_its_reason,
    refunds_give_back_at_most_what_a_charge_took,
    malformed_refunds_are_refused_naming_the_field,
    a_wallet_never_could_hold_more_than_the_money_bound,
);

use common::*;
use creditgate::proto::{self, admin_client::AdminClient};
use tonic::Code;
use tonic::transport::Channel;

fn credit(account: &str, grant_id: &str, amount: &str) -> proto::AddGrantRequest {
    proto::AddGrantRequest {
        account_id: account.into(),
        grant_id: grant_id.into(),
        amount: amount.into(),
        ..Default::default()
    }
}

async fn add(
    admin: &mut AdminClient<Channel>,
    request: proto::AddGrantRequest,
) -> Result<proto::AddGrantResponse, tonic::Status> {
    admin.add_grant(request).await.map(|r| r.into_inner())
}

async fn an_adjustment_is_a_grant_whose_ledger_entry_keeps_its_reason(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    let added = add(
        &mut t.admin,
        proto::AddGrantRequest {
            reason: "outage on 2026-11-20: goodwill credit".into(),
            ..credit("acme", "adj-1", "5.00")
        },
    )
    .await
    .unwrap();
    assert_eq!(added.available, "5.00");
    let listed = entries(&mut t.admin, "acme").await;
    let entry = listed
        .iter()
        .find(|e| e.grant_id == "adj-1")
        .expect("the grant's entry");
    assert_eq!(entry.reason, "outage on 2026-11-20: goodwill credit");
    assert_eq!(entry.refund_of, "");
    t.server.stop().await;
    let mut t = start_on(&backend, dir.path()).await;
    let listed = entries(&mut t.admin, "acme").await;
    assert!(
        listed
            .iter()
            .any(|e| e.reason == "outage on 2026-11-20: goodwill credit"),
        "kept across a restart: {listed:?}"
    );
    t.server.stop().await;
}

async fn refunds_give_back_at_most_what_a_charge_took(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    let charged = t
        .gate
        .charge(charge_amount("acme", "chat", "3.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(charged.decision, ALLOWED);
    let refund = |grant_id: &str, amount: &str| proto::AddGrantRequest {
        refund_of: charged.entry_id.clone(),
        reason: "the model answered nothing".into(),
        ..credit("acme", grant_id, amount)
    };
    let first = add(&mut t.admin, refund("refund-1", "1.00")).await.unwrap();
    assert_eq!(first.available, "8.00");
    let again = add(&mut t.admin, refund("refund-1", "1.00")).await.unwrap();
    assert!(!again.created, "a repeated refund is the same refund");
    assert_eq!(again.available, "8.00");
    let rest = add(&mut t.admin, refund("refund-2", "2.00")).await.unwrap();
    assert_eq!(rest.available, "10.00");
    let status = add(&mut t.admin, refund("refund-3", "0.01"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("amount") && status.message().contains("at most 0.00"),
        "{}",
        status.message()
    );
    let listed = entries(&mut t.admin, "acme").await;
    let refunds: Vec<(&str, &str)> = listed
        .iter()
        .filter(|e| e.refund_of == charged.entry_id)
        .map(|e| (e.grant_id.as_str(), e.amount.as_str()))
        .collect();
    assert_eq!(refunds.len(), 2, "{listed:?}");
    assert!(refunds.contains(&("refund-1", "1.00")) && refunds.contains(&("refund-2", "2.00")));
    assert_eq!(default_wallet(&mut t.gate, "acme").await.available, "10.00");
    t.server.stop().await;
}

async fn malformed_refunds_are_refused_naming_the_field(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    grant(&mut t.admin, "other", "g1", "10.00").await;
    let charged = t
        .gate
        .charge(charge_amount("acme", "chat", "3.00"))
        .await
        .unwrap()
        .into_inner();
    let theirs = t
        .gate
        .charge(charge_amount("other", "chat", "1.00"))
        .await
        .unwrap()
        .into_inner();
    let cases = [
        (
            "refund_of",
            proto::AddGrantRequest {
                refund_of: "charge/nothing".into(),
                ..credit("acme", "r1", "1.00")
            },
        ),
        (
            "refund_of",
            proto::AddGrantRequest {
                refund_of: theirs.entry_id.clone(),
                ..credit("acme", "r1", "1.00")
            },
        ),
        (
            "refund_of",
            proto::AddGrantRequest {
                refund_of: "grant/acme/g1".into(),
                ..credit("acme", "r1", "1.00")
            },
        ),
        (
            "wallet",
            proto::AddGrantRequest {
                refund_of: charged.entry_id.clone(),
                wallet: "cloud".into(),
                ..credit("acme", "r1", "1.00")
            },
        ),
        (
            "amount",
            proto::AddGrantRequest {
                refund_of: charged.entry_id.clone(),
                ..credit("acme", "r1", "3.01")
            },
        ),
        (
            "reason",
            proto::AddGrantRequest {
                reason: "x".repeat(1_025),
                ..credit("acme", "r1", "1.00")
            },
        ),
    ];
    for (field, request) in cases {
        let status = add(&mut t.admin, request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    assert_eq!(
        default_wallet(&mut t.gate, "acme").await.available,
        "7.00",
        "nothing was granted"
    );
    t.server.stop().await;
}

/// Every figure must stay exact in Redis's Lua (doubles): a wallet's grants, counted at the
/// most a recurring grant could reach after a reset, plus its flex cap, stay within 2^53 − 1
/// minor units.
async fn a_wallet_never_could_hold_more_than_the_money_bound(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    add(&mut t.admin, credit("full", "max", "9007199254.740991"))
        .await
        .unwrap();
    let status = t
        .admin
        .set_wallet(proto::SetWalletRequest {
            account_id: "full".into(),
            wallet: String::new(),
            flex_cap: "0.000001".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    let plan = proto::AddGrantRequest {
        kind: proto::GrantKind::Included as i32,
        period: proto::Period::Month as i32,
        ..credit("plan", "allowance", "4503599627.370495")
    };
    add(&mut t.admin, plan).await.unwrap();
    let status = add(&mut t.admin, credit("plan", "pack", "0.000002"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    add(&mut t.admin, credit("plan", "pack", "0.000001"))
        .await
        .unwrap();
    t.server.stop().await;
}
