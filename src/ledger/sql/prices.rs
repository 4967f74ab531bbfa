//! Prices in the ledger: the current price of each feature, and versions set ahead to take
//! effect later.

// The SQL ledger's helpers (statements, rows, JSON) are its parent's.
use super::*;

pub(super) async fn put_prices(
    ledger: &SqlLedger,
    prices: &[FeaturePrice],
    at_ms: i64,
) -> Result<(), LedgerError> {
    let mut tx = ledger.pool.begin().await?;
    for price in prices {
        // In force at once: the feature's current price. Later: a version set ahead.
        let sql = if price.effective_at_ms <= at_ms {
            "INSERT INTO prices (feature, wallet, rule, overrun, stop, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (feature) DO UPDATE SET \
             wallet = excluded.wallet, rule = excluded.rule, overrun = excluded.overrun, \
             stop = excluded.stop, updated_at_ms = excluded.updated_at_ms"
        } else {
            "INSERT INTO price_versions (feature, wallet, rule, overrun, stop, \
             updated_at_ms, effective_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (feature, effective_at_ms) DO UPDATE SET \
             wallet = excluded.wallet, rule = excluded.rule, overrun = excluded.overrun, \
             stop = excluded.stop, updated_at_ms = excluded.updated_at_ms"
        };
        let mut query = sqlx::query(sql)
            .bind(price.feature.as_str())
            .bind(price.wallet.as_str())
            .bind(to_json(&price.rule))
            .bind(to_json(&price.overrun))
            .bind(price.stop.name())
            .bind(at_ms);
        if price.effective_at_ms > at_ms {
            query = query.bind(price.effective_at_ms);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn prices(ledger: &SqlLedger) -> Result<Vec<FeaturePrice>, LedgerError> {
    let mut prices = Vec::new();
    let rows = sqlx::query(
        "SELECT feature, wallet, rule, overrun, stop, updated_at_ms AS effective_at_ms \
         FROM prices UNION ALL \
         SELECT feature, wallet, rule, overrun, stop, effective_at_ms FROM price_versions \
         ORDER BY feature, effective_at_ms",
    )
    .fetch_all(&ledger.pool)
    .await?;
    for row in rows {
        let feature: String = row.try_get("feature")?;
        let wallet: String = row.try_get("wallet")?;
        prices.push(FeaturePrice {
            feature: parse(FeatureId::parse(&feature), "feature", &feature)?,
            wallet: parse(WalletId::parse(&wallet), "wallet", &wallet)?,
            rule: from_json(&row.try_get::<String, _>("rule")?, "price rule")?,
            overrun: match row.try_get::<Option<String>, _>("overrun")? {
                Some(text) => from_json(&text, "overrun policy")?,
                None => OverrunPolicy::default(),
            },
            stop: match row.try_get::<Option<String>, _>("stop")? {
                Some(text) => StopRule::parse(&text)
                    .ok_or_else(|| LedgerError::Corrupt(format!("stop rule {text:?}")))?,
                None => StopRule::default(),
            },
            effective_at_ms: row.try_get("effective_at_ms")?,
        });
    }
    Ok(prices)
}
