//! What the store and the ledger exchange, below both (neither imports the other): the outbox
//! records a store operation tells the ledger, written in the same atomic step as the balance
//! change and carried to the ledger by the sync loop; the snapshots of accounts the ledger
//! rebuilds a store from; and [`AccountSource`], the one thing a store asks of the ledger.
//!
//! Ledger entries (grants, voids, commits, charges) are money movements: append-only, each with a
//! unique id so that writing one twice is harmless. Account, hold and idempotency records are the
//! state the store needs to be rebuilt after a restart; the ledger keeps their latest version.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::alert::WalletAlerts;
use crate::domain::entry_id;
use crate::domain::period::Reset;
use crate::domain::{
    Account, AccountId, ChargeReceipt, ExtendReceipt, FeatureId, Grant, GrantId, Hold,
    IdempotencyKey, Labels, LimitState, ModelId, Portion, Postpaid, ReservationId, ReserveReceipt,
    SpendLimit, Usage, WalletEvent, WalletId,
};

/// What a ledger entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Credits added to a wallet.
    Grant,
    /// The unheld remainder of a grant taken away.
    Void,
    /// A hold charged.
    Commit,
    /// A one-shot charge.
    Charge,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::Void => "void",
            EntryKind::Commit => "commit",
            EntryKind::Charge => "charge",
        }
    }

    pub fn parse(text: &str) -> Option<EntryKind> {
        match text {
            "grant" => Some(EntryKind::Grant),
            "void" => Some(EntryKind::Void),
            "commit" => Some(EntryKind::Commit),
            "charge" => Some(EntryKind::Charge),
            _ => None,
        }
    }
}

/// One money movement, as the ledger keeps it forever.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Unique; the ledger ignores a second write of the same id.
    pub id: String,
    pub kind: EntryKind,
    pub account: AccountId,
    pub wallet: WalletId,
    pub feature: Option<FeatureId>,
    /// Model of the usage charged, for usage by model.
    pub model: Option<ModelId>,
    /// Usage the amount was priced from, when it was priced from usage.
    pub usage: Option<Usage>,
    pub amount_minor: i64,
    /// For commits and charges, what each grant paid; for voids, the grant's remainder.
    pub split: Vec<Portion>,
    pub reservation: Option<ReservationId>,
    pub grant: Option<GrantId>,
    pub idempotency_key: Option<IdempotencyKey>,
    pub labels: Labels,
    /// Reason given for a void or an adjustment.
    pub reason: Option<String>,
    /// For a commit, how far it asked to charge beyond its hold (what was charged of that is
    /// in `amount_minor` and `split`, as the feature's overrun policy decided).
    #[serde(default)]
    pub overrun_minor: i64,
    /// For a grant that refunds a commit or charge: that entry's id.
    #[serde(default)]
    pub refund_of: Option<String>,
    /// The store's clock when the movement happened.
    pub at_ms: i64,
}

/// A reply kept for an idempotency key, returned as is when the same request comes again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Reserve(ReserveReceipt),
    Extend(ExtendReceipt),
    Charge(ChargeReceipt),
}

/// An idempotency key with the request it was used for and the reply it got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub account: AccountId,
    pub key: IdempotencyKey,
    pub fingerprint: String,
    pub reply: Reply,
    pub at_ms: i64,
}

/// What the store tells the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxEntry {
    /// An account as it now is.
    Account(Account),
    /// A new grant and its ledger entry, and the top-up request it answers.
    Grant {
        grant: Grant,
        entry: LedgerEntry,
        #[serde(default)]
        answers: Option<String>,
    },
    /// A grant voided and its ledger entry.
    Void { entry: LedgerEntry },
    /// A recurring grant moved into a new period: its lapsed credit (a void entry, when any)
    /// and its new allowance (a grant entry).
    Reset {
        account: AccountId,
        grant: GrantId,
        period_index: i64,
        /// What the grant had when the period started.
        granted_minor: i64,
        entries: Vec<LedgerEntry>,
    },
    /// A spend limit set (or removed): `since_ms` is when it was first set.
    Limit {
        account: AccountId,
        limit: SpendLimit,
        since_ms: i64,
        removed: bool,
        at_ms: i64,
    },
    /// A wallet's flex cap as it now is.
    Wallet {
        account: AccountId,
        wallet: WalletId,
        flex_cap_minor: i64,
        at_ms: i64,
    },
    /// A commit or charge.
    Charge(LedgerEntry),
    /// A hold as it now is (taken, extended or ended).
    Hold(Hold),
    /// An idempotent reply to keep.
    Remember(Remembered),
    /// Something subscribers and webhooks are told of.
    Event(WalletEvent),
    /// A wallet's thresholds and auto top-up policy as they now are, and which thresholds
    /// may fire.
    Alerts {
        account: AccountId,
        wallet: WalletId,
        alerts: WalletAlerts,
        armed: Vec<bool>,
        at_ms: i64,
    },
    /// Which of a wallet's thresholds may fire, after some fired or were re-armed.
    AlertsArmed {
        account: AccountId,
        wallet: WalletId,
        armed: Vec<bool>,
        at_ms: i64,
    },
}

impl OutboxEntry {
    /// The account the entry is about.
    pub fn account(&self) -> Option<&AccountId> {
        match self {
            OutboxEntry::Account(account) => Some(&account.id),
            OutboxEntry::Grant { entry, .. }
            | OutboxEntry::Void { entry }
            | OutboxEntry::Charge(entry) => Some(&entry.account),
            OutboxEntry::Reset { account, .. }
            | OutboxEntry::Limit { account, .. }
            | OutboxEntry::Wallet { account, .. }
            | OutboxEntry::Alerts { account, .. }
            | OutboxEntry::AlertsArmed { account, .. } => Some(account),
            OutboxEntry::Hold(hold) => Some(hold.account()),
            OutboxEntry::Remember(remembered) => Some(&remembered.account),
            OutboxEntry::Event(event) => Some(&event.account),
        }
    }

    /// What the ledger is told when `grant` (already reset) moved into a new period. The
    /// entries are dated at the period's start, so every store writes the same ones.
    pub fn reset(account: &AccountId, grant: &Grant, reset: &Reset) -> OutboxEntry {
        let start_ms = grant.period_bounds_ms().map_or(0, |(start_ms, _)| start_ms);
        let id = &grant.terms.id;
        let entry = |kind, entry_id: String, amount_minor, split: Vec<Portion>, reason: String| {
            LedgerEntry {
                id: entry_id,
                kind,
                account: account.clone(),
                wallet: grant.terms.wallet.clone(),
                feature: None,
                model: None,
                usage: None,
                amount_minor,
                split,
                reservation: None,
                grant: Some(id.clone()),
                idempotency_key: None,
                labels: Labels::new(),
                reason: Some(reason),
                overrun_minor: 0,
                refund_of: None,
                at_ms: start_ms,
            }
        };
        let mut entries = Vec::new();
        if reset.lapsed_minor > 0 {
            entries.push(entry(
                EntryKind::Void,
                entry_id::lapse(account, id, reset.index),
                reset.lapsed_minor,
                vec![Portion {
                    grant: id.clone(),
                    amount_minor: reset.lapsed_minor,
                }],
                "unused allowance lapsed at the end of its period".into(),
            ));
        }
        entries.push(entry(
            EntryKind::Grant,
            entry_id::refill(account, id, reset.index),
            reset.refilled_minor,
            Vec::new(),
            format!("allowance for period {}", reset.index),
        ));
        OutboxEntry::Reset {
            account: account.clone(),
            grant: id.clone(),
            period_index: reset.index,
            granted_minor: grant.granted_minor(),
            entries,
        }
    }
}

/// Where an outbox record is, to acknowledge it once the ledger has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxPosition {
    /// In the in-process outbox, which numbers its records.
    Seq(u64),
    /// In the outbox stream of a Redis partition, written in the partition's `epoch`: the
    /// incarnation of the partition's keys, new whenever Redis lost them (see
    /// [`OutboxRecord::epoch`]).
    Stream {
        partition: u32,
        id: String,
        epoch: Option<String>,
    },
}

impl OutboxPosition {
    pub fn seq(&self) -> Option<u64> {
        match self {
            OutboxPosition::Seq(seq) => Some(*seq),
            OutboxPosition::Stream { .. } => None,
        }
    }

    /// Where the record stands in its outbox: records of one partition in the order they
    /// were written (a stream id `<ms>-<n>` compared as numbers).
    pub fn order(&self) -> (u32, u64, u64) {
        match self {
            OutboxPosition::Seq(seq) => (0, *seq, 0),
            OutboxPosition::Stream { partition, id, .. } => {
                let (ms, n) = id.split_once('-').unwrap_or((id, "0"));
                (*partition, ms.parse().unwrap_or(0), n.parse().unwrap_or(0))
            }
        }
    }
}

/// Everything one store operation tells the ledger, at one position: positions only grow. The
/// ledger writes a record's entries in one transaction, so an operation never reaches it half.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRecord {
    pub position: OutboxPosition,
    /// The store's clock when the operation happened; the age of the oldest record is the lag.
    pub at_ms: i64,
    pub entries: Vec<OutboxEntry>,
}

impl OutboxRecord {
    /// The account the record is about: a store operation touches one account.
    pub fn account(&self) -> Option<&AccountId> {
        self.entries.iter().find_map(OutboxEntry::account)
    }

    /// The incarnation of the store's keys the record was written in, when the store can lose
    /// its keys (Redis). A record of an older incarnation than the one an account was last
    /// loaded into the store in describes something the store no longer has: the ledger drops
    /// it instead of writing it (see [`AccountSource::load_for_store`]).
    pub fn epoch(&self) -> Option<&str> {
        match &self.position {
            OutboxPosition::Stream { epoch, .. } => epoch.as_deref(),
            OutboxPosition::Seq(_) => None,
        }
    }
}

/// A wallet's alerts as the ledger keeps them: the policy, and the top-up requests made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertsSnapshot {
    pub wallet: WalletId,
    pub alerts: WalletAlerts,
    /// Per rule, whether it may fire (it has not fired since it was last re-armed).
    pub armed: Vec<bool>,
    /// The top-up request not answered yet.
    pub open_top_up: Option<String>,
    /// How many top-up requests the wallet has made.
    pub top_ups: u64,
}

impl AlertsSnapshot {
    /// Nothing set and nothing ever asked: a store keeps no alerts for such a wallet.
    pub fn is_empty(&self) -> bool {
        self.alerts.rules.is_empty()
            && self.alerts.top_up.is_none()
            && self.open_top_up.is_none()
            && self.top_ups == 0
    }
}

/// Everything a store keeps of one account, as rebuilt from the ledger on start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountSnapshot {
    pub account: Option<Account>,
    /// Grants with their remaining amounts; held amounts are recomputed from `holds`.
    pub grants: Vec<Grant>,
    /// Flex and debt of each wallet that has any, in wallet order; flex held is recomputed
    /// from `holds`.
    pub postpaid: Vec<(WalletId, Postpaid)>,
    /// Spend limits by id; what they hold is recomputed from `holds`.
    pub limits: Vec<LimitState>,
    /// Open holds, and ended ones still remembered for repeated commits and releases.
    pub holds: Vec<Hold>,
    /// Idempotent replies still within the retention period.
    pub remembered: Vec<Remembered>,
    /// Thresholds and auto top-up of wallets that have any, in wallet order.
    pub alerts: Vec<AlertsSnapshot>,
}

/// Why the ledger could not give a store what it asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ledger: {0}")]
pub struct SourceError(pub String);

/// Where a store that lost accounts (Redis, after losing its keys) loads them from: the
/// ledger, seen only through what the store needs of it.
#[async_trait]
pub trait AccountSource: Send + Sync + 'static {
    /// One account as the store should hold it, noted in the ledger as loaded in `epoch` (the
    /// incarnation of the store's keys), in one step with respect to the ledger's writes: a
    /// record of the account from an older epoch is either in what is read or, once read,
    /// never written. `None` when the ledger does not have the account.
    async fn load_for_store(
        &self,
        account: &AccountId,
        epoch: &str,
        now_ms: i64,
        retention_ms: i64,
    ) -> Result<Option<AccountSnapshot>, SourceError>;

    /// Up to `limit` accounts that have open holds, in id order after `after`: those a store
    /// that lost its keys must load again for their holds to expire.
    async fn accounts_with_open_holds(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountId>, SourceError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_records_are_ordered_by_partition_then_id_as_numbers() {
        let at = |partition, id: &str| OutboxPosition::Stream {
            partition,
            id: id.to_owned(),
            epoch: None,
        };
        let mut positions = vec![
            at(1, "1700000000000-0"),
            at(0, "1700000000001-0"),
            at(0, "1700000000000-10"),
            at(0, "1700000000000-9"),
        ];
        positions.sort_by_key(OutboxPosition::order);
        assert_eq!(
            positions,
            vec![
                at(0, "1700000000000-9"),
                at(0, "1700000000000-10"),
                at(0, "1700000000001-0"),
                at(1, "1700000000000-0"),
            ]
        );
        assert!(OutboxPosition::Seq(2).order() > OutboxPosition::Seq(1).order());
    }
}
