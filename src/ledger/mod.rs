//! The ledger: the authoritative, durable record of accounts, grants, prices and every money
//! movement. The store is rebuilt from it on start; the sync loop feeds it from the store's
//! outbox, and carries changes written to it directly (by the Admin API or another system) back
//! into the store.
//!
//! One implementation, [`sql::SqlLedger`], over two databases: a SQLite file under the data
//! directory (the embedded default) and PostgreSQL (production). Both have the same tables and
//! pass the same tests.

pub mod sql;

use std::path::PathBuf;

use async_trait::async_trait;

use crate::domain::{
    Account, AccountId, FeaturePrice, Grant, GrantId, ReservationId, WalletEvent, WalletEventKind,
    WalletId,
};
use crate::record::{AccountSnapshot, AccountSource, LedgerEntry, OutboxPosition, OutboxRecord};

/// Most entries one listing returns.
pub const ENTRIES_LIMIT_MAX: usize = 1_000;
/// Most groups one usage query returns.
pub const USAGE_GROUPS_MAX: usize = 1_000;

/// Where the ledger lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerTarget {
    /// A SQLite file in this directory (created if missing).
    Sqlite { data_dir: PathBuf },
    /// A PostgreSQL database, by URL (`postgres://user@host:port/database`).
    Postgres { url: String },
}

impl LedgerTarget {
    /// `postgres://…` or `postgresql://…` means PostgreSQL; nothing means the SQLite file in
    /// `data_dir`.
    pub fn parse(url: Option<&str>, data_dir: PathBuf) -> Result<LedgerTarget, String> {
        match url {
            None => Ok(LedgerTarget::Sqlite { data_dir }),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(LedgerTarget::Postgres {
                    url: url.to_owned(),
                })
            }
            Some(_) => Err("ledger must be a postgres:// URL (leave it out for the SQLite file in the data directory)".into()),
        }
    }

    /// For logs: the URL without its password and without its query (which may hold one).
    pub fn describe(&self) -> String {
        match self {
            LedgerTarget::Sqlite { data_dir } => {
                format!("sqlite:{}", data_dir.join(sql::SQLITE_FILE_NAME).display())
            }
            LedgerTarget::Postgres { url } => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
                let rest = rest.split_once('?').map_or(rest, |(path, _)| path);
                match rest.rsplit_once('@') {
                    Some((userinfo, host)) => {
                        let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                        format!("{scheme}://{user}@{host}")
                    }
                    None => format!("{scheme}://{rest}"),
                }
            }
        }
    }
}

/// Why a ledger call failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database did not answer or refused the statement; a retry may succeed.
    #[error("ledger database: {0}")]
    Database(String),
    /// The database holds something this version cannot read: a retry will not help.
    #[error("ledger holds unreadable data: {0}")]
    Corrupt(String),
}

impl From<LedgerError> for crate::record::SourceError {
    fn from(error: LedgerError) -> crate::record::SourceError {
        crate::record::SourceError(error.to_string())
    }
}

impl LedgerError {
    pub fn is_transient(&self) -> bool {
        matches!(self, LedgerError::Database(_))
    }
}

/// What a change written to the ledger was about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Grant,
    Void,
    Price,
}

/// One change for the store to apply, in the order the ledger recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub kind: ChangeKind,
    pub account: Option<AccountId>,
    /// The grant id or feature the change is about.
    pub key: String,
}

/// How usage is grouped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsageGroup {
    /// One total.
    Total,
    Feature,
    Model,
    Wallet,
    /// By the value of one label, e.g. `project` or `task`.
    Label(String),
}

/// Spend of one account over a time window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageQuery {
    pub account: AccountId,
    /// Inclusive.
    pub since_ms: i64,
    /// Exclusive.
    pub until_ms: i64,
    pub group: UsageGroup,
    /// Only entries carrying this label with this value, e.g. `task=42`.
    pub label: Option<(String, String)>,
}

/// Spend of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// The group's value; `None` for the total, or for entries without the grouped field.
    pub key: Option<String>,
    pub amount_minor: i64,
    /// Commits and charges counted.
    pub count: i64,
}

/// The durable record. See the module documentation.
/// A commit or charge that a grant may refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refundable {
    pub wallet: WalletId,
    pub amount_minor: i64,
    /// What earlier grants refunded of it.
    pub refunded_minor: i64,
}

/// Which events a webhook endpoint is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRoute {
    /// The endpoint's name in the configuration.
    pub endpoint: String,
    /// Empty: every kind.
    pub kinds: Vec<WalletEventKind>,
}

impl WebhookRoute {
    pub fn wants(&self, kind: WalletEventKind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }
}

/// A webhook delivery due: an event, for one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub event: WalletEvent,
    pub endpoint: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// Until when it is taken; its outcome is recorded only while it still is.
    pub lease_until_ms: i64,
}

/// The outcome of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Not delivered: why, and when to try again (`None`: given up).
    Failed {
        error: String,
        retry_at_ms: Option<i64>,
    },
}

/// Where one event's delivery to one endpoint stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryState {
    pub endpoint: String,
    pub attempts: u32,
    pub delivered_at_ms: Option<i64>,
    /// When it is tried next; `None` once delivered or given up.
    pub next_attempt_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// An event as the ledger keeps it: its deliveries, and for a top-up request, the grant that
/// answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub event: WalletEvent,
    pub deliveries: Vec<DeliveryState>,
    pub answered_by: Option<String>,
}

/// What [`Ledger::append`] did not write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Records the store lost before the ledger had them: what they did happened nowhere.
    pub stale: Vec<OutboxPosition>,
}

#[async_trait]
pub trait Ledger: AccountSource {
    /// Writes outbox records in one transaction, in order. Writing a record twice changes
    /// nothing: entries are unique by id and state records keep their latest version. A record
    /// the store lost before the ledger had it (one of an older epoch than the one its account
    /// was loaded into the store in since, see [`AccountSource::load_for_store`]) is not written: the
    /// answer names it, so that whoever waits for it learns that it did not happen.
    async fn append(&self, records: &[OutboxRecord]) -> Result<Appended, LedgerError>;

    /// Accounts as the store should hold them (all of them, or only `only`): grants with what
    /// remains of them, open holds, and the holds and replies of the last `retention_ms`.
    async fn load_accounts(
        &self,
        only: Option<&AccountId>,
        now_ms: i64,
        retention_ms: i64,
    ) -> Result<Vec<AccountSnapshot>, LedgerError>;

    async fn account(&self, account: &AccountId) -> Result<Option<Account>, LedgerError>;

    /// A grant as it was granted (amount, terms, void), without what was spent of it.
    async fn grant(
        &self,
        account: &AccountId,
        grant: &GrantId,
    ) -> Result<Option<Grant>, LedgerError>;

    /// Sets the prices of the given features, leaving others as they are.
    async fn put_prices(&self, prices: &[FeaturePrice], at_ms: i64) -> Result<(), LedgerError>;

    /// The whole price catalog.
    async fn prices(&self) -> Result<Vec<FeaturePrice>, LedgerError>;

    /// The newest `limit` entries of an account, newest first.
    async fn entries(
        &self,
        account: &AccountId,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, LedgerError>;

    /// Whether the ledger has the entry with this id.
    async fn has_entry(&self, id: &str) -> Result<bool, LedgerError>;

    /// A commit or charge of an account and what has been refunded of it so far.
    async fn refundable(
        &self,
        account: &AccountId,
        entry_id: &str,
    ) -> Result<Option<Refundable>, LedgerError>;

    /// The version of a hold the ledger has, if it has the hold.
    async fn hold_version(&self, id: &ReservationId) -> Result<Option<u64>, LedgerError>;

    /// Spend (commits and charges) grouped as asked, largest first.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, LedgerError>;

    /// Changes after `after`, plus those numbered in `gaps` (numbers skipped earlier, which a
    /// transaction still open may yet fill), oldest first.
    async fn changes(
        &self,
        after: i64,
        gaps: &[i64],
        limit: usize,
    ) -> Result<Vec<Change>, LedgerError>;

    /// The number of the newest change: where a store rebuilt now starts reading changes.
    async fn last_change(&self) -> Result<i64, LedgerError>;

    /// Takes up to `limit` webhook deliveries to `endpoints` due at `now_ms` (not delivered,
    /// fewer than `attempts_max` attempts, not taken by another replica), oldest due first,
    /// and keeps them from other replicas until `lease_until_ms`.
    async fn claim_deliveries(
        &self,
        endpoints: &[String],
        now_ms: i64,
        lease_until_ms: i64,
        attempts_max: u32,
        limit: usize,
    ) -> Result<Vec<Delivery>, LedgerError>;

    /// Records a delivery attempt and frees the delivery for whoever tries it next; nothing if
    /// the lease ran out and another replica took it meanwhile.
    async fn record_delivery(
        &self,
        delivery: &Delivery,
        attempt: &Attempt,
        now_ms: i64,
    ) -> Result<(), LedgerError>;

    /// An account's newest `limit` events, newest first, with their deliveries.
    async fn events(
        &self,
        account: &AccountId,
        limit: usize,
    ) -> Result<Vec<EventRecord>, LedgerError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_described_url_names_its_user_but_not_its_password() {
        for (url, described) in [
            ("postgres://cg@db:5432/cg", "postgres://cg@db:5432/cg"),
            ("postgres://cg:s3cr@t@db/cg", "postgres://cg@db/cg"),
            ("postgresql://db/cg?password=x", "postgresql://db/cg"),
            (
                "postgres://cg:pw@db/cg?sslmode=require",
                "postgres://cg@db/cg",
            ),
        ] {
            let target = LedgerTarget::Postgres { url: url.into() };
            assert_eq!(target.describe(), described, "{url}");
        }
    }
}
