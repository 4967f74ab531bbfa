//! Reading balances: an account's wallets and grants, its events as they happen (watch), and
//! its newest events with their webhook deliveries.

// The client's connections, answers and helpers are its parent's.
use super::*;

pub(super) fn grant_json(g: &proto::GrantBalance) -> Value {
    let kind = proto::GrantKind::try_from(g.kind)
        .map(|k| k.as_str_name().trim_start_matches("GRANT_KIND_").to_owned())
        .unwrap_or_default();
    let status = proto::GrantStatus::try_from(g.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("GRANT_STATUS_")
                .to_owned()
        })
        .unwrap_or_default();
    let mut json = json!({
        "grant_id": g.grant_id,
        "kind": kind,
        "priority": g.priority,
        "amount": g.amount,
        "remaining": g.remaining,
        "held": g.held,
        "expires_at_ms": g.expires_at_ms,
        "features": g.features,
        "status": status,
        "used_percent": g.used_percent,
    });
    if let Ok(period @ (proto::Period::Month | proto::Period::Year)) =
        proto::Period::try_from(g.period)
    {
        json["period"] = json!({
            "every": period.as_str_name().trim_start_matches("PERIOD_").to_ascii_lowercase(),
            "start_ms": g.period_start_ms,
            "next_reset_ms": g.next_reset_ms,
            "rollover_max": g.rollover_max,
        });
    }
    json
}

pub async fn balance(
    connection: &Connection,
    account: String,
    wallet: Option<String>,
) -> Result<Answer, CliError> {
    let r = gate(connection)
        .await?
        .get_balance(proto::GetBalanceRequest {
            account_id: account,
            wallet: wallet.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let wallets: Vec<Value> = r.wallets.iter().map(wallet_json).collect();
    let mut json = json!({"account_id": r.account_id, "wallets": wallets});
    if !r.limits.is_empty() {
        json["limits"] = r.limits.iter().map(limit_json).collect();
    }
    Ok(Answer {
        denied: false,
        json,
    })
}

pub(super) fn wallet_json(w: &proto::WalletBalance) -> Value {
    json!({
        "wallet": w.wallet,
        "granted": w.granted,
        "held": w.held,
        "spent": w.spent,
        "available": w.available,
        "flex": {"cap": w.flex_cap, "used": w.flex_used, "held": w.flex_held},
        "debt": w.debt,
        "grants": w.grants.iter().map(grant_json).collect::<Vec<_>>(),
        "alerts": w.alerts.as_ref().map(alerts_json),
    })
}

/// Watches an account: hands each event (the snapshot first) to `print` until the stream ends.
pub async fn watch(
    connection: &Connection,
    account: String,
    (wallets, features): (Vec<String>, Vec<String>),
    mut print: impl FnMut(Answer),
) -> Result<(), CliError> {
    let mut stream = gate(connection)
        .await?
        .watch_balance(proto::WatchBalanceRequest {
            account_id: account,
            wallets,
            features,
        })
        .await?
        .into_inner();
    while let Some(event) = stream.message().await? {
        let json = event_json(&event);
        print(Answer {
            json,
            denied: false,
        });
    }
    Ok(())
}

fn event_json(event: &proto::BalanceEvent) -> Value {
    let kind = proto::BalanceEventKind::try_from(event.kind)
        .unwrap_or_default()
        .as_str_name()
        .trim_start_matches("BALANCE_EVENT_KIND_")
        .to_owned();
    let mut json = json!({"event": kind, "account_id": event.account_id});
    if let Some(snapshot) = &event.snapshot {
        json["wallets"] = snapshot.wallets.iter().map(wallet_json).collect();
        return json;
    }
    json["event_id"] = json!(event.event_id);
    json["wallet"] = json!(event.wallet);
    json["at_ms"] = json!(event.at_ms);
    json["available"] = json!(event.available);
    let details = [
        ("reservation_id", &event.reservation_id),
        ("threshold", &event.threshold),
        ("limit", &event.limit),
        ("top_up_request_id", &event.top_up_request_id),
        ("top_up_amount", &event.top_up_amount),
    ];
    for (field, value) in details {
        if !value.is_empty() {
            json[field] = json!(value);
        }
    }
    if event.allowance_used_percent > 0 {
        json["allowance_used_percent"] = json!(event.allowance_used_percent);
    }
    json
}

/// An account's newest events, with their webhook deliveries.
pub async fn events(
    connection: &Connection,
    account: String,
    limit: u32,
) -> Result<Answer, CliError> {
    let r = admin(connection)
        .await?
        .list_events(proto::ListEventsRequest {
            account_id: account,
            limit,
        })
        .await?
        .into_inner();
    let events: Vec<Value> = r
        .events
        .iter()
        .map(|record| {
            let mut json = record.event.as_ref().map(event_json).unwrap_or_default();
            if !record.answered_by_grant_id.is_empty() {
                json["answered_by_grant_id"] = json!(record.answered_by_grant_id);
            }
            json["deliveries"] = record
                .deliveries
                .iter()
                .map(|d| {
                    let status = proto::DeliveryStatus::try_from(d.status)
                        .unwrap_or_default()
                        .as_str_name()
                        .trim_start_matches("DELIVERY_STATUS_")
                        .to_owned();
                    json!({
                        "endpoint": d.endpoint, "status": status, "attempts": d.attempts,
                        "delivered_at_ms": d.delivered_at_ms,
                        "next_attempt_at_ms": d.next_attempt_at_ms,
                        "last_error": d.last_error,
                    })
                })
                .collect();
            json
        })
        .collect();
    Ok(Answer {
        denied: false,
        json: json!({ "events": events }),
    })
}
