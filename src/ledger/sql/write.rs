//! Writing outbox records into the ledger's tables: one function per kind of record, each
//! idempotent (an entry is inserted once by its id; state is written only over an older
//! version of itself), so that a batch written twice changes nothing.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use sqlx::Row;

use super::{Backend, Tx, to_json};
use crate::domain::alert::WalletAlerts;
use crate::domain::{
    Account, AccountId, EventDetail, Grant, GrantId, Hold, ReservationId, SpendLimit, WalletEvent,
    WalletId,
};
use crate::ledger::{LedgerError, WebhookRoute};
use crate::record::{LedgerEntry, OutboxEntry, Remembered};

/// `rows` rows of `columns` parameters each, for a statement of many rows: `(?, ?), (?, ?)` in
/// SQLite, `($1, $2), ($3, $4)` in PostgreSQL.
fn push_rows(sql: &mut String, backend: Backend, rows: usize, columns: usize) {
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            match backend {
                // Numbered parameters cost SQLite a search of every name per parameter bound,
                // which a statement of hundreds of them feels; plain ones bind in order.
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => write!(sql, "${}", row * columns + column + 1)
                    .expect("writing to a String does not fail"),
            }
        }
        sql.push(')');
    }
}

/// Writes one outbox entry (a hold alone goes through [`put_holds`], and a commit's or charge's
/// entry through [`insert_entries`], many at a time).
pub(super) async fn apply(
    tx: &mut Tx<'_>,
    backend: Backend,
    entry: &OutboxEntry,
    webhooks: &[WebhookRoute],
) -> Result<(), LedgerError> {
    match entry {
        OutboxEntry::Account(account) => put_account(tx, account).await,
        OutboxEntry::Grant {
            grant,
            entry,
            answers,
        } => put_grant(tx, backend, grant, entry, answers.as_deref()).await,
        OutboxEntry::Void { entry } => void_grant(tx, backend, entry).await,
        OutboxEntry::Charge(entry) => insert_entries(tx, backend, &[entry]).await,
        OutboxEntry::Reset {
            account,
            grant,
            period_index,
            granted_minor,
            entries,
        } => {
            put_reset(
                tx,
                backend,
                account,
                grant,
                *period_index,
                *granted_minor,
                entries,
            )
            .await
        }
        OutboxEntry::Limit {
            account,
            limit,
            since_ms,
            removed: true,
            ..
        } => remove_limit(tx, account, limit, *since_ms).await,
        OutboxEntry::Limit {
            account,
            limit,
            since_ms,
            removed: false,
            at_ms,
        } => put_limit(tx, account, limit, *since_ms, *at_ms).await,
        OutboxEntry::Wallet {
            account,
            wallet,
            flex_cap_minor,
            at_ms,
        } => put_wallet(tx, account, wallet, *flex_cap_minor, *at_ms).await,
        OutboxEntry::Alerts {
            account,
            wallet,
            alerts,
            armed,
            at_ms,
        } => put_alerts(tx, account, wallet, alerts, armed, *at_ms).await,
        OutboxEntry::AlertsArmed {
            account,
            wallet,
            armed,
            at_ms,
        } => put_armed(tx, account, wallet, armed, *at_ms).await,
        OutboxEntry::Event(event) => put_event(tx, event, webhooks).await,
        OutboxEntry::Hold(hold) => put_holds(tx, backend, vec![hold]).await,
        OutboxEntry::Remember(remembered) => put_remembered(tx, remembered).await,
    }
}

/// An account as it now is.
async fn put_account(tx: &mut Tx<'_>, account: &Account) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO accounts (account_id, display_name, status, created_at_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (account_id) DO UPDATE SET \
         display_name = excluded.display_name, status = excluded.status",
    )
    .bind(account.id.as_str())
    .bind(&account.display_name)
    .bind(account.status.as_str())
    .bind(account.created_at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A new grant, its entry, and the top-up request it answers.
async fn put_grant(
    tx: &mut Tx<'_>,
    backend: Backend,
    grant: &Grant,
    entry: &LedgerEntry,
    answers: Option<&str>,
) -> Result<(), LedgerError> {
    if let Some(request) = answers {
        sqlx::query(
            "INSERT INTO top_ups (request_id, account_id, wallet, grant_id, \
             answered_at_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (request_id) DO UPDATE SET grant_id = excluded.grant_id, \
             answered_at_ms = excluded.answered_at_ms \
             WHERE top_ups.grant_id IS NULL",
        )
        .bind(request)
        .bind(entry.account.as_str())
        .bind(entry.wallet.as_str())
        .bind(grant.terms.id.as_str())
        .bind(entry.at_ms)
        .execute(&mut **tx)
        .await?;
    }
    let terms = &grant.terms;
    sqlx::query(
        "INSERT INTO grants (account_id, grant_id, wallet, kind, priority, amount_minor, \
         expires_at_ms, features, created_at_ms, period, period_anchor_ms, \
         rollover_max_minor, period_index, period_granted_minor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (account_id, grant_id) DO NOTHING",
    )
    .bind(entry.account.as_str())
    .bind(terms.id.as_str())
    .bind(terms.wallet.as_str())
    .bind(terms.kind.as_str())
    .bind(i64::from(terms.priority))
    .bind(terms.amount_minor)
    .bind(terms.expires_at_ms)
    .bind(to_json(&terms.features))
    .bind(grant.created_at_ms)
    .bind(terms.recurrence.map(|r| r.period.as_str()))
    .bind(terms.recurrence.and_then(|r| r.anchor_ms))
    .bind(terms.recurrence.map(|r| r.rollover_max_minor))
    .bind(grant.period_index)
    .bind(grant.period_granted_minor)
    .execute(&mut **tx)
    .await?;
    insert_entries(tx, backend, &[entry]).await
}

/// A grant voided, and its entry.
async fn void_grant(
    tx: &mut Tx<'_>,
    backend: Backend,
    entry: &LedgerEntry,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE grants SET voided_at_ms = $1 \
         WHERE account_id = $2 AND grant_id = $3 AND voided_at_ms IS NULL",
    )
    .bind(entry.at_ms)
    .bind(entry.account.as_str())
    .bind(entry.grant.as_ref().map(|g| g.as_str().to_owned()))
    .execute(&mut **tx)
    .await?;
    insert_entries(tx, backend, &[entry]).await
}

/// A recurring grant moved into period `period_index`, and its lapse and refill entries.
async fn put_reset(
    tx: &mut Tx<'_>,
    backend: Backend,
    account: &AccountId,
    grant: &GrantId,
    period_index: i64,
    granted_minor: i64,
    entries: &[LedgerEntry],
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO grant_periods (account_id, grant_id, period_index, \
         period_granted_minor) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (account_id, grant_id) DO UPDATE SET \
         period_index = excluded.period_index, \
         period_granted_minor = excluded.period_granted_minor \
         WHERE excluded.period_index > grant_periods.period_index",
    )
    .bind(account.as_str())
    .bind(grant.as_str())
    .bind(period_index)
    .bind(granted_minor)
    .execute(&mut **tx)
    .await?;
    let entries: Vec<&LedgerEntry> = entries.iter().collect();
    insert_entries(tx, backend, &entries).await
}

/// A spend limit removed: the one set at `since_ms`, not one set again since.
async fn remove_limit(
    tx: &mut Tx<'_>,
    account: &AccountId,
    limit: &SpendLimit,
    since_ms: i64,
) -> Result<(), LedgerError> {
    sqlx::query(
        "DELETE FROM spend_limits WHERE account_id = $1 AND label_key = $2 \
         AND label_value = $3 AND per = $4 AND since_ms = $5",
    )
    .bind(account.as_str())
    .bind(&limit.label_key)
    .bind(&limit.label_value)
    .bind(limit.window.as_str())
    .bind(since_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A spend limit as it now is, over an older version of itself only.
async fn put_limit(
    tx: &mut Tx<'_>,
    account: &AccountId,
    limit: &SpendLimit,
    since_ms: i64,
    at_ms: i64,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO spend_limits (account_id, label_key, label_value, per, \
         amount_minor, since_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (account_id, label_key, label_value, per) DO UPDATE SET \
         amount_minor = excluded.amount_minor, since_ms = excluded.since_ms, \
         updated_at_ms = excluded.updated_at_ms \
         WHERE excluded.updated_at_ms >= spend_limits.updated_at_ms",
    )
    .bind(account.as_str())
    .bind(&limit.label_key)
    .bind(&limit.label_value)
    .bind(limit.window.as_str())
    .bind(limit.amount_minor)
    .bind(since_ms)
    .bind(at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A wallet's flex cap as it now is, over an older version only.
async fn put_wallet(
    tx: &mut Tx<'_>,
    account: &AccountId,
    wallet: &WalletId,
    flex_cap_minor: i64,
    at_ms: i64,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO wallets (account_id, wallet, flex_cap_minor, updated_at_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, wallet) DO UPDATE SET \
         flex_cap_minor = excluded.flex_cap_minor, updated_at_ms = excluded.updated_at_ms \
         WHERE excluded.updated_at_ms >= wallets.updated_at_ms",
    )
    .bind(account.as_str())
    .bind(wallet.as_str())
    .bind(flex_cap_minor)
    .bind(at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A wallet's thresholds and auto top-up as they now are, over an older version only.
async fn put_alerts(
    tx: &mut Tx<'_>,
    account: &AccountId,
    wallet: &WalletId,
    alerts: &WalletAlerts,
    armed: &[bool],
    at_ms: i64,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO wallet_alerts (account_id, wallet, policy, armed, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, wallet) DO UPDATE SET \
         policy = excluded.policy, armed = excluded.armed, \
         updated_at_ms = excluded.updated_at_ms \
         WHERE excluded.updated_at_ms >= wallet_alerts.updated_at_ms",
    )
    .bind(account.as_str())
    .bind(wallet.as_str())
    .bind(to_json(alerts))
    .bind(armed_text(armed))
    .bind(at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Which of a wallet's thresholds may fire, over an older version only.
async fn put_armed(
    tx: &mut Tx<'_>,
    account: &AccountId,
    wallet: &WalletId,
    armed: &[bool],
    at_ms: i64,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE wallet_alerts SET armed = $1, updated_at_ms = $2 \
         WHERE account_id = $3 AND wallet = $4 AND updated_at_ms <= $2",
    )
    .bind(armed_text(armed))
    .bind(at_ms)
    .bind(account.as_str())
    .bind(wallet.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An event, once: with the top-up request it makes and a delivery for each webhook that
/// wants it.
async fn put_event(
    tx: &mut Tx<'_>,
    event: &WalletEvent,
    webhooks: &[WebhookRoute],
) -> Result<(), LedgerError> {
    let inserted = sqlx::query(
        "INSERT INTO events (id, account_id, wallet, kind, at_ms, body) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(event.account.as_str())
    .bind(event.wallet.as_str())
    .bind(event.kind.as_str())
    .bind(event.at_ms)
    .bind(to_json(event))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // Written by an earlier batch, with its deliveries.
        return Ok(());
    }
    if let EventDetail::TopUp {
        request_id,
        amount_minor,
    } = &event.detail
    {
        sqlx::query(
            "INSERT INTO top_ups (request_id, account_id, wallet, amount_minor, \
             requested_at_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (request_id) DO UPDATE SET \
             amount_minor = excluded.amount_minor, \
             requested_at_ms = excluded.requested_at_ms",
        )
        .bind(request_id)
        .bind(event.account.as_str())
        .bind(event.wallet.as_str())
        .bind(*amount_minor)
        .bind(event.at_ms)
        .execute(&mut **tx)
        .await?;
    }
    for route in webhooks.iter().filter(|r| r.wants(event.kind)) {
        sqlx::query(
            "INSERT INTO deliveries (event_id, endpoint, next_attempt_at_ms) \
             VALUES ($1, $2, $3) ON CONFLICT (event_id, endpoint) DO NOTHING",
        )
        .bind(&event.id)
        .bind(&route.endpoint)
        .bind(event.at_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// An idempotent reply. A key may be used again once the store has forgotten it: the newest
/// use is kept.
async fn put_remembered(tx: &mut Tx<'_>, remembered: &Remembered) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO remembered (account_id, idempotency_key, at_ms, body) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, idempotency_key) DO UPDATE SET \
         at_ms = excluded.at_ms, body = excluded.body \
         WHERE excluded.at_ms >= remembered.at_ms",
    )
    .bind(remembered.account.as_str())
    .bind(remembered.key.as_str())
    .bind(remembered.at_ms)
    .bind(to_json(remembered))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Which thresholds may fire, as the ledger keeps them: '1' or '0' for each.
fn armed_text(armed: &[bool]) -> String {
    armed.iter().map(|&a| if a { '1' } else { '0' }).collect()
}

/// Entries written by one statement of [`insert_entries`] (16 parameters each).
const ENTRY_ROWS_PER_STATEMENT: usize = 64;

/// Portions of splits written by one statement of [`insert_entries`] (5 parameters each).
const SPLIT_ROWS_PER_STATEMENT: usize = 128;

/// Inserts entries, each once by its id, with the portions of its split, many to a statement
/// and in order: the commits and charges of a busy batch, which a statement each (and one per
/// portion of its split) made most of the batch's time.
pub(super) async fn insert_entries(
    tx: &mut Tx<'_>,
    backend: Backend,
    entries: &[&LedgerEntry],
) -> Result<(), LedgerError> {
    // Each id once: a statement's rows must not meet each other.
    let mut seen = HashSet::with_capacity(entries.len());
    let entries: Vec<&LedgerEntry> = entries
        .iter()
        .copied()
        .filter(|e| seen.insert(e.id.as_str()))
        .collect();
    let mut inserted: HashSet<String> = HashSet::with_capacity(entries.len());
    for chunk in entries.chunks(ENTRY_ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO entries (entry_id, kind, account_id, wallet, feature, model, usage, \
             amount_minor, reservation_id, grant_id, idempotency_key, labels, reason, at_ms, \
             overrun_minor, refund_of) VALUES ",
        );
        push_rows(&mut sql, backend, chunk.len(), 16);
        sql.push_str(" ON CONFLICT (entry_id) DO NOTHING RETURNING entry_id");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for entry in chunk {
            query = query
                .bind(entry.id.clone())
                .bind(entry.kind.as_str())
                .bind(entry.account.as_str().to_owned())
                .bind(entry.wallet.as_str().to_owned())
                .bind(entry.feature.as_ref().map(|f| f.as_str().to_owned()))
                .bind(entry.model.as_ref().map(|m| m.as_str().to_owned()))
                .bind(entry.usage.as_ref().map(to_json))
                .bind(entry.amount_minor)
                .bind(entry.reservation.as_ref().map(ReservationId::to_string))
                .bind(entry.grant.as_ref().map(|g| g.as_str().to_owned()))
                .bind(
                    entry
                        .idempotency_key
                        .as_ref()
                        .map(|k| k.as_str().to_owned()),
                )
                .bind(to_json(&entry.labels))
                .bind(entry.reason.clone())
                .bind(entry.at_ms)
                .bind(entry.overrun_minor)
                .bind(entry.refund_of.clone());
        }
        for row in query.fetch_all(&mut **tx).await? {
            inserted.insert(row.try_get("entry_id")?);
        }
    }
    // Splits only of the entries written now: one written by an earlier batch has its own.
    let portions: Vec<(&LedgerEntry, usize)> = entries
        .iter()
        .filter(|e| inserted.contains(&e.id))
        .flat_map(|e| (0..e.split.len()).map(move |position| (*e, position)))
        .collect();
    for chunk in portions.chunks(SPLIT_ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO entry_splits (entry_id, position, account_id, grant_id, amount_minor) \
             VALUES ",
        );
        push_rows(&mut sql, backend, chunk.len(), 5);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (entry, position) in chunk {
            let portion = &entry.split[*position];
            query = query
                .bind(entry.id.clone())
                .bind(*position as i64)
                .bind(entry.account.as_str().to_owned())
                .bind(portion.grant.as_str().to_owned())
                .bind(portion.amount_minor);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// What names an outbox entry in a log: its ledger entry or hold id.
pub(super) fn entry_name(entry: &OutboxEntry) -> Option<String> {
    match entry {
        OutboxEntry::Grant { entry, .. }
        | OutboxEntry::Void { entry }
        | OutboxEntry::Charge(entry) => Some(entry.id.clone()),
        OutboxEntry::Hold(hold) => Some(format!("hold {} ({:?})", hold.id, hold.state)),
        _ => None,
    }
}

/// Rows one statement of [`put_holds`] writes (six parameters each).
const HOLD_ROWS_PER_STATEMENT: usize = 128;

/// Writes holds, each row only over an older version of itself. A hold that appears more than
/// once (taken and ended in one batch) is written once, as its newest version: one statement
/// may not touch a row twice in PostgreSQL.
pub(super) async fn put_holds(
    tx: &mut Tx<'_>,
    backend: Backend,
    holds: Vec<&Hold>,
) -> Result<(), LedgerError> {
    let mut newest: HashMap<String, &Hold> = HashMap::with_capacity(holds.len());
    let mut order = Vec::with_capacity(holds.len());
    for hold in holds {
        let id = hold.id.to_string();
        match newest.get(&id) {
            Some(kept) if kept.version > hold.version => {}
            Some(_) => {
                newest.insert(id, hold);
            }
            None => {
                order.push(id.clone());
                newest.insert(id, hold);
            }
        }
    }
    // In one order whatever the batch, so that two writers lock shared rows alike.
    order.sort_unstable();
    for chunk in order.chunks(HOLD_ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO holds (reservation_id, account_id, state, version, updated_at_ms, body) \
             VALUES ",
        );
        push_rows(&mut sql, backend, chunk.len(), 6);
        sql.push_str(
            " ON CONFLICT (reservation_id) DO UPDATE SET \
             state = excluded.state, version = excluded.version, \
             updated_at_ms = excluded.updated_at_ms, body = excluded.body \
             WHERE excluded.version > holds.version",
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            let hold = newest[id];
            let updated_at = hold
                .commit
                .as_ref()
                .map(|c| c.at_ms)
                .or(hold.release.as_ref().map(|r| r.at_ms))
                .unwrap_or(hold.created_at_ms);
            query = query
                .bind(id.clone())
                .bind(hold.account().as_str().to_owned())
                .bind(hold.state.as_str())
                .bind(hold.version as i64)
                .bind(updated_at)
                .bind(to_json(hold));
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
