//! What the Admin API changes in Redis: accounts, grants and their voids, wallets' flex,
//! alerts and spend limits, each one script.

use async_trait::async_trait;

// The Redis store's helpers (keys, calls, replies) are its parent's.
use super::*;

#[async_trait]
impl AccountAdmin for RedisStore {
    async fn account(&self, account: &AccountId) -> Result<Option<Account>, StoreError> {
        Ok(self
            .snapshot_of(account)
            .await?
            .and_then(|(snapshot, _)| snapshot.account))
    }

    async fn put_account(&self, update: AccountUpdate) -> Result<Written<Account>, StoreError> {
        let keys = self.keys(&update.id);
        let run = |create: &'static str| {
            let mut invocation = self.scripts.put_account.prepare_invoke();
            invocation
                .key(keys.account())
                .key(keys.partition.outbox())
                .key(keys.partition.accounts())
                .arg(update.id.as_str())
                .arg(&update.display_name)
                .arg(update.status.as_str())
                .arg(create)
                .arg(self.outbox_bound());
            invocation
        };
        let reply = self.with_account_or_create(&update.id, run).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(Written {
                value: Account {
                    id: update.id.clone(),
                    status: AccountStatus::parse(&reply[1]).unwrap_or(update.status),
                    display_name: reply[2].clone(),
                    created_at_ms: codec::int(&reply[3], "account creation")?,
                },
                durable: self.record(&keys.partition, &reply, 4)?,
            }),
            _ => Err(StoreError::Inconsistent(format!(
                "put account answered {reply:?}"
            ))),
        }
    }

    async fn add_grant(
        &self,
        account: &AccountId,
        terms: GrantTerms,
        entry: GrantEntry,
    ) -> Result<Written<GrantReceipt>, StoreError> {
        let keys = self.keys(account);
        let (reason, refund_of, answers) = (
            entry.reason.unwrap_or_default(),
            entry.refund_of.unwrap_or_default(),
            entry.answers.unwrap_or_default(),
        );
        let features = codec::features_text(&terms.features);
        let recurrence = codec::recurrence_text(terms.recurrence.as_ref());
        let expires = terms
            .expires_at_ms
            .map(|e| e.to_string())
            .unwrap_or_default();
        let run = |create: &'static str| {
            let mut invocation = self.account_call(
                &self.scripts.add_grant,
                &keys,
                account,
                keys.partition.accounts(),
            );
            invocation
                .arg(terms.id.as_str())
                .arg(terms.wallet.as_str())
                .arg(terms.kind.as_str())
                .arg(terms.priority)
                .arg(terms.amount_minor)
                .arg(&expires)
                .arg(&features)
                .arg(&entry.id)
                .arg(GRANTS_PER_WALLET_MAX)
                .arg(create)
                .arg(&recurrence)
                .arg(&reason)
                .arg(&refund_of)
                .arg(&answers)
                .arg(self.outbox_bound());
            invocation
        };
        let reply = self.with_account_or_create(account, run).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                let now = codec::int(&reply[4], "time")?;
                Ok(Written {
                    value: GrantReceipt {
                        grant: codec::decode_grant(
                            terms.id.as_str(),
                            terms.wallet.as_str(),
                            &reply[2],
                        )?,
                        created: reply[1] == "1",
                        available_minor: codec::int(&reply[3], "available")?,
                        now_ms: now,
                    },
                    durable: self.record(&keys.partition, &reply, 5)?,
                })
            }
            Some("conflict") => Err(StoreError::GrantConflict { grant: terms.id }),
            Some("too_many") => Err(StoreError::TooManyGrants {
                wallet: terms.wallet,
                max: GRANTS_PER_WALLET_MAX,
            }),
            Some("too_large") => Err(StoreError::BalanceTooLarge {
                wallet: terms.wallet,
            }),
            _ => Err(StoreError::Inconsistent(format!(
                "add grant answered {reply:?}"
            ))),
        }
    }

    async fn set_wallet(
        &self,
        account: &AccountId,
        wallet: &WalletId,
        flex_cap_minor: i64,
    ) -> Result<Written<Postpaid>, StoreError> {
        let keys = self.keys(account);
        let run = |create: &'static str| {
            let mut invocation = self.account_call(
                &self.scripts.set_wallet,
                &keys,
                account,
                keys.partition.accounts(),
            );
            invocation
                .arg(wallet.as_str())
                .arg(flex_cap_minor)
                .arg(create)
                .arg(self.outbox_bound());
            invocation
        };
        let reply = self.with_account_or_create(account, run).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(Written {
                value: codec::decode_postpaid(&reply[1])?,
                durable: self.record(&keys.partition, &reply, 2)?,
            }),
            Some("too_large") => Err(StoreError::BalanceTooLarge {
                wallet: wallet.clone(),
            }),
            _ => Err(StoreError::Inconsistent(format!(
                "set wallet answered {reply:?}"
            ))),
        }
    }

    async fn set_alerts(
        &self,
        account: &AccountId,
        wallet: &WalletId,
        alerts: WalletAlerts,
    ) -> Result<Written<AlertsView>, StoreError> {
        let keys = self.keys(account);
        let (rules, top_up) = codec::encode_alerts(&alerts);
        let kept = serde_json::to_string(&alerts).expect("alerts serialise");
        let run = |create: &'static str| {
            let mut invocation = self.account_call(
                &self.scripts.set_alerts,
                &keys,
                account,
                keys.partition.accounts(),
            );
            invocation
                .arg(wallet.as_str())
                .arg(&rules)
                .arg(&top_up)
                .arg(create)
                .arg(&kept)
                .arg(self.outbox_bound());
            invocation
        };
        let reply = self.with_account_or_create(account, run).await?;
        match reply.first().map(String::as_str) {
            Some("ok") if reply.len() >= 3 => Ok(Written {
                value: AlertsView {
                    alerts,
                    armed: reply[1].bytes().map(|b| b != b'0').collect(),
                    open_top_up: Some(reply[2].clone()).filter(|o| !o.is_empty()),
                },
                durable: self.record(&keys.partition, &reply, 3)?,
            }),
            _ => Err(StoreError::Inconsistent(format!(
                "set alerts answered {reply:?}"
            ))),
        }
    }

    async fn set_limit(
        &self,
        account: &AccountId,
        change: LimitChange,
    ) -> Result<Written<Vec<LimitState>>, StoreError> {
        let keys = self.keys(account);
        let id = limit_id(&change.label_key, &change.label_value, change.window);
        let amount = change
            .amount_minor
            .map(|a| a.to_string())
            .unwrap_or_default();
        let run = |create: &'static str| {
            let mut invocation = self.account_call(
                &self.scripts.set_limit,
                &keys,
                account,
                keys.partition.accounts(),
            );
            invocation
                .arg(&id)
                .arg(&change.label_key)
                .arg(&change.label_value)
                .arg(change.window.as_str())
                .arg(&amount)
                .arg(LIMITS_PER_ACCOUNT_MAX)
                .arg(create)
                .arg(self.outbox_bound());
            invocation
        };
        let reply = self.with_account_or_create(account, run).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                let listed: serde_json::Value = serde_json::from_str(&reply[1]).map_err(|_| {
                    StoreError::Inconsistent(format!("unreadable limits {:?}", reply[1]))
                })?;
                let mut limits = Vec::new();
                if let serde_json::Value::Array(items) = listed {
                    for item in items {
                        let text = item.get("limit").and_then(|l| l.as_str()).unwrap_or("");
                        limits.push(codec::decode_limit(text)?);
                    }
                }
                limits.sort_by_key(|l| l.limit.id());
                Ok(Written {
                    value: limits,
                    durable: self.record(&keys.partition, &reply, 2)?,
                })
            }
            Some("absent") => Err(StoreError::AccountNotFound(account.clone())),
            Some("not_found") => Err(StoreError::LimitNotFound {
                account: account.clone(),
                limit: id,
            }),
            Some("too_many") => Err(StoreError::TooManyLimits {
                account: account.clone(),
                max: LIMITS_PER_ACCOUNT_MAX,
            }),
            _ => Err(StoreError::Inconsistent(format!(
                "set limit answered {reply:?}"
            ))),
        }
    }

    async fn void_grant(
        &self,
        account: &AccountId,
        grant: &GrantId,
        reason: String,
        entry_id: String,
    ) -> Result<Written<VoidReceipt>, StoreError> {
        let keys = self.keys(account);
        let reply = self
            .with_account(account, || {
                let mut invocation = self.scripts.void_grant.prepare_invoke();
                invocation
                    .key(keys.account())
                    .key(keys.partition.outbox())
                    .arg(&keys.base)
                    .arg(account.as_str())
                    .arg(grant.as_str())
                    .arg(&reason)
                    .arg(&entry_id)
                    .arg(self.outbox_bound());
                invocation
            })
            .await?
            .ok_or_else(|| StoreError::AccountNotFound(account.clone()))?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(Written {
                value: VoidReceipt {
                    voided_minor: codec::int(&reply[1], "voided")?,
                    grant: codec::decode_grant(grant.as_str(), &reply[3], &reply[2])?,
                    available_minor: codec::int(&reply[4], "available")?,
                },
                durable: self.record(&keys.partition, &reply, 6)?,
            }),
            Some("not_found") => Err(StoreError::GrantNotFound {
                account: account.clone(),
                grant: grant.clone(),
            }),
            _ => Err(StoreError::Inconsistent(format!("void answered {reply:?}"))),
        }
    }
}
