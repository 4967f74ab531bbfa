//! Release on Redis: one call of `lua/release.lua`.

// The Redis store's helpers (keys, calls, replies) are its parent's.
use super::*;

pub(super) async fn apply(
    store: &RedisStore,
    id: &ReservationId,
) -> Result<Written<ReleaseReceipt>, StoreError> {
    let account = id.account().clone();
    let keys = store.keys(&account);
    let reply = store
        .with_account(&account, || {
            let mut invocation = store.hold_call(&store.scripts.release, &keys, &account);
            invocation.arg(id.token()).arg(store.outbox_bound());
            invocation
        })
        .await?
        .ok_or_else(|| StoreError::ReservationNotFound(id.clone()))?;
    match reply.first().map(String::as_str) {
        Some("ok") => Ok(Written {
            value: codec::release_receipt(&account, &reply[1])?,
            durable: match store.record(&keys.partition, &reply, 2)? {
                Durable::Nothing => repeated_hold(id, reply.get(4)),
                record => record,
            },
        }),
        _ => Err(RedisStore::ended_hold(id, &reply)),
    }
}
