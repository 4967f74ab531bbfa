//! Proto ⇄ domain, in one place. Parsing names the field at fault in every error, so that a
//! malformed request is refused with `INVALID_ARGUMENT` before anything else happens.

use std::collections::HashMap;

use crate::domain::alert::{AlertRule, TopUpPolicy, TopUpSize, WalletAlerts};
use crate::domain::grant::WalletTotals;
use crate::domain::ids::check_labels;
use crate::domain::{
    Account, AccountId, AccountStatus, Amount, DenyReason, FeatureId, FeaturePrice, Grant, GrantId,
    GrantKind, GrantStatus, IdempotencyKey, Labels, LimitState, LimitWindow, ModelId,
    OverrunPolicy, Period, Portion, PriceRule, Recurrence, ReservationId, StopRule, TokenPrice,
    Units, Usage, WalletId, format_minor,
};
use crate::domain::{Decision, Denial};
use crate::events::{EventDetail, WalletEvent, WalletEventKind};
use crate::gate::{Cost, GateError};
use crate::ledger::EventRecord;
use crate::proto;
use crate::record::{EntryKind, LedgerEntry};
use crate::store::{AlertsView, LimitChange, WalletView};

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

/// A wallet's thresholds and auto top-up from a SetAlerts request. Thresholds must be
/// positive amounts or percentages from 1 to 100; a top-up's target must exceed its
/// threshold.
pub fn alerts_request(r: &proto::SetAlertsRequest) -> Result<WalletAlerts, GateError> {
    use proto::alert_threshold::When;
    use proto::auto_top_up::Size;
    let positive = |field: &str, text: &str| -> Result<i64, GateError> {
        let minor = amount(field, text)?.to_minor();
        if minor == 0 {
            return Err(GateError::invalid(field, "must be greater than zero"));
        }
        Ok(minor)
    };
    let mut rules = Vec::new();
    for (i, threshold) in r.thresholds.iter().enumerate() {
        let at = |field: &str| format!("thresholds[{i}]{field}");
        let rule = match &threshold.when {
            Some(When::Below(text)) => AlertRule::Below {
                amount_minor: positive(&at(".below"), text)?,
            },
            Some(When::AllowanceUsedPercent(percent)) if (1..=100).contains(percent) => {
                AlertRule::AllowanceUsed { percent: *percent }
            }
            Some(When::AllowanceUsedPercent(_)) => {
                return Err(GateError::invalid(
                    at(".allowance_used_percent"),
                    "must be from 1 to 100",
                ));
            }
            None => {
                return Err(GateError::invalid(
                    at(""),
                    "give below or allowance_used_percent",
                ));
            }
        };
        if rules.contains(&rule) {
            return Err(GateError::invalid(at(""), "is given twice"));
        }
        rules.push(rule);
    }
    let top_up = match &r.auto_top_up {
        None => None,
        Some(top_up) => {
            let below_minor = positive("auto_top_up.below", &top_up.below)?;
            let size = match &top_up.size {
                Some(Size::Amount(text)) => TopUpSize::Amount {
                    amount_minor: positive("auto_top_up.amount", text)?,
                },
                Some(Size::Target(text)) => {
                    let target_minor = positive("auto_top_up.target", text)?;
                    if target_minor <= below_minor {
                        return Err(GateError::invalid(
                            "auto_top_up.target",
                            "must be above auto_top_up.below",
                        ));
                    }
                    TopUpSize::Target { target_minor }
                }
                None => {
                    return Err(GateError::invalid("auto_top_up", "give amount or target"));
                }
            };
            Some(TopUpPolicy { below_minor, size })
        }
    };
    Ok(WalletAlerts { rules, top_up })
}

pub fn wallet_alerts(view: &AlertsView) -> proto::WalletAlerts {
    use proto::alert_threshold::When;
    use proto::auto_top_up::Size;
    proto::WalletAlerts {
        thresholds: view
            .alerts
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| proto::AlertThreshold {
                when: Some(match *rule {
                    AlertRule::Below { amount_minor } => When::Below(money(amount_minor)),
                    AlertRule::AllowanceUsed { percent } => When::AllowanceUsedPercent(percent),
                }),
                armed: view.armed.get(i).copied().unwrap_or(true),
            })
            .collect(),
        auto_top_up: view.alerts.top_up.map(|policy| proto::AutoTopUp {
            below: money(policy.below_minor),
            size: Some(match policy.size {
                TopUpSize::Amount { amount_minor } => Size::Amount(money(amount_minor)),
                TopUpSize::Target { target_minor } => Size::Target(money(target_minor)),
            }),
        }),
        open_top_up_request_id: view.open_top_up.clone().unwrap_or_default(),
    }
}

/// An event with its webhook deliveries, for ListEvents.
pub fn event_record(record: &EventRecord) -> proto::EventRecord {
    proto::EventRecord {
        event: Some(balance_event(&record.event)),
        deliveries: record
            .deliveries
            .iter()
            .map(|d| {
                let status = match (d.delivered_at_ms, d.next_attempt_at_ms) {
                    (Some(_), _) => proto::DeliveryStatus::Delivered,
                    (None, Some(_)) => proto::DeliveryStatus::Pending,
                    (None, None) => proto::DeliveryStatus::Failed,
                };
                proto::WebhookDelivery {
                    endpoint: d.endpoint.clone(),
                    status: status as i32,
                    attempts: d.attempts,
                    delivered_at_ms: d.delivered_at_ms.unwrap_or(0),
                    next_attempt_at_ms: d.next_attempt_at_ms.unwrap_or(0),
                    last_error: d.last_error.clone().unwrap_or_default(),
                }
            })
            .collect(),
        answered_by_grant_id: record.answered_by.clone().unwrap_or_default(),
    }
}

/// An event for WatchBalance.
pub fn balance_event(event: &WalletEvent) -> proto::BalanceEvent {
    let kind = match event.kind {
        WalletEventKind::Depleted => proto::BalanceEventKind::Depleted,
        WalletEventKind::Replenished => proto::BalanceEventKind::Replenished,
        WalletEventKind::HoldExpired => proto::BalanceEventKind::HoldExpired,
        WalletEventKind::LowBalance => proto::BalanceEventKind::LowBalance,
        WalletEventKind::Alert => proto::BalanceEventKind::Alert,
        WalletEventKind::LimitReached => proto::BalanceEventKind::LimitReached,
        WalletEventKind::TopUpRequested => proto::BalanceEventKind::TopUpRequested,
    };
    let mut out = proto::BalanceEvent {
        kind: kind as i32,
        account_id: event.account.to_string(),
        wallet: event.wallet.to_string(),
        at_ms: event.at_ms,
        event_id: event.id.clone(),
        available: money(event.available_minor),
        ..Default::default()
    };
    match &event.detail {
        EventDetail::None => {}
        EventDetail::Hold { reservation } => out.reservation_id = reservation.to_string(),
        EventDetail::Rule {
            rule: AlertRule::Below { amount_minor },
        } => out.threshold = money(*amount_minor),
        EventDetail::Rule {
            rule: AlertRule::AllowanceUsed { percent },
        } => out.allowance_used_percent = *percent,
        EventDetail::Limit { limit } => out.limit = limit.clone(),
        EventDetail::TopUp {
            request_id,
            amount_minor,
        } => {
            out.top_up_request_id = request_id.clone();
            out.top_up_amount = money(*amount_minor);
        }
    }
    out
}

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

/// Longest unit name in a per-unit price.
const UNIT_LEN_MAX: usize = 32;

pub fn feature_price(index: usize, price: &proto::FeaturePrice) -> Result<FeaturePrice, GateError> {
    use proto::feature_price::Rule;
    let at = |field: &str| format!("features[{index}].{field}");
    let rule = match &price.rule {
        Some(Rule::PerCall(p)) => PriceRule::PerCall {
            price: amount(&at("per_call.price"), &p.price)?,
        },
        Some(Rule::PerUnit(p)) => {
            let unit_ok = !p.unit.is_empty()
                && p.unit.len() <= UNIT_LEN_MAX
                && p.unit
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !unit_ok {
                return Err(GateError::invalid(
                    at("per_unit.unit"),
                    format!("must be 1-{UNIT_LEN_MAX} letters, digits or _ (e.g. \"minute\")"),
                ));
            }
            PriceRule::PerUnit {
                unit: p.unit.clone(),
                price: amount(&at("per_unit.price"), &p.price)?,
            }
        }
        Some(Rule::PerMillionTokens(p)) => {
            if p.models.is_empty() {
                return Err(GateError::invalid(
                    at("per_million_tokens.models"),
                    "at least one model is required",
                ));
            }
            if p.models.len() > crate::domain::price::MODELS_PER_PRICE_MAX {
                return Err(GateError::invalid(
                    at("per_million_tokens.models"),
                    format!(
                        "at most {} models",
                        crate::domain::price::MODELS_PER_PRICE_MAX
                    ),
                ));
            }
            let mut models = std::collections::BTreeMap::new();
            for (m, model) in p.models.iter().enumerate() {
                let field = |name: &str| at(&format!("per_million_tokens.models[{m}].{name}"));
                let id = required(&field("model"), &model.model, ModelId::parse)?;
                let price = TokenPrice {
                    input: amount(&field("input"), &model.input)?,
                    output: amount(&field("output"), &model.output)?,
                    cached_input: optional(
                        &field("cached_input"),
                        &model.cached_input,
                        Amount::parse,
                    )?,
                };
                if models.insert(id.clone(), price).is_some() {
                    return Err(GateError::invalid(
                        field("model"),
                        format!("model {id} is listed twice"),
                    ));
                }
            }
            PriceRule::PerMillionTokens { models }
        }
        None => {
            return Err(GateError::invalid(
                at("rule"),
                "one of per_call, per_unit or per_million_tokens is required",
            ));
        }
    };
    let allowance = optional(
        &at("overrun_allowance"),
        &price.overrun_allowance,
        Amount::parse,
    )?;
    let overrun = match (proto::Overrun::try_from(price.overrun), allowance) {
        (Err(_), _) => {
            return Err(GateError::invalid(
                at("overrun"),
                format!("unknown overrun policy {}", price.overrun),
            ));
        }
        (Ok(proto::Overrun::AllowUpTo), Some(allowance)) => OverrunPolicy::AllowUpTo {
            allowance_minor: allowance.to_minor(),
        },
        (Ok(proto::Overrun::AllowUpTo), None) => {
            return Err(GateError::invalid(
                at("overrun_allowance"),
                "required with OVERRUN_ALLOW_UP_TO",
            ));
        }
        (_, Some(_)) => {
            return Err(GateError::invalid(
                at("overrun_allowance"),
                "only OVERRUN_ALLOW_UP_TO takes an allowance",
            ));
        }
        (Ok(proto::Overrun::Unspecified | proto::Overrun::CapAtHold), None) => {
            OverrunPolicy::CapAtHold
        }
        (Ok(proto::Overrun::ChargeActual), None) => OverrunPolicy::ChargeActual,
    };
    let stop = match proto::StopRule::try_from(price.stop) {
        Ok(proto::StopRule::Unspecified | proto::StopRule::FinishRunning) => {
            StopRule::FinishRunning
        }
        Ok(proto::StopRule::StopRunning) => StopRule::StopRunning,
        Err(_) => {
            return Err(GateError::invalid(
                at("stop"),
                format!("unknown stop rule {}", price.stop),
            ));
        }
    };
    Ok(FeaturePrice {
        feature: required(&at("feature"), &price.feature, FeatureId::parse)?,
        wallet: optional(&at("wallet"), &price.wallet, WalletId::parse)?
            .unwrap_or_else(WalletId::default_wallet),
        rule,
        overrun,
        stop,
        effective_at_ms: price.effective_at_ms,
    })
}

pub fn feature_price_to_proto(price: &FeaturePrice) -> proto::FeaturePrice {
    use proto::feature_price::Rule;
    let rule = match &price.rule {
        PriceRule::PerCall { price } => Rule::PerCall(proto::PerCallPrice {
            price: price.to_string(),
        }),
        PriceRule::PerUnit { unit, price } => Rule::PerUnit(proto::PerUnitPrice {
            unit: unit.clone(),
            price: price.to_string(),
        }),
        PriceRule::PerMillionTokens { models } => {
            Rule::PerMillionTokens(proto::PerMillionTokensPrice {
                models: models
                    .iter()
                    .map(|(model, price)| proto::ModelPrice {
                        model: model.to_string(),
                        input: price.input.to_string(),
                        output: price.output.to_string(),
                        cached_input: price
                            .cached_input
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                    })
                    .collect(),
            })
        }
    };
    let (overrun, overrun_allowance) = match price.overrun {
        OverrunPolicy::CapAtHold => (proto::Overrun::CapAtHold, String::new()),
        OverrunPolicy::AllowUpTo { allowance_minor } => {
            (proto::Overrun::AllowUpTo, money(allowance_minor))
        }
        OverrunPolicy::ChargeActual => (proto::Overrun::ChargeActual, String::new()),
    };
    proto::FeaturePrice {
        feature: price.feature.to_string(),
        wallet: price.wallet.to_string(),
        rule: Some(rule),
        overrun: overrun as i32,
        overrun_allowance,
        effective_at_ms: price.effective_at_ms,
        stop: match price.stop {
            StopRule::FinishRunning => proto::StopRule::FinishRunning,
            StopRule::StopRunning => proto::StopRule::StopRunning,
        } as i32,
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
