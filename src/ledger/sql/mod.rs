//! The ledger in SQL: one implementation over sqlx's `Any` driver for both SQLite (a file under
//! the data directory, the embedded default) and PostgreSQL. The tables are the same in both
//! (see `migrations/`); statements use `$n` placeholders, which both understand, and the one
//! place the dialects differ (reading a label out of JSON) is `Backend::label_value`.
//!
//! SQLite runs in WAL mode with `synchronous = FULL`, so a transaction that has returned is on
//! disk. The sync loop writes many outbox records per transaction (group commit), which is what
//! makes acknowledging every commit only once it is durable affordable.
//!
//! What an append writes is in `write.rs`; what the store loads in `load.rs`; the other reads
//! in `read.rs`, `prices.rs` and `events.rs` (with webhook deliveries); statements built piece
//! by piece in `statement.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Row, Transaction};

use super::{
    Appended, Attempt, Change, ChangeKind, Delivery, DeliveryState, EventRecord, Ledger,
    LedgerError, LedgerTarget, Refundable, USAGE_GROUPS_MAX, UsageGroup, UsageQuery, UsageRow,
    WebhookRoute,
};
use crate::domain::alert::WalletAlerts;
use crate::domain::entry_id;
use crate::domain::{
    Account, AccountId, AccountStatus, EventDetail, FeatureId, FeaturePrice, Grant, GrantId,
    GrantKind, GrantTerms, Hold, IdempotencyKey, LimitState, LimitWindow, ModelId, OverrunPolicy,
    Period, Portion, Postpaid, Recurrence, ReservationId, SpendLimit, StopRule, WalletEvent,
    WalletId,
};
use crate::record::{
    AccountSnapshot, AccountSource, AlertsSnapshot, EntryKind, LedgerEntry, OutboxEntry,
    OutboxPosition, OutboxRecord, Remembered, SourceError,
};

/// Name of the SQLite ledger file inside the data directory.
pub const SQLITE_FILE_NAME: &str = "ledger.sqlite3";

/// Set on every SQLite connection: wait up to 5 s for a lock held by another connection; WAL
/// journal; every commit synced to disk before it returns; up to 64 MiB of pages cached (the
/// default 2 MiB cannot hold the index of a busy day's holds, which many accounts' holds reach
/// all over).
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; PRAGMA cache_size = -65536;";

mod events;
mod load;
mod prices;
mod read;
mod statement;
mod write;

use self::load::{read_account, read_grant};
use self::statement::{Param, Statement};
use self::write::{apply, entry_name, insert_entries, put_holds};

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/ledger/migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator =
    sqlx::migrate!("src/ledger/migrations/postgres");

impl From<sqlx::Error> for LedgerError {
    fn from(error: sqlx::Error) -> LedgerError {
        LedgerError::Database(error.to_string())
    }
}

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// An SQL expression for the value of a label in `labels`, with `{}` for the parameter
    /// that names it, and what to bind to that parameter for label `name`.
    fn label_value(self, name: &str) -> (String, String) {
        match self {
            Backend::Sqlite => ("json_extract(labels, {})".into(), format!("$.\"{name}\"")),
            Backend::Postgres => ("(labels::jsonb ->> {})".into(), name.to_owned()),
        }
    }
}

/// The ledger in a SQL database. See the module documentation.
#[derive(Clone, Debug)]
pub struct SqlLedger {
    pool: AnyPool,
    backend: Backend,
    /// Which webhook endpoints want which events: each event appended gets a delivery row
    /// for each endpoint that wants it.
    webhooks: Vec<WebhookRoute>,
    /// SQLite's connection for appends. SQLite has one write lock, and a writer that finds it
    /// taken sleeps in SQLite's busy handler: this process's batches (the sync loop's, and those
    /// written for callers that wait) queue here instead. One connection, so its page cache
    /// stays valid (a connection finding that another wrote since drops its cache).
    appends: Arc<tokio::sync::Mutex<Option<AnyConnection>>>,
}

fn install_drivers() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(sqlx::any::install_default_drivers);
}

impl SqlLedger {
    /// Connects to the ledger; `timeout` bounds waiting for a connection. Does not migrate.
    pub async fn connect(
        target: &LedgerTarget,
        timeout: Duration,
    ) -> Result<SqlLedger, LedgerError> {
        install_drivers();
        match target {
            LedgerTarget::Sqlite { data_dir } => Self::connect_sqlite(data_dir, timeout).await,
            LedgerTarget::Postgres { url } => {
                let pool = AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(timeout)
                    .connect(url)
                    .await?;
                Ok(SqlLedger {
                    pool,
                    backend: Backend::Postgres,
                    webhooks: Vec::new(),
                    appends: Default::default(),
                })
            }
        }
    }

    /// Writes outbox records in a transaction, except those that are stale (see
    /// [`SqlLedger::stale`]), which it returns.
    async fn write_records(
        &self,
        tx: &mut Tx<'_>,
        records: &[&OutboxRecord],
    ) -> Result<Appended, LedgerError> {
        let stale = self.stale(tx, records).await?;
        // Holds are the bulk of a busy batch (one per reserve, again at its end): they go in
        // a few statements of many rows, after the rest, which never reads them.
        let mut holds: Vec<&Hold> = Vec::new();
        // So are commits' and charges' entries, in order, until another kind of entry comes.
        let mut charges: Vec<&LedgerEntry> = Vec::new();
        let fresh = records.iter().filter(|r| !stale.contains(&r.position));
        for entry in fresh.flat_map(|r| &r.entries) {
            match entry {
                OutboxEntry::Hold(hold) => holds.push(hold),
                OutboxEntry::Charge(entry) => charges.push(entry),
                entry => {
                    insert_entries(tx, self.backend, &charges).await?;
                    charges.clear();
                    apply(tx, self.backend, entry, &self.webhooks).await?;
                }
            }
        }
        insert_entries(tx, self.backend, &charges).await?;
        put_holds(tx, self.backend, holds).await?;
        Ok(Appended { stale })
    }

    /// The records written in an older epoch of the store than the one their account was last
    /// loaded in ([`AccountSource::load_for_store`]): the store lost what they did before the ledger
    /// had it, and loaded the account without it, so writing them now would make the ledger
    /// say what the store does not. In PostgreSQL the rows of their accounts are locked, in
    /// account order, until the transaction ends, so that such a load (which writes the row)
    /// waits for this transaction or this transaction for it.
    async fn stale(
        &self,
        tx: &mut Tx<'_>,
        records: &[&OutboxRecord],
    ) -> Result<Vec<OutboxPosition>, LedgerError> {
        let accounts: BTreeSet<&str> = records
            .iter()
            .filter(|r| r.epoch().is_some())
            .filter_map(|r| r.account())
            .map(AccountId::as_str)
            .collect();
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        let accounts: Vec<&str> = accounts.into_iter().collect();
        // Shared, so that appends do not wait for each other, unless this one writes an
        // account's row itself: then exclusive from the start, never upgraded (two appends
        // upgrading their shared locks on one row would deadlock). Either way in account
        // order, so that appends wait for each other in one order.
        let writes_accounts = records
            .iter()
            .flat_map(|r| &r.entries)
            .any(|e| matches!(e, OutboxEntry::Account(_)));
        let lock = if writes_accounts {
            " FOR UPDATE"
        } else {
            " FOR SHARE"
        };
        let mut epochs: HashMap<String, String> = HashMap::new();
        for chunk in accounts.chunks(ACCOUNTS_PER_STATEMENT) {
            let mut statement = Statement::new(
                "SELECT account_id, store_epoch FROM accounts WHERE account_id IN (",
            );
            for (i, account) in chunk.iter().enumerate() {
                let separator = if i == 0 { "" } else { ", " };
                statement.push(
                    &format!("{separator}{{}}"),
                    Param::Text((*account).to_owned()),
                );
            }
            statement.push_sql(") ORDER BY account_id");
            if self.backend == Backend::Postgres {
                statement.push_sql(lock);
            }
            for row in statement.fetch_all(&mut **tx).await? {
                if let Some(epoch) = row.try_get::<Option<String>, _>("store_epoch")? {
                    epochs.insert(row.try_get("account_id")?, epoch);
                }
            }
        }
        let stale: Vec<&&OutboxRecord> = records
            .iter()
            .filter(|r| match (r.epoch(), r.account()) {
                (Some(epoch), Some(account)) => epochs
                    .get(account.as_str())
                    .is_some_and(|loaded_in| loaded_in != epoch),
                _ => false,
            })
            .collect();
        for record in &stale {
            // Named, for an operator: at `store` durability their callers were answered.
            tracing::warn!(
                account = %record.account().map(AccountId::as_str).unwrap_or_default(),
                entries = ?record.entries.iter().filter_map(entry_name).collect::<Vec<_>>(),
                "the store lost this outbox record before the ledger had it, and loaded the \
                 account again without it: not written"
            );
        }
        Ok(stale.into_iter().map(|r| r.position.clone()).collect())
    }

    /// Sends events to these webhook endpoints from now on.
    pub fn with_webhooks(mut self, webhooks: Vec<WebhookRoute>) -> SqlLedger {
        self.webhooks = webhooks;
        self
    }

    async fn connect_sqlite(data_dir: &Path, timeout: Duration) -> Result<SqlLedger, LedgerError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            LedgerError::Database(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join(SQLITE_FILE_NAME);
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(timeout)
            .after_connect(|connection, _| {
                Box::pin(async move {
                    connection.execute(SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(SqlLedger {
            pool,
            backend: Backend::Sqlite,
            webhooks: Vec::new(),
            appends: Default::default(),
        })
    }

    /// Applies the embedded migrations that the database does not have yet.
    pub async fn migrate(&self) -> Result<(), LedgerError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| LedgerError::Database(format!("migrations: {e}")))
    }
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for tests that look at the tables themselves.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
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

fn parse_opt<T, E: std::fmt::Display>(
    text: Option<String>,
    what: &str,
    parse_fn: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<T>, LedgerError> {
    text.map(|t| parse(parse_fn(&t), what, &t)).transpose()
}

type Tx<'a> = Transaction<'a, Any>;

/// Accounts one statement of [`SqlLedger::stale`] reads.
const ACCOUNTS_PER_STATEMENT: usize = 500;

#[async_trait]
impl Ledger for SqlLedger {
    async fn append(&self, records: &[OutboxRecord]) -> Result<Appended, LedgerError> {
        // Two writers may carry the same records (a replica's sync loop, and a replica writing
        // a record its caller waits for): taken in the outbox's order, their rows are locked
        // in one order, so one waits for the other instead of both deadlocking.
        let mut records: Vec<&OutboxRecord> = records.iter().collect();
        records.sort_by_key(|r| r.position.order());
        match self.backend {
            Backend::Sqlite => {
                let mut appends = self.appends.lock().await;
                let connection = match appends.as_mut() {
                    Some(connection) => connection,
                    None => appends.insert(self.pool.acquire().await?.detach()),
                };
                let written = async {
                    let mut tx = connection.begin().await?;
                    let appended = self.write_records(&mut tx, &records).await?;
                    tx.commit().await?;
                    Ok::<_, LedgerError>(appended)
                }
                .await;
                if written.is_err() {
                    // Perhaps broken: the next batch starts on a new one.
                    *appends = None;
                }
                written
            }
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                let appended = self.write_records(&mut tx, &records).await?;
                tx.commit().await?;
                Ok(appended)
            }
        }
    }

    async fn load_accounts(
        &self,
        only: Option<&AccountId>,
        now_ms: i64,
        retention_ms: i64,
    ) -> Result<Vec<AccountSnapshot>, LedgerError> {
        let mut connection = self.pool.acquire().await?;
        self.load_on(&mut connection, only, now_ms, retention_ms)
            .await
    }

    async fn account(&self, account: &AccountId) -> Result<Option<Account>, LedgerError> {
        sqlx::query("SELECT * FROM accounts WHERE account_id = $1")
            .bind(account.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| read_account(&row))
            .transpose()
    }

    async fn grant(
        &self,
        account: &AccountId,
        grant: &GrantId,
    ) -> Result<Option<Grant>, LedgerError> {
        sqlx::query("SELECT * FROM grants WHERE account_id = $1 AND grant_id = $2")
            .bind(account.as_str())
            .bind(grant.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| read_grant(&row, 0))
            .transpose()
    }

    async fn put_prices(&self, prices: &[FeaturePrice], at_ms: i64) -> Result<(), LedgerError> {
        prices::put_prices(self, prices, at_ms).await
    }

    async fn prices(&self) -> Result<Vec<FeaturePrice>, LedgerError> {
        prices::prices(self).await
    }

    async fn entries(
        &self,
        account: &AccountId,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        read::entries(self, account, limit).await
    }

    async fn refundable(
        &self,
        account: &AccountId,
        entry_id: &str,
    ) -> Result<Option<Refundable>, LedgerError> {
        read::refundable(self, account, entry_id).await
    }

    async fn has_entry(&self, id: &str) -> Result<bool, LedgerError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM entries WHERE entry_id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    async fn hold_version(&self, id: &ReservationId) -> Result<Option<u64>, LedgerError> {
        let row = sqlx::query("SELECT version FROM holds WHERE reservation_id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok(row.try_get::<i64, _>("version")?.max(0) as u64))
            .transpose()
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, LedgerError> {
        read::usage(self, query).await
    }

    async fn changes(
        &self,
        after: i64,
        gaps: &[i64],
        limit: usize,
    ) -> Result<Vec<Change>, LedgerError> {
        read::changes(self, after, gaps, limit).await
    }

    async fn last_change(&self) -> Result<i64, LedgerError> {
        let row = sqlx::query("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS last FROM changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("last")?)
    }

    async fn claim_deliveries(
        &self,
        endpoints: &[String],
        now_ms: i64,
        lease_until_ms: i64,
        attempts_max: u32,
        limit: usize,
    ) -> Result<Vec<Delivery>, LedgerError> {
        events::claim_deliveries(self, endpoints, now_ms, lease_until_ms, attempts_max, limit).await
    }

    async fn record_delivery(
        &self,
        delivery: &Delivery,
        attempt: &Attempt,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        events::record_delivery(self, delivery, attempt, now_ms).await
    }

    async fn events(
        &self,
        account: &AccountId,
        limit: usize,
    ) -> Result<Vec<EventRecord>, LedgerError> {
        events::events(self, account, limit).await
    }
}
