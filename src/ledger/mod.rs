//! The ledger: the authoritative, durable record of accounts, grants, prices and every money
//! movement. The store is rebuilt from it on start; the sync loop feeds it from the store's
//! outbox.
//!
//! Implementations: [`sqlite::SqliteLedger`], a file under the data directory (the embedded
//! default).

pub mod sqlite;

use async_trait::async_trait;

use crate::domain::{AccountId, FeaturePrice};
use crate::store::AccountSnapshot;
use crate::store::outbox::{LedgerEntry, OutboxRecord};

/// Most entries one listing returns.
pub const ENTRIES_LIMIT_MAX: usize = 1_000;

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

impl LedgerError {
    pub fn is_transient(&self) -> bool {
        matches!(self, LedgerError::Database(_))
    }
}

/// The durable record. See the module documentation.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Writes outbox records in one transaction, in order. Writing a record twice changes
    /// nothing: entries are unique by id and state records keep their latest version.
    async fn append(&self, records: &[OutboxRecord]) -> Result<(), LedgerError>;

    /// Every account as the store should hold it: grants with what remains of them, open
    /// holds, and the holds and replies of the last `retention_ms` before `now_ms`.
    async fn load_accounts(
        &self,
        now_ms: i64,
        retention_ms: i64,
    ) -> Result<Vec<AccountSnapshot>, LedgerError>;

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
}
