//! Extend on Redis: one call of `lua/extend.lua`.

// The Redis store's helpers (keys, calls, replies) are its parent's.
use super::*;

pub(super) async fn apply(
    store: &RedisStore,
    op: ExtendOp,
) -> Result<Written<Decision<ExtendReceipt>>, StoreError> {
    let account = op.id.account().clone();
    let keys = store.keys(&account);
    let (key, fingerprint) = idempotency_args(op.idempotency.as_ref());
    let ttl = op.ttl_ms.map(|t| t.to_string()).unwrap_or_default();
    let reply = store
        .with_account(&account, || {
            let mut invocation = store.hold_call(&store.scripts.extend, &keys, &account);
            invocation
                .arg(op.id.token())
                .arg(op.additional_minor)
                .arg(&ttl)
                .arg(&key)
                .arg(&fingerprint)
                .arg(store.outbox_bound());
            invocation
        })
        .await?
        .ok_or_else(|| StoreError::ReservationNotFound(op.id.clone()))?;
    decided(
        &reply,
        || store.record(&keys.partition, &reply, 2),
        |text| codec::extend_receipt(&account, text),
        |_| repeated_hold(&op.id, reply.get(2)),
        op.idempotency.as_ref(),
    )
    .unwrap_or_else(|| Err(RedisStore::ended_hold(&op.id, &reply)))
}
