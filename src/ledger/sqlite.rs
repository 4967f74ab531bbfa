//! The SQLite ledger: one file under the data directory, created on first start, with its schema
//! migrations embedded in the binary.
//!
//! The file runs in WAL mode with `synchronous = FULL`, so a transaction that has returned is on
//! disk. The sync loop writes many outbox records per transaction (group commit), which is what
//! keeps acknowledging every commit only after it is durable affordable.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{Ledger, LedgerError};
use crate::domain::{
    Account, AccountId, AccountStatus, FeatureId, FeaturePrice, Grant, GrantId, GrantKind,
    GrantTerms, Hold, Portion, ReservationId, WalletId,
};
use crate::store::AccountSnapshot;
use crate::store::outbox::{EntryKind, LedgerEntry, OutboxEntry, OutboxRecord, Remembered};

/// Name of the ledger file inside the data directory.
pub const FILE_NAME: &str = "ledger.sqlite3";

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/ledger/migrations/sqlite");

impl From<sqlx::Error> for LedgerError {
    fn from(error: sqlx::Error) -> LedgerError {
        LedgerError::Database(error.to_string())
    }
}

/// The ledger in a SQLite file. See the module documentation.
#[derive(Clone, Debug)]
pub struct SqliteLedger {
    pool: SqlitePool,
}

impl SqliteLedger {
    /// Opens (creating if needed) the ledger in `data_dir` and applies its migrations.
    pub async fn open(data_dir: &Path) -> Result<SqliteLedger, LedgerError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            LedgerError::Database(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(FILE_NAME))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| LedgerError::Database(format!("migrations: {e}")))?;
        Ok(SqliteLedger { pool })
    }

    /// Closes every connection, waiting for statements in flight.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serialising plain data structs with string keys cannot fail.
    serde_json::to_string(value).expect("ledger records serialise to JSON")
}

fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, LedgerError> {
    serde_json::from_str(text).map_err(|e| LedgerError::Corrupt(format!("{what}: {e}")))
}

fn parse<T, E: std::fmt::Display>(
    result: Result<T, E>,
    what: &str,
    text: &str,
) -> Result<T, LedgerError> {
    result.map_err(|e| LedgerError::Corrupt(format!("{what} {text:?}: {e}")))
}

async fn insert_entry(
    tx: &mut Transaction<'_, Sqlite>,
    entry: &LedgerEntry,
) -> Result<(), LedgerError> {
    let inserted = sqlx::query(
        "INSERT INTO entries (entry_id, kind, account_id, wallet, feature, model, usage, \
         amount_minor, reservation_id, grant_id, idempotency_key, labels, reason, at_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (entry_id) DO NOTHING",
    )
    .bind(&entry.id)
    .bind(entry.kind.as_str())
    .bind(entry.account.as_str())
    .bind(entry.wallet.as_str())
    .bind(entry.feature.as_ref().map(FeatureId::as_str))
    .bind(entry.model.as_ref().map(|m| m.as_str()))
    .bind(entry.usage.as_ref().map(to_json))
    .bind(entry.amount_minor)
    .bind(entry.reservation.as_ref().map(ReservationId::to_string))
    .bind(entry.grant.as_ref().map(GrantId::as_str))
    .bind(entry.idempotency_key.as_ref().map(|k| k.as_str()))
    .bind(to_json(&entry.labels))
    .bind(entry.reason.as_deref())
    .bind(entry.at_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // Written by an earlier batch: its splits are there too.
        return Ok(());
    }
    for (position, portion) in entry.split.iter().enumerate() {
        sqlx::query(
            "INSERT INTO entry_splits (entry_id, position, account_id, grant_id, amount_minor) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&entry.id)
        .bind(position as i64)
        .bind(entry.account.as_str())
        .bind(portion.grant.as_str())
        .bind(portion.amount_minor)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn apply(tx: &mut Transaction<'_, Sqlite>, entry: &OutboxEntry) -> Result<(), LedgerError> {
    match entry {
        OutboxEntry::Account(account) => {
            sqlx::query(
                "INSERT INTO accounts (account_id, display_name, status, created_at_ms) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (account_id) DO UPDATE SET \
                 display_name = excluded.display_name, status = excluded.status",
            )
            .bind(account.id.as_str())
            .bind(&account.display_name)
            .bind(account.status.as_str())
            .bind(account.created_at_ms)
            .execute(&mut **tx)
            .await?;
        }
        OutboxEntry::Grant { grant, entry } => {
            let terms = &grant.terms;
            sqlx::query(
                "INSERT INTO grants (account_id, grant_id, wallet, kind, priority, amount_minor, \
                 expires_at_ms, features, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (account_id, grant_id) DO NOTHING",
            )
            .bind(entry.account.as_str())
            .bind(terms.id.as_str())
            .bind(terms.wallet.as_str())
            .bind(terms.kind.as_str())
            .bind(i64::from(terms.priority))
            .bind(terms.amount_minor)
            .bind(terms.expires_at_ms)
            .bind(to_json(&terms.features))
            .bind(grant.created_at_ms)
            .execute(&mut **tx)
            .await?;
            insert_entry(tx, entry).await?;
        }
        OutboxEntry::Void { entry } => {
            let grant = entry.grant.as_ref().map(GrantId::as_str);
            sqlx::query(
                "UPDATE grants SET voided_at_ms = ? \
                 WHERE account_id = ? AND grant_id = ? AND voided_at_ms IS NULL",
            )
            .bind(entry.at_ms)
            .bind(entry.account.as_str())
            .bind(grant)
            .execute(&mut **tx)
            .await?;
            insert_entry(tx, entry).await?;
        }
        OutboxEntry::Charge(entry) => insert_entry(tx, entry).await?,
        OutboxEntry::Hold(hold) => {
            let updated_at = hold
                .commit
                .as_ref()
                .map(|c| c.at_ms)
                .or(hold.release.as_ref().map(|r| r.at_ms))
                .unwrap_or(hold.created_at_ms);
            sqlx::query(
                "INSERT INTO holds (reservation_id, account_id, state, updated_at_ms, body) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (reservation_id) DO UPDATE SET \
                 state = excluded.state, updated_at_ms = excluded.updated_at_ms, \
                 body = excluded.body",
            )
            .bind(hold.id.to_string())
            .bind(hold.account().as_str())
            .bind(hold.state.as_str())
            .bind(updated_at)
            .bind(to_json(hold))
            .execute(&mut **tx)
            .await?;
        }
        OutboxEntry::Remember(remembered) => {
            sqlx::query(
                "INSERT INTO remembered (account_id, idempotency_key, at_ms, body) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (account_id, idempotency_key) DO UPDATE SET \
                 at_ms = excluded.at_ms, body = excluded.body",
            )
            .bind(remembered.account.as_str())
            .bind(remembered.key.as_str())
            .bind(remembered.at_ms)
            .bind(to_json(remembered))
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

fn read_account(row: &SqliteRow) -> Result<Account, LedgerError> {
    let id: String = row.try_get("account_id")?;
    let status: String = row.try_get("status")?;
    Ok(Account {
        id: parse(AccountId::parse(&id), "account id", &id)?,
        display_name: row.try_get("display_name")?,
        status: AccountStatus::parse(&status)
            .ok_or_else(|| LedgerError::Corrupt(format!("account status {status:?}")))?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn read_grant(
    row: &SqliteRow,
    spent: &HashMap<(String, String), i64>,
) -> Result<Grant, LedgerError> {
    let account: String = row.try_get("account_id")?;
    let id: String = row.try_get("grant_id")?;
    let wallet: String = row.try_get("wallet")?;
    let kind: String = row.try_get("kind")?;
    let features: String = row.try_get("features")?;
    let priority: i64 = row.try_get("priority")?;
    let amount_minor: i64 = row.try_get("amount_minor")?;
    let taken = spent.get(&(account, id.clone())).copied().unwrap_or(0);
    Ok(Grant {
        terms: GrantTerms {
            id: parse(GrantId::parse(&id), "grant id", &id)?,
            wallet: parse(WalletId::parse(&wallet), "wallet", &wallet)?,
            kind: GrantKind::parse(&kind)
                .ok_or_else(|| LedgerError::Corrupt(format!("grant kind {kind:?}")))?,
            priority: parse(u32::try_from(priority), "priority", &priority.to_string())?,
            amount_minor,
            expires_at_ms: row.try_get("expires_at_ms")?,
            features: from_json(&features, "grant features")?,
        },
        remaining_minor: amount_minor - taken,
        held_minor: 0,
        created_at_ms: row.try_get("created_at_ms")?,
        voided_at_ms: row.try_get("voided_at_ms")?,
    })
}

#[async_trait]
impl Ledger for SqliteLedger {
    async fn append(&self, records: &[OutboxRecord]) -> Result<(), LedgerError> {
        let mut tx = self.pool.begin().await?;
        for entry in records.iter().flat_map(|r| &r.entries) {
            apply(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn load_accounts(
        &self,
        now_ms: i64,
        retention_ms: i64,
    ) -> Result<Vec<AccountSnapshot>, LedgerError> {
        let since = now_ms - retention_ms;
        let mut snapshots: HashMap<String, AccountSnapshot> = HashMap::new();
        for row in sqlx::query("SELECT * FROM accounts")
            .fetch_all(&self.pool)
            .await?
        {
            let account = read_account(&row)?;
            let key = account.id.to_string();
            snapshots.entry(key).or_default().account = Some(account);
        }
        let mut spent = HashMap::new();
        for row in sqlx::query(
            "SELECT s.account_id, s.grant_id, SUM(s.amount_minor) AS taken \
             FROM entry_splits s JOIN entries e ON e.entry_id = s.entry_id \
             WHERE e.kind IN ('commit', 'charge', 'void') GROUP BY s.account_id, s.grant_id",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let key = (row.try_get("account_id")?, row.try_get("grant_id")?);
            spent.insert(key, row.try_get::<i64, _>("taken")?);
        }
        for row in sqlx::query("SELECT * FROM grants ORDER BY created_at_ms, grant_id")
            .fetch_all(&self.pool)
            .await?
        {
            let account: String = row.try_get("account_id")?;
            let grant = read_grant(&row, &spent)?;
            snapshots.entry(account).or_default().grants.push(grant);
        }
        for row in sqlx::query(
            "SELECT account_id, body FROM holds WHERE state = 'held' OR updated_at_ms >= ?",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?
        {
            let account: String = row.try_get("account_id")?;
            let hold: Hold = from_json(&row.try_get::<String, _>("body")?, "hold")?;
            snapshots.entry(account).or_default().holds.push(hold);
        }
        for row in sqlx::query("SELECT account_id, body FROM remembered WHERE at_ms >= ?")
            .bind(since)
            .fetch_all(&self.pool)
            .await?
        {
            let account: String = row.try_get("account_id")?;
            let remembered: Remembered =
                from_json(&row.try_get::<String, _>("body")?, "idempotent reply")?;
            snapshots
                .entry(account)
                .or_default()
                .remembered
                .push(remembered);
        }
        Ok(snapshots.into_values().collect())
    }

    async fn put_prices(&self, prices: &[FeaturePrice], at_ms: i64) -> Result<(), LedgerError> {
        let mut tx = self.pool.begin().await?;
        for price in prices {
            sqlx::query(
                "INSERT INTO prices (feature, wallet, rule, updated_at_ms) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (feature) DO UPDATE SET wallet = excluded.wallet, \
                 rule = excluded.rule, updated_at_ms = excluded.updated_at_ms",
            )
            .bind(price.feature.as_str())
            .bind(price.wallet.as_str())
            .bind(to_json(&price.rule))
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn prices(&self) -> Result<Vec<FeaturePrice>, LedgerError> {
        let mut prices = Vec::new();
        for row in sqlx::query("SELECT feature, wallet, rule FROM prices ORDER BY feature")
            .fetch_all(&self.pool)
            .await?
        {
            let feature: String = row.try_get("feature")?;
            let wallet: String = row.try_get("wallet")?;
            prices.push(FeaturePrice {
                feature: parse(FeatureId::parse(&feature), "feature", &feature)?,
                wallet: parse(WalletId::parse(&wallet), "wallet", &wallet)?,
                rule: from_json(&row.try_get::<String, _>("rule")?, "price rule")?,
            });
        }
        Ok(prices)
    }

    async fn entries(
        &self,
        account: &AccountId,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        let limit = limit.min(super::ENTRIES_LIMIT_MAX) as i64;
        let rows =
            sqlx::query("SELECT * FROM entries WHERE account_id = ? ORDER BY seq DESC LIMIT ?")
                .bind(account.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("entry_id")?;
            let kind: String = row.try_get("kind")?;
            let wallet: String = row.try_get("wallet")?;
            let feature: Option<String> = row.try_get("feature")?;
            let model: Option<String> = row.try_get("model")?;
            let usage: Option<String> = row.try_get("usage")?;
            let reservation: Option<String> = row.try_get("reservation_id")?;
            let grant: Option<String> = row.try_get("grant_id")?;
            let key: Option<String> = row.try_get("idempotency_key")?;
            let labels: String = row.try_get("labels")?;
            let mut split = Vec::new();
            for portion in sqlx::query(
                "SELECT grant_id, amount_minor FROM entry_splits WHERE entry_id = ? \
                 ORDER BY position",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await?
            {
                let grant: String = portion.try_get("grant_id")?;
                split.push(Portion {
                    grant: parse(GrantId::parse(&grant), "grant id", &grant)?,
                    amount_minor: portion.try_get("amount_minor")?,
                });
            }
            entries.push(LedgerEntry {
                kind: EntryKind::parse(&kind)
                    .ok_or_else(|| LedgerError::Corrupt(format!("entry kind {kind:?}")))?,
                account: account.clone(),
                wallet: parse(WalletId::parse(&wallet), "wallet", &wallet)?,
                feature: feature
                    .map(|f| parse(FeatureId::parse(&f), "feature", &f))
                    .transpose()?,
                model: model
                    .map(|m| parse(crate::domain::ModelId::parse(&m), "model", &m))
                    .transpose()?,
                usage: usage.map(|u| from_json(&u, "usage")).transpose()?,
                amount_minor: row.try_get("amount_minor")?,
                split,
                reservation: reservation
                    .map(|r| parse(ReservationId::parse(&r), "reservation id", &r))
                    .transpose()?,
                grant: grant
                    .map(|g| parse(GrantId::parse(&g), "grant id", &g))
                    .transpose()?,
                idempotency_key: key
                    .map(|k| {
                        parse(
                            crate::domain::IdempotencyKey::parse(&k),
                            "idempotency key",
                            &k,
                        )
                    })
                    .transpose()?,
                labels: from_json(&labels, "labels")?,
                reason: row.try_get("reason")?,
                at_ms: row.try_get("at_ms")?,
                id,
            });
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{GrantStatus, Labels};

    fn account(id: &str) -> AccountId {
        AccountId::parse(id).unwrap()
    }

    fn records() -> Vec<OutboxRecord> {
        let acme = account("acme");
        let grant = Grant::new(
            GrantTerms {
                id: GrantId::parse("g1").unwrap(),
                wallet: WalletId::default_wallet(),
                kind: GrantKind::Prepaid,
                priority: 30,
                amount_minor: 10_000_000,
                expires_at_ms: None,
                features: vec![],
            },
            1_000,
        );
        let entry = |id: &str, kind, amount_minor| LedgerEntry {
            id: id.into(),
            kind,
            account: acme.clone(),
            wallet: WalletId::default_wallet(),
            feature: None,
            model: None,
            usage: None,
            amount_minor,
            split: if kind == EntryKind::Grant {
                vec![]
            } else {
                vec![Portion {
                    grant: GrantId::parse("g1").unwrap(),
                    amount_minor,
                }]
            },
            reservation: None,
            grant: Some(GrantId::parse("g1").unwrap()),
            idempotency_key: None,
            labels: Labels::new(),
            reason: None,
            at_ms: 2_000,
        };
        let entries = [
            OutboxEntry::Account(Account {
                id: acme.clone(),
                display_name: String::new(),
                status: AccountStatus::Active,
                created_at_ms: 1_000,
            }),
            OutboxEntry::Grant {
                grant,
                entry: entry("e-grant", EntryKind::Grant, 10_000_000),
            },
            OutboxEntry::Charge(entry("e-charge", EntryKind::Charge, 2_500_000)),
        ];
        entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| OutboxRecord {
                seq: i as u64 + 1,
                at_ms: 2_000,
                entries: vec![entry],
            })
            .collect()
    }

    #[tokio::test]
    async fn appending_a_batch_twice_records_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(dir.path()).await.unwrap();
        ledger.append(&records()).await.unwrap();
        ledger.append(&records()).await.unwrap();
        let entries = ledger.entries(&account("acme"), 100).await.unwrap();
        let ids: Vec<_> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["e-charge", "e-grant"]);
        assert_eq!(entries[0].split.len(), 1);

        let snapshots = ledger.load_accounts(3_000, 1_000).await.unwrap();
        assert_eq!(snapshots.len(), 1);
        let grant = &snapshots[0].grants[0];
        assert_eq!(grant.remaining_minor, 7_500_000, "the charge counted once");
        assert_eq!(grant.status(3_000), GrantStatus::Active);
        ledger.close().await;
    }

    #[tokio::test]
    async fn ledger_entries_cannot_be_changed_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(dir.path()).await.unwrap();
        ledger.append(&records()).await.unwrap();
        for statement in [
            "UPDATE entries SET amount_minor = 0",
            "DELETE FROM entries",
            "UPDATE entry_splits SET amount_minor = 0",
            "DELETE FROM entry_splits",
        ] {
            let error = sqlx::query(statement)
                .execute(&ledger.pool)
                .await
                .expect_err(statement);
            assert!(error.to_string().contains("append-only"), "{error}");
        }
        ledger.close().await;
    }

    #[tokio::test]
    async fn reopening_keeps_everything_and_migrations_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(dir.path()).await.unwrap();
        ledger.append(&records()).await.unwrap();
        ledger.close().await;
        let ledger = SqliteLedger::open(dir.path()).await.unwrap();
        assert_eq!(
            ledger.entries(&account("acme"), 100).await.unwrap().len(),
            2
        );
        ledger.close().await;
    }
}
