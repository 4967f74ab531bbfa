//! Accounts rebuilt from the ledger in Redis: a snapshot to compare, a replace that happens
//! only over what was compared, and the list of accounts Redis has.

use async_trait::async_trait;

// The Redis store's helpers (keys, calls, replies) are its parent's.
use super::*;

#[async_trait]
impl Rebuild for RedisStore {
    async fn load(&self, _accounts: Vec<AccountSnapshot>) -> Result<(), StoreError> {
        // Accounts are loaded from the ledger one by one, when Redis does not have them.
        Ok(())
    }

    async fn snapshot(
        &self,
        account: &AccountId,
    ) -> Result<Option<Written<AccountSnapshot>>, StoreError> {
        Ok(self
            .snapshot_of(account)
            .await?
            .map(|(snapshot, _)| Written {
                value: snapshot,
                durable: Durable::Nothing,
            }))
    }

    async fn replace(
        &self,
        mut snapshot: AccountSnapshot,
        expected: &AccountSnapshot,
    ) -> Result<bool, StoreError> {
        let Some(account) = snapshot.account.as_ref().map(|a| a.id.clone()) else {
            return Ok(false);
        };
        let args = account_args(&account, &mut snapshot)?;
        let expected = serde_json::json!({
            "grants": expected
                .grants
                .iter()
                .map(|g| serde_json::json!({
                    "id": g.terms.id.as_str(),
                    "wallet": g.terms.wallet.as_str(),
                    "grant": codec::encode_grant(g),
                }))
                .collect::<Vec<_>>(),
            "holds": expected
                .holds
                .iter()
                .filter(|h| h.state == HoldState::Held)
                .map(|h| h.id.token().to_owned())
                .collect::<Vec<_>>(),
            "postpaid": serde_json::from_str::<serde_json::Value>(&postpaid_json(
                expected.postpaid.iter().map(|(w, p)| (w, p))
            ))
            .expect("postpaid_json writes JSON"),
            "limits": serde_json::from_str::<serde_json::Value>(&limits_json(
                expected.limits.iter()
            ))
            .expect("limits_json writes JSON"),
        })
        .to_string();
        let keys = self.keys(&account);
        let mut invocation = self.scripts.replace.prepare_invoke();
        invocation
            .key(keys.account())
            .key(keys.partition.expiries())
            .key(keys.partition.accounts())
            .arg(&keys.base)
            .arg(account.as_str())
            .arg(self.retention());
        for arg in &args {
            invocation.arg(arg);
        }
        invocation.arg(&expected);
        let reply = self.invoke(invocation).await?;
        Ok(reply.first().map(String::as_str) == Some("replaced"))
    }

    async fn accounts(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountId>, StoreError> {
        let mut ids = Vec::new();
        for partition in self.partitions() {
            let key = partition.accounts();
            let members: Vec<String> = self
                .call(|mut c| async move { c.smembers(key).await })
                .await?;
            ids.extend(
                members
                    .into_iter()
                    .filter_map(|m| AccountId::parse(&m).ok()),
            );
        }
        ids.retain(|id| after.is_none_or(|after| id > after));
        ids.sort();
        ids.truncate(limit);
        Ok(ids)
    }
}
