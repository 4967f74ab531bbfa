//! What the store loads from the ledger: every account (or one) as an [`AccountSnapshot`],
//! its grants with what remains of them, spend limits with what they used, wallets' flex and
//! debt, alerts, open holds and remembered replies; and the accounts with open holds, for a
//! store that lost its keys.

// The SQL ledger's helpers (statements, rows, JSON) are its parent's.
use super::*;

impl SqlLedger {
    /// Spend limits by account, each in the window `now_ms` falls in with what it has used
    /// there (the commits and charges carrying its label since it counts); what they hold is
    /// left to the holds.
    async fn limits(
        &self,
        connection: &mut AnyConnection,
        only: Option<&AccountId>,
        now_ms: i64,
    ) -> Result<Vec<(String, LimitState)>, LedgerError> {
        let rows = Statement::new("SELECT * FROM spend_limits WHERE 1 = 1")
            .only("account_id", only)
            .push_sql(" ORDER BY account_id, label_key, label_value, per")
            .fetch_all(&mut *connection)
            .await?;
        let mut limits = Vec::new();
        for row in rows {
            let account: String = row.try_get("account_id")?;
            let per: String = row.try_get("per")?;
            let window = LimitWindow::parse(&per)
                .ok_or_else(|| LedgerError::Corrupt(format!("limit window {per:?}")))?;
            let limit = SpendLimit {
                label_key: row.try_get("label_key")?,
                label_value: row.try_get("label_value")?,
                window,
                amount_minor: row.try_get("amount_minor")?,
            };
            let mut state = LimitState {
                window_index: window.index_at(now_ms),
                limit,
                used_minor: 0,
                held_minor: 0,
                since_ms: row.try_get("since_ms")?,
            };
            let (expr, path) = self.backend.label_value(&state.limit.label_key);
            let used = Statement::new(
                "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS used FROM entries \
                 WHERE kind IN ('commit', 'charge') AND feature IS NOT NULL",
            )
            .push(" AND account_id = {}", Param::Text(account.clone()))
            .push(" AND at_ms >= {}", Param::Int(state.counts_from_ms()))
            .push(&format!(" AND {expr}"), Param::Text(path))
            .push(" = {}", Param::Text(state.limit.label_value.clone()))
            .fetch_all(&mut *connection)
            .await?;
            state.used_minor = used
                .first()
                .map(|row| row.try_get::<i64, _>("used"))
                .transpose()?
                .unwrap_or(0);
            limits.push((account, state));
        }
        Ok(limits)
    }

    /// Wallets' alerts, with their top-up requests: the one not answered yet and how many
    /// were made. In account and wallet order.
    async fn alerts(
        &self,
        connection: &mut AnyConnection,
        only: Option<&AccountId>,
    ) -> Result<Vec<(String, AlertsSnapshot)>, LedgerError> {
        let mut kept: BTreeMap<(String, String), AlertsSnapshot> = BTreeMap::new();
        let snapshot = |wallet: &str| -> Result<AlertsSnapshot, LedgerError> {
            Ok(AlertsSnapshot {
                wallet: parse(WalletId::parse(wallet), "wallet", wallet)?,
                alerts: WalletAlerts::default(),
                armed: Vec::new(),
                open_top_up: None,
                top_ups: 0,
            })
        };
        let policies = Statement::new(
            "SELECT account_id, wallet, policy, armed FROM wallet_alerts WHERE 1 = 1",
        )
        .only("account_id", only)
        .fetch_all(&mut *connection)
        .await?;
        for row in policies {
            let (account, wallet): (String, String) =
                (row.try_get("account_id")?, row.try_get("wallet")?);
            let mut alerts = snapshot(&wallet)?;
            alerts.alerts = from_json(&row.try_get::<String, _>("policy")?, "alerts")?;
            alerts.armed = row
                .try_get::<String, _>("armed")?
                .bytes()
                .map(|b| b != b'0')
                .collect();
            kept.insert((account, wallet), alerts);
        }
        let requests = Statement::new(
            "SELECT account_id, wallet, request_id, grant_id FROM top_ups WHERE 1 = 1",
        )
        .only("account_id", only)
        .fetch_all(&mut *connection)
        .await?;
        for row in requests {
            let (account, wallet): (String, String) =
                (row.try_get("account_id")?, row.try_get("wallet")?);
            let request: String = row.try_get("request_id")?;
            let n: u64 = request
                .rsplit('/')
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| LedgerError::Corrupt(format!("top-up request {request:?}")))?;
            let answered = row.try_get::<Option<String>, _>("grant_id")?.is_some();
            let alerts = match kept.entry((account, wallet.clone())) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(snapshot(&wallet)?),
            };
            alerts.top_ups = alerts.top_ups.max(n);
            let newest_open = alerts
                .open_top_up
                .as_ref()
                .and_then(|open| open.rsplit('/').next()?.parse::<u64>().ok())
                .is_none_or(|open| open < n);
            if !answered && newest_open {
                alerts.open_top_up = Some(request);
            }
        }
        // A wallet whose alerts were all removed, with no top-up ever asked, has none: as in
        // the stores.
        Ok(kept
            .into_iter()
            .filter(|(_, alerts)| !alerts.is_empty())
            .map(|((account, _), alerts)| (account, alerts))
            .collect())
    }

    /// Flex cap, flex used and debt of every wallet that has any, by account, in wallet order.
    /// Flex held is left to the holds.
    async fn postpaid(
        &self,
        connection: &mut AnyConnection,
        only: Option<&AccountId>,
    ) -> Result<Vec<(String, WalletId, Postpaid)>, LedgerError> {
        let mut wallets: BTreeMap<(String, String), Postpaid> = BTreeMap::new();
        let caps =
            Statement::new("SELECT account_id, wallet, flex_cap_minor FROM wallets WHERE 1 = 1")
                .only("account_id", only)
                .fetch_all(&mut *connection)
                .await?;
        for row in caps {
            let key = (row.try_get("account_id")?, row.try_get("wallet")?);
            wallets.entry(key).or_default().flex_cap_minor = row.try_get("flex_cap_minor")?;
        }
        let spent = Statement::new(
            "SELECT e.account_id, e.wallet, s.grant_id, CAST(SUM(s.amount_minor) AS BIGINT) AS spent \
             FROM entry_splits s JOIN entries e ON e.entry_id = s.entry_id \
             WHERE e.kind IN ('commit', 'charge') AND s.grant_id IN ('~flex', '~debt')",
        )
        .only("e.account_id", only)
        .push_sql(" GROUP BY e.account_id, e.wallet, s.grant_id")
        .fetch_all(&mut *connection)
        .await?;
        for row in spent {
            let key = (row.try_get("account_id")?, row.try_get("wallet")?);
            let postpaid = wallets.entry(key).or_default();
            let amount: i64 = row.try_get("spent")?;
            if row.try_get::<String, _>("grant_id")? == GrantId::FLEX {
                postpaid.flex_used_minor += amount;
            } else {
                postpaid.debt_minor += amount;
            }
        }
        let repaid = Statement::new(
            "SELECT account_id, wallet, CAST(SUM(amount_minor) AS BIGINT) AS repaid \
             FROM entries WHERE kind = 'charge' AND grant_id = '~debt'",
        )
        .only("account_id", only)
        .push_sql(" GROUP BY account_id, wallet")
        .fetch_all(&mut *connection)
        .await?;
        for row in repaid {
            let key = (row.try_get("account_id")?, row.try_get("wallet")?);
            wallets.entry(key).or_default().debt_minor -= row.try_get::<i64, _>("repaid")?;
        }
        wallets
            .into_iter()
            .filter(|(_, postpaid)| !postpaid.is_zero())
            .map(|((account, wallet), postpaid)| {
                let wallet = parse(WalletId::parse(&wallet), "wallet", &wallet)?;
                Ok((account, wallet, postpaid))
            })
            .collect()
    }

    /// Every account (or `only` one) as the store needs it, read over one connection.
    ///
    /// Long, but one straight run: a query per table, each folded into the snapshots in turn
    /// (limits, flex and alerts have their own functions above, as they compute as they read).
    pub(super) async fn load_on(
        &self,
        connection: &mut AnyConnection,
        only: Option<&AccountId>,
        now_ms: i64,
        retention_ms: i64,
    ) -> Result<Vec<AccountSnapshot>, LedgerError> {
        let since = now_ms - retention_ms;
        let mut snapshots: HashMap<String, AccountSnapshot> = HashMap::new();

        let accounts = Statement::new("SELECT * FROM accounts WHERE 1 = 1")
            .only("account_id", only)
            .fetch_all(&mut *connection)
            .await?;
        for row in accounts {
            let account = read_account(&row)?;
            let key = account.id.to_string();
            snapshots.entry(key).or_default().account = Some(account);
        }

        let taken_rows = Statement::new(
            "SELECT s.account_id, s.grant_id, CAST(SUM(s.amount_minor) AS BIGINT) AS taken \
             FROM entry_splits s JOIN entries e ON e.entry_id = s.entry_id \
             WHERE e.kind IN ('commit', 'charge', 'void')",
        )
        .only("s.account_id", only)
        .push_sql(" GROUP BY s.account_id, s.grant_id")
        .fetch_all(&mut *connection)
        .await?;
        // What each grant's remaining amount differs from its amount by: refills of recurring
        // grants, less what was charged and voided of it.
        let mut change: HashMap<(String, String), i64> = HashMap::new();
        for row in taken_rows {
            let key = (row.try_get("account_id")?, row.try_get("grant_id")?);
            *change.entry(key).or_default() -= row.try_get::<i64, _>("taken")?;
        }
        let refill_rows = Statement::new(&format!(
            "SELECT account_id, grant_id, CAST(SUM(amount_minor) AS BIGINT) AS refilled \
             FROM entries WHERE kind = 'grant' AND entry_id LIKE '{}%'",
            entry_id::REFILL_PREFIX
        ))
        .only("account_id", only)
        .push_sql(" GROUP BY account_id, grant_id")
        .fetch_all(&mut *connection)
        .await?;
        for row in refill_rows {
            let key = (row.try_get("account_id")?, row.try_get("grant_id")?);
            *change.entry(key).or_default() += row.try_get::<i64, _>("refilled")?;
        }

        let period_rows = Statement::new("SELECT * FROM grant_periods WHERE 1 = 1")
            .only("account_id", only)
            .fetch_all(&mut *connection)
            .await?;
        let mut periods: HashMap<(String, String), (i64, i64)> = HashMap::new();
        for row in period_rows {
            let key = (row.try_get("account_id")?, row.try_get("grant_id")?);
            let period = (
                row.try_get("period_index")?,
                row.try_get("period_granted_minor")?,
            );
            periods.insert(key, period);
        }

        let grants = Statement::new("SELECT * FROM grants WHERE 1 = 1")
            .only("account_id", only)
            .push_sql(" ORDER BY created_at_ms, grant_id")
            .fetch_all(&mut *connection)
            .await?;
        for row in grants {
            let account: String = row.try_get("account_id")?;
            let grant_id: String = row.try_get("grant_id")?;
            let key = (account.clone(), grant_id);
            let changed = change.get(&key).copied().unwrap_or(0);
            let mut grant = read_grant(&row, changed)?;
            if let Some(&(index, granted)) = periods.get(&key)
                && index > grant.period_index
            {
                grant.period_index = index;
                grant.period_granted_minor = Some(granted);
            }
            snapshots.entry(account).or_default().grants.push(grant);
        }

        for (account, limit) in self.limits(connection, only, now_ms).await? {
            snapshots.entry(account).or_default().limits.push(limit);
        }
        for (account, wallet, postpaid) in self.postpaid(connection, only).await? {
            snapshots
                .entry(account)
                .or_default()
                .postpaid
                .push((wallet, postpaid));
        }
        for (account, alerts) in self.alerts(connection, only).await? {
            snapshots.entry(account).or_default().alerts.push(alerts);
        }

        let holds = Statement::new("SELECT account_id, body FROM holds WHERE ")
            .push("(state = 'held' OR updated_at_ms >= {})", Param::Int(since))
            .only("account_id", only)
            .fetch_all(&mut *connection)
            .await?;
        for row in holds {
            let account: String = row.try_get("account_id")?;
            let hold: Hold = from_json(&row.try_get::<String, _>("body")?, "hold")?;
            snapshots.entry(account).or_default().holds.push(hold);
        }

        let remembered = Statement::new("SELECT account_id, body FROM remembered WHERE ")
            .push("at_ms >= {}", Param::Int(since))
            .only("account_id", only)
            .fetch_all(&mut *connection)
            .await?;
        for row in remembered {
            let account: String = row.try_get("account_id")?;
            let remembered: Remembered =
                from_json(&row.try_get::<String, _>("body")?, "idempotent reply")?;
            snapshots
                .entry(account)
                .or_default()
                .remembered
                .push(remembered);
        }
        Ok(snapshots.into_values().collect())
    }

    /// [`AccountSource::load_for_store`], in the ledger's terms.
    async fn load_marked(
        &self,
        account: &AccountId,
        epoch: &str,
        now_ms: i64,
        retention_ms: i64,
    ) -> Result<Option<AccountSnapshot>, LedgerError> {
        // The account's row is written first: in PostgreSQL its lock makes every append of a
        // record for the account wait until this load is done, or this load wait for it; in
        // SQLite the write lock does the same for every writer.
        let mut tx = self.pool.begin().await?;
        let marked = sqlx::query("UPDATE accounts SET store_epoch = $1 WHERE account_id = $2")
            .bind(epoch)
            .bind(account.as_str())
            .execute(&mut *tx)
            .await?;
        if marked.rows_affected() == 0 {
            return Ok(None);
        }
        let snapshot = self
            .load_on(&mut tx, Some(account), now_ms, retention_ms)
            .await?
            .pop();
        tx.commit().await?;
        Ok(snapshot)
    }

    /// [`AccountSource::accounts_with_open_holds`], in the ledger's terms.
    async fn open_hold_accounts(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountId>, LedgerError> {
        let mut statement =
            Statement::new("SELECT DISTINCT account_id FROM holds WHERE state = 'held'");
        if let Some(after) = after {
            statement.push(" AND account_id > {}", Param::Text(after.to_string()));
        }
        statement.push(" ORDER BY account_id LIMIT {}", Param::Int(limit as i64));
        statement
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let id: String = row.try_get("account_id")?;
                parse(AccountId::parse(&id), "account id", &id)
            })
            .collect()
    }
}

#[async_trait]
impl AccountSource for SqlLedger {
    async fn load_for_store(
        &self,
        account: &AccountId,
        epoch: &str,
        now_ms: i64,
        retention_ms: i64,
    ) -> Result<Option<AccountSnapshot>, SourceError> {
        Ok(self
            .load_marked(account, epoch, now_ms, retention_ms)
            .await?)
    }

    async fn accounts_with_open_holds(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountId>, SourceError> {
        Ok(self.open_hold_accounts(after, limit).await?)
    }
}

pub(super) fn read_account(row: &AnyRow) -> Result<Account, LedgerError> {
    let id: String = row.try_get("account_id")?;
    let status: String = row.try_get("status")?;
    Ok(Account {
        id: parse(AccountId::parse(&id), "account id", &id)?,
        display_name: row.try_get("display_name")?,
        status: AccountStatus::parse(&status)
            .ok_or_else(|| LedgerError::Corrupt(format!("account status {status:?}")))?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

/// A grant row; `change_minor` (its refills less what was charged and voided of it) is added
/// to its amount to make its remaining amount.
pub(super) fn read_grant(row: &AnyRow, change_minor: i64) -> Result<Grant, LedgerError> {
    let id: String = row.try_get("grant_id")?;
    let wallet: String = row.try_get("wallet")?;
    let kind: String = row.try_get("kind")?;
    let features: String = row.try_get("features")?;
    let priority: i64 = row.try_get("priority")?;
    let amount_minor: i64 = row.try_get("amount_minor")?;
    let recurrence = match row.try_get::<Option<String>, _>("period")? {
        None => None,
        Some(period) => Some(Recurrence {
            period: Period::parse(&period)
                .ok_or_else(|| LedgerError::Corrupt(format!("grant period {period:?}")))?,
            anchor_ms: row.try_get("period_anchor_ms")?,
            rollover_max_minor: row
                .try_get::<Option<i64>, _>("rollover_max_minor")?
                .unwrap_or(0),
        }),
    };
    Ok(Grant {
        terms: GrantTerms {
            id: parse(GrantId::parse(&id), "grant id", &id)?,
            wallet: parse(WalletId::parse(&wallet), "wallet", &wallet)?,
            kind: GrantKind::parse(&kind)
                .ok_or_else(|| LedgerError::Corrupt(format!("grant kind {kind:?}")))?,
            priority: parse(u32::try_from(priority), "priority", &priority.to_string())?,
            amount_minor,
            expires_at_ms: row.try_get("expires_at_ms")?,
            features: from_json(&features, "grant features")?,
            recurrence,
        },
        remaining_minor: amount_minor + change_minor,
        held_minor: 0,
        created_at_ms: row.try_get("created_at_ms")?,
        voided_at_ms: row.try_get("voided_at_ms")?,
        period_index: row.try_get("period_index")?,
        period_granted_minor: row.try_get("period_granted_minor")?,
    })
}
