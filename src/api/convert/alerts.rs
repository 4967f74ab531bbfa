//! Alerts and the events they raise: a wallet's thresholds and auto top-up from SetAlerts
//! and back, and wallet events for WatchBalance and ListEvents.

use super::{amount, money};
use crate::domain::alert::{AlertRule, TopUpPolicy, TopUpSize, WalletAlerts};
use crate::events::{EventDetail, WalletEvent, WalletEventKind};
use crate::gate::GateError;
use crate::ledger::EventRecord;
use crate::proto;
use crate::store::AlertsView;

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
