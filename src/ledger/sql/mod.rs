//! The ledger in SQL: one implementation over sqlx's `Any` driver for both SQLite (a file under
//! the data directory, the embedded default) and PostgreSQL. The tables are the same in both
//! (see `migrations/`); statements use `$n` placeholders, which both understand, and the one
//! place the dialects differ (reading a label out of JSON) is `Backend::label_value`.
//!
//! SQLite runs in WAL mode with `synchronous = FULL`, so a transaction that has returned is on
//! disk. The sync loop writes many outbox records per transaction (group commit), which is what
//! makes acknowledging every commit only once it is durable affordable.

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

mod write;

use self::write::{apply, entry_name, put_holds};

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
        let fresh = records.iter().filter(|r| !stale.contains(&r.position));
        for entry in fresh.flat_map(|r| &r.entries) {
            match entry {
                OutboxEntry::Hold(hold) => holds.push(hold),
                entry => apply(tx, self.backend, entry, &self.webhooks).await?,
            }
        }
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

    /// Spend limits by account, each in the window `now_ms` falls in with what it has used
    /// there (the commits and charges carrying its label since it counts); what they hold is
    /// left to the holds.
    async fn limits(
        &self,
        connection: &mut AnyConnection,
        only: Option<&AccountId>,
        now_ms: i64,
    ) -> Result<Vec<(String, LimitState)>, LedgerError> {
        let rows = Statement::new("SELECT * FROM spend_limits WHERE 1 = 1")
            .only("account_id", only)
            .push_sql(" ORDER BY account_id, label_key, label_value, per")
            .fetch_all(&mut *connection)
            .await?;
        let mut limits = Vec::new();
        for row in rows {
            let account: String = row.try_get("account_id")?;
            let per: String = row.try_get("per")?;
            let window = LimitWindow::parse(&per)
                .ok_or_else(|| LedgerError::Corrupt(format!("limit window {per:?}")))?;
            let limit = SpendLimit {
                label_key: row.try_get("label_key")?,
                label_value: row.try_get("label_value")?,
                window,
                amount_minor: row.try_get("amount_minor")?,
            };
            let mut state = LimitState {
                window_index: window.index_at(now_ms),
                limit,
                used_minor: 0,
                held_minor: 0,
                since_ms: row.try_get("since_ms")?,
            };
            let (expr, path) = self.backend.label_value(&state.limit.label_key);
            let used = Statement::new(
                "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS used FROM entries \
                 WHERE kind IN ('commit', 'charge') AND feature IS NOT NULL",
            )
            .push(" AND account_id = {}", Param::Text(account.clone()))
            .push(" AND at_ms >= {}", Param::Int(state.counts_from_ms()))
            .push(&format!(" AND {expr}"), Param::Text(path))
            .push(" = {}", Param::Text(state.limit.label_value.clone()))
            .fetch_all(&mut *connection)
            .await?;
            state.used_minor = used
                .first()
                .map(|row| row.try_get::<i64, _>("used"))
                .transpose()?
                .unwrap_or(0);
            limits.push((account, state));
        }
        Ok(limits)
    }

    /// Flex cap, flex used and debt of every wallet that has any, by account, in wallet order.
    /// Flex held is left to the holds.
    /// Wallets' alerts, with their top-up requests: the one not answered yet and how many
    /// were made. In account and wallet order.
    async fn alerts(
        &self,
        connection: &mut AnyConnection,
        only: Option<&AccountId>,
    ) -> Result<Vec<(String, AlertsSnapshot)>, LedgerError> {
        let mut kept: BTreeMap<(String, String), AlertsSnapshot> = BTreeMap::new();
        let snapshot = |wallet: &str| -> Result<AlertsSnapshot, LedgerError> {
            Ok(AlertsSnapshot {
                wallet: parse(WalletId::parse(wallet), "wallet", wallet)?,
                alerts: WalletAlerts::default(),
                armed: Vec::new(),
                open_top_up: None,
                top_ups: 0,
            })
        };
        let policies = Statement::new(
            "SELECT account_id, wallet, policy, armed FROM wallet_alerts WHERE 1 = 1",
        )
        .only("account_id", only)
        .fetch_all(&mut *connection)
        .await?;
        for row in policies {
            let (account, wallet): (String, String) =
                (row.try_get("account_id")?, row.try_get("wallet")?);
            let mut alerts = snapshot(&wallet)?;
            alerts.alerts = from_json(&row.try_get::<String, _>("policy")?, "alerts")?;
            alerts.armed = row
                .try_get::<String, _>("armed")?
                .bytes()
                .map(|b| b != b'0')
                .collect();
            kept.insert((account, wallet), alerts);
        }
        let requests = Statement::new(
            "SELECT account_id, wallet, request_id, grant_id FROM top_ups WHERE 1 = 1",
        )
        .only("account_id", only)
        .fetch_all(&mut *connection)
        .await?;
        for row in requests {
            let (account, wallet): (String, String) =
                (row.try_get("account_id")?, row.try_get("wallet")?);
            let request: String = row.try_get("request_id")?;
            let n: u64 = request
                .rsplit('/')
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| LedgerError::Corrupt(format!("top-up request {request:?}")))?;
            let answered = row.try_get::<Option<String>, _>("grant_id")?.is_some();
            let alerts = match kept.entry((account, wallet.clone())) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(snapshot(&wallet)?),
            };
            alerts.top_ups = alerts.top_ups.max(n);
            let newest_open = alerts
                .open_top_up
                .as_ref()
                .and_then(|open| open.rsplit('/').next()?.parse::<u64>().ok())
                .is_none_or(|open| open < n);
            if !answered && newest_open {
                alerts.open_top_up = Some(request);
            }
        }
        // A wallet whose alerts were all removed, with no top-up ever asked, has none: as in
        // the stores.
        Ok(kept
            .into_iter()
            .filter(|(_, alerts)| !alerts.is_empty())
            .map(|((account, _), alerts)| (account, alerts))
            .collect())
    }

    async fn postpaid(
        &self,
        connection: &mut AnyConnection,
        only: Option<&AccountId>,
    ) -> Result<Vec<(String, WalletId, Postpaid)>, LedgerError> {
        let mut wallets: BTreeMap<(String, String), Postpaid> = BTreeMap::new();
        let caps =
            Statement::new("SELECT account_id, wallet, flex_cap_minor FROM wallets WHERE 1 = 1")
                .only("account_id", only)
                .fetch_all(&mut *connection)
                .await?;
        for row in caps {
            let key = (row.try_get("account_id")?, row.try_get("wallet")?);
            wallets.entry(key).or_default().flex_cap_minor = row.try_get("flex_cap_minor")?;
        }
        let spent = Statement::new(
            "SELECT e.account_id, e.wallet, s.grant_id, CAST(SUM(s.amount_minor) AS BIGINT) AS spent \
             FROM entry_splits s JOIN entries e ON e.entry_id = s.entry_id \
             WHERE e.kind IN ('commit', 'charge') AND s.grant_id IN ('~flex', '~debt')",
        )
        .only("e.account_id", only)
        .push_sql(" GROUP BY e.account_id, e.wallet, s.grant_id")
        .fetch_all(&mut *connection)
        .await?;
        for row in spent {
            let key = (row.try_get("account_id")?, row.try_get("wallet")?);
            let postpaid = wallets.entry(key).or_default();
            let amount: i64 = row.try_get("spent")?;
            if row.try_get::<String, _>("grant_id")? == GrantId::FLEX {
                postpaid.flex_used_minor += amount;
            } else {
                postpaid.debt_minor += amount;
            }
        }
        let repaid = Statement::new(
            "SELECT account_id, wallet, CAST(SUM(amount_minor) AS BIGINT) AS repaid \
             FROM entries WHERE kind = 'charge' AND grant_id = '~debt'",
        )
        .only("account_id", only)
        .push_sql(" GROUP BY account_id, wallet")
        .fetch_all(&mut *connection)
        .await?;
        for row in repaid {
            let key = (row.try_get("account_id")?, row.try_get("wallet")?);
            wallets.entry(key).or_default().debt_minor -= row.try_get::<i64, _>("repaid")?;
        }
        wallets
            .into_iter()
            .filter(|(_, postpaid)| !postpaid.is_zero())
            .map(|((account, wallet), postpaid)| {
                let wallet = parse(WalletId::parse(&wallet), "wallet", &wallet)?;
                Ok((account, wallet, postpaid))
            })
            .collect()
    }

    /// Every account (or `only` one) as the store needs it, read over one connection.
    async fn load_on(
        &self,
        connection: &mut AnyConnection,
        only: Option<&AccountId>,
        now_ms: i64,
        retention_ms: i64,
    ) -> Result<Vec<AccountSnapshot>, LedgerError> {
        let since = now_ms - retention_ms;
        let mut snapshots: HashMap<String, AccountSnapshot> = HashMap::new();

        let accounts = Statement::new("SELECT * FROM accounts WHERE 1 = 1")
            .only("account_id", only)
            .fetch_all(&mut *connection)
            .await?;
        for row in accounts {
            let account = read_account(&row)?;
            let key = account.id.to_string();
            snapshots.entry(key).or_default().account = Some(account);
        }

        let taken_rows = Statement::new(
            "SELECT s.account_id, s.grant_id, CAST(SUM(s.amount_minor) AS BIGINT) AS taken \
             FROM entry_splits s JOIN entries e ON e.entry_id = s.entry_id \
             WHERE e.kind IN ('commit', 'charge', 'void')",
        )
        .only("s.account_id", only)
        .push_sql(" GROUP BY s.account_id, s.grant_id")
        .fetch_all(&mut *connection)
        .await?;
        // What each grant's remaining amount differs from its amount by: refills of recurring
        // grants, less what was charged and voided of it.
        let mut change: HashMap<(String, String), i64> = HashMap::new();
        for row in taken_rows {
            let key = (row.try_get("account_id")?, row.try_get("grant_id")?);
            *change.entry(key).or_default() -= row.try_get::<i64, _>("taken")?;
        }
        let refill_rows = Statement::new(&format!(
            "SELECT account_id, grant_id, CAST(SUM(amount_minor) AS BIGINT) AS refilled \
             FROM entries WHERE kind = 'grant' AND entry_id LIKE '{}%'",
            entry_id::REFILL_PREFIX
        ))
        .only("account_id", only)
        .push_sql(" GROUP BY account_id, grant_id")
        .fetch_all(&mut *connection)
        .await?;
        for row in refill_rows {
            let key = (row.try_get("account_id")?, row.try_get("grant_id")?);
            *change.entry(key).or_default() += row.try_get::<i64, _>("refilled")?;
        }

        let period_rows = Statement::new("SELECT * FROM grant_periods WHERE 1 = 1")
            .only("account_id", only)
            .fetch_all(&mut *connection)
            .await?;
        let mut periods: HashMap<(String, String), (i64, i64)> = HashMap::new();
        for row in period_rows {
            let key = (row.try_get("account_id")?, row.try_get("grant_id")?);
            let period = (
                row.try_get("period_index")?,
                row.try_get("period_granted_minor")?,
            );
            periods.insert(key, period);
        }

        let grants = Statement::new("SELECT * FROM grants WHERE 1 = 1")
            .only("account_id", only)
            .push_sql(" ORDER BY created_at_ms, grant_id")
            .fetch_all(&mut *connection)
            .await?;
        for row in grants {
            let account: String = row.try_get("account_id")?;
            let grant_id: String = row.try_get("grant_id")?;
            let key = (account.clone(), grant_id);
            let changed = change.get(&key).copied().unwrap_or(0);
            let mut grant = read_grant(&row, changed)?;
            if let Some(&(index, granted)) = periods.get(&key)
                && index > grant.period_index
            {
                grant.period_index = index;
                grant.period_granted_minor = Some(granted);
            }
            snapshots.entry(account).or_default().grants.push(grant);
        }

        for (account, limit) in self.limits(connection, only, now_ms).await? {
            snapshots.entry(account).or_default().limits.push(limit);
        }
        for (account, wallet, postpaid) in self.postpaid(connection, only).await? {
            snapshots
                .entry(account)
                .or_default()
                .postpaid
                .push((wallet, postpaid));
        }
        for (account, alerts) in self.alerts(connection, only).await? {
            snapshots.entry(account).or_default().alerts.push(alerts);
        }

        let holds = Statement::new("SELECT account_id, body FROM holds WHERE ")
            .push("(state = 'held' OR updated_at_ms >= {})", Param::Int(since))
            .only("account_id", only)
            .fetch_all(&mut *connection)
            .await?;
        for row in holds {
            let account: String = row.try_get("account_id")?;
            let hold: Hold = from_json(&row.try_get::<String, _>("body")?, "hold")?;
            snapshots.entry(account).or_default().holds.push(hold);
        }

        let remembered = Statement::new("SELECT account_id, body FROM remembered WHERE ")
            .push("at_ms >= {}", Param::Int(since))
            .only("account_id", only)
            .fetch_all(&mut *connection)
            .await?;
        for row in remembered {
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

    /// [`AccountSource::load_for_store`], in the ledger's terms.
    async fn load_marked(
        &self,
        account: &AccountId,
        epoch: &str,
        now_ms: i64,
        retention_ms: i64,
    ) -> Result<Option<AccountSnapshot>, LedgerError> {
        // The account's row is written first: in PostgreSQL its lock makes every append of a
        // record for the account wait until this load is done, or this load wait for it; in
        // SQLite the write lock does the same for every writer.
        let mut tx = self.pool.begin().await?;
        let marked = sqlx::query("UPDATE accounts SET store_epoch = $1 WHERE account_id = $2")
            .bind(epoch)
            .bind(account.as_str())
            .execute(&mut *tx)
            .await?;
        if marked.rows_affected() == 0 {
            return Ok(None);
        }
        let snapshot = self
            .load_on(&mut tx, Some(account), now_ms, retention_ms)
            .await?
            .pop();
        tx.commit().await?;
        Ok(snapshot)
    }

    /// [`AccountSource::accounts_with_open_holds`], in the ledger's terms.
    async fn open_hold_accounts(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountId>, LedgerError> {
        let mut statement =
            Statement::new("SELECT DISTINCT account_id FROM holds WHERE state = 'held'");
        if let Some(after) = after {
            statement.push(" AND account_id > {}", Param::Text(after.to_string()));
        }
        statement.push(" ORDER BY account_id LIMIT {}", Param::Int(limit as i64));
        statement
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let id: String = row.try_get("account_id")?;
                parse(AccountId::parse(&id), "account id", &id)
            })
            .collect()
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

fn read_account(row: &AnyRow) -> Result<Account, LedgerError> {
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

/// A grant row; `change_minor` (its refills less what was charged and voided of it) is added
/// to its amount to make its remaining amount.
fn read_grant(row: &AnyRow, change_minor: i64) -> Result<Grant, LedgerError> {
    let id: String = row.try_get("grant_id")?;
    let wallet: String = row.try_get("wallet")?;
    let kind: String = row.try_get("kind")?;
    let features: String = row.try_get("features")?;
    let priority: i64 = row.try_get("priority")?;
    let amount_minor: i64 = row.try_get("amount_minor")?;
    let recurrence = match row.try_get::<Option<String>, _>("period")? {
        None => None,
        Some(period) => Some(Recurrence {
            period: Period::parse(&period)
                .ok_or_else(|| LedgerError::Corrupt(format!("grant period {period:?}")))?,
            anchor_ms: row.try_get("period_anchor_ms")?,
            rollover_max_minor: row
                .try_get::<Option<i64>, _>("rollover_max_minor")?
                .unwrap_or(0),
        }),
    };
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
            recurrence,
        },
        remaining_minor: amount_minor + change_minor,
        held_minor: 0,
        created_at_ms: row.try_get("created_at_ms")?,
        voided_at_ms: row.try_get("voided_at_ms")?,
        period_index: row.try_get("period_index")?,
        period_granted_minor: row.try_get("period_granted_minor")?,
    })
}

fn read_entry(row: &AnyRow, split: Vec<Portion>) -> Result<LedgerEntry, LedgerError> {
    let id: String = row.try_get("entry_id")?;
    let kind: String = row.try_get("kind")?;
    let account: String = row.try_get("account_id")?;
    let wallet: String = row.try_get("wallet")?;
    let usage: Option<String> = row.try_get("usage")?;
    let labels: String = row.try_get("labels")?;
    Ok(LedgerEntry {
        kind: EntryKind::parse(&kind)
            .ok_or_else(|| LedgerError::Corrupt(format!("entry kind {kind:?}")))?,
        account: parse(AccountId::parse(&account), "account id", &account)?,
        wallet: parse(WalletId::parse(&wallet), "wallet", &wallet)?,
        feature: parse_opt(row.try_get("feature")?, "feature", FeatureId::parse)?,
        model: parse_opt(row.try_get("model")?, "model", ModelId::parse)?,
        usage: usage.map(|u| from_json(&u, "usage")).transpose()?,
        amount_minor: row.try_get("amount_minor")?,
        split,
        reservation: parse_opt(
            row.try_get("reservation_id")?,
            "reservation id",
            ReservationId::parse,
        )?,
        grant: parse_opt(row.try_get("grant_id")?, "grant id", GrantId::parse_stored)?,
        idempotency_key: parse_opt(
            row.try_get("idempotency_key")?,
            "idempotency key",
            IdempotencyKey::parse_stored,
        )?,
        labels: from_json(&labels, "labels")?,
        reason: row.try_get("reason")?,
        overrun_minor: row.try_get("overrun_minor")?,
        refund_of: row.try_get("refund_of")?,
        at_ms: row.try_get("at_ms")?,
        id,
    })
}

fn read_change(row: &AnyRow) -> Result<Change, LedgerError> {
    let kind: String = row.try_get("kind")?;
    Ok(Change {
        seq: row.try_get("seq")?,
        kind: match kind.as_str() {
            "grant" => ChangeKind::Grant,
            "void" => ChangeKind::Void,
            "price" => ChangeKind::Price,
            other => return Err(LedgerError::Corrupt(format!("change kind {other:?}"))),
        },
        account: parse_opt(row.try_get("account_id")?, "account id", AccountId::parse)?,
        key: row.try_get("ref")?,
    })
}

/// A statement built piece by piece, numbering its parameters as they are added: PostgreSQL
/// refuses parameters a statement does not use, so only the ones written in are bound.
#[derive(Default)]
struct Statement {
    sql: String,
    params: Vec<Param>,
}

enum Param {
    Text(String),
    Int(i64),
}

impl Statement {
    fn new(sql: &str) -> Statement {
        Statement {
            sql: sql.to_owned(),
            params: Vec::new(),
        }
    }

    /// Appends `sql`, in which `{}` stands for the placeholder of `param`.
    fn push(&mut self, sql: &str, param: Param) -> &mut Statement {
        self.params.push(param);
        self.sql
            .push_str(&sql.replace("{}", &format!("${}", self.params.len())));
        self
    }

    fn push_sql(&mut self, sql: &str) -> &mut Statement {
        self.sql.push_str(sql);
        self
    }

    /// `AND column = $n` when only one account is wanted.
    fn only(&mut self, column: &str, only: Option<&AccountId>) -> &mut Statement {
        if let Some(account) = only {
            self.push(
                &format!(" AND {column} = {{}}"),
                Param::Text(account.to_string()),
            );
        }
        self
    }

    async fn fetch_all<'e, 'c: 'e, E>(&'e self, executor: E) -> Result<Vec<AnyRow>, LedgerError>
    where
        E: 'e + Executor<'c, Database = Any>,
    {
        // The text is built only from this module's literals; every value is a parameter.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(self.sql.as_str()));
        for param in &self.params {
            query = match param {
                Param::Text(text) => query.bind(text.clone()),
                Param::Int(value) => query.bind(*value),
            };
        }
        Ok(query.fetch_all(executor).await?)
    }
}

/// Accounts one statement of [`SqlLedger::stale`] reads.
const ACCOUNTS_PER_STATEMENT: usize = 500;

#[async_trait]
impl AccountSource for SqlLedger {
    async fn load_for_store(
        &self,
        account: &AccountId,
        epoch: &str,
        now_ms: i64,
        retention_ms: i64,
    ) -> Result<Option<AccountSnapshot>, SourceError> {
        Ok(self
            .load_marked(account, epoch, now_ms, retention_ms)
            .await?)
    }

    async fn accounts_with_open_holds(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountId>, SourceError> {
        Ok(self.open_hold_accounts(after, limit).await?)
    }
}

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
        let mut tx = self.pool.begin().await?;
        for price in prices {
            // In force at once: the feature's current price. Later: a version set ahead.
            let sql = if price.effective_at_ms <= at_ms {
                "INSERT INTO prices (feature, wallet, rule, overrun, stop, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (feature) DO UPDATE SET \
                 wallet = excluded.wallet, rule = excluded.rule, overrun = excluded.overrun, \
                 stop = excluded.stop, updated_at_ms = excluded.updated_at_ms"
            } else {
                "INSERT INTO price_versions (feature, wallet, rule, overrun, stop, \
                 updated_at_ms, effective_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (feature, effective_at_ms) DO UPDATE SET \
                 wallet = excluded.wallet, rule = excluded.rule, overrun = excluded.overrun, \
                 stop = excluded.stop, updated_at_ms = excluded.updated_at_ms"
            };
            let mut query = sqlx::query(sql)
                .bind(price.feature.as_str())
                .bind(price.wallet.as_str())
                .bind(to_json(&price.rule))
                .bind(to_json(&price.overrun))
                .bind(price.stop.name())
                .bind(at_ms);
            if price.effective_at_ms > at_ms {
                query = query.bind(price.effective_at_ms);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn prices(&self) -> Result<Vec<FeaturePrice>, LedgerError> {
        let mut prices = Vec::new();
        let rows = sqlx::query(
            "SELECT feature, wallet, rule, overrun, stop, updated_at_ms AS effective_at_ms \
             FROM prices UNION ALL \
             SELECT feature, wallet, rule, overrun, stop, effective_at_ms FROM price_versions \
             ORDER BY feature, effective_at_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let feature: String = row.try_get("feature")?;
            let wallet: String = row.try_get("wallet")?;
            prices.push(FeaturePrice {
                feature: parse(FeatureId::parse(&feature), "feature", &feature)?,
                wallet: parse(WalletId::parse(&wallet), "wallet", &wallet)?,
                rule: from_json(&row.try_get::<String, _>("rule")?, "price rule")?,
                overrun: match row.try_get::<Option<String>, _>("overrun")? {
                    Some(text) => from_json(&text, "overrun policy")?,
                    None => OverrunPolicy::default(),
                },
                stop: match row.try_get::<Option<String>, _>("stop")? {
                    Some(text) => StopRule::parse(&text)
                        .ok_or_else(|| LedgerError::Corrupt(format!("stop rule {text:?}")))?,
                    None => StopRule::default(),
                },
                effective_at_ms: row.try_get("effective_at_ms")?,
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
            sqlx::query("SELECT * FROM entries WHERE account_id = $1 ORDER BY seq DESC LIMIT $2")
                .bind(account.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("entry_id")?;
            let mut split = Vec::new();
            for portion in sqlx::query(
                "SELECT grant_id, amount_minor FROM entry_splits WHERE entry_id = $1 \
                 ORDER BY position",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await?
            {
                let grant: String = portion.try_get("grant_id")?;
                split.push(Portion {
                    grant: parse(GrantId::parse_stored(&grant), "grant id", &grant)?,
                    amount_minor: portion.try_get("amount_minor")?,
                });
            }
            entries.push(read_entry(&row, split)?);
        }
        Ok(entries)
    }

    async fn refundable(
        &self,
        account: &AccountId,
        entry_id: &str,
    ) -> Result<Option<Refundable>, LedgerError> {
        let Some(row) = sqlx::query(
            "SELECT wallet, amount_minor FROM entries \
             WHERE account_id = $1 AND entry_id = $2 AND kind IN ('commit', 'charge') \
             AND feature IS NOT NULL",
        )
        .bind(account.as_str())
        .bind(entry_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let refunded: i64 = sqlx::query(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS refunded FROM entries \
             WHERE account_id = $1 AND kind = 'grant' AND refund_of = $2",
        )
        .bind(account.as_str())
        .bind(entry_id)
        .fetch_one(&self.pool)
        .await?
        .try_get("refunded")?;
        let wallet: String = row.try_get("wallet")?;
        Ok(Some(Refundable {
            wallet: parse(WalletId::parse(&wallet), "wallet", &wallet)?,
            amount_minor: row.try_get("amount_minor")?,
            refunded_minor: refunded,
        }))
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
        let mut statement = Statement::new("SELECT ");
        match &query.group {
            UsageGroup::Total => statement.push_sql("CAST(NULL AS TEXT)"),
            UsageGroup::Feature => statement.push_sql("feature"),
            UsageGroup::Model => statement.push_sql("model"),
            UsageGroup::Wallet => statement.push_sql("wallet"),
            UsageGroup::Label(name) => {
                let (expr, path) = self.backend.label_value(name);
                statement.push(&expr, Param::Text(path))
            }
        };
        statement
            .push_sql(
                " AS usage_key, CAST(SUM(amount_minor) AS BIGINT) AS total, COUNT(*) AS n \
                 FROM entries WHERE kind IN ('commit', 'charge') AND feature IS NOT NULL",
            )
            .push(
                " AND account_id = {}",
                Param::Text(query.account.to_string()),
            )
            .push(" AND at_ms >= {}", Param::Int(query.since_ms))
            .push(" AND at_ms < {}", Param::Int(query.until_ms));
        if let Some((name, value)) = &query.label {
            let (expr, path) = self.backend.label_value(name);
            statement
                .push(&format!(" AND {expr}"), Param::Text(path))
                .push(" = {}", Param::Text(value.clone()));
        }
        statement.push_sql(&format!(
            " GROUP BY usage_key ORDER BY total DESC, usage_key LIMIT {USAGE_GROUPS_MAX}"
        ));
        let rows = statement.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(UsageRow {
                    key: row.try_get("usage_key")?,
                    amount_minor: row.try_get("total")?,
                    count: row.try_get("n")?,
                })
            })
            .collect()
    }

    async fn changes(
        &self,
        after: i64,
        gaps: &[i64],
        limit: usize,
    ) -> Result<Vec<Change>, LedgerError> {
        let mut changes = Vec::new();
        if !gaps.is_empty() {
            // Gaps are few and numbers; they are written into the statement, not bound.
            let list = gaps
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("SELECT * FROM changes WHERE seq IN ({list}) ORDER BY seq");
            // Only integers are written into the text.
            let query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for row in query.fetch_all(&self.pool).await? {
                changes.push(read_change(&row)?);
            }
        }
        for row in sqlx::query("SELECT * FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?
        {
            changes.push(read_change(&row)?);
        }
        Ok(changes)
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
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<String> = (0..endpoints.len())
            .map(|i| format!("${}", i + 5))
            .collect();
        // Rechecked row by row as it is updated, so two replicas never take the same one.
        let sql = format!(
            "UPDATE deliveries SET lease_until_ms = $1 \
             WHERE (event_id, endpoint) IN (SELECT event_id, endpoint FROM deliveries \
             WHERE delivered_at_ms IS NULL AND attempts < $2 AND next_attempt_at_ms <= $3 \
             AND lease_until_ms <= $3 AND endpoint IN ({}) \
             ORDER BY next_attempt_at_ms LIMIT $4) \
             AND delivered_at_ms IS NULL AND lease_until_ms <= $3 \
             RETURNING event_id, endpoint, attempts",
            wanted.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease_until_ms)
            .bind(i64::from(attempts_max))
            .bind(now_ms)
            .bind(limit as i64);
        for endpoint in endpoints {
            query = query.bind(endpoint.clone());
        }
        let claimed = query.fetch_all(&self.pool).await?;
        let mut due = Vec::with_capacity(claimed.len());
        for row in claimed {
            let event_id: String = row.try_get("event_id")?;
            let body: String = sqlx::query("SELECT body FROM events WHERE id = $1")
                .bind(&event_id)
                .fetch_one(&self.pool)
                .await?
                .try_get("body")?;
            due.push(Delivery {
                event: from_json(&body, "event")?,
                endpoint: row.try_get("endpoint")?,
                attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                lease_until_ms,
            });
        }
        Ok(due)
    }

    async fn record_delivery(
        &self,
        delivery: &Delivery,
        attempt: &Attempt,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let (delivered_at, error, next) = match attempt {
            Attempt::Delivered => (Some(now_ms), None, now_ms),
            Attempt::Failed { error, retry_at_ms } => {
                (None, Some(error.clone()), retry_at_ms.unwrap_or(i64::MAX))
            }
        };
        sqlx::query(
            "UPDATE deliveries SET attempts = attempts + 1, lease_until_ms = 0, \
             delivered_at_ms = $1, last_error = $2, next_attempt_at_ms = $3 \
             WHERE event_id = $4 AND endpoint = $5 AND lease_until_ms = $6 \
             AND delivered_at_ms IS NULL",
        )
        .bind(delivered_at)
        .bind(error)
        .bind(next)
        .bind(&delivery.event.id)
        .bind(&delivery.endpoint)
        .bind(delivery.lease_until_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn events(
        &self,
        account: &AccountId,
        limit: usize,
    ) -> Result<Vec<EventRecord>, LedgerError> {
        let rows = sqlx::query(
            "SELECT body FROM events WHERE account_id = $1 ORDER BY at_ms DESC, id DESC LIMIT $2",
        )
        .bind(account.as_str())
        .bind(limit.min(super::ENTRIES_LIMIT_MAX) as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let event: WalletEvent = from_json(&row.try_get::<String, _>("body")?, "event")?;
            let deliveries = sqlx::query(
                "SELECT endpoint, attempts, delivered_at_ms, next_attempt_at_ms, last_error \
                 FROM deliveries WHERE event_id = $1 ORDER BY endpoint",
            )
            .bind(&event.id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|d| -> Result<DeliveryState, LedgerError> {
                let delivered_at_ms: Option<i64> = d.try_get("delivered_at_ms")?;
                let next: i64 = d.try_get("next_attempt_at_ms")?;
                Ok(DeliveryState {
                    endpoint: d.try_get("endpoint")?,
                    attempts: u32::try_from(d.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                    next_attempt_at_ms: (delivered_at_ms.is_none() && next != i64::MAX)
                        .then_some(next),
                    delivered_at_ms,
                    last_error: d.try_get("last_error")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
            let answered_by = match &event.detail {
                EventDetail::TopUp { request_id, .. } => {
                    sqlx::query("SELECT grant_id FROM top_ups WHERE request_id = $1")
                        .bind(request_id)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(|r| r.try_get::<Option<String>, _>("grant_id"))
                        .transpose()?
                        .flatten()
                }
                _ => None,
            };
            records.push(EventRecord {
                event,
                deliveries,
                answered_by,
            });
        }
        Ok(records)
    }
}
