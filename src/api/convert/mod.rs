//! Proto ⇄ domain, in one place. Parsing names the field at fault in every error, so that a
//! malformed request is refused with `INVALID_ARGUMENT` before anything else happens.
//!
//! Each request field's parser is here; the messages are by family: `verdict.rs` (what every
//! gate answer shares), `balance.rs` (grants, limits, wallets), `alerts.rs` (alerts and
//! events), `prices.rs`, and `account.rs` (accounts, entries, usage and reconciliation).

use std::collections::HashMap;

use crate::domain::ids::check_labels;
use crate::domain::{
    AccountId, Amount, FeatureId, IdempotencyKey, Labels, ModelId, Portion, ReservationId, Units,
    Usage, WalletId, format_minor,
};
use crate::gate::{Cost, GateError};
use crate::proto;

mod account;
mod alerts;
mod balance;
mod prices;
mod verdict;

pub use account::{account_status, account_to_proto, entry, reconcile_report, usage_group};
pub use alerts::{alerts_request, balance_event, event_record, wallet_alerts};
pub use balance::{grant, grant_kind, limit_change, recurrence, spend_limit, wallet_balance};
pub use prices::{feature_price, feature_price_to_proto};
pub use verdict::{Verdict, count_decision, deny_reason, verdict};

/// Parses a required field with `parse`, naming it on failure.
pub fn required<T, E: ToString>(
    field: &str,
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, GateError> {
    parse(text).map_err(|e| GateError::invalid(field, e))
}

/// Parses an optional field: empty means absent.
pub fn optional<T, E: ToString>(
    field: &str,
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, GateError> {
    if text.is_empty() {
        return Ok(None);
    }
    required(field, text, parse).map(Some)
}

pub fn account(text: &str) -> Result<AccountId, GateError> {
    required("account_id", text, AccountId::parse)
}

pub fn feature(text: &str) -> Result<FeatureId, GateError> {
    required("feature", text, FeatureId::parse)
}

pub fn wallet(text: &str) -> Result<Option<WalletId>, GateError> {
    optional("wallet", text, WalletId::parse)
}

pub fn reservation(text: &str) -> Result<ReservationId, GateError> {
    required("reservation_id", text, ReservationId::parse)
}

pub fn idempotency_key(text: &str) -> Result<Option<IdempotencyKey>, GateError> {
    optional("idempotency_key", text, IdempotencyKey::parse)
}

pub fn amount(field: &str, text: &str) -> Result<Amount, GateError> {
    required(field, text, Amount::parse)
}

pub fn ttl_ms(value: u64) -> Option<u64> {
    (value != 0).then_some(value)
}

pub fn labels(labels: &HashMap<String, String>) -> Result<Labels, GateError> {
    check_labels(labels.iter()).map_err(|(key, error)| {
        if key.is_empty() {
            GateError::invalid("labels", error)
        } else {
            GateError::invalid(format!("labels[{key}]"), error)
        }
    })
}

pub fn usage(usage: &proto::Usage) -> Result<Usage, GateError> {
    Ok(Usage {
        units: optional("usage.units", &usage.units, Units::parse)?,
        model: optional("usage.model", &usage.model, ModelId::parse)?,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cached_input_tokens: usage.cached_input_tokens,
    })
}

/// A `cost` oneof: an amount or usage. Absent is an error naming both fields.
pub fn cost(amount: Option<&String>, usage: Option<&proto::Usage>) -> Result<Cost, GateError> {
    match (amount, usage) {
        (Some(text), _) => Ok(Cost::Amount(self::amount("amount", text)?)),
        (None, Some(u)) => Ok(Cost::Usage(self::usage(u)?)),
        (None, None) => Err(GateError::invalid(
            "amount",
            "one of amount or usage is required",
        )),
    }
}

/// The minimum of a partial hold: one millionth unless given; none without `allow_partial`.
pub fn partial_min(allow_partial: bool, min_amount: &str) -> Result<Option<Amount>, GateError> {
    match (allow_partial, min_amount.is_empty()) {
        (false, true) => Ok(None),
        (false, false) => Err(GateError::invalid(
            "min_amount",
            "is only for a partial hold (allow_partial)",
        )),
        (true, true) => Ok(Some(Amount::from_minor(1))),
        (true, false) => amount("min_amount", min_amount).map(Some),
    }
}

pub fn money(minor: i64) -> String {
    format_minor(minor)
}

pub fn split(split: &[Portion]) -> Vec<proto::GrantPortion> {
    split
        .iter()
        .map(|p| proto::GrantPortion {
            grant_id: p.grant.to_string(),
            amount: money(p.amount_minor),
        })
        .collect()
}
