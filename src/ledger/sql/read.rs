//! Reading the ledger for the Admin API and the sync loop: an account's entries and what of
//! one can still be refunded, usage summed by group, and the changes replicas follow.

use crate::ledger::ENTRIES_LIMIT_MAX;

// The SQL ledger's helpers (statements, rows, JSON) are its parent's.
use super::*;

pub(super) async fn entries(
    ledger: &SqlLedger,
    account: &AccountId,
    limit: usize,
) -> Result<Vec<LedgerEntry>, LedgerError> {
    let limit = limit.min(ENTRIES_LIMIT_MAX) as i64;
    let rows =
        sqlx::query("SELECT * FROM entries WHERE account_id = $1 ORDER BY seq DESC LIMIT $2")
            .bind(account.as_str())
            .bind(limit)
            .fetch_all(&ledger.pool)
            .await?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get("entry_id")?;
        let mut split = Vec::new();
        for portion in sqlx::query(
            "SELECT grant_id, amount_minor FROM entry_splits WHERE entry_id = $1 \
             ORDER BY position",
        )
        .bind(&id)
        .fetch_all(&ledger.pool)
        .await?
        {
            let grant: String = portion.try_get("grant_id")?;
            split.push(Portion {
                grant: parse(GrantId::parse_stored(&grant), "grant id", &grant)?,
                amount_minor: portion.try_get("amount_minor")?,
            });
        }
        entries.push(read_entry(&row, split)?);
    }
    Ok(entries)
}

pub(super) async fn refundable(
    ledger: &SqlLedger,
    account: &AccountId,
    entry_id: &str,
) -> Result<Option<Refundable>, LedgerError> {
    let Some(row) = sqlx::query(
        "SELECT wallet, amount_minor FROM entries \
         WHERE account_id = $1 AND entry_id = $2 AND kind IN ('commit', 'charge') \
         AND feature IS NOT NULL",
    )
    .bind(account.as_str())
    .bind(entry_id)
    .fetch_optional(&ledger.pool)
    .await?
    else {
        return Ok(None);
    };
    let refunded: i64 = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS refunded FROM entries \
         WHERE account_id = $1 AND kind = 'grant' AND refund_of = $2",
    )
    .bind(account.as_str())
    .bind(entry_id)
    .fetch_one(&ledger.pool)
    .await?
    .try_get("refunded")?;
    let wallet: String = row.try_get("wallet")?;
    Ok(Some(Refundable {
        wallet: parse(WalletId::parse(&wallet), "wallet", &wallet)?,
        amount_minor: row.try_get("amount_minor")?,
        refunded_minor: refunded,
    }))
}

pub(super) async fn usage(
    ledger: &SqlLedger,
    query: &UsageQuery,
) -> Result<Vec<UsageRow>, LedgerError> {
    let mut statement = Statement::new("SELECT ");
    match &query.group {
        UsageGroup::Total => statement.push_sql("CAST(NULL AS TEXT)"),
        UsageGroup::Feature => statement.push_sql("feature"),
        UsageGroup::Model => statement.push_sql("model"),
        UsageGroup::Wallet => statement.push_sql("wallet"),
        UsageGroup::Label(name) => {
            let (expr, path) = ledger.backend.label_value(name);
            statement.push(&expr, Param::Text(path))
        }
    };
    statement
        .push_sql(
            " AS usage_key, CAST(SUM(amount_minor) AS BIGINT) AS total, COUNT(*) AS n \
             FROM entries WHERE kind IN ('commit', 'charge') AND feature IS NOT NULL",
        )
        .push(
            " AND account_id = {}",
            Param::Text(query.account.to_string()),
        )
        .push(" AND at_ms >= {}", Param::Int(query.since_ms))
        .push(" AND at_ms < {}", Param::Int(query.until_ms));
    if let Some((name, value)) = &query.label {
        let (expr, path) = ledger.backend.label_value(name);
        statement
            .push(&format!(" AND {expr}"), Param::Text(path))
            .push(" = {}", Param::Text(value.clone()));
    }
    statement.push_sql(&format!(
        " GROUP BY usage_key ORDER BY total DESC, usage_key LIMIT {USAGE_GROUPS_MAX}"
    ));
    let rows = statement.fetch_all(&ledger.pool).await?;
    rows.iter()
        .map(|row| {
            Ok(UsageRow {
                key: row.try_get("usage_key")?,
                amount_minor: row.try_get("total")?,
                count: row.try_get("n")?,
            })
        })
        .collect()
}

pub(super) async fn changes(
    ledger: &SqlLedger,
    after: i64,
    gaps: &[i64],
    limit: usize,
) -> Result<Vec<Change>, LedgerError> {
    let mut changes = Vec::new();
    if !gaps.is_empty() {
        // Gaps are few and numbers; they are written into the statement, not bound.
        let list = gaps
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT * FROM changes WHERE seq IN ({list}) ORDER BY seq");
        // Only integers are written into the text.
        let query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
        for row in query.fetch_all(&ledger.pool).await? {
            changes.push(read_change(&row)?);
        }
    }
    for row in sqlx::query("SELECT * FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&ledger.pool)
        .await?
    {
        changes.push(read_change(&row)?);
    }
    Ok(changes)
}

fn read_entry(row: &AnyRow, split: Vec<Portion>) -> Result<LedgerEntry, LedgerError> {
    let id: String = row.try_get("entry_id")?;
    let kind: String = row.try_get("kind")?;
    let account: String = row.try_get("account_id")?;
    let wallet: String = row.try_get("wallet")?;
    let usage: Option<String> = row.try_get("usage")?;
    let labels: String = row.try_get("labels")?;
    Ok(LedgerEntry {
        kind: EntryKind::parse(&kind)
            .ok_or_else(|| LedgerError::Corrupt(format!("entry kind {kind:?}")))?,
        account: parse(AccountId::parse(&account), "account id", &account)?,
        wallet: parse(WalletId::parse(&wallet), "wallet", &wallet)?,
        feature: parse_opt(row.try_get("feature")?, "feature", FeatureId::parse)?,
        model: parse_opt(row.try_get("model")?, "model", ModelId::parse)?,
        usage: usage.map(|u| from_json(&u, "usage")).transpose()?,
        amount_minor: row.try_get("amount_minor")?,
        split,
        reservation: parse_opt(
            row.try_get("reservation_id")?,
            "reservation id",
            ReservationId::parse,
        )?,
        grant: parse_opt(row.try_get("grant_id")?, "grant id", GrantId::parse_stored)?,
        idempotency_key: parse_opt(
            row.try_get("idempotency_key")?,
            "idempotency key",
            IdempotencyKey::parse_stored,
        )?,
        labels: from_json(&labels, "labels")?,
        reason: row.try_get("reason")?,
        overrun_minor: row.try_get("overrun_minor")?,
        refund_of: row.try_get("refund_of")?,
        at_ms: row.try_get("at_ms")?,
        id,
    })
}

fn read_change(row: &AnyRow) -> Result<Change, LedgerError> {
    let kind: String = row.try_get("kind")?;
    Ok(Change {
        seq: row.try_get("seq")?,
        kind: match kind.as_str() {
            "grant" => ChangeKind::Grant,
            "void" => ChangeKind::Void,
            "price" => ChangeKind::Price,
            other => return Err(LedgerError::Corrupt(format!("change kind {other:?}"))),
        },
        account: parse_opt(row.try_get("account_id")?, "account id", AccountId::parse)?,
        key: row.try_get("ref")?,
    })
}
