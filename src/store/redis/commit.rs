//! Commit on Redis: one call of `lua/commit.lua`.

// The Redis store's helpers (keys, calls, replies) are its parent's.
use super::*;

pub(super) async fn apply(
    store: &RedisStore,
    op: CommitOp,
) -> Result<Written<CommitReceipt>, StoreError> {
    let account = op.id.account().clone();
    let keys = store.keys(&account);
    let (usage, model) = usage_args(op.usage.as_ref());
    let reply = store
        .with_account(&account, || {
            let mut invocation = store.hold_call(&store.scripts.commit, &keys, &account);
            invocation
                .arg(op.id.token())
                .arg(op.amount_minor)
                .arg(&op.entry_id)
                .arg(&usage)
                .arg(&model)
                .arg(store.outbox_bound());
            invocation
        })
        .await?
        .ok_or_else(|| StoreError::ReservationNotFound(op.id.clone()))?;
    match reply.first().map(String::as_str) {
        Some("ok") => {
            let receipt = codec::commit_receipt(&account, &reply[1])?;
            let durable = match store.record(&keys.partition, &reply, 2)? {
                // A repeated commit: its entry may still be in the outbox.
                Durable::Nothing => Durable::Entry(receipt.entry_id.clone()),
                record => record,
            };
            Ok(Written {
                value: receipt,
                durable,
            })
        }
        Some("mismatch") => Err(StoreError::CommitMismatch {
            id: op.id.clone(),
            committed_minor: codec::int(&reply[1], "committed")?,
            requested_minor: op.amount_minor,
        }),
        Some("too_large") => {
            let hold = store.hold(&op.id).await?;
            Err(StoreError::BalanceTooLarge {
                wallet: hold.map_or_else(WalletId::default_wallet, |h| h.wallet),
            })
        }
        _ => Err(RedisStore::ended_hold(&op.id, &reply)),
    }
}
