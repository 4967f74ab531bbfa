//! The credit model beyond prepaid grants, end to end over real gRPC on each store: flex
//! (postpaid spending up to a wallet's cap), the overrun policy of a commit larger than its
//! hold (cap at the hold, allow up to an allowance, or charge it all and owe the rest as
//! debt), debt repaid by the next grant, and all of it kept across a restart.

mod common;

on_both_stores!(
    flex_pays_past_the_grants_up_to_the_cap_and_only_when_set,
    a_commit_above_the_hold_is_charged_the_hold_by_default,
    allow_up_to_charges_the_allowance_at_most_and_only_what_the_wallet_can_pay,
    charge_actual_charges_everything_and_the_next_grant_pays_the_debt_first,
    a_debt_larger_than_a_grant_is_paid_over_several_grants_and_scoped_grants_pay_none,
    a_hold_keeps_the_overrun_policy_in_force_when_it_was_taken,
    flex_and_debt_survive_a_restart_and_a_rebuild,
    flex_and_debt_survive_a_restart_on_a_postgres_ledger,
    usage_counts_an_overrun_once_even_after_its_debt_is_repaid,
    malformed_flex_caps_and_overrun_policies_are_refused_naming_the_field,
);

use std::sync::Arc;
use std::time::Duration;

use common::*;
use creditgate::clock::SystemClock;
use creditgate::ledger::LedgerTarget;
use creditgate::proto::{self, admin_client::AdminClient, gate_client::GateClient};
use tonic::Code;
use tonic::transport::Channel;

/// A priced feature: per minute, five cents a minute.
const MINUTES: &str = "agent.minutes";

/// Sets a wallet's flex cap (on the default wallet).
async fn set_flex(
    admin: &mut AdminClient<Channel>,
    account: &str,
    flex_cap: &str,
) -> proto::WalletBalance {
    admin
        .set_wallet(proto::SetWalletRequest {
            account_id: account.into(),
            wallet: String::new(),
            flex_cap: flex_cap.into(),
        })
        .await
        .expect("set_wallet succeeds")
        .into_inner()
}

fn minutes_price(overrun: proto::Overrun, allowance: &str) -> proto::FeaturePrice {
    proto::FeaturePrice {
        feature: MINUTES.into(),
        wallet: "default".into(),
        rule: Some(proto::feature_price::Rule::PerUnit(proto::PerUnitPrice {
            unit: "minute".into(),
            price: "0.05".into(),
        })),
        overrun: overrun as i32,
        overrun_allowance: allowance.into(),
        // As the catalog shows the default rule.
        stop: proto::StopRule::FinishRunning as i32,
        ..Default::default()
    }
}

/// Prices as set, without the time each took effect.
fn without_times(prices: Vec<proto::FeaturePrice>) -> Vec<proto::FeaturePrice> {
    prices
        .into_iter()
        .map(|p| proto::FeaturePrice {
            effective_at_ms: 0,
            ..p
        })
        .collect()
}

/// Prices `agent.minutes` at 0.05 a minute with the given overrun policy.
async fn price_minutes(admin: &mut AdminClient<Channel>, overrun: proto::Overrun, allowance: &str) {
    admin
        .set_prices(proto::SetPricesRequest {
            features: vec![minutes_price(overrun, allowance)],
        })
        .await
        .expect("set_prices succeeds");
}

async fn reserve(
    gate: &mut GateClient<Channel>,
    account: &str,
    feature: &str,
    amount: &str,
) -> proto::ReserveResponse {
    gate.reserve(reserve_amount(account, feature, amount))
        .await
        .expect("reserve answers")
        .into_inner()
}

/// A hold that must be allowed; returns its reservation id.
async fn hold(
    gate: &mut GateClient<Channel>,
    account: &str,
    feature: &str,
    amount: &str,
) -> String {
    let hold = reserve(gate, account, feature, amount).await;
    assert_eq!(hold.decision, ALLOWED, "hold of {amount}: {hold:?}");
    hold.reservation_id
}

async fn commit(gate: &mut GateClient<Channel>, id: &str, amount: &str) -> proto::CommitResponse {
    gate.commit(commit_amount(id, amount))
        .await
        .expect("commit succeeds")
        .into_inner()
}

async fn charge(
    gate: &mut GateClient<Channel>,
    account: &str,
    feature: &str,
    amount: &str,
) -> proto::ChargeResponse {
    gate.charge(charge_amount(account, feature, amount))
        .await
        .expect("charge answers")
        .into_inner()
}

fn split(portions: &[proto::GrantPortion]) -> Vec<(&str, &str)> {
    portions
        .iter()
        .map(|p| (p.grant_id.as_str(), p.amount.as_str()))
        .collect()
}

/// (flex_cap, flex_used, flex_held, debt, available) of a wallet.
fn postpaid(wallet: &proto::WalletBalance) -> (&str, &str, &str, &str, &str) {
    (
        wallet.flex_cap.as_str(),
        wallet.flex_used.as_str(),
        wallet.flex_held.as_str(),
        wallet.debt.as_str(),
        wallet.available.as_str(),
    )
}

fn remaining<'a>(wallet: &'a proto::WalletBalance, grant_id: &str) -> &'a str {
    wallet
        .grants
        .iter()
        .find(|g| g.grant_id == grant_id)
        .unwrap_or_else(|| panic!("grant {grant_id} is shown: {wallet:?}"))
        .remaining
        .as_str()
}

fn entry<'a>(entries: &'a [proto::LedgerEntry], entry_id: &str) -> &'a proto::LedgerEntry {
    entries
        .iter()
        .find(|e| e.entry_id == entry_id)
        .unwrap_or_else(|| panic!("entry {entry_id} is listed: {entries:#?}"))
}

const INSUFFICIENT: i32 = proto::DenyReason::InsufficientCredits as i32;

async fn flex_pays_past_the_grants_up_to_the_cap_and_only_when_set(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;

    let wallet = set_flex(&mut t.admin, "acme", "0.50").await;
    assert_eq!(wallet.wallet, "default");
    assert_eq!(
        postpaid(&wallet),
        ("0.50", "0.00", "0.00", "0.00", "1.50"),
        "SetWallet answers with the wallet as it now is"
    );

    let charged = charge(&mut t.gate, "acme", "chat", "1.40").await;
    assert_eq!(charged.decision, ALLOWED, "{charged:?}");
    assert_eq!(charged.charged, "1.40");
    assert_eq!(split(&charged.split), [("g1", "1.00"), ("~flex", "0.40")]);
    assert_eq!(charged.available, "0.10");

    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(postpaid(&wallet), ("0.50", "0.40", "0.00", "0.00", "0.10"));
    assert_eq!(
        (
            wallet.granted.as_str(),
            wallet.spent.as_str(),
            wallet.held.as_str()
        ),
        ("1.00", "1.00", "0.00"),
        "spent counts the grants; flex is shown apart"
    );
    assert_eq!(remaining(&wallet, "g1"), "0.00");

    let denied = charge(&mut t.gate, "acme", "chat", "0.20").await;
    assert_eq!(denied.decision, DENIED);
    assert_eq!(denied.reason, INSUFFICIENT);
    assert_eq!(denied.available, "0.10");
    let check = |amount: &str| proto::CheckRequest {
        account_id: "acme".into(),
        feature: "chat".into(),
        cost: Some(proto::check_request::Cost::Amount(amount.into())),
        ..Default::default()
    };
    assert_eq!(
        t.gate
            .check(check("0.10"))
            .await
            .unwrap()
            .into_inner()
            .decision,
        ALLOWED
    );
    assert_eq!(
        t.gate
            .check(check("0.11"))
            .await
            .unwrap()
            .into_inner()
            .decision,
        DENIED
    );

    // A hold on flex sets it aside; a release gives it back.
    let held = reserve(&mut t.gate, "acme", "chat", "0.10").await;
    assert_eq!(held.decision, ALLOWED, "{held:?}");
    assert_eq!(split(&held.split), [("~flex", "0.10")]);
    assert_eq!(held.available, "0.00");
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(postpaid(&wallet), ("0.50", "0.40", "0.10", "0.00", "0.00"));
    assert_eq!(wallet.held, "0.10", "held counts holds on flex");
    let nothing_left = reserve(&mut t.gate, "acme", "chat", "0.01").await;
    assert_eq!(
        (nothing_left.decision, nothing_left.reason),
        (DENIED, INSUFFICIENT)
    );
    let released = t
        .gate
        .release(proto::ReleaseRequest {
            reservation_id: held.reservation_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.released, "0.10");
    assert_eq!(released.available, "0.10");
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(postpaid(&wallet), ("0.50", "0.40", "0.00", "0.00", "0.10"));
    assert_eq!(wallet.held, "0.00");

    // A hold on flex committed for less uses only what was charged.
    let id = hold(&mut t.gate, "acme", "chat", "0.10").await;
    let committed = commit(&mut t.gate, &id, "0.04").await;
    assert_eq!(committed.charged, "0.04");
    assert_eq!(committed.released, "0.06");
    assert_eq!(split(&committed.split), [("~flex", "0.04")]);
    assert_eq!(committed.available, "0.06");
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(postpaid(&wallet), ("0.50", "0.44", "0.00", "0.00", "0.06"));

    // A cap below what is used stops new flex spending; what was used stays used.
    let lowered = set_flex(&mut t.admin, "acme", "0.20").await;
    assert_eq!(postpaid(&lowered), ("0.20", "0.44", "0.00", "0.00", "0.00"));
    let denied = charge(&mut t.gate, "acme", "chat", "0.01").await;
    assert_eq!((denied.decision, denied.reason), (DENIED, INSUFFICIENT));

    // Without flex (no SetWallet, or a cap of 0), spending stops at the grants.
    grant(&mut t.admin, "plain", "g1", "1.00").await;
    let denied = charge(&mut t.gate, "plain", "chat", "1.40").await;
    assert_eq!((denied.decision, denied.reason), (DENIED, INSUFFICIENT));
    assert_eq!(denied.available, "1.00");
    let wallet = default_wallet(&mut t.gate, "plain").await;
    assert_eq!(postpaid(&wallet), ("0.00", "0.00", "0.00", "0.00", "1.00"));
    assert_eq!(wallet.spent, "0.00", "a denied charge charges nothing");

    grant(&mut t.admin, "off", "g1", "1.00").await;
    set_flex(&mut t.admin, "off", "0.50").await;
    let off = set_flex(&mut t.admin, "off", "0").await;
    assert_eq!(postpaid(&off), ("0.00", "0.00", "0.00", "0.00", "1.00"));
    let denied = charge(&mut t.gate, "off", "chat", "1.01").await;
    assert_eq!((denied.decision, denied.reason), (DENIED, INSUFFICIENT));

    // SetWallet creates the account: flex alone can pay.
    let fresh = set_flex(&mut t.admin, "fresh", "0.50").await;
    assert_eq!(postpaid(&fresh), ("0.50", "0.00", "0.00", "0.00", "0.50"));
    let charged = charge(&mut t.gate, "fresh", "chat", "0.30").await;
    assert_eq!(charged.decision, ALLOWED, "{charged:?}");
    assert_eq!(split(&charged.split), [("~flex", "0.30")]);
    assert_eq!(charged.available, "0.20");
    t.server.stop().await;
}

async fn a_commit_above_the_hold_is_charged_the_hold_by_default(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "5.00").await;

    // "chat" has no price in the catalog: the default policy, cap_at_hold.
    let id = hold(&mut t.gate, "acme", "chat", "1.00").await;
    let committed = commit(&mut t.gate, &id, "1.50").await;
    assert_eq!(committed.charged, "1.00");
    assert_eq!(committed.requested, "1.50");
    assert_eq!(committed.overrun, "0.50");
    assert_eq!(committed.released, "0.00");
    assert_eq!(split(&committed.split), [("g1", "1.00")]);
    assert_eq!(committed.available, "4.00");
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(
        (
            wallet.available.as_str(),
            wallet.spent.as_str(),
            wallet.held.as_str(),
            wallet.debt.as_str()
        ),
        ("4.00", "1.00", "0.00", "0.00")
    );

    // A retry of the same commit returns the first reply; a different amount is refused.
    assert_eq!(commit(&mut t.gate, &id, "1.50").await, committed);
    let status = t.gate.commit(commit_amount(&id, "1.00")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(default_wallet(&mut t.gate, "acme").await.available, "4.00");

    let listed = entries(&mut t.admin, "acme").await;
    let commit_entry = entry(&listed, &committed.entry_id);
    assert_eq!(commit_entry.kind, proto::EntryKind::Commit as i32);
    assert_eq!(commit_entry.amount, "1.00");
    assert_eq!(commit_entry.overrun, "0.50");
    assert_eq!(split(&commit_entry.split), [("g1", "1.00")]);

    // The policy named explicitly behaves the same.
    price_minutes(&mut t.admin, proto::Overrun::CapAtHold, "").await;
    let id = hold(&mut t.gate, "acme", MINUTES, "1.00").await;
    let committed = commit(&mut t.gate, &id, "3.00").await;
    assert_eq!(
        (
            committed.charged.as_str(),
            committed.requested.as_str(),
            committed.overrun.as_str()
        ),
        ("1.00", "3.00", "2.00")
    );
    assert_eq!(committed.available, "3.00");

    // A commit that fits has no overrun.
    let id = hold(&mut t.gate, "acme", "chat", "1.00").await;
    let committed = commit(&mut t.gate, &id, "0.40").await;
    assert_eq!(
        (
            committed.charged.as_str(),
            committed.requested.as_str(),
            committed.overrun.as_str(),
            committed.released.as_str()
        ),
        ("0.40", "0.40", "0.00", "0.60")
    );
    let listed = entries(&mut t.admin, "acme").await;
    assert_eq!(entry(&listed, &committed.entry_id).overrun, "0.00");
    assert_eq!(default_wallet(&mut t.gate, "acme").await.available, "2.60");
    t.server.stop().await;
}

async fn allow_up_to_charges_the_allowance_at_most_and_only_what_the_wallet_can_pay(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    price_minutes(&mut t.admin, proto::Overrun::AllowUpTo, "0.20").await;
    let catalog = t
        .admin
        .get_prices(proto::GetPricesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        without_times(catalog.features),
        [minutes_price(proto::Overrun::AllowUpTo, "0.20")]
    );

    grant(&mut t.admin, "acme", "g1", "5.00").await;
    let id = hold(&mut t.gate, "acme", MINUTES, "1.00").await;
    let committed = commit(&mut t.gate, &id, "1.50").await;
    assert_eq!(committed.charged, "1.20");
    assert_eq!(committed.requested, "1.50");
    assert_eq!(committed.overrun, "0.50");
    assert_eq!(committed.released, "0.00");
    assert_eq!(split(&committed.split), [("g1", "1.20")]);
    assert_eq!(committed.available, "3.80");

    // Within the allowance, the whole request is charged.
    let id = hold(&mut t.gate, "acme", MINUTES, "1.00").await;
    let committed = commit(&mut t.gate, &id, "1.10").await;
    assert_eq!(
        (
            committed.charged.as_str(),
            committed.overrun.as_str(),
            committed.available.as_str()
        ),
        ("1.10", "0.10", "2.70")
    );

    // By usage: 20 minutes held (1.00), 30 used (1.50).
    let minutes = |units: &str| proto::Usage {
        units: units.into(),
        ..Default::default()
    };
    let held = t
        .gate
        .reserve(proto::ReserveRequest {
            account_id: "acme".into(),
            feature: MINUTES.into(),
            cost: Some(proto::reserve_request::Cost::Usage(minutes("20"))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((held.decision, held.amount.as_str()), (ALLOWED, "1.00"));
    let committed = t
        .gate
        .commit(proto::CommitRequest {
            reservation_id: held.reservation_id,
            actual: Some(proto::commit_request::Actual::Usage(minutes("30"))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            committed.charged.as_str(),
            committed.requested.as_str(),
            committed.overrun.as_str(),
            committed.available.as_str()
        ),
        ("1.20", "1.50", "0.50", "1.50")
    );
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(
        (
            wallet.spent.as_str(),
            wallet.available.as_str(),
            wallet.debt.as_str()
        ),
        ("3.50", "1.50", "0.00")
    );

    // Less than the allowance left: only what is left is charged, and nothing is owed.
    grant(&mut t.admin, "low", "g1", "1.10").await;
    let id = hold(&mut t.gate, "low", MINUTES, "1.00").await;
    let committed = commit(&mut t.gate, &id, "1.50").await;
    assert_eq!(committed.charged, "1.10");
    assert_eq!(committed.requested, "1.50");
    assert_eq!(committed.overrun, "0.50");
    assert_eq!(split(&committed.split), [("g1", "1.10")]);
    assert_eq!(committed.available, "0.00");
    let wallet = default_wallet(&mut t.gate, "low").await;
    assert_eq!(postpaid(&wallet), ("0.00", "0.00", "0.00", "0.00", "0.00"));
    assert_eq!(remaining(&wallet, "g1"), "0.00");

    // What is left includes flex: grants first, then flex.
    grant(&mut t.admin, "flexy", "g1", "1.00").await;
    set_flex(&mut t.admin, "flexy", "0.05").await;
    let id = hold(&mut t.gate, "flexy", MINUTES, "1.00").await;
    let committed = commit(&mut t.gate, &id, "1.50").await;
    assert_eq!(committed.charged, "1.05");
    assert_eq!(split(&committed.split), [("g1", "1.00"), ("~flex", "0.05")]);
    assert_eq!(committed.available, "0.00");
    let wallet = default_wallet(&mut t.gate, "flexy").await;
    assert_eq!(postpaid(&wallet), ("0.05", "0.05", "0.00", "0.00", "0.00"));

    // Another open hold is not taken by the overrun.
    grant(&mut t.admin, "busy", "g1", "2.00").await;
    let other = hold(&mut t.gate, "busy", MINUTES, "0.95").await;
    let id = hold(&mut t.gate, "busy", MINUTES, "1.00").await;
    let committed = commit(&mut t.gate, &id, "1.50").await;
    assert_eq!(committed.charged, "1.05", "only the 0.05 nobody holds");
    assert_eq!(committed.available, "0.00");
    let other = commit(&mut t.gate, &other, "0.95").await;
    assert_eq!(other.charged, "0.95");
    let wallet = default_wallet(&mut t.gate, "busy").await;
    assert_eq!(
        (wallet.spent.as_str(), wallet.available.as_str()),
        ("2.00", "0.00")
    );
    t.server.stop().await;
}

async fn charge_actual_charges_everything_and_the_next_grant_pays_the_debt_first(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    price_minutes(&mut t.admin, proto::Overrun::ChargeActual, "").await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;

    let id = hold(&mut t.gate, "acme", MINUTES, "1.00").await;
    let committed = commit(&mut t.gate, &id, "1.75").await;
    assert_eq!(committed.charged, "1.75");
    assert_eq!(committed.requested, "1.75");
    assert_eq!(committed.overrun, "0.75");
    assert_eq!(committed.released, "0.00");
    assert_eq!(split(&committed.split), [("g1", "1.00"), ("~debt", "0.75")]);
    assert_eq!(committed.available, "0.00");
    assert_eq!(commit(&mut t.gate, &id, "1.75").await, committed, "a retry");

    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(postpaid(&wallet), ("0.00", "0.00", "0.00", "0.75", "0.00"));
    assert_eq!(
        (wallet.granted.as_str(), wallet.spent.as_str()),
        ("1.00", "1.00")
    );

    // Debt gates the wallet.
    let denied = reserve(&mut t.gate, "acme", MINUTES, "0.01").await;
    assert_eq!((denied.decision, denied.reason), (DENIED, INSUFFICIENT));
    assert_eq!(denied.available, "0.00");
    let denied = charge(&mut t.gate, "acme", "chat", "0.01").await;
    assert_eq!((denied.decision, denied.reason), (DENIED, INSUFFICIENT));

    // A new unscoped grant pays the debt first.
    let added = t
        .admin
        .add_grant(proto::AddGrantRequest {
            account_id: "acme".into(),
            grant_id: "g2".into(),
            amount: "2.00".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(added.created);
    let added_grant = added.grant.as_ref().unwrap();
    assert_eq!(
        (added_grant.amount.as_str(), added_grant.remaining.as_str()),
        ("2.00", "1.25")
    );
    assert_eq!(added.available, "1.25");

    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(postpaid(&wallet), ("0.00", "0.00", "0.00", "0.00", "1.25"));
    assert_eq!(remaining(&wallet, "g2"), "1.25");
    assert_eq!(
        (wallet.granted.as_str(), wallet.spent.as_str()),
        ("3.00", "1.75")
    );

    let too_much = reserve(&mut t.gate, "acme", MINUTES, "1.26").await;
    assert_eq!((too_much.decision, too_much.reason), (DENIED, INSUFFICIENT));
    assert_eq!(too_much.available, "1.25");
    let all = reserve(&mut t.gate, "acme", MINUTES, "1.25").await;
    assert_eq!(all.decision, ALLOWED, "{all:?}");
    assert_eq!(split(&all.split), [("g2", "1.25")]);

    // Repeating the grant repays nothing again.
    let again = t
        .admin
        .add_grant(proto::AddGrantRequest {
            account_id: "acme".into(),
            grant_id: "g2".into(),
            amount: "2.00".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.grant.as_ref().unwrap().remaining, "1.25");
    assert_eq!(again.available, "0.00", "1.25 is held");

    let listed = entries(&mut t.admin, "acme").await;
    let repay = entry(&listed, "repay/acme/g2");
    assert_eq!(repay.kind, proto::EntryKind::Charge as i32);
    assert_eq!(repay.grant_id, "~debt");
    assert_eq!(repay.amount, "0.75");
    assert_eq!(split(&repay.split), [("g2", "0.75")]);
    assert_eq!(repay.wallet, "default");
    assert_eq!(
        listed.iter().filter(|e| e.grant_id == "~debt").count(),
        1,
        "one repayment"
    );
    let commit_entry = entry(&listed, &committed.entry_id);
    assert_eq!(commit_entry.kind, proto::EntryKind::Commit as i32);
    assert_eq!(commit_entry.amount, "1.75");
    assert_eq!(commit_entry.overrun, "0.75");
    assert_eq!(
        split(&commit_entry.split),
        [("g1", "1.00"), ("~debt", "0.75")]
    );

    // Flex pays before debt is incurred.
    grant(&mut t.admin, "flexy", "g1", "1.00").await;
    set_flex(&mut t.admin, "flexy", "0.30").await;
    let id = hold(&mut t.gate, "flexy", MINUTES, "1.00").await;
    let committed = commit(&mut t.gate, &id, "2.00").await;
    assert_eq!(committed.charged, "2.00");
    assert_eq!(
        split(&committed.split),
        [("g1", "1.00"), ("~flex", "0.30"), ("~debt", "0.70")]
    );
    let wallet = default_wallet(&mut t.gate, "flexy").await;
    assert_eq!(postpaid(&wallet), ("0.30", "0.30", "0.00", "0.70", "0.00"));
    t.server.stop().await;
}

async fn a_debt_larger_than_a_grant_is_paid_over_several_grants_and_scoped_grants_pay_none(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    price_minutes(&mut t.admin, proto::Overrun::ChargeActual, "").await;
    grant(&mut t.admin, "deep", "g0", "0.10").await;
    let id = hold(&mut t.gate, "deep", MINUTES, "0.10").await;
    let committed = commit(&mut t.gate, &id, "1.00").await;
    assert_eq!(split(&committed.split), [("g0", "0.10"), ("~debt", "0.90")]);

    // A grant scoped to features pays no debt, and debt still gates the wallet.
    t.admin
        .add_grant(proto::AddGrantRequest {
            account_id: "deep".into(),
            grant_id: "promo".into(),
            amount: "0.50".into(),
            features: vec![MINUTES.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let wallet = default_wallet(&mut t.gate, "deep").await;
    assert_eq!(wallet.debt, "0.90");
    assert_eq!(remaining(&wallet, "promo"), "0.50");
    let denied = reserve(&mut t.gate, "deep", MINUTES, "0.01").await;
    assert_eq!((denied.decision, denied.reason), (DENIED, INSUFFICIENT));

    let first = t
        .admin
        .add_grant(proto::AddGrantRequest {
            account_id: "deep".into(),
            grant_id: "t1".into(),
            amount: "0.50".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.grant.unwrap().remaining, "0.00");
    let wallet = default_wallet(&mut t.gate, "deep").await;
    assert_eq!(wallet.debt, "0.40");
    // What is still owed comes off what the wallet could spend: 0.50 (promo) - 0.40.
    assert_eq!(wallet.available, "0.10");
    let denied = reserve(&mut t.gate, "deep", MINUTES, "0.11").await;
    assert_eq!((denied.decision, denied.reason), (DENIED, INSUFFICIENT));
    assert_eq!(denied.available, "0.10");

    let second = t
        .admin
        .add_grant(proto::AddGrantRequest {
            account_id: "deep".into(),
            grant_id: "t2".into(),
            amount: "1.00".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.grant.unwrap().remaining, "0.60");
    let wallet = default_wallet(&mut t.gate, "deep").await;
    assert_eq!(wallet.debt, "0.00");
    assert_eq!(remaining(&wallet, "t1"), "0.00");
    assert_eq!(remaining(&wallet, "t2"), "0.60");
    assert_eq!(remaining(&wallet, "promo"), "0.50");
    assert_eq!(wallet.available, "1.10");

    let listed = entries(&mut t.admin, "deep").await;
    assert_eq!(entry(&listed, "repay/deep/t1").amount, "0.50");
    assert_eq!(
        split(&entry(&listed, "repay/deep/t2").split),
        [("t2", "0.40")]
    );
    assert!(
        listed.iter().all(|e| e.entry_id != "repay/deep/promo"),
        "the scoped grant repaid nothing"
    );
    t.server.stop().await;
}

async fn a_hold_keeps_the_overrun_policy_in_force_when_it_was_taken(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;

    price_minutes(&mut t.admin, proto::Overrun::ChargeActual, "").await;
    let actual = hold(&mut t.gate, "acme", MINUTES, "1.00").await;
    let actual_later = hold(&mut t.gate, "acme", MINUTES, "1.00").await;
    price_minutes(&mut t.admin, proto::Overrun::CapAtHold, "").await;
    let capped = hold(&mut t.gate, "acme", MINUTES, "1.00").await;
    price_minutes(&mut t.admin, proto::Overrun::AllowUpTo, "0.10").await;
    let allowed = hold(&mut t.gate, "acme", MINUTES, "1.00").await;

    // Commits under today's allow_up_to 0.10 still follow each hold's own policy.
    let committed = commit(&mut t.gate, &actual, "1.50").await;
    assert_eq!(committed.charged, "1.50", "charge_actual, as when held");
    let committed = commit(&mut t.gate, &capped, "1.50").await;
    assert_eq!(committed.charged, "1.00", "cap_at_hold, as when held");

    // And so they do after a restart.
    t.server.stop().await;
    let mut t = start_on(&backend, dir.path()).await;
    let catalog = t
        .admin
        .get_prices(proto::GetPricesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        without_times(catalog.features),
        [minutes_price(proto::Overrun::AllowUpTo, "0.10")]
    );
    price_minutes(&mut t.admin, proto::Overrun::CapAtHold, "").await;
    let committed = commit(&mut t.gate, &actual_later, "1.50").await;
    assert_eq!(committed.charged, "1.50", "charge_actual, as when held");
    let committed = commit(&mut t.gate, &allowed, "1.50").await;
    assert_eq!(committed.charged, "1.10", "allow_up_to 0.10, as when held");
    assert_eq!(committed.overrun, "0.50");
    // A hold taken now follows the policy now.
    let now = hold(&mut t.gate, "acme", MINUTES, "1.00").await;
    let committed = commit(&mut t.gate, &now, "1.50").await;
    assert_eq!(committed.charged, "1.00");
    assert_eq!(committed.available, "3.90");
    t.server.stop().await;
}

async fn flex_and_debt_survive_a_restart_and_a_rebuild(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    price_minutes(&mut t.admin, proto::Overrun::ChargeActual, "").await;

    // Flex used by a charge and by a commit, with a hold on flex still open.
    grant(&mut t.admin, "flexy", "g1", "1.00").await;
    set_flex(&mut t.admin, "flexy", "0.50").await;
    charge(&mut t.gate, "flexy", "chat", "1.20").await;
    let id = hold(&mut t.gate, "flexy", "chat", "0.10").await;
    commit(&mut t.gate, &id, "0.10").await;
    let open = hold(&mut t.gate, "flexy", "chat", "0.05").await;

    // Debt from an overrun charged in full.
    grant(&mut t.admin, "owing", "g1", "1.00").await;
    let id = hold(&mut t.gate, "owing", MINUTES, "1.00").await;
    commit(&mut t.gate, &id, "1.75").await;

    // Only a flex cap, nothing spent.
    set_flex(&mut t.admin, "capped", "2.00").await;

    let flexy = default_wallet(&mut t.gate, "flexy").await;
    assert_eq!(postpaid(&flexy), ("0.50", "0.30", "0.05", "0.00", "0.15"));
    let owing = default_wallet(&mut t.gate, "owing").await;
    assert_eq!(postpaid(&owing), ("0.00", "0.00", "0.00", "0.75", "0.00"));
    let capped = default_wallet(&mut t.gate, "capped").await;
    assert_eq!(postpaid(&capped), ("2.00", "0.00", "0.00", "0.00", "2.00"));
    let before = [
        balance(&mut t.gate, "flexy").await,
        balance(&mut t.gate, "owing").await,
        balance(&mut t.gate, "capped").await,
    ];

    t.server.stop().await;
    let mut t = start_on(&backend, dir.path()).await;
    let after = [
        balance(&mut t.gate, "flexy").await,
        balance(&mut t.gate, "owing").await,
        balance(&mut t.gate, "capped").await,
    ];
    assert_eq!(after, before, "the same balances after a restart");
    let denied = reserve(&mut t.gate, "owing", MINUTES, "0.01").await;
    assert_eq!(
        (denied.decision, denied.reason),
        (DENIED, INSUFFICIENT),
        "the debt still gates the wallet"
    );
    let denied = charge(&mut t.gate, "flexy", "chat", "0.16").await;
    assert_eq!((denied.decision, denied.reason), (DENIED, INSUFFICIENT));

    // The open hold on flex still holds it, and gives it back.
    let released = t
        .gate
        .release(proto::ReleaseRequest {
            reservation_id: open,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.released, "0.05");
    assert_eq!(released.available, "0.20");
    let flexy = default_wallet(&mut t.gate, "flexy").await;
    assert_eq!(postpaid(&flexy), ("0.50", "0.30", "0.00", "0.00", "0.20"));

    // A grant after the restart pays the debt the ledger remembers.
    let added = t
        .admin
        .add_grant(proto::AddGrantRequest {
            account_id: "owing".into(),
            grant_id: "g2".into(),
            amount: "2.00".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.grant.unwrap().remaining, "1.25");
    let owing = default_wallet(&mut t.gate, "owing").await;
    assert_eq!(postpaid(&owing), ("0.00", "0.00", "0.00", "0.00", "1.25"));

    let before = [
        balance(&mut t.gate, "flexy").await,
        balance(&mut t.gate, "owing").await,
        balance(&mut t.gate, "capped").await,
    ];
    t.server.stop().await;
    let mut t = start_on(&backend, dir.path()).await;
    let after = [
        balance(&mut t.gate, "flexy").await,
        balance(&mut t.gate, "owing").await,
        balance(&mut t.gate, "capped").await,
    ];
    assert_eq!(after, before, "the repayment is kept too");
    assert_eq!(remaining(&after[1]["default"], "g2"), "1.25");

    // Rebuilding an account in the store from the ledger changes nothing either.
    for (account, wallets) in ["flexy", "owing", "capped"].into_iter().zip(&after) {
        let report = t
            .admin
            .reconcile(proto::ReconcileRequest {
                account_id: account.into(),
                rebuild: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let report = &report.accounts[0];
        assert!(report.rebuilt, "{report:?}");
        assert!(
            report.wallets.iter().all(|w| w.drift == "0.00"),
            "{report:?}"
        );
        assert_eq!(&balance(&mut t.gate, account).await, wallets, "{account}");
    }
    t.server.stop().await;
}

/// A server on `backend` with its ledger in `database`.
async fn start_on_postgres(
    backend: &Backend,
    database: &PgDatabase,
    dir: &std::path::Path,
) -> TestServer {
    let mut config = backend.config(dir);
    config.ledger = LedgerTarget::Postgres {
        url: database.url.clone(),
    };
    config.limits.inbound_interval_ms = 20;
    start_with(config, Arc::new(SystemClock)).await
}

async fn flex_and_debt_survive_a_restart_on_a_postgres_ledger(backend: Backend) {
    let database = PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on_postgres(&backend, &database, dir.path()).await;
    price_minutes(&mut t.admin, proto::Overrun::ChargeActual, "").await;
    grant(&mut t.admin, "flexy", "g1", "1.00").await;
    set_flex(&mut t.admin, "flexy", "0.50").await;
    charge(&mut t.gate, "flexy", "chat", "1.20").await;
    let open = hold(&mut t.gate, "flexy", "chat", "0.05").await;
    grant(&mut t.admin, "owing", "g1", "1.00").await;
    let id = hold(&mut t.gate, "owing", MINUTES, "1.00").await;
    let committed = commit(&mut t.gate, &id, "1.75").await;
    assert_eq!(split(&committed.split), [("g1", "1.00"), ("~debt", "0.75")]);

    let flexy = default_wallet(&mut t.gate, "flexy").await;
    assert_eq!(postpaid(&flexy), ("0.50", "0.20", "0.05", "0.00", "0.25"));
    let owing = default_wallet(&mut t.gate, "owing").await;
    assert_eq!(postpaid(&owing), ("0.00", "0.00", "0.00", "0.75", "0.00"));
    let before = [
        balance(&mut t.gate, "flexy").await,
        balance(&mut t.gate, "owing").await,
    ];
    let history = entries(&mut t.admin, "owing").await;
    assert_eq!(entry(&history, &committed.entry_id).overrun, "0.75");

    t.server.stop().await;
    let mut t = start_on_postgres(&backend, &database, dir.path()).await;
    let after = [
        balance(&mut t.gate, "flexy").await,
        balance(&mut t.gate, "owing").await,
    ];
    assert_eq!(after, before, "the same balances after a restart");
    assert_eq!(entries(&mut t.admin, "owing").await, history);
    let catalog = t
        .admin
        .get_prices(proto::GetPricesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(catalog.features.len(), 1);
    assert_eq!(
        proto::FeaturePrice {
            effective_at_ms: 0,
            ..catalog.features[0].clone()
        },
        minutes_price(proto::Overrun::ChargeActual, ""),
        "the policy is kept (in force since it was set)"
    );
    let released = t
        .gate
        .release(proto::ReleaseRequest {
            reservation_id: open,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.available, "0.30");

    // A grant another system writes to the ledger reaches the store and pays the debt too.
    let mut connection = {
        use sqlx::Connection;
        sqlx::postgres::PgConnection::connect(&database.url)
            .await
            .unwrap()
    };
    sqlx::query(
        "INSERT INTO grants (account_id, grant_id, wallet, kind, priority, amount_minor, \
         created_at_ms) VALUES ('owing', 'paid-7', 'default', 'prepaid', 30, 2000000, \
         CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT))",
    )
    .execute(&mut connection)
    .await
    .unwrap();
    {
        use sqlx::Connection;
        connection.close().await.unwrap();
    }
    let gate = t.gate.clone();
    eventually(Duration::from_secs(10), || {
        let mut gate = gate.clone();
        async move { default_wallet(&mut gate, "owing").await.debt == "0.00" }
    })
    .await;
    let owing = default_wallet(&mut t.gate, "owing").await;
    assert_eq!(postpaid(&owing), ("0.00", "0.00", "0.00", "0.00", "1.25"));
    assert_eq!(remaining(&owing, "paid-7"), "1.25");
    // The repayment reaches the ledger through the outbox, a moment later.
    let admin = t.admin.clone();
    eventually(Duration::from_secs(10), || {
        let mut admin = admin.clone();
        async move {
            entries(&mut admin, "owing")
                .await
                .iter()
                .any(|e| e.entry_id == "repay/owing/paid-7")
        }
    })
    .await;
    let listed = entries(&mut t.admin, "owing").await;
    let repay = entry(&listed, "repay/owing/paid-7");
    assert_eq!(repay.grant_id, "~debt");
    assert_eq!(split(&repay.split), [("paid-7", "0.75")]);

    let before = [
        balance(&mut t.gate, "flexy").await,
        balance(&mut t.gate, "owing").await,
    ];
    t.server.stop().await;
    let mut t = start_on_postgres(&backend, &database, dir.path()).await;
    let after = [
        balance(&mut t.gate, "flexy").await,
        balance(&mut t.gate, "owing").await,
    ];
    assert_eq!(after, before, "the repayment is kept too");
    t.server.stop().await;
    database.drop_database().await;
}

async fn usage_counts_an_overrun_once_even_after_its_debt_is_repaid(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    price_minutes(&mut t.admin, proto::Overrun::ChargeActual, "").await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    let id = hold(&mut t.gate, "acme", MINUTES, "1.00").await;
    commit(&mut t.gate, &id, "1.75").await;
    grant(&mut t.admin, "acme", "g2", "2.00").await;
    assert_eq!(default_wallet(&mut t.gate, "acme").await.debt, "0.00");

    let usage = t
        .admin
        .get_usage(proto::GetUsageRequest {
            account_id: "acme".into(),
            group_by: "feature".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (usage.total.as_str(), usage.count),
        ("1.75", 1),
        "1.75 of minutes were used once; paying the debt is not more usage: {usage:?}"
    );
    let groups: Vec<(&str, &str)> = usage
        .groups
        .iter()
        .map(|g| (g.key.as_str(), g.amount.as_str()))
        .collect();
    assert_eq!(groups, [(MINUTES, "1.75")]);
    t.server.stop().await;
}

async fn malformed_flex_caps_and_overrun_policies_are_refused_naming_the_field(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    set_flex(&mut t.admin, "acme", "0.50").await;
    let before = balance(&mut t.gate, "acme").await;

    for bad in [
        "-1",
        "abc",
        "0.0000001",
        "",
        "1e3",
        " 1",
        "9007199254.740992",
    ] {
        let status = t
            .admin
            .set_wallet(proto::SetWalletRequest {
                account_id: "acme".into(),
                wallet: String::new(),
                flex_cap: bad.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        assert!(
            status.message().starts_with("flex_cap"),
            "{bad:?}: {}",
            status.message()
        );
    }
    let status = t
        .admin
        .set_wallet(proto::SetWalletRequest {
            account_id: "acme".into(),
            wallet: "no such wallet".into(),
            flex_cap: "1.00".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("wallet"),
        "{}",
        status.message()
    );
    let status = t
        .admin
        .set_wallet(proto::SetWalletRequest {
            account_id: String::new(),
            wallet: String::new(),
            flex_cap: "1.00".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("account_id"),
        "{}",
        status.message()
    );
    assert_eq!(
        balance(&mut t.gate, "acme").await,
        before,
        "nothing changed"
    );

    // Flex and debt are not grants: their ids cannot be granted.
    for pseudo in ["~flex", "~debt"] {
        let status = t
            .admin
            .add_grant(proto::AddGrantRequest {
                account_id: "acme".into(),
                grant_id: pseudo.into(),
                amount: "1.00".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{pseudo}");
        assert!(
            status.message().starts_with("grant_id"),
            "{}",
            status.message()
        );
    }
    assert_eq!(
        balance(&mut t.gate, "acme").await,
        before,
        "nothing changed"
    );

    let set_prices = |features: Vec<proto::FeaturePrice>| {
        let mut admin = t.admin.clone();
        async move {
            admin
                .set_prices(proto::SetPricesRequest { features })
                .await
                .unwrap_err()
        }
    };
    let ok = minutes_price(proto::Overrun::ChargeActual, "");
    let cases = [
        (
            vec![minutes_price(proto::Overrun::AllowUpTo, "")],
            "features[0].overrun_allowance",
        ),
        (
            vec![ok.clone(), minutes_price(proto::Overrun::AllowUpTo, "")],
            "features[1].overrun_allowance",
        ),
        (
            vec![minutes_price(proto::Overrun::AllowUpTo, "-0.10")],
            "features[0].overrun_allowance",
        ),
        (
            vec![minutes_price(proto::Overrun::AllowUpTo, "0.0000001")],
            "features[0].overrun_allowance",
        ),
        (
            vec![minutes_price(proto::Overrun::CapAtHold, "0.10")],
            "features[0].overrun_allowance",
        ),
        (
            vec![minutes_price(proto::Overrun::ChargeActual, "0.10")],
            "features[0].overrun_allowance",
        ),
        (
            vec![proto::FeaturePrice {
                overrun: 99,
                ..ok.clone()
            }],
            "features[0].overrun",
        ),
    ];
    for (features, field) in cases {
        let status = set_prices(features.clone()).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{features:?}");
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "expected {field}: {}",
            status.message()
        );
    }
    let catalog = t
        .admin
        .get_prices(proto::GetPricesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        catalog.features.is_empty(),
        "no refused price was kept: {catalog:?}"
    );
    t.server.stop().await;
}
