//! The gate's calls: reserve, commit, release, extend, charge and check, each one call
//! printed as its answer.

// The client's connections, answers and helpers are its parent's.
use super::*;

pub struct ReserveCall {
    /// Hold what is available down to this minimum when less than asked is left.
    pub partial_min: Option<String>,
    pub account: String,
    pub feature: String,
    pub wallet: Option<String>,
    pub cost: CostArgs,
    pub ttl_ms: u64,
    pub idempotency_key: Option<String>,
    pub labels: Vec<(String, String)>,
}

pub async fn reserve(connection: &Connection, call: ReserveCall) -> Result<Answer, CliError> {
    use proto::reserve_request::Cost;
    let cost = call.cost.oneof(Cost::Amount, Cost::Usage);
    let r = gate(connection)
        .await?
        .reserve(proto::ReserveRequest {
            account_id: call.account,
            feature: call.feature,
            wallet: call.wallet.unwrap_or_default(),
            cost,
            ttl_ms: call.ttl_ms,
            idempotency_key: call.idempotency_key.unwrap_or_default(),
            labels: labels(&call.labels),
            allow_partial: call.partial_min.is_some(),
            min_amount: call.partial_min.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: is_denied(r.decision),
        json: json!({
            "decision": decision_name(r.decision),
            "reason": reason_name(r.reason),
            "reservation_id": r.reservation_id,
            "wallet": r.wallet,
            "amount": r.amount,
            "expires_at_ms": r.expires_at_ms,
            "available": r.available,
            "split": split(&r.split),
            "message": r.message,
            "limit": r.limit,
        }),
    })
}

pub async fn commit(
    connection: &Connection,
    id: String,
    cost: CostArgs,
) -> Result<Answer, CliError> {
    use proto::commit_request::Actual;
    let actual = cost.oneof(Actual::Amount, Actual::Usage);
    let r = gate(connection)
        .await?
        .commit(proto::CommitRequest {
            reservation_id: id,
            actual,
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: json!({
            "reservation_id": r.reservation_id,
            "requested": r.requested,
            "overrun": r.overrun,
            "charged": r.charged,
            "released": r.released,
            "split": split(&r.split),
            "entry_id": r.entry_id,
            "available": r.available,
        }),
    })
}

pub async fn release(connection: &Connection, id: String) -> Result<Answer, CliError> {
    let r = gate(connection)
        .await?
        .release(proto::ReleaseRequest { reservation_id: id })
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: json!({
            "reservation_id": r.reservation_id,
            "released": r.released,
            "available": r.available,
        }),
    })
}

pub async fn extend(
    connection: &Connection,
    id: String,
    amount: Option<String>,
    ttl_ms: u64,
    idempotency_key: Option<String>,
) -> Result<Answer, CliError> {
    let r = gate(connection)
        .await?
        .extend(proto::ExtendRequest {
            reservation_id: id,
            additional_amount: amount.unwrap_or_default(),
            ttl_ms,
            idempotency_key: idempotency_key.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: is_denied(r.decision),
        json: json!({
            "decision": decision_name(r.decision),
            "reason": reason_name(r.reason),
            "reservation_id": r.reservation_id,
            "amount": r.amount,
            "expires_at_ms": r.expires_at_ms,
            "available": r.available,
            "split": split(&r.split),
            "message": r.message,
            "limit": r.limit,
        }),
    })
}

pub struct ChargeCall {
    pub account: String,
    pub feature: String,
    pub wallet: Option<String>,
    pub cost: CostArgs,
    pub idempotency_key: Option<String>,
    pub labels: Vec<(String, String)>,
}

pub async fn charge(connection: &Connection, call: ChargeCall) -> Result<Answer, CliError> {
    use proto::charge_request::Cost;
    let cost = call.cost.oneof(Cost::Amount, Cost::Usage);
    let r = gate(connection)
        .await?
        .charge(proto::ChargeRequest {
            account_id: call.account,
            feature: call.feature,
            wallet: call.wallet.unwrap_or_default(),
            cost,
            idempotency_key: call.idempotency_key.unwrap_or_default(),
            labels: labels(&call.labels),
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: is_denied(r.decision),
        json: json!({
            "decision": decision_name(r.decision),
            "reason": reason_name(r.reason),
            "wallet": r.wallet,
            "charged": r.charged,
            "split": split(&r.split),
            "entry_id": r.entry_id,
            "available": r.available,
            "message": r.message,
            "limit": r.limit,
        }),
    })
}

pub async fn check(
    connection: &Connection,
    account: String,
    feature: String,
    wallet: Option<String>,
    cost: CostArgs,
    labels: Vec<(String, String)>,
) -> Result<Answer, CliError> {
    use proto::check_request::Cost;
    let cost = cost.oneof(Cost::Amount, Cost::Usage);
    let r = gate(connection)
        .await?
        .check(proto::CheckRequest {
            account_id: account,
            feature,
            wallet: wallet.unwrap_or_default(),
            cost,
            labels: labels.into_iter().collect(),
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: is_denied(r.decision),
        json: json!({
            "decision": decision_name(r.decision),
            "reason": reason_name(r.reason),
            "wallet": r.wallet,
            "amount": r.amount,
            "available": r.available,
            "message": r.message,
            "limit": r.limit,
        }),
    })
}
