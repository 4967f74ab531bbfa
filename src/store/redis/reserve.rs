//! Reserve on Redis: one call of `lua/reserve.lua`, loading the account first if Redis does
//! not have it.

// The Redis store's helpers (keys, calls, replies) are its parent's.
use super::*;

pub(super) async fn apply(
    store: &RedisStore,
    op: ReserveOp,
) -> Result<Written<Decision<ReserveReceipt>>, StoreError> {
    let account = op.id.account().clone();
    let keys = store.keys(&account);
    let (key, fingerprint) = idempotency_args(op.idempotency.as_ref());
    let labels = labels_json(&op.labels);
    let price = op
        .price
        .as_ref()
        .map(|p| serde_json::to_string(p).expect("prices serialise"))
        .unwrap_or_default();
    let model = op.model.as_ref().map(|m| m.to_string()).unwrap_or_default();
    let reply = store
        .with_account(&account, || {
            let mut invocation = store.hold_call(&store.scripts.reserve, &keys, &account);
            invocation
                .arg(op.id.token())
                .arg(op.wallet.as_str())
                .arg(op.feature.as_str())
                .arg(op.amount_minor)
                .arg(op.ttl_ms)
                .arg(&labels)
                .arg(&price)
                .arg(&model)
                .arg(&key)
                .arg(&fingerprint)
                .arg(op.min_amount_minor)
                .arg(codec::encode_overrun(op.overrun))
                .arg(op.stop.name())
                .arg(store.outbox_bound());
            invocation
        })
        .await?;
    let Some(reply) = reply else {
        return Ok(absent());
    };
    decided(
        &reply,
        // A hold need not reach the ledger before it is answered, but an allowance it reset
        // must (see Gate::reserve): only then is the record read.
        || match reply.get(4).map(String::as_str) {
            Some("1") => store.record(&keys.partition, &reply, 2),
            _ => Ok(Durable::Nothing),
        },
        |text| codec::reserve_receipt(&account, text),
        |_| Durable::Nothing,
        op.idempotency.as_ref(),
    )
    .unwrap_or_else(|| {
        Err(StoreError::Inconsistent(format!(
            "reserve answered {reply:?}"
        )))
    })
}
