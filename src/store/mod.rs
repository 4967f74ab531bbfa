//! The balance store: where holds and balances live, changed one atomic step per operation.
//!
//! [`BalanceStore`] is the seam between the rules in [`crate::gate`] and the storage that every
//! replica shares, in parts by who calls them: [`Spending`] (the gate, on every call),
//! [`AccountAdmin`] (the Admin API), [`Expiry`] (the sweep), [`Rebuild`] (start and reconcile)
//! and [`OutboxStore`] (the sync loop). Each method is one atomic operation on one account: it
//! validates everything it needs, applies the change, and appends the matching outbox records
//! ([`crate::record`]) in the same step, so a charge and its ledger record cannot part. The
//! store's own clock decides expiry.
//!
//! Implementations: [`memory::MemoryStore`], the embedded default and the reference semantics.

pub mod memory;
pub mod redis;

pub use crate::domain::decision::{
    ChargeReceipt, CheckReceipt, CommitReceipt, Decision, Denial, ExtendReceipt, GrantReceipt,
    ReleaseReceipt, ReserveReceipt, VoidReceipt,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::domain::alert::WalletAlerts;
use crate::domain::{
    Account, AccountId, AccountStatus, FeatureId, Grant, GrantId, GrantTerms, Hold, HoldState,
    IdempotencyKey, Labels, LimitState, LimitWindow, ModelId, OverrunPolicy, Postpaid, PriceRule,
    ReservationId, StopRule, Usage, WalletId,
};
pub use crate::record::{AccountSnapshot, AlertsSnapshot};
use crate::record::{OutboxPosition, OutboxRecord};

/// A caller's idempotency key and the canonical form of the request it was first used with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    /// Equal fingerprints mean equal requests; see [`crate::gate`].
    pub fingerprint: String,
}

/// Sets aside `amount_minor` of a wallet for a feature.
#[derive(Clone, Debug)]
pub struct ReserveOp {
    /// Chosen by the caller of the store so that a store needs no randomness.
    pub id: ReservationId,
    pub wallet: WalletId,
    pub feature: FeatureId,
    pub amount_minor: i64,
    /// The least a partial hold may be: when less than `amount_minor` is available but at
    /// least this, all of it is held. Equal to `amount_minor` for an all-or-nothing hold.
    pub min_amount_minor: i64,
    pub ttl_ms: i64,
    pub labels: Labels,
    pub price: Option<PriceRule>,
    /// What a commit above the hold is charged: the feature's policy when the hold is taken.
    pub overrun: OverrunPolicy,
    /// Whether the hold may be extended once nothing is spendable: the feature's rule when
    /// the hold is taken.
    pub stop: StopRule,
    pub model: Option<ModelId>,
    pub idempotency: Option<Idempotency>,
}

/// Charges `amount_minor` of a hold and releases the rest; an amount above the hold is charged
/// as the hold's overrun policy says.
#[derive(Clone, Debug)]
pub struct CommitOp {
    pub id: ReservationId,
    pub amount_minor: i64,
    /// Used only if this commit is the first; a repeated commit returns the first entry id.
    pub entry_id: String,
    /// The usage the amount was priced from, kept in the ledger entry.
    pub usage: Option<Usage>,
}

/// Adds to a hold and/or moves its expiry later.
#[derive(Clone, Debug)]
pub struct ExtendOp {
    pub id: ReservationId,
    pub additional_minor: i64,
    /// New time to live from now; the expiry never moves earlier.
    pub ttl_ms: Option<i64>,
    pub idempotency: Option<Idempotency>,
}

/// Debits `amount_minor` in one step.
#[derive(Clone, Debug)]
pub struct ChargeOp {
    pub account: AccountId,
    pub wallet: WalletId,
    pub feature: FeatureId,
    pub amount_minor: i64,
    pub labels: Labels,
    pub entry_id: String,
    /// The usage the amount was priced from, kept in the ledger entry.
    pub usage: Option<Usage>,
    pub idempotency: Option<Idempotency>,
}

/// Creates or updates an account.
#[derive(Clone, Debug)]
pub struct AccountUpdate {
    pub id: AccountId,
    pub display_name: String,
    pub status: AccountStatus,
}

/// How a new grant is recorded in the ledger.
#[derive(Clone, Debug, Default)]
pub struct GrantEntry {
    /// The entry's id; a repeated grant writes no second entry.
    pub id: String,
    /// Why an operator added the credit (an adjustment, a goodwill credit).
    pub reason: Option<String>,
    /// The commit or charge this credit refunds.
    pub refund_of: Option<String>,
    /// The top-up request this grant answers, which it closes.
    pub answers: Option<String>,
}

impl From<String> for GrantEntry {
    fn from(id: String) -> GrantEntry {
        GrantEntry {
            id,
            ..GrantEntry::default()
        }
    }
}

/// Sets a spend limit (`amount_minor` given) or removes it.
#[derive(Clone, Debug)]
pub struct LimitChange {
    pub label_key: String,
    pub label_value: String,
    pub window: LimitWindow,
    pub amount_minor: Option<i64>,
}

/// A successful store call, and what makes it durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written<T> {
    pub value: T,
    pub durable: Durable,
}

/// What must reach the ledger before a write is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Durable {
    /// Every record of the in-process outbox up to this position.
    UpTo(u64),
    /// This record. A shared store's outbox may be carried to the ledger by any replica, so
    /// the replica that wrote a record writes it to the ledger itself when it must wait.
    Record(Arc<OutboxRecord>),
    /// This ledger entry: a repeated commit or charge whose first call wrote it, and which may
    /// still be on its way through the outbox.
    Entry(String),
    /// This version of a hold (or a newer one): a repeated release or extend.
    HoldVersion { id: ReservationId, version: u64 },
    /// Nothing: the call wrote nothing new.
    Nothing,
}

/// How far the ledger is behind the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Records not yet in the ledger.
    pub records: usize,
    /// How long the oldest of them has waited, by the store's clock; 0 when there is none.
    pub lag_ms: i64,
}

/// What one sweep step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Candidates looked at; when it equals the limit, more may be due.
    pub examined: usize,
    /// Holds expired (candidates may have been extended or ended since they were queued).
    pub expired: usize,
}

/// An account's balances as the store sees them now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountView {
    pub account: Account,
    /// Every wallet, in wallet order; the `default` wallet is always there.
    pub wallets: Vec<WalletView>,
    /// Spend limits, in their current windows, by id.
    pub limits: Vec<LimitState>,
    pub now_ms: i64,
}

/// One wallet of an [`AccountView`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletView {
    pub wallet: WalletId,
    /// Grants that are active or still held.
    pub grants: Vec<Grant>,
    pub postpaid: Postpaid,
    /// Thresholds and auto top-up, if the wallet has any.
    pub alerts: Option<AlertsView>,
}

/// A wallet's thresholds and auto top-up, and where they stand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertsView {
    pub alerts: WalletAlerts,
    /// Per rule, in order: whether it may fire (it has not fired since it was last re-armed).
    pub armed: Vec<bool>,
    /// The top-up request not answered yet.
    pub open_top_up: Option<String>,
}

/// Why a store operation failed. Denials are not errors: see [`Decision`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("reservation {0} does not exist")]
    ReservationNotFound(ReservationId),
    #[error("reservation {id} is already {}", state.as_str())]
    ReservationEnded { id: ReservationId, state: HoldState },
    #[error(
        "reservation {id} was already committed for {committed}, not {requested}",
        committed = crate::domain::format_minor(*committed_minor),
        requested = crate::domain::format_minor(*requested_minor)
    )]
    CommitMismatch {
        id: ReservationId,
        committed_minor: i64,
        requested_minor: i64,
    },
    #[error(
        "idempotency_key: \"{}\" was already used for a different request",
        key.as_str()
    )]
    IdempotencyConflict { key: IdempotencyKey },
    #[error("grant_id: grant {grant} already exists with different terms")]
    GrantConflict { grant: GrantId },
    #[error("grant_id: account {account} has no grant {grant}")]
    GrantNotFound { account: AccountId, grant: GrantId },
    #[error("account {account} already has {max} spend limits")]
    TooManyLimits { account: AccountId, max: usize },
    #[error("account {account} has no spend limit {limit}")]
    LimitNotFound { account: AccountId, limit: String },
    #[error("wallet {wallet} already has {max} active grants")]
    TooManyGrants { wallet: WalletId, max: usize },
    #[error(
        "amount: wallet {wallet} would hold more than {max}",
        max = crate::domain::Amount::max()
    )]
    BalanceTooLarge { wallet: WalletId },
    #[error("account_id: account {0} does not exist")]
    AccountNotFound(AccountId),
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// Data that breaks the store's invariants, e.g. a ledger that does not explain a hold.
    #[error("inconsistent data: {0}")]
    Inconsistent(String),
}

impl StoreError {
    /// Whether the same call may succeed if retried later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// What the gate asks of a store on every call: holds, charges and balances, atomic per
/// account, by the store's clock.
#[async_trait]
pub trait Spending: Send + Sync + 'static {
    /// The store's clock, in Unix milliseconds: the one clock that decides expiry.
    async fn now_ms(&self) -> Result<i64, StoreError>;

    async fn reserve(&self, op: ReserveOp)
    -> Result<Written<Decision<ReserveReceipt>>, StoreError>;

    /// Ends a hold by charging part or all of it. Repeating the same commit returns the first
    /// receipt; a different amount is [`StoreError::CommitMismatch`].
    async fn commit(&self, op: CommitOp) -> Result<Written<CommitReceipt>, StoreError>;

    /// Ends a hold without charging. Repeating it returns the first receipt.
    async fn release(&self, id: &ReservationId) -> Result<Written<ReleaseReceipt>, StoreError>;

    async fn extend(&self, op: ExtendOp) -> Result<Written<Decision<ExtendReceipt>>, StoreError>;

    async fn charge(&self, op: ChargeOp) -> Result<Written<Decision<ChargeReceipt>>, StoreError>;

    /// Whether `amount_minor` could be held for the feature now, with these labels (for the
    /// spend limits); changes nothing.
    async fn check(
        &self,
        account: &AccountId,
        wallet: &WalletId,
        feature: &FeatureId,
        amount_minor: i64,
        labels: &Labels,
    ) -> Result<Decision<CheckReceipt>, StoreError>;

    async fn hold(&self, id: &ReservationId) -> Result<Option<Hold>, StoreError>;

    async fn balance(&self, account: &AccountId) -> Result<Option<AccountView>, StoreError>;
}

/// What the Admin API changes of an account: the account itself, its grants, wallets,
/// alerts and spend limits.
#[async_trait]
pub trait AccountAdmin: Send + Sync + 'static {
    async fn account(&self, account: &AccountId) -> Result<Option<Account>, StoreError>;

    async fn put_account(&self, update: AccountUpdate) -> Result<Written<Account>, StoreError>;

    /// Adds a grant, creating the account if needed. Idempotent by grant id.
    async fn add_grant(
        &self,
        account: &AccountId,
        terms: GrantTerms,
        entry: GrantEntry,
    ) -> Result<Written<GrantReceipt>, StoreError>;

    /// Sets a wallet's flex cap (0 turns flex off), creating the account if needed. Flex
    /// already used stays used; a cap below it only stops new flex spending.
    async fn set_wallet(
        &self,
        account: &AccountId,
        wallet: &WalletId,
        flex_cap_minor: i64,
    ) -> Result<Written<Postpaid>, StoreError>;

    /// Sets a wallet's thresholds and auto top-up policy (replacing what it had), creating
    /// the account if needed. A threshold already passed waits to be re-armed; a top-up is
    /// requested at once if the wallet is below the policy's threshold and none is open.
    async fn set_alerts(
        &self,
        account: &AccountId,
        wallet: &WalletId,
        alerts: WalletAlerts,
    ) -> Result<Written<AlertsView>, StoreError>;

    async fn void_grant(
        &self,
        account: &AccountId,
        grant: &GrantId,
        reason: String,
        entry_id: String,
    ) -> Result<Written<VoidReceipt>, StoreError>;

    /// Sets or removes a spend limit; setting creates the account if needed. A limit set
    /// again keeps what it has counted. Returns the account's limits afterwards.
    async fn set_limit(
        &self,
        account: &AccountId,
        change: LimitChange,
    ) -> Result<Written<Vec<LimitState>>, StoreError>;
}

/// What the expiry sweep asks of a store.
#[async_trait]
pub trait Expiry: Send + Sync + 'static {
    /// Expires holds whose expiry has passed, looking at no more than `limit` candidates.
    async fn expire_due(&self, limit: usize) -> Result<Swept, StoreError>;

    /// Forgets up to `limit` idempotent replies and ended holds older than `retention_ms`;
    /// returns how many it looked at.
    async fn forget_older_than(&self, retention_ms: i64, limit: usize)
    -> Result<usize, StoreError>;
}

/// What rebuilds accounts from the ledger: the start (the in-process store) and reconcile.
#[async_trait]
pub trait Rebuild: Send + Sync + 'static {
    /// Replaces the store's content with accounts rebuilt from the ledger.
    async fn load(&self, accounts: Vec<AccountSnapshot>) -> Result<(), StoreError>;

    /// An account's grants (all of them, with what is held of each) and open holds, sorted, and
    /// the outbox position at that moment: once the ledger has that position, it should
    /// explain this snapshot.
    async fn snapshot(
        &self,
        account: &AccountId,
    ) -> Result<Option<Written<AccountSnapshot>>, StoreError>;

    /// Replaces one account with `snapshot` (rebuilt from the ledger), but only if the store's
    /// own snapshot of it still equals `expected`, so no change made meanwhile is lost.
    /// Returns whether it replaced.
    async fn replace(
        &self,
        snapshot: AccountSnapshot,
        expected: &AccountSnapshot,
    ) -> Result<bool, StoreError>;

    /// Up to `limit` account ids in order, after `after`.
    async fn accounts(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountId>, StoreError>;
}

/// What the sync loop carries from a store to the ledger.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Up to `limit` outbox records not yet acknowledged, oldest first.
    async fn outbox_read(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError>;

    /// Drops outbox records up to and including `seq`: the ledger has them.
    async fn outbox_ack(&self, positions: &[OutboxPosition]) -> Result<(), StoreError>;

    /// How far the ledger is behind the store.
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;

    /// Loads again, from the ledger, what the store must have and lost with its keys: the
    /// accounts with open holds, so that those holds still expire. Called by the sync loop
    /// after every flush; does nothing unless this replica found keys lost since it last
    /// asked. A store that cannot lose its keys has nothing to do.
    async fn heal(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A balance store, as a whole: every part above. See the module documentation. Each part
/// is a trait of its own so that whoever needs one part (the sync loop, the sweep) takes only
/// that part.
pub trait BalanceStore: Spending + AccountAdmin + Expiry + Rebuild + OutboxStore {}

impl<T: Spending + AccountAdmin + Expiry + Rebuild + OutboxStore> BalanceStore for T {}
