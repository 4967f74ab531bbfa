//! An account and what the ledger keeps of it: its status, its entries, how usage is grouped,
//! and how it reconciled.

use super::{money, split};
use crate::domain::{Account, AccountId, AccountStatus, FeatureId, GrantId};
use crate::gate::GateError;
use crate::proto;
use crate::record::{EntryKind, LedgerEntry};

pub fn account_status(status: i32) -> Result<AccountStatus, GateError> {
    match proto::AccountStatus::try_from(status) {
        Ok(proto::AccountStatus::Unspecified | proto::AccountStatus::Active) => {
            Ok(AccountStatus::Active)
        }
        Ok(proto::AccountStatus::Suspended) => Ok(AccountStatus::Suspended),
        Err(_) => Err(GateError::invalid(
            "status",
            format!("unknown account status {status}"),
        )),
    }
}

pub fn account_to_proto(account: &Account) -> proto::Account {
    let status = match account.status {
        AccountStatus::Active => proto::AccountStatus::Active,
        AccountStatus::Suspended => proto::AccountStatus::Suspended,
    };
    proto::Account {
        account_id: account.id.to_string(),
        display_name: account.display_name.clone(),
        status: status as i32,
        created_at_ms: account.created_at_ms,
    }
}

pub fn entry(entry: &LedgerEntry) -> proto::LedgerEntry {
    let kind = match entry.kind {
        EntryKind::Grant => proto::EntryKind::Grant,
        EntryKind::Void => proto::EntryKind::Void,
        EntryKind::Commit => proto::EntryKind::Commit,
        EntryKind::Charge => proto::EntryKind::Charge,
    };
    proto::LedgerEntry {
        entry_id: entry.id.clone(),
        kind: kind as i32,
        account_id: entry.account.to_string(),
        wallet: entry.wallet.to_string(),
        feature: entry
            .feature
            .as_ref()
            .map(|f| f.to_string())
            .unwrap_or_default(),
        amount: money(entry.amount_minor),
        split: split(&entry.split),
        reservation_id: entry
            .reservation
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_default(),
        grant_id: entry
            .grant
            .as_ref()
            .map(GrantId::to_string)
            .unwrap_or_default(),
        idempotency_key: entry
            .idempotency_key
            .as_ref()
            .map(|k| k.as_str().to_owned())
            .unwrap_or_default(),
        labels: entry.labels.clone().into_iter().collect(),
        at_ms: entry.at_ms,
        overrun: money(entry.overrun_minor),
        refund_of: entry.refund_of.clone().unwrap_or_default(),
        model: entry
            .model
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        reason: entry.reason.clone().unwrap_or_default(),
    }
}

/// `feature`, `model`, `wallet`, `label:NAME`, or empty for the total.
pub fn usage_group(text: &str) -> Result<crate::ledger::UsageGroup, GateError> {
    use crate::ledger::UsageGroup;
    match text {
        "" => Ok(UsageGroup::Total),
        "feature" => Ok(UsageGroup::Feature),
        "model" => Ok(UsageGroup::Model),
        "wallet" => Ok(UsageGroup::Wallet),
        other => match other.strip_prefix("label:") {
            Some(name) if FeatureId::parse(name).is_ok() => Ok(UsageGroup::Label(name.to_owned())),
            _ => Err(GateError::invalid(
                "group_by",
                "must be feature, model, wallet or label:NAME",
            )),
        },
    }
}

pub fn reconcile_report(
    account: &AccountId,
    comparison: &crate::reconcile::Comparison,
) -> proto::AccountReconcile {
    use crate::reconcile::Comparison;
    let (outcome, rebuilt, wallets) = match comparison {
        Comparison::Compared { wallets, rebuilt } => (
            proto::ReconcileOutcome::Compared,
            *rebuilt,
            wallets.as_slice(),
        ),
        Comparison::Busy => (proto::ReconcileOutcome::Busy, false, &[][..]),
        Comparison::Missing => (proto::ReconcileOutcome::Missing, false, &[][..]),
    };
    proto::AccountReconcile {
        account_id: account.to_string(),
        outcome: outcome as i32,
        rebuilt,
        wallets: wallets
            .iter()
            .map(|w| proto::WalletReconcile {
                wallet: w.wallet.to_string(),
                store_remaining: money(w.store_remaining_minor),
                ledger_remaining: money(w.ledger_remaining_minor),
                store_held: money(w.store_held_minor),
                ledger_held: money(w.ledger_held_minor),
                drift: money(w.drift_minor()),
            })
            .collect(),
    }
}
