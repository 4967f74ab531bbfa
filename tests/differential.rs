//! Differential and property test: random sequences of operations (grants, holds, commits above
//! and below their holds under each overrun policy, flex, spend limits, voids, alert thresholds
//! and top-ups) applied to the in-process store and to the Redis store give the same replies and
//! the same balances (with which thresholds have fired and which top-up is open); and the
//! in-process store's ledger entries always add up: every split sums to its charge, no grant
//! goes below zero (only flex and debt carry what grants could not), and no grant pays for a
//! feature outside its scope.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use creditgate::clock::SystemClock;
use creditgate::domain::alert::{AlertRule, TopUpPolicy, TopUpSize, WalletAlerts};
use creditgate::domain::{
    AccountId, FeatureId, GrantId, GrantKind, GrantTerms, IdempotencyKey, Labels, LimitWindow,
    OverrunPolicy, ReservationId, StopRule, WalletId,
};
use creditgate::ledger::LedgerTarget;
use creditgate::ledger::sql::SqlLedger;
use creditgate::record::{EntryKind, OutboxEntry};
use creditgate::store::memory::MemoryStore;
use creditgate::store::redis::{RedisSettings, RedisStore};
use creditgate::store::{
    BalanceStore, ChargeOp, CommitOp, ExtendOp, GrantEntry, Idempotency, LimitChange, OutboxStore,
    Rebuild, ReserveOp,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Grant {
        grant: u8,
        wallet: u8,
        kind: u8,
        amount: i64,
        scoped: Option<u8>,
    },
    Reserve {
        wallet: u8,
        feature: u8,
        amount: i64,
        key: Option<u8>,
        partial: bool,
        project: Option<u8>,
    },
    Commit {
        hold: u8,
        percent: i64,
    },
    Release {
        hold: u8,
    },
    Extend {
        hold: u8,
        additional: i64,
    },
    Charge {
        wallet: u8,
        feature: u8,
        amount: i64,
        key: Option<u8>,
        project: Option<u8>,
    },
    Void {
        grant: u8,
    },
    Flex {
        wallet: u8,
        cap: i64,
    },
    Limit {
        project: u8,
        per: u8,
        amount: Option<i64>,
    },
    Alerts {
        wallet: u8,
        below: Option<i64>,
        percent: Option<u32>,
        /// Below this, ask for `size` (or up to it, if `target`).
        top_up: Option<(i64, bool, i64)>,
    },
    /// A grant answering the wallet's `n`th top-up request (which may not be the open one).
    TopUp {
        grant: u8,
        wallet: u8,
        n: u8,
        amount: i64,
    },
}

/// Thresholds and a top-up policy for a wallet.
fn alerts_op(wallet: u8) -> impl Strategy<Value = Op> {
    (
        proptest::option::of(1i64..4_000),
        proptest::option::of(1u32..=100),
        proptest::option::of((1i64..3_000, any::<bool>(), 1i64..3_000)),
    )
        .prop_map(move |(below, percent, top_up)| Op::Alerts {
            wallet,
            below,
            percent,
            // A target must exceed its threshold.
            top_up: top_up.map(|(below, target, size)| {
                (below, target, if target { below + size } else { size })
            }),
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u8..5,
            0u8..2,
            0u8..3,
            1i64..5_000,
            proptest::option::of(0u8..2)
        )
            .prop_map(|(grant, wallet, kind, amount, scoped)| Op::Grant {
                grant,
                wallet,
                kind,
                amount,
                scoped
            }),
        (
            0u8..2,
            0u8..3,
            1i64..3_000,
            proptest::option::of(0u8..3),
            any::<bool>(),
            proptest::option::of(0u8..2)
        )
            .prop_map(
                |(wallet, feature, amount, key, partial, project)| Op::Reserve {
                    wallet,
                    feature,
                    amount,
                    key,
                    partial,
                    project
                }
            ),
        (0u8..8, 0i64..=200).prop_map(|(hold, percent)| Op::Commit { hold, percent }),
        (0u8..8).prop_map(|hold| Op::Release { hold }),
        (0u8..8, 0i64..1_000).prop_map(|(hold, additional)| Op::Extend { hold, additional }),
        (
            0u8..2,
            0u8..3,
            1i64..2_000,
            proptest::option::of(0u8..3),
            proptest::option::of(0u8..2)
        )
            .prop_map(|(wallet, feature, amount, key, project)| Op::Charge {
                wallet,
                feature,
                amount,
                key,
                project
            }),
        (0u8..5).prop_map(|grant| Op::Void { grant }),
        (0u8..2, 0i64..3_000).prop_map(|(wallet, cap)| Op::Flex { wallet, cap }),
        (0u8..2, 0u8..3, proptest::option::of(0i64..4_000)).prop_map(|(project, per, amount)| {
            Op::Limit {
                project,
                per,
                amount,
            }
        }),
        (0u8..2).prop_flat_map(alerts_op),
        (0u8..5, 0u8..2, 1u8..4, 1i64..3_000).prop_map(|(grant, wallet, n, amount)| Op::TopUp {
            grant,
            wallet,
            n,
            amount
        }),
    ]
}

/// Each feature's overrun policy: `f0` caps at the hold, `f1` allows 500 more, `f2` charges
/// everything.
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

fn labels(project: Option<u8>) -> Labels {
    project
        .map(|p| [("project".to_owned(), format!("p{p}"))].into())
        .unwrap_or_default()
}

fn wallet(i: u8) -> WalletId {
    WalletId::parse(["default", "cloud"][i as usize]).unwrap()
}

fn feature(i: u8) -> FeatureId {
    FeatureId::parse(&format!("f{i}")).unwrap()
}

fn account() -> AccountId {
    AccountId::parse("acme").unwrap()
}

/// A store's answer with the store's own clock readings left out.
fn comparable<T: std::fmt::Debug>(result: &Result<T, creditgate::store::StoreError>) -> String {
    let text = format!("{result:?}");
    // Times come from two clocks: blank every `*_ms: <number>` and `created_at_ms`.
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("_ms: ") {
        out.push_str(&rest[..i + 5]);
        rest = &rest[i + 5..];
        let wrapped = rest.starts_with("Some(");
        if wrapped {
            rest = &rest[5..];
        }
        let end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '-')
            .unwrap_or(rest.len());
        out.push('T');
        rest = &rest[end..];
        if wrapped {
            rest = rest.strip_prefix(')').unwrap_or(rest);
        }
    }
    out.push_str(rest);
    out
}

async fn apply(
    store: &dyn BalanceStore,
    op: &Op,
    holds: &[ReservationId],
    token: &ReservationId,
) -> String {
    match op {
        Op::Grant {
            grant,
            wallet: w,
            kind,
            amount,
            scoped,
        } => {
            let kind = [
                GrantKind::Included,
                GrantKind::Promotional,
                GrantKind::Prepaid,
            ][*kind as usize];
            let terms = GrantTerms {
                id: GrantId::parse(&format!("g{grant}")).unwrap(),
                wallet: wallet(*w),
                kind,
                priority: kind.default_priority(),
                amount_minor: *amount,
                expires_at_ms: None,
                features: scoped.map(|f| vec![feature(f)]).unwrap_or_default(),
                recurrence: None,
            };
            comparable(
                &store
                    .add_grant(&account(), terms, format!("grant/acme/g{grant}").into())
                    .await
                    .map(|w| w.value),
            )
        }
        Op::Reserve {
            wallet: w,
            feature: f,
            amount,
            key,
            partial,
            project,
        } => {
            let op = ReserveOp {
                overrun: overrun(*f),
                stop: stop(*f),
                id: token.clone(),
                wallet: wallet(*w),
                feature: feature(*f),
                amount_minor: *amount,
                min_amount_minor: if *partial {
                    (*amount / 2).max(1)
                } else {
                    *amount
                },
                ttl_ms: 3_600_000,
                labels: labels(*project),
                price: None,
                model: None,
                idempotency: key.map(|k| Idempotency {
                    key: IdempotencyKey::parse(&format!("r{k}")).unwrap(),
                    fingerprint: format!("reserve:{w}:{f}:{amount}:{partial}:{project:?}"),
                }),
            };
            comparable(&store.reserve(op).await.map(|w| w.value))
        }
        Op::Commit { hold, percent } => {
            let Some(id) = holds.get(*hold as usize) else {
                return "no hold".into();
            };
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
            comparable(&store.commit(op).await.map(|w| w.value))
        }
        Op::Release { hold } => match holds.get(*hold as usize) {
            Some(id) => comparable(&store.release(id).await.map(|w| w.value)),
            None => "no hold".into(),
        },
        Op::Extend { hold, additional } => match holds.get(*hold as usize) {
            Some(id) => {
                let op = ExtendOp {
                    id: id.clone(),
                    additional_minor: *additional,
                    ttl_ms: None,
                    idempotency: None,
                };
                comparable(&store.extend(op).await.map(|w| w.value))
            }
            None => "no hold".into(),
        },
        Op::Charge {
            wallet: w,
            feature: f,
            amount,
            key,
            project,
        } => {
            let op = ChargeOp {
                account: account(),
                wallet: wallet(*w),
                feature: feature(*f),
                amount_minor: *amount,
                labels: labels(*project),
                entry_id: format!("charge/{token}"),
                usage: None,
                idempotency: key.map(|k| Idempotency {
                    key: IdempotencyKey::parse(&format!("c{k}")).unwrap(),
                    fingerprint: format!("charge:{w}:{f}:{amount}:{project:?}"),
                }),
            };
            comparable(&store.charge(op).await.map(|w| w.value))
        }
        Op::Flex { wallet: w, cap } => comparable(
            &store
                .set_wallet(&account(), &wallet(*w), *cap)
                .await
                .map(|w| w.value),
        ),
        Op::Limit {
            project,
            per,
            amount,
        } => {
            let change = LimitChange {
                label_key: "project".into(),
                label_value: format!("p{project}"),
                window: [LimitWindow::Day, LimitWindow::Month, LimitWindow::Total][*per as usize],
                amount_minor: *amount,
            };
            comparable(&store.set_limit(&account(), change).await.map(|w| w.value))
        }
        Op::Alerts {
            wallet: w,
            below,
            percent,
            top_up,
        } => {
            let mut rules = Vec::new();
            rules.extend(below.map(|amount_minor| AlertRule::Below { amount_minor }));
            rules.extend(percent.map(|percent| AlertRule::AllowanceUsed { percent }));
            let alerts = WalletAlerts {
                rules,
                top_up: top_up.map(|(below_minor, target, size)| TopUpPolicy {
                    below_minor,
                    size: if target {
                        TopUpSize::Target { target_minor: size }
                    } else {
                        TopUpSize::Amount { amount_minor: size }
                    },
                }),
            };
            comparable(
                &store
                    .set_alerts(&account(), &wallet(*w), alerts)
                    .await
                    .map(|w| w.value),
            )
        }
        Op::TopUp {
            grant,
            wallet: w,
            n,
            amount,
        } => {
            let terms = GrantTerms {
                id: GrantId::parse(&format!("t{grant}")).unwrap(),
                wallet: wallet(*w),
                kind: GrantKind::Prepaid,
                priority: GrantKind::Prepaid.default_priority(),
                amount_minor: *amount,
                expires_at_ms: None,
                features: vec![],
                recurrence: None,
            };
            let entry = GrantEntry {
                id: format!("grant/acme/t{grant}"),
                answers: Some(format!("topup/acme/{}/{n}", wallet(*w))),
                ..GrantEntry::default()
            };
            comparable(
                &store
                    .add_grant(&account(), terms, entry)
                    .await
                    .map(|w| w.value),
            )
        }
        Op::Void { grant } => comparable(
            &store
                .void_grant(
                    &account(),
                    &GrantId::parse(&format!("g{grant}")).unwrap(),
                    "test".into(),
                    format!("void/acme/g{grant}"),
                )
                .await
                .map(|w| w.value),
        ),
    }
}

async fn balances(store: &dyn BalanceStore) -> String {
    match store.balance(&account()).await {
        Ok(Some(view)) => comparable::<(Vec<_>, Vec<_>)>(&Ok((view.wallets, view.limits))),
        other => format!("{other:?}"),
    }
}

/// The in-process store's ledger entries and balances add up: every charge equals its split;
/// no grant pays for a feature outside its scope; what each grant has left is its amount less
/// what its entries took, never below zero nor below what is held of it; flex and debt are
/// what their portions say.
async fn adds_up(store: &MemoryStore) {
    let Some(snapshot) = store.snapshot(&account()).await.unwrap() else {
        return;
    };
    let snapshot = snapshot.value;
    let grants: std::collections::HashMap<_, _> = snapshot
        .grants
        .iter()
        .map(|g| (g.terms.id.clone(), g))
        .collect();
    let mut taken: std::collections::HashMap<GrantId, i64> = std::collections::HashMap::new();
    let mut postpaid: std::collections::HashMap<(WalletId, bool), i64> =
        std::collections::HashMap::new();
    for record in store.outbox_read(usize::MAX).await.unwrap() {
        for entry in record.entries {
            let entry = match entry {
                OutboxEntry::Charge(entry) | OutboxEntry::Void { entry } => entry,
                _ => continue,
            };
            let split: i64 = entry.split.iter().map(|p| p.amount_minor).sum();
            assert_eq!(split, entry.amount_minor, "{entry:?}");
            for portion in &entry.split {
                if portion.grant.is_grant() {
                    *taken.entry(portion.grant.clone()).or_default() += portion.amount_minor;
                    if let (Some(feature), Some(grant)) =
                        (&entry.feature, grants.get(&portion.grant))
                    {
                        assert!(
                            grant.admits(feature),
                            "{} paid for {feature}",
                            portion.grant
                        );
                    }
                } else {
                    let flex = portion.grant == GrantId::flex();
                    *postpaid.entry((entry.wallet.clone(), flex)).or_default() +=
                        portion.amount_minor;
                }
            }
            if entry.kind == EntryKind::Charge && entry.grant == Some(GrantId::debt()) {
                *postpaid.entry((entry.wallet.clone(), false)).or_default() -= entry.amount_minor;
            }
        }
    }
    for grant in &snapshot.grants {
        let took = taken.get(&grant.terms.id).copied().unwrap_or(0);
        assert_eq!(
            grant.remaining_minor,
            grant.terms.amount_minor - took,
            "{grant:?}"
        );
        assert!(grant.remaining_minor >= grant.held_minor, "{grant:?}");
        assert!(grant.held_minor >= 0, "{grant:?}");
    }
    for (wallet, p) in &snapshot.postpaid {
        let flex = postpaid.get(&(wallet.clone(), true)).copied().unwrap_or(0);
        let debt = postpaid.get(&(wallet.clone(), false)).copied().unwrap_or(0);
        assert_eq!((p.flex_used_minor, p.debt_minor), (flex, debt), "{wallet}");
        assert!(p.flex_held_minor >= 0 && p.debt_minor >= 0, "{p:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn both_stores_answer_alike(
        alerts in (alerts_op(0), alerts_op(1)),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        // Most sequences run with thresholds set, so that they fire and are re-armed.
        let ops: Vec<Op> = [alerts.0, alerts.1].into_iter().chain(ops).collect();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let redis = RedisServer::start();
            let dir = tempfile::tempdir().unwrap();
            let target = LedgerTarget::Sqlite { data_dir: dir.path().to_owned() };
            let ledger = SqlLedger::connect(&target, Duration::from_secs(5)).await.unwrap();
            ledger.migrate().await.unwrap();
            let redis_store = RedisStore::connect(
                RedisSettings {
                    url: redis.url(),
                    namespace: "cg".into(),
                    partitions: 4,
                    timeout: Duration::from_secs(5),
                    retention_ms: 86_400_000,
                    outbox_len_max: 1_000_000,
                    claim_idle_ms: 30_000,
                },
                Arc::new(ledger),
            )
            .await
            .unwrap();
            let memory = MemoryStore::new(Arc::new(SystemClock));
            let mut holds = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                if matches!(op, Op::Grant { .. } | Op::TopUp { .. }) {
                    // Grants made in distinct milliseconds on both clocks are ordered alike.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let token = ReservationId::generate(&account());
                let expected = apply(&memory, op, &holds, &token).await;
                let actual = apply(&redis_store, op, &holds, &token).await;
                assert_eq!(actual, expected, "operation {i}: {op:?}");
                if matches!(op, Op::Reserve { .. }) && expected.contains("Allowed") {
                    holds.push(token);
                }
                assert_eq!(balances(&redis_store).await, balances(&memory).await, "after {i}");
                adds_up(&memory).await;
            }
        });
    }
}
