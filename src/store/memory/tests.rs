//! The in-process store's own tests: the sweep, outbox records and voids of released credit.

use super::*;
use crate::clock::ManualClock;
use crate::domain::GrantKind;
use crate::sync::{SyncSettings, sweep_round};

fn id<T: TryFrom<String>>(text: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(text.to_owned()).unwrap()
}

async fn store_with_grant(amount_minor: i64) -> (MemoryStore, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = MemoryStore::new(clock.clone());
    let terms = GrantTerms {
        id: id("g1"),
        wallet: WalletId::default_wallet(),
        kind: GrantKind::Prepaid,
        priority: 30,
        amount_minor,
        expires_at_ms: None,
        features: vec![],
        recurrence: None,
    };
    store
        .add_grant(&id("acme"), terms, String::from("grant/acme/g1").into())
        .await
        .unwrap();
    (store, clock)
}

fn reserve(amount_minor: i64, ttl_ms: i64) -> ReserveOp {
    ReserveOp {
        id: ReservationId::generate(&id("acme")),
        wallet: WalletId::default_wallet(),
        feature: id("chat"),
        amount_minor,
        min_amount_minor: amount_minor,
        ttl_ms,
        labels: Default::default(),
        price: None,
        overrun: Default::default(),
        stop: Default::default(),
        model: None,
        idempotency: None,
    }
}

fn settings() -> SyncSettings {
    SyncSettings {
        batch_len_max: 1_024,
        interval_ms: 10,
        sweep_interval_ms: 10,
        sweep_batch_len_max: 100,
        retention_ms: 86_400_000,
        retry_backoff_ms: 10,
        ledger_timeout_ms: 1_000,
        inbound_interval_ms: 10,
    }
}

async fn available(store: &MemoryStore) -> i64 {
    let view = store.balance(&id("acme")).await.unwrap().unwrap();
    let wallet = &view.wallets[0];
    crate::domain::grant::WalletTotals::of(&wallet.grants, &wallet.postpaid, view.now_ms)
        .available_minor
}

#[tokio::test]
async fn one_sweep_round_releases_due_holds_behind_many_stale_candidates() {
    let (store, clock) = store_with_grant(1_000_000).await;
    for _ in 0..1_000 {
        let op = reserve(1, 1_000);
        let id = op.id.clone();
        store.reserve(op).await.unwrap();
        store.release(&id).await.unwrap();
    }
    store.reserve(reserve(5, 1_000)).await.unwrap();
    assert_eq!(available(&store).await, 1_000_000 - 5);
    clock.advance_ms(1_000);
    sweep_round(&store, &settings()).await;
    assert_eq!(available(&store).await, 1_000_000);
}

#[tokio::test]
async fn holds_are_not_expired_before_their_time() {
    let (store, clock) = store_with_grant(100).await;
    store.reserve(reserve(40, 1_000)).await.unwrap();
    clock.advance_ms(999);
    sweep_round(&store, &settings()).await;
    assert_eq!(available(&store).await, 60);
    clock.advance_ms(1);
    sweep_round(&store, &settings()).await;
    assert_eq!(available(&store).await, 100);
}

#[tokio::test]
async fn each_operation_is_one_outbox_record() {
    let (store, _clock) = store_with_grant(100).await;
    let op = reserve(40, 1_000);
    let hold = op.id.clone();
    store.reserve(op).await.unwrap();
    let commit = CommitOp {
        id: hold,
        amount_minor: 30,
        entry_id: "commit/x".into(),
        usage: None,
    };
    let written = store.commit(commit).await.unwrap();
    let records = store.outbox_read(100).await.unwrap();
    let last = records.last().unwrap();
    assert_eq!(Durable::UpTo(last.position.seq().unwrap()), written.durable);
    assert!(
        matches!(
            last.entries.as_slice(),
            [OutboxEntry::Charge(_), OutboxEntry::Hold(_)]
        ),
        "the charge and the hold's new state travel together"
    );
}

#[tokio::test]
async fn credit_released_from_a_voided_grant_is_voided_in_the_ledger_too() {
    let (store, _clock) = store_with_grant(100).await;
    let op = reserve(40, 1_000);
    let hold = op.id.clone();
    store.reserve(op).await.unwrap();
    let void = store
        .void_grant(
            &id("acme"),
            &id("g1"),
            "refund".into(),
            "void/acme/g1".into(),
        )
        .await
        .unwrap();
    assert_eq!(void.value.voided_minor, 60);
    let commit = CommitOp {
        id: hold,
        amount_minor: 15,
        entry_id: "commit/x".into(),
        usage: None,
    };
    store.commit(commit).await.unwrap();
    let records = store.outbox_read(100).await.unwrap();
    let voids: Vec<i64> = records
        .iter()
        .flat_map(|r| &r.entries)
        .filter_map(|e| match e {
            OutboxEntry::Void { entry } => Some(entry.amount_minor),
            _ => None,
        })
        .collect();
    assert_eq!(voids, [60, 25], "granted 100 = charged 15 + voided 60 + 25");
    let view = store.balance(&id("acme")).await.unwrap().unwrap();
    assert!(
        view.wallets[0].grants.is_empty(),
        "nothing left on the grant"
    );
}
