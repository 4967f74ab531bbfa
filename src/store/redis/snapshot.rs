//! An account read whole at one instant (`lua/snapshot.lua`): what a balance shows, what
//! reconcile compares with the ledger and what a rebuild replaces.

// The Redis store's helpers (keys, calls, replies) are its parent's.
use super::*;

impl RedisStore {
    pub(super) async fn snapshot_of(
        &self,
        account: &AccountId,
    ) -> Result<Option<(AccountSnapshot, i64)>, StoreError> {
        let keys = self.keys(account);
        let reply = self
            .with_account(account, || {
                let mut invocation = self.scripts.snapshot.prepare_invoke();
                invocation.key(keys.account()).arg(&keys.base);
                invocation
            })
            .await?;
        let Some(text) = reply.and_then(|r| r.fields.into_iter().next()) else {
            return Ok(None);
        };
        parse_snapshot(account, &text).map(Some)
    }
}

fn parse_snapshot(account: &AccountId, text: &str) -> Result<(AccountSnapshot, i64), StoreError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| StoreError::Inconsistent(format!("unreadable snapshot of {account}")))?;
    let s =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    let acct = value.get("account").cloned().unwrap_or_default();
    let status = AccountStatus::parse(&s(&acct, "status"))
        .ok_or_else(|| StoreError::Inconsistent(format!("account {account} has no status")))?;
    let now = codec::int(&s(&value, "now"), "time")?;
    let mut grants = Vec::new();
    if let Some(serde_json::Value::Array(items)) = value.get("grants") {
        for g in items {
            grants.push(codec::decode_grant(
                &s(g, "id"),
                &s(g, "wallet"),
                &s(g, "grant"),
            )?);
        }
    }
    let mut holds = Vec::new();
    if let Some(serde_json::Value::Array(items)) = value.get("holds") {
        for h in items {
            let fields: HashMap<String, String> = h
                .get("hold")
                .and_then(|f| f.as_object())
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|t| (k.clone(), t.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            holds.push(codec::hold_from_fields(account, &s(h, "token"), &fields)?);
        }
    }
    grants.sort_by(|a, b| {
        (&a.terms.wallet, a.created_at_ms, &a.terms.id).cmp(&(
            &b.terms.wallet,
            b.created_at_ms,
            &b.terms.id,
        ))
    });
    holds.sort_by(|a, b| a.id.cmp(&b.id));
    let mut postpaid = Vec::new();
    if let Some(serde_json::Value::Array(items)) = value.get("postpaid") {
        for p in items {
            let wallet = s(p, "wallet");
            let wallet = WalletId::parse(&wallet)
                .map_err(|_| StoreError::Inconsistent(format!("unreadable wallet {wallet:?}")))?;
            postpaid.push((wallet, codec::decode_postpaid(&s(p, "postpaid"))?));
        }
    }
    postpaid.sort_by(|a, b| a.0.cmp(&b.0));
    let mut limits = Vec::new();
    if let Some(serde_json::Value::Array(items)) = value.get("limits") {
        for l in items {
            limits.push(codec::decode_limit(&s(l, "limit"))?);
        }
    }
    limits.sort_by_key(|l| l.limit.id());
    let mut alerts = Vec::new();
    if let Some(serde_json::Value::Array(items)) = value.get("alerts") {
        for a in items {
            let fields: HashMap<String, String> = ["rules", "armed", "top_up", "open", "made"]
                .into_iter()
                .map(|k| (k.to_owned(), s(a, k)))
                .collect();
            alerts.push(codec::decode_alerts(&s(a, "wallet"), &fields)?);
        }
    }
    alerts.sort_by(|a, b| a.wallet.cmp(&b.wallet));
    Ok((
        AccountSnapshot {
            account: Some(Account {
                id: account.clone(),
                display_name: s(&acct, "name"),
                status,
                created_at_ms: codec::int(&s(&acct, "created"), "account creation")?,
            }),
            grants,
            postpaid,
            limits,
            holds,
            remembered: Vec::new(),
            alerts,
        },
        now,
    ))
}
