//! Property test of the credit model on the store's own clock: random grants (scoped,
//! expiring, recurring with rollover), holds, commits above and below their holds under each
//! overrun policy, charges, voids, flex and time passing (expiries, period resets). After every
//! step the ledger entries the store wrote add up: each charge equals its split, every grant's
//! remaining amount is what its entries left of it and never below what is held of it nor zero,
//! flex and debt are what their portions say, and no grant pays a new hold or charge for a
//! feature outside its scope, after it expired or after it was voided.

use std::collections::HashMap;
use std::sync::Arc;

use creditgate::clock::ManualClock;
use creditgate::domain::{
    AccountId, FeatureId, Grant, GrantId, GrantKind, GrantTerms, OverrunPolicy, Period, Recurrence,
    ReservationId, StopRule, WalletId,
};
use creditgate::record::{EntryKind, LedgerEntry, OutboxEntry};
use creditgate::store::memory::MemoryStore;
use creditgate::store::{
    AccountAdmin, ChargeOp, CommitOp, Expiry, OutboxStore, Rebuild, ReserveOp, Spending,
};
use proptest::prelude::*;

const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Debug)]
enum Op {
    Grant {
        grant: u8,
        kind: u8,
        amount: i64,
        scoped: Option<u8>,
        expires_in_days: Option<i64>,
        rollover: Option<i64>,
    },
    Reserve {
        feature: u8,
        amount: i64,
        partial: bool,
    },
    Commit {
        hold: u8,
        percent: i64,
    },
    Release {
        hold: u8,
    },
    Charge {
        feature: u8,
        amount: i64,
    },
    Void {
        grant: u8,
    },
    Flex {
        cap: i64,
    },
    Wait {
        hours: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u8..6,
            0u8..3,
            1i64..5_000,
            proptest::option::of(0u8..3),
            proptest::option::of(1i64..60),
            proptest::option::of(0i64..3_000),
        )
            .prop_map(|(grant, kind, amount, scoped, expires_in_days, rollover)| {
                Op::Grant {
                    grant,
                    kind,
                    amount,
                    scoped,
                    expires_in_days,
                    rollover,
                }
            }),
        (0u8..3, 1i64..3_000, any::<bool>()).prop_map(|(feature, amount, partial)| {
            Op::Reserve {
                feature,
                amount,
                partial,
            }
        }),
        (0u8..8, 0i64..=200).prop_map(|(hold, percent)| Op::Commit { hold, percent }),
        (0u8..8).prop_map(|hold| Op::Release { hold }),
        (0u8..3, 1i64..2_000).prop_map(|(feature, amount)| Op::Charge { feature, amount }),
        (0u8..6).prop_map(|grant| Op::Void { grant }),
        (0i64..3_000).prop_map(|cap| Op::Flex { cap }),
        (1i64..24 * 45).prop_map(|hours| Op::Wait { hours }),
    ]
}

fn account() -> AccountId {
    AccountId::parse("acme").unwrap()
}

fn feature(i: u8) -> FeatureId {
    FeatureId::parse(&format!("f{i}")).unwrap()
}

/// `f0` caps an overrun at the hold, `f1` allows 500 more, `f2` charges it all.
/// One feature's holds stop when its wallet runs out; the others' run to their end.
fn stop(f: u8) -> StopRule {
    if f == 1 {
        StopRule::StopRunning
    } else {
        StopRule::FinishRunning
    }
}

fn overrun(f: u8) -> OverrunPolicy {
    [
        OverrunPolicy::CapAtHold,
        OverrunPolicy::AllowUpTo {
            allowance_minor: 500,
        },
        OverrunPolicy::ChargeActual,
    ][f as usize]
}

async fn apply(store: &MemoryStore, clock: &ManualClock, op: &Op, holds: &mut Vec<ReservationId>) {
    let now = store.now_ms().await.unwrap();
    match op {
        Op::Grant {
            grant,
            kind,
            amount,
            scoped,
            expires_in_days,
            rollover,
        } => {
            let kind = [
                GrantKind::Included,
                GrantKind::Promotional,
                GrantKind::Prepaid,
            ][*kind as usize];
            let recurrence = match (kind, rollover) {
                (GrantKind::Included, Some(rollover)) => Some(Recurrence {
                    period: Period::Month,
                    anchor_ms: None,
                    rollover_max_minor: *rollover,
                }),
                _ => None,
            };
            let terms = GrantTerms {
                id: GrantId::parse(&format!("g{grant}")).unwrap(),
                wallet: WalletId::default_wallet(),
                kind,
                priority: kind.default_priority(),
                amount_minor: *amount,
                expires_at_ms: expires_in_days.map(|d| now + d * DAY_MS),
                features: scoped.map(|f| vec![feature(f)]).unwrap_or_default(),
                recurrence,
            };
            let entry = format!("grant/acme/g{grant}");
            // A repeated id with other terms is refused; that is fine here.
            let _ = store.add_grant(&account(), terms, entry.into()).await;
        }
        Op::Reserve {
            feature: f,
            amount,
            partial,
        } => {
            let id = ReservationId::generate(&account());
            let op = ReserveOp {
                id: id.clone(),
                wallet: WalletId::default_wallet(),
                feature: feature(*f),
                amount_minor: *amount,
                min_amount_minor: if *partial { 1 } else { *amount },
                ttl_ms: 3 * DAY_MS,
                labels: Default::default(),
                price: None,
                overrun: overrun(*f),
                stop: stop(*f),
                model: None,
                idempotency: None,
            };
            if let Ok(written) = store.reserve(op).await
                && matches!(written.value, creditgate::store::Decision::Allowed(_))
            {
                holds.push(id);
            }
        }
        Op::Commit { hold, percent } => {
            if let Some(id) = holds.get(*hold as usize) {
                let held = match store.hold(id).await {
                    Ok(Some(h)) => h.amount_minor,
                    _ => 0,
                };
                let op = CommitOp {
                    id: id.clone(),
                    amount_minor: held * percent / 100,
                    entry_id: format!("commit/{id}"),
                    usage: None,
                };
                let _ = store.commit(op).await;
            }
        }
        Op::Release { hold } => {
            if let Some(id) = holds.get(*hold as usize) {
                let _ = store.release(id).await;
            }
        }
        Op::Charge { feature: f, amount } => {
            let op = ChargeOp {
                account: account(),
                wallet: WalletId::default_wallet(),
                feature: feature(*f),
                amount_minor: *amount,
                labels: Default::default(),
                entry_id: format!("charge/{}", ReservationId::generate(&account())),
                usage: None,
                idempotency: None,
            };
            let _ = store.charge(op).await;
        }
        Op::Void { grant } => {
            let grant = GrantId::parse(&format!("g{grant}")).unwrap();
            let _ = store
                .void_grant(
                    &account(),
                    &grant,
                    "test".into(),
                    format!("void/acme/{grant}"),
                )
                .await;
        }
        Op::Flex { cap } => {
            let _ = store
                .set_wallet(&account(), &WalletId::default_wallet(), *cap)
                .await;
        }
        Op::Wait { hours } => {
            clock.advance_ms(hours * 3_600_000);
            store.expire_due(1_000).await.unwrap();
        }
    }
}

/// Whether `grant` (as it is now) could pay for something new for `feature` at `at_ms`.
fn could_pay(grant: &Grant, feature: &FeatureId, at_ms: i64) -> bool {
    grant.admits(feature)
        && grant.terms.expires_at_ms.is_none_or(|e| e > at_ms)
        // A void in the same millisecond may have come just after.
        && grant.voided_at_ms.is_none_or(|v| v >= at_ms)
}

async fn adds_up(store: &MemoryStore) {
    let Some(snapshot) = store.snapshot(&account()).await.unwrap() else {
        return;
    };
    let snapshot = snapshot.value;
    let grants: HashMap<GrantId, &Grant> = snapshot
        .grants
        .iter()
        .map(|g| (g.terms.id.clone(), g))
        .collect();
    let mut change: HashMap<GrantId, i64> = HashMap::new();
    let (mut flex, mut debt) = (0, 0);
    let mut money = |entry: &LedgerEntry, change: &mut HashMap<GrantId, i64>| {
        let split: i64 = entry.split.iter().map(|p| p.amount_minor).sum();
        match entry.kind {
            EntryKind::Grant => {
                assert!(entry.split.is_empty(), "{entry:?}");
                if entry.id.starts_with("refill/") {
                    let grant = entry.grant.clone().unwrap();
                    *change.entry(grant).or_default() += entry.amount_minor;
                }
                return;
            }
            _ => assert_eq!(split, entry.amount_minor, "{entry:?}"),
        }
        for portion in &entry.split {
            if portion.grant == GrantId::flex() {
                flex += portion.amount_minor;
            } else if portion.grant == GrantId::debt() {
                debt += portion.amount_minor;
            } else {
                *change.entry(portion.grant.clone()).or_default() -= portion.amount_minor;
            }
        }
        if entry.kind == EntryKind::Charge {
            if entry.grant == Some(GrantId::debt()) {
                debt -= entry.amount_minor;
            } else if let Some(feature) = &entry.feature {
                for portion in entry.split.iter().filter(|p| p.grant.is_grant()) {
                    let grant = grants[&portion.grant];
                    assert!(
                        could_pay(grant, feature, entry.at_ms),
                        "{} paid {entry:?}",
                        portion.grant
                    );
                }
            }
        }
    };
    for record in store.outbox_read(usize::MAX).await.unwrap() {
        for entry in &record.entries {
            match entry {
                OutboxEntry::Charge(entry) | OutboxEntry::Void { entry } => {
                    money(entry, &mut change)
                }
                OutboxEntry::Reset { entries, .. } => {
                    for entry in entries {
                        money(entry, &mut change);
                    }
                }
                OutboxEntry::Hold(hold) if hold.version == 1 => {
                    for portion in hold.split.iter().filter(|p| p.grant.is_grant()) {
                        let grant = grants[&portion.grant];
                        assert!(
                            could_pay(grant, &hold.feature, hold.created_at_ms),
                            "{} was held for {hold:?}",
                            portion.grant
                        );
                    }
                }
                _ => {}
            }
        }
    }
    for grant in &snapshot.grants {
        let changed = change.get(&grant.terms.id).copied().unwrap_or(0);
        assert_eq!(
            grant.remaining_minor,
            grant.terms.amount_minor + changed,
            "{grant:?}"
        );
        assert!(
            0 <= grant.held_minor && grant.held_minor <= grant.remaining_minor,
            "{grant:?}"
        );
    }
    let postpaid = snapshot
        .postpaid
        .first()
        .map(|(_, p)| *p)
        .unwrap_or_default();
    assert_eq!(
        (postpaid.flex_used_minor, postpaid.debt_minor),
        (flex, debt)
    );
    assert!(postpaid.flex_held_minor >= 0 && postpaid.debt_minor >= 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_entry_adds_up(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            // 2026-01-31, so that monthly periods meet short months.
            let clock = Arc::new(ManualClock::new(20_484 * DAY_MS));
            let store = MemoryStore::new(clock.clone());
            let mut holds = Vec::new();
            for op in &ops {
                apply(&store, &clock, op, &mut holds).await;
                adds_up(&store).await;
            }
        });
    }
}
