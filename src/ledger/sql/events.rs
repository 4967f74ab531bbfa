//! Wallet events in the ledger and their webhook deliveries: claiming the deliveries that are
//! due, recording each attempt, and listing an account's events with how their deliveries
//! went.

use crate::ledger::ENTRIES_LIMIT_MAX;

// The SQL ledger's helpers (statements, rows, JSON) are its parent's.
use super::*;

pub(super) async fn claim_deliveries(
    ledger: &SqlLedger,
    endpoints: &[String],
    now_ms: i64,
    lease_until_ms: i64,
    attempts_max: u32,
    limit: usize,
) -> Result<Vec<Delivery>, LedgerError> {
    if endpoints.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: Vec<String> = (0..endpoints.len())
        .map(|i| format!("${}", i + 5))
        .collect();
    // Rechecked row by row as it is updated, so two replicas never take the same one.
    let sql = format!(
        "UPDATE deliveries SET lease_until_ms = $1 \
         WHERE (event_id, endpoint) IN (SELECT event_id, endpoint FROM deliveries \
         WHERE delivered_at_ms IS NULL AND attempts < $2 AND next_attempt_at_ms <= $3 \
         AND lease_until_ms <= $3 AND endpoint IN ({}) \
         ORDER BY next_attempt_at_ms LIMIT $4) \
         AND delivered_at_ms IS NULL AND lease_until_ms <= $3 \
         RETURNING event_id, endpoint, attempts",
        wanted.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(lease_until_ms)
        .bind(i64::from(attempts_max))
        .bind(now_ms)
        .bind(limit as i64);
    for endpoint in endpoints {
        query = query.bind(endpoint.clone());
    }
    let claimed = query.fetch_all(&ledger.pool).await?;
    let mut due = Vec::with_capacity(claimed.len());
    for row in claimed {
        let event_id: String = row.try_get("event_id")?;
        let body: String = sqlx::query("SELECT body FROM events WHERE id = $1")
            .bind(&event_id)
            .fetch_one(&ledger.pool)
            .await?
            .try_get("body")?;
        due.push(Delivery {
            event: from_json(&body, "event")?,
            endpoint: row.try_get("endpoint")?,
            attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
            lease_until_ms,
        });
    }
    Ok(due)
}

pub(super) async fn record_delivery(
    ledger: &SqlLedger,
    delivery: &Delivery,
    attempt: &Attempt,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let (delivered_at, error, next) = match attempt {
        Attempt::Delivered => (Some(now_ms), None, now_ms),
        Attempt::Failed { error, retry_at_ms } => {
            (None, Some(error.clone()), retry_at_ms.unwrap_or(i64::MAX))
        }
    };
    sqlx::query(
        "UPDATE deliveries SET attempts = attempts + 1, lease_until_ms = 0, \
         delivered_at_ms = $1, last_error = $2, next_attempt_at_ms = $3 \
         WHERE event_id = $4 AND endpoint = $5 AND lease_until_ms = $6 \
         AND delivered_at_ms IS NULL",
    )
    .bind(delivered_at)
    .bind(error)
    .bind(next)
    .bind(&delivery.event.id)
    .bind(&delivery.endpoint)
    .bind(delivery.lease_until_ms)
    .execute(&ledger.pool)
    .await?;
    Ok(())
}

pub(super) async fn events(
    ledger: &SqlLedger,
    account: &AccountId,
    limit: usize,
) -> Result<Vec<EventRecord>, LedgerError> {
    let rows = sqlx::query(
        "SELECT body FROM events WHERE account_id = $1 ORDER BY at_ms DESC, id DESC LIMIT $2",
    )
    .bind(account.as_str())
    .bind(limit.min(ENTRIES_LIMIT_MAX) as i64)
    .fetch_all(&ledger.pool)
    .await?;
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        let event: WalletEvent = from_json(&row.try_get::<String, _>("body")?, "event")?;
        let deliveries = sqlx::query(
            "SELECT endpoint, attempts, delivered_at_ms, next_attempt_at_ms, last_error \
             FROM deliveries WHERE event_id = $1 ORDER BY endpoint",
        )
        .bind(&event.id)
        .fetch_all(&ledger.pool)
        .await?
        .into_iter()
        .map(|d| -> Result<DeliveryState, LedgerError> {
            let delivered_at_ms: Option<i64> = d.try_get("delivered_at_ms")?;
            let next: i64 = d.try_get("next_attempt_at_ms")?;
            Ok(DeliveryState {
                endpoint: d.try_get("endpoint")?,
                attempts: u32::try_from(d.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                next_attempt_at_ms: (delivered_at_ms.is_none() && next != i64::MAX).then_some(next),
                delivered_at_ms,
                last_error: d.try_get("last_error")?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
        let answered_by = match &event.detail {
            EventDetail::TopUp { request_id, .. } => {
                sqlx::query("SELECT grant_id FROM top_ups WHERE request_id = $1")
                    .bind(request_id)
                    .fetch_optional(&ledger.pool)
                    .await?
                    .map(|r| r.try_get::<Option<String>, _>("grant_id"))
                    .transpose()?
                    .flatten()
            }
            _ => None,
        };
        records.push(EventRecord {
            event,
            deliveries,
            answered_by,
        });
    }
    Ok(records)
}
