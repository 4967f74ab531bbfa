//! Check on Redis: one call of `lua/check.lua`, which holds nothing.

// The Redis store's helpers (keys, calls, replies) are its parent's.
use super::*;

pub(super) async fn apply(
    store: &RedisStore,
    account: &AccountId,
    wallet: &WalletId,
    feature: &FeatureId,
    amount_minor: i64,
    labels: &crate::domain::Labels,
) -> Result<Decision<CheckReceipt>, StoreError> {
    let keys = store.keys(account);
    let labels = labels_json(labels);
    let reply = store
        .with_account(account, || {
            let mut invocation = store.scripts.check.prepare_invoke();
            invocation
                .key(keys.account())
                .arg(&keys.base)
                .arg(wallet.as_str())
                .arg(feature.as_str())
                .arg(amount_minor)
                .arg(&labels);
            invocation
        })
        .await?;
    let Some(reply) = reply else {
        return Ok(Decision::Denied(account_not_found()));
    };
    match reply.first().map(String::as_str) {
        Some("ok") => Ok(Decision::Allowed(CheckReceipt {
            available_minor: codec::int(&reply[1], "available")?,
        })),
        Some("denied") => Ok(Decision::Denied(denial(&reply[1..])?)),
        _ => Err(StoreError::Inconsistent(format!(
            "check answered {reply:?}"
        ))),
    }
}
