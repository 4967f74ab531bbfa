//! Adding credits and looking back: grants, usage from the ledger, and reconciling the store
//! with the ledger.

// The client's connections, answers and helpers are its parent's.
use super::*;

pub struct GrantCall {
    pub account: String,
    pub grant_id: String,
    pub wallet: Option<String>,
    pub amount: String,
    pub kind: String,
    pub priority: u32,
    pub expires_at_ms: i64,
    pub features: Vec<String>,
    /// `month` or `year` for a plan's allowance.
    pub period: Option<String>,
    pub period_anchor_ms: i64,
    pub rollover_max: String,
    pub reason: String,
    pub refund_of: String,
    pub top_up_request_id: String,
}

pub async fn grant(connection: &Connection, call: GrantCall) -> Result<Answer, CliError> {
    let kind = match call.kind.as_str() {
        "prepaid" => proto::GrantKind::Prepaid,
        "included" => proto::GrantKind::Included,
        "promotional" => proto::GrantKind::Promotional,
        other => {
            return Err(CliError::Usage(format!(
                "--kind {other:?}: use prepaid, included or promotional"
            )));
        }
    };
    let r = admin(connection)
        .await?
        .add_grant(proto::AddGrantRequest {
            account_id: call.account,
            grant_id: call.grant_id,
            wallet: call.wallet.unwrap_or_default(),
            amount: call.amount,
            kind: kind as i32,
            priority: call.priority,
            expires_at_ms: call.expires_at_ms,
            features: call.features,
            period: match call.period.as_deref() {
                Some("month") => proto::Period::Month,
                Some("year") => proto::Period::Year,
                _ => proto::Period::Unspecified,
            } as i32,
            period_anchor_ms: call.period_anchor_ms,
            rollover_max: call.rollover_max,
            reason: call.reason,
            refund_of: call.refund_of,
            top_up_request_id: call.top_up_request_id,
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: json!({
            "wallet": r.wallet,
            "created": r.created,
            "available": r.available,
            "grant": r.grant.as_ref().map(grant_json).unwrap_or(Value::Null),
        }),
    })
}

pub struct UsageCall {
    pub account: String,
    pub group_by: String,
    pub since_ms: i64,
    pub label: Option<(String, String)>,
}

pub async fn usage(connection: &Connection, call: UsageCall) -> Result<Answer, CliError> {
    let (label_key, label_value) = call.label.unwrap_or_default();
    let r = admin(connection)
        .await?
        .get_usage(proto::GetUsageRequest {
            account_id: call.account,
            since_ms: call.since_ms,
            until_ms: 0,
            group_by: call.group_by,
            label_key,
            label_value,
        })
        .await?
        .into_inner();
    let groups: Vec<Value> = r
        .groups
        .iter()
        .map(|g| json!({"key": g.key, "amount": g.amount, "count": g.count}))
        .collect();
    Ok(Answer {
        denied: false,
        json: json!({
            "account_id": r.account_id,
            "since_ms": r.since_ms,
            "until_ms": r.until_ms,
            "total": r.total,
            "count": r.count,
            "groups": groups,
        }),
    })
}

/// Compares store and ledger for one account (optionally rebuilding it) or for all of them,
/// page by page.
pub async fn reconcile(
    connection: &Connection,
    account: Option<String>,
    rebuild: bool,
) -> Result<Answer, CliError> {
    let mut client = admin(connection).await?;
    let mut accounts = Vec::new();
    let mut after = String::new();
    loop {
        let r = client
            .reconcile(proto::ReconcileRequest {
                account_id: account.clone().unwrap_or_default(),
                rebuild,
                after_account_id: after.clone(),
                limit: 0,
            })
            .await?
            .into_inner();
        for a in &r.accounts {
            let outcome = proto::ReconcileOutcome::try_from(a.outcome)
                .map(|o| {
                    o.as_str_name()
                        .trim_start_matches("RECONCILE_OUTCOME_")
                        .to_owned()
                })
                .unwrap_or_default();
            let wallets: Vec<Value> = a
                .wallets
                .iter()
                .map(|w| {
                    json!({
                        "wallet": w.wallet,
                        "store_remaining": w.store_remaining,
                        "ledger_remaining": w.ledger_remaining,
                        "store_held": w.store_held,
                        "ledger_held": w.ledger_held,
                        "drift": w.drift,
                    })
                })
                .collect();
            accounts.push(json!({
                "account_id": a.account_id,
                "outcome": outcome,
                "rebuilt": a.rebuilt,
                "wallets": wallets,
            }));
        }
        if r.next_after_account_id.is_empty() {
            break;
        }
        after = r.next_after_account_id;
    }
    Ok(Answer {
        denied: false,
        json: json!({ "accounts": accounts }),
    })
}
