//! Recurring allowances end to end over real gRPC: an included grant with a period (monthly or
//! yearly, anchored to a billing instant) is given again at each period boundary; its unused
//! credit lapses beyond the rollover cap, what is held stays held, and the ledger records a
//! `lapse/…` void and a `refill/…` grant dated at the period's start. Calendar-precise scenarios
//! run on a store with a manual clock; the boundary in real time runs on every store.

mod common;

on_both_stores!(
    a_monthly_allowance_refills_at_its_boundary_in_real_time,
    malformed_recurrences_are_refused_naming_the_field_and_change_nothing,
    repeating_a_recurring_grant_returns_it_unchanged,
);

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use creditgate::clock::{Clock, ManualClock, SystemClock};
use creditgate::config::ServerConfig;
use creditgate::domain::Period;
use creditgate::ledger::LedgerTarget;
use creditgate::proto::{self, admin_client::AdminClient, gate_client::GateClient};
use tonic::Code;
use tonic::transport::Channel;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const MONTH: i32 = proto::Period::Month as i32;
const YEAR: i32 = proto::Period::Year as i32;
const VOID: i32 = proto::EntryKind::Void as i32;
const GRANT: i32 = proto::EntryKind::Grant as i32;
const CHARGE: i32 = proto::EntryKind::Charge as i32;
const COMMIT: i32 = proto::EntryKind::Commit as i32;
const INSUFFICIENT: i32 = proto::DenyReason::InsufficientCredits as i32;

/// Unix milliseconds of a UTC date at a whole hour, counted day by day (independently of the
/// crate's calendar arithmetic).
fn utc(year: i64, month: i64, day: i64, hour: i64) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days: i64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += lengths[..(month - 1) as usize].iter().sum::<i64>();
    days += day - 1;
    days * DAY + hour * HOUR
}

#[test]
fn the_test_calendar_is_right() {
    assert_eq!(utc(1970, 1, 1, 0), 0);
    assert_eq!(utc(2026, 1, 31, 9), 1_769_850_000_000);
    assert_eq!(utc(2024, 3, 1, 0) - utc(2024, 2, 28, 0), 2 * DAY);
}

/// A server on the in-process store whose clock reads `now_ms` until the test moves it.
async fn start_at(dir: &Path, now_ms: i64) -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now_ms));
    let server = start_with(config(dir), clock.clone()).await;
    (server, clock)
}

/// Moves a manual clock to `at_ms` (forwards only).
fn set_clock(clock: &ManualClock, at_ms: i64) {
    let now = clock.now_ms();
    assert!(at_ms >= now, "the clock only moves forwards");
    clock.advance_ms(at_ms - now);
}

/// An included grant that recurs every `period` from `anchor_ms` (0: its creation).
fn allowance(
    account: &str,
    grant_id: &str,
    amount: &str,
    period: i32,
    anchor_ms: i64,
    rollover_max: &str,
) -> proto::AddGrantRequest {
    proto::AddGrantRequest {
        account_id: account.into(),
        grant_id: grant_id.into(),
        amount: amount.into(),
        kind: proto::GrantKind::Included as i32,
        period,
        period_anchor_ms: anchor_ms,
        rollover_max: rollover_max.into(),
        ..Default::default()
    }
}

async fn add(
    admin: &mut AdminClient<Channel>,
    request: proto::AddGrantRequest,
) -> proto::AddGrantResponse {
    admin
        .add_grant(request)
        .await
        .expect("add_grant succeeds")
        .into_inner()
}

async fn charge(
    gate: &mut GateClient<Channel>,
    account: &str,
    amount: &str,
) -> proto::ChargeResponse {
    gate.charge(charge_amount(account, "chat", amount))
        .await
        .expect("charge answers")
        .into_inner()
}

/// A charge that must be allowed; returns it.
async fn spend(
    gate: &mut GateClient<Channel>,
    account: &str,
    amount: &str,
) -> proto::ChargeResponse {
    let charged = charge(gate, account, amount).await;
    assert_eq!(
        charged.decision, ALLOWED,
        "charge of {amount} on {account}: {charged:?}"
    );
    charged
}

async fn reserve(
    gate: &mut GateClient<Channel>,
    account: &str,
    amount: &str,
    ttl_ms: u64,
) -> proto::ReserveResponse {
    let mut request = reserve_amount(account, "chat", amount);
    request.ttl_ms = ttl_ms;
    gate.reserve(request)
        .await
        .expect("reserve answers")
        .into_inner()
}

async fn check(
    gate: &mut GateClient<Channel>,
    account: &str,
    amount: &str,
) -> proto::CheckResponse {
    gate.check(proto::CheckRequest {
        account_id: account.into(),
        feature: "chat".into(),
        wallet: String::new(),
        cost: Some(proto::check_request::Cost::Amount(amount.into())),
        labels: Default::default(),
    })
    .await
    .expect("check answers")
    .into_inner()
}

fn split(portions: &[proto::GrantPortion]) -> Vec<(&str, &str)> {
    portions
        .iter()
        .map(|p| (p.grant_id.as_str(), p.amount.as_str()))
        .collect()
}

/// A grant of the account's default wallet, as GetBalance shows it.
async fn shown(
    gate: &mut GateClient<Channel>,
    account: &str,
    grant_id: &str,
) -> proto::GrantBalance {
    let wallet = default_wallet(gate, account).await;
    wallet
        .grants
        .iter()
        .find(|g| g.grant_id == grant_id)
        .cloned()
        .unwrap_or_else(|| panic!("grant {grant_id} is shown: {wallet:?}"))
}

/// (remaining, held, period_start_ms, next_reset_ms) of a grant.
fn period_state(grant: &proto::GrantBalance) -> (&str, &str, i64, i64) {
    (
        grant.remaining.as_str(),
        grant.held.as_str(),
        grant.period_start_ms,
        grant.next_reset_ms,
    )
}

fn find<'a>(entries: &'a [proto::LedgerEntry], entry_id: &str) -> &'a proto::LedgerEntry {
    entries
        .iter()
        .find(|e| e.entry_id == entry_id)
        .unwrap_or_else(|| panic!("entry {entry_id} is listed: {entries:#?}"))
}

fn position(entries: &[proto::LedgerEntry], entry_id: &str) -> usize {
    entries
        .iter()
        .position(|e| e.entry_id == entry_id)
        .unwrap_or_else(|| panic!("entry {entry_id} is listed: {entries:#?}"))
}

/// Ids of the account's reset entries (`lapse/…` and `refill/…`), oldest first.
fn reset_ids(entries: &[proto::LedgerEntry]) -> Vec<&str> {
    entries
        .iter()
        .rev()
        .map(|e| e.entry_id.as_str())
        .filter(|id| id.starts_with("lapse/") || id.starts_with("refill/"))
        .collect()
}

/// Checks the lapse entry of a reset: a void of the grant's unused credit, dated at the start
/// of the period.
fn assert_lapse(entry: &proto::LedgerEntry, grant_id: &str, amount: &str, at_ms: i64) {
    assert_eq!(entry.kind, VOID, "{entry:?}");
    assert_eq!(entry.amount, amount, "{entry:?}");
    assert_eq!(split(&entry.split), [(grant_id, amount)], "{entry:?}");
    assert_eq!(entry.grant_id, grant_id, "{entry:?}");
    assert_eq!(entry.wallet, "default", "{entry:?}");
    assert_eq!(entry.at_ms, at_ms, "{entry:?}");
}

/// Checks the refill entry of a reset: a grant entry of the new allowance, dated at the start
/// of the period.
fn assert_refill(entry: &proto::LedgerEntry, grant_id: &str, amount: &str, at_ms: i64) {
    assert_eq!(entry.kind, GRANT, "{entry:?}");
    assert_eq!(entry.amount, amount, "{entry:?}");
    assert_eq!(entry.grant_id, grant_id, "{entry:?}");
    assert_eq!(entry.wallet, "default", "{entry:?}");
    assert_eq!(entry.at_ms, at_ms, "{entry:?}");
}

/// Compares the account in the store with the ledger; asserts they agree.
async fn assert_no_drift(admin: &mut AdminClient<Channel>, account: &str, rebuild: bool) {
    let report = admin
        .reconcile(proto::ReconcileRequest {
            account_id: account.into(),
            rebuild,
            ..Default::default()
        })
        .await
        .expect("reconcile succeeds")
        .into_inner();
    let report = &report.accounts[0];
    assert_eq!(
        report.outcome,
        proto::ReconcileOutcome::Compared as i32,
        "{report:?}"
    );
    assert_eq!(report.rebuilt, rebuild, "{report:?}");
    assert!(!report.wallets.is_empty(), "{report:?}");
    for wallet in &report.wallets {
        assert_eq!(wallet.drift, "0.00", "{report:?}");
        assert_eq!(
            wallet.store_remaining, wallet.ledger_remaining,
            "{report:?}"
        );
        assert_eq!(wallet.store_held, wallet.ledger_held, "{report:?}");
    }
}

/// Scenario 1: an allowance anchored on the 31st resets on the last day of shorter months, at
/// the anchor's time of day; unused credit lapses, held credit stays held and can be committed
/// after the reset; a year of months follows the calendar.
#[tokio::test]
async fn a_monthly_allowance_resets_on_the_billing_day_or_the_last_day_of_a_shorter_month() {
    let anchor = utc(2026, 1, 31, 9);
    let feb = utc(2026, 2, 28, 9);
    let mar = utc(2026, 3, 31, 9);
    let dir = tempfile::tempdir().unwrap();
    let (mut t, clock) = start_at(dir.path(), anchor + HOUR).await;

    let added = add(
        &mut t.admin,
        allowance("acme", "plan", "10.00", MONTH, anchor, ""),
    )
    .await;
    assert!(added.created);
    assert_eq!(added.available, "10.00");
    let plan = added.grant.unwrap();
    assert_eq!(plan.kind, proto::GrantKind::Included as i32);
    assert_eq!(plan.period, MONTH);
    assert_eq!(period_state(&plan), ("10.00", "0.00", anchor, feb));
    assert_eq!(plan.rollover_max, "0.00");
    assert_eq!(plan.used_percent, "0");
    add(
        &mut t.admin,
        allowance("held", "plan", "10.00", MONTH, anchor, ""),
    )
    .await;

    let charged = spend(&mut t.gate, "acme", "4.00").await;
    assert_eq!(split(&charged.split), [("plan", "4.00")]);
    assert_eq!(charged.available, "6.00");
    spend(&mut t.gate, "held", "4.00").await;
    assert_eq!(shown(&mut t.gate, "acme", "plan").await.used_percent, "40");

    // A hold taken an hour before the boundary, for two hours.
    set_clock(&clock, feb - HOUR);
    let hold = reserve(&mut t.gate, "held", "3.00", 2 * HOUR as u64).await;
    assert_eq!(hold.decision, ALLOWED, "{hold:?}");
    assert_eq!(hold.available, "3.00");

    // Up to the last millisecond of the period, nothing changes.
    set_clock(&clock, feb - 1);
    let plan = shown(&mut t.gate, "acme", "plan").await;
    assert_eq!(period_state(&plan), ("6.00", "0.00", anchor, feb));
    let denied = check(&mut t.gate, "acme", "6.01").await;
    assert_eq!((denied.decision, denied.reason), (DENIED, INSUFFICIENT));
    let wallet = default_wallet(&mut t.gate, "held").await;
    assert_eq!(
        (wallet.held.as_str(), wallet.available.as_str()),
        ("3.00", "3.00")
    );
    assert_eq!(
        period_state(&wallet.grants[0]),
        ("6.00", "3.00", anchor, feb)
    );
    assert!(reset_ids(&entries(&mut t.admin, "acme").await).is_empty());

    // At the boundary (28 February, the month being shorter than the 31st), balances and
    // checks show the new period before anything writes it.
    set_clock(&clock, feb);
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(wallet.available, "10.00");
    let plan = &wallet.grants[0];
    assert_eq!(period_state(plan), ("10.00", "0.00", feb, mar));
    assert_eq!(plan.used_percent, "0");
    assert_eq!(plan.status, proto::GrantStatus::Active as i32);
    let allowed = check(&mut t.gate, "acme", "10.00").await;
    assert_eq!(
        (allowed.decision, allowed.available.as_str()),
        (ALLOWED, "10.00")
    );
    let denied = check(&mut t.gate, "acme", "10.01").await;
    assert_eq!((denied.decision, denied.reason), (DENIED, INSUFFICIENT));
    // The held 3.00 stays held on top of the new allowance; the 3.00 unused lapsed.
    let wallet = default_wallet(&mut t.gate, "held").await;
    assert_eq!(
        (wallet.held.as_str(), wallet.available.as_str()),
        ("3.00", "10.00")
    );
    assert_eq!(period_state(&wallet.grants[0]), ("13.00", "3.00", feb, mar));

    // The first write of the new period records the reset, dated at the period's start.
    let charged = spend(&mut t.gate, "acme", "1.00").await;
    assert_eq!(split(&charged.split), [("plan", "1.00")]);
    assert_eq!(charged.available, "9.00");
    let listed = entries(&mut t.admin, "acme").await;
    assert_eq!(
        reset_ids(&listed),
        ["lapse/acme/plan/1", "refill/acme/plan/1"]
    );
    assert_lapse(find(&listed, "lapse/acme/plan/1"), "plan", "6.00", feb);
    assert_refill(find(&listed, "refill/acme/plan/1"), "plan", "10.00", feb);
    assert_eq!(listed[0].kind, CHARGE, "the charge comes after the reset");
    assert_eq!(listed[0].amount, "1.00");
    assert_eq!(position(&listed, "refill/acme/plan/1"), 1);
    assert_eq!(position(&listed, "lapse/acme/plan/1"), 2);

    // The hold taken in the old period commits after the reset, charging the held credit.
    let committed = t
        .gate
        .commit(commit_amount(&hold.reservation_id, "3.00"))
        .await
        .expect("the hold is still open")
        .into_inner();
    assert_eq!(committed.charged, "3.00");
    assert_eq!(split(&committed.split), [("plan", "3.00")]);
    assert_eq!(committed.available, "10.00");
    let wallet = default_wallet(&mut t.gate, "held").await;
    assert_eq!(
        (wallet.held.as_str(), wallet.available.as_str()),
        ("0.00", "10.00")
    );
    assert_eq!(period_state(&wallet.grants[0]), ("10.00", "0.00", feb, mar));
    let listed = entries(&mut t.admin, "held").await;
    assert_eq!(
        reset_ids(&listed),
        ["lapse/held/plan/1", "refill/held/plan/1"]
    );
    assert_lapse(find(&listed, "lapse/held/plan/1"), "plan", "3.00", feb);
    assert_refill(find(&listed, "refill/held/plan/1"), "plan", "10.00", feb);
    assert_eq!(listed[0].kind, COMMIT);

    // A year of months: each resets on the 31st or the month's last day, at 09:00.
    let starts = [
        feb,
        mar,
        utc(2026, 4, 30, 9),
        utc(2026, 5, 31, 9),
        utc(2026, 6, 30, 9),
        utc(2026, 7, 31, 9),
        utc(2026, 8, 31, 9),
        utc(2026, 9, 30, 9),
        utc(2026, 10, 31, 9),
        utc(2026, 11, 30, 9),
        utc(2026, 12, 31, 9),
        utc(2027, 1, 31, 9),
        utc(2027, 2, 28, 9),
        utc(2027, 3, 31, 9),
    ];
    for (i, window) in starts.windows(3).enumerate() {
        let (start, next, after) = (window[0], window[1], window[2]);
        set_clock(&clock, next - 1);
        let plan = shown(&mut t.gate, "acme", "plan").await;
        assert_eq!(
            period_state(&plan),
            ("9.00", "0.00", start, next),
            "period {}",
            i + 1
        );
        set_clock(&clock, next);
        let plan = shown(&mut t.gate, "acme", "plan").await;
        assert_eq!(
            period_state(&plan),
            ("10.00", "0.00", next, after),
            "period {}",
            i + 2
        );
        let charged = spend(&mut t.gate, "acme", "1.00").await;
        assert_eq!(charged.available, "9.00", "period {}", i + 2);
    }
    let listed = entries(&mut t.admin, "acme").await;
    let mut expected = Vec::new();
    for index in 1..=13 {
        expected.push(format!("lapse/acme/plan/{index}"));
        expected.push(format!("refill/acme/plan/{index}"));
    }
    assert_eq!(
        reset_ids(&listed),
        expected,
        "one reset per period, in order"
    );
    for index in 2..=13 {
        let at = starts[index - 1];
        assert_lapse(
            find(&listed, &format!("lapse/acme/plan/{index}")),
            "plan",
            "9.00",
            at,
        );
        assert_refill(
            find(&listed, &format!("refill/acme/plan/{index}")),
            "plan",
            "10.00",
            at,
        );
    }
    t.server.stop().await;
}

/// Scenario 2: unused credit rolls over up to the cap; over several periods that passed unused,
/// each one's allowance may roll over, still up to the cap.
#[tokio::test]
async fn unused_credit_rolls_over_up_to_the_cap() {
    let anchor = utc(2026, 3, 15, 0);
    let month = |m: i64| utc(2026, m, 15, 0);
    let dir = tempfile::tempdir().unwrap();
    let (mut t, clock) = start_at(dir.path(), anchor).await;
    for account in ["acme", "spent", "exact"] {
        let added = add(
            &mut t.admin,
            allowance(account, "plan", "10.00", MONTH, anchor, "2.50"),
        )
        .await;
        let plan = added.grant.unwrap();
        assert_eq!(plan.rollover_max, "2.50");
        assert_eq!(period_state(&plan), ("10.00", "0.00", anchor, month(4)));
    }
    spend(&mut t.gate, "acme", "4.00").await;
    spend(&mut t.gate, "spent", "10.00").await;
    spend(&mut t.gate, "exact", "7.50").await;

    // 6.00 unused: 2.50 carried, 3.50 lapsed.
    set_clock(&clock, month(4));
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(wallet.available, "12.50");
    assert_eq!(
        period_state(&wallet.grants[0]),
        ("12.50", "0.00", month(4), month(5))
    );
    let charged = spend(&mut t.gate, "acme", "1.00").await;
    assert_eq!(charged.available, "11.50");
    let listed = entries(&mut t.admin, "acme").await;
    assert_eq!(
        reset_ids(&listed),
        ["lapse/acme/plan/1", "refill/acme/plan/1"]
    );
    assert_lapse(find(&listed, "lapse/acme/plan/1"), "plan", "3.50", month(4));
    assert_refill(
        find(&listed, "refill/acme/plan/1"),
        "plan",
        "10.00",
        month(4),
    );

    // Exactly the cap unused: it all rolls over, and nothing lapses (no lapse entry).
    let charged = spend(&mut t.gate, "exact", "0.50").await;
    assert_eq!(charged.available, "12.00");
    let listed = entries(&mut t.admin, "exact").await;
    assert_eq!(reset_ids(&listed), ["refill/exact/plan/1"]);
    assert_refill(
        find(&listed, "refill/exact/plan/1"),
        "plan",
        "10.00",
        month(4),
    );

    // Three boundaries pass with nothing spent (periods 2 and 3 unused, now in period 4): the
    // carried credit is still capped at 2.50, and one reset is recorded, for period 4.
    set_clock(&clock, month(7) - 1);
    let plan = shown(&mut t.gate, "acme", "plan").await;
    assert_eq!(period_state(&plan), ("12.50", "0.00", month(6), month(7)));
    set_clock(&clock, month(7));
    let plan = shown(&mut t.gate, "acme", "plan").await;
    assert_eq!(period_state(&plan), ("12.50", "0.00", month(7), month(8)));
    let charged = spend(&mut t.gate, "acme", "0.50").await;
    assert_eq!(charged.available, "12.00");
    let listed = entries(&mut t.admin, "acme").await;
    assert_eq!(
        reset_ids(&listed),
        [
            "lapse/acme/plan/1",
            "refill/acme/plan/1",
            "lapse/acme/plan/4",
            "refill/acme/plan/4",
        ]
    );
    assert_lapse(find(&listed, "lapse/acme/plan/4"), "plan", "9.00", month(7));
    assert_refill(
        find(&listed, "refill/acme/plan/4"),
        "plan",
        "10.00",
        month(7),
    );

    // All spent in period 0, then periods 1 and 2 unused: their allowances roll into period 3,
    // up to the cap; nothing was unused at the last reset, so nothing lapses.
    let plan = shown(&mut t.gate, "spent", "plan").await;
    assert_eq!(period_state(&plan), ("12.50", "0.00", month(7), month(8)));
    let charged = spend(&mut t.gate, "spent", "12.50").await;
    assert_eq!(charged.available, "0.00");
    let listed = entries(&mut t.admin, "spent").await;
    assert_eq!(reset_ids(&listed), ["refill/spent/plan/4"]);
    assert_refill(
        find(&listed, "refill/spent/plan/4"),
        "plan",
        "12.50",
        month(7),
    );
    let denied = charge(&mut t.gate, "spent", "0.01").await;
    assert_eq!((denied.decision, denied.reason), (DENIED, INSUFFICIENT));
    t.server.stop().await;
}

/// Scenario 3: a yearly allowance resets after a year, not after a month; anchored on 29
/// February, it resets on 28 February in common years.
#[tokio::test]
async fn a_yearly_allowance_resets_after_a_year_not_a_month() {
    let anchor = utc(2026, 2, 10, 0);
    let next_year = utc(2027, 2, 10, 0);
    let dir = tempfile::tempdir().unwrap();
    let (mut t, clock) = start_at(dir.path(), anchor + HOUR).await;
    let added = add(
        &mut t.admin,
        allowance("acme", "plan", "100.00", YEAR, anchor, ""),
    )
    .await;
    let plan = added.grant.unwrap();
    assert_eq!(plan.period, YEAR);
    assert_eq!(period_state(&plan), ("100.00", "0.00", anchor, next_year));
    // A leap-day anchor in the past: the grant starts in the period now falls in.
    let leap = utc(2024, 2, 29, 0);
    let added = add(
        &mut t.admin,
        allowance("leap", "plan", "100.00", YEAR, leap, ""),
    )
    .await;
    let plan = added.grant.unwrap();
    assert_eq!(
        period_state(&plan),
        ("100.00", "0.00", utc(2025, 2, 28, 0), utc(2026, 2, 28, 0))
    );
    spend(&mut t.gate, "acme", "40.00").await;
    spend(&mut t.gate, "leap", "40.00").await;

    // A month later, and eleven months later: no reset.
    for at in [utc(2026, 3, 10, 0), next_year - 1] {
        set_clock(&clock, at);
        let plan = shown(&mut t.gate, "acme", "plan").await;
        assert_eq!(period_state(&plan), ("60.00", "0.00", anchor, next_year));
    }
    assert!(reset_ids(&entries(&mut t.admin, "acme").await).is_empty());
    // The leap-day grant resets on 28 February 2026 (a common year), a year after the last.
    let plan = shown(&mut t.gate, "leap", "plan").await;
    assert_eq!(
        period_state(&plan),
        ("100.00", "0.00", utc(2026, 2, 28, 0), utc(2027, 2, 28, 0))
    );

    set_clock(&clock, next_year);
    let plan = shown(&mut t.gate, "acme", "plan").await;
    assert_eq!(plan.period, YEAR);
    assert_eq!(
        period_state(&plan),
        ("100.00", "0.00", next_year, utc(2028, 2, 10, 0))
    );
    spend(&mut t.gate, "acme", "1.00").await;
    let listed = entries(&mut t.admin, "acme").await;
    assert_eq!(
        reset_ids(&listed),
        ["lapse/acme/plan/1", "refill/acme/plan/1"]
    );
    assert_lapse(
        find(&listed, "lapse/acme/plan/1"),
        "plan",
        "60.00",
        next_year,
    );
    assert_refill(
        find(&listed, "refill/acme/plan/1"),
        "plan",
        "100.00",
        next_year,
    );

    // The leap-day grant: 28 February 2027, then 29 February 2028.
    set_clock(&clock, utc(2027, 2, 28, 0));
    spend(&mut t.gate, "leap", "1.00").await;
    let plan = shown(&mut t.gate, "leap", "plan").await;
    assert_eq!(
        period_state(&plan),
        ("99.00", "0.00", utc(2027, 2, 28, 0), utc(2028, 2, 29, 0))
    );
    let listed = entries(&mut t.admin, "leap").await;
    assert_eq!(
        reset_ids(&listed),
        ["lapse/leap/plan/3", "refill/leap/plan/3"],
        "periods 2 and 3 passed: one reset, into period 3"
    );
    let at = utc(2027, 2, 28, 0);
    assert_lapse(find(&listed, "lapse/leap/plan/3"), "plan", "60.00", at);
    assert_refill(find(&listed, "refill/leap/plan/3"), "plan", "100.00", at);
    t.server.stop().await;
}

/// Scenario 4 on the embedded ledger (SQLite).
#[tokio::test]
async fn resets_survive_a_restart_and_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    resets_survive_a_restart(move || config(&path)).await;
}

/// Scenario 4 on a PostgreSQL ledger.
#[tokio::test]
async fn resets_survive_a_restart_on_a_postgres_ledger() {
    let database = PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, url) = (dir.path().to_owned(), database.url.clone());
    resets_survive_a_restart(move || {
        let mut config = config(&path);
        config.ledger = LedgerTarget::Postgres { url: url.clone() };
        config.limits.inbound_interval_ms = 20;
        config
    })
    .await;
    database.drop_database().await;
}

/// Balances after resets (written, and due but not yet written) are the same after a restart,
/// which rebuilds the store from the ledger, and after a rebuild of the account; the ledger
/// explains the store throughout, and the periods go on from where they were.
async fn resets_survive_a_restart(make_config: impl Fn() -> ServerConfig) {
    let anchor = utc(2026, 5, 20, 12);
    let month = |m: i64| utc(2026, m, 20, 12);
    let clock = Arc::new(ManualClock::new(anchor + HOUR));
    let mut t = start_with(make_config(), clock.clone()).await;
    add(
        &mut t.admin,
        allowance("acme", "plan", "10.00", MONTH, anchor, "1.00"),
    )
    .await;
    grant(&mut t.admin, "acme", "topup", "5.00").await;
    spend(&mut t.gate, "acme", "4.00").await;

    // A reset written, spending in the new period, and a hold open.
    set_clock(&clock, month(6));
    let charged = spend(&mut t.gate, "acme", "2.00").await;
    assert_eq!(split(&charged.split), [("plan", "2.00")]);
    assert_eq!(
        charged.available, "14.00",
        "6.00 unused: 1.00 carried, 5.00 lapsed"
    );
    let hold = reserve(&mut t.gate, "acme", "1.00", HOUR as u64).await;
    assert_eq!(hold.decision, ALLOWED);
    let before = balance(&mut t.gate, "acme").await;
    let plan = &before["default"].grants[0];
    assert_eq!(plan.grant_id, "plan");
    assert_eq!(period_state(plan), ("9.00", "1.00", month(6), month(7)));
    let history = entries(&mut t.admin, "acme").await;
    assert_lapse(
        find(&history, "lapse/acme/plan/1"),
        "plan",
        "5.00",
        month(6),
    );
    assert_refill(
        find(&history, "refill/acme/plan/1"),
        "plan",
        "10.00",
        month(6),
    );
    assert_no_drift(&mut t.admin, "acme", false).await;

    t.server.stop().await;
    let mut t = start_with(make_config(), clock.clone()).await;
    assert_eq!(
        balance(&mut t.gate, "acme").await,
        before,
        "after a restart"
    );
    assert_eq!(entries(&mut t.admin, "acme").await, history);
    assert_no_drift(&mut t.admin, "acme", false).await;
    assert_no_drift(&mut t.admin, "acme", true).await;
    assert_eq!(
        balance(&mut t.gate, "acme").await,
        before,
        "after a rebuild"
    );

    // The hold survived, and gives its credit back.
    let released = t
        .gate
        .release(proto::ReleaseRequest {
            reservation_id: hold.reservation_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.released, "1.00");
    assert_eq!(released.available, "14.00");

    // A reset due but not yet written when the server stops: the restarted store shows it,
    // and writes it once.
    set_clock(&clock, month(7));
    let due = balance(&mut t.gate, "acme").await;
    let plan = &due["default"].grants[0];
    assert_eq!(period_state(plan), ("11.00", "0.00", month(7), month(8)));
    t.server.stop().await;
    let mut t = start_with(make_config(), clock.clone()).await;
    assert_eq!(
        balance(&mut t.gate, "acme").await,
        due,
        "the reset is due after a restart"
    );
    assert_no_drift(&mut t.admin, "acme", false).await;
    let charged = spend(&mut t.gate, "acme", "3.00").await;
    assert_eq!(split(&charged.split), [("plan", "3.00")]);
    assert_eq!(charged.available, "13.00");
    let history = entries(&mut t.admin, "acme").await;
    assert_eq!(
        reset_ids(&history),
        [
            "lapse/acme/plan/1",
            "refill/acme/plan/1",
            "lapse/acme/plan/2",
            "refill/acme/plan/2",
        ]
    );
    assert_lapse(
        find(&history, "lapse/acme/plan/2"),
        "plan",
        "8.00",
        month(7),
    );
    assert_refill(
        find(&history, "refill/acme/plan/2"),
        "plan",
        "10.00",
        month(7),
    );

    let before = balance(&mut t.gate, "acme").await;
    t.server.stop().await;
    let mut t = start_with(make_config(), clock.clone()).await;
    assert_eq!(balance(&mut t.gate, "acme").await, before);
    assert_eq!(entries(&mut t.admin, "acme").await, history);
    assert_no_drift(&mut t.admin, "acme", false).await;

    // And the next period comes from the period the ledger kept, not from the start.
    set_clock(&clock, month(8));
    let charged = spend(&mut t.gate, "acme", "1.00").await;
    assert_eq!(
        charged.available, "15.00",
        "8.00 unused: 1.00 carried; 10.00 given"
    );
    let history = entries(&mut t.admin, "acme").await;
    assert_lapse(
        find(&history, "lapse/acme/plan/3"),
        "plan",
        "7.00",
        month(8),
    );
    assert_refill(
        find(&history, "refill/acme/plan/3"),
        "plan",
        "10.00",
        month(8),
    );
    assert_eq!(reset_ids(&history).len(), 6);
    assert_no_drift(&mut t.admin, "acme", false).await;
    t.server.stop().await;
}

/// A monthly anchor whose period `index` starts at `boundary_ms`, with `now_ms` in the period
/// before: found with the crate's own calendar, and checked.
fn anchor_for_boundary(boundary_ms: i64, now_ms: i64) -> (i64, i64) {
    for index in 1..=3 {
        let mut anchor = boundary_ms - index * 30 * DAY;
        for _ in 0..8 {
            let start = Period::Month.start_ms(anchor, index);
            if start == boundary_ms {
                break;
            }
            anchor += boundary_ms - start;
        }
        if Period::Month.start_ms(anchor, index) == boundary_ms
            && Period::Month.index_at(anchor, now_ms) == index - 1
            && anchor <= now_ms
        {
            return (anchor, index);
        }
    }
    panic!("no monthly anchor puts a boundary at {boundary_ms}");
}

/// Scenario 5: on every store, in real time (the store's clock), a monthly allowance whose
/// boundary is a few seconds ahead: spend before it, and after it the allowance is full again,
/// new holds and charges draw on it, and the ledger has the reset.
async fn a_monthly_allowance_refills_at_its_boundary_in_real_time(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;

    // The hold must be taken before the boundary (by the store's clock, which the hold's
    // expiry tells); on a slow machine, try again with more time.
    let ttl: i64 = 120_000;
    let mut attempt = 0;
    let (account, anchor, index, boundary) = loop {
        attempt += 1;
        assert!(
            attempt <= 3,
            "the store is too slow to take a hold before a boundary"
        );
        let lead = 3_000 * attempt;
        let now = SystemClock.now_ms();
        let boundary = now + lead;
        let (anchor, index) = anchor_for_boundary(boundary, now);
        let account = format!("acme{attempt}");
        let added = add(
            &mut t.admin,
            allowance(&account, "plan", "10.00", MONTH, anchor, ""),
        )
        .await;
        let plan = added.grant.unwrap();
        if plan.period_start_ms == boundary {
            continue; // Created after the boundary already: try again with more time.
        }
        assert_eq!(plan.next_reset_ms, boundary, "{plan:?}");
        assert_eq!(
            plan.period_start_ms,
            Period::Month.start_ms(anchor, index - 1)
        );
        let hold = reserve(&mut t.gate, &account, "4.00", ttl as u64).await;
        assert_eq!(hold.decision, ALLOWED, "{hold:?}");
        let held_at = hold.expires_at_ms - ttl;
        let committed = t
            .gate
            .commit(commit_amount(&hold.reservation_id, "4.00"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(committed.charged, "4.00");
        if held_at < boundary {
            break (account, anchor, index, boundary);
        }
    };
    let next = Period::Month.start_ms(anchor, index + 1);

    // Whichever side of the boundary the balance is read on, it is consistent.
    let plan = shown(&mut t.gate, &account, "plan").await;
    if plan.period_start_ms == boundary {
        assert_eq!(period_state(&plan), ("10.00", "0.00", boundary, next));
    } else {
        assert_eq!(plan.next_reset_ms, boundary);
        assert_eq!(plan.remaining, "6.00");
        assert_eq!(plan.used_percent, "40");
    }

    // Wait for the boundary (polling the balance, which writes nothing).
    let mut gate = t.gate.clone();
    let account_ = account.clone();
    eventually(Duration::from_secs(60), || {
        let mut gate = gate.clone();
        let account = account_.clone();
        async move { shown(&mut gate, &account, "plan").await.period_start_ms == boundary }
    })
    .await;
    let wallet = default_wallet(&mut gate, &account).await;
    assert_eq!(wallet.available, "10.00");
    assert_eq!(
        period_state(&wallet.grants[0]),
        ("10.00", "0.00", boundary, next)
    );
    let allowed = check(&mut gate, &account, "10.00").await;
    assert_eq!(
        (allowed.decision, allowed.available.as_str()),
        (ALLOWED, "10.00")
    );
    // The store and the ledger agree while the reset is due but not yet written.
    assert_no_drift(&mut t.admin, &account, false).await;

    // New holds and charges draw on the new allowance.
    let hold = reserve(&mut gate, &account, "7.00", 60_000).await;
    assert_eq!(hold.decision, ALLOWED, "{hold:?}");
    assert_eq!(split(&hold.split), [("plan", "7.00")]);
    assert_eq!(hold.available, "3.00");
    let charged = spend(&mut gate, &account, "3.00").await;
    assert_eq!(split(&charged.split), [("plan", "3.00")]);
    assert_eq!(charged.available, "0.00");
    let denied = charge(&mut gate, &account, "0.01").await;
    assert_eq!((denied.decision, denied.reason), (DENIED, INSUFFICIENT));
    let released = gate
        .release(proto::ReleaseRequest {
            reservation_id: hold.reservation_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.available, "7.00");

    // The reset was written by the Reserve, whose outbox record a shared store carries to the
    // ledger in the background: wait for it.
    let lapse = format!("lapse/{account}/plan/{index}");
    let refill = format!("refill/{account}/plan/{index}");
    let mut admin = t.admin.clone();
    eventually(Duration::from_secs(30), || {
        let mut admin = admin.clone();
        let (account, refill) = (account.clone(), refill.clone());
        async move {
            entries(&mut admin, &account)
                .await
                .iter()
                .any(|e| e.entry_id == refill)
        }
    })
    .await;
    let listed = entries(&mut admin, &account).await;
    assert_eq!(
        reset_ids(&listed),
        [lapse.as_str(), refill.as_str()],
        "{listed:#?}"
    );
    assert_lapse(find(&listed, &lapse), "plan", "6.00", boundary);
    assert_refill(find(&listed, &refill), "plan", "10.00", boundary);
    assert!(find(&listed, &charged.entry_id).at_ms >= boundary);
    assert_no_drift(&mut t.admin, &account, false).await;

    // The same after a restart, and after a rebuild from the ledger.
    let before = balance(&mut gate, &account).await;
    t.server.stop().await;
    let mut t = start_on(&backend, dir.path()).await;
    assert_eq!(balance(&mut t.gate, &account).await, before);
    assert_no_drift(&mut t.admin, &account, false).await;
    assert_no_drift(&mut t.admin, &account, true).await;
    assert_eq!(balance(&mut t.gate, &account).await, before);
    assert_eq!(
        period_state(&shown(&mut t.gate, &account, "plan").await),
        ("7.00", "0.00", boundary, next)
    );
    t.server.stop().await;
}

/// Scenario 6: a plan change voids the old allowance (its remainder lapses at once) and adds
/// the new one, available at once; the old one never resets again.
#[tokio::test]
async fn a_plan_change_voids_the_old_allowance_and_starts_the_new_one_at_once() {
    let start = utc(2026, 6, 10, 0);
    let change = utc(2026, 6, 25, 0);
    let dir = tempfile::tempdir().unwrap();
    let (mut t, clock) = start_at(dir.path(), start).await;
    add(
        &mut t.admin,
        allowance("acme", "basic", "10.00", MONTH, 0, "5.00"),
    )
    .await;
    let plan = shown(&mut t.gate, "acme", "basic").await;
    assert_eq!(
        period_state(&plan),
        ("10.00", "0.00", start, utc(2026, 7, 10, 0)),
        "anchored when created"
    );
    spend(&mut t.gate, "acme", "3.00").await;

    set_clock(&clock, change);
    let voided = t
        .admin
        .void_grant(proto::VoidGrantRequest {
            account_id: "acme".into(),
            grant_id: "basic".into(),
            reason: "plan change".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voided.voided, "7.00");
    assert_eq!(voided.available, "0.00");
    let added = add(
        &mut t.admin,
        allowance("acme", "pro", "25.00", MONTH, 0, ""),
    )
    .await;
    assert!(added.created);
    assert_eq!(added.available, "25.00");
    let pro = added.grant.unwrap();
    assert_eq!(
        period_state(&pro),
        ("25.00", "0.00", change, utc(2026, 7, 25, 0))
    );
    let charged = spend(&mut t.gate, "acme", "5.00").await;
    assert_eq!(split(&charged.split), [("pro", "5.00")]);
    assert_eq!(charged.available, "20.00");

    // The old plan's billing day passes: nothing happens to it.
    set_clock(&clock, utc(2026, 7, 10, 0));
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(wallet.available, "20.00");
    if let Some(basic) = wallet.grants.iter().find(|g| g.grant_id == "basic") {
        assert_eq!(basic.status, proto::GrantStatus::Voided as i32, "{basic:?}");
        assert_eq!(basic.remaining, "0.00", "{basic:?}");
    }
    let charged = spend(&mut t.gate, "acme", "1.00").await;
    assert_eq!(split(&charged.split), [("pro", "1.00")]);
    assert_eq!(charged.available, "19.00");

    // The new plan resets on its own day.
    set_clock(&clock, utc(2026, 7, 25, 0));
    let charged = spend(&mut t.gate, "acme", "1.00").await;
    assert_eq!(split(&charged.split), [("pro", "1.00")]);
    assert_eq!(charged.available, "24.00");
    set_clock(&clock, utc(2026, 8, 10, 0));
    spend(&mut t.gate, "acme", "1.00").await;
    let listed = entries(&mut t.admin, "acme").await;
    assert_eq!(
        reset_ids(&listed),
        ["lapse/acme/pro/1", "refill/acme/pro/1"],
        "the voided allowance never resets"
    );
    assert_lapse(
        find(&listed, "lapse/acme/pro/1"),
        "pro",
        "19.00",
        utc(2026, 7, 25, 0),
    );
    assert_refill(
        find(&listed, "refill/acme/pro/1"),
        "pro",
        "25.00",
        utc(2026, 7, 25, 0),
    );
    let void = listed
        .iter()
        .find(|e| e.kind == VOID && e.grant_id == "basic")
        .expect("the void of the old plan is listed");
    assert_eq!(void.amount, "7.00");
    assert_eq!(void.at_ms, change);

    // A plan change after a boundary that nothing has written yet: the reset comes first (the
    // unused credit of the last period lapses, the new allowance is given), then the void
    // ends the new allowance.
    add(
        &mut t.admin,
        allowance("late", "basic", "10.00", MONTH, start, ""),
    )
    .await;
    set_clock(&clock, utc(2026, 9, 10, 0));
    spend(&mut t.gate, "late", "3.00").await;
    set_clock(&clock, utc(2026, 10, 10, 0));
    let voided = t
        .admin
        .void_grant(proto::VoidGrantRequest {
            account_id: "late".into(),
            grant_id: "basic".into(),
            reason: "plan change".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voided.voided, "10.00");
    assert_eq!(voided.available, "0.00");
    let listed = entries(&mut t.admin, "late").await;
    assert_eq!(
        reset_ids(&listed),
        [
            "lapse/late/basic/3",
            "refill/late/basic/3",
            "lapse/late/basic/4",
            "refill/late/basic/4",
        ]
    );
    assert_lapse(
        find(&listed, "lapse/late/basic/4"),
        "basic",
        "7.00",
        utc(2026, 10, 10, 0),
    );
    assert_eq!(listed[0].kind, VOID);
    assert_eq!(listed[0].amount, "10.00");
    assert_eq!(listed[0].grant_id, "basic");
    set_clock(&clock, utc(2026, 11, 10, 0));
    assert_eq!(default_wallet(&mut t.gate, "late").await.available, "0.00");
    add(
        &mut t.admin,
        allowance("late", "pro", "25.00", MONTH, 0, ""),
    )
    .await;
    assert_eq!(reset_ids(&entries(&mut t.admin, "late").await).len(), 4);
    t.server.stop().await;
}

/// Scenario 7: malformed recurrences are refused with INVALID_ARGUMENT naming the field, and
/// change nothing.
async fn malformed_recurrences_are_refused_naming_the_field_and_change_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    add(
        &mut t.admin,
        allowance("acme", "plan", "10.00", MONTH, 0, "1.00"),
    )
    .await;
    spend(&mut t.gate, "acme", "1.00").await;
    let balance_before = balance(&mut t.gate, "acme").await;
    let entries_before = entries(&mut t.admin, "acme").await;

    let base = || allowance("acme", "g2", "5.00", MONTH, 0, "");
    let future = SystemClock.now_ms() + DAY;
    let cases: Vec<(&str, proto::AddGrantRequest)> = vec![
        (
            "period",
            proto::AddGrantRequest {
                kind: proto::GrantKind::Prepaid as i32,
                ..base()
            },
        ),
        (
            "period",
            proto::AddGrantRequest {
                kind: proto::GrantKind::Unspecified as i32,
                ..base()
            },
        ),
        (
            "period",
            proto::AddGrantRequest {
                kind: proto::GrantKind::Promotional as i32,
                ..base()
            },
        ),
        (
            "rollover_max",
            proto::AddGrantRequest {
                period: proto::Period::Unspecified as i32,
                rollover_max: "1.00".into(),
                ..base()
            },
        ),
        (
            "period_anchor_ms",
            proto::AddGrantRequest {
                period: proto::Period::Unspecified as i32,
                period_anchor_ms: 1_000,
                ..base()
            },
        ),
        (
            "rollover_max",
            proto::AddGrantRequest {
                rollover_max: "-1.00".into(),
                ..base()
            },
        ),
        (
            "rollover_max",
            proto::AddGrantRequest {
                rollover_max: "two".into(),
                ..base()
            },
        ),
        (
            "rollover_max",
            proto::AddGrantRequest {
                rollover_max: "1.0000001".into(),
                ..base()
            },
        ),
        (
            "rollover_max",
            proto::AddGrantRequest {
                rollover_max: " 1".into(),
                ..base()
            },
        ),
        (
            "period_anchor_ms",
            proto::AddGrantRequest {
                period_anchor_ms: future,
                ..base()
            },
        ),
        (
            "period_anchor_ms",
            proto::AddGrantRequest {
                period_anchor_ms: -1,
                ..base()
            },
        ),
        (
            "period",
            proto::AddGrantRequest {
                period: 7,
                ..base()
            },
        ),
        (
            "period",
            proto::AddGrantRequest {
                period: -1,
                ..base()
            },
        ),
    ];
    for (i, (field, request)) in cases.into_iter().enumerate() {
        let status = t
            .admin
            .add_grant(request.clone())
            .await
            .expect_err(&format!("case {i} ({field}) must fail: {request:?}"));
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "case {i} ({field}): {status:?}"
        );
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "case {i}: message {:?} must name {field}",
            status.message()
        );
    }

    assert_eq!(balance(&mut t.gate, "acme").await, balance_before);
    assert_eq!(entries(&mut t.admin, "acme").await, entries_before);
    // No grant g2 was made: the id is still free for any terms.
    let added = add(
        &mut t.admin,
        proto::AddGrantRequest {
            period: proto::Period::Year as i32,
            rollover_max: "0".into(),
            ..base()
        },
    )
    .await;
    assert!(added.created);
    assert_eq!(added.grant.unwrap().period, YEAR);
    t.server.stop().await;
}

/// Scenario 8: repeating the same recurring AddGrant later returns it unchanged, even without
/// an anchor (it is anchored at its first creation); different recurrence terms conflict.
async fn repeating_a_recurring_grant_returns_it_unchanged(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    let request = allowance("acme", "plan", "10.00", MONTH, 0, "2.00");
    let first = add(&mut t.admin, request.clone()).await;
    assert!(first.created);
    spend(&mut t.gate, "acme", "1.00").await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let again = add(&mut t.admin, request.clone()).await;
    assert!(!again.created, "{again:?}");
    assert_eq!(again.available, "9.00");
    let (first, again) = (first.grant.unwrap(), again.grant.unwrap());
    assert_eq!(again.remaining, "9.00");
    assert_eq!(
        (again.period, again.period_start_ms, again.next_reset_ms),
        (first.period, first.period_start_ms, first.next_reset_ms),
        "anchored at its first creation"
    );
    assert_eq!(again.rollover_max, "2.00");

    let anchored = allowance(
        "acme",
        "anchored",
        "10.00",
        MONTH,
        first.period_start_ms,
        "",
    );
    assert!(add(&mut t.admin, anchored.clone()).await.created);
    assert!(!add(&mut t.admin, anchored).await.created);

    let conflicts = [
        allowance("acme", "plan", "10.00", YEAR, 0, "2.00"),
        allowance("acme", "plan", "10.00", MONTH, 0, "3.00"),
        allowance("acme", "plan", "10.00", MONTH, 0, ""),
        allowance(
            "acme",
            "plan",
            "10.00",
            MONTH,
            first.period_start_ms,
            "2.00",
        ),
        proto::AddGrantRequest {
            period: proto::Period::Unspecified as i32,
            rollover_max: String::new(),
            ..request.clone()
        },
    ];
    for (i, conflict) in conflicts.into_iter().enumerate() {
        let status = t
            .admin
            .add_grant(conflict)
            .await
            .expect_err(&format!("case {i}: different terms conflict"));
        assert_eq!(status.code(), Code::AlreadyExists, "case {i}: {status:?}");
    }
    assert_eq!(
        period_state(&shown(&mut t.gate, "acme", "plan").await),
        ("9.00", "0.00", first.period_start_ms, first.next_reset_ms)
    );
    t.server.stop().await;
}

/// Repeating a recurring grant after a reset returns it as it is now, without a second reset
/// or a new grant.
#[tokio::test]
async fn repeating_a_recurring_grant_after_a_reset_changes_nothing() {
    let start = utc(2026, 4, 1, 0);
    let dir = tempfile::tempdir().unwrap();
    let (mut t, clock) = start_at(dir.path(), start).await;
    let request = allowance("acme", "plan", "10.00", MONTH, 0, "");
    assert!(add(&mut t.admin, request.clone()).await.created);
    spend(&mut t.gate, "acme", "4.00").await;
    set_clock(&clock, utc(2026, 5, 1, 0));
    let again = add(&mut t.admin, request.clone()).await;
    assert!(!again.created);
    assert_eq!(again.available, "10.00");
    assert_eq!(
        period_state(&again.grant.unwrap()),
        ("10.00", "0.00", utc(2026, 5, 1, 0), utc(2026, 6, 1, 0))
    );
    let again = add(&mut t.admin, request).await;
    assert!(!again.created);
    spend(&mut t.gate, "acme", "1.00").await;
    let listed = entries(&mut t.admin, "acme").await;
    assert_eq!(
        reset_ids(&listed),
        ["lapse/acme/plan/1", "refill/acme/plan/1"]
    );
    assert_eq!(
        listed.iter().filter(|e| e.kind == GRANT).count(),
        2,
        "the grant and one refill"
    );
    t.server.stop().await;
}

/// The wallet and grant figures stay meaningful when credit carries over a reset: nothing is
/// "spent" in a period that has only received credit, `granted - spent - held = available`,
/// and `used_percent` counts what was charged in the current period.
#[tokio::test]
async fn carried_credit_keeps_the_wallet_figures_meaningful() {
    let anchor = utc(2026, 3, 15, 0);
    let dir = tempfile::tempdir().unwrap();
    let (mut t, clock) = start_at(dir.path(), anchor).await;
    add(
        &mut t.admin,
        allowance("acme", "plan", "10.00", MONTH, anchor, "2.50"),
    )
    .await;
    spend(&mut t.gate, "acme", "4.00").await;
    set_clock(&clock, utc(2026, 4, 15, 0));
    spend(&mut t.gate, "acme", "1.00").await;
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(wallet.available, "11.50");
    let minor = |text: &str| -> i64 {
        let (whole, fraction) = text.split_once('.').unwrap();
        let sign = if whole.starts_with('-') { -1 } else { 1 };
        let fraction: i64 = format!("{fraction:0<6}").parse().unwrap();
        whole.parse::<i64>().unwrap() * 1_000_000 + sign * fraction
    };
    let mut wrong = Vec::new();
    if minor(&wallet.granted) - minor(&wallet.spent) - minor(&wallet.held)
        != minor(&wallet.available)
    {
        wrong.push("granted - spent - held != available");
    }
    if wallet.spent.starts_with('-') {
        wrong.push("spent is negative");
    }
    // Use is counted against what the period started with: the 10.00 allowance and the 2.50
    // that rolled over.
    if wallet.grants[0].used_percent != "8" {
        wrong.push("used_percent is not 8 (1.00 of the 12.50 this period started with)");
    }
    if (wallet.granted.as_str(), wallet.spent.as_str()) != ("12.50", "1.00") {
        wrong.push("granted and spent are not those of this period");
    }
    assert!(wrong.is_empty(), "{wrong:?}: {wallet:?}");
    t.server.stop().await;
}
