//! The fields every gate answer shares: the decision, why a denial, what is available and the
//! message; each decision counted for the metrics on the way.

use super::money;
use crate::domain::{AccountId, Decision, Denial, DenyReason};
use crate::proto;

pub fn deny_reason(reason: DenyReason) -> proto::DenyReason {
    match reason {
        DenyReason::InsufficientCredits => proto::DenyReason::InsufficientCredits,
        DenyReason::FeatureNotAllowed => proto::DenyReason::FeatureNotAllowed,
        DenyReason::AccountNotFound => proto::DenyReason::AccountNotFound,
        DenyReason::AccountSuspended => proto::DenyReason::AccountSuspended,
        DenyReason::SpendLimitReached => proto::DenyReason::SpendLimitReached,
    }
}

/// The decision, reason, available balance and message fields shared by every gate answer.
pub struct Verdict {
    pub decision: i32,
    pub reason: i32,
    pub available: String,
    pub message: String,
    pub limit: String,
}

/// Counts a decision of `rpc` for the metrics.
pub fn count_decision<T>(rpc: &'static str, decision: &Decision<T>) {
    let (outcome, reason) = match decision {
        Decision::Allowed(_) => ("allowed", "none"),
        Decision::Denied(denial) => ("denied", denial.reason.as_str()),
    };
    metrics::counter!(
        crate::telemetry::DECISIONS_TOTAL,
        "rpc" => rpc, "decision" => outcome, "reason" => reason
    )
    .increment(1);
}

/// The fields shared by every gate answer, for `rpc`; counts the decision for the metrics.
pub fn verdict<T>(
    rpc: &'static str,
    account: &AccountId,
    decision: &Decision<T>,
    available: impl Fn(&T) -> i64,
) -> Verdict {
    count_decision(rpc, decision);
    match decision {
        Decision::Allowed(value) => Verdict {
            decision: proto::Decision::Allowed as i32,
            reason: proto::DenyReason::Unspecified as i32,
            available: money(available(value)),
            message: String::new(),
            limit: String::new(),
        },
        Decision::Denied(Denial {
            reason,
            available_minor,
            limit,
        }) => Verdict {
            decision: proto::Decision::Denied as i32,
            reason: deny_reason(*reason) as i32,
            available: money(*available_minor),
            message: match limit {
                Some(limit) => format!(
                    "spend limit {limit} of account {account} allows only {} more",
                    money(*available_minor)
                ),
                None => reason.explain(account),
            },
            limit: limit.clone().unwrap_or_default(),
        },
    }
}
