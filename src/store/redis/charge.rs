//! Charge on Redis: one call of `lua/charge.lua`, loading the account first if Redis does
//! not have it.

// The Redis store's helpers (keys, calls, replies) are its parent's.
use super::*;

pub(super) async fn apply(
    store: &RedisStore,
    op: ChargeOp,
) -> Result<Written<Decision<ChargeReceipt>>, StoreError> {
    let keys = store.keys(&op.account);
    let (key, fingerprint) = idempotency_args(op.idempotency.as_ref());
    let labels = labels_json(&op.labels);
    let (usage, model) = usage_args(op.usage.as_ref());
    let reply = store
        .with_account(&op.account, || {
            let mut invocation = store.scripts.charge.prepare_invoke();
            invocation
                .key(keys.account())
                .key(keys.partition.outbox())
                .arg(&keys.base)
                .arg(op.account.as_str())
                .arg(store.retention())
                .arg(op.wallet.as_str())
                .arg(op.feature.as_str())
                .arg(op.amount_minor)
                .arg(&op.entry_id)
                .arg(&labels)
                .arg(&usage)
                .arg(&model)
                .arg(&key)
                .arg(&fingerprint)
                .arg(store.outbox_bound())
                .in_partition(keys.partition.index);
            invocation
        })
        .await?;
    let Some(reply) = reply else {
        return Ok(absent());
    };
    decided(
        &reply,
        || store.record(&keys.partition, &reply, 2),
        codec::charge_receipt,
        // A repeated charge: its entry may still be in the outbox.
        |receipt| Durable::Entry(receipt.entry_id.clone()),
        op.idempotency.as_ref(),
    )
    .unwrap_or_else(|| {
        Err(StoreError::Inconsistent(format!(
            "charge answered {reply:?}"
        )))
    })
}
