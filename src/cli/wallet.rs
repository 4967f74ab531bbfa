//! Setting what an account's wallets allow: alert thresholds and auto top-up, spend limits on
//! a label, and the flex cap.

// The client's connections, answers and helpers are its parent's.
use super::*;

/// A wallet's alert thresholds and auto top-up, as given on the command line.
pub struct AlertsCall {
    pub account: String,
    pub wallet: Option<String>,
    /// LOW_BALANCE thresholds: amounts.
    pub below: Vec<String>,
    /// ALERT thresholds: percentages of the included allowances used.
    pub allowance_used: Vec<u32>,
    /// Auto top-up: below this, ask for `top_up_amount` or up to `top_up_to`.
    pub top_up_below: Option<String>,
    pub top_up_amount: Option<String>,
    pub top_up_to: Option<String>,
}

/// Sets a wallet's alert thresholds and auto top-up policy, replacing what it had.
pub async fn alerts_set(connection: &Connection, call: AlertsCall) -> Result<Answer, CliError> {
    use proto::alert_threshold::When;
    use proto::auto_top_up::Size;
    let thresholds = call
        .below
        .into_iter()
        .map(When::Below)
        .chain(
            call.allowance_used
                .into_iter()
                .map(When::AllowanceUsedPercent),
        )
        .map(|when| proto::AlertThreshold {
            when: Some(when),
            armed: false,
        })
        .collect();
    let size = match (call.top_up_amount, call.top_up_to) {
        (Some(amount), None) => Some(Size::Amount(amount)),
        (None, Some(target)) => Some(Size::Target(target)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(CliError::Usage(
                "give --top-up-amount or --top-up-to, not both".into(),
            ));
        }
    };
    let auto_top_up = match (call.top_up_below, size) {
        (Some(below), Some(size)) => Some(proto::AutoTopUp {
            below,
            size: Some(size),
        }),
        (None, None) => None,
        _ => {
            return Err(CliError::Usage(
                "--top-up-below goes with --top-up-amount or --top-up-to".into(),
            ));
        }
    };
    let r = admin(connection)
        .await?
        .set_alerts(proto::SetAlertsRequest {
            account_id: call.account,
            wallet: call.wallet.unwrap_or_default(),
            thresholds,
            auto_top_up,
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: alerts_json(&r),
    })
}

pub(super) fn alerts_json(alerts: &proto::WalletAlerts) -> Value {
    use proto::alert_threshold::When;
    use proto::auto_top_up::Size;
    let thresholds: Vec<Value> = alerts
        .thresholds
        .iter()
        .map(|t| match &t.when {
            Some(When::Below(amount)) => json!({"below": amount, "armed": t.armed}),
            Some(When::AllowanceUsedPercent(p)) => {
                json!({"allowance_used_percent": p, "armed": t.armed})
            }
            None => Value::Null,
        })
        .collect();
    let top_up = alerts.auto_top_up.as_ref().map(|t| match &t.size {
        Some(Size::Amount(amount)) => json!({"below": t.below, "amount": amount}),
        Some(Size::Target(target)) => json!({"below": t.below, "target": target}),
        None => json!({"below": t.below}),
    });
    json!({
        "thresholds": thresholds,
        "auto_top_up": top_up,
        "open_top_up_request_id": alerts.open_top_up_request_id,
    })
}

/// Sets a spend limit (`amount` given) or removes it.
pub async fn limit_set(
    connection: &Connection,
    account: String,
    label_key: String,
    label_value: String,
    per: &str,
    amount: Option<String>,
) -> Result<Answer, CliError> {
    let per = match per {
        "day" => proto::LimitPer::Day,
        "month" => proto::LimitPer::Month,
        _ => proto::LimitPer::Total,
    };
    let r = admin(connection)
        .await?
        .set_limit(proto::SetLimitRequest {
            account_id: account,
            label_key,
            label_value,
            per: per as i32,
            remove: amount.is_none(),
            amount: amount.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: json!({
            "account_id": r.account_id,
            "limits": r.limits.iter().map(limit_json).collect::<Vec<_>>(),
        }),
    })
}

pub(super) fn limit_json(l: &proto::SpendLimit) -> Value {
    let per = proto::LimitPer::try_from(l.per)
        .unwrap_or_default()
        .as_str_name()
        .trim_start_matches("LIMIT_PER_")
        .to_ascii_lowercase();
    json!({
        "id": l.id,
        "label": format!("{}={}", l.label_key, l.label_value),
        "per": per,
        "amount": l.amount,
        "used": l.used,
        "held": l.held,
        "available": l.available,
        "resets_at_ms": l.resets_at_ms,
    })
}

/// Sets a wallet's flex cap.
pub async fn wallet_set(
    connection: &Connection,
    account: String,
    wallet: Option<String>,
    flex_cap: String,
) -> Result<Answer, CliError> {
    let w = admin(connection)
        .await?
        .set_wallet(proto::SetWalletRequest {
            account_id: account.clone(),
            wallet: wallet.unwrap_or_default(),
            flex_cap,
        })
        .await?
        .into_inner();
    let mut json = wallet_json(&w);
    json["account_id"] = json!(account);
    Ok(Answer {
        denied: false,
        json,
    })
}
