//! The gate end to end, over real gRPC on loopback, on the embedded default (memory store and
//! SQLite ledger in a temporary data directory).

mod common;

on_both_stores!(
    walk_through_grant_reserve_commit_balance_restart,
    concurrent_reserves_never_hold_more_than_the_balance,
    reserve_retries_with_the_same_key_return_the_first_reply,
    charge_and_commit_retries_change_nothing_and_survive_a_restart,
    an_open_hold_survives_a_restart_and_can_still_be_committed,
    release_gives_the_hold_back_once,
    a_commit_above_the_hold_is_capped_at_the_hold_by_default,
    charge_is_denied_without_credit_and_check_holds_nothing,
    usage_is_priced_from_the_catalog_up_for_holds_half_even_for_charges,
    grants_are_spent_in_consumption_order_and_scoped_credit_stays_in_scope,
    grants_are_idempotent_by_id_and_voids_stop_spending,
    a_suspended_account_is_denied_new_spending,
    every_account_shows_its_default_wallet,
);

use std::time::Duration;

use common::*;
use creditgate::proto::{self, reserve_request};
use tonic::Code;

async fn walk_through_grant_reserve_commit_balance_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;

    let hold = t
        .gate
        .reserve(reserve_amount("acme", "chat", "3.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hold.decision, ALLOWED);
    assert_eq!(hold.amount, "3.00");
    assert_eq!(hold.available, "7.00");
    assert!(hold.reservation_id.starts_with("acme/"));

    let commit = t
        .gate
        .commit(commit_amount(&hold.reservation_id, "2.50"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit.charged, "2.50");
    assert_eq!(commit.released, "0.50");
    assert_eq!(commit.available, "7.50");

    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(
        (
            wallet.granted.as_str(),
            wallet.held.as_str(),
            wallet.spent.as_str(),
            wallet.available.as_str()
        ),
        ("10.00", "0.00", "2.50", "7.50")
    );

    t.server.stop().await;
    let mut t = start_on(&backend, dir.path()).await;
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(wallet.available, "7.50");
    assert_eq!(wallet.spent, "2.50");
    assert_eq!(wallet.grants[0].remaining, "7.50");
    t.server.stop().await;
}

async fn concurrent_reserves_never_hold_more_than_the_balance(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;

    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut gate = t.gate.clone();
        tasks.push(tokio::spawn(async move {
            let mut allowed = 0;
            for _ in 0..100 {
                let r = gate
                    .reserve(reserve_amount("acme", "chat", "0.01"))
                    .await
                    .unwrap()
                    .into_inner();
                if r.decision == ALLOWED {
                    allowed += 1;
                }
            }
            allowed
        }));
    }
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await.unwrap();
    }
    assert_eq!(allowed, 1_000);
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(wallet.held, "10.00");
    assert_eq!(wallet.available, "0.00");
    t.server.stop().await;
}

async fn reserve_retries_with_the_same_key_return_the_first_reply(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;

    let mut request = reserve_amount("acme", "chat", "3.00");
    request.idempotency_key = "job-1".into();
    let first = t.gate.reserve(request.clone()).await.unwrap().into_inner();
    let again = t.gate.reserve(request.clone()).await.unwrap().into_inner();
    assert_eq!(first, again, "byte for byte the first reply");
    assert_eq!(default_wallet(&mut t.gate, "acme").await.held, "3.00");

    let mut different = request.clone();
    different.cost = Some(reserve_request::Cost::Amount("4.00".into()));
    let status = t.gate.reserve(different).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().contains("idempotency_key"),
        "{}",
        status.message()
    );
    assert_eq!(default_wallet(&mut t.gate, "acme").await.held, "3.00");
    t.server.stop().await;
}

async fn charge_and_commit_retries_change_nothing_and_survive_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;

    let mut charge = charge_amount("acme", "chat", "1.25");
    charge.idempotency_key = "call-7".into();
    charge.labels.insert("project".into(), "atlas".into());
    let first = t.gate.charge(charge.clone()).await.unwrap().into_inner();
    assert_eq!(first.decision, ALLOWED);
    assert_eq!(
        t.gate.charge(charge.clone()).await.unwrap().into_inner(),
        first
    );

    let hold = t
        .gate
        .reserve(reserve_amount("acme", "chat", "2.00"))
        .await
        .unwrap()
        .into_inner();
    let commit = commit_amount(&hold.reservation_id, "1.00");
    let committed = t.gate.commit(commit.clone()).await.unwrap().into_inner();
    assert_eq!(
        t.gate.commit(commit.clone()).await.unwrap().into_inner(),
        committed
    );
    let status = t
        .gate
        .commit(commit_amount(&hold.reservation_id, "1.50"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("already committed"),
        "{}",
        status.message()
    );

    let before = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(before.available, "7.75");
    let history = entries(&mut t.admin, "acme").await;
    assert_eq!(history.len(), 3, "grant, charge, commit");

    t.server.stop().await;
    let mut t = start_on(&backend, dir.path()).await;
    assert_eq!(t.gate.charge(charge).await.unwrap().into_inner(), first);
    assert_eq!(t.gate.commit(commit).await.unwrap().into_inner(), committed);
    assert_eq!(default_wallet(&mut t.gate, "acme").await, before);
    let after = entries(&mut t.admin, "acme").await;
    assert_eq!(
        after, history,
        "history is kept and nothing was charged twice"
    );
    let charge_entry = after
        .iter()
        .find(|e| e.kind == proto::EntryKind::Charge as i32)
        .unwrap();
    assert_eq!(
        charge_entry.labels.get("project").map(String::as_str),
        Some("atlas")
    );
    assert_eq!(charge_entry.idempotency_key, "call-7");
    t.server.stop().await;
}

async fn an_open_hold_survives_a_restart_and_can_still_be_committed(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    let hold = t
        .gate
        .reserve(reserve_amount("acme", "chat", "4.00"))
        .await
        .unwrap()
        .into_inner();
    t.server.stop().await;

    let mut t = start_on(&backend, dir.path()).await;
    assert_eq!(default_wallet(&mut t.gate, "acme").await.held, "4.00");
    let commit = t
        .gate
        .commit(commit_amount(&hold.reservation_id, "4.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit.available, "6.00");
    t.server.stop().await;
}

#[tokio::test]
async fn expiry_releases_the_hold_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, clock) = start_manual(dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    let mut request = reserve_amount("acme", "chat", "3.00");
    request.ttl_ms = 60_000;
    let hold = t.gate.reserve(request).await.unwrap().into_inner();

    clock.advance_ms(59_999);
    // The sweeper runs every 20 ms; give it many chances to release too early.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(default_wallet(&mut t.gate, "acme").await.held, "3.00");

    clock.advance_ms(1);
    let mut gate = t.gate.clone();
    eventually(Duration::from_secs(10), || {
        let mut gate = gate.clone();
        async move { default_wallet(&mut gate, "acme").await.held == "0.00" }
    })
    .await;
    assert_eq!(default_wallet(&mut gate, "acme").await.available, "10.00");
    let status = gate
        .commit(commit_amount(&hold.reservation_id, "1.00"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("expired"), "{}", status.message());
    t.server.stop().await;
}

#[tokio::test]
async fn a_commit_after_expiry_is_refused_even_before_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.limits.sweep_interval_ms = 3_600_000;
    let clock = std::sync::Arc::new(creditgate::clock::ManualClock::new(1_700_000_000_000));
    let mut t = start_with(config, clock.clone()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    let mut request = reserve_amount("acme", "chat", "3.00");
    request.ttl_ms = 1_000;
    let hold = t.gate.reserve(request).await.unwrap().into_inner();
    clock.advance_ms(1_000);
    let status = t
        .gate
        .commit(commit_amount(&hold.reservation_id, "1.00"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(default_wallet(&mut t.gate, "acme").await.available, "10.00");
    t.server.stop().await;
}

async fn release_gives_the_hold_back_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    let hold = t
        .gate
        .reserve(reserve_amount("acme", "chat", "3.00"))
        .await
        .unwrap()
        .into_inner();
    let release = proto::ReleaseRequest {
        reservation_id: hold.reservation_id.clone(),
    };
    let first = t.gate.release(release.clone()).await.unwrap().into_inner();
    assert_eq!(first.released, "3.00");
    assert_eq!(first.available, "10.00");
    assert_eq!(t.gate.release(release).await.unwrap().into_inner(), first);
    let status = t
        .gate
        .commit(commit_amount(&hold.reservation_id, "1.00"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("released"),
        "{}",
        status.message()
    );

    let unknown = t
        .gate
        .release(proto::ReleaseRequest {
            reservation_id: "acme/rnothere".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    t.server.stop().await;
}

async fn a_commit_above_the_hold_is_capped_at_the_hold_by_default(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    let hold = t
        .gate
        .reserve(reserve_amount("acme", "chat", "3.00"))
        .await
        .unwrap()
        .into_inner();
    let commit = t
        .gate
        .commit(commit_amount(&hold.reservation_id, "3.01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (commit.requested.as_str(), commit.overrun.as_str()),
        ("3.01", "0.01")
    );
    assert_eq!(
        (commit.charged.as_str(), commit.released.as_str()),
        ("3.00", "0.00")
    );
    assert_eq!(commit.available, "7.00");
    let repeated = t
        .gate
        .commit(commit_amount(&hold.reservation_id, "3.01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeated, commit, "a repeated commit gets the first answer");
    let status = t
        .gate
        .commit(commit_amount(&hold.reservation_id, "3.00"))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "another amount is a mismatch"
    );
    let entries = t
        .admin
        .list_entries(proto::ListEntriesRequest {
            account_id: "acme".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let entry = entries
        .iter()
        .find(|e| e.entry_id == commit.entry_id)
        .unwrap();
    assert_eq!(
        (entry.amount.as_str(), entry.overrun.as_str()),
        ("3.00", "0.01")
    );
    t.server.stop().await;
}

#[tokio::test]
async fn extend_adds_to_the_hold_when_the_wallet_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, clock) = start_manual(dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    let mut request = reserve_amount("acme", "agent.minutes", "3.00");
    request.ttl_ms = 60_000;
    let hold = t.gate.reserve(request).await.unwrap().into_inner();

    clock.advance_ms(30_000);
    let extend = proto::ExtendRequest {
        reservation_id: hold.reservation_id.clone(),
        additional_amount: "5.00".into(),
        ttl_ms: 120_000,
        idempotency_key: "tick-1".into(),
    };
    let extended = t.gate.extend(extend.clone()).await.unwrap().into_inner();
    assert_eq!(extended.decision, ALLOWED);
    assert_eq!(extended.amount, "8.00");
    assert_eq!(extended.available, "2.00");
    assert_eq!(
        extended.expires_at_ms,
        hold.expires_at_ms - 60_000 + 30_000 + 120_000
    );
    assert_eq!(
        t.gate.extend(extend).await.unwrap().into_inner(),
        extended,
        "retry adds nothing"
    );

    let too_much = t
        .gate
        .extend(proto::ExtendRequest {
            reservation_id: hold.reservation_id.clone(),
            additional_amount: "2.01".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(too_much.decision, DENIED);
    assert_eq!(
        too_much.reason,
        proto::DenyReason::InsufficientCredits as i32
    );
    assert_eq!(default_wallet(&mut t.gate, "acme").await.held, "8.00");

    // The original expiry has passed; the extended one has not.
    clock.advance_ms(60_000);
    let commit = t
        .gate
        .commit(commit_amount(&hold.reservation_id, "7.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit.available, "3.00");
    t.server.stop().await;
}

async fn charge_is_denied_without_credit_and_check_holds_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;

    let check = |amount: &str| proto::CheckRequest {
        account_id: "acme".into(),
        feature: "chat".into(),
        cost: Some(proto::check_request::Cost::Amount(amount.into())),
        ..Default::default()
    };
    let yes = t.gate.check(check("1.00")).await.unwrap().into_inner();
    assert_eq!(yes.decision, ALLOWED);
    let no = t.gate.check(check("1.01")).await.unwrap().into_inner();
    assert_eq!(no.decision, DENIED);
    assert_eq!(default_wallet(&mut t.gate, "acme").await.held, "0.00");

    let charged = t
        .gate
        .charge(charge_amount("acme", "chat", "1.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(charged.decision, ALLOWED);
    let denied = t
        .gate
        .charge(charge_amount("acme", "chat", "0.01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.decision, DENIED);
    assert_eq!(denied.reason, proto::DenyReason::InsufficientCredits as i32);
    assert_eq!(denied.available, "0.00");
    let anything = proto::CheckRequest {
        account_id: "acme".into(),
        feature: "chat".into(),
        ..Default::default()
    };
    assert_eq!(
        t.gate.check(anything).await.unwrap().into_inner().decision,
        DENIED
    );

    let stranger = t
        .gate
        .reserve(reserve_amount("nobody", "chat", "1.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stranger.decision, DENIED);
    assert_eq!(stranger.reason, proto::DenyReason::AccountNotFound as i32);
    t.server.stop().await;
}

async fn usage_is_priced_from_the_catalog_up_for_holds_half_even_for_charges(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    t.admin
        .set_prices(proto::SetPricesRequest {
            features: vec![
                proto::FeaturePrice {
                    feature: "chat".into(),
                    wallet: String::new(),
                    rule: Some(proto::feature_price::Rule::PerMillionTokens(
                        proto::PerMillionTokensPrice {
                            models: vec![proto::ModelPrice {
                                model: "m1".into(),
                                input: "0.15".into(),
                                output: "0.60".into(),
                                ..Default::default()
                            }],
                        },
                    )),
                    ..Default::default()
                },
                proto::FeaturePrice {
                    feature: "agent.minutes".into(),
                    wallet: String::new(),
                    rule: Some(proto::feature_price::Rule::PerUnit(proto::PerUnitPrice {
                        unit: "minute".into(),
                        price: "0.05".into(),
                    })),
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap();

    let tokens = |input, output| proto::Usage {
        model: "m1".into(),
        input_tokens: input,
        output_tokens: output,
        ..Default::default()
    };
    // 7 input tokens × 0.15 / 1M = 0.00000105: a hold rounds up to 0.000002.
    let hold = t
        .gate
        .reserve(proto::ReserveRequest {
            account_id: "acme".into(),
            feature: "chat".into(),
            cost: Some(reserve_request::Cost::Usage(tokens(7, 0))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hold.amount, "0.000002");
    // The same usage committed is charged half-even: 0.000001.
    let commit = t
        .gate
        .commit(proto::CommitRequest {
            reservation_id: hold.reservation_id,
            actual: Some(proto::commit_request::Actual::Usage(tokens(7, 0))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit.charged, "0.000001");
    let commit_entry = entries(&mut t.admin, "acme").await.remove(0);
    assert_eq!(
        commit_entry.model, "m1",
        "the ledger keeps the model for usage by model"
    );

    let minutes = t
        .gate
        .charge(proto::ChargeRequest {
            account_id: "acme".into(),
            feature: "agent.minutes".into(),
            cost: Some(proto::charge_request::Cost::Usage(proto::Usage {
                units: "2.5".into(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(minutes.charged, "0.125");

    // Prices are kept in the ledger across restarts.
    t.server.stop().await;
    let mut t = start_on(&backend, dir.path()).await;
    let catalog = t
        .admin
        .get_prices(proto::GetPricesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(catalog.features.len(), 2);
    t.server.stop().await;
}

async fn grants_are_spent_in_consumption_order_and_scoped_credit_stays_in_scope(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    let add = |grant_id: &str, amount: &str, kind: proto::GrantKind, features: Vec<String>| {
        proto::AddGrantRequest {
            account_id: "acme".into(),
            grant_id: grant_id.into(),
            amount: amount.into(),
            kind: kind as i32,
            features,
            ..Default::default()
        }
    };
    for request in [
        add("bought", "10.00", proto::GrantKind::Prepaid, vec![]),
        add("plan", "2.00", proto::GrantKind::Included, vec![]),
        add(
            "trial",
            "1.00",
            proto::GrantKind::Promotional,
            vec!["agent.minutes".into()],
        ),
    ] {
        t.admin.add_grant(request).await.unwrap();
    }
    let hold = t
        .gate
        .reserve(reserve_amount("acme", "agent.minutes", "4.00"))
        .await
        .unwrap()
        .into_inner();
    let split: Vec<_> = hold
        .split
        .iter()
        .map(|p| (p.grant_id.as_str(), p.amount.as_str()))
        .collect();
    assert_eq!(
        split,
        [("trial", "1.00"), ("plan", "2.00"), ("bought", "1.00")]
    );

    let chat = t
        .gate
        .charge(charge_amount("acme", "chat", "9.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(chat.decision, ALLOWED);
    let split: Vec<_> = chat
        .split
        .iter()
        .map(|p| (p.grant_id.as_str(), p.amount.as_str()))
        .collect();
    assert_eq!(split, [("bought", "9.00")]);
    let wallet = default_wallet(&mut t.gate, "acme").await;
    let shown: Vec<(&str, &str)> = wallet
        .grants
        .iter()
        .map(|g| (g.grant_id.as_str(), g.used_percent.as_str()))
        .collect();
    assert_eq!(
        shown,
        [("trial", "0"), ("plan", "0"), ("bought", "90")],
        "buckets in the order they are spent, with how much of each is used"
    );
    t.server.stop().await;
}

async fn grants_are_idempotent_by_id_and_voids_stop_spending(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    let request = proto::AddGrantRequest {
        account_id: "acme".into(),
        grant_id: "pay-1".into(),
        amount: "5.00".into(),
        ..Default::default()
    };
    let first = t
        .admin
        .add_grant(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let again = t
        .admin
        .add_grant(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.available, "5.00");
    let mut different = request.clone();
    different.amount = "6.00".into();
    let status = t.admin.add_grant(different).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    let hold = t
        .gate
        .reserve(reserve_amount("acme", "chat", "2.00"))
        .await
        .unwrap()
        .into_inner();
    let void = t
        .admin
        .void_grant(proto::VoidGrantRequest {
            account_id: "acme".into(),
            grant_id: "pay-1".into(),
            reason: "refunded".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(void.voided, "3.00");
    assert_eq!(void.available, "0.00");
    let denied = t
        .gate
        .reserve(reserve_amount("acme", "chat", "0.01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.decision, DENIED);
    // The hold taken before the void can still be committed.
    let commit = t
        .gate
        .commit(commit_amount(&hold.reservation_id, "2.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit.charged, "2.00");
    let kinds: Vec<i32> = entries(&mut t.admin, "acme")
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            proto::EntryKind::Commit as i32,
            proto::EntryKind::Void as i32,
            proto::EntryKind::Grant as i32
        ]
    );
    t.server.stop().await;
}

async fn a_suspended_account_is_denied_new_spending(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    let hold = t
        .gate
        .reserve(reserve_amount("acme", "chat", "1.00"))
        .await
        .unwrap()
        .into_inner();
    t.admin
        .put_account(proto::PutAccountRequest {
            account_id: "acme".into(),
            display_name: "Acme".into(),
            status: proto::AccountStatus::Suspended as i32,
        })
        .await
        .unwrap();
    let denied = t
        .gate
        .reserve(reserve_amount("acme", "chat", "1.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.reason, proto::DenyReason::AccountSuspended as i32);
    t.gate
        .commit(commit_amount(&hold.reservation_id, "1.00"))
        .await
        .expect("a hold taken before the suspension can be committed");
    t.server.stop().await;
}

#[tokio::test]
async fn prices_from_the_config_file_are_in_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("creditgate.toml");
    std::fs::write(
        &file,
        r#"
        [[prices]]
        feature = "image.generate"
        per_call = "0.04"
        "#,
    )
    .unwrap();
    let file_config = creditgate::config::FileConfig::load(&file).unwrap();
    let mut config = config(dir.path());
    config.prices = creditgate::config::ServerConfig::resolve(Default::default(), file_config)
        .unwrap()
        .prices;
    let mut t = start_with(config, std::sync::Arc::new(creditgate::clock::SystemClock)).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    let catalog = t
        .admin
        .get_prices(proto::GetPricesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(catalog.features.len(), 1);
    assert_eq!(catalog.features[0].feature, "image.generate");
    let three_images = t
        .gate
        .charge(proto::ChargeRequest {
            account_id: "acme".into(),
            feature: "image.generate".into(),
            cost: Some(proto::charge_request::Cost::Usage(proto::Usage {
                units: "3".into(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(three_images.charged, "0.12");
    assert_eq!(three_images.available, "0.88");
    t.server.stop().await;
}

async fn every_account_shows_its_default_wallet(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    t.admin
        .put_account(proto::PutAccountRequest {
            account_id: "fresh".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let wallet = default_wallet(&mut t.gate, "fresh").await;
    assert_eq!(
        (wallet.granted.as_str(), wallet.available.as_str()),
        ("0.00", "0.00")
    );
    let missing = t
        .gate
        .get_balance(proto::GetBalanceRequest {
            account_id: "nobody".into(),
            wallet: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    t.server.stop().await;
}

on_both_stores!(holds_expire_on_the_store_clock_and_not_before);

/// Expiry by the store's own clock (Redis `TIME` on Redis), in real time.
async fn holds_expire_on_the_store_clock_and_not_before(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    let mut request = reserve_amount("acme", "chat", "3.00");
    request.ttl_ms = 1_000;
    let started = std::time::Instant::now();
    let hold = t.gate.reserve(request).await.unwrap().into_inner();
    let held = default_wallet(&mut t.gate, "acme").await.held;
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(held, "3.00", "not released before its expiry");
    }
    let mut gate = t.gate.clone();
    eventually(Duration::from_secs(10), || {
        let mut gate = gate.clone();
        async move { default_wallet(&mut gate, "acme").await.held == "0.00" }
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(1_000));
    let status = gate
        .commit(commit_amount(&hold.reservation_id, "1.00"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("expired"), "{}", status.message());
    assert_eq!(default_wallet(&mut gate, "acme").await.available, "10.00");
    t.server.stop().await;
}

on_both_stores!(a_partial_hold_takes_what_is_left_down_to_the_minimum);

/// An agent asks for 10 minutes' worth and gets what is left, unless that is below its minimum.
async fn a_partial_hold_takes_what_is_left_down_to_the_minimum(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "3.00").await;
    let partial = |amount: &str, min: &str| {
        let mut request = reserve_amount("acme", "agent.minutes", amount);
        request.allow_partial = true;
        request.min_amount = min.into();
        request
    };
    let hold = t
        .gate
        .reserve(partial("10.00", "1.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hold.decision, ALLOWED);
    assert_eq!(
        (hold.amount.as_str(), hold.available.as_str()),
        ("3.00", "0.00")
    );
    t.gate
        .release(proto::ReleaseRequest {
            reservation_id: hold.reservation_id,
        })
        .await
        .unwrap();

    t.gate
        .charge(charge_amount("acme", "agent.minutes", "2.50"))
        .await
        .unwrap();
    let too_little = t
        .gate
        .reserve(partial("10.00", "1.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        too_little.decision, DENIED,
        "0.50 left is below the minimum"
    );
    assert_eq!(too_little.available, "0.50");
    let rest = t
        .gate
        .reserve(partial("10.00", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rest.decision, rest.amount.as_str()), (ALLOWED, "0.50"));
    let whole = t
        .gate
        .reserve(reserve_amount("acme", "agent.minutes", "0.01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(whole.decision, DENIED);
    t.server.stop().await;
}
