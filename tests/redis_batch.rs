//! Calls of one partition that arrive together go to Redis as one call: each answers as it
//! would alone, the outbox gets one record per account of the batch, and the ledger gets every
//! entry once.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use creditgate::domain::decision::Decision;
use creditgate::domain::grant::{GrantKind, GrantTerms};
use creditgate::domain::{AccountId, FeatureId, GrantId, ReservationId, WalletId};
use creditgate::ledger::sql::SqlLedger;
use creditgate::ledger::{Ledger, LedgerTarget};
use creditgate::record::{EntryKind, OutboxEntry};
use creditgate::store::redis::{RedisSettings, RedisStore};
use creditgate::store::{
    AccountAdmin, CommitOp, Durable, GrantEntry, OutboxStore, ReserveOp, Spending,
};
use tokio::task::JoinSet;

const ACCOUNTS: [&str; 3] = ["acme", "globex", "initech"];
const HOLDS_PER_ACCOUNT: usize = 30;
const GRANTED_MINOR: i64 = 1_000_000;
const HELD_MINOR: i64 = 500;
const CHARGED_MINOR: i64 = 321;

async fn store(redis: &RedisServer, ledger: Arc<SqlLedger>, timeout: Duration) -> RedisStore {
    RedisStore::connect(
        RedisSettings {
            url: redis.url(),
            namespace: "cg".into(),
            // One partition: every call below may join every other.
            partitions: 1,
            timeout,
            retention_ms: 86_400_000,
            outbox_len_max: 1_000_000,
            claim_idle_ms: 30_000,
            clock_key: None,
        },
        ledger,
    )
    .await
    .unwrap()
}

fn reserve(id: &ReservationId) -> ReserveOp {
    ReserveOp {
        id: id.clone(),
        wallet: WalletId::default_wallet(),
        feature: FeatureId::parse("chat").unwrap(),
        amount_minor: HELD_MINOR,
        min_amount_minor: HELD_MINOR,
        ttl_ms: 60_000,
        labels: Default::default(),
        price: None,
        model: None,
        idempotency: None,
        overrun: Default::default(),
        stop: Default::default(),
    }
}

/// Runs `call` for every id at once, as tasks; their outcomes, in the order of `ids`.
async fn all_at_once<T, F, Fut>(ids: &[ReservationId], call: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(ReservationId) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let running = call(id.clone());
        tasks.spawn(async move { (i, running.await) });
    }
    let mut outcomes: Vec<Option<T>> = ids.iter().map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (i, outcome) = done.unwrap();
        outcomes[i] = Some(outcome);
    }
    outcomes.into_iter().map(Option::unwrap).collect()
}

/// A Redis store of one partition over a SQLite ledger, each of `ACCOUNTS` granted
/// `GRANTED_MINOR`.
async fn granted(
    redis: &RedisServer,
    timeout: Duration,
) -> (Arc<RedisStore>, Arc<SqlLedger>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(
        SqlLedger::connect(
            &LedgerTarget::Sqlite {
                data_dir: dir.path().to_owned(),
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap(),
    );
    ledger.migrate().await.unwrap();
    let store = Arc::new(store(redis, ledger.clone(), timeout).await);
    for name in ACCOUNTS {
        let account = AccountId::parse(name).unwrap();
        let terms = GrantTerms {
            id: GrantId::parse("g1").unwrap(),
            wallet: WalletId::default_wallet(),
            kind: GrantKind::Prepaid,
            priority: GrantKind::Prepaid.default_priority(),
            amount_minor: GRANTED_MINOR,
            expires_at_ms: None,
            features: Vec::new(),
            recurrence: None,
        };
        let entry = GrantEntry {
            id: format!("grant/{name}/g1"),
            ..GrantEntry::default()
        };
        store.add_grant(&account, terms, entry).await.unwrap();
    }
    (store, ledger, dir)
}

/// What `account`'s grants hold.
async fn held(store: &RedisStore, account: &AccountId) -> i64 {
    let view = store.balance(account).await.unwrap().unwrap();
    view.wallets[0].grants.iter().map(|g| g.held_minor).sum()
}

#[tokio::test]
async fn calls_whose_callers_stopped_waiting_before_they_were_sent_are_not_run() {
    let redis = RedisServer::start();
    let (store, _ledger, _dir) = granted(&redis, Duration::from_secs(10)).await;
    let account = AccountId::parse(ACCOUNTS[0]).unwrap();
    let hold = || {
        let store = store.clone();
        let id = ReservationId::generate(&account);
        tokio::spawn(async move { store.reserve(reserve(&id)).await })
    };
    hold().await.unwrap().unwrap();

    // Redis busy for 1.5 s (a script that runs that long): calls wait in its socket.
    let port = redis.port.to_string();
    let busy = std::thread::spawn(move || {
        std::process::Command::new("redis-cli")
            .args(["-p", &port, "EVAL"])
            .arg(
                "local t0 = redis.call('TIME') \
                 while true do \
                   local t = redis.call('TIME') \
                   if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 1500000 then return 1 end \
                 end",
            )
            .arg("0")
            .output()
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Two calls on their way (the most a partition has at once), then eight that wait for
    // them, whose callers go away (as a gRPC call cancelled by its client does).
    let first = hold();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = hold();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting: Vec<_> = (0..8).map(|_| hold()).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for call in &waiting {
        call.abort();
    }
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert!(busy.join().unwrap().status.success());
    for call in waiting {
        assert!(call.await.unwrap_err().is_cancelled());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The hold before and the two that were on their way; none of the eight.
    assert_eq!(held(&store, &account).await, 3 * HELD_MINOR);
}

#[tokio::test]
async fn calls_arriving_together_share_one_call_and_each_account_gets_its_own_record() {
    let redis = RedisServer::start();
    let (store, ledger, _dir) = granted(&redis, Duration::from_secs(10)).await;

    // Sent at once: whatever the partition's task finds waiting goes in one call.
    let ids: Vec<ReservationId> = ACCOUNTS
        .iter()
        .flat_map(|name| {
            let account = AccountId::parse(name).unwrap();
            (0..HOLDS_PER_ACCOUNT).map(move |_| ReservationId::generate(&account))
        })
        .collect();
    let reserved = all_at_once(&ids, |id| {
        let store = store.clone();
        async move { store.reserve(reserve(&id)).await }
    })
    .await;
    for (id, written) in ids.iter().zip(&reserved) {
        match &written.as_ref().unwrap().value {
            Decision::Allowed(hold) => {
                assert_eq!(&hold.id, id);
                assert_eq!(hold.amount_minor, HELD_MINOR);
            }
            denied => panic!("{id} was denied: {denied:?}"),
        }
    }
    let committed = all_at_once(&ids, |id| {
        let store = store.clone();
        async move {
            store
                .commit(CommitOp {
                    entry_id: format!("commit/{id}"),
                    id,
                    amount_minor: CHARGED_MINOR,
                    usage: None,
                })
                .await
        }
    })
    .await;

    // Every commit names the record its entries are in; commits that ran together share it,
    // and a record is one account's.
    let mut records = Vec::new();
    for (id, written) in ids.iter().zip(committed) {
        let written = written.unwrap();
        assert_eq!(written.value.charged_minor, CHARGED_MINOR);
        let Durable::Record(record) = written.durable else {
            panic!("the commit of {id} names no record: {:?}", written.durable);
        };
        assert_eq!(record.account(), Some(id.account()));
        let mine = record.entries.iter().any(|e| match e {
            OutboxEntry::Charge(entry) => entry.id == format!("commit/{id}"),
            _ => false,
        });
        assert!(mine, "the record of {id} lacks its commit: {record:?}");
        for entry in &record.entries {
            if let Some(account) = entry.account() {
                assert_eq!(account, id.account(), "{record:?}");
            }
        }
        if !records.iter().any(|r| Arc::ptr_eq(r, &record)) {
            records.push(record);
        }
    }
    assert!(
        records.len() < ids.len(),
        "{} commits sent at once made {} records: none ran together",
        ids.len(),
        records.len()
    );

    // The sync loop's way: the ledger gets each commit once, and the balances are exact.
    loop {
        let read = store.outbox_read(1_000).await.unwrap();
        if read.is_empty() {
            break;
        }
        let appended = ledger.append(&read).await.unwrap();
        assert!(appended.stale.is_empty());
        let positions: Vec<_> = read.into_iter().map(|r| r.position).collect();
        store.outbox_ack(&positions).await.unwrap();
    }
    for name in ACCOUNTS {
        let account = AccountId::parse(name).unwrap();
        let entries = ledger.entries(&account, 10_000).await.unwrap();
        let mut commits: BTreeMap<&str, i64> = BTreeMap::new();
        for entry in entries.iter().filter(|e| e.kind == EntryKind::Commit) {
            assert!(
                commits.insert(&entry.id, entry.amount_minor).is_none(),
                "{} written twice",
                entry.id
            );
        }
        assert_eq!(commits.len(), HOLDS_PER_ACCOUNT, "{name}: {commits:?}");
        assert!(commits.values().all(|&amount| amount == CHARGED_MINOR));
        let view = store.balance(&account).await.unwrap().unwrap();
        let remaining: i64 = view.wallets[0]
            .grants
            .iter()
            .map(|g| g.remaining_minor)
            .sum();
        assert_eq!(
            remaining,
            GRANTED_MINOR - HOLDS_PER_ACCOUNT as i64 * CHARGED_MINOR,
            "{name}"
        );
    }
}
