//! A wallet's balance and what shapes it: grants (and the AddGrant fields that make one),
//! spend limits (and SetLimit requests), and the wallet with its flex, debt and alerts.

use super::{amount, money, optional, wallet_alerts};
use crate::domain::grant::WalletTotals;
use crate::domain::ids::check_labels;
use crate::domain::{
    Amount, Grant, GrantKind, GrantStatus, Labels, LimitState, LimitWindow, Period, Recurrence,
};
use crate::gate::GateError;
use crate::proto;
use crate::store::{LimitChange, WalletView};

pub fn grant_kind(kind: i32) -> Result<GrantKind, GateError> {
    match proto::GrantKind::try_from(kind) {
        Ok(proto::GrantKind::Unspecified | proto::GrantKind::Prepaid) => Ok(GrantKind::Prepaid),
        Ok(proto::GrantKind::Included) => Ok(GrantKind::Included),
        Ok(proto::GrantKind::Promotional) => Ok(GrantKind::Promotional),
        Err(_) => Err(GateError::invalid(
            "kind",
            format!("unknown grant kind {kind}"),
        )),
    }
}

fn grant_kind_to_proto(kind: GrantKind) -> proto::GrantKind {
    match kind {
        GrantKind::Included => proto::GrantKind::Included,
        GrantKind::Promotional => proto::GrantKind::Promotional,
        GrantKind::Prepaid => proto::GrantKind::Prepaid,
    }
}

/// A grant's recurrence from the AddGrant fields; the others need a period.
pub fn recurrence(
    period: i32,
    anchor_ms: i64,
    rollover_max: &str,
) -> Result<Option<Recurrence>, GateError> {
    let period = match proto::Period::try_from(period) {
        Ok(proto::Period::Unspecified) => None,
        Ok(proto::Period::Month) => Some(Period::Month),
        Ok(proto::Period::Year) => Some(Period::Year),
        Err(_) => {
            return Err(GateError::invalid(
                "period",
                format!("unknown period {period}"),
            ));
        }
    };
    let rollover = optional("rollover_max", rollover_max, Amount::parse)?;
    let Some(period) = period else {
        if anchor_ms != 0 {
            return Err(GateError::invalid("period_anchor_ms", "needs a period"));
        }
        if rollover.is_some() {
            return Err(GateError::invalid("rollover_max", "needs a period"));
        }
        return Ok(None);
    };
    if anchor_ms < 0 {
        return Err(GateError::invalid(
            "period_anchor_ms",
            "must not be negative",
        ));
    }
    Ok(Some(Recurrence {
        period,
        anchor_ms: (anchor_ms != 0).then_some(anchor_ms),
        rollover_max_minor: rollover.map_or(0, |r| r.to_minor()),
    }))
}

pub fn grant(grant: &Grant, now_ms: i64) -> proto::GrantBalance {
    let status = match grant.status(now_ms) {
        GrantStatus::Active => proto::GrantStatus::Active,
        GrantStatus::Expired => proto::GrantStatus::Expired,
        GrantStatus::Voided => proto::GrantStatus::Voided,
    };
    proto::GrantBalance {
        grant_id: grant.terms.id.to_string(),
        kind: grant_kind_to_proto(grant.terms.kind) as i32,
        priority: grant.terms.priority,
        amount: money(grant.terms.amount_minor),
        remaining: money(grant.remaining_minor),
        held: money(grant.held_minor),
        expires_at_ms: grant.terms.expires_at_ms.unwrap_or(0),
        features: grant.terms.features.iter().map(|f| f.to_string()).collect(),
        status: status as i32,
        used_percent: crate::domain::grant::used_percent(grant),
        period: match grant.terms.recurrence.map(|r| r.period) {
            None => proto::Period::Unspecified,
            Some(Period::Month) => proto::Period::Month,
            Some(Period::Year) => proto::Period::Year,
        } as i32,
        period_start_ms: grant.period_bounds_ms().map_or(0, |(start, _)| start),
        next_reset_ms: grant.period_bounds_ms().map_or(0, |(_, next)| next),
        rollover_max: grant
            .terms
            .recurrence
            .map(|r| money(r.rollover_max_minor))
            .unwrap_or_default(),
    }
}

pub fn spend_limit(l: &LimitState) -> proto::SpendLimit {
    proto::SpendLimit {
        id: l.limit.id(),
        label_key: l.limit.label_key.clone(),
        label_value: l.limit.label_value.clone(),
        per: limit_per_to_proto(l.limit.window) as i32,
        amount: money(l.limit.amount_minor),
        used: money(l.used_minor),
        held: money(l.held_minor),
        available: money(l.room_minor()),
        resets_at_ms: l.resets_at_ms().unwrap_or(0),
    }
}

fn limit_per_to_proto(window: LimitWindow) -> proto::LimitPer {
    match window {
        LimitWindow::Day => proto::LimitPer::Day,
        LimitWindow::Month => proto::LimitPer::Month,
        LimitWindow::Total => proto::LimitPer::Total,
    }
}

/// A SetLimit request as a store change; every field is checked and named.
pub fn limit_change(r: &proto::SetLimitRequest) -> Result<LimitChange, GateError> {
    // Checked as labels are: the key alone, then the value alone.
    let key: Labels = [(r.label_key.clone(), String::new())].into();
    check_labels(key.iter()).map_err(|(_, e)| GateError::invalid("label_key", e.to_string()))?;
    let value: Labels = [("label".to_owned(), r.label_value.clone())].into();
    check_labels(value.iter())
        .map_err(|(_, e)| GateError::invalid("label_value", e.to_string()))?;
    let window = match proto::LimitPer::try_from(r.per) {
        Ok(proto::LimitPer::Day) => LimitWindow::Day,
        Ok(proto::LimitPer::Month) => LimitWindow::Month,
        Ok(proto::LimitPer::Total) => LimitWindow::Total,
        Ok(proto::LimitPer::Unspecified) => {
            return Err(GateError::invalid(
                "per",
                "is required: LIMIT_PER_DAY, LIMIT_PER_MONTH or LIMIT_PER_TOTAL",
            ));
        }
        Err(_) => {
            return Err(GateError::invalid(
                "per",
                format!("unknown window {}", r.per),
            ));
        }
    };
    let amount_minor = match (r.remove, r.amount.is_empty()) {
        (true, true) => None,
        (true, false) => {
            return Err(GateError::invalid(
                "amount",
                "must be empty when removing a limit",
            ));
        }
        (false, _) => Some(amount("amount", &r.amount)?.to_minor()),
    };
    Ok(LimitChange {
        label_key: r.label_key.clone(),
        label_value: r.label_value.clone(),
        window,
        amount_minor,
    })
}

pub fn wallet_balance(view: &WalletView, now_ms: i64) -> proto::WalletBalance {
    let totals = WalletTotals::of(&view.grants, &view.postpaid, now_ms);
    proto::WalletBalance {
        wallet: view.wallet.to_string(),
        granted: money(totals.granted_minor),
        held: money(totals.held_minor),
        spent: money(totals.spent_minor),
        available: money(totals.available_minor),
        grants: crate::domain::grant::display_order(&view.grants, now_ms)
            .into_iter()
            .map(|g| self::grant(g, now_ms))
            .collect(),
        flex_cap: money(view.postpaid.flex_cap_minor),
        flex_used: money(view.postpaid.flex_used_minor),
        flex_held: money(view.postpaid.flex_held_minor),
        debt: money(view.postpaid.debt_minor),
        alerts: view.alerts.as_ref().map(wallet_alerts),
    }
}
