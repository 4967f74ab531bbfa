//! The ledger's behaviour, the same on both databases: every scenario runs on a SQLite file and
//! on a PostgreSQL database of its own.

mod common;

use std::time::Duration;

use common::PgDatabase;
use creditgate::domain::{
    Account, AccountId, AccountStatus, FeatureId, Grant, GrantId, GrantKind, GrantStatus,
    GrantTerms, IdempotencyKey, Labels, ModelId, Portion, WalletId,
};
use creditgate::ledger::sql::SqlLedger;
use creditgate::ledger::{ChangeKind, Ledger, LedgerTarget, UsageGroup, UsageQuery, UsageRow};
use creditgate::record::{EntryKind, LedgerEntry, OutboxEntry, OutboxRecord, Remembered, Reply};
use creditgate::store::ChargeReceipt;

const TIMEOUT: Duration = Duration::from_secs(10);

macro_rules! on_both_ledgers {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let target = LedgerTarget::Sqlite { data_dir: dir.path().to_owned() };
                let ledger = SqlLedger::connect(&target, TIMEOUT).await.unwrap();
                ledger.migrate().await.unwrap();
                super::$scenario(&ledger, &target).await;
                ledger.close().await;
            }

            #[tokio::test]
            async fn postgres() {
                let database = PgDatabase::create().await;
                let target = LedgerTarget::Postgres { url: database.url.clone() };
                let ledger = SqlLedger::connect(&target, TIMEOUT).await.unwrap();
                ledger.migrate().await.unwrap();
                super::$scenario(&ledger, &target).await;
                ledger.close().await;
                database.drop_database().await;
            }
        }
    )*};
}

on_both_ledgers!(
    appending_a_batch_twice_records_it_once,
    many_charges_in_one_batch_are_each_written_once_in_order_with_their_splits,
    ledger_entries_cannot_be_changed_or_deleted,
    reconnecting_keeps_everything_and_migrations_run_once,
    usage_is_grouped_and_windowed,
    direct_inserts_and_voids_are_reported_as_changes,
    only_one_account_can_be_loaded,
    the_newest_use_of_an_idempotency_key_is_kept,
    an_older_version_of_a_hold_never_replaces_a_newer_one,
    prices_keep_their_policies_now_and_ahead,
    alerts_and_top_up_requests_come_back_with_the_account,
);

fn acme() -> AccountId {
    AccountId::parse("acme").unwrap()
}

fn grant_id(id: &str) -> GrantId {
    GrantId::parse(id).unwrap()
}

fn entry(id: &str, kind: EntryKind, amount_minor: i64, at_ms: i64) -> LedgerEntry {
    LedgerEntry {
        id: id.into(),
        kind,
        account: acme(),
        wallet: WalletId::default_wallet(),
        feature: None,
        model: None,
        usage: None,
        amount_minor,
        split: if kind == EntryKind::Grant {
            vec![]
        } else {
            vec![Portion {
                grant: grant_id("g1"),
                amount_minor,
            }]
        },
        reservation: None,
        grant: Some(grant_id("g1")),
        idempotency_key: None,
        labels: Labels::new(),
        reason: None,
        overrun_minor: 0,
        refund_of: None,
        at_ms,
    }
}

fn records(entries: Vec<OutboxEntry>) -> Vec<OutboxRecord> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| OutboxRecord {
            position: creditgate::record::OutboxPosition::Seq(i as u64 + 1),
            at_ms: 2_000,
            entries: vec![entry],
        })
        .collect()
}

fn account_and_grant() -> Vec<OutboxEntry> {
    let grant = Grant::new(
        GrantTerms {
            id: grant_id("g1"),
            wallet: WalletId::default_wallet(),
            kind: GrantKind::Prepaid,
            priority: 30,
            amount_minor: 10_000_000,
            expires_at_ms: None,
            features: vec![],
            recurrence: None,
        },
        1_000,
    );
    vec![
        OutboxEntry::Account(Account {
            id: acme(),
            display_name: String::new(),
            status: AccountStatus::Active,
            created_at_ms: 1_000,
        }),
        OutboxEntry::Grant {
            grant,
            entry: entry("grant/acme/g1", EntryKind::Grant, 10_000_000, 1_000),
            answers: None,
        },
    ]
}

fn with_charge() -> Vec<OutboxRecord> {
    let mut entries = account_and_grant();
    entries.push(OutboxEntry::Charge(entry(
        "e-charge",
        EntryKind::Charge,
        2_500_000,
        2_000,
    )));
    records(entries)
}

async fn appending_a_batch_twice_records_it_once(ledger: &SqlLedger, _: &LedgerTarget) {
    ledger.append(&with_charge()).await.unwrap();
    ledger.append(&with_charge()).await.unwrap();
    let entries = ledger.entries(&acme(), 100).await.unwrap();
    let ids: Vec<_> = entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e-charge", "grant/acme/g1"]);
    assert_eq!(entries[0].split.len(), 1);
    assert!(ledger.has_entry("e-charge").await.unwrap());
    assert!(!ledger.has_entry("e-missing").await.unwrap());
    assert_eq!(
        entries[0],
        with_charge()[2].entries[0].charge_entry().unwrap().clone()
    );

    let snapshots = ledger.load_accounts(None, 3_000, 1_000).await.unwrap();
    assert_eq!(snapshots.len(), 1);
    let grant = &snapshots[0].grants[0];
    assert_eq!(grant.remaining_minor, 7_500_000, "the charge counted once");
    assert_eq!(grant.status(3_000), GrantStatus::Active);
}

/// More commits than one statement writes, each split over two grants, with one repeated in the
/// batch and one written by an earlier batch, and an entry of another kind amid them.
async fn many_charges_in_one_batch_are_each_written_once_in_order_with_their_splits(
    ledger: &SqlLedger,
    _: &LedgerTarget,
) {
    let mut setup = account_and_grant();
    let mut second = entry("grant/acme/g2", EntryKind::Grant, 10_000_000, 1_000);
    second.grant = Some(grant_id("g2"));
    let grant = Grant::new(
        GrantTerms {
            id: grant_id("g2"),
            wallet: WalletId::default_wallet(),
            kind: GrantKind::Prepaid,
            priority: 40,
            amount_minor: 10_000_000,
            expires_at_ms: None,
            features: vec![],
            recurrence: None,
        },
        1_000,
    );
    setup.push(OutboxEntry::Grant {
        grant,
        entry: second,
        answers: None,
    });
    // Commit n charges n to g1 and 2n to g2.
    let split = |n: i64| {
        vec![
            Portion {
                grant: grant_id("g1"),
                amount_minor: n,
            },
            Portion {
                grant: grant_id("g2"),
                amount_minor: 2 * n,
            },
        ]
    };
    let commit = |n: i64| {
        let mut e = entry(
            &format!("commit/acme/r{n:03}"),
            EntryKind::Commit,
            3 * n,
            2_000 + n,
        );
        e.split = split(n);
        OutboxEntry::Charge(e)
    };
    ledger.append(&records(setup)).await.unwrap();
    ledger.append(&records(vec![commit(7)])).await.unwrap();
    let mut batch: Vec<OutboxEntry> = (1..=150).map(commit).collect();
    batch.insert(75, commit(20));
    batch.insert(100, account_and_grant().remove(0));
    ledger
        .append(&[OutboxRecord {
            position: creditgate::record::OutboxPosition::Seq(10),
            at_ms: 3_000,
            entries: batch,
        }])
        .await
        .unwrap();

    let entries = ledger.entries(&acme(), 1_000).await.unwrap();
    let commits: Vec<&LedgerEntry> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Commit)
        .collect();
    assert_eq!(commits.len(), 150, "each commit once");
    // Newest first: the one of the earlier batch is the oldest, then the batch's in order.
    let mut expected: Vec<String> = (1..=150)
        .filter(|n| *n != 7)
        .map(|n| format!("commit/acme/r{n:03}"))
        .collect();
    expected.insert(0, "commit/acme/r007".into());
    expected.reverse();
    let ids: Vec<&str> = commits.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, expected);
    for commit in &commits {
        let n: i64 = commit.id["commit/acme/r".len()..].parse().unwrap();
        assert_eq!(commit.amount_minor, 3 * n, "{}", commit.id);
        assert_eq!(commit.split, split(n), "{}", commit.id);
    }

    let snapshots = ledger.load_accounts(None, 4_000, 1_000).await.unwrap();
    let remaining = |id: &str| {
        snapshots[0]
            .grants
            .iter()
            .find(|g| g.terms.id.as_str() == id)
            .unwrap()
            .remaining_minor
    };
    let total: i64 = (1..=150).sum();
    assert_eq!(remaining("g1"), 10_000_000 - total);
    assert_eq!(remaining("g2"), 10_000_000 - 2 * total);
}

trait ChargeEntry {
    fn charge_entry(&self) -> Option<&LedgerEntry>;
}

impl ChargeEntry for OutboxEntry {
    fn charge_entry(&self) -> Option<&LedgerEntry> {
        match self {
            OutboxEntry::Charge(entry) => Some(entry),
            _ => None,
        }
    }
}

async fn ledger_entries_cannot_be_changed_or_deleted(ledger: &SqlLedger, _: &LedgerTarget) {
    ledger.append(&with_charge()).await.unwrap();
    for statement in [
        "UPDATE entries SET amount_minor = 0",
        "DELETE FROM entries",
        "UPDATE entry_splits SET amount_minor = 0",
        "DELETE FROM entry_splits",
    ] {
        let error = sqlx::query(statement)
            .execute(ledger.pool())
            .await
            .expect_err(statement);
        assert!(error.to_string().contains("append-only"), "{error}");
    }
}

async fn reconnecting_keeps_everything_and_migrations_run_once(
    ledger: &SqlLedger,
    target: &LedgerTarget,
) {
    ledger.append(&with_charge()).await.unwrap();
    let again = SqlLedger::connect(target, TIMEOUT).await.unwrap();
    again.migrate().await.unwrap();
    assert_eq!(again.entries(&acme(), 100).await.unwrap().len(), 2);
    again.close().await;
}

async fn usage_is_grouped_and_windowed(ledger: &SqlLedger, _: &LedgerTarget) {
    let mut entries = account_and_grant();
    let spend = |id: &str, amount: i64, at: i64, model: &str, project: &str, task: &str| {
        let mut e = entry(id, EntryKind::Commit, amount, at);
        e.feature = Some(FeatureId::parse("chat").unwrap());
        e.model = Some(ModelId::parse(model).unwrap());
        e.labels = [
            ("project".to_owned(), project.to_owned()),
            ("task".to_owned(), task.to_owned()),
        ]
        .into();
        OutboxEntry::Charge(e)
    };
    entries.push(spend("c1", 100, 10_000, "small", "atlas", "1"));
    entries.push(spend("c2", 250, 20_000, "large", "atlas", "2"));
    entries.push(spend("c3", 300, 30_000, "large", "zeus", "2"));
    entries.push(spend("old", 5_000, 500, "large", "zeus", "9"));
    ledger.append(&records(entries)).await.unwrap();

    let query = |group, label: Option<(&str, &str)>| UsageQuery {
        account: acme(),
        since_ms: 1_000,
        until_ms: 40_000,
        group,
        label: label.map(|(k, v)| (k.to_owned(), v.to_owned())),
    };
    let row = |key: Option<&str>, amount_minor, count| UsageRow {
        key: key.map(str::to_owned),
        amount_minor,
        count,
    };
    assert_eq!(
        ledger.usage(&query(UsageGroup::Total, None)).await.unwrap(),
        [row(None, 650, 3)],
        "grants and entries outside the window do not count"
    );
    assert_eq!(
        ledger.usage(&query(UsageGroup::Model, None)).await.unwrap(),
        [row(Some("large"), 550, 2), row(Some("small"), 100, 1)]
    );
    assert_eq!(
        ledger
            .usage(&query(UsageGroup::Label("project".into()), None))
            .await
            .unwrap(),
        [row(Some("atlas"), 350, 2), row(Some("zeus"), 300, 1)]
    );
    assert_eq!(
        ledger
            .usage(&query(UsageGroup::Feature, Some(("task", "2"))))
            .await
            .unwrap(),
        [row(Some("chat"), 550, 2)],
        "the cost of one task"
    );
    assert_eq!(
        ledger
            .usage(&query(UsageGroup::Wallet, None))
            .await
            .unwrap(),
        [row(Some("default"), 650, 3)]
    );
}

async fn direct_inserts_and_voids_are_reported_as_changes(ledger: &SqlLedger, _: &LedgerTarget) {
    ledger.append(&records(account_and_grant())).await.unwrap();
    let start = ledger.last_change().await.unwrap();
    sqlx::query(
        "INSERT INTO grants (account_id, grant_id, wallet, kind, priority, amount_minor, \
         created_at_ms) VALUES ('acme', 'paid-42', 'default', 'prepaid', 30, 5000000, 1000)",
    )
    .execute(ledger.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE grants SET voided_at_ms = 5000 WHERE grant_id = 'g1'")
        .execute(ledger.pool())
        .await
        .unwrap();
    let changes = ledger.changes(start, &[], 100).await.unwrap();
    let seen: Vec<_> = changes
        .iter()
        .map(|c| (c.kind.clone(), c.key.as_str()))
        .collect();
    assert_eq!(
        seen,
        [(ChangeKind::Grant, "paid-42"), (ChangeKind::Void, "g1")]
    );
    assert_eq!(ledger.last_change().await.unwrap(), changes[1].seq);
    let gap = ledger
        .changes(changes[1].seq, &[changes[0].seq], 100)
        .await
        .unwrap();
    assert_eq!(
        gap,
        [changes[0].clone()],
        "a change can be read again by number"
    );

    let grant = ledger
        .grant(&acme(), &grant_id("paid-42"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(grant.terms.amount_minor, 5_000_000);
    assert!(grant.terms.features.is_empty(), "features default to any");
}

async fn only_one_account_can_be_loaded(ledger: &SqlLedger, _: &LedgerTarget) {
    ledger.append(&with_charge()).await.unwrap();
    let mut other = account_and_grant();
    if let OutboxEntry::Account(account) = &mut other[0] {
        account.id = AccountId::parse("other").unwrap();
    }
    other.truncate(1);
    ledger.append(&records(other)).await.unwrap();
    assert_eq!(
        ledger
            .load_accounts(None, 3_000, 1_000)
            .await
            .unwrap()
            .len(),
        2
    );
    let only = ledger
        .load_accounts(Some(&acme()), 3_000, 1_000)
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].grants[0].remaining_minor, 7_500_000);
    assert_eq!(ledger.account(&acme()).await.unwrap().unwrap().id, acme());
}

async fn the_newest_use_of_an_idempotency_key_is_kept(ledger: &SqlLedger, _: &LedgerTarget) {
    let remember = |entry_id: &str, at_ms| {
        OutboxEntry::Remember(Remembered {
            account: acme(),
            key: IdempotencyKey::parse("k1").unwrap(),
            fingerprint: format!("charge:{entry_id}"),
            reply: Reply::Charge(ChargeReceipt {
                entry_id: entry_id.into(),
                wallet: WalletId::default_wallet(),
                charged_minor: 1,
                split: vec![],
                available_minor: 0,
            }),
            at_ms,
        })
    };
    let mut entries = account_and_grant();
    entries.push(remember("first", 1_000));
    ledger.append(&records(entries)).await.unwrap();
    ledger
        .append(&records(vec![remember("second", 100_000_000)]))
        .await
        .unwrap();
    let snapshot = ledger
        .load_accounts(Some(&acme()), 100_000_001, 1_000)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(snapshot.remembered.len(), 1);
    assert_eq!(snapshot.remembered[0].fingerprint, "charge:second");
}

async fn an_older_version_of_a_hold_never_replaces_a_newer_one(
    ledger: &SqlLedger,
    _: &LedgerTarget,
) {
    use creditgate::domain::{Hold, HoldState, ReservationId};
    let held = Hold {
        id: ReservationId::parse("acme/r1").unwrap(),
        wallet: WalletId::default_wallet(),
        feature: FeatureId::parse("chat").unwrap(),
        amount_minor: 100,
        split: vec![Portion {
            grant: grant_id("g1"),
            amount_minor: 100,
        }],
        created_at_ms: 1_000,
        expires_at_ms: 61_000,
        state: HoldState::Held,
        labels: Labels::new(),
        limits: vec![],
        price: None,
        overrun: Default::default(),
        stop: Default::default(),
        model: None,
        idempotency_key: None,
        commit: None,
        release: None,
        version: 1,
    };
    let released = Hold {
        state: HoldState::Released,
        version: 2,
        ..held.clone()
    };
    let mut entries = account_and_grant();
    entries.push(OutboxEntry::Hold(released));
    ledger.append(&records(entries)).await.unwrap();
    // The reserve's record arrives last (another replica carried it late).
    ledger
        .append(&records(vec![OutboxEntry::Hold(held)]))
        .await
        .unwrap();
    let snapshot = ledger
        .load_accounts(Some(&acme()), 3_000, 60_000)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(snapshot.holds.len(), 1);
    assert_eq!(
        snapshot.holds[0].state,
        HoldState::Released,
        "the hold is not reopened"
    );
}

async fn prices_keep_their_policies_now_and_ahead(ledger: &SqlLedger, _: &LedgerTarget) {
    use creditgate::domain::{Amount, FeaturePrice, OverrunPolicy, PriceRule, StopRule};
    let price = |cents: &str, effective_at_ms| FeaturePrice {
        feature: FeatureId::parse("agent.minutes").unwrap(),
        wallet: WalletId::default_wallet(),
        rule: PriceRule::PerUnit {
            unit: "minute".into(),
            price: Amount::parse(cents).unwrap(),
        },
        overrun: OverrunPolicy::ChargeActual,
        stop: StopRule::StopRunning,
        effective_at_ms,
    };
    let now = price("0.10", 1_000);
    let ahead = FeaturePrice {
        stop: StopRule::FinishRunning,
        ..price("0.20", 9_000)
    };
    ledger
        .put_prices(&[now.clone(), ahead.clone()], 1_000)
        .await
        .unwrap();
    assert_eq!(ledger.prices().await.unwrap(), vec![now, ahead]);
}

async fn alerts_and_top_up_requests_come_back_with_the_account(
    ledger: &SqlLedger,
    _: &LedgerTarget,
) {
    use creditgate::domain::alert::{AlertRule, TopUpPolicy, TopUpSize, WalletAlerts};
    use creditgate::events::{EventDetail, WalletEvent, WalletEventKind};
    let alerts = WalletAlerts {
        rules: vec![AlertRule::Below {
            amount_minor: 5_000_000,
        }],
        top_up: Some(TopUpPolicy {
            below_minor: 2_000_000,
            size: TopUpSize::Amount {
                amount_minor: 10_000_000,
            },
        }),
    };
    let request = |n: u64, at_ms| {
        OutboxEntry::Event(WalletEvent {
            id: format!("evt/acme/{at_ms}.{n}"),
            kind: WalletEventKind::TopUpRequested,
            account: acme(),
            wallet: WalletId::default_wallet(),
            at_ms,
            available_minor: 1_000_000,
            detail: EventDetail::TopUp {
                request_id: format!("topup/acme/default/{n}"),
                amount_minor: 10_000_000,
            },
        })
    };
    let answer = |grant: &str, n: u64, at_ms| {
        let mut entries = account_and_grant();
        let OutboxEntry::Grant { grant: g, .. } = entries.remove(1) else {
            unreachable!("the second entry is the grant")
        };
        OutboxEntry::Grant {
            grant: Grant {
                terms: GrantTerms {
                    id: grant_id(grant),
                    ..g.terms
                },
                ..g
            },
            entry: entry(
                &format!("grant/acme/{grant}"),
                EntryKind::Grant,
                10_000_000,
                at_ms,
            ),
            answers: Some(format!("topup/acme/default/{n}")),
        }
    };
    let mut entries = account_and_grant();
    entries.push(OutboxEntry::Alerts {
        account: acme(),
        wallet: WalletId::default_wallet(),
        alerts: alerts.clone(),
        armed: vec![true],
        at_ms: 1_500,
    });
    // Then the threshold fired.
    entries.push(OutboxEntry::AlertsArmed {
        account: acme(),
        wallet: WalletId::default_wallet(),
        armed: vec![false],
        at_ms: 2_000,
    });
    entries.push(request(1, 2_000));
    ledger.append(&records(entries)).await.unwrap();
    // The answer to the second request arrives before the request (another replica's record).
    ledger
        .append(&records(vec![
            answer("t1", 1, 3_000),
            answer("t2", 2, 5_000),
        ]))
        .await
        .unwrap();
    ledger
        .append(&records(vec![request(2, 4_000), request(3, 6_000)]))
        .await
        .unwrap();
    // Written twice: still one event.
    ledger
        .append(&records(vec![request(3, 6_000)]))
        .await
        .unwrap();
    let snapshot = ledger
        .load_accounts(Some(&acme()), 7_000, 60_000)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(snapshot.alerts.len(), 1);
    let kept = &snapshot.alerts[0];
    assert_eq!(kept.alerts, alerts);
    assert_eq!(kept.armed, [false]);
    assert_eq!(kept.top_ups, 3);
    assert_eq!(
        kept.open_top_up.as_deref(),
        Some("topup/acme/default/3"),
        "the first two were answered"
    );
}
